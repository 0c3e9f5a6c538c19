//! Stores: versioned JSON state on an [`Agent`], changed by recorded RFC 6902 patches
//! (docs/contract.md, "Stores over the wire").
//!
//! Owns each store's document, its identity (`epoch`, a random string per life of the
//! store's history, and `version`, +1 per committed change), the change itself (a [`Tx`]
//! that records operations as it mutates and is undone whole if the change fails or
//! panics), the retained patches that joins and `sync`s from an older version are served
//! from, the snapshot encoded once per version (join replies, `state` pushes and
//! `GET /stores/NAME` share it), and the broadcast of each change to the store's topic as
//! one `patch` encoded once for every member. Broadcasts are coalesced: the first change
//! after a quiet [`BROADCAST_WINDOW`] goes out at once, later ones within the window go
//! out together as one patch spanning several versions. The registry of an application's
//! stores ([`Stores`]) and the `store:NAME` channel (`channel.rs`) are here too. Must not
//! know the transports, nor encode anything per member.

mod channel;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

pub use channel::{JoinHook, StoreChannel};

use crate::agent::{Agent, AgentError, WeakAgent};
use crate::channel::Subscription;
use crate::doc::{Op, PatchError, Tx};
use crate::message::Payload;
use crate::panic::catch_panic;
use crate::pubsub::PubSub;
use crate::socket::Assigns;
use crate::storage::{Storage, StoredStore, KEEP_PATCHES, SNAPSHOT_EVERY};

/// Changes committed within this long after a broadcast share the next one.
pub const BROADCAST_WINDOW: Duration = Duration::from_millis(20);

/// Patches every store keeps at least, whatever their size (docs/contract.md: 100).
pub const MIN_HISTORY: usize = 100;
/// Patches kept at most.
pub const MAX_HISTORY: usize = 256;
/// Bytes of patches kept, past [`MIN_HISTORY`] patches.
pub const MAX_HISTORY_BYTES: usize = 1024 * 1024;

/// Operations this large (encoded) are sent as the whole state instead when the state is
/// smaller: in a join or `sync` reply, and as a `state` broadcast instead of a `patch`.
const LARGE_OPS: usize = 8 * 1024;

/// A client's action, as a store's actions function gets it.
pub struct Action<'a> {
    /// The event name, e.g. `"add"`.
    pub event: &'a str,
    /// The payload (an object for a well-behaved client; anything JSON otherwise).
    pub payload: &'a Value,
    /// What the socket's `connect` attached to the sender's connection.
    pub assigns: &'a Assigns,
}

/// Why a store refused an action or a change: the client gets `error {"reason": ...}`,
/// and the state and the version stay as they were.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    reason: String,
    /// Logged, never sent: what went wrong inside, for a change the code got wrong.
    detail: Option<String>,
}

