//! What a log line may print of a client, and how many lines one client may cause.
//!
//! Owns [`client_text`] (a string the client chose, quoted and escaped like `{:?}`, cut
//! after [`MAX_CHARS`] characters with a marker), [`one_line`] (a message that may quote
//! a client, such as a JSON parser's error or an application's refusal: escaped, cut
//! after [`MAX_LINE_CHARS`]), and [`LogPeer`], a connection as its log lines name it,
//! with its budget of warning lines ([`warn_limited!`]). Every log line that prints what
//! a client sent goes through one of the first two, so no client can forge a line (a
//! newline in an event name) or make one long; every warning a client can repeat at
//! will goes through the budget, so no client can fill the log. Must not decide what is
//! logged, nor when: the layers that log do.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::time::Instant;

/// Characters of a client's string that a log line prints; the rest is counted.
pub(crate) const MAX_CHARS: usize = 100;

/// Characters of a message quoting a client that a log line prints.
pub(crate) const MAX_LINE_CHARS: usize = 200;

/// Warning lines one connection may cause per [`WARNING_WINDOW_SECS`]; past it they are
/// counted, and the count is written when the window is over or the connection ends.
pub(crate) const WARNINGS_PER_WINDOW: u16 = 10;
pub(crate) const WARNING_WINDOW_SECS: u32 = 60;

/// `text` for a log line: in quotes, escaped like `{:?}` (newlines, control and
/// invisible characters), at most [`MAX_CHARS`] characters, then `…(+N bytes)`.
pub(crate) fn client_text(text: &str) -> ClientText<'_> {
    ClientText(text)
}

/// See [`client_text`].
pub(crate) struct ClientText<'a>(&'a str);

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self
            .0
            .char_indices()
            .nth(MAX_CHARS)
            .map_or(self.0.len(), |(at, _)| at);
        let (shown, rest) = self.0.split_at(cut);
        f.write_char('"')?;
        for c in shown.chars() {
            match c {
                '\'' => f.write_char(c)?,
                _ => write!(f, "{}", c.escape_debug())?,
            }
        }
        f.write_char('"')?;
        if !rest.is_empty() {
            write!(f, "…(+{} bytes)", rest.len())?;
        }
        Ok(())
    }
}

/// `message` for a log line: what `{:?}` would escape is escaped (quotes and
/// backslashes aside, so a message that quotes a string reads as before), at most
/// [`MAX_LINE_CHARS`] characters, then `…(+N bytes)`.
pub(crate) fn one_line<D: fmt::Display>(message: D) -> OneLine<D> {
    OneLine(message)
}

/// See [`one_line`].
pub(crate) struct OneLine<D>(D);

impl<D: fmt::Display> fmt::Display for OneLine<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Bounded {
            out: f,
            left: MAX_LINE_CHARS,
            cut: 0,
        };
        write!(out, "{}", self.0)?;
        let cut = out.cut;
        if cut > 0 {
            write!(f, "…(+{cut} bytes)")?;
        }
        Ok(())
    }
}

/// Writes at most `left` characters, escaped, and counts the bytes past them.
struct Bounded<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    left: usize,
    cut: usize,
}

impl Write for Bounded<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.left == 0 {
                self.cut += c.len_utf8();
                continue;
            }
            self.left -= 1;
            match c {
                '"' | '\'' | '\\' => self.out.write_char(c)?,
                _ => write!(self.out, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
}

/// A connection as its log lines name it: the client's address, and its budget of
/// warning lines (16 bytes more than the address alone: 12, and alignment).
pub(crate) struct LogPeer {
    name: String,
    warnings: Warnings,
}

impl LogPeer {
    pub(crate) fn new(name: String) -> Self {
        LogPeer {
            name,
            warnings: Warnings::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether one more warning may be written now (see [`warn_limited!`]); with the
    /// number suppressed in the window that just ended, to be written first.
    pub(crate) fn may_warn(&self) -> Option<u32> {
        self.warnings.admit(now_secs())
    }

    /// The warnings suppressed since the last line written, to be told (with
    /// [`Suppressed`]) when the connection ends.
    pub(crate) fn take_suppressed(&self) -> Option<u32> {
        Some(self.warnings.suppressed.take()).filter(|&n| n > 0)
    }
}

impl fmt::Display for LogPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The line that stands for the warnings a connection was not allowed to write.
pub(crate) struct Suppressed<'a>(pub &'a LogPeer, pub u32);

impl fmt::Display for Suppressed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} more warnings from this client suppressed (at most {WARNINGS_PER_WINDOW} \
             per {WARNING_WINDOW_SECS} s)",
            self.0, self.1
        )
    }
}

