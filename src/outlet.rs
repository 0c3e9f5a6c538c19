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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::close::Close;
use crate::logline::client_text;
use crate::message::{event, Payload, PhxReply, Push, Ref, Status};
use crate::serializer::{BroadcastFrame, EncodeError, Frame, Serializer};

/// Identifies one channel instance (one join of one topic on one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(u64);

impl InstanceId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        InstanceId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

/// Where a transport puts a connection's frames, in the order given; behind the
/// connection's [`Outlet`], which serialises every sender. Writes after a close are
/// dropped silently.
pub(crate) trait Outbox {
    fn send(&mut self, frame: Frame);
    fn close(&mut self, close: Close);
    /// Closes because a bound was reached (`close`'s reason goes to the client); the
    /// transport logs `why` once, naming the client.
    fn cut_off(&mut self, close: Close, why: String);
}

/// One client's ordered way out. Every method may be called from any thread.
pub(crate) trait Outlet: Send + Sync {
    fn serializer(&self) -> Serializer;

    /// A frame from the session itself (a heartbeat reply, a refusal).
    fn send(&self, frame: Frame);

    /// Closes the connection after what is queued; later frames are dropped.
    fn close(&self, close: Close);

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

    /// A broadcast for `instance`, as [`Outlet::send_from`], in this client's encoding;
    /// `false` if it cannot be encoded for this client (binary on V1).
    fn deliver(&self, instance: InstanceId, broadcast: &BroadcastFrame) -> bool {
        match broadcast.frame(self.serializer()) {
            Some(frame) => {
                self.send_from(instance, frame.clone());
                true
            }
            None => false,
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
        let reply = PhxReply {
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
        Err(error) => log::warn!(
            "{} on {} not sent: {error}",
            client_text(event),
            client_text(from.topic)
        ),
    }
}

/// Who a channel's frame comes from: enough to address it on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sender<'a> {
    pub instance: InstanceId,
    pub topic: &'a str,
    pub join_ref: Option<&'a Ref>,
}

/// The [`Outlet`] over a transport's [`Outbox`].
pub(crate) struct ClientOutlet<O> {
    serializer: Serializer,
    /// Most frames one instance may have held while it joins; past it the connection
    /// is closed (1008), as for a client that does not read.
    hold_limit: usize,
    state: Mutex<OutletState<O>>,
}

struct OutletState<O> {
    out: O,
    /// The channel instances of this client; a connection has a few at most.
    instances: Vec<(InstanceId, Slot)>,
}

enum Slot {
    /// The join reply is not out yet: frames wait here.
    Joining(Vec<Frame>),
    Live,
}

impl<O: Outbox + Send> ClientOutlet<O> {
    pub(crate) fn new(serializer: Serializer, out: O, hold_limit: usize) -> Self {
        ClientOutlet {
            serializer,
            hold_limit,
            state: Mutex::new(OutletState {
                out,
                instances: Vec::new(),
            }),
        }
    }

    /// Runs `f` on the transport's outbox; nothing else is sent meanwhile.
    pub(crate) fn with_outbox<R>(&self, f: impl FnOnce(&mut O) -> R) -> R {
        f(&mut self.lock().out)
    }

    fn lock(&self) -> MutexGuard<'_, OutletState<O>> {
        // A panic while holding the lock leaves frames half queued at worst; the
        // connection is still better served than poisoned.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<O> OutletState<O> {
    fn slot(&mut self, instance: InstanceId) -> Option<&mut Slot> {
        self.instances
            .iter_mut()
            .find(|(id, _)| *id == instance)
            .map(|(_, slot)| slot)
    }
}

impl<O: Outbox + Send> Outlet for ClientOutlet<O> {
    fn serializer(&self) -> Serializer {
        self.serializer
    }

    fn send(&self, frame: Frame) {
        self.lock().out.send(frame);
    }

    fn close(&self, close: Close) {
        self.lock().out.close(close);
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
                state.out.cut_off(Close::JOIN_BACKLOG_FULL, why);
            }
            None => {}
        }
    }
}

