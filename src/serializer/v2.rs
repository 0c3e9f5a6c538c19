//! The V2 serializer: JSON arrays in text frames, raw payloads in binary frames.
//!
//! Owns the array layout `[join_ref, ref, topic, event, payload]` and the byte layouts of
//! the binary frames (docs/protocol.md §3.4): the client push it decodes, and the server push,
//! reply and broadcast it encodes. A JSON payload always goes out as text, a binary one
//! as a binary frame. Does no I/O and must not know about connections or transports
//! (whether a transport may carry binary frames is the caller's business).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::{
    ref_from_json, string_from_json, text_frame, DecodeError, EncodeError, Frame, JsonPayload,
    JsonRef, ReplyPayload,
};
use crate::message::{event, Broadcast, Message, Payload, PhxReply, Push, Ref};

/// Binary frame kinds, the first byte of every binary frame.
const PUSH: u8 = 0;
const REPLY: u8 = 1;
const BROADCAST: u8 = 2;

/// The kind byte, then one length byte each for join_ref, ref, topic and event.
const CLIENT_PUSH_HEADER_LEN: usize = 5;
const CLIENT_PUSH_FIELDS: [&str; 4] = ["join_ref", "ref", "topic", "event"];

pub(super) fn decode_text(text: &str) -> Result<Message, DecodeError> {
    let Value::Array(mut elements) = serde_json::from_str(text)? else {
        return Err(DecodeError::NotAnArray);
    };
    // Phoenix ignores elements past the fifth.
    elements.truncate(5);
    let Ok([join_ref, msg_ref, topic, event, payload]) = <[Value; 5]>::try_from(elements) else {
        return Err(DecodeError::NotAnArray);
    };
    Ok(Message {
        join_ref: ref_from_json(join_ref, "join_ref")?,
        msg_ref: ref_from_json(msg_ref, "ref")?,
        topic: string_from_json(topic, "topic")?,
        event: string_from_json(event, "event")?,
        payload: Payload::Json(payload),
    })
}

/// Decodes a client push, the only binary frame a client sends.
pub(super) fn decode_binary(frame: Bytes) -> Result<Message, DecodeError> {
    let too_short = |declared| DecodeError::BinaryTooShort {
        declared,
        len: frame.len(),
    };
    match frame.first() {
        Some(&PUSH) => {}
        Some(&kind) => return Err(DecodeError::UnknownBinaryKind(kind)),
        None => return Err(too_short(CLIENT_PUSH_HEADER_LEN)),
    }
    let lengths = frame
        .get(1..CLIENT_PUSH_HEADER_LEN)
        .ok_or_else(|| too_short(CLIENT_PUSH_HEADER_LEN))?;
    let declared = CLIENT_PUSH_HEADER_LEN + lengths.iter().map(|&l| usize::from(l)).sum::<usize>();
    if declared > frame.len() {
        return Err(too_short(declared));
    }

    let mut fields = [""; 4];
    let mut start = CLIENT_PUSH_HEADER_LEN;
    for ((field, &len), name) in fields.iter_mut().zip(lengths).zip(CLIENT_PUSH_FIELDS) {
        let end = start + usize::from(len);
        *field = std::str::from_utf8(&frame[start..end]).map_err(|_| DecodeError::NotUtf8(name))?;
        start = end;
    }
    let [join_ref, msg_ref, topic, event] = fields;
    Ok(Message {
        join_ref: binary_ref(join_ref),
        msg_ref: binary_ref(msg_ref),
        topic: topic.to_owned(),
        event: event.to_owned(),
        payload: Payload::Binary(frame.slice(declared..)),
    })
}

pub(super) fn encode_reply(reply: &PhxReply<'_>) -> Result<Frame, EncodeError> {
    match JsonPayload::of(reply.response) {
        Ok(response) => {
            let payload = ReplyPayload {
                status: reply.status.as_str(),
                response,
            };
            Ok(text_message(
                reply.join_ref,
                reply.msg_ref,
                reply.topic,
                event::REPLY,
                payload,
            ))
        }
        // The status sits where a push has its event; phoenix.js names the event itself.
        Err(response) => binary_frame(
            REPLY,
            &[
                ("join_ref", &ref_text(reply.join_ref)),
                ("ref", &ref_text(reply.msg_ref)),
                ("topic", reply.topic),
                ("status", reply.status.as_str()),
            ],
            response,
        ),
    }
}

