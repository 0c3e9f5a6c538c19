//! The long-poll transport through the official phoenix.js client: the test app
//! (tests/js/longpoll.test.mjs: join, pushes, broadcasts with WebSocket clients, forged
//! tokens, expiry, refusal, and the `longPollFallbackMs` fallback against a server
//! without WebSocket), and the default app (tests/js/longpoll_app.test.mjs).

mod support;

use fluxwire::Config;
use fluxwire::Transports;

/// Short long-poll timings, so that expiry takes seconds (the JS tests assume these).
fn short_timings() -> Config {
    let mut config = Config::ephemeral();
    config.longpoll_window_ms = 1_000;
    config.longpoll_timeout_ms = 2_000;
    config
}

#[test]
fn phoenix_js_long_poll() {
    let server = support::start_with(short_timings());
    let mut config = short_timings();
    config.transports = Transports::parse("longpoll").expect("a valid list");
    let no_websocket = support::start_with(config);
    let url = format!("ws://{}/socket", server.addr());
    let no_ws_url = format!("ws://{}/socket", no_websocket.addr());
    support::run_node_tests_with_env(
        "longpoll.test.mjs",
        &[("FLUXWIRE_URL", &url), ("FLUXWIRE_NOWS_URL", &no_ws_url)],
        &["phoenix", "ws"],
    );
    server.stop();
    no_websocket.stop();
}

#[test]
fn phoenix_js_long_poll_default_app() {
    let server = support::start_app_with(short_timings());
    let url = format!("ws://{}/socket", server.addr());
    support::run_node_tests_with_env(
        "longpoll_app.test.mjs",
        &[("FLUXWIRE_URL", &url)],
        &["phoenix", "ws"],
    );
    server.stop();
}
