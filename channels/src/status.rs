//! The `all` topic: the status store and the status channel (docs/contract.md, `all`).
//!
//! Owns the one status store (users, joined connections, hits, the last 100 messages
//! that fit in [`MAX_MSGS_BYTES`]) and its `status_users` broadcasts, coalesced to at
//! most one per window and always carrying the state at the moment they are sent, so
//! the last one is always current.
//! Must not hold per-connection state beyond the channel's own user name.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::ArbiterHandle;
use fluxwire::{
    Agent, Channel, ChannelContext, JoinParams, Payload, Presence, PubSub, Pusher, Reason, Reply,
    WeakAgent,
};
use serde_json::{json, Value};

use crate::message::{valid_body, ChatLog};
use crate::status_store::StatusMirror;
use crate::user_socket::track_user;

pub const TOPIC: &str = "all";
/// Messages kept and sent in `status_users`.
pub const MAX_MSGS: usize = 100;
/// Most bytes those messages take in a `status_users` (a JSON array): only the newest
/// that fit are kept. A message takes at most 14,322 bytes (README.md, "What one user
/// can make it send or keep"), so 100 of them could take 1.4 MB, past a member's 1 MiB
/// outbound bound, and a flood of `hit`s would send that to every member 50 times a
/// second. With this budget, what one user posts keeps a `status_users` under 66 KB, at
/// most 3.3 MB/s per member; ordinary messages (a few hundred bytes) still all fit.
pub const MAX_MSGS_BYTES: usize = 64 * 1024;
/// Changes within this window share one `status_users` broadcast.
pub const BROADCAST_WINDOW: Duration = Duration::from_millis(20);

/// The status store's state.
struct Status {
    /// Name → joined connections of that user.
    users: BTreeMap<String, usize>,
    connections: usize,
    hits: u64,
    msgs: ChatLog,
    broadcast_scheduled: bool,
    pubsub: PubSub,
    /// This store's own handle, to schedule its coalesced broadcast; weak, so that the
    /// store ends with its last channel's handle.
    me: Option<WeakAgent<Status>>,
    /// `store:status`, told every change.
    mirror: StatusMirror,
}

impl Status {
    fn view(&self) -> Value {
        json!({
            "users": self.users.keys().collect::<Vec<_>>(),
            "user_count": self.users.len(),
            "connections": self.connections,
            "hits": self.hits,
            "msgs": self.msgs.messages(),
        })
    }

    /// Schedules one `status_users` broadcast for everything changed in this window.
    fn changed(&mut self) {
        if self.broadcast_scheduled {
            return;
        }
        let Some(me) = self.me.clone() else {
            return;
        };
        self.broadcast_scheduled = true;
        actix::spawn(async move {
            actix::clock::sleep(BROADCAST_WINDOW).await;
            me.cast(Status::broadcast);
        });
    }

    fn broadcast(&mut self) {
        self.broadcast_scheduled = false;
        self.pubsub
            .broadcast(TOPIC, "status_users", Payload::Json(self.view()));
    }

    fn join(&mut self, user: &str) {
        let count = self.users.entry(user.to_owned()).or_default();
        *count += 1;
        let first = *count == 1;
        self.connections += 1;
        self.mirror.joined(user, first, self.connections);
        self.changed();
    }

    fn leave(&mut self, user: &str) {
        if let Some(count) = self.users.get_mut(user) {
            *count -= 1;
            let last = *count == 0;
            if last {
                self.users.remove(user);
            }
            self.connections -= 1;
            self.mirror.left(user, last, self.connections);
            self.changed();
        }
    }

    fn post(&mut self, user: &str, body: String) -> u64 {
        let id = self.msgs.post(user, body);
        if let Some(message) = self.msgs.messages().back() {
            self.mirror.posted(message);
        }
        self.changed();
        id
    }
}

/// The status store: an agent holding [`Status`]. Cheap to clone.
#[derive(Clone)]
pub struct StatusStore {
    agent: Agent<Status>,
}

impl StatusStore {
    pub fn start(arbiter: &ArbiterHandle, pubsub: &PubSub, mirror: StatusMirror) -> Self {
        let pubsub = pubsub.clone();
        let agent = Agent::start_in(arbiter, move || Status {
            users: BTreeMap::new(),
            connections: 0,
            hits: 0,
            msgs: ChatLog::with_budget(TOPIC, MAX_MSGS, MAX_MSGS_BYTES, &pubsub),
            broadcast_scheduled: false,
            pubsub,
            me: None,
            mirror,
        });
        let me = agent.downgrade();
        agent.cast(move |status| status.me = Some(me));
        StatusStore { agent }
    }
}

/// One connection's membership of `all`.
pub struct StatusChannel {
    store: StatusStore,
    presence: Presence,
    user: String,
}

impl StatusChannel {
    pub fn new(store: StatusStore, presence: Presence) -> Self {
        StatusChannel {
            store,
            presence,
            user: String::new(),
        }
    }
}

fn unavailable() -> Reply {
    Reply::reason("store unavailable")
}

impl Channel for StatusChannel {
    fn join(&mut self, _params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        self.user = track_user(ctx, &self.presence);
        let (agent, user, pusher) = (self.store.agent.clone(), self.user.clone(), ctx.pusher());
        let reply = json!({ "user": self.user });
        Reply::later(async move {
            // The joiner's own status is pushed from inside the store, so it reaches the
            // session before any later broadcast of the store: never a stale last word.
            let joined = agent
                .update(move |status| {
                    status.join(&user);
                    push_status(&pusher, status);
                })
                .await;
            match joined {
                Ok(()) => Reply::ok(reply),
                Err(_) => unavailable(),
            }
        })
    }

    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let agent = self.store.agent.clone();
        match event {
            "hit" => Reply::later(async move {
                let hits = agent
                    .get_and_update(|status| {
                        status.hits += 1;
                        status.mirror.hit(status.hits);
                        status.changed();
                        status.hits
                    })
                    .await;
                hits.map_or_else(|_| unavailable(), |hits| Reply::ok(json!({ "hits": hits })))
            }),
            "ping" => Reply::Ok(payload),
            "new_msg" => {
                let Some(body) = valid_body(&payload) else {
                    return Reply::reason("invalid body");
                };
                let user = self.user.clone();
                Reply::later(async move {
                    let id = agent
                        .get_and_update(move |status| status.post(&user, body))
                        .await;
                    id.map_or_else(|_| unavailable(), |id| Reply::ok(json!({ "id": id })))
                })
            }
            _ => Reply::reason("unknown event"),
        }
    }

    fn terminate(&mut self, _reason: Reason, _ctx: &mut ChannelContext<'_, Self>) {
        let user = std::mem::take(&mut self.user);
        self.store.agent.cast(move |status| status.leave(&user));
    }
}

fn push_status(pusher: &Pusher, status: &Status) {
    pusher.push("status_users", status.view());
}
