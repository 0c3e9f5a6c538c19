//! Chat, as `all` and the rooms share it (docs/contract.md: a message is
//! `{"id","user","body","at"}`): the message, the rule for a valid body, and the
//! [`ChatLog`] of a topic.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use fluxwire::{Payload, PubSub, Storage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest body, in code points, after trimming.
pub const MAX_BODY_CHARS: usize = 2000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: u64,
    pub user: String,
    pub body: String,
    pub at: u64,
}

impl ChatMessage {
    pub fn new(id: u64, user: &str, body: String) -> Self {
        ChatMessage {
            id,
            user: user.to_owned(),
            body,
            at: now_ms(),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a chat message is plain JSON")
    }
}

/// The last messages of one topic, with the topic's own id sequence. Posting stores a
/// message and broadcasts it to the topic in one step, so a reader of the log (a joiner
/// reading history) sees each message either in the log or as a later broadcast.
pub struct ChatLog {
    topic: String,
    capacity: usize,
    messages: VecDeque<ChatMessage>,
    last_id: u64,
    pubsub: PubSub,
    /// Where each message is also written, for a log kept across restarts.
    storage: Option<Storage>,
}

impl ChatLog {
    pub fn new(topic: &str, capacity: usize, pubsub: &PubSub) -> Self {
        ChatLog {
            topic: topic.to_owned(),
            capacity,
            messages: VecDeque::new(),
            last_id: 0,
            pubsub: pubsub.clone(),
            storage: None,
        }
    }

    /// Continues the log the data dir keeps under this topic (its last messages and its
    /// ids), and writes every message posted from now on there too.
    pub fn persisted(mut self, storage: &Storage) -> Self {
        let tail = storage.take_log(&self.topic);
        self.last_id = tail.last_id;
        for entry in tail.entries {
            match serde_json::from_value::<ChatMessage>(entry) {
                Ok(message) => self.keep(message),
                Err(error) => log::warn!("{}: a stored message is unreadable: {error}", self.topic),
            }
        }
        self.storage = Some(storage.clone());
        self
    }

    fn keep(&mut self, message: ChatMessage) {
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
        }
        self.messages.push_back(message);
    }

    /// Stores the next message (dropping the oldest past the capacity) and broadcasts
    /// it as `new_msg`; returns its id.
    pub fn post(&mut self, user: &str, body: String) -> u64 {
        self.last_id += 1;
        let message = ChatMessage::new(self.last_id, user, body);
        let json = message.to_json();
        if let Some(storage) = &self.storage {
            storage.append(&self.topic, self.last_id, json.to_string());
        }
        self.pubsub
            .broadcast(&self.topic, "new_msg", Payload::Json(json));
        self.keep(message);
        self.last_id
    }

    /// The stored messages, oldest first.
    pub fn messages(&self) -> &VecDeque<ChatMessage> {
        &self.messages
    }
}

/// The body of a `new_msg` payload if valid: a string of 1 to 2000 code points after
/// trimming. It is kept exactly as received (not trimmed).
pub fn valid_body(payload: &Payload) -> Option<String> {
    let body = payload.as_json()?.get("body")?.as_str()?;
    let chars = body.trim().chars().count();
    (1..=MAX_BODY_CHARS)
        .contains(&chars)
        .then(|| body.to_owned())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chat_log_keeps_the_last_messages_with_increasing_ids() {
        let mut log = ChatLog::new("room:t", 3, &PubSub::new());
        let ids: Vec<u64> = (0..5).map(|i| log.post("u", format!("m{i}"))).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let kept: Vec<(u64, &str)> = log
            .messages()
            .iter()
            .map(|m| (m.id, m.body.as_str()))
            .collect();
        assert_eq!(kept, [(3, "m2"), (4, "m3"), (5, "m4")]);
    }

    fn body(v: Value) -> Option<String> {
        valid_body(&Payload::Json(v))
    }

    #[test]
    fn bodies() {
        assert_eq!(body(json!({"body": " hi "})), Some(" hi ".into()));
        assert_eq!(body(json!({"body": "   "})), None);
        assert_eq!(body(json!({"body": ""})), None);
        assert_eq!(body(json!({"body": 5})), None);
        assert_eq!(body(json!({})), None);
        assert_eq!(
            body(json!({"body": "é".repeat(2000)})),
            Some("é".repeat(2000))
        );
        assert_eq!(body(json!({"body": "x".repeat(2001)})), None);
        assert_eq!(
            body(json!({"body": format!(" {} ", "x".repeat(2000))})).map(|b| b.len()),
            Some(2002)
        );
        assert_eq!(valid_body(&Payload::Binary(bytes::Bytes::new())), None);
    }
}
