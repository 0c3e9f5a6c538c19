//! The V2 JSON wire format, `[join_ref, ref, topic, event, payload]`, made cheap.
//!
//! [`decode`] scans the four header elements and hands back the payload as a slice,
//! without parsing it: most frames a load tool receives (presence traffic, broadcasts to
//! other members) are only counted by their event. A mode parses the payload of the
//! frames it needs with a typed, borrowing serde struct ([`NewMsg`], [`Reply`]), never
//! into a `serde_json::Value` on the hot path. Strings with escapes fall back to serde
//! so that the scan stays correct for any valid frame.
//!
//! Also here: the tool's monotonic clock ([`nanos_of`]) whose readings message bodies carry.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Instant;

use serde::de::IgnoredAny;
use serde::Deserialize;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the tool's clock (idempotent).
pub fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// `at` on the tool's clock, in nanoseconds (0 for an instant before the clock started).
pub fn nanos_of(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_nanos() as u64
}

/// One decoded frame. `payload` is the raw JSON text of the fifth element.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub join_ref: Option<Cow<'a, str>>,
    pub reference: Option<Cow<'a, str>>,
    pub topic: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub payload: &'a str,
}

impl Frame<'_> {
    /// The ref as a number, for the tool's own numeric refs.
    pub fn ref_number(&self) -> Option<u64> {
        self.reference.as_deref().and_then(|r| r.parse().ok())
    }
}

/// Scans a V2 text frame. `None` for anything that is not a five-element array whose
/// topic and event are strings (the server writes exactly five elements).
pub fn decode(text: &str) -> Option<Frame<'_>> {
    let mut scan = Scanner { text, pos: 0 };
    scan.skip_ws();
    scan.expect(b'[')?;
    let join_ref = scan.nullable_string()?;
    scan.expect(b',')?;
    let reference = scan.nullable_string()?;
    scan.expect(b',')?;
    let topic = scan.nullable_string()??;
    scan.expect(b',')?;
    let event = scan.nullable_string()??;
    scan.expect(b',')?;
    let rest = text[scan.pos..].trim_end();
    let payload = rest.strip_suffix(']')?.trim();
    if payload.is_empty() {
        return None;
    }
    Some(Frame {
        join_ref,
        reference,
        topic,
        event,
        payload,
    })
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        if self.text.as_bytes().get(self.pos) == Some(&byte) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    /// `null` → `Some(None)`; a string → `Some(Some(s))`; a number is kept as its text
    /// (refs may be numbers from odd peers); anything else → `None`.
    fn nullable_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.skip_ws();
        let bytes = self.text.as_bytes();
        match *bytes.get(self.pos)? {
            b'n' => {
                if self.text[self.pos..].starts_with("null") {
                    self.pos += 4;
                    Some(None)
                } else {
                    None
                }
            }
            b'"' => {
                let start = self.pos;
                let mut i = start + 1;
                let mut escaped = false;
                loop {
                    match *bytes.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            escaped = true;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                self.pos = i + 1;
                if escaped {
                    let owned: String = serde_json::from_str(&self.text[start..=i]).ok()?;
                    Some(Some(Cow::Owned(owned)))
                } else {
                    Some(Some(Cow::Borrowed(&self.text[start + 1..i])))
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                let mut i = start;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                self.pos = i;
                Some(Some(Cow::Borrowed(&self.text[start..i])))
            }
            _ => None,
        }
    }
}

/// The payload of a `phx_reply`: the status; the response is skipped.
#[derive(Debug, Deserialize)]
pub struct Reply<'a> {
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(default)]
    pub response: IgnoredAny,
}

/// The part of a `new_msg` broadcast the tool reads.
#[derive(Debug, Deserialize)]
pub struct NewMsg<'a> {
    #[serde(borrow)]
    pub body: Cow<'a, str>,
}

/// Parses a reply payload; `None` if it is not one.
pub fn reply_status(payload: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Reply<'_>>(payload)
        .ok()
        .map(|r| r.status)
}

/// The `response` of a reply payload as text, for error messages.
pub fn reply_response(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("response").map(|r| r.to_string()))
        .unwrap_or_else(|| payload.to_owned())
}

/// The body of a `new_msg` payload.
pub fn new_msg_body(payload: &str) -> Option<Cow<'_, str>> {
    serde_json::from_str::<NewMsg<'_>>(payload)
        .ok()
        .map(|m| m.body)
}

/// Encodes a client frame; `payload` must be JSON text.
pub fn encode(
    join_ref: Option<u64>,
    reference: u64,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(48 + topic.len() + event.len() + payload.len());
    // Writing to a String cannot fail.
    let _ = match join_ref {
        Some(j) => write!(out, "[\"{j}\",\"{reference}\","),
        None => write!(out, "[null,\"{reference}\","),
    };
    push_json_string(&mut out, topic);
    out.push(',');
    push_json_string(&mut out, event);
    out.push(',');
    out.push_str(payload);
    out.push(']');
    out
}

/// `{"body": body}` as JSON text.
pub fn body_payload(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 12);
    out.push_str("{\"body\":");
    push_json_string(&mut out, body);
    out.push('}');
    out
}

/// Appends `s` as a JSON string literal (escaping only when needed).
pub fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string serializes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v2_frames() {
        let frame =
            decode(r#"["3","4","room:lobby","phx_reply",{"status":"ok","response":{"id":1}}]"#)
                .unwrap();
        assert_eq!(frame.join_ref.as_deref(), Some("3"));
        assert_eq!(frame.ref_number(), Some(4));
        assert_eq!(frame.topic, "room:lobby");
        assert_eq!(frame.event, "phx_reply");
        assert_eq!(frame.payload, r#"{"status":"ok","response":{"id":1}}"#);
        assert_eq!(reply_status(frame.payload).as_deref(), Some("ok"));

        let frame = decode(r#" [ null , null , "room:a" , "new_msg" , {"id":1,"user":"u","body":"b\"q","at":2} ] "#)
            .unwrap();
        assert_eq!(frame.join_ref, None);
        assert_eq!(frame.reference, None);
        assert_eq!(new_msg_body(frame.payload).as_deref(), Some("b\"q"));

        let frame = decode(r#"[7,"x","to\"p\\ic","ev\u0041",{}]"#).unwrap();
        assert_eq!(frame.join_ref.as_deref(), Some("7"));
        assert_eq!(frame.topic, "to\"p\\ic");
        assert_eq!(frame.event, "evA");

        for bad in [
            "",
            "{}",
            r#"["1","2","t","e"]"#,
            r#"["1","2",null,"e",{}]"#,
            r#"["1","2","t","e",]"#,
            r#"["1","2","t"#,
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_replies() {
        let payload = r#"{"status":"error","response":{"reason":"invalid topic"}}"#;
        assert_eq!(reply_status(payload).as_deref(), Some("error"));
        assert_eq!(reply_response(payload), r#"{"reason":"invalid topic"}"#);
    }

    #[test]
    fn encodes_frames() {
        assert_eq!(
            encode(Some(3), 4, "room:a", "new_msg", &body_payload("hi \"x\"")),
            r#"["3","4","room:a","new_msg",{"body":"hi \"x\""}]"#
        );
        assert_eq!(
            encode(None, 9, "phoenix", "heartbeat", "{}"),
            r#"[null,"9","phoenix","heartbeat",{}]"#
        );
    }
}
