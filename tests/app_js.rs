//! The default application ("all", "room:NAME", presence, connect refusals) through the
//! official phoenix.js client (tests/js/app.test.mjs), against the real app.

mod support;

fn start_app() -> fluxwire::RunningServer {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = fluxwire::Config::ephemeral();
    config.static_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    fluxwire::Endpoint::new(config, fluxwire_channels::app)
        .mount("/socket")
        .mount("/status")
        .spawn()
        .expect("the app server starts")
}

#[test]
fn app_through_phoenix_js() {
    let server = start_app();
    let url = format!("ws://{}/socket", server.addr());
    support::run_node_tests("app.test.mjs", &url);
    server.stop();
}
