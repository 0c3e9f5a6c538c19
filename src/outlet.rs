//! The outlet: one client's way out, where its session, its channels and pubsub meet.
//!
//! Owns the order of everything one client is sent, whichever thread sends it: the
//! session's own replies, its channel instances' replies and pushes, and broadcasts
//! written straight from the publisher's thread (no message to the session per
//! delivery). Per channel instance it keeps whether the join reply is out yet: until it
//! is, that instance's frames are held, so that the reply is the first thing the client
//! hears of it; once the instance has ended, its frames are dropped. Must not decide
//! what is sent (the session and the channels do) or how bytes reach the client (the
//! transport's [`Outbox`] does).

use std::sync::{Mutex, MutexGuard};

use crate::channel::InstanceId;
use crate::message::{event, Payload, Push, Ref, Reply, Status};
use crate::pubsub::BroadcastFrame;
use crate::serializer::{EncodeError, Frame, Serializer};
use crate::transport::Outbox;

/// One client's ordered way out. Every method may be called from any thread.
pub trait Outlet: Send + Sync {
    fn serializer(&self) -> Serializer;

    /// A frame from the session itself (a heartbeat reply, a refusal).
    fn send(&self, frame: Frame);

    /// Closes the connection after what is queued; later frames are dropped.
    fn close(&self, code: u16, reason: &str);

    /// A join of `instance` has started: its frames wait for [`Outlet::joined`].
    fn joining(&self, instance: InstanceId);

    /// The join of `instance` was accepted: `reply` goes out, then what was held.
    fn joined(&self, instance: InstanceId, reply: Frame);

    /// `instance` is over (refused, left, replaced, crashed): what it still had held is
    /// dropped, `last` (its refusal or `phx_close`) goes out, and later frames from it
    /// are dropped.
    fn ended(&self, instance: InstanceId, last: Option<Frame>);

    /// A frame from a channel instance: held while it joins, dropped once it has ended.
    fn send_from(&self, instance: InstanceId, frame: Frame);

    /// A broadcast for `instance`, as [`Outlet::send_from`], in this client's encoding.
    fn deliver(&self, instance: InstanceId, broadcast: &BroadcastFrame) {
        if let Some(frame) = broadcast.frame(self.serializer()) {
            self.send_from(instance, frame.clone());
        }
    }

    /// Pushes `event` from `instance` (its channel, a store, presence).
    fn push(&self, from: &Sender<'_>, event: &str, payload: &Payload) {
        let push = Push {
            join_ref: from.join_ref,
            msg_ref: None,
            topic: from.topic,
            event,
            payload,
        };
        let frame = self.serializer().encode_push(&push);
        send_encoded(self, from, event, frame);
    }

    /// Replies to the client message `msg_ref` from `instance`.
    fn reply(&self, from: &Sender<'_>, msg_ref: Option<&Ref>, status: Status, response: &Payload) {
        let reply = Reply {
            join_ref: from.join_ref,
            msg_ref,
            topic: from.topic,
            status,
            response,
        };
        let frame = self.serializer().encode_reply(&reply);
        send_encoded(self, from, event::REPLY, frame);
    }
}

/// Sends a channel's encoded frame, or logs why it could not be encoded.
fn send_encoded<O: Outlet + ?Sized>(
    outlet: &O,
    from: &Sender<'_>,
    event: &str,
    frame: Result<Frame, EncodeError>,
) {
    match frame {
        Ok(frame) => outlet.send_from(from.instance, frame),
        Err(error) => log::warn!("{event} on {} not sent: {error}", from.topic),
    }
}

/// Who a channel's frame comes from: enough to address it on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub instance: InstanceId,
    pub topic: &'a str,
    pub join_ref: Option<&'a Ref>,
}

/// The [`Outlet`] over a transport's [`Outbox`].
pub struct Lane<O> {
    serializer: Serializer,
    /// Most frames one instance may have held while it joins; past it the connection
    /// is closed (1008), as for a client that does not read.
    hold_limit: usize,
    state: Mutex<LaneState<O>>,
}

struct LaneState<O> {
    out: O,
    /// The channel instances of this client; a connection has a few at most.
    instances: Vec<(InstanceId, Slot)>,
}

enum Slot {
    /// The join reply is not out yet: frames wait here.
    Joining(Vec<Frame>),
    Live,
}

impl<O: Outbox + Send> Lane<O> {
    pub fn new(serializer: Serializer, out: O, hold_limit: usize) -> Self {
        Lane {
            serializer,
            hold_limit,
            state: Mutex::new(LaneState {
                out,
                instances: Vec::new(),
            }),
        }
    }

    /// Runs `f` on the transport's outbox; nothing else is sent meanwhile.
    pub(crate) fn with_outbox<R>(&self, f: impl FnOnce(&mut O) -> R) -> R {
        f(&mut self.lock().out)
    }

    fn lock(&self) -> MutexGuard<'_, LaneState<O>> {
        // A panic while holding the lock leaves frames half queued at worst; the
        // connection is still better served than poisoned.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<O> LaneState<O> {
    fn slot(&mut self, instance: InstanceId) -> Option<&mut Slot> {
        self.instances
            .iter_mut()
            .find(|(id, _)| *id == instance)
            .map(|(_, slot)| slot)
    }
}

impl<O: Outbox + Send> Outlet for Lane<O> {
    fn serializer(&self) -> Serializer {
        self.serializer
    }

    fn send(&self, frame: Frame) {
        self.lock().out.send(frame);
    }

    fn close(&self, code: u16, reason: &str) {
        self.lock().out.close(code, reason);
    }

    fn joining(&self, instance: InstanceId) {
        let mut state = self.lock();
        state.instances.push((instance, Slot::Joining(Vec::new())));
    }

    fn joined(&self, instance: InstanceId, reply: Frame) {
        let mut state = self.lock();
        let held = match state.slot(instance) {
            Some(slot) => std::mem::replace(slot, Slot::Live),
            None => return,
        };
        state.out.send(reply);
        if let Slot::Joining(held) = held {
            for frame in held {
                state.out.send(frame);
            }
        }
    }

    fn ended(&self, instance: InstanceId, last: Option<Frame>) {
        let mut state = self.lock();
        state.instances.retain(|(id, _)| *id != instance);
        if state.instances.is_empty() {
            // A connection's channels come and go: keep no list for none.
            state.instances = Vec::new();
        }
        if let Some(frame) = last {
            state.out.send(frame);
        }
    }

    fn send_from(&self, instance: InstanceId, frame: Frame) {
        let mut state = self.lock();
        match state.slot(instance) {
            Some(Slot::Live) => state.out.send(frame),
            Some(Slot::Joining(held)) if held.len() < self.hold_limit => held.push(frame),
            Some(Slot::Joining(held)) => {
                let why = format!("{} frames held for a join still in progress", held.len());
                *held = Vec::new();
                state
                    .out
                    .cut_off("too many messages waiting for a join", why);
            }
            None => {}
        }
    }
}
