//! fluxwire's default application: the `all` status channel, chat rooms and presence,
//! as docs/contract.md describes them, on the framework in `fluxwire`.
//!
//! [`user_socket`] admits users by name; [`status`] serves `all` from one status store;
//! [`room`] serves `room:NAME`, one history store per room; [`message`] is the chat
//! message both share; [`todos`] is the `store:todos` store and [`status_store`] the
//! `store:status` mirror of `all`. [`app`] wires them for the endpoint, with
//! [`AppConfig`] (the application's own flags) or its defaults.

pub mod message;
pub mod room;
pub mod status;
pub mod status_store;
pub mod todos;
pub mod user_socket;

use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use clap::Args;
use fluxwire::{JoinHook, Presence, Router, Services, SocketHandler};

/// The application's flags, beside the server's (`fluxwire::Config`).
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct AppConfig {
    /// Most chat rooms (`room:NAME`) live at once. Joining one more is refused with
    /// `too many rooms` until an empty room goes.
    #[arg(long, env = "FLUXWIRE_MAX_ROOMS", default_value_t = 1000, value_parser = at_least_one)]
    pub max_rooms: u64,

    /// Drop a chat room, its history with it, once it has had no member for this many
    /// milliseconds. A room that never had a message goes with its last member.
    #[arg(long, env = "FLUXWIRE_ROOM_IDLE_TIMEOUT_MS", default_value_t = 300_000, value_parser = at_least_one)]
    pub room_idle_timeout_ms: u64,
}

/// A whole number of 1 or more.
fn at_least_one(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of 1 or more".to_owned()),
    }
}

impl Default for AppConfig {
    /// The flags' defaults.
    fn default() -> Self {
        AppConfig {
            max_rooms: 1000,
            room_idle_timeout_ms: 300_000,
        }
    }
}

impl AppConfig {
    fn room_limits(&self) -> room::RoomLimits {
        room::RoomLimits {
            max_rooms: usize::try_from(self.max_rooms).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_millis(self.room_idle_timeout_ms),
        }
    }
}

/// The application with the default settings.
pub fn app(services: &Services) -> SocketHandler {
    app_with(AppConfig::default())(services)
}

/// The application with `config`, for `Endpoint::new`.
pub fn app_with(config: AppConfig) -> impl FnOnce(&Services) -> SocketHandler + Send + 'static {
    move |services| {
        // One thread for every store: no store work on the connection workers, and stores
        // never wait on each other.
        let stores = Arbiter::new().handle();
        let presence = Presence::new(&services.pubsub);
        let mirror = status_store::StatusMirror::start(&services.stores, &stores);
        let status = status::StatusStore::start(&stores, &services.pubsub, mirror);
        services.stores.start_in(&stores, todos::spec());
        let rooms = room::Rooms::new(
            stores,
            &services.pubsub,
            config.room_limits(),
            services.storage.clone(),
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        app: AppConfig,
    }

    #[test]
    fn defaults_are_the_flags_defaults() {
        assert_eq!(Flags::parse_from(["fluxwire"]).app, AppConfig::default());
    }

    #[test]
    fn flags() {
        let flags = Flags::parse_from([
            "fluxwire",
            "--max-rooms",
            "3",
            "--room-idle-timeout-ms",
            "250",
        ]);
        assert_eq!(
            flags.app.room_limits(),
            room::RoomLimits {
                max_rooms: 3,
                idle_timeout: Duration::from_millis(250)
            }
        );
        for bad in [["--max-rooms", "0"], ["--room-idle-timeout-ms", "0"]] {
            assert!(Flags::try_parse_from(["fluxwire", bad[0], bad[1]]).is_err());
        }
    }
}
