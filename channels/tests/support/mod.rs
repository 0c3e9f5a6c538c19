//! Shared by the tests of the server binary: the binary started on a free port, and its
//! log read line by line while it runs.
#![allow(dead_code)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Every line the binary has logged so far.
pub type Log = Arc<Mutex<Vec<String>>>;

/// The binary on a free port, serving the demo page, logging at `info` to a pipe the
/// test reads; a test adds its own flags and environment before [`Server::start`].
pub fn fluxwire() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxwire"));
    command
        .args(["--port", "0", "--static-dir", "../static"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running binary: its process, the address it listens on, and its log.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: Log,
    reader: JoinHandle<()>,
}

impl Server {
    /// Spawns `command` and waits until it logs where it listens.
    pub async fn start(mut command: Command) -> Server {
        let mut child = command.spawn().expect("the fluxwire binary starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let log = Log::default();
        let reader = tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line);
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            log,
            reader,
        };
        let listening = server.wait_for("fluxwire listening on http://").await;
        let (_, addr) = listening.split_once("http://").unwrap();
        server.addr = addr.trim().to_owned();
        server
    }

    /// The first log line containing `text`, waiting up to [`TIMEOUT`] for it.
    pub async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(line) = self.lines_with(text).into_iter().next() {
                return line;
            }
            if Instant::now() > deadline {
                let log = self.log.lock().unwrap();
                let last = &log[log.len().saturating_sub(5)..];
                panic!(
                    "no log line with {text:?} within {TIMEOUT:?}; {} lines, the last:\n{}",
                    log.len(),
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log lines containing `text` so far.
    pub fn lines_with(&self, text: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// Stops the server with SIGTERM, waits for it to exit 0, and returns its whole log.
    pub async fn stop(mut self) -> Vec<String> {
        signal(&self.child, "-TERM").await;
        let status = tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "exit status {status}");
        tokio::time::timeout(TIMEOUT, self.reader)
            .await
            .expect("the log ends")
            .unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Sends `signal` (as `kill` takes it, e.g. `-TERM`) to `child`.
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill").args([signal, &pid]).status().await;
    assert!(killed.unwrap().success(), "kill {signal} {pid}");
}
