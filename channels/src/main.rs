//! The fluxwire server: the default application on the fluxwire framework.

use std::process::ExitCode;

use clap::Parser;
use fluxwire::{Config, Endpoint};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    let served = Endpoint::new(config, fluxwire_channels::app)
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
