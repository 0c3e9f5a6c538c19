//! The fluxwire server: the default application on the fluxwire framework.

use std::process::ExitCode;

use clap::Parser;
use fluxwire::{Config, Endpoint};
use fluxwire_channels::AppConfig;

/// The server's flags and the default application's.
#[derive(Parser)]
#[command(
    name = "fluxwire",
    version,
    about = "A Phoenix Channels server in Rust: phoenix.js connects unchanged.",
    long_about = None
)]
struct Flags {
    /// The server's flags.
    #[command(flatten)]
    server: Config,
    /// The default application's flags.
    #[command(flatten)]
    app: AppConfig,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let Flags { server, app } = Flags::parse();
    let served = Endpoint::new(server, fluxwire_channels::app_with(app))
        .mount("/socket")
        .mount("/status")
        .run();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fluxwire: {error}");
            ExitCode::FAILURE
        }
    }
}
