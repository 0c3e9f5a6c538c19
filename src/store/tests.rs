//! The store's guarantees, checked against the `json-patch` crate's RFC 6902 `patch`:
//! recorded operations turn the old state into the new one, a failed change leaves state
//! and version alone, retained patches chain, and broadcasts do both.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::doc::pointer;
use crate::outlet::testing::{Out, RecordedOutlet};
use crate::outlet::InstanceId;
use crate::pubsub::Subscriber;
use crate::serializer::Serializer;
use crate::storage::Storage;

fn core(initial: Value) -> StoreCore {
    StoreCore::new(
        "t".into(),
        StoreSpec::new("t", initial),
        PubSub::new(),
        None,
    )
}

/// Applies RFC 6902 operations with the `json-patch` crate, as a client would.
fn apply(doc: &Value, ops: &str) -> Value {
    let patch: json_patch::Patch = serde_json::from_str(ops).expect("recorded ops are RFC 6902");
    let mut doc = doc.clone();
    json_patch::patch(&mut doc, &patch).expect("recorded ops apply to the old state");
    doc
}

/// One step of a random change, interpreted against the document as it is.
#[derive(Clone, Debug)]
enum Step {
    /// Inserts into the list at `at % (len + 1)`.
    Insert(usize, i64),
    /// Removes from the list at `at % len`.
    Remove(usize),
    /// Replaces in the list at `at % len`.
    Replace(usize, i64),
    /// Appends to the list.
    Push(String),
    /// Sets (adds or replaces) a member of the map, its key including `/` and `~`.
    SetKey(u8, i64),
    /// Removes a member of the map if there.
    RemoveKey(u8),
    /// Replaces the counter.
    Count(i64),
    /// Sets a nested object, then changes inside it.
    Nest(u8),
    /// The same value again: records nothing.
    SetSame,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<usize>(), any::<i64>()).prop_map(|(a, v)| Step::Insert(a, v)),
        any::<usize>().prop_map(Step::Remove),
        (any::<usize>(), any::<i64>()).prop_map(|(a, v)| Step::Replace(a, v)),
        "[a-z/~]{0,6}".prop_map(Step::Push),
        (0u8..6, any::<i64>()).prop_map(|(k, v)| Step::SetKey(k, v)),
        (0u8..6).prop_map(Step::RemoveKey),
        any::<i64>().prop_map(Step::Count),
        (0u8..4).prop_map(Step::Nest),
        Just(Step::SetSame),
    ]
}

fn key(k: u8) -> String {
    ["a", "b/c", "~d", "e~1", "", "-"][k as usize].to_owned()
}

fn perform(tx: &mut Tx<'_>, step: &Step) -> Result<(), Rejected> {
    let len = tx.len("/list").unwrap_or(0);
    match step {
        Step::Insert(at, v) => tx.add(&format!("/list/{}", at % (len + 1)), json!(v))?,
        Step::Remove(at) if len > 0 => drop(tx.remove(&format!("/list/{}", at % len))?),
        Step::Replace(at, v) if len > 0 => {
            drop(tx.replace(&format!("/list/{}", at % len), json!(v))?)
        }
        Step::Remove(_) | Step::Replace(..) => {}
        Step::Push(s) => drop(tx.push("/list", json!(s))?),
        Step::SetKey(k, v) => tx.set(&pointer(["map", &key(*k)]), json!(v))?,
        Step::RemoveKey(k) => {
            let path = pointer(["map", &key(*k)]);
            if tx.get(&path).is_some() {
                tx.remove(&path)?;
            }
        }
        Step::Count(n) => drop(tx.replace("/count", json!(n))?),
        Step::Nest(k) => {
            let path = pointer(["map", &format!("n{k}")]);
            tx.set(&path, json!({"inner": [1, 2]}))?;
            tx.push(&format!("{path}/inner"), json!(3))?;
            tx.remove(&format!("{path}/inner/0"))?;
        }
        Step::SetSame => {
            let count = tx.get("/count").cloned().unwrap_or(Value::Null);
            tx.set("/count", count)?;
        }
    }
    Ok(())
}

