//! Channels: the application's per-topic code, each joined topic running as its own actor.
//!
//! Owns what an application author writes against: the [`Channel`] trait (join /
//! handle_in / handle_info / terminate / handle_out), the [`Reply`] it answers with, the
//! [`ChannelContext`] handed to it and the handles it may keep ([`ChannelRef`],
//! [`Pusher`], [`Subscription`]). The actor that runs one instance is beside it, in
//! `channel/server.rs`. Must not write to the socket, nor decide when a frame may reach
//! the client: the outlet does.

mod server;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::{AsyncContext, Context, Recipient};
use serde_json::{json, Map, Value};

#[cfg(test)]
pub(crate) use server::StartedChannel;
use server::{ChannelActor, ChannelCore, Info};
pub(crate) use server::{
    ChannelFactory, ChannelMsg, ChannelReport, ChannelStart, FactoryFn, INBOUND_LIMIT,
};

use crate::message::{Payload, Ref};
use crate::outlet::{InstanceId, Outlet, Sender};
use crate::presence::{Presence, Tracked};
use crate::pubsub::{PubSub, Subscriber};
use crate::socket::Assigns;

/// A join object: the payload of `phx_join`.
pub type JoinParams = Map<String, Value>;

/// A future that produces a [`Reply`]; runs on the channel's own thread.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply>>>;

/// What a channel answers to a join or a client message.
pub enum Reply {
    /// `phx_reply` with status `ok`. For a join: accepted, with this response.
    Ok(Payload),
    /// `phx_reply` with status `error`. For a join: refused, with this reason.
    Error(Payload),
    /// No reply (the client's push times out). For a join: accepted with `{}`.
    NoReply,
    /// The answer comes later. The channel handles nothing else meanwhile, as Phoenix's
    /// channel process would while it waits.
    Later(ReplyFuture),
}

impl Reply {
    pub fn ok(response: impl Into<Payload>) -> Self {
        Reply::Ok(response.into())
    }

    /// `ok` with an empty object.
    pub fn ok_empty() -> Self {
        Reply::Ok(Payload::empty())
    }

    pub fn error(response: impl Into<Payload>) -> Self {
        Reply::Error(response.into())
    }

    /// `error {"reason": reason}`, the conventional refusal.
    pub fn reason(reason: &str) -> Self {
        Reply::Error(Payload::Json(json!({ "reason": reason })))
    }

    pub fn later(future: impl Future<Output = Reply> + 'static) -> Self {
        Reply::Later(Box::pin(future))
    }
}

/// Why a channel instance ends; given to [`Channel::terminate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The client sent `phx_leave`.
    Left,
    /// The connection ended (close, error, idle timeout, shutdown).
    Closed,
    /// The client joined the same topic again; this instance is replaced.
    DuplicateJoin,
    /// The channel asked to stop ([`ChannelContext::stop`]).
    Stopped,
    /// The channel's own code panicked.
    Crashed,
}

/// The application's code for one topic pattern. One value per joined instance.
///
/// Every method runs on the channel's actor, one at a time, with panics caught: a panic
/// in `join` refuses the join (`join crashed`), anywhere else it ends this instance with
/// `phx_error` while the connection and its other channels live on.
pub trait Channel: Sized + Unpin + 'static {
    /// Accept (`Ok`, `NoReply`) or refuse (`Error`) a join.
    fn join(&mut self, params: &JoinParams, ctx: &mut ChannelContext<'_, Self>) -> Reply;

    /// A client message on this topic.
    fn handle_in(
        &mut self,
        event: &str,
        payload: Payload,
        ctx: &mut ChannelContext<'_, Self>,
    ) -> Reply {
        let _ = (event, payload, ctx);
        Reply::reason("unknown event")
    }

    /// A message sent to this instance through its [`ChannelRef`].
    fn handle_info(&mut self, message: Box<dyn Any + Send>, ctx: &mut ChannelContext<'_, Self>) {
        let _ = (message, ctx);
    }

    /// The instance ends, for any reason; presence and subscriptions are cleaned up by
    /// the framework after this returns.
    fn terminate(&mut self, reason: Reason, ctx: &mut ChannelContext<'_, Self>) {
        let _ = (reason, ctx);
    }

    /// Broadcast events this channel wants to see before they reach its client; they
    /// go through [`Channel::handle_out`] instead of the shared pre-encoded frame.
    fn intercepts(&self) -> &'static [&'static str] {
        &[]
    }

    /// An intercepted broadcast: by default it is pushed to the client unchanged.
    fn handle_out(&mut self, event: &str, payload: &Payload, ctx: &mut ChannelContext<'_, Self>) {
        ctx.push(event, payload.clone());
    }
}

