//! JSON documents changed by recorded RFC 6902 operations: what a store's state is made
//! of, and what the data dir replays.
//!
//! Owns JSON Pointer handling (RFC 6901), the three operations a store records (`add`,
//! `remove`, `replace`), their application to a document, and the transaction ([`Tx`])
//! that records each mutation as it applies it and keeps its inverse, so that a failed
//! change can be put back. A change costs what it touches: nothing here walks or copies
//! the rest of the document, and nothing diffs. Must not know stores, versions, members
//! or the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded operation, serialized exactly as RFC 6902 writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// Why a change could not be made at a path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{0:?} is not a JSON pointer (it must be empty or start with '/')")]
    InvalidPointer(String),
    #[error("nothing at {0:?}")]
    NotFound(String),
    #[error("{0:?} is neither in an object nor an index of an array")]
    NotAContainer(String),
    #[error("{0:?}: array index out of range")]
    OutOfRange(String),
    #[error("{0:?}: the root cannot be removed")]
    RemoveRoot(String),
}

/// `parts` as a JSON pointer, each part escaped (`~` as `~0`, `/` as `~1`):
/// `pointer(["users", "a/b"])` is `"/users/a~1b"`.
pub fn pointer<I, S>(parts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for part in parts {
        out.push('/');
        for c in part.as_ref().chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent pointer and the last token (unescaped) of a non-root pointer.
fn split(path: &str) -> Result<(&str, String), PatchError> {
    if !path.starts_with('/') {
        return Err(PatchError::InvalidPointer(path.to_owned()));
    }
    let at = path.rfind('/').expect("starts with '/'");
    Ok((&path[..at], unescape(&path[at + 1..])))
}

/// An array index token: digits without a leading zero (RFC 6901).
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn parent_mut<'d>(
    doc: &'d mut Value,
    parent: &str,
    path: &str,
) -> Result<&'d mut Value, PatchError> {
    doc.pointer_mut(parent)
        .ok_or_else(|| PatchError::NotFound(path.to_owned()))
}

