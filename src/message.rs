//! The Phoenix message model, independent of any serializer or transport.
//!
//! Owns the shapes that travel between the wire and the session: [`Message`] (client to
//! server), [`PhxReply`], [`Push`] and [`Broadcast`] (server to client), [`Payload`] and
//! [`Ref`], the opaque reference a client chooses. Must not know how any of them are
//! encoded.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;

/// Topic of the socket itself: heartbeats only, never joinable.
pub const PHOENIX_TOPIC: &str = "phoenix";

/// Reserved event names of the protocol.
pub mod event {
    pub const JOIN: &str = "phx_join";
    pub const LEAVE: &str = "phx_leave";
    pub const REPLY: &str = "phx_reply";
    pub const CLOSE: &str = "phx_close";
    pub const ERROR: &str = "phx_error";
    pub const HEARTBEAT: &str = "heartbeat";
}

/// A client-chosen reference (`ref` or `join_ref`), echoed back exactly as received.
///
/// phoenix.js sends decimal strings and compares them with `===`, so a string must come
/// back a string; odd clients send numbers, which must come back numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Str(Arc<str>),
    Num(serde_json::Number),
}

impl Ref {
    /// The textual form, as written into a V2 binary frame.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Ref::Str(s) => std::borrow::Cow::Borrowed(s),
            Ref::Num(n) => std::borrow::Cow::Owned(n.to_string()),
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl From<&str> for Ref {
    fn from(s: &str) -> Self {
        Ref::Str(Arc::from(s))
    }
}

/// A message payload: JSON, or raw bytes (V2 binary frames only).
#[derive(Clone, Debug)]
pub enum Payload {
    Json(Value),
    Binary(Bytes),
    /// JSON already encoded, written as it is: for payloads the server serializes once
    /// for many clients (presence), so no value tree is made for them. Never decoded
    /// from a client.
    Encoded(Arc<RawValue>),
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Payload::Json(a), Payload::Json(b)) => a == b,
            (Payload::Binary(a), Payload::Binary(b)) => a == b,
            (Payload::Encoded(a), Payload::Encoded(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

impl Payload {
    /// The empty object, the default payload and reply response.
    pub fn empty() -> Self {
        Payload::Json(Value::Object(Default::default()))
    }

    /// The JSON value of a decoded payload (`None` for binary and pre-encoded ones).
    pub fn as_json(&self) -> Option<&Value> {
        match self {
            Payload::Json(v) => Some(v),
            Payload::Binary(_) | Payload::Encoded(_) => None,
        }
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::Json(v)
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload::Binary(bytes)
    }
}

/// A decoded client-to-server message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub join_ref: Option<Ref>,
    pub msg_ref: Option<Ref>,
    pub topic: String,
    pub event: String,
    pub payload: Payload,
}

/// Status of a reply: phoenix.js fires the hooks registered for exactly this string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }
}

/// `phx_reply` to one client message. (What a channel answers, before it becomes one of
/// these, is the application's [`Reply`](crate::Reply).)
#[derive(Clone, Debug, PartialEq)]
pub struct PhxReply<'a> {
    pub join_ref: Option<&'a Ref>,
    pub msg_ref: Option<&'a Ref>,
    pub topic: &'a str,
    pub status: Status,
    pub response: &'a Payload,
}

/// A server-initiated message to one channel instance (carries its join ref).
///
/// `msg_ref` is `None` for ordinary pushes; `phx_close` and `phx_error` carry the join ref
/// there too. A binary push has no ref field on the wire, so it must be `None` then.
#[derive(Clone, Debug, PartialEq)]
pub struct Push<'a> {
    pub join_ref: Option<&'a Ref>,
    pub msg_ref: Option<&'a Ref>,
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a Payload,
}

/// A message to every subscriber of a topic: no refs at all.
#[derive(Clone, Debug, PartialEq)]
pub struct Broadcast<'a> {
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a Payload,
}
