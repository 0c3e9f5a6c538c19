//! The Phoenix serializers: V1 JSON objects, V2 JSON arrays and V2 binary frames.
//!
//! Owns the choice of serializer from the `vsn` query value, the encoded [`Frame`], the
//! decode and encode errors (with the close code a decode error calls for), the length
//! limits of a client's refs, topics and events, and the JSON pieces both versions
//! share. Serializers only turn bytes into [`Message`]s and replies,
//! pushes and broadcasts into bytes: they do no I/O, keep no state and must not touch
//! sockets, sessions or the message model itself.

mod broadcast_frame;
mod v1;
mod v2;

pub(crate) use broadcast_frame::BroadcastFrame;

use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;
use serde_json::Value;

use crate::close::Close;
use crate::message::{Broadcast, Message, Payload, PhxReply, Push, Ref};

/// Which Phoenix serializer a connection speaks, fixed for its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Serializer {
    V1,
    V2,
}

/// One encoded WebSocket message (also the text of one long-poll message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(ByteString),
    Binary(Bytes),
}

/// The `vsn` a client asked for matches no serializer: refuse the connection (403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported vsn {}: matches neither ~> 1.0.0 (V1) nor ~> 2.0.0 (V2)",
    crate::logline::client_text(.0)
)]
pub struct UnsupportedVsn(pub String);

/// Longest `ref` or `join_ref` a client may send, in bytes. phoenix.js sends decimal
/// counters (`"1"`, `"2"`, …), other clients short tokens (a UUID is 36 bytes); the
/// server keeps a channel's join ref for the channel's life, so a client must not make
/// it hold megabytes.
pub const MAX_REF_BYTES: usize = 64;

/// Longest topic or event a client may send, in bytes: what a V2 binary frame's one
/// length byte can carry, so no client that works with Phoenix uses longer.
pub const MAX_NAME_BYTES: usize = 255;

/// A client message that cannot be decoded; the connection must close with
/// [`close`](DecodeError::close).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("binary frame on a V1 connection (V1 is JSON text only)")]
    BinaryOnV1,
    #[error("message is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("V1 message is not a JSON object")]
    NotAnObject,
    #[error("V1 message has no `{0}` key")]
    MissingKey(&'static str),
    #[error("V2 message is not a JSON array of at least 5 elements")]
    NotAnArray,
    #[error("`{0}` is not a JSON string")]
    NotAString(&'static str),
    #[error("`{0}` is neither a JSON string, a number nor null")]
    InvalidRef(&'static str),
    #[error("binary frame of kind {0}: a client may only send kind 0 (push)")]
    UnknownBinaryKind(u8),
    #[error(
        "binary frame is {len} bytes long, shorter than the {declared} its header and fields take"
    )]
    BinaryTooShort { declared: usize, len: usize },
    #[error("binary frame field `{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("`{field}` is {len} bytes long, over the {max}-byte limit")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl DecodeError {
    /// How the connection closes on this error: 1003 (unsupported data) for a binary
    /// frame on V1, 1008 (policy violation) for a field over its length limit (the
    /// message is well formed; it breaks a limit of this server), 1007 (invalid frame
    /// payload data) for everything else.
    pub fn close(&self) -> Close {
        match self {
            DecodeError::BinaryOnV1 => Close::UNSUPPORTED_DATA,
            DecodeError::TooLong { .. } => Close::FIELD_TOO_LONG,
            _ => Close::INVALID_MESSAGE,
        }
    }
}

/// An outgoing message that the connection's serializer cannot express.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("binary payload cannot be encoded on V1 (V1 is JSON text only)")]
    BinaryOnV1,
    #[error("binary frame field `{field}` is {len} bytes, over the 255-byte limit")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("binary push cannot carry a ref (its frame has no ref field)")]
    RefOnBinaryPush,
}

impl Serializer {
    /// From the `vsn` query value: `None` => V1 (Phoenix reads a missing `vsn` as
    /// `"1.0.0"`), a version matching `~> 1.0.0` => V1, `~> 2.0.0` => V2, anything else
    /// => `Err`.
    ///
    /// Matching follows Elixir's `Version.parse/1` and `Version.match?/2` (default
    /// `allow_pre: true`), as Phoenix uses them: `MAJOR.MINOR.PATCH`, decimal without
    /// leading zeros, optionally `-pre` and `+build` of dot-separated `[0-9A-Za-z-]`
    /// identifiers (numeric pre-release identifiers without leading zeros). So `2.0.7`,
    /// `2.0.1-rc.1` and `2.0.0+build.5` are V2, but `2.0.0-rc.1` is refused: a pre-release
    /// of `2.0.0` sorts below the requirement's lower bound.
    pub fn from_vsn(vsn: Option<&str>) -> Result<Serializer, UnsupportedVsn> {
        let Some(vsn) = vsn else {
            return Ok(Serializer::V1);
        };
        match tilde_major(vsn) {
            Some("1") => Ok(Serializer::V1),
            Some("2") => Ok(Serializer::V2),
            _ => Err(UnsupportedVsn(vsn.to_owned())),
        }
    }

