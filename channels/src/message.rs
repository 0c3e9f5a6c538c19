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
/// Longest body as received, in code points: the text and as much whitespace around it.
/// Without it, whitespace around a short text could fill a whole inbound frame (1 MiB),
/// and every member would be sent, and every room would keep, that much per message.
pub const MAX_RAW_BODY_CHARS: usize = 2 * MAX_BODY_CHARS;

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
///
/// Keeps at most `capacity` messages and, when given a byte budget, only as many of the
/// newest as fit in it once encoded as a JSON array (the newest one is always kept).
pub struct ChatLog {
    topic: String,
    capacity: usize,
    messages: VecDeque<ChatMessage>,
    /// Encoded size of each kept message, in the order of `messages`.
    sizes: VecDeque<usize>,
    /// Encoded size of `messages` as a JSON array.
    bytes: usize,
    max_bytes: usize,
    last_id: u64,
    pubsub: PubSub,
    /// Where each message is also written, for a log kept across restarts.
    storage: Option<Storage>,
}

impl ChatLog {
    pub fn new(topic: &str, capacity: usize, pubsub: &PubSub) -> Self {
        Self::with_budget(topic, capacity, usize::MAX, pubsub)
    }

    /// A log whose kept messages also take at most `max_bytes` as a JSON array.
    pub fn with_budget(topic: &str, capacity: usize, max_bytes: usize, pubsub: &PubSub) -> Self {
        ChatLog {
            topic: topic.to_owned(),
            capacity,
            messages: VecDeque::new(),
            sizes: VecDeque::new(),
            bytes: "[]".len(),
            max_bytes,
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
                Ok(message) => {
                    let size = self.size_of(&message.to_json());
                    self.keep(message, size);
                }
                Err(error) => log::warn!("{}: a stored message is unreadable: {error}", self.topic),
            }
        }
        self.storage = Some(storage.clone());
        self
    }

    /// Stores the next message (dropping the oldest past the capacity or the budget) and
    /// broadcasts it as `new_msg`; returns its id.
    pub fn post(&mut self, user: &str, body: String) -> u64 {
        self.last_id += 1;
        let message = ChatMessage::new(self.last_id, user, body);
        let json = message.to_json();
        let size = self.size_of(&json);
        if let Some(storage) = &self.storage {
            storage.append(&self.topic, self.last_id, json.to_string());
        }
        self.pubsub
            .broadcast(&self.topic, "new_msg", Payload::Json(json));
        self.keep(message, size);
        self.last_id
    }

    /// A message's encoded size, and a comma before it in the array; measured only
    /// against a budget.
    fn size_of(&self, json: &serde_json::Value) -> usize {
        if self.max_bytes == usize::MAX {
            0
        } else {
            json.to_string().len() + 1
        }
    }

    /// Keeps `message` (of encoded `size`), dropping the oldest past the capacity or the
    /// budget.
    fn keep(&mut self, message: ChatMessage, size: usize) {
        self.messages.push_back(message);
        self.sizes.push_back(size);
        self.bytes += size;
        while self.messages.len() > self.capacity
            || (self.bytes > self.max_bytes && self.messages.len() > 1)
        {
            self.messages.pop_front();
            self.bytes -= self.sizes.pop_front().unwrap_or(0);
        }
    }

    /// The stored messages, oldest first.
    pub fn messages(&self) -> &VecDeque<ChatMessage> {
        &self.messages
    }
}

/// The body of a `new_msg` payload if valid: a string of 1 to 2000 code points after
/// trimming, at most 4000 as received, with no control character but newline and tab
/// (docs/contract.md). It is kept exactly as received (not trimmed).
pub fn valid_body(payload: &Payload) -> Option<String> {
    let body = payload.as_json()?.get("body")?.as_str()?;
    let text = body.trim().chars().count();
    let ok = (1..=MAX_BODY_CHARS).contains(&text)
        && body.chars().count() <= MAX_RAW_BODY_CHARS
        && !body.chars().any(refused_in_body);
    ok.then(|| body.to_owned())
}

/// The control characters a body may not hold: U+0000–U+001F and U+007F–U+009F (the
/// Unicode category Cc) but newline and tab.
fn refused_in_body(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
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

    #[test]
    fn bodies_refuse_control_characters_but_newline_and_tab() {
        for c in (0..=0x1f).chain(0x7f..=0x9f).filter_map(char::from_u32) {
            let refused = c != '\n' && c != '\t';
            assert_eq!(
                body(json!({ "body": format!("a{c}b") })).is_none(),
                refused,
                "U+{:04X}",
                c as u32
            );
        }
        assert_eq!(
            body(json!({"body": "a\u{a0}b\u{2028}"})),
            Some("a\u{a0}b\u{2028}".into())
        );
    }

    #[test]
    fn bodies_hold_at_most_as_much_whitespace_around_as_text() {
        let padded = |around: usize| format!("{}x{}", " ".repeat(around), "\n".repeat(around));
        let most = (MAX_RAW_BODY_CHARS - 1) / 2;
        assert_eq!(body(json!({ "body": padded(most) })), Some(padded(most)));
        assert_eq!(body(json!({ "body": padded(most + 1) })), None);
        let full = format!("{}{}", "😀".repeat(2000), "\u{3000}".repeat(2000));
        assert_eq!(body(json!({ "body": full.clone() })), Some(full.clone()));
        assert_eq!(body(json!({ "body": format!("{full} ") })), None);
    }

    /// The figure README.md and status.rs build on: the largest valid message, encoded.
    #[test]
    fn the_largest_message_takes_14322_bytes_of_json() {
        let around = "\u{3000}".repeat(1000);
        let largest = format!("{around}{}{around}", "😀".repeat(2000));
        assert!(body(json!({ "body": largest.clone() })).is_some());
        let message = ChatMessage {
            id: u64::MAX,
            user: "😀".repeat(64),
            body: largest,
            at: 1_765_000_000_000,
        };
        assert_eq!(serde_json::to_string(&message).unwrap().len(), 14_322);
    }

    #[test]
    fn a_chat_log_with_a_budget_keeps_the_newest_that_fit() {
        let size = |id: u64, body: &str| {
            serde_json::to_string(&ChatMessage::new(id, "u", body.to_owned()))
                .unwrap()
                .len()
        };
        let big = "b".repeat(2000);
        let one = size(1, &big);
        let mut log = ChatLog::with_budget("all", 100, 3 * (one + 1) + 2, &PubSub::new());
        for _ in 0..5 {
            log.post("u", big.clone());
        }
        let ids: Vec<u64> = log.messages().iter().map(|m| m.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        let encoded = serde_json::to_string(log.messages()).unwrap().len();
        assert!(encoded <= 3 * (one + 1) + 2, "{encoded}");
        // Small messages push the big ones out by count, not by budget.
        for i in 0..200 {
            log.post("u", format!("{i}"));
        }
        assert_eq!(log.messages().len(), 100);
        assert_eq!(log.messages().back().map(|m| m.id), Some(205));
        // One message over the whole budget is still kept: the newest is never dropped.
        let mut tiny = ChatLog::with_budget("all", 100, 10, &PubSub::new());
        tiny.post("u", big.clone());
        tiny.post("u", big);
        assert_eq!(
            tiny.messages().iter().map(|m| m.id).collect::<Vec<_>>(),
            [2]
        );
    }
}
