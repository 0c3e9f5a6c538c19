//! The data dir (`--data-dir`): what survives a restart, in one embedded redb database.
//!
//! Owns the file `DIR/fluxwire.redb` and everything read from or written to it: each
//! persistent store's snapshot (`{"epoch","version","state"}`, rewritten every
//! [`SNAPSHOT_EVERY`] versions) and its patches since (at least the last
//! [`KEEP_PATCHES`], so that clients coming back after a restart get operations), and the
//! append-only logs an application keeps (the rooms' messages, the last [`LOG_KEEP`] of
//! each). Everything is read and checked when the dir is opened (a store's patches must
//! chain from its snapshot and apply to it), so a corrupt or unreadable dir is an error at
//! start, never a silent empty state. Writes go to one writer thread that commits them in
//! batches (one fsync for all the writes waiting), and tells each writer that asked when
//! its write is on disk. A stop that closes the dir marks it clean; a dir opened after a
//! crash is reported unclean. Must not know the wire, channels or what a log's entries
//! mean.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::doc::{apply, Op};

/// A store writes its snapshot every this many versions.
pub const SNAPSHOT_EVERY: u64 = 100;
/// Patches kept behind each store's latest version (its retention after a restart).
pub const KEEP_PATCHES: u64 = 256;
/// Entries kept per log.
pub const LOG_KEEP: u64 = 1000;
/// Entries of each log read back at start.
pub const LOG_TAIL: usize = 100;
/// Most writes committed in one transaction.
const BATCH: usize = 4096;

const FILE: &str = "fluxwire.redb";
const FORMAT: &str = "1";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const STORES: TableDefinition<&str, &str> = TableDefinition::new("stores");
const PATCHES: TableDefinition<(&str, u64), &str> = TableDefinition::new("store_patches");
const LOGS: TableDefinition<(&str, u64), &str> = TableDefinition::new("logs");

/// Why the data dir cannot be used; one line.
#[derive(Debug, thiserror::Error)]
#[error("data dir {dir}: {what}")]
pub struct StorageError {
    dir: PathBuf,
    what: String,
}

/// A persistent store as the data dir holds it, ready to continue.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StoredStore {
    pub epoch: String,
    pub version: u64,
    pub state: Value,
    /// The retained patches, oldest first, the last one leading to `version`.
    pub patches: Vec<(u64, Arc<str>)>,
}

/// The last entries of one log, read at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogTail {
    /// Oldest first, at most [`LOG_TAIL`].
    pub entries: Vec<Value>,
    /// The highest id written, 0 for none.
    pub last_id: u64,
}

enum Write {
    Patch {
        store: String,
        version: u64,
        ops: Arc<str>,
        done: Option<oneshot::Sender<()>>,
    },
    Snapshot {
        store: String,
        snapshot: Arc<str>,
        /// Patches below this version go.
        keep_from: u64,
    },
    Append {
        log: String,
        id: u64,
        entry: String,
    },
    Close(mpsc::Sender<()>),
}

