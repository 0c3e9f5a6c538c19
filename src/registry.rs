//! The registry of live connections, for reaching them from outside.
//!
//! Owns the set of live connections with their socket ids and outlets, so the endpoint
//! can close them all at shutdown and an application can disconnect every connection of
//! one user. Must not route messages: topics go through pubsub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::close::Close;
use crate::outlet::Outlet;

/// Every live connection. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    table: Mutex<Table>,
    /// Woken whenever the last connection leaves.
    emptied: Notify,
}

#[derive(Default)]
struct Table {
    next_key: u64,
    live: HashMap<u64, Registered>,
}

struct Registered {
    socket_id: Option<Arc<str>>,
    outlet: Arc<dyn Outlet>,
}

/// A connection's place in the registry; dropping it unregisters the connection.
pub(crate) struct Registration {
    connections: Connections,
    key: u64,
}

impl Connections {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn register(
        &self,
        socket_id: Option<Arc<str>>,
        outlet: Arc<dyn Outlet>,
    ) -> Registration {
        let mut table = self.table();
        table.next_key += 1;
        let key = table.next_key;
        table.live.insert(key, Registered { socket_id, outlet });
        Registration {
            connections: self.clone(),
            key,
        }
    }

    /// Live connections.
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
            Close::DISCONNECTED,
        )
    }

    /// Closes every connection with `close`; returns how many.
    pub fn close_all(&self, close: Close) -> usize {
        self.close_where(|_| true, close)
    }

    /// Waits until every connection has ended (their close frames sent), or `timeout`;
    /// returns how many are still live.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let wait_for_empty = async {
            loop {
                let emptied = self.inner.emptied.notified();
                tokio::pin!(emptied);
                // Registered before the check, so an emptying in between is not missed.
                emptied.as_mut().enable();
                if self.is_empty() {
                    return;
                }
                emptied.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait_for_empty).await;
        self.len()
    }

    fn close_where(&self, matches: impl Fn(&Registered) -> bool, close: Close) -> usize {
        // The outlets are closed outside the lock: a closing connection may unregister.
        let outlets: Vec<Arc<dyn Outlet>> = self
            .table()
            .live
            .values()
            .filter(|r| matches(r))
            .map(|r| r.outlet.clone())
            .collect();
        for outlet in &outlets {
            outlet.close(close);
        }
        outlets.len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut table = self.connections.table();
        table.live.remove(&self.key);
        if table.live.is_empty() {
            self.connections.inner.emptied.notify_waiters();
        }
    }
}
