//! The fluxwire server: the default application on the fluxwire framework.

use clap::Parser;
use fluxwire::{Config, Endpoint};

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    Endpoint::new(config, fluxwire_channels::app)
        .mount("/socket")
        .mount("/status")
        .run()
}
