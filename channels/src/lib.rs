//! fluxwire's default application: the `all` status channel, chat rooms and presence,
//! as docs/contract.md describes them, on the framework in `fluxwire`.
//!
//! [`user_socket`] admits users by name; [`status`] serves `all` from one status store;
//! [`room`] serves `room:NAME`, one history store per room; [`message`] is the chat
//! message both share; [`todos`] is the `store:todos` store and [`status_store`] the
//! `store:status` mirror of `all`. [`app`] wires them for the endpoint.

pub mod message;
pub mod room;
pub mod status;
pub mod status_store;
pub mod todos;
pub mod user_socket;

use std::sync::Arc;

use actix::Arbiter;
use fluxwire::{JoinHook, Presence, Router, Services, SocketHandler};

/// The application: the stores on a thread of their own, and the channels' routes.
pub fn app(services: &Services) -> SocketHandler {
    // One thread for every store: no store work on the connection workers, and stores
    // never wait on each other.
    let stores = Arbiter::new().handle();
    let presence = Presence::new(&services.pubsub);
    let mirror = status_store::StatusMirror::start(&services.stores, &stores);
    let status = status::StatusStore::start(&stores, &services.pubsub, mirror);
    services.stores.start_in(&stores, todos::spec());
    let rooms = room::Rooms::new(stores, &services.pubsub, services.storage.clone());
    let track: JoinHook = {
        let presence = presence.clone();
        Arc::new(move |ctx| drop(user_socket::track_user(ctx, &presence)))
    };
    let store_channels = services.stores.clone();
    let router = Router::new()
        .channel(status::TOPIC, {
            let presence = presence.clone();
            move |_topic: &str| status::StatusChannel::new(status.clone(), presence.clone())
        })
        .channel("room:*", move |topic: &str| {
            room::RoomChannel::new(topic, &rooms, presence.clone())
        })
        .channel("store:*", move |topic: &str| {
            store_channels.channel(topic).on_join(track.clone())
        });
    SocketHandler::new(user_socket::UserSocket, router)
}
