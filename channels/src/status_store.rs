//! `store:status`: the status of `all` as a store, changed by patches as narrow as each
//! change (docs/contract.md, "Stores over the wire").
//!
//! Owns the mirror of `all`'s status (`users`, `user_count`, `connections`, `hits`,
//! `msgs`, the fields of `status_users`): the status store in [`crate::status`] tells it
//! each change as it makes it, and it records just that change: a newly arrived user is
//! one `add` at `/users/INDEX` (the list stays sorted), a hit one `replace` of `/hits`, a
//! message one `add` at the end of `/msgs` (and a `remove` of `/msgs/0` past 100).
//! Clients cannot act on it. Must not decide anything about `all`: it only mirrors.

use fluxwire::{Rejected, Store, StoreSpec, Stores, Tx};
use serde_json::{json, Value};

use crate::message::ChatMessage;
use crate::status::MAX_MSGS;

pub const NAME: &str = "status";

/// The handle the status store changes `store:status` through.
#[derive(Clone)]
pub struct StatusMirror {
    store: Store,
}

impl StatusMirror {
    /// Starts `store:status` on `arbiter`, empty as `all` is at start.
    pub fn start(stores: &Stores, arbiter: &actix::ArbiterHandle) -> Self {
        let initial = json!({
            "users": [], "user_count": 0, "connections": 0, "hits": 0, "msgs": [],
        });
        let spec = StoreSpec::new(NAME, initial).actions(|_, _| Err(Rejected::new("read only")));
        StatusMirror {
            store: stores.start_in(arbiter, spec),
        }
    }

    /// A connection of `user` joined `all`; `first` if the user was not there before.
    pub fn joined(&self, user: &str, first: bool, connections: usize) {
        let user = user.to_owned();
        self.store.cast(move |tx| {
            if first {
                let at = users(tx).partition_point(|u| u.as_str() < Some(user.as_str()));
                tx.add(&format!("/users/{at}"), Value::String(user))?;
                count_users(tx)?;
            }
            tx.replace("/connections", json!(connections))?;
            Ok(())
        });
    }

    /// A connection of `user` left `all`; `last` if it was the user's last one.
    pub fn left(&self, user: &str, last: bool, connections: usize) {
        let user = user.to_owned();
        self.store.cast(move |tx| {
            if last {
                if let Some(at) = users(tx).iter().position(|u| u.as_str() == Some(&user)) {
                    tx.remove(&format!("/users/{at}"))?;
                    count_users(tx)?;
                }
            }
            tx.replace("/connections", json!(connections))?;
            Ok(())
        });
    }

    pub fn hit(&self, hits: u64) {
        self.store.cast(move |tx| {
            tx.replace("/hits", json!(hits))
                .map(drop)
                .map_err(Into::into)
        });
    }

    /// A message was posted on `all`.
    pub fn posted(&self, message: &ChatMessage) {
        let message = message.to_json();
        self.store.cast(move |tx| {
            tx.push("/msgs", message)?;
            while tx.len("/msgs").unwrap_or(0) > MAX_MSGS {
                tx.remove("/msgs/0")?;
            }
            Ok(())
        });
    }
}

fn users<'t>(tx: &'t Tx<'_>) -> &'t [Value] {
    tx.get("/users")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn count_users(tx: &mut Tx<'_>) -> Result<(), Rejected> {
    let count = users(tx).len();
    tx.replace("/user_count", json!(count))?;
    Ok(())
}
