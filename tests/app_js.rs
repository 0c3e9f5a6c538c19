//! The default application ("all", "room:NAME", presence, connect refusals) through the
//! official phoenix.js client (tests/js/app.test.mjs), against the real app.

mod support;

#[test]
fn app_through_phoenix_js() {
    let server = support::start_app();
    let url = format!("ws://{}/socket", server.addr());
    support::run_node_tests("app.test.mjs", &url);
    server.stop();
}
