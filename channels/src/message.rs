//! The chat message shared by `all` and the rooms (CONTRACT.md: a message is
//! `{"id","user","body","at"}`), and the rule for a valid body.

use std::time::{SystemTime, UNIX_EPOCH};

use fluxwire::Payload;
use serde::Serialize;
use serde_json::Value;

/// Longest body, in code points, after trimming.
pub const MAX_BODY_CHARS: usize = 2000;

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
