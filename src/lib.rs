//! fluxwire: a Phoenix Channels server on actix. phoenix.js, and every other Phoenix
//! Channels client, connects to it unchanged.
//!
//! The data path, one module each:
//! [`transport`] (WebSocket) → [`serializer`] (V1/V2) → [`session`] (one per connection)
//! → [`channel`] (one actor per joined topic) → [`pubsub`] → [`outlet`] (each client's
//! ordered way out, written from any thread) → back to the transport.
//! Around it: [`endpoint`] (HTTP wiring and the server's life), [`router`] (topic →
//! channel), [`socket`] (the application's `connect`), [`presence`], [`registry`]
//! (live sessions), [`agent`] (state actors for the application's stores), [`config`]
//! and [`message`] (the protocol's model); `heap` returns freed memory after bursts.

pub mod agent;
pub mod channel;
pub mod config;
pub mod endpoint;
mod heap;
pub mod message;
pub mod outlet;
pub mod presence;
pub mod pubsub;
pub mod registry;
pub mod router;
pub mod serializer;
pub mod session;
pub mod socket;
pub mod transport;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use agent::{Agent, AgentError};
pub use channel::{
    Channel, ChannelContext, ChannelRef, JoinParams, Pusher, Reason, Reply, Subscription,
};
pub use config::Config;
pub use endpoint::{Endpoint, RunningServer, Services, SocketHandler};
pub use message::Payload;
pub use presence::Presence;
pub use pubsub::PubSub;
pub use registry::Sessions;
pub use router::Router;
pub use socket::{Assigns, ConnectInfo, Params, Refused, Socket};

/// The README's examples, compiled as doctests so that they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
