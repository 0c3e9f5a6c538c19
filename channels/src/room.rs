//! `room:NAME` topics: chat rooms, each with its own history store (docs/contract.md, rooms).
//!
//! Owns the room name rule, one store per room (the last 50 messages and the room's id
//! sequence), the bounds on rooms (how many live at once, how long an empty one stays),
//! and the channel. A joiner subscribes inside its room's store, at the very moment it
//! reads the history, and every message is stored and broadcast in one store step: each
//! message is then either in the joiner's history or pushed to it, never lost and never
//! both. Must not share anything between rooms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

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
/// Idle rooms are looked for at least this often (and at least twice per idle timeout).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Joins refused at the cap are logged at most this often.
const FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// `NAME` of `room:NAME` if it is 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn room_name(topic: &str) -> Option<&str> {
    let name = topic.strip_prefix("room:")?;
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(name)
}

/// How many rooms may live at once, and how long one without members is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms with a store at once; a join that would start one more is refused with
    /// `too many rooms`.
    pub max_rooms: usize,
    /// A room with history and no member for this long is dropped, history and all.
    pub idle_timeout: Duration,
}

/// Every room's store, started on first join. Cheap to clone.
///
/// A room that has no member and never had a message holds nothing, so it is dropped
/// when its last member goes; a room with history is dropped once it has had no member
/// for the idle timeout. At most `max_rooms` live at once, so that a client joining
/// made-up room names cannot grow the server without bound.
#[derive(Clone)]
pub struct Rooms {
    arbiter: ArbiterHandle,
    pubsub: PubSub,
    limits: RoomLimits,
    table: Arc<Mutex<Table>>,
    /// The data dir keeping the rooms' messages, if any.
    storage: Option<Storage>,
}

#[derive(Default)]
struct Table {
    rooms: HashMap<String, RoomEntry>,
    /// When a refusal at the cap was last logged: at most once a minute.
    full_logged: Option<Instant>,
}

struct RoomEntry {
    store: Agent<ChatLog>,
    /// Channel instances of this room that exist (joined, joining or refused).
    members: usize,
    posted: bool,
    /// Since when the room has had no member.
    empty_since: Option<Instant>,
}

/// Why a room cannot be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    InvalidTopic,
    TooManyRooms,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::InvalidTopic => "invalid topic",
            Refusal::TooManyRooms => "too many rooms",
        }
    }
}

