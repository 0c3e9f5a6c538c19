//! The demo page (static/) in a real browser: Playwright (tests/js/browser.test.mjs)
//! driving Debian's Chromium, two users against the real app.

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
fn demo_page_in_chromium() {
    if !std::path::Path::new("/usr/bin/chromium").exists() && std::env::var_os("CI").is_none() {
        // Written past libtest's output capture: a skipped browser test must be noticed.
        // (With CI set, browser.test.mjs fails instead.)
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! /usr/bin/chromium not found: the browser test is SKIPPED. \
             Install the Debian package chromium (apt-get install -y chromium) to run it. !!!\n"
        );
    }
    let server = start_app();
    let http = format!("http://{}", server.addr());
    support::run_node_tests_with_env(
        "browser.test.mjs",
        &[("FLUXWIRE_HTTP", &http)],
        &["playwright-core"],
    );
    server.stop();
}
