//! Stores over the wire (`store:todos`, `store:status`, `GET /stores/NAME`) through the
//! official phoenix.js client (tests/js/stores.test.mjs), against the real app.

mod support;

#[test]
fn stores_through_phoenix_js() {
    let server = support::start_app();
    let url = format!("ws://{}/socket", server.addr());
    let http = format!("http://{}", server.addr());
    support::run_node_tests_with_env(
        "stores.test.mjs",
        &[("FLUXWIRE_URL", &url), ("FLUXWIRE_HTTP", &http)],
        &[],
    );
    server.stop();
}
