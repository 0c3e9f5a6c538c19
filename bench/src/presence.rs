//! Client-side presence, as phoenix.js's `Presence` applies it (docs/protocol.md §9.4):
//! `presence_state` syncs the whole map, `presence_diff` applies its joins first (the
//! key's metas become the joined ones, with the local metas whose `phx_ref` is not among
//! them kept in front), then its leaves (metas removed by `phx_ref`; a key without metas
//! is deleted; leaves of unknown keys are ignored). Diffs that arrive before the first
//! state are buffered and applied after it, in order.
//!
//! Only `phx_ref`s are kept: that is all the algorithm compares.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// key → the `phx_ref`s of its metas, in order.
pub type State = HashMap<String, Vec<String>>;

#[derive(Default)]
pub struct Presence {
    state: State,
    synced: bool,
    pending: Vec<Diff>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub joins: BTreeMap<String, Vec<String>>,
    pub leaves: BTreeMap<String, Vec<String>>,
}

impl Presence {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, once a state has arrived (`None` before: diffs are still buffered).
    pub fn state(&self) -> Option<&State> {
        self.synced.then_some(&self.state)
    }

    /// Applies a `presence_state` payload.
    pub fn on_state(&mut self, payload: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let new_state = refs_by_key(&value).ok_or("presence_state: not a presence map")?;
        // phoenix.js syncState: keys gone are left; per key, metas with unknown refs
        // join and metas whose ref disappeared leave; then syncDiff.
        let mut diff = Diff::default();
        for (key, refs) in &self.state {
            match new_state.get(key) {
                None => {
                    diff.leaves.insert(key.clone(), refs.clone());
                }
                Some(new_refs) => {
                    let left: Vec<String> = refs
                        .iter()
                        .filter(|r| !new_refs.contains(r))
                        .cloned()
                        .collect();
                    if !left.is_empty() {
                        diff.leaves.insert(key.clone(), left);
                    }
                }
            }
        }
        for (key, new_refs) in &new_state {
            let joined: Vec<String> = match self.state.get(key) {
                Some(refs) => new_refs
                    .iter()
                    .filter(|r| !refs.contains(r))
                    .cloned()
                    .collect(),
                None => new_refs.clone(),
            };
            if !joined.is_empty() {
                diff.joins.insert(key.clone(), joined);
            }
        }
        self.apply(&diff);
        self.synced = true;
        for diff in std::mem::take(&mut self.pending) {
            self.apply(&diff);
        }
        Ok(())
    }

    /// Applies (or, before the first state, buffers) a `presence_diff` payload.
    pub fn on_diff(&mut self, payload: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let part = |name: &str| {
            value
                .get(name)
                .and_then(refs_by_key)
                .map(|m| m.into_iter().collect::<BTreeMap<_, _>>())
                .ok_or_else(|| format!("presence_diff without a valid {name:?}"))
        };
        let diff = Diff {
            joins: part("joins")?,
            leaves: part("leaves")?,
        };
        if self.synced {
            self.apply(&diff);
        } else {
            self.pending.push(diff);
        }
        Ok(())
    }

    fn apply(&mut self, diff: &Diff) {
        for (key, joined) in &diff.joins {
            let mut metas: Vec<String> = match self.state.get(key) {
                Some(current) => current
                    .iter()
                    .filter(|r| !joined.contains(r))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            metas.extend(joined.iter().cloned());
            self.state.insert(key.clone(), metas);
        }
        for (key, left) in &diff.leaves {
            if let Some(current) = self.state.get_mut(key) {
                current.retain(|r| !left.contains(r));
                if current.is_empty() {
                    self.state.remove(key);
                }
            }
        }
    }
}

/// `{key: {"metas": [{"phx_ref": ...}, ...]}}` → key → refs.
fn refs_by_key(value: &Value) -> Option<HashMap<String, Vec<String>>> {
    let object = value.as_object()?;
    let mut out = HashMap::with_capacity(object.len());
    for (key, entry) in object {
        let metas = entry.get("metas")?.as_array()?;
        let refs = metas
            .iter()
            .map(|m| m.get("phx_ref").and_then(Value::as_str).map(str::to_owned))
            .collect::<Option<Vec<String>>>()?;
        out.insert(key.clone(), refs);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &Presence) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<_> = p
            .state()
            .unwrap()
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn buffers_diffs_until_state() {
        let mut p = Presence::new();
        p.on_diff(r#"{"joins":{"c":{"metas":[{"phx_ref":"C1"}]}},"leaves":{}}"#)
            .unwrap();
        p.on_diff(r#"{"joins":{},"leaves":{"a":{"metas":[{"phx_ref":"A1"}]}}}"#)
            .unwrap();
        assert!(p.state().is_none());
        p.on_state(r#"{"a":{"metas":[{"phx_ref":"A1"}]},"b":{"metas":[{"phx_ref":"B1","x":1}]}}"#)
            .unwrap();
        assert_eq!(
            keys(&p),
            vec![
                ("b".into(), vec!["B1".into()]),
                ("c".into(), vec!["C1".into()])
            ]
        );
    }

    #[test]
    fn joins_before_leaves_and_two_metas() {
        let mut p = Presence::new();
        p.on_state(r#"{"a":{"metas":[{"phx_ref":"A1"}]}}"#).unwrap();
        p.on_diff(r#"{"joins":{"a":{"metas":[{"phx_ref":"A2"}]}},"leaves":{}}"#)
            .unwrap();
        assert_eq!(keys(&p), vec![("a".into(), vec!["A1".into(), "A2".into()])]);
        // An update: the new meta joins and the old one leaves in one diff.
        p.on_diff(r#"{"joins":{"a":{"metas":[{"phx_ref":"A3"}]}},"leaves":{"a":{"metas":[{"phx_ref":"A1"}]}}}"#)
            .unwrap();
        assert_eq!(keys(&p), vec![("a".into(), vec!["A2".into(), "A3".into()])]);
        p.on_diff(r#"{"joins":{},"leaves":{"a":{"metas":[{"phx_ref":"A2"},{"phx_ref":"A3"}]},"zz":{"metas":[{"phx_ref":"Z"}]}}}"#)
            .unwrap();
        assert!(keys(&p).is_empty());
        assert!(p.on_diff(r#"{"joins":{}}"#).is_err());
    }

    #[test]
    fn a_new_state_replaces_the_map() {
        let mut p = Presence::new();
        p.on_state(r#"{"a":{"metas":[{"phx_ref":"A1"}]},"b":{"metas":[{"phx_ref":"B1"}]}}"#)
            .unwrap();
        p.on_state(r#"{"b":{"metas":[{"phx_ref":"B2"}]}}"#).unwrap();
        assert_eq!(keys(&p), vec![("b".into(), vec!["B2".into()])]);
    }
}
