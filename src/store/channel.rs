//! The `store:NAME` channel: a client's view of one store (docs/contract.md, "Stores
//! over the wire").
//!
//! Owns the wire of a store topic: a join with or without `{epoch, version}` answered
//! with the state or the operations since, the subscription started inside the store at
//! the version of that reply (so no patch falls between the reply and the first `patch`
//! push), `sync`, and actions answered `ok {"version": N}` or `error {"reason": ...}`.
//! Must not change a store other than through its actions.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{Since, Store};
use crate::channel::{Channel, ChannelContext, JoinParams, Reply};
use crate::message::Payload;
use crate::socket::Assigns;

/// Runs in each successful join's `join` call, e.g. to track presence.
pub type JoinHook = Arc<dyn Fn(&mut ChannelContext<'_, StoreChannel>) + Send + Sync>;

/// One connection's membership of one store topic.
pub struct StoreChannel {
    store: Option<Store>,
    on_join: Option<JoinHook>,
    /// The connection's assigns, shared by this channel's actions.
    assigns: Arc<Assigns>,
}

impl StoreChannel {
    pub(super) fn new(store: Option<Store>) -> Self {
        StoreChannel {
            store,
            on_join: None,
            assigns: Arc::default(),
        }
    }

    /// Runs `hook` in `join` once the store is known to exist (to track presence).
    pub fn on_join(mut self, hook: JoinHook) -> Self {
        self.on_join = Some(hook);
        self
    }
}

fn answer(reply: Result<Payload, super::StoreError>) -> Reply {
    match reply {
        Ok(payload) => Reply::Ok(payload),
        Err(error) => Reply::reason(error.reason()),
    }
}

impl Channel for StoreChannel {
    fn join(&mut self, params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply {
        let Some(store) = self.store.clone() else {
            return Reply::reason("unknown store");
        };
        if let Some(hook) = &self.on_join {
            hook(ctx);
        }
        self.assigns = Arc::new(ctx.assigns().clone());
        let since = Since::from_json(&Value::Object(params.clone()));
        let subscription = ctx.take_subscription();
        Reply::later(async move { answer(store.reply_from(since, subscription).await) })
    }

    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        _ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let Some(store) = self.store.clone() else {
            return Reply::reason("unknown store");
        };
        let Some(payload) = payload.as_json().cloned() else {
            return Reply::reason("invalid payload");
        };
        if event == "sync" {
            let since = Since::from_json(&payload);
            return Reply::later(async move { answer(store.reply_from(since, None).await) });
        }
        let (event, assigns) = (event.to_owned(), self.assigns.clone());
        Reply::later(async move {
            match store.act(event, payload, assigns).await {
                Ok(version) => Reply::ok(json!({ "version": version })),
                Err(error) => Reply::reason(error.reason()),
            }
        })
    }
}
