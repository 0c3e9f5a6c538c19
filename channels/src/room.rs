//! `room:NAME` topics: chat rooms, each with its own history store (docs/contract.md, rooms).
//!
//! Owns the room name rule, one store per room (the last 50 messages and the room's id
//! sequence), and the channel. A joiner subscribes inside its room's store, at the very
//! moment it reads the history, and every message is stored and broadcast in one store
//! step: each message is then either in the joiner's history or pushed to it, never
//! lost and never both. Must not share anything between rooms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::ArbiterHandle;
use fluxwire::{
    Agent, Channel, ChannelContext, JoinParams, Payload, Presence, PubSub, Reply, Storage,
};
use serde_json::json;

use crate::message::{valid_body, ChatLog};
use crate::user_socket::track_user;

/// Messages kept per room and sent in the join reply.
pub const HISTORY: usize = 50;
const MAX_NAME_LEN: usize = 64;

/// `NAME` of `room:NAME` if it is 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn room_name(topic: &str) -> Option<&str> {
    let name = topic.strip_prefix("room:")?;
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(name)
}

/// Every room's store, started on first join. Cheap to clone.
///
/// A room that has no member and never had a message holds nothing, so it is dropped
/// when its last member goes: a client joining and leaving made-up room names cannot
/// grow the server without bound. Rooms with history are kept.
#[derive(Clone)]
pub struct Rooms {
    arbiter: ArbiterHandle,
    pubsub: PubSub,
    rooms: Arc<Mutex<HashMap<String, RoomEntry>>>,
    /// The data dir keeping the rooms' messages, if any.
    storage: Option<Storage>,
}

struct RoomEntry {
    store: Agent<ChatLog>,
    /// Channel instances of this room that exist (joined, joining or refused).
    members: usize,
    posted: bool,
}

impl Rooms {
    pub fn new(arbiter: ArbiterHandle, pubsub: &PubSub, storage: Option<Storage>) -> Self {
        Rooms {
            arbiter,
            pubsub: pubsub.clone(),
            rooms: Arc::default(),
            storage,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomEntry>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rooms with a store.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store of `topic` for one more member.
    fn enter(&self, topic: &str) -> Agent<ChatLog> {
        let mut rooms = self.lock();
        let entry = rooms.entry(topic.to_owned()).or_insert_with(|| {
            let (topic, pubsub) = (topic.to_owned(), self.pubsub.clone());
            let storage = self.storage.clone();
            // A room with stored history is kept, like one posted to.
            let posted = storage.as_ref().is_some_and(|s| s.has_log(&topic));
            RoomEntry {
                store: Agent::start_in(&self.arbiter, move || {
                    let log = ChatLog::new(&topic, HISTORY, &pubsub);
                    match storage {
                        Some(storage) => log.persisted(&storage),
                        None => log,
                    }
                }),
                members: 0,
                posted,
            }
        });
        entry.members += 1;
        entry.store.clone()
    }

    /// One member of `topic` is gone; an empty room without history goes with it.
    fn leave(&self, topic: &str) {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get_mut(topic) {
            entry.members -= 1;
            if entry.members == 0 && !entry.posted {
                rooms.remove(topic);
            }
        }
    }

    /// `topic` has history from now on: it is kept.
    fn posted(&self, topic: &str) {
        if let Some(entry) = self.lock().get_mut(topic) {
            entry.posted = true;
        }
    }
}

/// One connection's membership of one room. `room` is `None` for an invalid name.
pub struct RoomChannel {
    room: Option<(Agent<ChatLog>, Rooms)>,
    topic: String,
    presence: Presence,
    user: String,
}

impl RoomChannel {
    pub fn new(topic: &str, rooms: &Rooms, presence: Presence) -> Self {
        RoomChannel {
            room: room_name(topic).map(|_| (rooms.enter(topic), rooms.clone())),
            topic: topic.to_owned(),
            presence,
            user: String::new(),
        }
    }
}

/// Whatever became of the join, the instance is no longer a member of its room.
impl Drop for RoomChannel {
    fn drop(&mut self) {
        if let Some((_, rooms)) = &self.room {
            rooms.leave(&self.topic);
        }
    }
}

fn unavailable() -> Reply {
    Reply::reason("room unavailable")
}

impl Channel for RoomChannel {
    fn join(&mut self, _params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        let Some((room, _)) = self.room.clone() else {
            return Reply::reason("invalid topic");
        };
        self.user = track_user(ctx, &self.presence);
        let subscription = ctx
            .take_subscription()
            .expect("join is the first call of an instance");
        Reply::later(async move {
            let history = room
                .get(move |log| {
                    subscription.activate();
                    json!({ "messages": log.messages() })
                })
                .await;
            history.map_or_else(|_| unavailable(), Reply::ok)
        })
    }

    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let (Some((room, rooms)), "new_msg") = (&self.room, event) else {
            return Reply::reason("unknown event");
        };
        let Some(body) = valid_body(&payload) else {
            return Reply::reason("invalid body");
        };
        rooms.posted(&self.topic);
        let room = room.clone();
        let user = self.user.clone();
        Reply::later(async move {
            let id = room
                .get_and_update(move |room| room.post(&user, body))
                .await;
            id.map_or_else(|_| unavailable(), |id| Reply::ok(json!({ "id": id })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn empty_rooms_without_history_are_dropped() {
        let rooms = Rooms::new(actix::Arbiter::current(), &PubSub::new(), None);
        let (a, b) = (rooms.enter("room:a"), rooms.enter("room:a"));
        rooms.enter("room:b");
        assert_eq!(rooms.len(), 2);
        rooms.leave("room:a");
        assert_eq!(rooms.len(), 2, "room:a still has a member");
        rooms.leave("room:a");
        assert_eq!(rooms.len(), 1, "room:a is empty and never had a message");
        drop((a, b));
        rooms.posted("room:b");
        rooms.leave("room:b");
        assert_eq!(rooms.len(), 1, "room:b keeps its history");
        let again = rooms.enter("room:b");
        again.get(|log| log.messages().len()).await.unwrap();
        assert_eq!(rooms.len(), 1);
    }

    #[test]
    fn names() {
        assert_eq!(room_name("room:lobby"), Some("lobby"));
        assert_eq!(room_name("room:A-z_09"), Some("A-z_09"));
        assert_eq!(
            room_name(&format!("room:{}", "a".repeat(64))).map(str::len),
            Some(64)
        );
        assert_eq!(room_name(&format!("room:{}", "a".repeat(65))), None);
        assert_eq!(room_name("room:"), None);
        assert_eq!(room_name("room:nope!"), None);
        assert_eq!(room_name("room:é"), None);
        assert_eq!(room_name("room:a b"), None);
    }
}
