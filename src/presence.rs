//! Presence: who is on each topic, in the format the phoenix.js `Presence` class reads.
//!
//! Owns, per topic, the map key → metas (one meta per tracked channel instance, each with
//! a fresh `phx_ref`), the `presence_state` pushed to a joiner and the `presence_diff`
//! broadcast to members. Diffs are coalesced: changes within one window go out as one
//! diff, so a join storm costs a diff per window, not one per join; and a topic whose
//! changes keep coming doubles its window at each flush (up to [`MAX_WINDOW_FACTOR`] times
//! the base), so members of a busy topic get a few large diffs rather than one every
//! 25 ms, while a quiet topic's next change goes out after the base window. Must not
//! decide who a client is: channels pass the key (docs/protocol.md §9).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{Map, Value};

use crate::message::Payload;
use crate::outlet::{InstanceId, Outlet, Sender};
use crate::pubsub::{PubSub, Replica};

/// How long changes on a quiet topic gather before one `presence_diff` carries them all.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(25);

/// The longest a busy topic's window grows to, as a multiple of the base window: 500 ms
/// by default, so a storm's last changes still go out within a second.
pub const MAX_WINDOW_FACTOR: u32 = 20;

/// Presence for every topic of an application. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    pubsub: PubSub,
    window: Duration,
    topics: Mutex<HashMap<Arc<str>, TopicPresence>>,
    /// This presence's number among pubsub's replicas: the same on every node.
    replica: usize,
    /// The other nodes whose metas are held here, by the number their metas carry.
    nodes: Mutex<Vec<Arc<str>>>,
}

#[derive(Default)]
struct TopicPresence {
    /// key → metas in tracking order (oldest first).
    state: BTreeMap<String, Vec<TrackedMeta>>,
    /// Changes not yet broadcast; `Some` while a flush is scheduled.
    pending: Option<Diff>,
    /// The window of the flush scheduled last, and when the last flush went out.
    window: Duration,
    last_flush: Option<Instant>,
}

/// A meta's JSON object, encoded once when tracked; the state and the diffs share it.
type Meta = Arc<RawValue>;

/// One tracked meta.
struct TrackedMeta {
    owner: Owner,
    meta: Meta,
}

/// Whose meta it is: a channel instance of this node, or another node's (in a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Local(InstanceId),
    /// The node's number in [`Inner::nodes`].
    Remote(u32),
}

#[derive(Default, serde::Serialize)]
struct Diff {
    #[serde(serialize_with = "metas_by_key")]
    joins: BTreeMap<String, Vec<Meta>>,
    #[serde(serialize_with = "metas_by_key")]
    leaves: BTreeMap<String, Vec<Meta>>,
}

impl Diff {
    fn to_payload(&self) -> Payload {
        Payload::Encoded(encoded(self))
    }
}

/// Anything that holds one encoded meta.
trait HasMeta {
    fn meta(&self) -> &RawValue;
}

impl HasMeta for Meta {
    fn meta(&self) -> &RawValue {
        self
    }
}

impl HasMeta for TrackedMeta {
    fn meta(&self) -> &RawValue {
        &self.meta
    }
}

/// Writes `{"key":{"metas":[meta,...]},...}`, the shape phoenix.js's `Presence` reads.
fn metas_by_key<M: HasMeta, S: Serializer>(
    keys: &BTreeMap<String, Vec<M>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    struct Metas<'a, M>(&'a [M]);
    impl<M: HasMeta> Serialize for Metas<'_, M> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            struct List<'a, M>(&'a [M]);
            impl<M: HasMeta> Serialize for List<'_, M> {
                fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                    serializer.collect_seq(self.0.iter().map(HasMeta::meta))
                }
            }
            let mut object = serializer.serialize_struct("Metas", 1)?;
            object.serialize_field("metas", &List(self.0))?;
            object.end()
        }
    }
    let mut map = serializer.serialize_map(Some(keys.len()))?;
    for (key, metas) in keys {
        map.serialize_entry(key, &Metas(metas))?;
    }
    map.end()
}

/// A payload's JSON, serialized once and never parsed back (a `RawValue` made from
/// text would validate it again).
fn encoded(value: &impl Serialize) -> Arc<RawValue> {
    to_raw_value(value)
        .expect("presence payloads are maps of strings and JSON")
        .into()
}

