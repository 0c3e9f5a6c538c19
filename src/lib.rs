//! fluxwire: a Phoenix Channels server on actix. phoenix.js, and every other Phoenix
//! Channels client, connects to it unchanged.
//!
//! A client's frame travels transport → serializer → session → channel → pubsub → every
//! member's outlet → back out through its transport. The modules below are layers,
//! declared bottom to top: each one uses only modules declared before it, never one
//! after it (`tests/layers.rs` checks every `crate::` path in `src/` against this order),
//! so each file reads with only what lies below it. Types that cross a boundary belong
//! to the lower layer; the upper one implements or handles them. The wire and the
//! default application's contract are described in `docs/`.

mod logline; // client text in log lines, escaped and cut; each connection's warning budget
mod rate; // token buckets: how many messages and joins one connection may send
mod close; // every way a connection is closed: code and reason, named once
mod message; // the Phoenix message model: Message, PhxReply, Push, Broadcast, Payload, Ref
mod doc; // JSON documents changed by recorded RFC 6902 operations (JSON Pointer, Tx)
mod serializer; // V1/V2 frames <-> messages; a broadcast encoded once per version
mod heap; // returns freed heap to the OS after bursts
mod panic; // a panic in application code becomes its message
mod socket; // the application's `connect`: Params, Assigns, ConnectInfo
mod agent; // state actors like Elixir's Agent, for the application's stores
mod storage; // the data dir: persistent stores and logs in redb, one writer thread
mod outlet; // one client's ordered way out; the Outbox a transport implements
mod pubsub; // topic -> subscribers; fan-out of pre-encoded broadcasts into outlets
mod presence; // who is on a topic: presence_state, coalesced presence_diff
mod cluster; // several nodes as one: the engine boundary, and Redis behind it
mod channel; // the Channel API, and the actor that runs one joined topic
mod router; // topic pattern -> channel
mod store; // versioned JSON stores changed by recorded RFC 6902 patches; store:NAME
mod registry; // live connections, to close them from outside
mod session; // one connection's protocol state: joins, refs, heartbeats, routing
mod transport; // admission; WebSocket and long-poll; the listener that picks one
mod config; // flags and environment variables
mod endpoint; // HTTP wiring and the server's life
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing; // entry points for the fuzz targets in fuzz/; not an API

pub use agent::{Agent, AgentError, WeakAgent};
pub use channel::{
    Channel, ChannelContext, ChannelRef, JoinParams, Pusher, Reason, Reply, ReplyFuture,
    Subscription,
};
pub use close::Close;
pub use cluster::{ClusterConfig, ClusterStatus, ClusterUrl};
pub use config::{Config, SecretKeyBase, Transports};
pub use doc::{pointer as json_pointer, PatchError, Tx};
pub use endpoint::{Endpoint, RunningServer, Services, SocketHandler};
pub use message::Payload;
pub use outlet::InstanceId;
pub use presence::Presence;
pub use pubsub::{PubSub, Stats as PubSubStats};
pub use registry::Connections;
pub use router::Router;
pub use socket::{Assigns, ConnectInfo, Params, Refused, Socket};
pub use storage::{LogTail, Storage, StorageError};
pub use store::{
    Action, Committed, JoinHook, Rejected, Since, Snapshot, Store, StoreChannel, StoreError,
    StoreSpec, StoreStats, Stores,
};
pub use transport::door::AddressSet;
pub use transport::origin::{AllowedOrigin, HostAllow, OriginPolicy};

/// The README's examples, compiled as doctests so that they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
