//! Every way fluxwire closes a connection, named once: the WebSocket close code and the
//! reason the client reads (docs/protocol.md §4.3).
//!
//! Owns the [`Close`] values; every layer that ends a connection picks one of them, and
//! log lines print the value rather than a hand-typed code. Must not know how a close
//! reaches the client: long-poll has no close frame and answers `410` instead.

use std::fmt;

/// A close: its code and the reason sent with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    /// The client sent nothing, not even a heartbeat, for the idle timeout.
    pub const IDLE: Close = Close::going_away("idle timeout");
    /// The server is stopping (SIGINT, SIGTERM).
    pub const SHUTDOWN: Close = Close::going_away("server shutting down");
    /// The application disconnected every connection of one user.
    pub const DISCONNECTED: Close = Close::going_away("disconnected");

    /// A frame broke the WebSocket framing rules (reserved bits, bad opcode, …).
    pub const PROTOCOL_ERROR: Close = Close::new(1002, "protocol error");
    /// A data frame arrived while a fragmented message was still incomplete.
    pub const INTERLEAVED_FRAGMENT: Close = Close::new(1002, "new message inside a fragmented one");
    /// A continuation frame arrived with no fragmented message to continue.
    pub const STRAY_CONTINUATION: Close = Close::new(1002, "continuation without a message");
    /// The client's close frame carries a code no endpoint may send (RFC 6455 §7.4).
    pub const INVALID_CLOSE_CODE: Close = Close::new(1002, "invalid close code");

    /// A binary frame on a V1 connection, which speaks JSON text only.
    pub const UNSUPPORTED_DATA: Close = Close::new(1003, "invalid message");
    /// A message the serializer cannot decode.
    pub const INVALID_MESSAGE: Close = Close::new(1007, "invalid message");
    /// A text message that is not UTF-8.
    pub const INVALID_UTF8: Close = Close::new(1007, "invalid UTF-8 in text message");
    /// The reason in the client's close frame is not UTF-8.
    pub const INVALID_CLOSE_REASON: Close = Close::new(1007, "invalid UTF-8 in close reason");

    /// The client does not read: its outbound queue reached the bound.
    pub const OUTBOUND_FULL: Close = Close::policy("outbound queue full");
    /// Frames held for one join in progress reached the bound.
    pub const JOIN_BACKLOG_FULL: Close = Close::policy("too many messages waiting for a join");
    /// A long-poll client does not poll: its queue reached the bound.
    pub const POLL_QUEUE_FULL: Close = Close::policy("too many messages waiting");
    /// The client's messages for one channel pile up faster than it handles them.
    pub const INBOUND_FULL: Close = Close::policy("too many messages in flight");
    /// A message whose `ref` or `join_ref`, topic or event is over its length limit.
    pub const FIELD_TOO_LONG: Close = Close::policy("ref, topic or event too long");
    /// The client went on sending far past its message or join rate limit.
    pub const RATE_LIMITED: Close = Close::policy("rate limit exceeded");

    /// A message over the size limit.
    pub const TOO_BIG: Close = Close::new(1009, "message too big");

    /// Messages still arriving hold the whole server-wide budget for them; this
    /// connection's needs more (1013, Try Again Later, in IANA's registry).
    pub const SERVER_BUSY: Close = Close::new(1013, "server busy, try again later");

    const fn new(code: u16, reason: &'static str) -> Close {
        Close { code, reason }
    }

    const fn going_away(reason: &'static str) -> Close {
        Close::new(1001, reason)
    }

    const fn policy(reason: &'static str) -> Close {
        Close::new(1008, reason)
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_prints_its_code_and_reason() {
        assert_eq!(
            Close::OUTBOUND_FULL.to_string(),
            "1008 (outbound queue full)"
        );
        assert_eq!(Close::IDLE.code, 1001);
    }

    #[test]
    fn every_reason_fits_a_control_frame() {
        // RFC 6455 §5.5: 125 bytes of payload, two of them the code.
        let all = [
            Close::IDLE,
            Close::SHUTDOWN,
            Close::DISCONNECTED,
            Close::PROTOCOL_ERROR,
            Close::INTERLEAVED_FRAGMENT,
            Close::STRAY_CONTINUATION,
            Close::INVALID_CLOSE_CODE,
            Close::UNSUPPORTED_DATA,
            Close::INVALID_MESSAGE,
            Close::INVALID_UTF8,
            Close::INVALID_CLOSE_REASON,
            Close::OUTBOUND_FULL,
            Close::JOIN_BACKLOG_FULL,
            Close::POLL_QUEUE_FULL,
            Close::INBOUND_FULL,
            Close::FIELD_TOO_LONG,
            Close::RATE_LIMITED,
            Close::TOO_BIG,
            Close::SERVER_BUSY,
        ];
        assert!(all.iter().all(|close| close.reason.len() <= 123));
    }
}