/// What an `add` did, to record it and to undo it.
struct Added {
    /// The path with `-` resolved to the index.
    path: String,
    /// The member value it replaced, for an object member that existed.
    replaced: Option<Value>,
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<Added, PatchError> {
    if path.is_empty() {
        let old = std::mem::replace(doc, value);
        return Ok(Added {
            path: String::new(),
            replaced: Some(old),
        });
    }
    let (parent, token) = split(path)?;
    match parent_mut(doc, parent, path)? {
        Value::Object(map) => {
            let replaced = map.insert(token, value);
            Ok(Added {
                path: path.to_owned(),
                replaced,
            })
        }
        Value::Array(items) => {
            let at = if token == "-" {
                items.len()
            } else {
                index(&token).ok_or_else(|| PatchError::OutOfRange(path.to_owned()))?
            };
            if at > items.len() {
                return Err(PatchError::OutOfRange(path.to_owned()));
            }
            items.insert(at, value);
            Ok(Added {
                path: format!("{parent}/{at}"),
                replaced: None,
            })
        }
        _ => Err(PatchError::NotAContainer(path.to_owned())),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    if path.is_empty() {
        return Err(PatchError::RemoveRoot(path.to_owned()));
    }
    let (parent, token) = split(path)?;
    match parent_mut(doc, parent, path)? {
        // `shift_remove` would keep the order with `preserve_order`; serde_json's default
        // map is a BTreeMap, where `remove` already does.
        Value::Object(map) => map
            .remove(&token)
            .ok_or_else(|| PatchError::NotFound(path.to_owned())),
        Value::Array(items) => match index(&token) {
            Some(at) if at < items.len() => Ok(items.remove(at)),
            _ => Err(PatchError::OutOfRange(path.to_owned())),
        },
        _ => Err(PatchError::NotAContainer(path.to_owned())),
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<Value, PatchError> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(PatchError::InvalidPointer(path.to_owned()));
    }
    let slot = doc
        .pointer_mut(path)
        .ok_or_else(|| PatchError::NotFound(path.to_owned()))?;
    Ok(std::mem::replace(slot, value))
}

/// Applies a recorded operation to `doc` (replaying a stored log).
pub fn apply(doc: &mut Value, op: Op) -> Result<(), PatchError> {
    match op {
        Op::Add { path, value } => add(doc, &path, value).map(drop),
        Op::Remove { path } => remove(doc, &path).map(drop),
        Op::Replace { path, value } => replace(doc, &path, value).map(drop),
    }
}

/// One change to a store's document in progress: every mutation is applied at once and
/// recorded as an RFC 6902 operation, with its inverse kept so that a change that fails
/// can be undone. Made by the store for each update; see `Store::update`.
pub struct Tx<'a> {
    doc: &'a mut Value,
    version: u64,
    ops: Vec<Op>,
    undo: Vec<Op>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(doc: &'a mut Value, version: u64) -> Self {
        Tx {
            doc,
            version,
            ops: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// The version this change commits as, if it changes anything: unique for the
    /// store's life (a stable id for something this change creates).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The whole document as it is now, this change's mutations included.
    pub fn doc(&self) -> &Value {
        self.doc
    }

    /// The value at `path`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.doc.pointer(path)
    }

    /// The length of the array at `path`.
    pub fn len(&self, path: &str) -> Option<usize> {
        self.get(path).and_then(Value::as_array).map(Vec::len)
    }

    /// RFC 6902 `add`: sets an object member (replacing one that exists) or inserts into
    /// an array at an index (`-` appends; recorded with the index it got).
    pub fn add(&mut self, path: &str, value: Value) -> Result<(), PatchError> {
        let recorded = value.clone();
        let added = add(self.doc, path, value)?;
        let path = added.path;
        // Adding at the root always replaces, so a `None` here has a non-root path.
        self.undo.push(match added.replaced {
            Some(old) => Op::Replace {
                path: path.clone(),
                value: old,
            },
            None => Op::Remove { path: path.clone() },
        });
        self.ops.push(Op::Add {
            path,
            value: recorded,
        });
        Ok(())
    }

    /// Appends to the array at `path`; returns the new element's index.
    pub fn push(&mut self, path: &str, value: Value) -> Result<usize, PatchError> {
        let at = self
            .len(path)
            .ok_or_else(|| PatchError::NotAContainer(format!("{path}/-")))?;
        self.add(&format!("{path}/{at}"), value)?;
        Ok(at)
    }

    /// RFC 6902 `remove`; returns the value removed.
    pub fn remove(&mut self, path: &str) -> Result<Value, PatchError> {
        let old = remove(self.doc, path)?;
        self.undo.push(Op::Add {
            path: path.to_owned(),
            value: old.clone(),
        });
        self.ops.push(Op::Remove {
            path: path.to_owned(),
        });
        Ok(old)
    }

    /// RFC 6902 `replace` of a value that exists (`""` replaces the whole document);
    /// returns the value replaced.
    pub fn replace(&mut self, path: &str, value: Value) -> Result<Value, PatchError> {
        let recorded = value.clone();
        let old = replace(self.doc, path, value)?;
        self.undo.push(Op::Replace {
            path: path.to_owned(),
            value: old.clone(),
        });
        self.ops.push(Op::Replace {
            path: path.to_owned(),
            value: recorded,
        });
        Ok(old)
    }

    /// `replace` if `path` exists, `add` otherwise. A value equal to the one there
    /// records nothing.
    pub fn set(&mut self, path: &str, value: Value) -> Result<(), PatchError> {
        match self.get(path) {
            Some(current) if *current == value => Ok(()),
            Some(_) => self.replace(path, value).map(drop),
            None => self.add(path, value),
        }
    }

    /// Whether this change has changed anything.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The recorded operations, ending the change.
    pub(crate) fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Undoes every mutation, newest first: the document is as it was before.
    pub(crate) fn rollback(self) {
        for op in self.undo.into_iter().rev() {
            if let Err(error) = apply(self.doc, op) {
                // Each inverse undoes the mutation just after it, so it always applies.
                log::error!("store rollback: an inverse operation failed: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_escape_and_unescape() {
        assert_eq!(pointer(["users", "a/b", "c~d"]), "/users/a~1b/c~0d");
        assert_eq!(pointer::<[&str; 0], &str>([]), "");
        let mut doc = json!({});
        let mut tx = Tx::new(&mut doc, 1);
        tx.add(&pointer(["a/b~"]), json!(1)).unwrap();
        assert_eq!(tx.doc(), &json!({"a/b~": 1}));
        assert_eq!(tx.get("/a~1b~0"), Some(&json!(1)));
    }

    #[test]
    fn each_mutation_is_recorded_as_rfc_6902() {
        let mut doc = json!({"list": [1, 2], "n": 0});
        let mut tx = Tx::new(&mut doc, 7);
        tx.push("/list", json!(3)).unwrap();
        tx.add("/list/0", json!(0)).unwrap();
        tx.add("/list/-", json!(4)).unwrap();
        tx.replace("/n", json!(1)).unwrap();
        tx.set("/n", json!(1)).unwrap();
        tx.set("/new", json!("x")).unwrap();
        assert_eq!(tx.remove("/list/1").unwrap(), json!(1));
        let ops = serde_json::to_value(tx.into_ops()).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/list/2", "value": 3},
                {"op": "add", "path": "/list/0", "value": 0},
                {"op": "add", "path": "/list/4", "value": 4},
                {"op": "replace", "path": "/n", "value": 1},
                {"op": "add", "path": "/new", "value": "x"},
                {"op": "remove", "path": "/list/1"},
            ])
        );
        assert_eq!(doc, json!({"list": [0, 2, 3, 4], "n": 1, "new": "x"}));
    }

    #[test]
    fn bad_paths_are_errors_that_change_nothing() {
        let mut doc = json!({"list": [1], "s": "x"});
        let before = doc.clone();
        let mut tx = Tx::new(&mut doc, 1);
        assert_eq!(
            tx.add("/list/2", json!(0)),
            Err(PatchError::OutOfRange("/list/2".into()))
        );
        assert_eq!(
            tx.add("/list/01", json!(0)),
            Err(PatchError::OutOfRange("/list/01".into()))
        );
        assert_eq!(
            tx.remove("/list/1"),
            Err(PatchError::OutOfRange("/list/1".into()))
        );
        assert_eq!(
            tx.remove("/nope"),
            Err(PatchError::NotFound("/nope".into()))
        );
        assert_eq!(
            tx.add("/nope/x", json!(0)),
            Err(PatchError::NotFound("/nope/x".into()))
        );
        assert_eq!(
            tx.add("/s/x", json!(0)),
            Err(PatchError::NotAContainer("/s/x".into()))
        );
        assert_eq!(
            tx.replace("/missing", json!(0)),
            Err(PatchError::NotFound("/missing".into()))
        );
        assert_eq!(tx.remove(""), Err(PatchError::RemoveRoot("".into())));
        assert_eq!(
            tx.add("x", json!(0)),
            Err(PatchError::InvalidPointer("x".into()))
        );
        assert!(tx.is_empty());
        drop(tx);
        assert_eq!(doc, before);
    }

    #[test]
    fn a_rollback_restores_the_document() {
        let original = json!({"a": {"b": [1, 2, 3]}, "c": "x"});
        let mut doc = original.clone();
        let mut tx = Tx::new(&mut doc, 1);
        tx.add("/a/b/1", json!(9)).unwrap();
        tx.remove("/a/b/0").unwrap();
        tx.replace("/c", json!({"deep": true})).unwrap();
        tx.add("/c/deep", json!(false)).unwrap();
        tx.add("/d", json!([])).unwrap();
        tx.push("/d", json!(1)).unwrap();
        tx.replace("", json!(null)).unwrap();
        tx.add("", json!({"e": 1})).unwrap();
        tx.rollback();
        assert_eq!(doc, original);
    }
}
