//! Admission: who may connect, by the `user` connect parameter (docs/contract.md, Sockets).
//!
//! Owns the name rule, the assigns every channel reads (`user`), and how a user shows in
//! presence (key: the name; meta: `online_at`). Must not know any channel.

use fluxwire::{Assigns, Channel, ChannelContext, ConnectInfo, Params, Presence, Refused, Socket};
use serde_json::Map;

use crate::message::now_ms;

/// Longest user name, in code points, after trimming.
pub const MAX_NAME_CHARS: usize = 64;

/// Admits a connection whose `user` is a valid name; refuses (403) any other.
pub struct UserSocket;

impl Socket for UserSocket {
    fn connect(&self, params: &Params, _info: &ConnectInfo) -> Result<Assigns, Refused> {
        let raw = params
            .get("user")
            .ok_or_else(|| Refused("missing user".into()))?;
        let name = valid_name(raw).ok_or_else(|| Refused(format!("invalid user {raw:?}")))?;
        Ok(Assigns::new().with("user", name))
    }

    /// All connections of one user share the id `user:NAME`.
    fn id(&self, assigns: &Assigns) -> Option<String> {
        assigns.get_str("user").map(|name| format!("user:{name}"))
    }
}

/// The user of this connection, tracked on the channel's topic in `presence` under
/// their name with `online_at` (docs/contract.md: one meta per connection).
pub fn track_user<C: Channel>(ctx: &mut ChannelContext<'_, C>, presence: &Presence) -> String {
    let user = ctx.assigns().get_str("user").unwrap_or_default().to_owned();
    let mut meta = Map::new();
    meta.insert("online_at".into(), now_ms().into());
    ctx.track(presence, &user, meta);
    user
}

/// The trimmed name if it is 1 to 64 code points without control characters.
pub fn valid_name(raw: &str) -> Option<&str> {
    let name = raw.trim();
    let chars = name.chars().count();
    let ok = (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control);
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(valid_name("  alice "), Some("alice"));
        assert_eq!(valid_name(&"é".repeat(64)), Some("é".repeat(64).as_str()));
        assert_eq!(valid_name(&"é".repeat(65)), None);
        assert_eq!(valid_name("   "), None);
        assert_eq!(valid_name(""), None);
        assert_eq!(valid_name("a\u{7}b"), None);
        assert_eq!(valid_name("a\nb"), None);
        assert_eq!(valid_name("Jürgen K."), Some("Jürgen K."));
    }
}