pub(super) fn encode_push(push: &Push<'_>) -> Result<Frame, EncodeError> {
    match JsonPayload::of(push.payload) {
        Ok(payload) => Ok(text_message(
            push.join_ref,
            push.msg_ref,
            push.topic,
            push.event,
            payload,
        )),
        Err(_) if push.msg_ref.is_some() => Err(EncodeError::RefOnBinaryPush),
        Err(payload) => binary_frame(
            PUSH,
            &[
                ("join_ref", &ref_text(push.join_ref)),
                ("topic", push.topic),
                ("event", push.event),
            ],
            payload,
        ),
    }
}

pub(super) fn encode_broadcast(broadcast: &Broadcast<'_>) -> Result<Frame, EncodeError> {
    let Broadcast {
        topic,
        event,
        payload,
    } = *broadcast;
    match JsonPayload::of(payload) {
        Ok(payload) => Ok(text_message(None, None, topic, event, payload)),
        Err(payload) => binary_frame(BROADCAST, &[("topic", topic), ("event", event)], payload),
    }
}

fn text_message(
    join_ref: Option<&Ref>,
    msg_ref: Option<&Ref>,
    topic: &str,
    event: &str,
    payload: impl Serialize,
) -> Frame {
    text_frame(&(JsonRef(join_ref), JsonRef(msg_ref), topic, event, payload))
}