/// A fresh `phx_ref`: unique per track and per process run.
fn fresh_phx_ref() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| uuid::Uuid::new_v4().as_fields().0);
    format!("F{run:08x}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Presence {
    pub fn new(pubsub: &PubSub) -> Self {
        Self::with_window(pubsub, DEFAULT_WINDOW)
    }

    /// Presence with another base window. In a cluster, every node must create its
    /// presences in the same order: each replicates to the one of the same number.
    pub fn with_window(pubsub: &PubSub, window: Duration) -> Self {
        Presence {
            inner: Arc::new_cyclic(|me: &Weak<Inner>| {
                let replica: Weak<dyn Replica> = me.clone();
                Inner {
                    pubsub: pubsub.clone(),
                    window,
                    topics: Mutex::default(),
                    replica: pubsub.add_replica(replica),
                    nodes: Mutex::default(),
                }
            }),
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<Arc<str>, TopicPresence>> {
        self.inner.topics()
    }

    /// The current state of `topic`, as `presence_state` would carry it.
    pub fn list(&self, topic: &str) -> Value {
        let topics = self.topics();
        let Some(presence) = topics.get(topic) else {
            return Value::Object(Map::new());
        };
        serde_json::from_str(presence.state().get()).expect("presence writes valid JSON")
    }

    /// Adds a meta for `instance`; returns the state to push to it and, if a flush must
    /// be scheduled, after how long.
    fn track(
        &self,
        topic: &Arc<str>,
        instance: InstanceId,
        key: &str,
        mut meta: Map<String, Value>,
    ) -> (Payload, Option<Duration>) {
        meta.insert("phx_ref".into(), Value::String(fresh_phx_ref()));
        let meta = encoded(&meta);
        let (state, schedule) = {
            let mut topics = self.topics();
            let presence = topics.entry(topic.clone()).or_default();
            let schedule = presence.join(&self.inner, Owner::Local(instance), key, meta.clone());
            (Payload::Encoded(presence.state()), schedule)
        };
        let inner = &self.inner;
        inner
            .pubsub
            .replicate(inner.replica, || change(Change::Join, topic, key, &meta));
        (state, schedule)
    }

    /// Removes the meta of `instance` under `key`.
    fn untrack(&self, topic: &str, instance: InstanceId, key: &str) {
        let (left, schedule) = {
            let mut topics = self.topics();
            let Some(presence) = topics.get_mut(topic) else {
                return;
            };
            let owned = |m: &TrackedMeta| m.owner == Owner::Local(instance);
            let Some(left) = presence.leave(&self.inner, key, owned) else {
                return;
            };
            left
        };
        let inner = &self.inner;
        inner
            .pubsub
            .replicate(inner.replica, || change(Change::Leave, topic, key, &left));
        if let Some(window) = schedule {
            inner.schedule_flush(topic.into(), window);
        }
    }

    fn schedule_flush(&self, topic: Arc<str>, window: Duration) {
        self.inner.schedule_flush(topic, window);
    }

    #[cfg(test)]
    fn flush(&self, topic: &str) {
        self.inner.flush(topic);
    }
}

impl Inner {
    fn topics(&self) -> MutexGuard<'_, HashMap<Arc<str>, TopicPresence>> {
        lock(&self.topics)
    }

    fn schedule_flush(self: &Arc<Self>, topic: Arc<str>, window: Duration) {
        let inner = self.clone();
        actix::spawn(async move {
            actix::clock::sleep(window).await;
            inner.flush(&topic);
        });
    }

    /// Broadcasts the changes gathered on `topic` as one `presence_diff` to this node's
    /// members (every node makes its own). A join and a leave of the same meta may share
    /// it: phoenix.js applies joins first, so the meta ends up gone, as it should (its
    /// `phx_ref` is never tracked again).
    fn flush(&self, topic: &str) {
        let diff = {
            let mut topics = self.topics();
            let Some(presence) = topics.get_mut(topic) else {
                return;
            };
            let diff = presence.pending.take();
            presence.last_flush = Some(Instant::now());
            if presence.state.is_empty() {
                topics.remove(topic);
            }
            diff
        };
        if let Some(diff) = diff {
            self.pubsub
                .broadcast_here(topic, "presence_diff", diff.to_payload());
        }
    }

    /// The number of `node` among the other nodes held here.
    fn node_number(&self, node: &str) -> u32 {
        let mut nodes = lock(&self.nodes);
        match nodes.iter().position(|known| &**known == node) {
            Some(at) => at as u32,
            None => {
                nodes.push(node.into());
                (nodes.len() - 1) as u32
            }
        }
    }

    /// Runs `f` on `topic`'s presence, then schedules its flush if one came due.
    fn change_topic(
        self: &Arc<Self>,
        topic: &str,
        f: impl FnOnce(&mut TopicPresence) -> Option<Duration>,
    ) {
        let schedule = {
            let mut topics = self.topics();
            let presence = match topics.get_mut(topic) {
                Some(presence) => presence,
                None => topics.entry(topic.into()).or_default(),
            };
            let schedule = f(presence);
            // A change that changed nothing (a leave of a meta not held) leaves no empty
            // topic behind; one with a pending diff goes at its flush.
            if presence.state.is_empty() && presence.pending.is_none() {
                topics.remove(topic);
            }
            schedule
        };
        if let Some(window) = schedule {
            self.schedule_flush(topic.into(), window);
        }
    }
}

impl Replica for Inner {
    fn apply(self: Arc<Self>, node: &str, bytes: &[u8]) {
        let Ok(entry) = serde_json::from_slice::<Entry<'_>>(bytes) else {
            return log::warn!("presence: an unreadable change from node {node:?} dropped");
        };
        let owner = Owner::Remote(self.node_number(node));
        let (topic, key, meta) = (&*entry.1, &*entry.2, entry.3);
        match entry.0 {
            Change::Join => self.change_topic(topic, |presence| {
                let known = presence.metas(key).any(|m| m.meta.get() == meta.get());
                (!known)
                    .then(|| presence.join(&self, owner, key, meta.to_owned().into()))
                    .flatten()
            }),
            Change::Leave => self.change_topic(topic, |presence| {
                let same = |m: &TrackedMeta| m.owner == owner && m.meta.get() == meta.get();
                presence
                    .leave(&self, key, same)
                    .and_then(|(_, schedule)| schedule)
            }),
        }
    }

    fn replace(self: Arc<Self>, node: &str, snapshot: &[u8]) {
        let Ok(entries) = serde_json::from_slice::<Vec<Entry<'_>>>(snapshot) else {
            return log::warn!("presence: an unreadable snapshot from node {node:?} dropped");
        };
        let owner = Owner::Remote(self.node_number(node));
        // What the node no longer has leaves; what it has and was not known joins.
        let mut kept: HashMap<&str, Vec<(&str, &RawValue)>> = HashMap::new();
        for Entry(_, topic, key, meta) in &entries {
            kept.entry(topic).or_default().push((key, meta));
        }
        let held: Vec<Arc<str>> = self.topics().keys().cloned().collect();
        for topic in held {
            let now = kept.remove(&*topic).unwrap_or_default();
            self.change_topic(&topic, |presence| presence.replace(&self, owner, &now));
        }
        for (topic, now) in kept {
            self.change_topic(topic, |presence| presence.replace(&self, owner, &now));
        }
    }

    fn forget(self: Arc<Self>, node: &str) {
        self.replace(node, b"[]");
    }

    fn snapshot(&self) -> Vec<u8> {
        let topics = self.topics();
        let mut entries = Vec::new();
        for (topic, presence) in topics.iter() {
            for (key, metas) in &presence.state {
                for tracked in metas.iter().filter(|m| matches!(m.owner, Owner::Local(_))) {
                    entries.push(Entry(
                        Change::Join,
                        topic.as_ref().into(),
                        key.as_str().into(),
                        &tracked.meta,
                    ));
                }
            }
        }
        serde_json::to_vec(&entries).expect("presence entries always serialize")
    }
}

