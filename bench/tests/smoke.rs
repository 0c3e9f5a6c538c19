//! Every mode at tiny scale against the real default application, started in-process:
//! the runs must pass (no failure, no loss, no order violation) with sane figures.
//! Also the binary: its JSON line, its exit codes, and its refusal of non-loopback
//! targets.

use std::process::Command;
use std::sync::Mutex;

use clap::Parser;
use fluxwire_bench::cli::Cli;
use fluxwire_bench::report::Outcome;
use serde_json::Value;

/// One mode at a time: they share two cores with the server.
static SERIAL: Mutex<()> = Mutex::new(());

fn server() -> fluxwire::RunningServer {
    server_with(fluxwire::Config::ephemeral())
}

fn server_with(config: fluxwire::Config) -> fluxwire::RunningServer {
    fluxwire::Endpoint::new(config, fluxwire_channels::app)
        .mount("/socket")
        .spawn()
        .expect("the server starts")
}

fn url(server: &fluxwire::RunningServer) -> String {
    format!("ws://{}/socket/websocket", server.addr())
}

/// Runs the tool's library on `args` (split at spaces) against a fresh server.
fn run(args: &str) -> Outcome {
    run_on(fluxwire::Config::ephemeral(), args)
}

/// Runs the tool's library on `args` against a fresh server with `config`.
fn run_on(config: fluxwire::Config, args: &str) -> Outcome {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = server_with(config);
    let argv = format!(
        "fluxwire-bench {args} --url {} --server-pid {} --sources 3",
        url(&server),
        std::process::id()
    );
    let cli = Cli::try_parse_from(argv.split_whitespace()).expect("valid arguments");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime
        .block_on(fluxwire_bench::run(&cli))
        .expect("the run starts");
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    server.stop();
    println!("{}{}", outcome.human(), outcome.json());
    outcome
}

fn num(outcome: &Outcome, key: &str) -> f64 {
    outcome
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing or not a number: {}", outcome.json()))
}

fn assert_ok(outcome: &Outcome) {
    assert!(outcome.ok(), "problems: {:?}", outcome.problems);
    let json = outcome.json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["problems"], serde_json::json!([]));
}

#[test]
fn connect() {
    let o = run("connect --connections 200 --per-room 50 --concurrency 50 --hold-secs 1");
    assert_ok(&o);
    assert_eq!(num(&o, "joined"), 200.0);
    assert_eq!(num(&o, "failed"), 0.0);
    assert_eq!(num(&o, "rooms"), 4.0);
    assert!(num(&o, "joins_per_sec") > 0.0);
    assert!(num(&o, "presence_state_frames") >= 200.0);
    assert!(num(&o, "rss_settled_bytes") > 0.0);
    assert!(num(&o, "rss_peak_bytes") >= num(&o, "rss_baseline_bytes"));
    assert!(o.get("rss_per_connection_bytes").unwrap().is_number());
    assert_eq!(o.json()["join_latency_us"]["count"], 200);
    assert!(num(&o, "join_tool_cpu_pct") >= 0.0);
}

#[test]
fn fanout() {
    let o = run("fanout --members 100 --messages 3 --interval-ms 200");
    assert_ok(&o);
    assert_eq!(num(&o, "joined"), 100.0);
    assert_eq!(num(&o, "loss"), 0.0);
    assert_eq!(num(&o, "publish_ok"), 3.0);
    let json = o.json();
    assert_eq!(json["time_to_last_us"]["complete_messages"], 3);
    assert!(json["time_to_last_us"]["median"].as_u64().unwrap() > 0);
    assert_eq!(json["delivery_latency_us"]["count"], 300);
    // Every member sees at least its own join in a diff...
    let diffs = num(&o, "presence_diffs_during_joins");
    assert!(diffs >= 100.0, "{diffs} presence_diff frames");
    // ...and no storm: diffs are coalesced per topic, at most one per 25 ms window
    // (README, BENCHMARKS.md), so no member can receive more than there were windows
    // from the first join to one window after the last; one more window is slack.
    // Uncoalesced, each member gets one diff per later join: ~N²/2, 4,950 for 100.
    let windows = num(&o, "joins_elapsed_us") / 25_000.0 + 2.0;
    assert!(
        diffs <= 100.0 * windows,
        "{diffs} presence_diff frames for 100 members joining over {} windows of 25 ms: \
         more than one per member per window, so not coalesced",
        windows - 2.0
    );
}

#[test]
fn throughput() {
    let o = run("throughput --subscribers 50 --rooms 2 --publishers 2 --duration-secs 2");
    assert_ok(&o);
    assert!(num(&o, "deliveries") > 0.0);
    assert_eq!(num(&o, "deliveries"), num(&o, "expected_deliveries"));
    // 25 subscribers in each publisher's room.
    assert_eq!(num(&o, "expected_deliveries"), num(&o, "acked") * 25.0);
    assert_eq!(num(&o, "loss"), 0.0);
    assert_eq!(num(&o, "order_violations"), 0.0);
    assert!(num(&o, "deliveries_per_sec") > 0.0);
    assert!(o.json()["latency_us"]["p99"].as_u64().unwrap() > 0);
}

#[test]
fn throughput_at_a_rate() {
    let o =
        run("throughput --subscribers 20 --rooms 2 --publishers 2 --duration-secs 2 --rate 100");
    assert_ok(&o);
    // 2 publishers × ~200 messages × 10 subscribers each.
    let acked = num(&o, "acked");
    assert!((300.0..=402.0).contains(&acked), "{acked}");
    assert_eq!(num(&o, "deliveries"), acked * 10.0);
}

