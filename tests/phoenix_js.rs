//! The framework through the official phoenix.js client (tests/js/core.test.mjs):
//! join, push and reply, broadcast between clients, binary, heartbeat, leave, crash.

mod support;

#[test]
fn phoenix_js_client() {
    let server = support::start();
    let url = format!("ws://{}/socket", server.addr());
    support::run_node_tests("core.test.mjs", &url);
    server.stop();
}