/// A recording [`Outlet`], for the tests of the layers that write into outlets.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;

    use serde_json::Value;

    use super::*;

    /// One call made to a [`RecordedOutlet`], with text frames decoded as JSON.
    #[derive(Debug, PartialEq)]
    pub(crate) enum Out {
        Send(Value),
        Close(Close),
        Joining(InstanceId),
        Joined(InstanceId, Value),
        Ended(InstanceId, Option<Value>),
        SendFrom(InstanceId, Value),
    }

    pub(crate) struct RecordedOutlet {
        serializer: Serializer,
        calls: Mutex<Vec<Out>>,
    }

    impl RecordedOutlet {
        pub(crate) fn new(serializer: Serializer) -> Self {
            RecordedOutlet {
                serializer,
                calls: Mutex::default(),
            }
        }

        /// The calls made since the last `take`.
        pub(crate) fn take(&self) -> Vec<Out> {
            std::mem::take(&mut self.calls.lock().unwrap())
        }

        fn record(&self, out: Out) {
            self.calls.lock().unwrap().push(out);
        }
    }

    /// A text frame's JSON; a binary frame reads as its length.
    pub(crate) fn json(frame: Frame) -> Value {
        match frame {
            Frame::Text(text) => serde_json::from_str(&text).unwrap(),
            Frame::Binary(bytes) => Value::from(bytes.len()),
        }
    }

    impl Outlet for RecordedOutlet {
        fn serializer(&self) -> Serializer {
            self.serializer
        }
        fn send(&self, frame: Frame) {
            self.record(Out::Send(json(frame)));
        }
        fn close(&self, close: Close) {
            self.record(Out::Close(close));
        }
        fn joining(&self, instance: InstanceId) {
            self.record(Out::Joining(instance));
        }
        fn joined(&self, instance: InstanceId, reply: Frame) {
            self.record(Out::Joined(instance, json(reply)));
        }
        fn ended(&self, instance: InstanceId, last: Option<Frame>) {
            self.record(Out::Ended(instance, last.map(json)));
        }
        fn send_from(&self, instance: InstanceId, frame: Frame) {
            self.record(Out::SendFrom(instance, json(frame)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    /// An outbox that records what reaches it.
    #[derive(Default)]
    struct Recorded {
        sent: Vec<Frame>,
        closed: Option<Close>,
        cut_off: Option<(Close, String)>,
    }

    impl Outbox for Recorded {
        fn send(&mut self, frame: Frame) {
            self.sent.push(frame);
        }
        fn close(&mut self, close: Close) {
            self.closed = Some(close);
        }
        fn cut_off(&mut self, close: Close, why: String) {
            self.cut_off = Some((close, why));
        }
    }

    fn text(s: &str) -> Frame {
        Frame::Text(s.into())
    }

    fn outlet(hold_limit: usize) -> ClientOutlet<Recorded> {
        ClientOutlet::new(Serializer::V2, Recorded::default(), hold_limit)
    }

    fn sent(outlet: &ClientOutlet<Recorded>) -> Vec<Frame> {
        outlet.with_outbox(|out| out.sent.clone())
    }

    #[test]
    fn the_join_reply_goes_first_then_what_was_held() {
        let outlet = outlet(10);
        let a = InstanceId::next();
        outlet.joining(a);
        outlet.send_from(a, text("push 1"));
        outlet.send(text("heartbeat reply"));
        outlet.send_from(a, text("push 2"));
        assert_eq!(
            sent(&outlet),
            [text("heartbeat reply")],
            "held while joining"
        );
        outlet.joined(a, text("join reply"));
        outlet.send_from(a, text("push 3"));
        assert_eq!(
            sent(&outlet),
            [
                text("heartbeat reply"),
                text("join reply"),
                text("push 1"),
                text("push 2"),
                text("push 3")
            ]
        );
    }

    #[test]
    fn nothing_goes_out_for_an_instance_after_its_end() {
        let outlet = outlet(10);
        let (a, b) = (InstanceId::next(), InstanceId::next());
        outlet.joining(a);
        outlet.joining(b);
        outlet.send_from(a, text("held, then dropped"));
        outlet.ended(a, Some(text("refusal")));
        outlet.send_from(a, text("late"));
        outlet.joined(a, text("late reply"));
        outlet.joined(b, text("b reply"));
        outlet.ended(b, None);
        outlet.send_from(b, text("after leave"));
        outlet.send_from(InstanceId::next(), text("never joined"));
        assert_eq!(sent(&outlet), [text("refusal"), text("b reply")]);
    }

    #[test]
    fn what_is_held_for_a_join_is_bounded() {
        let outlet = outlet(2);
        let a = InstanceId::next();
        outlet.joining(a);
        outlet.send_from(a, text("1"));
        outlet.send_from(a, text("2"));
        assert!(outlet.with_outbox(|out| out.cut_off.is_none()));
        outlet.send_from(a, text("3"));
        let (close, why) = outlet.with_outbox(|out| out.cut_off.clone()).unwrap();
        assert_eq!(close, Close::JOIN_BACKLOG_FULL);
        assert_eq!(why, "2 frames held for a join still in progress");
    }

    #[test]
    fn a_broadcast_this_client_cannot_read_is_not_delivered() {
        let encodes = Arc::new(AtomicU64::new(0));
        let v1 = ClientOutlet::new(Serializer::V1, Recorded::default(), 10);
        let a = InstanceId::next();
        v1.joining(a);
        v1.joined(a, text("reply"));
        let binary = Payload::Binary(Bytes::from_static(b"x"));
        let binary = BroadcastFrame::new("t", "e", binary, encodes.clone());
        assert!(!v1.deliver(a, &binary));
        let json = BroadcastFrame::new("t", "e", Payload::empty(), encodes);
        assert!(v1.deliver(a, &json));
        assert_eq!(sent(&v1).len(), 2);
        v1.close(Close::SHUTDOWN);
        assert_eq!(v1.with_outbox(|out| out.closed), Some(Close::SHUTDOWN));
    }
}