#[test]
fn churn() {
    let o = run("churn --rate 20 --duration-secs 3 --watchers 4 --settle-secs 1");
    assert_ok(&o);
    assert_eq!(num(&o, "cycles_started"), 60.0);
    assert_eq!(num(&o, "cycles_completed"), 60.0);
    assert_eq!(num(&o, "errors"), 0.0);
    assert_eq!(num(&o, "posted"), 60.0);
    assert_eq!(o.json()["presence_exact"], true);
    assert_eq!(num(&o, "watcher_message_loss"), 0.0);
    assert!(num(&o, "rss_end_bytes") > 0.0);
}

#[test]
fn slow_consumer() {
    // The server cuts a client off once the kernel's buffers are full (loopback lets the
    // server's send buffer grow to ~4 MiB: with the client's, ~1,900 of these messages)
    // and more than its outbound bound waits in its queue. So a small bound, and a volume
    // well above what the buffers hold: 3,000 messages of 2,000 characters, 1.5 s at
    // 2,000 a second on a quiet machine. A volume, not a duration: a busy machine takes
    // them more slowly (3 s published as few as ~700 there, which the buffers held).
    let mut config = fluxwire::Config::ephemeral();
    config.max_outbound_bytes = 64 * 1024;
    let o = run_on(
        config,
        "slow-consumer --members 5 --rate 2000 --messages 3000 --duration-secs 30 \
         --payload-bytes 2000",
    );
    // The server closed the slow member (the mode fails when it did not see that), and
    // the other members did not suffer.
    assert_ok(&o);
    assert_eq!(num(&o, "acked"), 3000.0);
    assert_eq!(num(&o, "loss"), 0.0);
    assert_eq!(num(&o, "order_violations"), 0.0);
    assert_eq!(num(&o, "joined"), 4.0);
    assert!(num(&o, "deliveries") > 0.0);
    assert_eq!(num(&o, "deliveries"), num(&o, "acked") * 4.0);
    assert!(num(&o, "rss_max_bytes") > 0.0);
    let json = o.json();
    assert_eq!(json["slow_closed_by_server"], true);
    // It was cut off, not served everything...
    assert!(
        num(&o, "slow_drained_messages") < num(&o, "acked"),
        "the slow member got every message"
    );
    // ...and its stream ended: with the 1008 close frame, or, when the server's grace
    // for that frame ran out before the drain reached it, without one.
    let end = &json["slow_end"];
    assert!(
        *end == serde_json::json!({"how": "close_frame", "code": 1008})
            || *end == serde_json::json!({"how": "eof"}),
        "the slow member's stream ended with {end}"
    );
}

#[test]
fn stores() {
    for store in ["", " --store"] {
        let o = run(&format!("stores --scenario status --users 60{store}"));
        assert_ok(&o);
        assert_eq!(num(&o, "current"), 60.0, "every member counts every user");
        let kind = if store.is_empty() {
            "bytes_status_users"
        } else {
            "bytes_store_status_join_replies"
        };
        assert!(num(&o, kind) > 0.0, "{kind}");
    }
    let o = run("stores --scenario fanout --members 50 --actions 3 --interval-ms 50");
    assert_ok(&o);
    assert_eq!(num(&o, "loss"), 0.0);
    let o = run("stores --scenario actions --members 20 --duration-secs 1 --window 10");
    assert_ok(&o);
    assert!(num(&o, "actions") > 0.0);
    assert_eq!(num(&o, "behind"), 0.0);
    // Coalesced: fewer patch frames per member than actions.
    assert!(num(&o, "frames_per_member") < num(&o, "actions"));
}

/// Runs the binary on `args` (split at spaces).
fn bench(args: &str) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxwire-bench"))
        .args(args.split_whitespace())
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn binary_prints_one_json_line_and_sets_its_exit_code() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = server();
    let url = url(&server);

    let (code, stdout, stderr) = bench(&format!(
        "connect --connections 20 --hold-secs 0 --url {url}"
    ));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["mode"], "connect");
    assert_eq!(last["ok"], true);
    assert_eq!(last["joined"], 20);
    assert!(stdout.contains("joins/s"), "{stdout}");
    assert!(stderr.contains("RLIMIT_NOFILE"), "{stderr}");

    let (code, stdout, _) = bench(&format!(
        "--json-only connect --connections 5 --hold-secs 0 --url {url}"
    ));
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");

    // A refused join is a failure: exit 1, with the reason.
    let (code, stdout, stderr) = bench(&format!(
        "fanout --members 3 --messages 1 --topic room:no! --url {url}"
    ));
    assert_eq!(code, 1, "{stdout}{stderr}");
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["ok"], false);
    assert_eq!(last["failed"], 3);
    assert!(stderr.contains("invalid topic"), "{stderr}");

    server.stop();
}

#[test]
fn refuses_non_loopback_targets() {
    for url in [
        "ws://192.0.2.1:4000/socket/websocket",
        "ws://example.com/socket/websocket",
    ] {
        let (code, stdout, stderr) = bench(&format!("connect --connections 1 --url {url}"));
        assert_eq!(code, 2, "{stdout}{stderr}");
        assert!(stderr.contains("only loopback targets"), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}
