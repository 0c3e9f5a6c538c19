//! The write side of one WebSocket connection: its outbound queue and its writer.
//!
//! Owns encoding frames, writing them (everything queued between two writes goes out
//! in one write), noticing a client that has stopped reading, and the bound on what is
//! queued for it. Frames are encoded as they are queued and handed to the socket every
//! [`FLUSH_AT`] bytes or frames even while the connection's actor is still busy with its
//! mailbox, so a reading client's queue stays small whatever the burst; only a socket
//! that refuses bytes lets the queue grow, and past the bound the connection is closed
//! with 1008. Must not know what the frames mean.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use actix_codec::Encoder;
use actix_http::ws::{CloseReason, Codec, Message};
use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;

/// Queued bytes or frames past which they are handed to the socket at once.
const FLUSH_AT: usize = 64 * 1024;
const FLUSH_AT_FRAMES: usize = 64;

/// Limits of what may wait for a client that is not reading.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    pub frames: usize,
    pub bytes: usize,
}

/// Frames encoded but not yet taken by the socket.
pub(crate) struct Outbound {
    io: Rc<OwnedWriteHalf>,
    codec: Codec,
    bound: Bound,
    /// Encoded bytes the socket has not taken; starts at or inside a frame.
    pending: BytesMut,
    /// Where each frame in `pending` ends.
    frame_ends: VecDeque<usize>,
    /// The socket refused bytes at the last try.
    stalled: bool,
    /// A close frame is queued: nothing is queued after it.
    closing: bool,
    /// Frames and bytes that were waiting when the bound was reached, until reported.
    overflow: Option<(usize, usize)>,
    writer: Option<Waker>,
}

/// What became of a queued frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    Accepted,
    /// The client is not reading and the bound is reached: the connection is being
    /// closed with 1008 ([`Outbound::take_overflow`] says how much was waiting).
    Overflow,
    /// The connection is closing; the frame was dropped.
    Closing,
}

impl Outbound {
    pub(crate) fn new(io: OwnedWriteHalf, bound: Bound) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Outbound {
            io: Rc::new(io),
            codec: Codec::new(),
            bound,
            pending: BytesMut::new(),
            frame_ends: VecDeque::new(),
            stalled: false,
            closing: false,
            overflow: None,
            writer: None,
        }))
    }

    /// Queues a data or control frame.
    pub(crate) fn push(&mut self, message: Message) -> Queued {
        if self.closing {
            return Queued::Closing;
        }
        self.encode(message);
        if self.stalled {
            let (frames, bytes) = (self.frame_ends.len(), self.pending.len());
            if frames > self.bound.frames || bytes > self.bound.bytes {
                self.close_now(Some(CloseReason {
                    code: actix_http::ws::CloseCode::Policy,
                    description: Some("outbound queue full".into()),
                }));
                self.overflow = Some((frames, bytes));
                return Queued::Overflow;
            }
        } else if self.pending.len() >= FLUSH_AT || self.frame_ends.len() >= FLUSH_AT_FRAMES {
            // A failed write is met again by the writer, which ends the connection.
            let _ = self.flush();
        }
        self.wake_writer();
        Queued::Accepted
    }

    /// The frames and bytes waiting when the bound was reached, once.
    pub(crate) fn take_overflow(&mut self) -> Option<(usize, usize)> {
        self.overflow.take()
    }

    /// Queues a close frame after what is queued; nothing is queued after it.
    pub(crate) fn close(&mut self, mut reason: Option<CloseReason>) {
        if !self.closing {
            self.closing = true;
            if let Some(description) = reason.as_mut().and_then(|r| r.description.as_mut()) {
                fit_close_reason(description);
            }
            self.encode(Message::Close(reason));
            self.wake_writer();
        }
    }

    /// Drops what the client has not started to receive and queues a close frame right
    /// after the frame it is in the middle of.
    fn close_now(&mut self, reason: Option<CloseReason>) {
        let keep = self.frame_ends.front().copied().unwrap_or(0);
        self.pending.truncate(keep);
        self.frame_ends.truncate(1);
        self.close(reason);
    }

    fn encode(&mut self, message: Message) {
        let codec = &mut self.codec;
        codec
            .encode(message, &mut self.pending)
            .expect("encoding a server frame cannot fail");
        self.frame_ends.push_back(self.pending.len());
    }

    /// Hands the socket what it takes now.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.io.try_write(&self.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.written(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.stalled = true;
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
        self.stalled = false;
        // Nothing is kept between bursts: an idle connection holds no buffer.
        self.pending = BytesMut::new();
        Ok(())
    }

    fn written(&mut self, n: usize) {
        self.pending.advance(n);
        for end in self.frame_ends.iter_mut() {
            *end -= n.min(*end);
        }
        while self.frame_ends.front() == Some(&0) {
            self.frame_ends.pop_front();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }
}

/// A close frame's reason shares 125 payload bytes with the 2-byte code (RFC 6455
/// §5.5); the codec does not check, so a longer reason is cut at a character boundary.
fn fit_close_reason(reason: &mut String) {
    const MAX: usize = 123;
    if reason.len() > MAX {
        let mut end = MAX;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
}

/// Writes whatever is queued until a close frame is out (`Ok`) or the peer is gone.
pub(crate) async fn write(outbound: Rc<RefCell<Outbound>>) -> io::Result<()> {
    loop {
        poll_fn(|cx| {
            let mut out = outbound.borrow_mut();
            if out.pending.is_empty() && !out.closing {
                out.writer = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let io = {
            let mut out = outbound.borrow_mut();
            out.flush()?;
            if out.pending.is_empty() {
                if out.closing {
                    return Ok(());
                }
                continue;
            }
            out.io.clone()
        };
        io.writable().await?;
        outbound.borrow_mut().stalled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let mut short = String::from("idle timeout");
        fit_close_reason(&mut short);
        assert_eq!(short, "idle timeout");
        let mut long = "é".repeat(100);
        fit_close_reason(&mut long);
        assert_eq!(
            long.len(),
            122,
            "cut at the last character boundary within 123 bytes"
        );
        assert!(long.chars().all(|c| c == 'é'));
    }
}