    /// Decodes one text frame (or one long-poll text message).
    pub fn decode_text(self, text: &str) -> Result<Message, DecodeError> {
        let message = match self {
            Serializer::V1 => v1::decode(text),
            Serializer::V2 => v2::decode_text(text),
        }?;
        within_limits(message)
    }

    /// Decodes one binary frame. The payload is a zero-copy slice of `frame`.
    pub fn decode_binary(self, frame: Bytes) -> Result<Message, DecodeError> {
        let message = match self {
            Serializer::V1 => Err(DecodeError::BinaryOnV1),
            Serializer::V2 => v2::decode_binary(frame),
        }?;
        within_limits(message)
    }

    pub fn encode_reply(self, reply: &PhxReply<'_>) -> Result<Frame, EncodeError> {
        match self {
            Serializer::V1 => v1::encode_reply(reply),
            Serializer::V2 => v2::encode_reply(reply),
        }
    }

    pub fn encode_push(self, push: &Push<'_>) -> Result<Frame, EncodeError> {
        match self {
            Serializer::V1 => v1::encode_push(push),
            Serializer::V2 => v2::encode_push(push),
        }
    }

    pub fn encode_broadcast(self, broadcast: &Broadcast<'_>) -> Result<Frame, EncodeError> {
        match self {
            Serializer::V1 => v1::encode_broadcast(broadcast),
            Serializer::V2 => v2::encode_broadcast(broadcast),
        }
    }
}

/// `message`, if its refs, topic and event are within [`MAX_REF_BYTES`] and
/// [`MAX_NAME_BYTES`].
fn within_limits(message: Message) -> Result<Message, DecodeError> {
    let ref_len = |r: &Option<Ref>| match r {
        None => 0,
        Some(Ref::Str(s)) => s.len(),
        Some(Ref::Num(n)) => n.to_string().len(),
    };
    let fields = [
        ("join_ref", ref_len(&message.join_ref), MAX_REF_BYTES),
        ("ref", ref_len(&message.msg_ref), MAX_REF_BYTES),
        ("topic", message.topic.len(), MAX_NAME_BYTES),
        ("event", message.event.len(), MAX_NAME_BYTES),
    ];
    match fields.into_iter().find(|&(_, len, max)| len > max) {
        Some((field, len, max)) => Err(DecodeError::TooLong { field, len, max }),
        None => Ok(message),
    }
}

/// The major version `M` for which `vsn` matches `~> M.0.0` in Elixir, if any.
fn tilde_major(vsn: &str) -> Option<&str> {
    let (version_and_pre, build) = split_once_opt(vsn, '+');
    let (version, pre) = split_once_opt(version_and_pre, '-');
    if !build.is_none_or(valid_build) || !pre.is_none_or(valid_pre) {
        return None;
    }
    let mut numbers = version.split('.');
    let (major, minor, patch) = (numbers.next()?, numbers.next()?, numbers.next()?);
    if numbers.next().is_some() || ![major, minor, patch].into_iter().all(is_decimal) {
        return None;
    }
    // `~> M.0.0` is `>= M.0.0 and < M.1.0-0`; a pre-release of M.0.0 sorts below M.0.0.
    (minor == "0" && (patch != "0" || pre.is_none())).then_some(major)
}

fn split_once_opt(s: &str, separator: char) -> (&str, Option<&str>) {
    match s.split_once(separator) {
        Some((head, tail)) => (head, Some(tail)),
        None => (s, None),
    }
}

/// A non-negative integer as Elixir writes it: digits, no leading zero.
fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

fn valid_build(build: &str) -> bool {
    build.split('.').all(is_identifier)
}

fn valid_pre(pre: &str) -> bool {
    // A purely numeric pre-release identifier is a number, so it may not have a leading zero.
    pre.split('.')
        .all(|id| is_identifier(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || is_decimal(id)))
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A ref as JSON: a string stays a string, a number a number, `None` is `null`.
struct JsonRef<'a>(Option<&'a Ref>);

impl Serialize for JsonRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_none(),
            Some(Ref::Str(s)) => serializer.serialize_str(s),
            Some(Ref::Num(n)) => n.serialize(serializer),
        }
    }
}