impl Rejected {
    pub fn new(reason: impl Into<String>) -> Self {
        Rejected {
            reason: reason.into(),
            detail: None,
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<&str> for Rejected {
    fn from(reason: &str) -> Self {
        Rejected::new(reason)
    }
}

/// A mutation at a path that does not fit the document is the application's mistake:
/// the client is told `invalid change`, the detail goes to the log.
impl From<PatchError> for Rejected {
    fn from(error: PatchError) -> Self {
        Rejected {
            reason: "invalid change".into(),
            detail: Some(error.to_string()),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// Why a change through [`Store::update`] or [`Store::act`] did not commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Refused by the store's code; nothing changed.
    #[error("{0}")]
    Rejected(Rejected),
    /// The change panicked; it was undone.
    #[error("the change panicked: {0}")]
    Panicked(String),
    /// The store is gone.
    #[error("the store is unavailable")]
    Unavailable,
    /// Committed, but the data dir could not write it: it may not survive a restart.
    #[error("the change could not be written to the data dir")]
    NotSaved,
}

impl StoreError {
    /// The reason a client is given.
    pub fn reason(&self) -> &str {
        match self {
            StoreError::Rejected(rejected) => rejected.reason(),
            StoreError::Panicked(_) => "action crashed",
            StoreError::Unavailable => "store unavailable",
            StoreError::NotSaved => "not saved",
        }
    }
}

impl From<AgentError> for StoreError {
    fn from(_: AgentError) -> Self {
        StoreError::Unavailable
    }
}

/// What a store does with clients' actions: changes the document through the [`Tx`], or
/// refuses. Runs on the store's agent, one action at a time.
pub type Actions = Box<dyn FnMut(Action<'_>, &mut Tx<'_>) -> Result<(), Rejected> + Send>;

/// A store to start: its name, its initial document and its actions.
pub struct StoreSpec {
    name: String,
    initial: Value,
    actions: Actions,
    persistent: bool,
}

impl StoreSpec {
    /// The store `name`, served as the topic `store:NAME`, starting from `initial`. Until
    /// [`StoreSpec::actions`] says otherwise, every action gets `unknown event`.
    pub fn new(name: &str, initial: Value) -> Self {
        StoreSpec {
            name: name.to_owned(),
            initial,
            actions: Box::new(|_, _| Err(Rejected::new("unknown event"))),
            persistent: false,
        }
    }

    /// Keeps the store in the data dir when the server has one (`--data-dir`): state,
    /// version, epoch and retained patches survive a restart, and an action is answered
    /// once its change is on disk. Without a data dir the store lives in memory.
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// The store's actions.
    pub fn actions(
        mut self,
        actions: impl FnMut(Action<'_>, &mut Tx<'_>) -> Result<(), Rejected> + Send + 'static,
    ) -> Self {
        self.actions = Box::new(actions);
        self
    }
}

/// A state's identity: the `{epoch, version}` a client says it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub version: u64,
}

impl Since {
    /// `{"epoch": string, "version": integer}` out of a join or `sync` payload; `None` if
    /// either is missing or malformed.
    pub fn from_json(value: &Value) -> Option<Since> {
        let epoch = value.get("epoch")?.as_str()?;
        let version = value.get("version")?.as_u64()?;
        Some(Since {
            epoch: epoch.to_owned(),
            version,
        })
    }
}

/// A store's snapshot at one version: `{"epoch","version","state"}` encoded once.
#[derive(Clone)]
pub struct Snapshot {
    pub epoch: Arc<str>,
    pub version: u64,
    encoded: Arc<RawValue>,
}

impl Snapshot {
    /// The weak entity tag `W/"<epoch>.<version>"`.
    pub fn etag(&self) -> String {
        format!("W/\"{}.{}\"", self.epoch, self.version)
    }

    /// The encoded body, shared by every reader of this version (no copy).
    pub fn bytes(&self) -> Bytes {
        Bytes::from_owner(RawBytes(self.encoded.clone()))
    }

    pub fn json(&self) -> &str {
        self.encoded.get()
    }
}

struct RawBytes(Arc<RawValue>);

impl AsRef<[u8]> for RawBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}

/// What a store has done, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub version: u64,
    /// `patch` broadcasts sent.
    pub patches: u64,
    /// `state` broadcasts sent (coalesced changes larger than the state).
    pub states: u64,
    /// Patches retained for joins and `sync`s.
    pub retained: usize,
}

/// A handle to a running store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    name: Arc<str>,
    agent: Agent<StoreCore>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.name)
    }
}

/// A committed change: the version it produced (the current one if it changed nothing)
/// and what the change returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<R> {
    pub version: u64,
    pub value: R,
}

impl Store {
    /// Starts a store on `arbiter` (or the current one), publishing on `pubsub`.
    fn start(
        arbiter: Option<&ArbiterHandle>,
        spec: StoreSpec,
        pubsub: &PubSub,
        storage: Option<&Storage>,
    ) -> Store {
        let name: Arc<str> = spec.name.as_str().into();
        let pubsub = pubsub.clone();
        let storage = storage.filter(|_| spec.persistent).cloned();
        let init = {
            let name = name.clone();
            move || StoreCore::new(name, spec, pubsub, storage)
        };
        let agent = match arbiter {
            Some(arbiter) => Agent::start_in(arbiter, init),
            None => Agent::start(init()),
        };
        let me = agent.downgrade();
        agent.cast(move |core| core.me = Some(me));
        Store { name, agent }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the document through `f`; on `Err` or a panic every mutation is undone.
    pub async fn update<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, Rejected> + Send + 'static,
    ) -> Result<Committed<R>, StoreError> {
        let (committed, written) = self
            .agent
            .get_and_update(move |core| core.change(f))
            .await??;
        saved(written).await?;
        Ok(committed)
    }

