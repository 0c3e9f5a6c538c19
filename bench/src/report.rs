//! Figures and output: latency histograms (hdrhistogram, microseconds), counters that
//! many tasks bump without sharing a cache line, and the [`Outcome`] of a run: a few
//! human lines, the problems that make the exit code non-zero, and one JSON object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::proc::CpuUsage;

/// Highest latency recorded, in microseconds (larger values are clamped): one hour.
const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, shareable between tasks.
pub struct Latency {
    hist: Mutex<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            hist: Mutex::new(
                Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
            ),
        }
    }

    pub fn record(&self, micros: u64) {
        self.hist
            .lock()
            .expect("histogram lock")
            .saturating_record(micros.clamp(1, MAX_US));
    }

    pub fn record_all(&self, micros: &[u64]) {
        let mut hist = self.hist.lock().expect("histogram lock");
        for &value in micros {
            hist.saturating_record(value.clamp(1, MAX_US));
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let hist = self.hist.lock().expect("histogram lock");
        if hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: hist.len(),
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p99_9: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean().round() as u64,
        }
    }
}

/// A task's buffer in front of a shared [`Latency`]: one lock per 256 samples.
pub struct LocalLatency {
    shared: Arc<Latency>,
    buffer: Vec<u64>,
}

impl LocalLatency {
    pub fn new(shared: Arc<Latency>) -> Self {
        LocalLatency {
            shared,
            buffer: Vec::new(),
        }
    }

    pub fn record(&mut self, micros: u64) {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(256);
        }
        self.buffer.push(micros);
        if self.buffer.len() >= 256 {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.buffer.is_empty() {
            self.shared.record_all(&self.buffer);
            self.buffer.clear();
        }
    }
}

impl Drop for LocalLatency {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles in microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: u64,
}

impl LatencySummary {
    /// `p50 1.2 ms, p90 …` for the human summary.
    pub fn human(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p99_9),
            ms(self.max),
            self.count
        )
    }
}

/// Microseconds as a short human duration.
pub fn ms(micros: u64) -> String {
    if micros >= 10_000_000 {
        format!("{:.1}s", micros as f64 / 1e6)
    } else if micros >= 1_000 {
        format!("{:.1}ms", micros as f64 / 1e3)
    } else {
        format!("{micros}µs")
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `server RSS: baseline 6.1 MiB, peak 9.0 MiB, end 7.2 MiB{suffix}` for the human
/// summary: the figures in order, or "not measured" when any is missing.
pub fn rss_line(figures: &[(&str, Option<u64>)], suffix: &str) -> String {
    let mut parts = Vec::with_capacity(figures.len());
    for &(name, bytes) in figures {
        match bytes {
            Some(bytes) => parts.push(format!("{name} {}", mib(bytes))),
            None => return "server RSS: not measured (no --server-pid)".to_owned(),
        }
    }
    format!("server RSS: {}{suffix}", parts.join(", "))
}

/// One counter per cache line, so that many tasks can count without contention;
/// task `i` bumps slot `i % len`.
pub struct Counters {
    slots: Vec<Padded>,
}

#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

impl Counters {
    pub fn new(len: usize) -> Arc<Self> {
        Arc::new(Counters {
            slots: (0..len.max(1)).map(|_| Padded::default()).collect(),
        })
    }

    pub fn add(&self, slot: usize, n: u64) {
        self.slots[slot % self.slots.len()]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// The result of a run.
pub struct Outcome {
    pub mode: &'static str,
    /// The human summary, a few lines.
    pub lines: Vec<String>,
    /// Why the run failed (loss, failures, order violations); empty when it passed.
    pub problems: Vec<String>,
    json: Map<String, Value>,
}

impl Outcome {
    pub fn new(mode: &'static str) -> Self {
        Outcome {
            mode,
            lines: Vec::new(),
            problems: Vec::new(),
            json: Map::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Sets a JSON field.
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        self.json.insert(
            key.to_owned(),
            serde_json::to_value(value).expect("figures serialize"),
        );
    }

    /// Sets `{key}_tool_cpu_pct`, `{key}_server_cpu_pct` and `{key}_wall_secs`.
    pub fn set_cpu(&mut self, key: &str, cpu: &CpuUsage) {
        self.set(&format!("{key}_wall_secs"), round3(cpu.wall_secs));
        self.set(&format!("{key}_tool_cpu_pct"), round1(cpu.tool_pct));
        self.set(&format!("{key}_server_cpu_pct"), cpu.server_pct.map(round1));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key)
    }

    /// Every figure, with `mode`, `ok` and `problems`, as one JSON object.
    pub fn json(&self) -> Value {
        let mut json = Map::new();
        json.insert("mode".into(), Value::from(self.mode));
        json.insert("ok".into(), Value::from(self.ok()));
        json.insert("problems".into(), Value::from(self.problems.clone()));
        json.extend(self.json.clone());
        Value::Object(json)
    }

    /// The human text: the summary, then the verdict.
    pub fn human(&self) -> String {
        let mut text = format!("fluxwire-bench {}\n", self.mode);
        for line in &self.lines {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        if self.ok() {
            text.push_str("  result: OK\n");
        } else {
            for problem in &self.problems {
                text.push_str("  FAIL: ");
                text.push_str(problem);
                text.push('\n');
            }
        }
        text
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let latency = Arc::new(Latency::new());
        {
            let mut local = LocalLatency::new(latency.clone());
            for v in 1..=1000 {
                local.record(v);
            }
        }
        let s = latency.summary();
        assert_eq!(s.count, 1000);
        assert!((495..=505).contains(&s.p50), "{s:?}");
        assert!((985..=995).contains(&s.p99), "{s:?}");
        assert_eq!(s.max, 1000);
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[test]
    fn rss_lines() {
        let mb = 1024 * 1024;
        assert_eq!(
            rss_line(&[("baseline", Some(mb)), ("end", Some(3 * mb / 2))], ": ok"),
            "server RSS: baseline 1.0 MiB, end 1.5 MiB: ok"
        );
        assert_eq!(
            rss_line(&[("baseline", Some(mb)), ("end", None)], ": ok"),
            "server RSS: not measured (no --server-pid)"
        );
    }

    #[test]
    fn counters() {
        let c = Counters::new(4);
        c.add(1, 2);
        c.add(5, 3);
        assert_eq!(c.total(), 5);
    }
}