/// Which change a replicated entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Change {
    #[serde(rename = "j")]
    Join,
    #[serde(rename = "l")]
    Leave,
}

/// One replicated change, `[change, topic, key, meta]`; a snapshot is a list of joins.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry<'a>(
    Change,
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] std::borrow::Cow<'a, str>,
    #[serde(borrow)] &'a RawValue,
);

fn change(change: Change, topic: &str, key: &str, meta: &RawValue) -> Vec<u8> {
    serde_json::to_vec(&Entry(change, topic.into(), key.into(), meta))
        .expect("a presence entry always serializes")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves presence as consistent as any one change.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TopicPresence {
    /// Adds `meta` under `key` for `owner`; the window to flush after, if one came due.
    fn join(&mut self, inner: &Inner, owner: Owner, key: &str, meta: Meta) -> Option<Duration> {
        self.state
            .entry(key.to_owned())
            .or_default()
            .push(TrackedMeta {
                owner,
                meta: meta.clone(),
            });
        let schedule = self.flush_due(inner.window);
        let pending = self.pending.get_or_insert_with(Diff::default);
        pending.joins.entry(key.to_owned()).or_default().push(meta);
        schedule
    }

    /// Removes the first meta under `key` that `which` picks: the meta, and the window to
    /// flush after if one came due.
    fn leave(
        &mut self,
        inner: &Inner,
        key: &str,
        which: impl Fn(&TrackedMeta) -> bool,
    ) -> Option<(Meta, Option<Duration>)> {
        let metas = self.state.get_mut(key)?;
        let index = metas.iter().position(which)?;
        let left = metas.remove(index);
        if metas.is_empty() {
            self.state.remove(key);
        }
        let schedule = self.flush_due(inner.window);
        let pending = self.pending.get_or_insert_with(Diff::default);
        pending
            .leaves
            .entry(key.to_owned())
            .or_default()
            .push(left.meta.clone());
        Some((left.meta, schedule))
    }

    /// Makes `owner`'s metas exactly `now` (key, meta): leaves for the others, joins for
    /// the new ones.
    fn replace(
        &mut self,
        inner: &Inner,
        owner: Owner,
        now: &[(&str, &RawValue)],
    ) -> Option<Duration> {
        let mut schedule = None;
        let gone: Vec<(String, Meta)> = self
            .state
            .iter()
            .flat_map(|(key, metas)| metas.iter().map(move |m| (key, m)))
            .filter(|(key, m)| {
                m.owner == owner
                    && !now
                        .iter()
                        .any(|(k, meta)| k == key && meta.get() == m.meta.get())
            })
            .map(|(key, m)| (key.clone(), m.meta.clone()))
            .collect();
        for (key, meta) in gone {
            let same = |m: &TrackedMeta| m.owner == owner && m.meta.get() == meta.get();
            if let Some((_, due)) = self.leave(inner, &key, same) {
                schedule = schedule.or(due);
            }
        }
        for (key, meta) in now {
            if !self.metas(key).any(|m| m.meta.get() == meta.get()) {
                schedule = schedule.or(self.join(inner, owner, key, (*meta).to_owned().into()));
            }
        }
        schedule
    }

    fn metas<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a TrackedMeta> + 'a {
        self.state.get(key).into_iter().flatten()
    }

    /// When a change comes to a topic with no flush scheduled: the window to wait. A
    /// change that follows the last flush within its window means the topic is busy, and
    /// the window doubles; after a quiet spell it is back to the base.
    fn flush_due(&mut self, base: Duration) -> Option<Duration> {
        if self.pending.is_some() {
            return None;
        }
        let busy = self
            .last_flush
            .is_some_and(|last| last.elapsed() < self.window);
        self.window = if busy {
            (self.window * 2).min(base * MAX_WINDOW_FACTOR)
        } else {
            base
        };
        Some(self.window)
    }

    /// The `presence_state` payload: the whole current state.
    fn state(&self) -> Arc<RawValue> {
        struct State<'a>(&'a BTreeMap<String, Vec<TrackedMeta>>);
        impl Serialize for State<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                metas_by_key(self.0, serializer)
            }
        }
        encoded(&State(&self.state))
    }
}