    /// As [`Store::update`], without waiting; a refusal is logged.
    pub fn cast(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<(), Rejected> + Send + 'static) {
        self.agent.cast(move |core| {
            if let Err(error) = core.change(f).map(drop) {
                log::warn!("store {}: change refused: {error}", core.name);
            }
        });
    }

    /// Runs the client action `event` through the store's actions; `Ok` with the version
    /// where it took effect.
    pub async fn act(
        &self,
        event: String,
        payload: Value,
        assigns: Arc<Assigns>,
    ) -> Result<u64, StoreError> {
        let (committed, written) = self
            .agent
            .get_and_update(move |core| core.act(&event, &payload, &assigns))
            .await??;
        saved(written).await?;
        Ok(committed.version)
    }

    /// The snapshot at the current version.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(self.agent.get_and_update(StoreCore::snapshot).await?)
    }

    /// The current document (a copy), for tests and tools.
    pub async fn state(&self) -> Result<Value, StoreError> {
        Ok(self.agent.get(|core| core.doc.clone()).await?)
    }

    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(self.agent.get(StoreCore::stats).await?)
    }

    /// The reply to a join or a `sync` from `since`: `{"epoch","version","ops"}` if the
    /// patches since are retained (and smaller than the state), the snapshot otherwise.
    /// Pending changes are broadcast first, and then `subscription` (a join's) starts:
    /// the member's first `patch` starts at the version of this reply.
    pub(crate) async fn reply_from(
        &self,
        since: Option<Since>,
        subscription: Option<Subscription>,
    ) -> Result<Payload, StoreError> {
        let reply = self
            .agent
            .get_and_update(move |core| {
                core.flush();
                if let Some(subscription) = subscription {
                    subscription.activate();
                }
                core.reply_from(since.as_ref())
            })
            .await?;
        Ok(Payload::Encoded(reply))
    }
}

/// An application's stores by name, and what they are started with. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    inner: Arc<StoresInner>,
}

struct StoresInner {
    pubsub: PubSub,
    storage: Option<Storage>,
    stores: RwLock<HashMap<String, Store>>,
}

impl Stores {
    /// Stores publishing on `pubsub`; the persistent ones kept in `storage`, if any.
    pub fn new(pubsub: &PubSub, storage: Option<Storage>) -> Self {
        Stores {
            inner: Arc::new(StoresInner {
                pubsub: pubsub.clone(),
                storage,
                stores: RwLock::default(),
            }),
        }
    }

    /// Starts the store `spec` on `arbiter` and serves it as `store:NAME` (and at
    /// `GET /stores/NAME`). A store of the same name is replaced.
    pub fn start_in(&self, arbiter: &ArbiterHandle, spec: StoreSpec) -> Store {
        let storage = self.inner.storage.as_ref();
        self.register(Store::start(
            Some(arbiter),
            spec,
            &self.inner.pubsub,
            storage,
        ))
    }

    /// As [`Stores::start_in`], on the current thread's arbiter.
    pub fn start(&self, spec: StoreSpec) -> Store {
        let storage = self.inner.storage.as_ref();
        self.register(Store::start(None, spec, &self.inner.pubsub, storage))
    }

    fn register(&self, store: Store) -> Store {
        let mut stores = self
            .inner
            .stores
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if stores
            .insert(store.name.to_string(), store.clone())
            .is_some()
        {
            log::warn!(
                "store {} started twice: the newer one serves it",
                store.name
            );
        }
        store
    }