/// Every server binary frame is the kind, one length byte per field, the named fields in
/// the same order, then the payload to the end.
fn binary_frame(
    kind: u8,
    fields: &[(&'static str, &str)],
    payload: &[u8],
) -> Result<Frame, EncodeError> {
    let fields_len: usize = fields.iter().map(|(_, field)| field.len()).sum();
    let mut frame = BytesMut::with_capacity(1 + fields.len() + fields_len + payload.len());
    frame.put_u8(kind);
    for &(name, field) in fields {
        let len = u8::try_from(field.len()).map_err(|_| EncodeError::FieldTooLong {
            field: name,
            len: field.len(),
        })?;
        frame.put_u8(len);
    }
    for (_, field) in fields {
        frame.put_slice(field.as_bytes());
    }
    frame.put_slice(payload);
    Ok(Frame::Binary(frame.freeze()))
}

/// A ref as written in a binary header: its text, with the empty string for none.
fn ref_text(r: Option<&Ref>) -> Cow<'_, str> {
    r.map_or(Cow::Borrowed(""), Ref::as_text)
}

/// A ref read from a binary header: the empty string means none.
fn binary_ref(text: &str) -> Option<Ref> {
    (!text.is_empty()).then(|| Ref::from(text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::Status;
    use crate::serializer::Serializer;

    /// Bytes written as in docs/protocol.md: space-separated hex pairs.
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).unwrap())
            .collect()
    }

    fn text(frame: Frame) -> String {
        match frame {
            Frame::Text(text) => text.to_string(),
            Frame::Binary(bytes) => panic!("expected a text frame, got binary {bytes:?}"),
        }
    }

    fn binary(frame: Frame) -> Bytes {
        match frame {
            Frame::Binary(bytes) => bytes,
            Frame::Text(text) => panic!("expected a binary frame, got text {text}"),
        }
    }

    fn decode_err(text: &str) -> DecodeError {
        let err = Serializer::V2.decode_text(text).unwrap_err();
        assert_eq!(err.close().code, 1007, "{err}");
        err
    }

    fn decode_binary_err(frame: &[u8]) -> DecodeError {
        let err = Serializer::V2
            .decode_binary(Bytes::copy_from_slice(frame))
            .unwrap_err();
        assert_eq!(err.close().code, 1007, "{err}");
        err
    }

    /// A server frame as phoenix.js's `binaryDecode` reads it.
    #[derive(Debug, PartialEq)]
    struct ClientView<'a> {
        join_ref: Option<&'a str>,
        msg_ref: Option<&'a str>,
        topic: &'a str,
        event: &'a str,
        status: Option<&'a str>,
        payload: &'a [u8],
    }

    fn client_decode(frame: &[u8]) -> ClientView<'_> {
        fn non_empty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let field_count = match frame[0] {
            PUSH => 3,
            REPLY => 4,
            BROADCAST => 2,
            kind => panic!("phoenix.js cannot decode kind {kind}"),
        };
        let mut start = 1 + field_count;
        let mut fields = Vec::new();
        for &len in &frame[1..1 + field_count] {
            let end = start + usize::from(len);
            fields.push(std::str::from_utf8(&frame[start..end]).unwrap());
            start = end;
        }
        let payload = &frame[start..];
        match frame[0] {
            PUSH => ClientView {
                join_ref: non_empty(fields[0]),
                msg_ref: None,
                topic: fields[1],
                event: fields[2],
                status: None,
                payload,
            },
            REPLY => ClientView {
                join_ref: non_empty(fields[0]),
                msg_ref: non_empty(fields[1]),
                topic: fields[2],
                event: event::REPLY,
                status: Some(fields[3]),
                payload,
            },
            _ => ClientView {
                join_ref: None,
                msg_ref: None,
                topic: fields[0],
                event: fields[1],
                status: None,
                payload,
            },
        }
    }

    /// A client push as phoenix.js's `binaryEncode` writes it.
    fn client_encode(
        join_ref: &str,
        msg_ref: &str,
        topic: &str,
        event: &str,
        payload: &[u8],
    ) -> Vec<u8> {
        let fields = [join_ref, msg_ref, topic, event];
        let mut frame = vec![PUSH];
        frame.extend(fields.map(|field| u8::try_from(field.len()).unwrap()));
        for field in fields {
            frame.extend_from_slice(field.as_bytes());
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn decodes_the_documented_client_push() {
        let frame = Bytes::from(hex(
            "00 01 01 06 04 33 35 72 6f 6f 6d 3a 61 66 69 6c 65 01 02 03",
        ));
        let message = Serializer::V2.decode_binary(frame.clone()).unwrap();
        assert_eq!(
            message,
            Message {
                join_ref: Some(Ref::from("3")),
                msg_ref: Some(Ref::from("5")),
                topic: "room:a".into(),
                event: "file".into(),
                payload: Payload::Binary(Bytes::from_static(&[1, 2, 3])),
            }
        );
        // Zero-copy: the payload is a slice of the frame it arrived in.
        let Payload::Binary(payload) = &message.payload else {
            unreachable!()
        };
        assert_eq!(payload.as_ptr(), frame[17..].as_ptr());
    }

    #[test]
    fn client_push_encoding_matches_the_documented_bytes_and_decodes_back() {
        let frame = client_encode("3", "5", "room:a", "file", &[1, 2, 3]);
        assert_eq!(
            frame,
            hex("00 01 01 06 04 33 35 72 6f 6f 6d 3a 61 66 69 6c 65 01 02 03")
        );
        let message = Serializer::V2.decode_binary(frame.into()).unwrap();
        assert_eq!(message.topic, "room:a");
        assert_eq!(message.msg_ref, Some(Ref::from("5")));
    }

    #[test]
    fn empty_refs_in_a_client_push_are_none() {
        let frame = client_encode("", "", "room:a", "file", b"");
        let message = Serializer::V2.decode_binary(frame.into()).unwrap();
        assert_eq!(message.join_ref, None);
        assert_eq!(message.msg_ref, None);
        assert_eq!(message.payload, Payload::Binary(Bytes::new()));
    }

    #[test]
    fn encodes_the_documented_server_push() {
        let join_ref = Ref::from("3");
        let payload = Payload::Binary(Bytes::from_static(&[9, 9]));
        let push = Push {
            join_ref: Some(&join_ref),
            msg_ref: None,
            topic: "room:a",
            event: "file",
            payload: &payload,
        };
        let frame = binary(Serializer::V2.encode_push(&push).unwrap());
        let documented = hex("00 01 06 04 33 72 6f 6f 6d 3a 61 66 69 6c 65 09 09");
        assert_eq!(frame, documented);
        assert_eq!(
            client_decode(&documented),
            ClientView {
                join_ref: Some("3"),
                msg_ref: None,
                topic: "room:a",
                event: "file",
                status: None,
                payload: &[9, 9],
            }
        );
    }

    #[test]
    fn encodes_the_documented_server_reply() {
        let (join_ref, msg_ref) = (Ref::from("3"), Ref::from("5"));
        let response = Payload::Binary(Bytes::from_static(&[7]));
        let reply = PhxReply {
            join_ref: Some(&join_ref),
            msg_ref: Some(&msg_ref),
            topic: "room:a",
            status: Status::Ok,
            response: &response,
        };
        let frame = binary(Serializer::V2.encode_reply(&reply).unwrap());
        let documented = hex("01 01 01 06 02 33 35 72 6f 6f 6d 3a 61 6f 6b 07");
        assert_eq!(frame, documented);
        assert_eq!(
            client_decode(&documented),
            ClientView {
                join_ref: Some("3"),
                msg_ref: Some("5"),
                topic: "room:a",
                event: "phx_reply",
                status: Some("ok"),
                payload: &[7],
            }
        );
    }

    #[test]
    fn encodes_the_documented_server_broadcast() {
        let payload = Payload::Binary(Bytes::from_static(&[5, 6]));
        let broadcast = Broadcast {
            topic: "room:a",
            event: "file",
            payload: &payload,
        };
        let frame = binary(Serializer::V2.encode_broadcast(&broadcast).unwrap());
        let documented = hex("02 06 04 72 6f 6f 6d 3a 61 66 69 6c 65 05 06");
        assert_eq!(frame, documented);
        assert_eq!(
            client_decode(&documented),
            ClientView {
                join_ref: None,
                msg_ref: None,
                topic: "room:a",
                event: "file",
                status: None,
                payload: &[5, 6],
            }
        );
    }

    #[test]
    fn binary_error_reply_and_null_refs() {
        let response = Payload::Binary(Bytes::from_static(b"no"));
        let reply = PhxReply {
            join_ref: None,
            msg_ref: None,
            topic: "t",
            status: Status::Error,
            response: &response,
        };
        let frame = binary(Serializer::V2.encode_reply(&reply).unwrap());
        assert_eq!(
            client_decode(&frame),
            ClientView {
                join_ref: None,
                msg_ref: None,
                topic: "t",
                event: "phx_reply",
                status: Some("error"),
                payload: b"no",
            }
        );
    }

    #[test]
    fn number_refs_are_written_as_decimal_text_in_binary_headers() {
        let (join_ref, msg_ref) = (Ref::Num(12.into()), Ref::Num(345.into()));
        let response = Payload::Binary(Bytes::new());
        let reply = PhxReply {
            join_ref: Some(&join_ref),
            msg_ref: Some(&msg_ref),
            topic: "t",
            status: Status::Ok,
            response: &response,
        };
        let frame = binary(Serializer::V2.encode_reply(&reply).unwrap());
        let view = client_decode(&frame);
        assert_eq!((view.join_ref, view.msg_ref), (Some("12"), Some("345")));
    }

    #[test]
    fn binary_push_with_a_ref_is_refused() {
        let join_ref = Ref::from("3");
        let payload = Payload::Binary(Bytes::from_static(&[1]));
        let push = Push {
            join_ref: Some(&join_ref),
            msg_ref: Some(&join_ref),
            topic: "t",
            event: "e",
            payload: &payload,
        };
        assert_eq!(
            Serializer::V2.encode_push(&push),
            Err(EncodeError::RefOnBinaryPush)
        );
    }

    #[test]
    fn binary_fields_are_limited_to_255_bytes() {
        let payload = Payload::Binary(Bytes::from_static(&[1]));
        let longest = "t".repeat(255);
        let broadcast = Broadcast {
            topic: &longest,
            event: "e",
            payload: &payload,
        };
        let frame = binary(Serializer::V2.encode_broadcast(&broadcast).unwrap());
        assert_eq!(frame[1], 255);
        assert_eq!(client_decode(&frame).topic, longest);

        let too_long = "t".repeat(256);
        let broadcast = Broadcast {
            topic: &too_long,
            ..broadcast
        };
        assert_eq!(
            Serializer::V2.encode_broadcast(&broadcast),
            Err(EncodeError::FieldTooLong {
                field: "topic",
                len: 256
            })
        );

        let long_ref = Ref::from("r".repeat(300).as_str());
        let push = Push {
            join_ref: Some(&long_ref),
            msg_ref: None,
            topic: "t",
            event: "e",
            payload: &payload,
        };
        assert_eq!(
            Serializer::V2.encode_push(&push),
            Err(EncodeError::FieldTooLong {
                field: "join_ref",
                len: 300
            })
        );
    }

    #[test]
    fn json_payloads_go_out_as_text() {
        let (join_ref, msg_ref) = (Ref::from("3"), Ref::from("4"));
        let response = Payload::Json(json!({"id": 1}));
        let reply = PhxReply {
            join_ref: Some(&join_ref),
            msg_ref: Some(&msg_ref),
            topic: "room:lobby",
            status: Status::Ok,
            response: &response,
        };
        assert_eq!(
            text(Serializer::V2.encode_reply(&reply).unwrap()),
            r#"["3","4","room:lobby","phx_reply",{"status":"ok","response":{"id":1}}]"#
        );

        let empty = Payload::empty();
        let push = Push {
            join_ref: Some(&join_ref),
            msg_ref: None,
            topic: "room:lobby",
            event: "presence_state",
            payload: &empty,
        };
        assert_eq!(
            text(Serializer::V2.encode_push(&push).unwrap()),
            r#"["3",null,"room:lobby","presence_state",{}]"#
        );

        let close = Push {
            msg_ref: Some(&join_ref),
            event: event::CLOSE,
            ..push
        };
        assert_eq!(
            text(Serializer::V2.encode_push(&close).unwrap()),
            r#"["3","3","room:lobby","phx_close",{}]"#
        );

        let message = Payload::Json(json!({"id": 1, "user": "alice"}));
        let broadcast = Broadcast {
            topic: "room:lobby",
            event: "new_msg",
            payload: &message,
        };
        assert_eq!(
            text(Serializer::V2.encode_broadcast(&broadcast).unwrap()),
            r#"[null,null,"room:lobby","new_msg",{"id":1,"user":"alice"}]"#
        );
    }

    #[test]
    fn error_reply_as_text() {
        let eight = Ref::from("8");
        let response = Payload::Json(json!({"reason": "unmatched topic"}));
        let reply = PhxReply {
            join_ref: None,
            msg_ref: Some(&eight),
            topic: "room:lobby",
            status: Status::Error,
            response: &response,
        };
        assert_eq!(
            text(Serializer::V2.encode_reply(&reply).unwrap()),
            r#"[null,"8","room:lobby","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
        );
    }

    #[test]
    fn decodes_the_documented_client_messages() {
        let message = Serializer::V2
            .decode_text(r#"["3","4","room:lobby","new_msg",{"body":"hi"}]"#)
            .unwrap();
        assert_eq!(
            message,
            Message {
                join_ref: Some(Ref::from("3")),
                msg_ref: Some(Ref::from("4")),
                topic: "room:lobby".into(),
                event: "new_msg".into(),
                payload: Payload::Json(json!({"body": "hi"})),
            }
        );
        let heartbeat = Serializer::V2
            .decode_text(r#"[null,"5","phoenix","heartbeat",{}]"#)
            .unwrap();
        assert_eq!(heartbeat.join_ref, None);
        assert_eq!(heartbeat.msg_ref, Some(Ref::from("5")));
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let inputs = [
            r#"["3","3","room:lobby","phx_join",{"token":"x"}]"#,
            r#"[null,"5","phoenix","heartbeat",{}]"#,
            r#"[null,null,"t","e",{"n":[1,-2,2.5,null,true],"s":"é\"\n"}]"#,
            r#"[7,"7","t","e",[]]"#,
            r#"["a",-3,"t","e",null]"#,
        ];
        for input in inputs {
            let message = Serializer::V2.decode_text(input).unwrap();
            let push = Push {
                join_ref: message.join_ref.as_ref(),
                msg_ref: message.msg_ref.as_ref(),
                topic: &message.topic,
                event: &message.event,
                payload: &message.payload,
            };
            let encoded = text(Serializer::V2.encode_push(&push).unwrap());
            assert_eq!(encoded, input);
            assert_eq!(Serializer::V2.decode_text(&encoded).unwrap(), message);
        }
    }

    #[test]
    fn refs_keep_their_json_type() {
        let message = Serializer::V2.decode_text(r#"["5",5,"t","e",{}]"#).unwrap();
        assert_eq!(message.join_ref, Some(Ref::from("5")));
        assert_eq!(message.msg_ref, Some(Ref::Num(5.into())));
        let reply = PhxReply {
            join_ref: message.join_ref.as_ref(),
            msg_ref: message.msg_ref.as_ref(),
            topic: "t",
            status: Status::Ok,
            response: &Payload::empty(),
        };
        assert_eq!(
            text(Serializer::V2.encode_reply(&reply).unwrap()),
            r#"["5",5,"t","phx_reply",{"status":"ok","response":{}}]"#
        );
        let null_refs = Serializer::V2
            .decode_text(r#"[null,null,"t","e",{}]"#)
            .unwrap();
        assert_eq!((null_refs.join_ref, null_refs.msg_ref), (None, None));
    }

    #[test]
    fn extra_trailing_elements_are_ignored() {
        let message = Serializer::V2
            .decode_text(r#"["1","2","t","e",{"a":1},"extra"]"#)
            .unwrap();
        assert_eq!(message.payload, Payload::Json(json!({"a": 1})));
        assert_eq!(message.event, "e");
    }

    #[test]
    fn invalid_json_is_refused() {
        for text in ["", "[", r#"["1","2","t","e",{}"#, r#"[1] [2]"#, "nope"] {
            assert!(
                matches!(decode_err(text), DecodeError::InvalidJson(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn anything_but_an_array_of_five_is_refused() {
        for text in [
            r#"{"topic":"t","event":"e","payload":{},"ref":null}"#,
            r#"["1","2","t","e"]"#,
            "[]",
            "null",
            r#""[1,2,3,4,5]""#,
        ] {
            let err = decode_err(text);
            assert!(matches!(err, DecodeError::NotAnArray), "{text:?}: {err}");
        }
    }

    #[test]
    fn topic_and_event_must_be_strings() {
        let err = decode_err(r#"["1","2",null,"e",{}]"#);
        assert!(matches!(err, DecodeError::NotAString("topic")));
        let err = decode_err(r#"["1","2","t",3,{}]"#);
        assert!(matches!(err, DecodeError::NotAString("event")));
        assert_eq!(err.to_string(), "`event` is not a JSON string");
    }

    #[test]
    fn refs_must_be_string_number_or_null() {
        let err = decode_err(r#"[true,"2","t","e",{}]"#);
        assert!(matches!(err, DecodeError::InvalidRef("join_ref")));
        let err = decode_err(r#"["1",["2"],"t","e",{}]"#);
        assert!(matches!(err, DecodeError::InvalidRef("ref")));
        let err = decode_err(r#"["1",{},"t","e",{}]"#);
        assert!(matches!(err, DecodeError::InvalidRef("ref")));
    }

    #[test]
    fn unknown_binary_kinds_are_refused() {
        for kind in [1, 2, 3, 0xff] {
            let mut frame = client_encode("3", "5", "t", "e", b"x");
            frame[0] = kind;
            assert!(matches!(
                decode_binary_err(&frame),
                DecodeError::UnknownBinaryKind(k) if k == kind
            ));
        }
    }

    #[test]
    fn binary_lengths_beyond_the_frame_are_refused() {
        let cases: [(&[u8], usize); 5] = [
            (&[], 5),
            (&[0], 5),
            (&[0, 0, 0, 0], 5),
            // Declares a 6-byte topic but carries 5 bytes of fields.
            (&[0, 0, 0, 6, 0, b'r', b'o', b'o', b'm', b':'], 11),
            (&[0, 1, 1, 1, 255, b'1', b'2', b't'], 263),
        ];
        for (frame, declared) in cases {
            let err = decode_binary_err(frame);
            assert!(
                matches!(err, DecodeError::BinaryTooShort { declared: d, len } if d == declared && len == frame.len()),
                "{frame:?}: {err}"
            );
        }
        // Fields that end exactly at the frame's end leave an empty payload.
        let exact = Serializer::V2
            .decode_binary(Bytes::from_static(&[0, 0, 0, 1, 1, b't', b'e']))
            .unwrap();
        assert_eq!(exact.payload, Payload::Binary(Bytes::new()));
    }

    #[test]
    fn binary_string_fields_must_be_utf8() {
        let mut frame = client_encode("3", "5", "room", "file", &[0xff]);
        frame[7] = 0xff; // first byte of the topic
        assert!(matches!(
            decode_binary_err(&frame),
            DecodeError::NotUtf8("topic")
        ));
        // The payload is raw bytes: anything goes there.
        let frame = client_encode("3", "5", "room", "file", &[0xff, 0xfe]);
        assert!(Serializer::V2.decode_binary(frame.into()).is_ok());
    }
}