/// A warning caused by a client, within its [`LogPeer`]'s budget: at most
/// [`WARNINGS_PER_WINDOW`] lines per window, then one line telling how many were not
/// written. The line starts with the peer: `warn_limited!(peer, "{} on ...", ...)`.
macro_rules! warn_limited {
    ($peer:expr, $($arg:tt)+) => {{
        let peer: &$crate::logline::LogPeer = &$peer;
        if let Some(suppressed) = peer.may_warn() {
            if suppressed > 0 {
                log::warn!("{}", $crate::logline::Suppressed(peer, suppressed));
            }
            log::warn!("{}: {}", peer, format_args!($($arg)+));
        }
    }};
}
pub(crate) use warn_limited;

/// One connection's warning lines in the current window.
#[derive(Default)]
struct Warnings {
    /// When the window began, in [`now_secs`].
    window_start: Cell<u32>,
    written: Cell<u16>,
    suppressed: Cell<u32>,
}

impl Warnings {
    /// `Some(n)` if a line may be written at `now` (`n` lines of the window that ended
    /// were suppressed), `None` if this one is suppressed.
    fn admit(&self, now: u32) -> Option<u32> {
        if now.saturating_sub(self.window_start.get()) >= WARNING_WINDOW_SECS {
            self.window_start.set(now);
            self.written.set(0);
        }
        if self.written.get() < WARNINGS_PER_WINDOW {
            self.written.set(self.written.get() + 1);
            Some(self.suppressed.take())
        } else {
            self.suppressed.set(self.suppressed.get().saturating_add(1));
            None
        }
    }
}

/// Seconds since the first call: the warnings' coarse clock.
fn now_secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let secs = START.get_or_init(Instant::now).elapsed().as_secs();
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_one_quoted_escaped_line() {
        let forged = "ev\n[2026-01-01T00:00:00Z WARN  fluxwire] forged\r\u{1b}[31m\u{202e}\"\\'";
        assert_eq!(
            client_text(forged).to_string(),
            r#""ev\n[2026-01-01T00:00:00Z WARN  fluxwire] forged\r\u{1b}[31m\u{202e}\"\\'""#
        );
        assert_eq!(client_text("room:é").to_string(), "\"room:é\"");
    }

    #[test]
    fn client_text_is_cut_after_max_chars_with_a_marker() {
        let long = "é".repeat(MAX_CHARS + 50);
        let shown = client_text(&long).to_string();
        assert_eq!(shown, format!("\"{}\"…(+100 bytes)", "é".repeat(MAX_CHARS)));
        let exact = "a".repeat(MAX_CHARS);
        assert_eq!(client_text(&exact).to_string(), format!("\"{exact}\""));
        // 10 MB of newlines still make a short line.
        let flood = "\n".repeat(10 << 20);
        assert!(client_text(&flood).to_string().len() < 2 * MAX_CHARS + 30);
    }

    #[test]
    fn one_line_escapes_what_a_message_quotes_and_cuts_it() {
        let error = format!("invalid user {:?}", "a\nb");
        assert_eq!(one_line(&error).to_string(), r#"invalid user "a\nb""#);
        assert_eq!(one_line("x\ny").to_string(), r"x\ny");
        let long = "x".repeat(MAX_LINE_CHARS + 7);
        assert_eq!(
            one_line(&long).to_string(),
            format!("{}…(+7 bytes)", "x".repeat(MAX_LINE_CHARS))
        );
    }

    #[test]
    fn warnings_past_the_budget_are_counted_and_told_when_the_window_ends() {
        let warnings = Warnings::default();
        let t = 1_000;
        for _ in 0..WARNINGS_PER_WINDOW {
            assert_eq!(warnings.admit(t), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(warnings.admit(t + 1), None);
        }
        assert_eq!(warnings.admit(t + WARNING_WINDOW_SECS - 1), None);
        // The next window: written again, after a line telling the 501 suppressed.
        assert_eq!(warnings.admit(t + WARNING_WINDOW_SECS), Some(501));
        assert_eq!(warnings.admit(t + WARNING_WINDOW_SECS), Some(0));
    }

    #[test]
    fn the_suppressed_line_names_the_peer_and_the_count() {
        let peer = LogPeer::new("127.0.0.1:5000".into());
        assert_eq!(
            Suppressed(&peer, 990).to_string(),
            "127.0.0.1:5000: 990 more warnings from this client suppressed (at most 10 per 60 s)"
        );
        assert!(std::mem::size_of::<Warnings>() <= 12);
    }
}