    /// The store named `name`.
    pub fn get(&self, name: &str) -> Option<Store> {
        let stores = self
            .inner
            .stores
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stores.get(name).cloned()
    }

    /// The channel for `topic` (`store:NAME`); a store that does not exist refuses the
    /// join with `unknown store`.
    pub fn channel(&self, topic: &str) -> StoreChannel {
        let store = topic.strip_prefix("store:").and_then(|name| self.get(name));
        StoreChannel::new(store)
    }
}

/// The retained patches: `patches[i]` is the encoded operations (a JSON array) that lead
/// to version `first + i`.
struct History {
    patches: VecDeque<Arc<str>>,
    first: u64,
    bytes: usize,
}

impl History {
    fn push(&mut self, version: u64, ops: Arc<str>) {
        if self.patches.is_empty() {
            self.first = version;
        }
        self.bytes += ops.len();
        self.patches.push_back(ops);
        while self.patches.len() > MAX_HISTORY
            || (self.bytes > MAX_HISTORY_BYTES && self.patches.len() > MIN_HISTORY)
        {
            if let Some(old) = self.patches.pop_front() {
                self.bytes -= old.len();
                self.first += 1;
            }
        }
    }

    /// The operations leading from version `from` to `to`, as one JSON array; `None` if
    /// some are no longer retained.
    fn ops(&self, from: u64, to: u64) -> Option<String> {
        if from == to {
            return Some("[]".to_owned());
        }
        if from + 1 < self.first || self.patches.is_empty() {
            return None;
        }
        let start = (from + 1 - self.first) as usize;
        let end = (to + 1 - self.first) as usize;
        let slice = self.patches.range(start..end.min(self.patches.len()));
        let mut out = String::from("[");
        for (i, ops) in slice.enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Each entry is a non-empty JSON array: splice its elements.
            out.push_str(&ops[1..ops.len() - 1]);
        }
        out.push(']');
        Some(out)
    }
}

struct StoreCore {
    name: Arc<str>,
    topic: Arc<str>,
    epoch: Arc<str>,
    version: u64,
    doc: Value,
    actions: Actions,
    history: History,
    /// The version every member has been sent (a patch or a state up to it).
    broadcast_version: u64,
    flush_scheduled: bool,
    last_flush: Option<Instant>,
    /// [`BROADCAST_WINDOW`], but for tests.
    window: Duration,
    snapshot: Option<Snapshot>,
    pubsub: PubSub,
    /// This store's own handle, to schedule a coalesced broadcast; weak, so that the
    /// store ends with its last outside handle.
    me: Option<WeakAgent<StoreCore>>,
    patches_sent: u64,
    states_sent: u64,
    /// The data dir of a persistent store.
    storage: Option<Storage>,
    /// The version of the last snapshot written there.
    stored_at: u64,
}

/// The receiver that hears when a change is on disk, for a persistent store.
type Written = Option<tokio::sync::oneshot::Receiver<()>>;

/// Waits until a change is on disk, if it goes there.
async fn saved(written: Written) -> Result<(), StoreError> {
    match written {
        Some(written) => written.await.map_err(|_| StoreError::NotSaved),
        None => Ok(()),
    }
}

/// The encoded operations with their sizes, in a JSON reply or patch.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    epoch: &'a str,
    version: u64,
    state: &'a Value,
}

impl StoreCore {
    fn new(name: Arc<str>, spec: StoreSpec, pubsub: PubSub, storage: Option<Storage>) -> Self {
        let mut core = StoreCore {
            topic: format!("store:{name}").into(),
            name,
            epoch: new_epoch().into(),
            version: 0,
            doc: spec.initial,
            actions: spec.actions,
            history: History {
                patches: VecDeque::new(),
                first: 1,
                bytes: 0,
            },
            broadcast_version: 0,
            flush_scheduled: false,
            last_flush: None,
            window: BROADCAST_WINDOW,
            snapshot: None,
            pubsub,
            me: None,
            patches_sent: 0,
            states_sent: 0,
            storage: None,
            stored_at: 0,
        };
        if let Some(storage) = storage {
            core.restore(storage);
        }
        core
    }