/// An open data dir. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    unclean: bool,
    stores: Mutex<HashMap<String, StoredStore>>,
    logs: Mutex<HashMap<String, LogTail>>,
    writer: Mutex<Option<mpsc::Sender<Write>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Storage {
    /// Opens (or creates) the data dir and reads everything in it.
    pub fn open(dir: &Path) -> Result<Storage, StorageError> {
        let fail = |what: String| StorageError {
            dir: dir.to_owned(),
            what: what.replace('\n', " "),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
        let db = Database::create(dir.join(FILE))
            .map_err(|e| fail(format!("cannot open {FILE}: {e}")))?;
        let unclean = start(&db).map_err(|e| fail(e.to_string()))?;
        let (stores, logs) = load(&db).map_err(fail)?;
        let (writer, jobs) = mpsc::channel();
        let db = Arc::new(db);
        let thread = std::thread::Builder::new()
            .name("fluxwire-storage".into())
            .spawn(move || write_loop(&db, &jobs))
            .map_err(|e| fail(format!("cannot start its writer: {e}")))?;
        if unclean {
            log::warn!(
                "data dir {}: the last run did not stop cleanly; stores start new epochs",
                dir.display()
            );
        }
        Ok(Storage {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                unclean,
                stores: Mutex::new(stores),
                logs: Mutex::new(logs),
                writer: Mutex::new(Some(writer)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether the previous run ended without closing the dir (a crash, `kill -9`):
    /// changes it had not written are lost, and clients may hold some of them.
    pub fn unclean(&self) -> bool {
        self.inner.unclean
    }

    /// The store `name` as read at start (once: the store takes it over).
    pub(crate) fn take_store(&self, name: &str) -> Option<StoredStore> {
        lock(&self.inner.stores).remove(name)
    }

    /// The last entries of the log `log` as read at start (once).
    pub fn take_log(&self, log: &str) -> LogTail {
        lock(&self.inner.logs).remove(log).unwrap_or_default()
    }

    /// Whether the log `log` had entries at start and has not been taken yet.
    pub fn has_log(&self, log: &str) -> bool {
        lock(&self.inner.logs).contains_key(log)
    }

    fn send(&self, write: Write) -> bool {
        match &*lock(&self.inner.writer) {
            Some(writer) => writer.send(write).is_ok(),
            None => false,
        }
    }

    /// Writes a store's patch to `version`; the receiver hears once it is on disk (and
    /// is dropped if it could not be written).
    pub(crate) fn store_patch(
        &self,
        store: &str,
        version: u64,
        ops: Arc<str>,
    ) -> oneshot::Receiver<()> {
        let (done, written) = oneshot::channel();
        let write = Write::Patch {
            store: store.to_owned(),
            version,
            ops,
            done: Some(done),
        };
        if !self.send(write) {
            log::warn!("store {store}: version {version} not written: the data dir is closed");
        }
        written
    }

    /// Writes a store's snapshot (`{"epoch","version","state"}`) and drops its patches
    /// below `keep_from`.
    pub(crate) fn store_snapshot(&self, store: &str, snapshot: Arc<str>, keep_from: u64) {
        let write = Write::Snapshot {
            store: store.to_owned(),
            snapshot,
            keep_from,
        };
        if !self.send(write) {
            log::warn!("store {store}: snapshot not written: the data dir is closed");
        }
    }

    /// Appends entry `id` (JSON) to `log`, dropping the entry [`LOG_KEEP`] before it.
    /// Written within milliseconds, without waiting.
    pub fn append(&self, log: &str, id: u64, entry: String) {
        let write = Write::Append {
            log: log.to_owned(),
            id,
            entry,
        };
        if !self.send(write) {
            log::warn!("{log}: entry {id} not written: the data dir is closed");
        }
    }

    /// Writes what is waiting, marks the dir clean and stops writing; later writes are
    /// dropped (and logged). Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Storage {
    /// What a crash leaves: the writer writes what it has and stops, without marking
    /// the dir clean, and the file is let go.
    #[cfg(test)]
    pub(crate) fn abandon(&self) {
        drop(lock(&self.inner.writer).take());
        if let Some(thread) = lock(&self.inner.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Inner {
    fn close(&self) {
        if let Some(writer) = lock(&self.writer).take() {
            let (closed, done) = mpsc::channel();
            if writer.send(Write::Close(closed)).is_ok() {
                let _ = done.recv();
            }
        }
        // Once the thread is over, the database file is closed (and unlocked).
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Checks the format, notes whether the last run stopped cleanly, and marks this one
/// running.
fn start(db: &Database) -> Result<bool, redb::Error> {
    let tx = db.begin_write()?;
    let unclean;
    {
        let mut meta = tx.open_table(META)?;
        let format = meta.get("format")?.map(|v| v.value().to_owned());
        if let Some(format) = format.filter(|f| f != FORMAT) {
            return Err(redb::Error::Corrupted(format!(
                "format {format:?}, expected {FORMAT:?}"
            )));
        }
        unclean = meta.get("clean")?.is_some_and(|v| v.value() == "0");
        meta.insert("format", FORMAT)?;
        meta.insert("clean", "0")?;
        tx.open_table(STORES)?;
        tx.open_table(PATCHES)?;
        tx.open_table(LOGS)?;
    }
    tx.commit()?;
    Ok(unclean)
}

type Loaded = (HashMap<String, StoredStore>, HashMap<String, LogTail>);

/// Reads every store and log, checking that each store's patches chain from its
/// snapshot and apply to it.
fn load(db: &Database) -> Result<Loaded, String> {
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let stores_table = tx.open_table(STORES).map_err(|e| e.to_string())?;
    let patches_table = tx.open_table(PATCHES).map_err(|e| e.to_string())?;
    let mut stores = HashMap::new();
    for row in stores_table.iter().map_err(|e| e.to_string())? {
        let (name, snapshot) = row.map_err(|e| e.to_string())?;
        let name = name.value().to_owned();
        let store = load_store(&name, snapshot.value(), &patches_table)
            .map_err(|e| format!("store {name:?}: {e}"))?;
        stores.insert(name, store);
    }
    let logs_table = tx.open_table(LOGS).map_err(|e| e.to_string())?;
    let mut logs: HashMap<String, LogTail> = HashMap::new();
    for row in logs_table.iter().map_err(|e| e.to_string())? {
        let (key, entry) = row.map_err(|e| e.to_string())?;
        let (log, id) = key.value();
        let entry: Value = serde_json::from_str(entry.value())
            .map_err(|e| format!("log {log:?}, entry {id}: {e}"))?;
        let tail = logs.entry(log.to_owned()).or_default();
        tail.last_id = tail.last_id.max(id);
        tail.entries.push(entry);
        if tail.entries.len() > 2 * LOG_TAIL {
            tail.entries.drain(..LOG_TAIL);
        }
    }
    for tail in logs.values_mut() {
        let excess = tail.entries.len().saturating_sub(LOG_TAIL);
        tail.entries.drain(..excess);
    }
    Ok((stores, logs))
}

fn load_store(
    name: &str,
    snapshot: &str,
    patches: &impl ReadableTable<(&'static str, u64), &'static str>,
) -> Result<StoredStore, String> {
    let snapshot: Value = serde_json::from_str(snapshot).map_err(|e| format!("snapshot: {e}"))?;
    let epoch = snapshot["epoch"]
        .as_str()
        .ok_or("snapshot without an epoch")?;
    let mut version = snapshot["version"]
        .as_u64()
        .ok_or("snapshot without a version")?;
    let mut state = snapshot
        .get("state")
        .cloned()
        .ok_or("snapshot without a state")?;
    let mut kept = Vec::new();
    let rows = patches
        .range((name, 0)..=(name, u64::MAX))
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (key, ops) = row.map_err(|e| e.to_string())?;
        let (_, at) = key.value();
        let ops: Arc<str> = ops.value().into();
        if at > version {
            if at != version + 1 {
                return Err(format!("patch {at} does not follow version {version}"));
            }
            let parsed: Vec<Op> =
                serde_json::from_str(&ops).map_err(|e| format!("patch {at}: {e}"))?;
            for op in parsed {
                apply(&mut state, op).map_err(|e| format!("patch {at}: {e}"))?;
            }
            version = at;
        }
        kept.push((at, ops));
    }
    // Only the patches leading to the current version without a hole are of use.
    let mut start = kept.len();
    while start > 0 && kept[start - 1].0 == version - (kept.len() - start) as u64 {
        start -= 1;
    }
    kept.drain(..start);
    Ok(StoredStore {
        epoch: epoch.to_owned(),
        version,
        state,
        patches: kept,
    })
}

/// The writer thread: waits for writes, commits all those waiting in one transaction,
/// then tells those who asked.
fn write_loop(db: &Database, jobs: &mpsc::Receiver<Write>) {
    let mut failed = false;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let closing = batch.iter().any(|w| matches!(w, Write::Close(_)));
        match commit(db, &batch, closing) {
            Ok(()) => failed = false,
            Err(error) if !failed => {
                failed = true;
                log::error!("data dir: cannot write: {error}");
            }
            Err(_) => {}
        }
        for write in batch {
            match write {
                Write::Patch {
                    done: Some(done), ..
                } if !failed => {
                    let _ = done.send(());
                }
                Write::Close(closed) => {
                    let _ = closed.send(());
                    return;
                }
                _ => {}
            }
        }
    }
}

fn commit(db: &Database, batch: &[Write], closing: bool) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut stores = tx.open_table(STORES)?;
        let mut patches = tx.open_table(PATCHES)?;
        let mut logs = tx.open_table(LOGS)?;
        for write in batch {
            match write {
                Write::Patch {
                    store,
                    version,
                    ops,
                    ..
                } => {
                    patches.insert((store.as_str(), *version), &**ops)?;
                }
                Write::Snapshot {
                    store,
                    snapshot,
                    keep_from,
                } => {
                    stores.insert(store.as_str(), &**snapshot)?;
                    let below = (store.as_str(), 0)..(store.as_str(), *keep_from);
                    patches.retain_in(below, |_, _| false)?;
                }
                Write::Append { log, id, entry } => {
                    logs.insert((log.as_str(), *id), entry.as_str())?;
                    if *id > LOG_KEEP {
                        logs.remove((log.as_str(), *id - LOG_KEEP))?;
                    }
                }
                Write::Close(_) => {}
            }
        }
        if closing {
            tx.open_table(META)?.insert("clean", "1")?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;
    use serde_json::json;

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fluxwire-storage-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn snapshot(epoch: &str, version: u64, state: Value) -> Arc<str> {
        json!({"epoch": epoch, "version": version, "state": state})
            .to_string()
            .into()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_round_trip_keeps_state_version_epoch_patches_and_logs() {
        let dir = dir("round-trip");
        let storage = Storage::open(&dir).unwrap();
        assert!(!storage.unclean());
        assert_eq!(storage.take_store("s"), None);
        storage.store_snapshot("s", snapshot("e1", 0, json!({"n": 0})), 0);
        for n in 1..=3u64 {
            let ops = format!(r#"[{{"op":"replace","path":"/n","value":{n}}}]"#);
            storage.store_patch("s", n, ops.into()).await.unwrap();
        }
        for id in 1..=3 {
            storage.append("room:a", id, json!({"id": id}).to_string());
        }
        storage.close();
        storage.close();

        let again = Storage::open(&dir).unwrap();
        assert!(!again.unclean(), "closed cleanly");
        let store = again.take_store("s").unwrap();
        assert_eq!(
            (store.epoch.as_str(), store.version, &store.state),
            ("e1", 3, &json!({"n": 3}))
        );
        assert_eq!(
            store.patches.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(again.has_log("room:a"));
        let tail = again.take_log("room:a");
        assert_eq!(tail.last_id, 3);
        assert_eq!(
            tail.entries,
            [json!({"id": 1}), json!({"id": 2}), json!({"id": 3})]
        );
        assert_eq!(again.take_log("room:b"), LogTail::default());

        // A snapshot drops the patches below what it keeps.
        again.store_snapshot("s", snapshot("e1", 3, json!({"n": 3})), 3);
        again.close();
        let third = Storage::open(&dir).unwrap();
        let store = third.take_store("s").unwrap();
        assert_eq!(store.patches.len(), 1);
        assert_eq!(store.version, 3);
        drop(third);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dir_not_closed_is_reported_unclean() {
        let dir = dir("unclean");
        let storage = Storage::open(&dir).unwrap();
        storage.abandon();
        drop(storage);
        let again = Storage::open(&dir).unwrap();
        assert!(again.unclean());
        again.close();
        assert!(!Storage::open(&dir).unwrap().unclean());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn logs_keep_their_last_entries() {
        let dir = dir("logs");
        let storage = Storage::open(&dir).unwrap();
        for id in 1..=LOG_KEEP + 5 {
            storage.append("l", id, id.to_string());
        }
        storage.close();
        let again = Storage::open(&dir).unwrap();
        let tail = again.take_log("l");
        assert_eq!(tail.last_id, LOG_KEEP + 5);
        assert_eq!(tail.entries.len(), LOG_TAIL);
        assert_eq!(tail.entries[0], json!(LOG_KEEP + 5 - LOG_TAIL as u64 + 1));
        again.close();
        let db = Database::create(dir.join(FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        assert_eq!(tx.open_table(LOGS).unwrap().len().unwrap(), LOG_KEEP);
        drop((tx, db));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn error(dir: &Path) -> String {
        match Storage::open(dir) {
            Ok(_) => panic!("{} opened", dir.display()),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_corrupt_or_unusable_dir_is_an_error_of_one_line() {
        let garbage = dir("garbage");
        std::fs::write(garbage.join(FILE), vec![0x5a; 64 * 1024]).unwrap();
        let message = error(&garbage);
        assert!(
            message.starts_with(&format!(
                "data dir {}: cannot open fluxwire.redb",
                garbage.display()
            )),
            "{message}"
        );
        assert!(!message.contains('\n'));

        let file = garbage.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            error(&file).contains("cannot create it"),
            "{}",
            error(&file)
        );

        // Patches that do not chain from the snapshot, or do not apply to it.
        let broken = dir("broken");
        let storage = Storage::open(&broken).unwrap();
        storage.store_snapshot("s", snapshot("e", 0, json!({"n": 0})), 0);
        drop(storage.store_patch("s", 2, r#"[{"op":"replace","path":"/n","value":2}]"#.into()));
        storage.close();
        assert_eq!(
            error(&broken),
            format!(
                "data dir {}: store \"s\": patch 2 does not follow version 0",
                broken.display()
            )
        );
        let db = Database::create(broken.join(FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut patches = tx.open_table(PATCHES).unwrap();
            patches.remove(("s", 2)).unwrap();
            patches
                .insert(("s", 1), r#"[{"op":"remove","path":"/missing"}]"#)
                .unwrap();
        }
        tx.commit().unwrap();
        drop(db);
        assert!(
            error(&broken).contains("store \"s\": patch 1: nothing at \"/missing\""),
            "{}",
            error(&broken)
        );
        for d in [garbage, broken] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