/// A change: some steps, then (maybe) a failure or a panic after them.
#[derive(Clone, Debug)]
struct Change {
    steps: Vec<Step>,
    ending: Ending,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Commit,
    Reject,
    BadPath,
    Panic,
}

fn change() -> impl Strategy<Value = Change> {
    let ending = prop_oneof![
        6 => Just(Ending::Commit),
        1 => Just(Ending::Reject),
        1 => Just(Ending::BadPath),
        1 => Just(Ending::Panic),
    ];
    (prop::collection::vec(step(), 0..6), ending)
        .prop_map(|(steps, ending)| Change { steps, ending })
}

fn initial() -> Value {
    json!({"list": [], "map": {}, "count": 0})
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every committed change's recorded operations, applied with `json-patch` to the
    /// state before it, give the state after it; a failed one changes neither state nor
    /// version; and the retained patches from any version lead to the current state.
    #[test]
    fn recorded_patches_turn_the_old_state_into_the_new(changes in prop::collection::vec(change(), 1..40)) {
        let mut core = core(initial());
        let mut states = vec![core.doc.clone()];
        for change in &changes {
            let before = core.doc.clone();
            let version = core.version;
            let outcome = core.change(|tx| {
                for step in &change.steps {
                    perform(tx, step)?;
                }
                match change.ending {
                    Ending::Commit => Ok(()),
                    Ending::Reject => Err(Rejected::new("no")),
                    Ending::BadPath => Err(tx.remove("/nowhere/at/all").unwrap_err().into()),
                    Ending::Panic => panic!("a change that panics"),
                }
            });
            match (change.ending, outcome) {
                (Ending::Commit, Ok((committed, _))) => {
                    prop_assert_eq!(committed.version, core.version);
                    if core.version == version {
                        prop_assert_eq!(&core.doc, &before, "no operation, no change");
                    } else {
                        prop_assert_eq!(core.version, version + 1);
                        let ops = core.history.ops(version, core.version).unwrap();
                        prop_assert_eq!(&apply(&before, &ops), &core.doc);
                        states.push(core.doc.clone());
                    }
                }
                (Ending::Commit, Err(error)) => prop_assert!(false, "refused: {error}"),
                (_, Ok(_)) => prop_assert!(false, "a failed change committed"),
                (_, Err(_)) => {
                    prop_assert_eq!(core.version, version);
                    prop_assert_eq!(&core.doc, &before);
                }
            }
        }
        for (from, state) in states.iter().enumerate() {
            let ops = core.history.ops(from as u64, core.version).unwrap();
            prop_assert_eq!(&apply(state, &ops), &core.doc);
        }
    }
}

/// A change's outcome without the data dir's receiver.
fn changed<R>(
    outcome: Result<(Committed<R>, Written), StoreError>,
) -> Result<Committed<R>, StoreError> {
    outcome.map(|(committed, _)| committed)
}

#[test]
fn a_failed_change_leaves_state_and_version_as_they_were() {
    let mut core = core(json!({"items": [1, 2, 3], "name": "x"}));
    core.change(|tx| {
        tx.push("/items", json!(4))
            .map(drop)
            .map_err(Rejected::from)
    })
    .unwrap();
    let (doc, version) = (core.doc.clone(), core.version);
    let refused = changed(core.change(|tx| {
        tx.remove("/items/0")?;
        tx.replace("/name", json!("y"))?;
        tx.add("/new", json!({}))?;
        Err::<(), _>(Rejected::new("invalid text"))
    }));
    assert_eq!(
        refused,
        Err(StoreError::Rejected(Rejected::new("invalid text")))
    );
    let crashed = changed(core.change(|tx| -> Result<(), Rejected> {
        tx.remove("/items/0")?;
        panic!("boom")
    }));
    assert_eq!(crashed, Err(StoreError::Panicked("boom".into())));
    assert_eq!(crashed.unwrap_err().reason(), "action crashed");
    let bad = changed(core.change(|tx| {
        tx.remove("/items/0")?;
        tx.replace("/missing", json!(1))?;
        Ok(())
    }));
    assert_eq!(bad.unwrap_err().reason(), "invalid change");
    assert_eq!((&core.doc, core.version), (&doc, version));
    assert_eq!(core.history.patches.len(), 1);
}