impl Rooms {
    /// Room stores run on `arbiter`, which also drops idle rooms (their messages stay in
    /// `storage`, if any, and come back with the next join).
    pub fn new(
        arbiter: ArbiterHandle,
        pubsub: &PubSub,
        limits: RoomLimits,
        storage: Option<Storage>,
    ) -> Self {
        let rooms = Rooms {
            arbiter,
            pubsub: pubsub.clone(),
            limits,
            table: Arc::default(),
            storage,
        };
        let every = SWEEP_EVERY
            .min(limits.idle_timeout / 2)
            .max(Duration::from_millis(1));
        let (table, idle) = (Arc::downgrade(&rooms.table), limits.idle_timeout);
        rooms.arbiter.spawn(async move {
            loop {
                actix::clock::sleep(every).await;
                if !sweep(&table, idle) {
                    break;
                }
            }
        });
        rooms
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Rooms with a store.
    pub fn len(&self) -> usize {
        self.lock().rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store of `topic` for one more member, started if need be and allowed.
    fn enter(&self, topic: &str) -> Result<Agent<ChatLog>, Refusal> {
        let mut table = self.lock();
        let table = &mut *table;
        if let Some(entry) = table.rooms.get_mut(topic) {
            entry.members += 1;
            entry.empty_since = None;
            return Ok(entry.store.clone());
        }
        if table.rooms.len() >= self.limits.max_rooms {
            if table
                .full_logged
                .is_none_or(|at| at.elapsed() >= FULL_LOG_EVERY)
            {
                table.full_logged = Some(Instant::now());
                log::warn!(
                    "rooms: {} live, the most --max-rooms allows: joins of new rooms are \
                     refused until one goes",
                    table.rooms.len()
                );
            }
            return Err(Refusal::TooManyRooms);
        }
        let (owned, pubsub) = (topic.to_owned(), self.pubsub.clone());
        let storage = self.storage.clone();
        // A room with stored history is kept, like one posted to.
        let posted = storage.as_ref().is_some_and(|s| s.has_log(topic));
        let store = Agent::start_in(&self.arbiter, move || {
            let log = ChatLog::new(&owned, HISTORY, &pubsub);
            match storage {
                Some(storage) => log.persisted(&storage),
                None => log,
            }
        });
        table.rooms.insert(
            topic.to_owned(),
            RoomEntry {
                store: store.clone(),
                members: 1,
                posted,
                empty_since: None,
            },
        );
        Ok(store)
    }

    /// One member of `topic` is gone; an empty room without history goes with it, one
    /// with history once idle.
    fn leave(&self, topic: &str) {
        let mut table = self.lock();
        if let Some(entry) = table.rooms.get_mut(topic) {
            entry.members -= 1;
            if entry.members == 0 {
                if entry.posted {
                    entry.empty_since = Some(Instant::now());
                } else {
                    table.rooms.remove(topic);
                }
            }
        }
    }

    /// `topic` has history from now on: it is kept while it has members, and after.
    fn posted(&self, topic: &str) {
        if let Some(entry) = self.lock().rooms.get_mut(topic) {
            entry.posted = true;
        }
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the rooms that have had no member for `idle`; `false` once the rooms are gone.
fn sweep(table: &Weak<Mutex<Table>>, idle: Duration) -> bool {
    let Some(table) = table.upgrade() else {
        return false;
    };
    let mut table = lock(&table);
    let before = table.rooms.len();
    table
        .rooms
        .retain(|_, entry| entry.empty_since.is_none_or(|since| since.elapsed() < idle));
    let dropped = before - table.rooms.len();
    if dropped > 0 {
        log::debug!("{dropped} idle rooms dropped");
    }
    true
}

/// One connection's membership of one room, or why it has none.
pub struct RoomChannel {
    room: Result<(Agent<ChatLog>, Rooms), Refusal>,
    topic: String,
    presence: Presence,
    user: String,
}

impl RoomChannel {
    pub fn new(topic: &str, rooms: &Rooms, presence: Presence) -> Self {
        let room = match room_name(topic) {
            Some(_) => rooms.enter(topic).map(|store| (store, rooms.clone())),
            None => Err(Refusal::InvalidTopic),
        };
        RoomChannel {
            room,
            topic: topic.to_owned(),
            presence,
            user: String::new(),
        }
    }
}

/// Whatever became of the join, the instance is no longer a member of its room.
impl Drop for RoomChannel {
    fn drop(&mut self) {
        if let Ok((_, rooms)) = &self.room {
            rooms.leave(&self.topic);
        }
    }
}

fn unavailable() -> Reply {
    Reply::reason("room unavailable")
}

impl Channel for RoomChannel {
    fn join(&mut self, _params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        let room = match &self.room {
            Ok((room, _)) => room.clone(),
            Err(refusal) => return Reply::reason(refusal.reason()),
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
        let (Ok((room, rooms)), "new_msg") = (&self.room, event) else {
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

    fn rooms(max_rooms: usize, idle_ms: u64) -> Rooms {
        let limits = RoomLimits {
            max_rooms,
            idle_timeout: Duration::from_millis(idle_ms),
        };
        Rooms::new(actix::Arbiter::current(), &PubSub::new(), limits, None)
    }

    #[actix::test]
    async fn empty_rooms_without_history_are_dropped() {
        let rooms = rooms(100, 60_000);
        let (a, b) = (rooms.enter("room:a"), rooms.enter("room:a"));
        rooms.enter("room:b").unwrap();
        assert_eq!(rooms.len(), 2);
        rooms.leave("room:a");
        assert_eq!(rooms.len(), 2, "room:a still has a member");
        rooms.leave("room:a");
        assert_eq!(rooms.len(), 1, "room:a is empty and never had a message");
        drop((a, b));
        rooms.posted("room:b");
        rooms.leave("room:b");
        assert_eq!(rooms.len(), 1, "room:b keeps its history");
        let again = rooms.enter("room:b").unwrap();
        again.get(|log| log.messages().len()).await.unwrap();
        assert_eq!(rooms.len(), 1);
    }

    #[actix::test]
    async fn past_the_cap_new_rooms_are_refused_until_one_is_dropped() {
        let rooms = rooms(2, 60_000);
        rooms.enter("room:a").unwrap();
        rooms.enter("room:b").unwrap();
        assert_eq!(rooms.enter("room:c").err(), Some(Refusal::TooManyRooms));
        assert!(
            rooms.enter("room:a").is_ok(),
            "a live room takes more members"
        );
        rooms.leave("room:a");
        rooms.leave("room:a");
        assert!(rooms.enter("room:c").is_ok(), "room:a left without history");
        assert_eq!(rooms.len(), 2);
    }

    #[actix::test]
    async fn a_room_with_history_is_dropped_after_being_empty_for_the_idle_timeout() {
        let rooms = rooms(10, 100);
        rooms.enter("room:kept").unwrap();
        rooms.posted("room:kept");
        rooms.enter("room:idle").unwrap();
        rooms.posted("room:idle");
        rooms.leave("room:idle");
        actix::clock::sleep(Duration::from_millis(60)).await;
        assert_eq!(rooms.len(), 2, "not idle for long enough yet");
        // A join resets the clock.
        rooms.enter("room:idle").unwrap();
        actix::clock::sleep(Duration::from_millis(120)).await;
        assert_eq!(rooms.len(), 2, "a room with a member is never dropped");
        rooms.leave("room:idle");
        actix::clock::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            rooms.len(),
            1,
            "room:idle was dropped, room:kept has a member"
        );
        assert!(rooms.lock().rooms.contains_key("room:kept"));
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
