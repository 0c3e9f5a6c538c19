//! The cluster: several fluxwire processes acting as one, through an existing engine.
//!
//! Owns the boundary between the framework and a cluster engine ([`Engine`]: pubsub's
//! [`Relay`] plus what `/health` reports), the settings of a cluster (`--cluster`,
//! `--cluster-prefix`, `--node-id`), and the [`Envelope`] a broadcast crosses nodes in.
//! The one engine today is Redis (`cluster/redis.rs`); another (NATS) implements the same
//! trait. Without a cluster no engine exists and pubsub stays in-process. Must not know
//! channels or sessions: broadcasts come in through pubsub's relay and go back out
//! through [`PubSub::broadcast_here`](crate::pubsub::PubSub).

mod redis;

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::Payload;
use crate::pubsub::{PubSub, Relay};

/// How a node joins a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The engine's address, `redis://HOST:PORT[/DB]`.
    pub url: ClusterUrl,
    /// Every key and channel of this cluster starts with it: clusters sharing one Redis
    /// stay apart.
    pub prefix: String,
    /// This node's name, unique in the cluster.
    pub node_id: String,
}

/// A checked `redis://` URL (`--cluster`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl(String);

impl ClusterUrl {
    /// Accepts `redis://HOST[:PORT][/DB]` (and `rediss://` for TLS).
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
            return Err(format!(
                "{value:?} is not a Redis URL (expected redis://HOST:PORT[/DB])"
            ));
        }
        redis::check_url(value)?;
        Ok(ClusterUrl(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A URL may carry a password.
        f.write_str("ClusterUrl(<redacted>)")
    }
}

/// A node name for `--node-id`'s default: unique per process.
pub fn default_node_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("node-{}-{}", std::process::id(), &random[..8])
}

/// What a node knows of its cluster, for `/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    pub engine: &'static str,
    /// Whether this node reaches the engine now.
    pub connected: bool,
    /// Live nodes this node sees, itself included.
    pub nodes: usize,
}

/// A cluster engine: relays this node's broadcasts to the nodes that serve their topic,
/// and delivers theirs here. Guarantees it must give: a broadcast reaches each other
/// node that serves its topic at most once, and one node's broadcasts on one topic
/// arrive in the order published.
pub(crate) trait Engine: Relay {
    fn status(&self) -> ClusterStatus;
    fn node_id(&self) -> &str;
}

/// Joins the cluster: starts the engine and makes `pubsub` relay through it.
pub(crate) fn join(config: ClusterConfig, pubsub: &PubSub) -> Arc<dyn Engine> {
    let engine: Arc<dyn Engine> = redis::RedisEngine::start(config, pubsub.clone());
    let relayed = pubsub.set_relay(engine.clone());
    debug_assert!(relayed, "one cluster per pubsub");
    engine
}

/// A broadcast on its way between nodes: who published it, its event and its payload,
/// the JSON text encoded once by the publishing node and spliced by the receivers as it
/// is (no value tree is built for it). The topic travels as the channel's name.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope<'a> {
    /// The publishing node: it delivered locally already and drops its own copy.
    #[serde(rename = "n", borrow)]
    pub node: &'a str,
    #[serde(rename = "e", borrow)]
    pub event: std::borrow::Cow<'a, str>,
    /// A JSON payload, as text.
    #[serde(rename = "p", borrow, default, skip_serializing_if = "Option::is_none")]
    pub json: Option<&'a RawValue>,
    /// A binary payload, in base64.
    #[serde(rename = "b", borrow, default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<&'a str>,
}

impl Envelope<'_> {
    /// The bytes published for a broadcast of this node.
    pub(crate) fn encode(node: &str, event: &str, payload: &Payload) -> Vec<u8> {
        let json;
        let binary;
        let mut envelope = Envelope {
            node,
            event: event.into(),
            json: None,
            binary: None,
        };
        match payload {
            Payload::Json(value) => {
                json =
                    serde_json::value::to_raw_value(value).expect("a JSON value always serializes");
                envelope.json = Some(&json);
            }
            Payload::Encoded(raw) => envelope.json = Some(raw),
            Payload::Binary(bytes) => {
                binary = STANDARD.encode(bytes);
                envelope.binary = Some(&binary);
            }
        }
        serde_json::to_vec(&envelope).expect("an envelope always serializes")
    }

    /// Reads an envelope; `None` for bytes that are not one (logged by the caller).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The payload, as local subscribers get it.
    pub(crate) fn payload(&self) -> Option<Payload> {
        match (self.json, self.binary) {
            (Some(json), None) => Some(Payload::Encoded(json.to_owned().into())),
            (None, Some(binary)) => STANDARD
                .decode(binary)
                .ok()
                .map(|bytes| Payload::Binary(Bytes::from(bytes))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_envelope_carries_any_payload_unchanged() {
        let payloads = [
            Payload::Json(json!({"body": "hé \"quoted\"\n", "n": [1, 2.5, null]})),
            Payload::Encoded(
                serde_json::value::to_raw_value(&json!({"a": 1}))
                    .unwrap()
                    .into(),
            ),
            Payload::Binary(Bytes::from_static(&[0, 255, 10, 13])),
        ];
        for payload in payloads {
            let bytes = Envelope::encode("n1", "new_msg", &payload);
            let envelope = Envelope::decode(&bytes).expect("decodes");
            assert_eq!(envelope.node, "n1");
            assert_eq!(envelope.event, "new_msg");
            let back = envelope.payload().expect("a payload");
            match (&payload, &back) {
                (Payload::Json(a), Payload::Encoded(b)) => {
                    assert_eq!(
                        *a,
                        serde_json::from_str::<serde_json::Value>(b.get()).unwrap()
                    )
                }
                _ => assert_eq!(payload, back),
            }
        }
        assert!(Envelope::decode(b"not json").is_none());
        let neither = br#"{"n":"x","e":"y"}"#;
        assert!(Envelope::decode(neither).unwrap().payload().is_none());
    }

    #[test]
    fn cluster_urls_are_checked() {
        assert!(ClusterUrl::parse("redis://127.0.0.1:6379/0").is_ok());
        assert!(ClusterUrl::parse("redis://localhost").is_ok());
        for bad in ["", "127.0.0.1:6379", "http://x", "redis://"] {
            assert!(ClusterUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", ClusterUrl::parse("redis://:secret@h:1").unwrap()),
            "ClusterUrl(<redacted>)"
        );
    }
}