    /// Continues from what the data dir holds, if anything, and writes a snapshot to
    /// start from. After a crash the state goes on under a new epoch: clients may have
    /// seen changes that were never written, so none of them may take the old versions
    /// for the same states.
    fn restore(&mut self, storage: Storage) {
        let mut keep_from = 0;
        if let Some(StoredStore {
            epoch,
            version,
            state,
            patches,
        }) = storage.take_store(&self.name)
        {
            self.version = version;
            self.broadcast_version = version;
            self.doc = state;
            if storage.unclean() {
                keep_from = version + 1;
            } else {
                self.epoch = epoch.into();
                for (at, ops) in patches {
                    self.history.push(at, ops);
                }
                keep_from = (version + 1).saturating_sub(KEEP_PATCHES);
            }
        }
        self.storage = Some(storage);
        self.write_snapshot(keep_from);
    }

    fn write_snapshot(&mut self, keep_from: u64) {
        let snapshot = self.snapshot();
        if let Some(storage) = &self.storage {
            storage.store_snapshot(&self.name, snapshot.json().into(), keep_from);
            self.stored_at = snapshot.version;
        }
    }

    fn change<R>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, Rejected>,
    ) -> Result<(Committed<R>, Written), StoreError> {
        let outcome = run(&mut self.doc, self.version + 1, f);
        self.settle(outcome, &"change")
    }

    fn act(
        &mut self,
        event: &str,
        payload: &Value,
        assigns: &Assigns,
    ) -> Result<(Committed<()>, Written), StoreError> {
        let actions = &mut self.actions;
        let action = Action {
            event,
            payload,
            assigns,
        };
        let outcome = run(&mut self.doc, self.version + 1, |tx| actions(action, tx));
        self.settle(outcome, &format_args!("action {event}"))
    }

    /// Commits what a change or an action recorded, or logs why `what` was undone (a
    /// refusal with a detail, or a panic; a plain refusal is the client's business).
    fn settle<R>(
        &mut self,
        outcome: Result<(R, Vec<Op>), StoreError>,
        what: &dyn std::fmt::Display,
    ) -> Result<(Committed<R>, Written), StoreError> {
        let (value, ops) = outcome.inspect_err(|error| {
            if let StoreError::Rejected(Rejected {
                detail: Some(_), ..
            })
            | StoreError::Panicked(_) = error
            {
                log::warn!("store {}: {what} undone: {error}", self.name);
            }
        })?;
        let written = self.commit(ops);
        let committed = Committed {
            version: self.version,
            value,
        };
        Ok((committed, written))
    }

    fn commit(&mut self, ops: Vec<Op>) -> Written {
        if ops.is_empty() {
            return None;
        }
        let encoded: Arc<str> = match serde_json::to_string(&ops) {
            Ok(encoded) => encoded.into(),
            Err(error) => {
                // Values in a document are JSON already: this cannot happen.
                log::error!("store {}: cannot encode a patch: {error}", self.name);
                return None;
            }
        };
        self.version += 1;
        let written = self
            .storage
            .as_ref()
            .map(|storage| storage.store_patch(&self.name, self.version, encoded.clone()));
        self.history.push(self.version, encoded);
        if self.storage.is_some() && self.version - self.stored_at >= SNAPSHOT_EVERY {
            self.write_snapshot((self.version + 1).saturating_sub(KEEP_PATCHES));
        }
        self.schedule_flush();
        written
    }

    /// Broadcasts now after a quiet window, or at the end of the current window.
    fn schedule_flush(&mut self) {
        if self.flush_scheduled {
            return;
        }
        let now = Instant::now();
        let wait = self
            .last_flush
            .map_or(Duration::ZERO, |at| self.window.saturating_sub(now - at));
        let me = match &self.me {
            Some(me) if !wait.is_zero() => me.clone(),
            _ => return self.flush(),
        };
        self.flush_scheduled = true;
        actix::spawn(async move {
            actix::clock::sleep(wait).await;
            me.cast(|core| {
                core.flush_scheduled = false;
                core.flush();
            });
        });
    }

    /// Sends every member what changed since the last broadcast: one `patch` from the
    /// last broadcast version to the current one, or the `state` when the operations are
    /// no longer all retained or are larger than the state.
    fn flush(&mut self) {
        if self.broadcast_version == self.version {
            return;
        }
        let (from, to) = (self.broadcast_version, self.version);
        self.broadcast_version = to;
        self.last_flush = Some(Instant::now());
        if self.pubsub.subscriber_count(&self.topic) == 0 {
            return;
        }
        let ops = self.history.ops(from, to);
        let (event, payload) = match ops {
            Some(ops) if !self.larger_than_state(&ops) => {
                let patch = format!("{{\"from\":{from},\"to\":{to},\"ops\":{ops}}}");
                self.patches_sent += 1;
                ("patch", raw(patch))
            }
            _ => {
                self.states_sent += 1;
                ("state", self.snapshot().encoded)
            }
        };
        self.pubsub
            .broadcast(&self.topic, event, Payload::Encoded(payload));
    }

    fn larger_than_state(&mut self, ops: &str) -> bool {
        ops.len() >= LARGE_OPS && ops.len() > self.snapshot().encoded.get().len()
    }

    fn reply_from(&mut self, since: Option<&Since>) -> Arc<RawValue> {
        let current = since.filter(|s| *s.epoch == *self.epoch && s.version <= self.version);
        if let Some(ops) = current.and_then(|s| self.history.ops(s.version, self.version)) {
            if !self.larger_than_state(&ops) {
                let epoch = serde_json::to_string(&*self.epoch).unwrap_or_default();
                let version = self.version;
                return raw(format!(
                    "{{\"epoch\":{epoch},\"version\":{version},\"ops\":{ops}}}"
                ));
            }
        }
        self.snapshot().encoded
    }

    /// The snapshot of the current version, encoded at most once per version.
    fn snapshot(&mut self) -> Snapshot {
        if let Some(snapshot) = &self.snapshot {
            if snapshot.version == self.version {
                return snapshot.clone();
            }
        }
        let encoded = to_raw_value(&SnapshotRef {
            epoch: &self.epoch,
            version: self.version,
            state: &self.doc,
        })
        .map(Arc::from)
        .unwrap_or_else(|error| {
            log::error!("store {}: cannot encode the state: {error}", self.name);
            raw("null".to_owned())
        });
        let snapshot = Snapshot {
            epoch: self.epoch.clone(),
            version: self.version,
            encoded,
        };
        self.snapshot = Some(snapshot.clone());
        snapshot
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            version: self.version,
            patches: self.patches_sent,
            states: self.states_sent,
            retained: self.history.patches.len(),
        }
    }
}

