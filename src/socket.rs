//! The application's socket: who may connect, and what every channel learns about them.
//!
//! Owns the `connect` callback ([`Socket`]), the connect parameters ([`Params`]) and the
//! per-connection [`Assigns`] it produces. Must not know any transport: WebSocket and
//! long-poll both call it with the query string's parameters.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::Value;

/// Connect parameters from the query string: flat keys, percent-decoded, last wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses a query string the way Plug does, tolerating the empty segments and the
    /// trailing `&` that phoenix.js produces.
    pub fn from_query(query: &str) -> Self {
        // Bytes that are not UTF-8 after percent-decoding become U+FFFD (lossy), so
        // parsing into string pairs cannot fail.
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        Params(pairs.into_iter().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether `key` was sent as a bracketed (nested or array) parameter, as in `vsn[]=1`.
    pub fn has_nested(&self, key: &str) -> bool {
        self.0.keys().any(|k| {
            k.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with('['))
        })
    }
}

/// What the transport knows about the peer at connect time.
#[derive(Clone, Debug)]
pub struct ConnectInfo {
    pub peer: Option<SocketAddr>,
    /// `websocket` or `longpoll`; `http` for a store read (`GET /stores/NAME`).
    pub transport: &'static str,
}

/// What `connect` attaches to a connection; every channel on it can read them.
///
/// A short list rather than a map: a connection has a handful of assigns, and every byte
/// kept per connection counts (a one-entry `serde_json::Map` alone takes ~630 bytes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assigns(Vec<(Box<str>, Value)>);

impl Assigns {
    pub fn new() -> Self {
        Assigns(Vec::new())
    }

    /// Sets `key`, replacing an earlier value.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| &**k == key) {
            Some((_, old)) => *old = value,
            None => self.0.push((key.into(), value)),
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

/// Why a connection was refused; the transport answers 403 and logs this line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The application's gatekeeper, called once per connection before the upgrade.
pub trait Socket: Send + Sync + 'static {
    /// Accept the connection with its assigns, or refuse it (HTTP 403).
    fn connect(&self, params: &Params, info: &ConnectInfo) -> Result<Assigns, Refused>;

    /// Identifies all connections of one user, so that they can be found and
    /// disconnected together ([`Connections::disconnect`](crate::Connections::disconnect)).
    /// `None`: anonymous.
    fn id(&self, _assigns: &Assigns) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phoenix_js_query_quirks() {
        let p = Params::from_query(
            "user=alice&&nested%5Ba%5D=1&arr%5B0%5D=1&u=undefined&vsn=2.0.0&user=bob&",
        );
        assert_eq!(p.get("user"), Some("bob"));
        assert_eq!(p.get("vsn"), Some("2.0.0"));
        assert_eq!(p.get("u"), Some("undefined"));
        assert_eq!(p.get("nested[a]"), Some("1"));
        assert!(p.has_nested("nested"));
        assert!(!p.has_nested("user"));
        assert_eq!(Params::from_query(""), Params::default());
    }

    #[test]
    fn assigns_keep_the_last_value_of_a_key() {
        let assigns = Assigns::new()
            .with("user", "a")
            .with("n", 1)
            .with("user", "b");
        assert_eq!(assigns.get_str("user"), Some("b"));
        assert_eq!(assigns.get("n"), Some(&Value::from(1)));
        assert_eq!(assigns.get("none"), None);
    }

    #[test]
    fn percent_decoding_and_invalid_utf8() {
        let p = Params::from_query("user=J%C3%BCrgen+K&bad=%FF&ok=1");
        assert_eq!(p.get("user"), Some("Jürgen K"));
        assert_eq!(p.get("bad"), Some("\u{FFFD}"));
        assert_eq!(p.get("ok"), Some("1"));
    }
}