#[test]
fn retention_keeps_at_least_100_patches_and_is_bounded() {
    let mut core = core(json!({"blob": ""}));
    let big = "x".repeat(20 * 1024);
    for i in 0..300 {
        core.change(|tx| {
            tx.replace("/blob", json!(format!("{i}{big}")))
                .map(drop)
                .map_err(Rejected::from)
        })
        .unwrap();
    }
    assert_eq!(core.version, 300);
    // 100 patches of 20 KiB are past the byte bound: exactly the minimum is kept.
    assert_eq!(core.history.patches.len(), MIN_HISTORY);
    assert!(core.history.ops(200, 300).is_some());
    assert!(core.history.ops(199, 300).is_none());

    let mut small = self::core(json!({"n": 0}));
    for i in 0..400 {
        small
            .change(|tx| {
                tx.replace("/n", json!(i + 1))
                    .map(drop)
                    .map_err(Rejected::from)
            })
            .unwrap();
    }
    assert_eq!(small.history.patches.len(), MAX_HISTORY);
    assert_eq!(
        small.history.ops(398, 400).as_deref(),
        Some(
            r#"[{"op":"replace","path":"/n","value":399},{"op":"replace","path":"/n","value":400}]"#
        )
    );
}

#[test]
fn a_reply_gives_ops_from_a_retained_version_of_this_epoch_and_the_state_otherwise() {
    let mut core = core(json!({"n": 0}));
    for i in 1..=3 {
        core.change(|tx| tx.replace("/n", json!(i)).map(drop).map_err(Rejected::from))
            .unwrap();
    }
    let epoch = core.epoch.to_string();
    let reply = |core: &mut StoreCore, since: Option<Since>| -> Value {
        serde_json::from_str(core.reply_from(since.as_ref()).get()).unwrap()
    };
    let state = json!({"epoch": epoch, "version": 3, "state": {"n": 3}});
    assert_eq!(reply(&mut core, None), state);
    let at = |version| {
        Some(Since {
            epoch: epoch.clone(),
            version,
        })
    };
    assert_eq!(
        reply(&mut core, at(1)),
        json!({"epoch": epoch, "version": 3, "ops": [
            {"op": "replace", "path": "/n", "value": 2},
            {"op": "replace", "path": "/n", "value": 3},
        ]})
    );
    assert_eq!(
        reply(&mut core, at(3)),
        json!({"epoch": epoch, "version": 3, "ops": []})
    );
    assert_eq!(reply(&mut core, at(4)), state, "a version from the future");
    let other = Some(Since {
        epoch: "other".into(),
        version: 1,
    });
    assert_eq!(reply(&mut core, other), state, "another epoch");
    assert_eq!(
        Since::from_json(&json!({"epoch": "e", "version": -1})),
        None
    );
    assert_eq!(Since::from_json(&json!({"epoch": 1, "version": 1})), None);
    assert_eq!(Since::from_json(&json!({"version": 1})), None);
    assert_eq!(
        Since::from_json(&json!({"epoch": "e", "version": 2})),
        Some(Since {
            epoch: "e".into(),
            version: 2
        })
    );
}

#[test]
fn the_snapshot_is_encoded_once_per_version() {
    let mut core = core(json!({"n": 0}));
    let a = core.snapshot();
    let b = core.snapshot();
    assert!(Arc::ptr_eq(&a.encoded, &b.encoded));
    assert_eq!(a.etag(), format!("W/\"{}.0\"", core.epoch));
    core.change(|tx| tx.replace("/n", json!(1)).map(drop).map_err(Rejected::from))
        .unwrap();
    let c = core.snapshot();
    assert!(!Arc::ptr_eq(&a.encoded, &c.encoded));
    assert_eq!(
        serde_json::from_slice::<Value>(&c.bytes()).unwrap(),
        json!({"epoch": &*core.epoch, "version": 1, "state": {"n": 1}})
    );
}

#[test]
fn epochs_are_13_base32_characters_and_differ() {
    let (a, b) = (new_epoch(), new_epoch());
    assert_eq!(a.len(), 13);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    assert_ne!(a, b);
}

