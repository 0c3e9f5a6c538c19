//! The V1 serializer: one JSON object per text frame, no binary form.
//!
//! Owns the object layout `{"topic", "event", "payload", "ref"}` (plus an optional
//! `join_ref` from clients, never written back, as Phoenix does). Does no I/O and must not
//! know about connections; callers choose it through [`Serializer`](super::Serializer).

use serde::Serialize;
use serde_json::Value;

use super::{
    ref_from_json, string_from_json, text_frame, DecodeError, EncodeError, Frame, JsonPayload,
    JsonRef, ReplyPayload,
};
use crate::message::{event, Broadcast, Message, Payload, PhxReply, Push, Ref};

/// A server-to-client V1 message, borrowed from what it encodes.
#[derive(Serialize)]
struct Envelope<'a, P> {
    topic: &'a str,
    event: &'a str,
    payload: P,
    #[serde(rename = "ref")]
    msg_ref: JsonRef<'a>,
}

pub(super) fn decode(text: &str) -> Result<Message, DecodeError> {
    let Value::Object(mut object) = serde_json::from_str(text)? else {
        return Err(DecodeError::NotAnObject);
    };
    let mut take = |key: &'static str| object.remove(key).ok_or(DecodeError::MissingKey(key));
    let topic = string_from_json(take("topic")?, "topic")?;
    let event = string_from_json(take("event")?, "event")?;
    let payload = take("payload")?;
    let msg_ref = ref_from_json(take("ref")?, "ref")?;
    let join_ref = object.remove("join_ref").unwrap_or(Value::Null);
    let join_ref = ref_from_json(join_ref, "join_ref")?;
    Ok(Message {
        join_ref,
        msg_ref,
        topic,
        event,
        payload: Payload::Json(payload),
    })
}

pub(super) fn encode_reply(reply: &PhxReply<'_>) -> Result<Frame, EncodeError> {
    let response = json(reply.response)?;
    let payload = ReplyPayload {
        status: reply.status.as_str(),
        response,
    };
    Ok(envelope(reply.topic, event::REPLY, payload, reply.msg_ref))
}

pub(super) fn encode_push(push: &Push<'_>) -> Result<Frame, EncodeError> {
    let payload = json(push.payload)?;
    Ok(envelope(push.topic, push.event, payload, push.msg_ref))
}

pub(super) fn encode_broadcast(broadcast: &Broadcast<'_>) -> Result<Frame, EncodeError> {
    let payload = json(broadcast.payload)?;
    Ok(envelope(broadcast.topic, broadcast.event, payload, None))
}

fn json(payload: &Payload) -> Result<JsonPayload<'_>, EncodeError> {
    JsonPayload::of(payload).map_err(|_| EncodeError::BinaryOnV1)
}

