//! One broadcast on its way to many clients, encoded lazily and at most once per
//! serializer version ("fastlane"): every subscriber of a version gets the same bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::{Frame, Serializer};
use crate::logline::client_text;
use crate::message::{Broadcast, Payload};

pub(crate) struct BroadcastFrame {
    topic: Arc<str>,
    event: String,
    payload: Payload,
    /// Indexed by [`slot`]; `None` inside when the broadcast cannot be encoded for that
    /// version (binary on V1).
    encoded: [OnceLock<Option<Frame>>; 2],
    /// Counts the encodings made, for the publisher's statistics.
    encodes: Arc<AtomicU64>,
}

impl BroadcastFrame {
    pub(crate) fn new(topic: &str, event: &str, payload: Payload, encodes: Arc<AtomicU64>) -> Self {
        BroadcastFrame {
            topic: topic.into(),
            event: event.to_owned(),
            payload,
            encoded: Default::default(),
            encodes,
        }
    }

    pub(crate) fn event(&self) -> &str {
        &self.event
    }

    pub(crate) fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The encoded frame for `serializer`; `None` if this broadcast cannot be encoded
    /// for it (logged once).
    pub(crate) fn frame(&self, serializer: Serializer) -> Option<&Frame> {
        self.encoded[slot(serializer)]
            .get_or_init(|| {
                self.encodes.fetch_add(1, Ordering::Relaxed);
                let broadcast = Broadcast {
                    topic: &self.topic,
                    event: &self.event,
                    payload: &self.payload,
                };
                serializer
                    .encode_broadcast(&broadcast)
                    .map_err(|error| {
                        log::warn!(
                            "broadcast {} on {}: {error}",
                            client_text(&self.event),
                            client_text(&self.topic)
                        )
                    })
                    .ok()
            })
            .as_ref()
    }
}

fn slot(serializer: Serializer) -> usize {
    match serializer {
        Serializer::V1 => 0,
        Serializer::V2 => 1,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    #[test]
    fn encoded_once_per_version_and_never_for_what_a_version_cannot_carry() {
        let encodes = Arc::new(AtomicU64::new(0));
        let frame = BroadcastFrame::new("t", "e", Payload::Json(json!({"a": 1})), encodes.clone());
        let v2 = frame.frame(Serializer::V2).cloned();
        assert_eq!(frame.frame(Serializer::V2).cloned(), v2);
        assert!(frame.frame(Serializer::V1).is_some());
        assert_eq!(encodes.load(Ordering::Relaxed), 2);

        let binary = BroadcastFrame::new(
            "t",
            "b",
            Payload::Binary(Bytes::from_static(b"x")),
            encodes.clone(),
        );
        assert!(binary.frame(Serializer::V1).is_none());
        assert!(binary.frame(Serializer::V1).is_none());
        assert!(matches!(
            binary.frame(Serializer::V2),
            Some(Frame::Binary(_))
        ));
        assert_eq!(
            encodes.load(Ordering::Relaxed),
            4,
            "a failed encoding is tried once"
        );
    }
}