/// The payloads of the broadcasts a recorded member got, as (event, payload).
fn broadcasts(outlet: &RecordedOutlet) -> Vec<(String, Value)> {
    outlet
        .take()
        .into_iter()
        .map(|out| match out {
            Out::SendFrom(_, frame) => (frame[3].as_str().unwrap().to_owned(), frame[4].clone()),
            other => panic!("not a broadcast: {other:?}"),
        })
        .collect()
}

#[actix::test]
async fn changes_in_one_window_go_out_as_one_patch_encoded_once() {
    let pubsub = PubSub::new();
    let stores = Stores::new(&pubsub, None);
    let store = stores.start(StoreSpec::new("w", json!({"list": []})));
    // A window long enough that only a join or a sync ends it in this test.
    store
        .agent
        .update(|core| core.window = Duration::from_secs(3600))
        .await
        .unwrap();
    let members: Vec<Arc<RecordedOutlet>> = (0..3)
        .map(|_| Arc::new(RecordedOutlet::new(Serializer::V2)))
        .collect();
    for outlet in &members {
        let subscriber = Subscriber {
            outlet: outlet.clone(),
            intercept: None,
        };
        pubsub.subscribe(&"store:w".into(), InstanceId::next(), subscriber);
    }
    let before = pubsub.stats();
    for i in 0..5 {
        store
            .update(move |tx| tx.push("/list", json!(i)).map_err(Rejected::from))
            .await
            .unwrap();
    }
    // The first change went out at once; the four others wait for the window's end,
    // which a join brings forward.
    let first = broadcasts(&members[0]);
    assert_eq!(
        first,
        [(
            "patch".to_owned(),
            json!({"from": 0, "to": 1, "ops": [{"op": "add", "path": "/list/0", "value": 0}]})
        )]
    );
    let reply = store.reply_from(None, None).await.unwrap();
    let reply: Value = match reply {
        Payload::Encoded(raw) => serde_json::from_str(raw.get()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply["version"], 5);
    let rest = broadcasts(&members[0]);
    assert_eq!(rest.len(), 1);
    let (event, patch) = &rest[0];
    assert_eq!(
        (event.as_str(), &patch["from"], &patch["to"]),
        ("patch", &json!(1), &json!(5))
    );
    let state = apply(
        &apply(&json!({"list": []}), &first[0].1["ops"].to_string()),
        &patch["ops"].to_string(),
    );
    assert_eq!(state, json!({"list": [0, 1, 2, 3, 4]}));
    assert_eq!(state, reply["state"]);
    for other in &members[1..] {
        let got = broadcasts(other);
        assert_eq!(got, [first[0].clone(), rest[0].clone()]);
    }
    let after = pubsub.stats();
    assert_eq!(after.broadcasts - before.broadcasts, 2);
    assert_eq!(
        after.encodes - before.encodes,
        2,
        "each patch encoded once for 3 members"
    );
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            version: 5,
            patches: 2,
            states: 0,
            retained: 5
        }
    );
}

#[actix::test]
async fn coalesced_changes_larger_than_the_state_go_out_as_the_state() {
    let pubsub = PubSub::new();
    let store = Stores::new(&pubsub, None).start(StoreSpec::new("big", json!({"list": []})));
    store
        .agent
        .update(|core| core.window = Duration::from_secs(3600))
        .await
        .unwrap();
    let outlet = Arc::new(RecordedOutlet::new(Serializer::V2));
    let subscriber = Subscriber {
        outlet: outlet.clone(),
        intercept: None,
    };
    pubsub.subscribe(&"store:big".into(), InstanceId::next(), subscriber);
    let filler = "y".repeat(100);
    store
        .update(|tx| tx.push("/list", json!("first")).map_err(Rejected::from))
        .await
        .unwrap();
    for _ in 0..100 {
        let filler = filler.clone();
        store
            .update(move |tx| tx.push("/list", json!(filler)).map_err(Rejected::from))
            .await
            .unwrap();
    }
    store
        .update(|tx| tx.replace("/list", json!([])).map_err(Rejected::from))
        .await
        .unwrap();
    store.reply_from(None, None).await.unwrap();
    let got = broadcasts(&outlet);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "patch");
    assert_eq!(got[1].0, "state");
    assert_eq!(got[1].1["version"], 102);
    assert_eq!(got[1].1["state"], json!({"list": []}));
    assert_eq!(store.stats().await.unwrap().states, 1);
}

