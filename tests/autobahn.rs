//! The WebSocket layer against the Autobahn|Testsuite cases 1 to 11 (framing, ping/pong,
//! reserved bits, opcodes, fragmentation, UTF-8, close handshake, limits), driven by
//! `kosoku` against an echo mount that uses the same adapter as the Phoenix sockets.
//! kosoku must exit 0, and the verdicts must be exactly the README's: 296 OK, the 3
//! INFORMATIONAL cases in [`INFORMATIONAL`], and the 2 NON-STRICT ones (with an OK
//! close) named in [`FAIL_FAST_INSIDE_A_FRAME`].

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use fluxwire::Config;
use serde_json::Value;

/// Pins the kosoku version the README's count was measured with.
const REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/autobahn-requirements.txt"
);

/// Cases that send invalid UTF-8 byte by byte inside one frame; "strict" would fail the
/// connection before that frame is complete. actix-http's codec hands over whole frames
/// only, so fluxwire fails at the end of that frame: NON-STRICT (a pass in Autobahn's
/// terms, conformant to RFC 6455), with the right close code (1007).
const FAIL_FAST_INSIDE_A_FRAME: [&str; 2] = ["6.4.3", "6.4.4"];

fn ensure_kosoku() {
    let installed = Command::new("kosoku").arg("--help").output();
    if installed.is_ok_and(|out| out.status.success()) {
        return;
    }
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(REQUIREMENTS)
        .status()
        .expect("python3 runs (Python 3 with pip is needed for the Autobahn tests)");
    assert!(status.success(), "pip install -r {REQUIREMENTS} failed");
}

/// Cases where Autobahn itself only informs (7.1.6: a large message then a close then a
/// ping; 7.13.1 and 7.13.2: close codes outside the ranges it judges).
const INFORMATIONAL: [&str; 3] = ["7.1.6", "7.13.1", "7.13.2"];

/// Cases 1 to 11 of Autobahn|Testsuite: what the README states.
const CASES: usize = 301;

#[test]
fn autobahn_cases_1_to_11() {
    ensure_kosoku();
    let mut config = Config::ephemeral();
    // Case 9 echoes messages of up to 16 MiB, both ways; the limits themselves are
    // tested in protocol.rs.
    config.max_frame_size = 20 * 1024 * 1024;
    config.max_outbound_bytes = 64 * 1024 * 1024;
    let server = support::start_with(config);
    let reports = Reports::new();
    let output = Command::new("kosoku")
        .args(["-x", "12.*", "-x", "13.*", "-p", "4", "-o"])
        .arg(&reports.0)
        .arg(format!("ws://{}/echo", server.addr()))
        .output()
        .expect("kosoku runs");
    server.stop();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kosoku failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(reports.0.join("index.json")).expect("kosoku wrote index.json"),
    )
    .expect("index.json is JSON");
    let mut by_verdict: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cases in index.as_object().expect("agents").values() {
        for (case, result) in cases.as_object().expect("cases") {
            let behavior = result["behavior"].as_str().unwrap_or("?");
            let close = result["behaviorClose"].as_str().unwrap_or("?");
            by_verdict
                .entry(format!("{behavior}/{close}"))
                .or_default()
                .push(case.clone());
        }
    }
    let counts: Vec<String> = by_verdict
        .iter()
        .map(|(verdict, cases)| format!("{verdict}: {}", cases.len()))
        .collect();
    println!("Autobahn 1-11: {}", counts.join(", "));

    // Exactly what the README states: 296 OK, 3 INFORMATIONAL, 2 NON-STRICT (with an
    // OK close), and nothing else.
    let cases = |verdict: &str| -> Vec<&str> {
        let mut cases: Vec<&str> = by_verdict
            .get(verdict)
            .map(|cases| cases.iter().map(String::as_str).collect())
            .unwrap_or_default();
        cases.sort_unstable();
        cases
    };
    assert_eq!(
        by_verdict.values().map(Vec::len).sum::<usize>(),
        CASES,
        "{counts:?}"
    );
    assert_eq!(
        cases("NON-STRICT/OK"),
        FAIL_FAST_INSIDE_A_FRAME,
        "{by_verdict:?}"
    );
    assert_eq!(
        cases("INFORMATIONAL/INFORMATIONAL"),
        INFORMATIONAL,
        "{by_verdict:?}"
    );
    assert_eq!(
        cases("OK/OK").len(),
        CASES - FAIL_FAST_INSIDE_A_FRAME.len() - INFORMATIONAL.len(),
        "{by_verdict:?}"
    );
    assert_eq!(by_verdict.len(), 3, "other verdicts: {by_verdict:?}");
}

/// kosoku's report folder, removed when the test passes (kept, and named, when it fails).
struct Reports(PathBuf);

impl Reports {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("fluxwire-autobahn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Reports(dir)
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kosoku's reports are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
