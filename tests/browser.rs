//! The demo page (static/) in a real browser: Playwright (tests/js/browser.test.mjs)
//! driving Debian's Chromium, two users against the real app.

mod support;

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
    let server = support::start_app();
    let http = format!("http://{}", server.addr());
    support::run_node_tests_with_env(
        "browser.test.mjs",
        &[("FLUXWIRE_HTTP", &http)],
        &["playwright-core"],
    );
    server.stop();
}
