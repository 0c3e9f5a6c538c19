//! `store:todos`: one todo list shared by every user (docs/contract.md, "Stores over the
//! wire").
//!
//! Owns the list's rules: the state `{"todos": [{"id","text","done","by"}]}`, oldest
//! first, at most [`MAX_TODOS`]; the actions `add`, `toggle`, `remove` and `clear_done`,
//! and their refusals. Each todo's id is the store version that added it, so ids are
//! never reused while the store's history lasts. Must not know the wire: the framework's
//! store channel carries it.

use fluxwire::{Action, Rejected, StoreSpec, Tx};
use serde_json::{json, Value};

pub const NAME: &str = "todos";
/// Most todos the list holds.
pub const MAX_TODOS: usize = 500;
/// Longest text, in code points, after trimming.
pub const MAX_TEXT_CHARS: usize = 200;

/// The store, empty, with its actions; kept in the data dir when there is one.
pub fn spec() -> StoreSpec {
    StoreSpec::new(NAME, json!({ "todos": [] }))
        .actions(act)
        .persistent()
}

fn act(action: Action<'_>, tx: &mut Tx<'_>) -> Result<(), Rejected> {
    match action.event {
        "add" => {
            let text = valid_text(action.payload).ok_or("invalid text")?;
            if tx.len("/todos").unwrap_or(0) >= MAX_TODOS {
                return Err("store full".into());
            }
            let user = action.assigns.get_str("user").unwrap_or_default();
            let todo = json!({ "id": tx.version(), "text": text, "done": false, "by": user });
            tx.push("/todos", todo)?;
        }
        "toggle" => {
            let at = position(tx, action.payload)?;
            let done = tx.get(&format!("/todos/{at}/done")) == Some(&Value::Bool(true));
            tx.replace(&format!("/todos/{at}/done"), Value::Bool(!done))?;
        }
        "remove" => {
            let at = position(tx, action.payload)?;
            tx.remove(&format!("/todos/{at}"))?;
        }
        "clear_done" => {
            let done: Vec<usize> = todos(tx)
                .iter()
                .enumerate()
                .filter(|(_, todo)| todo["done"] == Value::Bool(true))
                .map(|(at, _)| at)
                .collect();
            // From the last, so that each index still names its todo.
            for at in done.into_iter().rev() {
                tx.remove(&format!("/todos/{at}"))?;
            }
        }
        _ => return Err("unknown event".into()),
    }
    Ok(())
}

fn todos<'t>(tx: &'t Tx<'_>) -> &'t [Value] {
    tx.get("/todos")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The index of the todo whose id the payload names.
fn position(tx: &Tx<'_>, payload: &Value) -> Result<usize, Rejected> {
    let id = payload.get("id").and_then(Value::as_u64);
    id.and_then(|id| todos(tx).iter().position(|todo| todo["id"] == id))
        .ok_or_else(|| "unknown todo".into())
}

/// The trimmed text if it is 1 to 200 code points long.
fn valid_text(payload: &Value) -> Option<&str> {
    let text = payload.get("text")?.as_str()?.trim();
    (1..=MAX_TEXT_CHARS)
        .contains(&text.chars().count())
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let text = |v: Value| valid_text(&v).map(str::to_owned);
        assert_eq!(text(json!({"text": "  milk "})), Some("milk".into()));
        assert_eq!(text(json!({"text": "   "})), None);
        assert_eq!(text(json!({"text": 3})), None);
        assert_eq!(text(json!({})), None);
        assert_eq!(
            text(json!({"text": "é".repeat(200)})),
            Some("é".repeat(200))
        );
        assert_eq!(text(json!({"text": "é".repeat(201)})), None);
    }
}
