//! Chat, as `all` and the rooms share it (CONTRACT.md: a message is
//! `{"id","user","body","at"}`): the message, the rule for a valid body, and the
//! [`ChatLog`] of a topic.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use fluxwire::{Payload, PubSub};
use serde::Serialize;
use serde_json::Value;

/// Longest body, in code points, after trimming.
pub const MAX_BODY_CHARS: usize = 2000;
/// Longest body as received, in code points: the text and as much whitespace around it.
/// Without it, whitespace around a short text could fill a whole inbound frame (1 MiB),
/// and every member would be sent, and every room would keep, that much per message.
pub const MAX_RAW_BODY_CHARS: usize = 2 * MAX_BODY_CHARS;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
}

impl ChatLog {
    pub fn new(topic: &str, capacity: usize, pubsub: &PubSub) -> Self {
        ChatLog {
            topic: topic.to_owned(),
            capacity,
            messages: VecDeque::new(),
            last_id: 0,
            pubsub: pubsub.clone(),
        }
    }

    /// Stores the next message (dropping the oldest past the capacity) and broadcasts
    /// it as `new_msg`; returns its id.
    pub fn post(&mut self, user: &str, body: String) -> u64 {
        self.last_id += 1;
        let message = ChatMessage::new(self.last_id, user, body);
        self.pubsub
            .broadcast(&self.topic, "new_msg", Payload::Json(message.to_json()));
        if self.messages.len() == self.capacity {
            self.messages.pop_front();
        }
        self.messages.push_back(message);
        self.last_id
    }

    /// The stored messages, oldest first.
    pub fn messages(&self) -> &VecDeque<ChatMessage> {
        &self.messages
    }
}

/// The body of a `new_msg` payload if valid: a string of 1 to 2000 code points after
/// trimming, at most 4000 as received, with no control character but newline and tab
/// (CONTRACT.md). It is kept exactly as received (not trimmed).
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
}
