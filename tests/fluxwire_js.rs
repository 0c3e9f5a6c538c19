//! static/fluxwire.js, the client module, and its Redux binding (with the real `redux`
//! package) in Node, against the real app (tests/js/fluxwire.test.mjs and
//! tests/js/redux.test.mjs).

mod support;

fn run(file: &str, required: &[&str]) {
    let server = support::start_app();
    let url = format!("ws://{}/socket", server.addr());
    let http = format!("http://{}", server.addr());
    support::run_node_tests_with_env(
        file,
        &[("FLUXWIRE_URL", &url), ("FLUXWIRE_HTTP", &http)],
        required,
    );
    server.stop();
}

#[test]
fn the_client_module_in_node() {
    run("fluxwire.test.mjs", &[]);
}

#[test]
fn the_redux_binding_with_redux() {
    run("redux.test.mjs", &["redux"]);
}