/// One channel instance's presence on its topic; see `ChannelContext::track`.
pub(crate) struct Tracked {
    presence: Presence,
    key: String,
    meta: Option<Map<String, Value>>,
    started: Option<(Arc<str>, InstanceId)>,
}

impl Tracked {
    pub(crate) fn new(presence: &Presence, key: &str, meta: Map<String, Value>) -> Self {
        Tracked {
            presence: presence.clone(),
            key: key.to_owned(),
            meta: Some(meta),
            started: None,
        }
    }

    /// Tracks the meta and pushes `presence_state` to the instance's client.
    pub(crate) fn start(&mut self, topic: &Arc<str>, from: &Sender<'_>, outlet: &dyn Outlet) {
        let Some(meta) = self.meta.take() else {
            return;
        };
        let (state, schedule) = self.presence.track(topic, from.instance, &self.key, meta);
        self.started = Some((topic.clone(), from.instance));
        outlet.push(from, "presence_state", &state);
        if let Some(window) = schedule {
            self.presence.schedule_flush(topic.clone(), window);
        }
    }

    /// Untracks the meta (a `presence_diff` leave follows).
    pub(crate) fn stop(self) {
        if let Some((topic, instance)) = &self.started {
            self.presence.untrack(topic, *instance, &self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(online_at: u64) -> Map<String, Value> {
        json!({ "online_at": online_at })
            .as_object()
            .unwrap()
            .clone()
    }

    fn text(payload: &Payload) -> Value {
        match payload {
            Payload::Encoded(raw) => serde_json::from_str(raw.get()).unwrap(),
            other => panic!("expected an encoded payload, got {other:?}"),
        }
    }

    /// The calls made to `outlet` once the first arrives, and a few windows more (a
    /// second diff would have come by then); fails after 5 s with none.
    async fn first_calls(
        outlet: &crate::outlet::testing::RecordedOutlet,
    ) -> Vec<crate::outlet::testing::Out> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut calls = Vec::new();
        while calls.is_empty() && std::time::Instant::now() < deadline {
            actix::clock::sleep(Duration::from_millis(10)).await;
            calls = outlet.take();
        }
        actix::clock::sleep(Duration::from_millis(100)).await;
        calls.extend(outlet.take());
        calls
    }

    #[actix::test]
    async fn changes_within_a_window_go_out_as_one_diff_to_every_member() {
        use crate::outlet::testing::{Out, RecordedOutlet};
        use crate::pubsub::Subscriber;
        use crate::serializer::Serializer;

        let pubsub = PubSub::new();
        let window = Duration::from_millis(30);
        let presence = Presence::with_window(&pubsub, window);
        let topic: Arc<str> = "room:a".into();
        let member = Arc::new(RecordedOutlet::new(Serializer::V2));
        let watcher = InstanceId::next();
        let subscriber = Subscriber {
            outlet: member.clone(),
            intercept: None,
        };
        pubsub.subscribe(&topic, watcher, subscriber);

        let joiners: Vec<Tracked> = ["a", "b", "c"]
            .into_iter()
            .map(|key| {
                let mut tracked = Tracked::new(&presence, key, meta(1));
                let joiner = Arc::new(RecordedOutlet::new(Serializer::V2));
                let from = Sender {
                    instance: InstanceId::next(),
                    topic: &topic,
                    join_ref: None,
                };
                tracked.start(&topic, &from, &*joiner);
                let [Out::SendFrom(_, state)] = &joiner.take()[..] else {
                    panic!("one presence_state pushed to the joiner");
                };
                assert_eq!(state[3], "presence_state");
                assert!(state[4].get(key).is_some(), "the state includes the joiner");
                tracked
            })
            .collect();
        let diffs = first_calls(&member).await;
        let [Out::SendFrom(to, diff)] = &diffs[..] else {
            panic!("three joins in one window make one diff, got {diffs:?}");
        };
        assert_eq!(*to, watcher);
        assert_eq!(diff[3], "presence_diff");
        let joins = diff[4]["joins"].as_object().unwrap();
        assert_eq!(joins.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(diff[4]["leaves"], json!({}));

        for tracked in joiners {
            tracked.stop();
        }
        let diffs = first_calls(&member).await;
        let [Out::SendFrom(_, diff)] = &diffs[..] else {
            panic!("three leaves in one window make one diff, got {diffs:?}");
        };
        assert_eq!(diff[4]["leaves"].as_object().unwrap().len(), 3);
        assert_eq!(presence.list("room:a"), json!({}));
    }

    #[actix::test]
    async fn a_busy_topic_widens_its_window_and_a_quiet_one_returns_to_the_base() {
        let base = Duration::from_millis(10);
        let presence = Presence::with_window(&PubSub::new(), base);
        let topic: Arc<str> = "room:busy".into();
        let mut windows = Vec::new();
        for n in 0..7 {
            let (_, schedule) = presence.track(&topic, InstanceId::next(), "k", meta(n));
            windows.push(schedule.expect("a flush is due after each flush"));
            // The flush goes out; the next change follows at once, as in a storm.
            presence.flush("room:busy");
        }
        let ms: Vec<u128> = windows.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [10, 20, 40, 80, 160, 200, 200],
            "doubling, capped at 20x"
        );

        actix::clock::sleep(Duration::from_millis(250)).await;
        let (_, schedule) = presence.track(&topic, InstanceId::next(), "k", meta(9));
        assert_eq!(
            schedule,
            Some(base),
            "a change after a quiet spell waits the base"
        );
    }

    #[actix::test]
    async fn another_nodes_changes_apply_once_and_a_snapshot_replaces_its_part() {
        let presence = Presence::new(&PubSub::new());
        let inner = presence.inner.clone();
        let topic: Arc<str> = "room:a".into();
        presence.track(&topic, InstanceId::next(), "local", meta(0));
        let remote = |key: &str, n: u64| {
            let meta = to_raw_value(&json!({"phx_ref": format!("R{n}")})).unwrap();
            change(Change::Join, "room:a", key, &meta)
        };
        let keys = |presence: &Presence| -> Vec<String> {
            let listed = presence.list("room:a");
            let mut keys: Vec<String> = listed.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        inner.clone().apply("n2", &remote("bob", 1));
        inner.clone().apply("n2", &remote("bob", 1));
        assert_eq!(keys(&presence), ["bob", "local"]);
        assert_eq!(
            presence.list("room:a")["bob"]["metas"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        let snapshot: Vec<u8> = {
            let carol = to_raw_value(&json!({"phx_ref": "R2"})).unwrap();
            serde_json::to_vec(&[Entry(Change::Join, "room:a".into(), "carol".into(), &carol)])
                .unwrap()
        };
        inner.clone().replace("n2", &snapshot);
        assert_eq!(
            keys(&presence),
            ["carol", "local"],
            "bob left, carol joined"
        );

        let ours: Vec<serde_json::Value> = serde_json::from_slice(&inner.snapshot()).unwrap();
        assert_eq!(
            ours.len(),
            1,
            "a snapshot holds this node's part only: {ours:?}"
        );
        assert_eq!(ours[0][2], "local");

        inner.clone().forget("n2");
        assert_eq!(keys(&presence), ["local"]);
        inner.clone().apply("n3", b"not json");
        assert_eq!(keys(&presence), ["local"]);

        let meta = to_raw_value(&json!({"phx_ref": "R9"})).unwrap();
        inner
            .clone()
            .apply("n2", &change(Change::Leave, "room:never", "x", &meta));
        assert!(
            !presence.topics().contains_key("room:never"),
            "a leave of nothing leaves no topic behind"
        );
    }

    #[actix::test]
    async fn state_and_diff_in_the_phoenix_js_format() {
        let presence = Presence::new(&PubSub::new());
        let topic: Arc<str> = "room:a".into();
        let (a1, a2, b) = (InstanceId::next(), InstanceId::next(), InstanceId::next());
        let (state, schedule) = presence.track(&topic, a1, "al\"ice", meta(1));
        assert_eq!(schedule, Some(DEFAULT_WINDOW));
        let state = text(&state);
        let ref1 = state["al\"ice"]["metas"][0]["phx_ref"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(state["al\"ice"]["metas"][0]["online_at"], 1);
        let (_, schedule) = presence.track(&topic, a2, "al\"ice", meta(2));
        assert_eq!(schedule, None, "one flush per window");
        presence.track(&topic, b, "bob", meta(3));
        let listed = presence.list("room:a");
        assert_eq!(listed["al\"ice"]["metas"].as_array().unwrap().len(), 2);
        let ref2 = listed["al\"ice"]["metas"][1]["phx_ref"].as_str().unwrap();
        assert_ne!(ref1, ref2, "a fresh phx_ref per track");

        presence.untrack("room:a", a1, "al\"ice");
        let diff = {
            let mut topics = presence.topics();
            text(
                &topics
                    .get_mut("room:a")
                    .unwrap()
                    .pending
                    .take()
                    .unwrap()
                    .to_payload(),
            )
        };
        assert_eq!(
            diff["joins"]["al\"ice"]["metas"].as_array().unwrap().len(),
            2
        );
        assert_eq!(diff["joins"]["bob"]["metas"][0]["online_at"], 3);
        assert_eq!(
            diff["leaves"]["al\"ice"]["metas"][0]["phx_ref"],
            ref1.as_str()
        );
        assert_eq!(
            presence.list("room:a")["al\"ice"]["metas"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        presence.untrack("room:a", a2, "al\"ice");
        presence.untrack("room:a", b, "bob");
        assert_eq!(presence.list("room:a"), json!({}));
        presence.flush("room:a");
        assert!(presence.topics().is_empty(), "an empty topic is forgotten");
    }
}