/// What a channel's code may do: read who and where it is, and talk to its client and
/// its topic.
pub struct ChannelContext<'a, C: Channel> {
    pub(crate) core: &'a mut ChannelCore,
    pub(crate) actor: &'a mut Context<ChannelActor<C>>,
}

impl<C: Channel> ChannelContext<'_, C> {
    pub fn topic(&self) -> &str {
        &self.core.topic
    }

    pub fn join_ref(&self) -> Option<&Ref> {
        self.core.join_ref.as_ref()
    }

    pub fn instance(&self) -> InstanceId {
        self.core.instance
    }

    /// What the socket's `connect` attached to this connection.
    pub fn assigns(&self) -> &Assigns {
        &self.core.assigns
    }

    pub fn pubsub(&self) -> &PubSub {
        &self.core.pubsub
    }

    /// Sends `event` to this instance's client only.
    pub fn push(&self, event: &str, payload: impl Into<Payload>) {
        self.core
            .outlet
            .push(&self.core.sender(), event, &payload.into());
    }

    /// A handle that pushes to this instance's client from anywhere (a store, a
    /// future). Pushes sent before the join reply are held and follow it.
    pub fn pusher(&self) -> Pusher {
        self.core.pusher()
    }

    /// Sends `event` to every subscriber of this topic, this client included.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) {
        self.core
            .pubsub
            .broadcast(&self.core.topic, event, payload.into());
    }

    /// Sends `event` to every subscriber of this topic except this instance.
    pub fn broadcast_from(&self, event: &str, payload: impl Into<Payload>) {
        self.core.pubsub.broadcast_from(
            self.core.instance,
            &self.core.topic,
            event,
            payload.into(),
        );
    }

    /// Ends this instance after the current call returns (and its reply is sent); the
    /// client gets `phx_close` and does not rejoin.
    pub fn stop(&mut self) {
        self.core.stop_requested = true;
    }

    /// A handle for sending this instance messages later ([`Channel::handle_info`]).
    pub fn handle(&self) -> ChannelRef {
        ChannelRef(self.actor.address().recipient())
    }

    /// Takes over the moment this instance subscribes to its topic. By default the
    /// framework subscribes as soon as `join` returns; a channel that must subscribe
    /// atomically with reading some state (e.g. inside a store's update, so that no
    /// message falls between its history and its subscription) takes the subscription
    /// here and activates it there. `None` if already taken.
    pub fn take_subscription(&mut self) -> Option<Subscription> {
        self.core.take_subscription()
    }

    /// Tracks this instance's presence on its topic under `key` with `meta`, once the
    /// join is accepted: the client gets `presence_state`, every member a
    /// `presence_diff`. Untracked when the instance ends.
    pub fn track(&mut self, presence: &Presence, key: &str, meta: Map<String, Value>) {
        self.core.tracks.push(Tracked::new(presence, key, meta));
    }
}

/// Sends [`Channel::handle_info`] messages to one channel instance.
#[derive(Clone)]
pub struct ChannelRef(Recipient<Info>);

impl ChannelRef {
    /// Delivers `message` unless the instance has ended.
    pub fn send(&self, message: impl Any + Send) -> bool {
        let alive = self.0.connected();
        self.0.do_send(Info(Box::new(message)));
        alive
    }
}

/// Pushes to one channel instance's client; see [`ChannelContext::pusher`].
#[derive(Clone)]
pub struct Pusher {
    pub(crate) outlet: Arc<dyn Outlet>,
    pub(crate) topic: Arc<str>,
    pub(crate) instance: InstanceId,
    pub(crate) join_ref: Option<Ref>,
}

impl Pusher {
    pub fn push(&self, event: &str, payload: impl Into<Payload>) {
        let from = Sender {
            instance: self.instance,
            topic: &self.topic,
            join_ref: self.join_ref.as_ref(),
        };
        self.outlet.push(&from, event, &payload.into());
    }
}

/// A pending subscription of one instance to its topic; see
/// [`ChannelContext::take_subscription`].
pub struct Subscription {
    pub(crate) pubsub: PubSub,
    pub(crate) topic: Arc<str>,
    pub(crate) instance: InstanceId,
    pub(crate) subscriber: Subscriber,
}

impl Subscription {
    pub fn activate(self) {
        self.pubsub
            .subscribe(&self.topic, self.instance, self.subscriber);
    }
}