fn envelope(topic: &str, event: &str, payload: impl Serialize, msg_ref: Option<&Ref>) -> Frame {
    text_frame(&Envelope {
        topic,
        event,
        payload,
        msg_ref: JsonRef(msg_ref),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::message::Status;
    use crate::serializer::Serializer;

    fn text(frame: Frame) -> String {
        match frame {
            Frame::Text(text) => text.to_string(),
            Frame::Binary(bytes) => panic!("expected a text frame, got binary {bytes:?}"),
        }
    }

    fn decode_err(text: &str) -> DecodeError {
        let err = Serializer::V1.decode_text(text).unwrap_err();
        assert_eq!(err.close().code, 1007, "{err}");
        err
    }

    #[test]
    fn decodes_a_join_with_its_join_ref() {
        let message = Serializer::V1
            .decode_text(
                r#"{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}"#,
            )
            .unwrap();
        assert_eq!(
            message,
            Message {
                join_ref: Some(Ref::from("1")),
                msg_ref: Some(Ref::from("1")),
                topic: "room:lobby".into(),
                event: "phx_join".into(),
                payload: Payload::empty(),
            }
        );
    }

    #[test]
    fn join_ref_absent_or_null_is_none_and_ref_may_be_null() {
        for text in [
            r#"{"topic":"t","event":"e","payload":{},"ref":null}"#,
            r#"{"topic":"t","event":"e","payload":{},"ref":null,"join_ref":null}"#,
        ] {
            let message = Serializer::V1.decode_text(text).unwrap();
            assert_eq!(message.join_ref, None);
            assert_eq!(message.msg_ref, None);
        }
    }

    #[test]
    fn refs_keep_their_json_type() {
        let message = Serializer::V1
            .decode_text(r#"{"topic":"t","event":"e","payload":{},"ref":"5","join_ref":5}"#)
            .unwrap();
        assert_eq!(message.msg_ref, Some(Ref::from("5")));
        assert_eq!(message.join_ref, Some(Ref::Num(5.into())));

        let push = Push {
            join_ref: message.join_ref.as_ref(),
            msg_ref: message.msg_ref.as_ref(),
            topic: "t",
            event: "e",
            payload: &message.payload,
        };
        let encoded = text(Serializer::V1.encode_push(&push).unwrap());
        assert_eq!(
            encoded,
            r#"{"topic":"t","event":"e","payload":{},"ref":"5"}"#
        );

        let number_ref = Ref::Num(5.into());
        let push = Push {
            msg_ref: Some(&number_ref),
            ..push
        };
        let encoded = text(Serializer::V1.encode_push(&push).unwrap());
        assert_eq!(encoded, r#"{"topic":"t","event":"e","payload":{},"ref":5}"#);
    }

    #[test]
    fn any_payload_value_and_extra_keys_are_accepted() {
        let message = Serializer::V1
            .decode_text(r#"{"topic":"t","event":"e","payload":[1,"x"],"ref":"2","extra":true}"#)
            .unwrap();
        assert_eq!(message.payload, Payload::Json(json!([1, "x"])));
    }

    #[test]
    fn encodes_the_documented_replies_and_push() {
        let ok = Payload::empty();
        let one = Ref::from("1");
        let join_ref = Ref::from("1");
        let reply = PhxReply {
            join_ref: Some(&join_ref),
            msg_ref: Some(&one),
            topic: "room:lobby",
            status: Status::Ok,
            response: &ok,
        };
        assert_eq!(
            text(Serializer::V1.encode_reply(&reply).unwrap()),
            r#"{"topic":"room:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#
        );

        let seven = Ref::from("7");
        let heartbeat_reply = PhxReply {
            join_ref: None,
            msg_ref: Some(&seven),
            topic: "phoenix",
            ..reply
        };
        assert_eq!(
            text(Serializer::V1.encode_reply(&heartbeat_reply).unwrap()),
            r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"7"}"#
        );

        let body = Payload::Json(json!({"body": "hi"}));
        let push = Push {
            join_ref: Some(&join_ref),
            msg_ref: None,
            topic: "room:lobby",
            event: "new_msg",
            payload: &body,
        };
        assert_eq!(
            text(Serializer::V1.encode_push(&push).unwrap()),
            r#"{"topic":"room:lobby","event":"new_msg","payload":{"body":"hi"},"ref":null}"#
        );
    }

    #[test]
    fn error_reply_carries_its_status_and_response() {
        let response = Payload::Json(json!({"reason": "unmatched topic"}));
        let eight = Ref::from("8");
        let reply = PhxReply {
            join_ref: None,
            msg_ref: Some(&eight),
            topic: "room:lobby",
            status: Status::Error,
            response: &response,
        };
        let encoded: Value =
            serde_json::from_str(&text(Serializer::V1.encode_reply(&reply).unwrap())).unwrap();
        assert_eq!(
            encoded,
            json!({"topic": "room:lobby", "event": "phx_reply", "ref": "8",
                   "payload": {"status": "error", "response": {"reason": "unmatched topic"}}})
        );
    }

    #[test]
    fn output_never_contains_join_ref() {
        let join_ref = Ref::from("3");
        let payload = Payload::empty();
        let reply = PhxReply {
            join_ref: Some(&join_ref),
            msg_ref: Some(&join_ref),
            topic: "t",
            status: Status::Ok,
            response: &payload,
        };
        let push = Push {
            join_ref: Some(&join_ref),
            msg_ref: Some(&join_ref),
            topic: "t",
            event: "phx_close",
            payload: &payload,
        };
        let broadcast = Broadcast {
            topic: "t",
            event: "e",
            payload: &payload,
        };
        for frame in [
            Serializer::V1.encode_reply(&reply),
            Serializer::V1.encode_push(&push),
            Serializer::V1.encode_broadcast(&broadcast),
        ] {
            let encoded = text(frame.unwrap());
            assert!(!encoded.contains("join_ref"), "{encoded}");
            let object: serde_json::Map<String, Value> = serde_json::from_str(&encoded).unwrap();
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["event", "payload", "ref", "topic"], "{encoded}");
        }
    }

    #[test]
    fn broadcast_has_a_null_ref() {
        let payload = Payload::Json(json!({"id": 1}));
        let broadcast = Broadcast {
            topic: "room:lobby",
            event: "new_msg",
            payload: &payload,
        };
        assert_eq!(
            text(Serializer::V1.encode_broadcast(&broadcast).unwrap()),
            r#"{"topic":"room:lobby","event":"new_msg","payload":{"id":1},"ref":null}"#
        );
    }

    #[test]
    fn round_trip_keeps_every_field_but_join_ref() {
        let input = r#"{"topic":"room:lobby","event":"new_msg","payload":{"body":"hi","n":[1,2.5,null]},"ref":"4","join_ref":"3"}"#;
        let message = Serializer::V1.decode_text(input).unwrap();
        let push = Push {
            join_ref: message.join_ref.as_ref(),
            msg_ref: message.msg_ref.as_ref(),
            topic: &message.topic,
            event: &message.event,
            payload: &message.payload,
        };
        let encoded = text(Serializer::V1.encode_push(&push).unwrap());
        assert_eq!(
            encoded,
            r#"{"topic":"room:lobby","event":"new_msg","payload":{"body":"hi","n":[1,2.5,null]},"ref":"4"}"#
        );
        let again = Serializer::V1.decode_text(&encoded).unwrap();
        assert_eq!(
            again,
            Message {
                join_ref: None,
                ..message
            }
        );
    }

    #[test]
    fn binary_payloads_are_refused() {
        let bytes = Payload::Binary(Bytes::from_static(b"\x07"));
        let reply = PhxReply {
            join_ref: None,
            msg_ref: None,
            topic: "t",
            status: Status::Ok,
            response: &bytes,
        };
        let push = Push {
            join_ref: None,
            msg_ref: None,
            topic: "t",
            event: "e",
            payload: &bytes,
        };
        assert_eq!(
            Serializer::V1.encode_reply(&reply),
            Err(EncodeError::BinaryOnV1)
        );
        assert_eq!(
            Serializer::V1.encode_push(&push),
            Err(EncodeError::BinaryOnV1)
        );
    }

    #[test]
    fn invalid_json_is_refused() {
        for text in ["", "{", "not json", r#"{"topic":"t"} trailing"#] {
            assert!(
                matches!(decode_err(text), DecodeError::InvalidJson(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn non_objects_are_refused() {
        for text in [r#"["1","1","t","e",{}]"#, "null", "42", r#""s""#] {
            assert!(
                matches!(decode_err(text), DecodeError::NotAnObject),
                "{text:?}"
            );
        }
    }

    #[test]
    fn each_required_key_is_required() {
        let full = json!({"topic": "t", "event": "e", "payload": {}, "ref": null});
        for key in ["topic", "event", "payload", "ref"] {
            let mut object = full.clone();
            object.as_object_mut().unwrap().remove(key);
            let err = decode_err(&object.to_string());
            assert!(
                matches!(err, DecodeError::MissingKey(k) if k == key),
                "{err}"
            );
            assert_eq!(err.to_string(), format!("V1 message has no `{key}` key"));
        }
    }

    #[test]
    fn topic_and_event_must_be_strings() {
        let err = decode_err(r#"{"topic":1,"event":"e","payload":{},"ref":null}"#);
        assert!(matches!(err, DecodeError::NotAString("topic")));
        let err = decode_err(r#"{"topic":"t","event":null,"payload":{},"ref":null}"#);
        assert!(matches!(err, DecodeError::NotAString("event")));
    }

    #[test]
    fn refs_must_be_string_number_or_null() {
        let err = decode_err(r#"{"topic":"t","event":"e","payload":{},"ref":true}"#);
        assert!(matches!(err, DecodeError::InvalidRef("ref")));
        let err = decode_err(r#"{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":[1]}"#);
        assert!(matches!(err, DecodeError::InvalidRef("join_ref")));
        let err = decode_err(r#"{"topic":"t","event":"e","payload":{},"ref":{"a":1}}"#);
        assert!(matches!(err, DecodeError::InvalidRef("ref")));
    }
}
