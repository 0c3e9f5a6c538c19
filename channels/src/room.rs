//! `room:NAME` topics: chat rooms, each with its own history store (CONTRACT.md, rooms).
//!
//! Owns the room name rule, one store per room (the last 50 messages and the room's id
//! sequence), and the channel. A joiner subscribes inside its room's store, at the very
//! moment it reads the history, and every message is stored and broadcast in one store
//! step: each message is then either in the joiner's history or pushed to it, never
//! lost and never both. Must not share anything between rooms.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix::ArbiterHandle;
use fluxwire::{Agent, Channel, ChannelContext, JoinParams, Payload, Presence, PubSub, Reply};
use serde_json::{json, Value};

use crate::message::{valid_body, ChatMessage};
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

/// One room's store state.
struct Room {
    topic: String,
    history: VecDeque<ChatMessage>,
    last_id: u64,
    pubsub: PubSub,
}

impl Room {
    fn history(&self) -> Vec<Value> {
        self.history.iter().map(ChatMessage::to_json).collect()
    }

    fn post(&mut self, user: &str, body: String) -> u64 {
        self.last_id += 1;
        let message = ChatMessage::new(self.last_id, user, body);
        self.pubsub
            .broadcast(&self.topic, "new_msg", Payload::Json(message.to_json()));
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(message);
        self.last_id
    }
}

/// Every room's store, started on first join. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    arbiter: ArbiterHandle,
    pubsub: PubSub,
    rooms: Arc<Mutex<HashMap<String, Agent<Room>>>>,
}

impl Rooms {
    pub fn new(arbiter: ArbiterHandle, pubsub: &PubSub) -> Self {
        Rooms {
            arbiter,
            pubsub: pubsub.clone(),
            rooms: Arc::default(),
        }
    }

    fn room(&self, topic: &str) -> Agent<Room> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(topic.to_owned())
            .or_insert_with(|| {
                let (topic, pubsub) = (topic.to_owned(), self.pubsub.clone());
                Agent::start_in(&self.arbiter, move || Room {
                    topic,
                    history: VecDeque::new(),
                    last_id: 0,
                    pubsub,
                })
            })
            .clone()
    }
}

/// One connection's membership of one room. `room` is `None` for an invalid name.
pub struct RoomChannel {
    room: Option<Agent<Room>>,
    presence: Presence,
    user: String,
}

impl RoomChannel {
    pub fn new(topic: &str, rooms: &Rooms, presence: Presence) -> Self {
        RoomChannel {
            room: room_name(topic).map(|_| rooms.room(topic)),
            presence,
            user: String::new(),
        }
    }
}

fn unavailable() -> Reply {
    Reply::reason("room unavailable")
}

impl Channel for RoomChannel {
    fn join(&mut self, _params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        let Some(room) = self.room.clone() else {
            return Reply::reason("invalid topic");
        };
        self.user = track_user(ctx, &self.presence);
        let subscription = ctx
            .take_subscription()
            .expect("join is the first call of an instance");
        Reply::later(async move {
            let history = room
                .get(move |room| {
                    subscription.activate();
                    room.history()
                })
                .await;
            history.map_or_else(
                |_| unavailable(),
                |messages| Reply::ok(json!({ "messages": messages })),
            )
        })
    }

    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let (Some(room), "new_msg") = (self.room.clone(), event) else {
            return Reply::reason("unknown event");
        };
        let Some(body) = valid_body(&payload) else {
            return Reply::reason("invalid body");
        };
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
