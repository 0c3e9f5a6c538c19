//! Process figures from `/proc`: the server's RSS (`VmRSS` of `/proc/PID/status`),
//! sampled every 250 ms in the background; CPU time (`utime + stime` of
//! `/proc/PID/stat`, in clock ticks of `sysconf(_SC_CLK_TCK)`) for the server and for the
//! tool itself, turned into a percentage of one core over a measured interval.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;

/// `VmRSS` of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// This process's peak RSS (`VmHWM`), in bytes.
pub fn self_peak_rss_bytes() -> Option<u64> {
    status_field("/proc/self/status", "VmHWM:")
}

fn status_field(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `pid` (`None`: this process), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last
    // ')' start at field 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux if it cannot be read).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU used over an interval, as a percentage of one core (200 = two cores busy).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUsage {
    pub wall_secs: f64,
    pub tool_pct: f64,
    pub server_pct: Option<f64>,
}

impl CpuUsage {
    /// `tool CPU 35% of a core, server 120%` for the human summary.
    pub fn human(&self) -> String {
        match self.server_pct {
            Some(server) => format!(
                "tool CPU {:.0}%, server CPU {:.0}% (of one core, over {:.1}s)",
                self.tool_pct, server, self.wall_secs
            ),
            None => format!(
                "tool CPU {:.0}% (of one core, over {:.1}s; no --server-pid)",
                self.tool_pct, self.wall_secs
            ),
        }
    }
}

/// Measures the CPU of the tool and the server from `start` to [`stop`](Self::stop).
pub struct CpuMeter {
    server: Option<u32>,
    started: Instant,
    tool: u64,
    server_ticks: Option<u64>,
}

impl CpuMeter {
    pub fn start(server: Option<u32>) -> Self {
        CpuMeter {
            server,
            started: Instant::now(),
            tool: cpu_ticks(None).unwrap_or(0),
            server_ticks: server.and_then(|pid| cpu_ticks(Some(pid))),
        }
    }

    pub fn stop(&self) -> CpuUsage {
        let wall = self.started.elapsed().as_secs_f64().max(1e-6);
        let per_sec = ticks_per_sec();
        let pct = |ticks: u64| ticks as f64 / per_sec / wall * 100.0;
        let tool = cpu_ticks(None)
            .unwrap_or(self.tool)
            .saturating_sub(self.tool);
        let server = match (self.server, self.server_ticks) {
            (Some(pid), Some(before)) => {
                cpu_ticks(Some(pid)).map(|now| pct(now.saturating_sub(before)))
            }
            _ => None,
        };
        CpuUsage {
            wall_secs: wall,
            tool_pct: pct(tool),
            server_pct: server,
        }
    }
}

/// The server's RSS sampled every `every` in the background.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    task: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid` (does nothing without a pid).
    pub fn start(pid: Option<u32>, every: Duration) -> Self {
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = pid.map(|pid| {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match rss_bytes(pid) {
                        Some(rss) => samples
                            .lock()
                            .expect("samples lock")
                            .push((started.elapsed(), rss)),
                        None => return,
                    }
                }
            })
        });
        RssSampler { samples, task }
    }

    /// Highest sample so far.
    pub fn peak(&self) -> Option<u64> {
        self.samples
            .lock()
            .expect("samples lock")
            .iter()
            .map(|s| s.1)
            .max()
    }

    /// One sample per `step` (the highest in each step), as `[secs, bytes]`.
    pub fn series(&self, step: Duration) -> Vec<(f64, u64)> {
        let samples = self.samples.lock().expect("samples lock");
        let mut series: Vec<(f64, u64)> = Vec::new();
        for &(at, rss) in samples.iter() {
            let bucket = (at.as_secs_f64() / step.as_secs_f64()).floor() * step.as_secs_f64();
            match series.last_mut() {
                Some(last) if last.0 == bucket => last.1 = last.1.max(rss),
                _ => series.push((bucket, rss)),
            }
        }
        series
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_ticks(Some(pid)).is_some());
        assert!(cpu_ticks(None).is_some());
        assert!(self_peak_rss_bytes().unwrap() >= rss_bytes(pid).unwrap() / 2);
        assert!(ticks_per_sec() > 0.0);
    }
}