/// Runs a change on `doc`: its value and operations, or the document put back as it was.
fn run<R>(
    doc: &mut Value,
    next_version: u64,
    f: impl FnOnce(&mut Tx<'_>) -> Result<R, Rejected>,
) -> Result<(R, Vec<Op>), StoreError> {
    let mut tx = Tx::new(doc, next_version);
    match catch_panic(|| f(&mut tx)) {
        Ok(Ok(value)) => Ok((value, tx.into_ops())),
        Ok(Err(rejected)) => {
            tx.rollback();
            Err(StoreError::Rejected(rejected))
        }
        Err(message) => {
            tx.rollback();
            Err(StoreError::Panicked(message))
        }
    }
}

/// JSON this module wrote itself, as a raw value.
fn raw(json: String) -> Arc<RawValue> {
    RawValue::from_string(json)
        .map(Arc::from)
        .unwrap_or_else(|error| {
            log::error!("store: produced invalid JSON: {error}");
            Arc::from(RawValue::from_string("null".to_owned()).expect("null is JSON"))
        })
}

/// 64 random bits in Crockford's base32, lowercase: 13 characters.
fn new_epoch() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    // A v4 UUID has 122 random bits; its fixed ones (version, variant) do not overlap
    // once the halves are mixed like this.
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    let bits = high ^ low.rotate_left(32);
    (0..13)
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests;
