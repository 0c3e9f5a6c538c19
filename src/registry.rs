//! The registry of live sessions, for reaching connections from outside them.
//!
//! Owns the set of sessions with their socket ids, so the endpoint can close them all at
//! shutdown and an application can disconnect every connection of one user. Must not
//! route messages: topics go through pubsub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::Recipient;

use crate::session::SessionMsg;
use crate::transport::close_code;

/// Every live session. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    next_key: u64,
    live: HashMap<u64, Registered>,
}

struct Registered {
    socket_id: Option<Arc<str>>,
    mailbox: Recipient<SessionMsg>,
}

/// A session's place in the registry; dropping it unregisters the session.
pub struct Registration {
    sessions: Sessions,
    key: u64,
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn register(
        &self,
        socket_id: Option<Arc<str>>,
        mailbox: Recipient<SessionMsg>,
    ) -> Registration {
        let mut table = self.table();
        table.next_key += 1;
        let key = table.next_key;
        table.live.insert(key, Registered { socket_id, mailbox });
        Registration {
            sessions: self.clone(),
            key,
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.table().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes (1001) every connection whose socket `id` is `socket_id`; returns how many.
    pub fn disconnect(&self, socket_id: &str) -> usize {
        self.close_where(
            |r| r.socket_id.as_deref() == Some(socket_id),
            "disconnected",
        )
    }

    /// Closes every connection (1001); returns how many.
    pub fn close_all(&self, reason: &'static str) -> usize {
        self.close_where(|_| true, reason)
    }

    /// Waits until every session has ended (their close frames sent), or `timeout`;
    /// returns how many are still live.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while !self.is_empty() && Instant::now() < deadline {
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        self.len()
    }

    fn close_where(&self, matches: impl Fn(&Registered) -> bool, reason: &'static str) -> usize {
        let table = self.table();
        table
            .live
            .values()
            .filter(|r| matches(r))
            .map(|r| {
                r.mailbox.do_send(SessionMsg::Disconnect {
                    code: close_code::GOING_AWAY,
                    reason,
                })
            })
            .count()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.table().live.remove(&self.key);
    }
}
