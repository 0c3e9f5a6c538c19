//! fluxwire's default application: the `all` status channel, chat rooms and presence,
//! as docs/contract.md describes them, on the framework in `fluxwire`.
//!
//! [`user_socket`] admits users by name; [`status`] serves `all` from one status store;
//! [`room`] serves `room:NAME`, one history store per room; [`message`] is the chat
//! message both share. [`app`] wires them for the endpoint.

pub mod message;
pub mod room;
pub mod status;
pub mod user_socket;

use actix::Arbiter;
use fluxwire::{Presence, Router, Services, SocketHandler};

/// The application: the stores on a thread of their own, and the channels' routes.
pub fn app(services: &Services) -> SocketHandler {
    // One thread for every store: no store work on the connection workers, and stores
    // never wait on each other.
    let stores = Arbiter::new().handle();
    let presence = Presence::new(&services.pubsub);
    let status = status::StatusStore::start(&stores, &services.pubsub);
    let rooms = room::Rooms::new(stores, &services.pubsub);
    let router = Router::new()
        .channel(status::TOPIC, {
            let presence = presence.clone();
            move |_topic: &str| status::StatusChannel::new(status.clone(), presence.clone())
        })
        .channel("room:*", move |topic: &str| {
            room::RoomChannel::new(topic, &rooms, presence.clone())
        });
    SocketHandler::new(user_socket::UserSocket, router)
}