/// The payload of a `phx_reply`, in both JSON serializers.
#[derive(Serialize)]
struct ReplyPayload<'a> {
    status: &'static str,
    response: JsonPayload<'a>,
}

/// A payload that travels as JSON text: a value, or text encoded before.
#[derive(Clone, Copy)]
enum JsonPayload<'a> {
    Value(&'a Value),
    Encoded(&'a serde_json::value::RawValue),
}

impl<'a> JsonPayload<'a> {
    /// The JSON form of `payload`, or its bytes if it is binary.
    fn of(payload: &'a Payload) -> Result<Self, &'a Bytes> {
        match payload {
            Payload::Json(value) => Ok(JsonPayload::Value(value)),
            Payload::Encoded(raw) => Ok(JsonPayload::Encoded(raw)),
            Payload::Binary(bytes) => Err(bytes),
        }
    }
}

impl Serialize for JsonPayload<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonPayload::Value(value) => value.serialize(serializer),
            JsonPayload::Encoded(raw) => raw.serialize(serializer),
        }
    }
}

/// Serializes straight into one `String`, the text of a frame.
fn text_frame(message: &impl Serialize) -> Frame {
    // Our shapes hold only strings, refs and `Value`s, whose map keys are always strings,
    // so serde_json has nothing to reject.
    let text = serde_json::to_string(message).expect("JSON frames always serialize");
    Frame::Text(text.into())
}

fn string_from_json(value: Value, field: &'static str) -> Result<String, DecodeError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(DecodeError::NotAString(field)),
    }
}