#[actix::test]
async fn actions_run_with_the_senders_assigns_and_answer_the_version() {
    let pubsub = PubSub::new();
    let spec = StoreSpec::new("acts", json!({"by": []})).actions(|action, tx| match action.event {
        "sign" => {
            let user = action.assigns.get_str("user").unwrap_or("?").to_owned();
            tx.push("/by", json!(user))?;
            Ok(())
        }
        "noop" => Ok(()),
        _ => Err(Rejected::new("unknown event")),
    });
    let store = Stores::new(&pubsub, None).start(spec);
    let alice = Arc::new(Assigns::new().with("user", "alice"));
    assert_eq!(
        store.act("sign".into(), json!({}), alice.clone()).await,
        Ok(1)
    );
    assert_eq!(
        store.act("noop".into(), json!({}), alice.clone()).await,
        Ok(1)
    );
    assert_eq!(
        store
            .act("what".into(), json!({}), alice)
            .await
            .unwrap_err()
            .reason(),
        "unknown event"
    );
    assert_eq!(store.state().await.unwrap(), json!({"by": ["alice"]}));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fluxwire-store-{name}-{}", new_epoch()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[actix::test]
async fn a_persistent_store_comes_back_with_its_epoch_version_state_and_patches() {
    let dir = temp_dir("persist");
    let spec = || StoreSpec::new("p", json!({"n": 0, "log": []})).persistent();
    let storage = Storage::open(&dir).unwrap();
    let store = Stores::new(&PubSub::new(), Some(storage.clone())).start(spec());
    let volatile = Stores::new(&PubSub::new(), Some(storage.clone()))
        .start(StoreSpec::new("v", json!({"n": 0})));
    for i in 1..=150 {
        store
            .update(move |tx| {
                tx.replace("/n", json!(i))?;
                tx.push("/log", json!(i % 7))?;
                Ok(())
            })
            .await
            .unwrap();
    }
    volatile
        .update(|tx| tx.replace("/n", json!(1)).map(drop).map_err(Rejected::from))
        .await
        .unwrap();
    let before = store.snapshot().await.unwrap();
    let state = store.state().await.unwrap();
    storage.close();

    let storage = Storage::open(&dir).unwrap();
    let stores = Stores::new(&PubSub::new(), Some(storage.clone()));
    let again = stores.start(spec());
    let after = again.snapshot().await.unwrap();
    assert_eq!((&after.epoch, after.version), (&before.epoch, 150));
    assert_eq!(again.state().await.unwrap(), state);
    let since = Some(Since {
        epoch: before.epoch.to_string(),
        version: 140,
    });
    let reply = match again.reply_from(since, None).await.unwrap() {
        Payload::Encoded(raw) => serde_json::from_str::<Value>(raw.get()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reply["ops"].as_array().map(Vec::len), Some(20), "{reply}");
    let fresh = stores.start(StoreSpec::new("v", json!({"n": 0})));
    assert_eq!(
        fresh.state().await.unwrap(),
        json!({"n": 0}),
        "not persistent"
    );
    // What a crash leaves: the dir is not closed.
    assert_eq!(
        again
            .act("x".into(), json!({}), Arc::default())
            .await
            .unwrap_err()
            .reason(),
        "unknown event"
    );
    again
        .update(|tx| {
            tx.replace("/n", json!(-1))
                .map(drop)
                .map_err(Rejected::from)
        })
        .await
        .unwrap();
    storage.abandon();
    let crashed = Storage::open(&dir).unwrap();
    assert!(crashed.unclean());
    let back = Stores::new(&PubSub::new(), Some(crashed.clone())).start(spec());
    let snapshot = back.snapshot().await.unwrap();
    assert_ne!(snapshot.epoch, before.epoch, "a new epoch after a crash");
    assert_eq!(snapshot.version, 151, "the acknowledged change is there");
    assert_eq!(
        back.stats().await.unwrap().retained,
        0,
        "no patch of the old epoch"
    );
    crashed.close();
    std::fs::remove_dir_all(&dir).unwrap();
}