fn ref_from_json(value: Value, field: &'static str) -> Result<Option<Ref>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Ref::Str(s.into()))),
        Value::Number(n) => Ok(Some(Ref::Num(n))),
        _ => Err(DecodeError::InvalidRef(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Payload;

    #[test]
    fn vsn_selects_serializer_as_phoenix_does() {
        let table: &[(Option<&str>, Option<Serializer>)] = &[
            // Section 3.1 of docs/protocol.md.
            (None, Some(Serializer::V1)),
            (Some("1.0.0"), Some(Serializer::V1)),
            (Some("1.0.9"), Some(Serializer::V1)),
            (Some("2.0.0"), Some(Serializer::V2)),
            (Some("2.0.42"), Some(Serializer::V2)),
            (Some("2.1.0"), None),
            (Some("1.1.0"), None),
            (Some("3.0.0"), None),
            (Some("2"), None),
            (Some("2.0"), None),
            (Some("abc"), None),
            (Some(""), None),
            // Elixir's parser and `~>` semantics.
            (Some("2.0.1-rc.1"), Some(Serializer::V2)),
            (Some("2.0.0+build.5"), Some(Serializer::V2)),
            (Some("2.0.1-rc-1+sha.abc"), Some(Serializer::V2)),
            (Some("1.0.12345678901234567890123"), Some(Serializer::V1)),
            (Some("2.0.0-rc.1"), None),
            (Some("2.1.0-dev"), None),
            (Some("2.0.1-01"), None),
            (Some("2.0.1-"), None),
            (Some("2.0.0+"), None),
            (Some("2.0.0+a+b"), None),
            (Some("2.0.1-rc..1"), None),
            (Some("02.0.0"), None),
            (Some("2.00.0"), None),
            (Some("2.0.01"), None),
            (Some("2.0.0.0"), None),
            (Some(" 2.0.0"), None),
            (Some("2.0.0 "), None),
            (Some("v2.0.0"), None),
            (Some("~> 2.0.0"), None),
            (Some("2.0.x"), None),
            (Some("2.0.-1"), None),
        ];
        for &(vsn, expected) in table {
            let got = Serializer::from_vsn(vsn);
            match expected {
                Some(serializer) => assert_eq!(got, Ok(serializer), "vsn {vsn:?}"),
                None => assert_eq!(
                    got,
                    Err(UnsupportedVsn(vsn.unwrap().to_owned())),
                    "vsn {vsn:?}"
                ),
            }
        }
    }

    #[test]
    fn unsupported_vsn_names_the_value() {
        let err = Serializer::from_vsn(Some("2.1.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unsupported vsn "2.1.0": matches neither ~> 1.0.0 (V1) nor ~> 2.0.0 (V2)"#
        );
    }

    #[test]
    fn binary_frame_on_v1_closes_with_1003() {
        let err = Serializer::V1
            .decode_binary(Bytes::from_static(b"\x00\x00\x00\x01\x01ab"))
            .unwrap_err();
        assert!(matches!(err, DecodeError::BinaryOnV1));
        assert_eq!(err.close().code, 1003);
    }

    #[test]
    fn every_other_decode_error_closes_with_1007() {
        let errors = [
            DecodeError::InvalidJson(serde_json::from_str::<Value>("{").unwrap_err()),
            DecodeError::NotAnObject,
            DecodeError::MissingKey("ref"),
            DecodeError::NotAnArray,
            DecodeError::NotAString("topic"),
            DecodeError::InvalidRef("join_ref"),
            DecodeError::UnknownBinaryKind(1),
            DecodeError::BinaryTooShort {
                declared: 5,
                len: 2,
            },
            DecodeError::NotUtf8("event"),
        ];
        for err in errors {
            assert_eq!(err.close().code, 1007, "{err}");
        }
    }

    #[test]
    fn refs_topics_and_events_are_limited_and_close_with_1008() {
        let ref_64 = "r".repeat(MAX_REF_BYTES);
        let name_255 = "t".repeat(MAX_NAME_BYTES);
        let at_limits = serde_json::json!([ref_64, ref_64, name_255, name_255, {}]);
        let message = Serializer::V2.decode_text(&at_limits.to_string()).unwrap();
        assert_eq!(message.join_ref, Some(Ref::from(ref_64.as_str())));

        let ref_65 = "r".repeat(MAX_REF_BYTES + 1);
        let name_256 = "t".repeat(MAX_NAME_BYTES + 1);
        let cases = [
            (
                serde_json::json!([ref_65, "1", "t", "e", {}]),
                "join_ref",
                65,
            ),
            (serde_json::json!(["1", ref_65, "t", "e", {}]), "ref", 65),
            (
                serde_json::json!([null, "1", name_256, "e", {}]),
                "topic",
                256,
            ),
            (
                serde_json::json!([null, "1", "t", name_256, {}]),
                "event",
                256,
            ),
        ];
        for (text, field, len) in cases {
            let err = Serializer::V2.decode_text(&text.to_string()).unwrap_err();
            assert!(
                matches!(err, DecodeError::TooLong { field: f, len: l, .. } if f == field && l == len),
                "{err}"
            );
            assert_eq!(err.close(), Close::FIELD_TOO_LONG);
        }
        let v1 = format!(r#"{{"topic":"t","event":"e","payload":{{}},"ref":"{ref_65}"}}"#);
        let err = Serializer::V1.decode_text(&v1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ref` is 65 bytes long, over the 64-byte limit"
        );
        assert_eq!(err.close().code, 1008);

        // A binary push carries up to 255 bytes per field; refs still stop at 64.
        let mut push = vec![0u8, 65, 1, 1, 1];
        push.extend_from_slice(ref_65.as_bytes());
        push.extend_from_slice(b"1te");
        let err = Serializer::V2.decode_binary(push.into()).unwrap_err();
        assert_eq!(err.close(), Close::FIELD_TOO_LONG);
    }

    #[test]
    fn binary_payload_cannot_be_encoded_on_v1() {
        let payload = Payload::Binary(Bytes::from_static(b"\x01"));
        let broadcast = Broadcast {
            topic: "room:a",
            event: "file",
            payload: &payload,
        };
        assert_eq!(
            Serializer::V1.encode_broadcast(&broadcast),
            Err(EncodeError::BinaryOnV1)
        );
    }

    #[test]
    fn serializers_dispatch_to_their_format() {
        let payload = Payload::Json(serde_json::json!({"a": 1}));
        let broadcast = Broadcast {
            topic: "t",
            event: "e",
            payload: &payload,
        };
        assert_eq!(
            Serializer::V2.encode_broadcast(&broadcast),
            Ok(Frame::Text(r#"[null,null,"t","e",{"a":1}]"#.into()))
        );
        assert_eq!(
            Serializer::V1.encode_broadcast(&broadcast),
            Ok(Frame::Text(
                r#"{"topic":"t","event":"e","payload":{"a":1},"ref":null}"#.into()
            ))
        );
        let v2_text = r#"[null,"1","t","e",{}]"#;
        assert!(Serializer::V2.decode_text(v2_text).is_ok());
        assert!(matches!(
            Serializer::V1.decode_text(v2_text),
            Err(DecodeError::NotAnObject)
        ));
    }

    #[test]
    fn decode_errors_display_one_line_naming_the_problem() {
        assert_eq!(
            DecodeError::NotAnArray.to_string(),
            "V2 message is not a JSON array of at least 5 elements"
        );
        assert_eq!(
            DecodeError::InvalidRef("ref").to_string(),
            "`ref` is neither a JSON string, a number nor null"
        );
        assert_eq!(
            EncodeError::FieldTooLong {
                field: "topic",
                len: 256
            }
            .to_string(),
            "binary frame field `topic` is 256 bytes, over the 255-byte limit"
        );
    }
}
