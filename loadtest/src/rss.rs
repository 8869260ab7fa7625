//! Resident memory of a server process under test, sampled once a second
//! from `/proc/<pid>/status`, with named marks at phase changes; and the
//! wait for servers to go quiet between scenarios.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from its closing paren.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Waits until `pids` together use under a tenth of a core over half a
/// second (or `limit` passes): closing 15,000 sockets keeps servers busy
/// for a while, and the next scenario must not measure that.
pub async fn settle(pids: &[u32], limit: Duration) {
    const WINDOW: Duration = Duration::from_millis(500);
    // Ticks are 1/100 s: a tenth of a core over half a second is 5.
    const QUIET_TICKS: u64 = 5;
    let total = || pids.iter().filter_map(|pid| cpu_ticks(*pid)).sum::<u64>();
    let deadline = Instant::now() + limit;
    let mut before = total();
    while Instant::now() < deadline {
        tokio::time::sleep(WINDOW).await;
        let now = total();
        if now.saturating_sub(before) < QUIET_TICKS {
            return;
        }
        before = now;
    }
}

/// What a run learned about a server's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RssSummary {
    pub pid: u32,
    /// `(seconds since start, KiB)`.
    pub samples: Vec<(f64, u64)>,
    /// `(mark, KiB)`: `start`, `connected`, `measure`, `end`.
    pub marks: Vec<(String, u64)>,
    pub peak_kib: u64,
    /// Growth from `start` to `connected`, per socket held, in KiB.
    pub per_socket_kib: Option<f64>,
    /// Largest departure from the first sample after the warm-up, as a
    /// fraction of it (0.05 = 5 %), over the measured phase.
    pub drift: Option<f64>,
}

struct Inner {
    pid: u32,
    started: Instant,
    samples: Vec<(f64, u64)>,
    marks: Vec<(String, u64, f64)>,
}

/// Marks a running sampler from another task.
#[derive(Clone)]
pub struct RssMarker(Arc<Mutex<Inner>>);

impl RssMarker {
    /// Records the memory now under `name`.
    pub fn mark(&self, name: &str) {
        mark(&self.0, name);
    }
}

fn mark(inner: &Mutex<Inner>, name: &str) {
    let mut inner = inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(kib) = rss_kib(inner.pid) {
        let at = inner.started.elapsed().as_secs_f64();
        inner.marks.push((name.to_owned(), kib, at));
        inner.samples.push((at, kib));
    }
}

/// A running sampler; stops when dropped.
pub struct RssWatch {
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            pid,
            started: Instant::now(),
            samples: Vec::new(),
            marks: Vec::new(),
        }));
        let sampler = inner.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(kib) = rss_kib(pid) else { return };
                let mut inner = sampler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let at = inner.started.elapsed().as_secs_f64();
                inner.samples.push((at, kib));
            }
        });
        let watch = Self { inner, task };
        watch.mark("start");
        watch
    }

    /// Records the memory now under `name`.
    pub fn mark(&self, name: &str) {
        mark(&self.inner, name);
    }

    /// A handle that marks this sampler from another task.
    pub fn marker(&self) -> RssMarker {
        RssMarker(self.inner.clone())
    }

    /// Memory at mark `from`, the highest sample from it to mark `to`, and
    /// memory at `to`, in KiB; `None` unless both marks were made.
    pub fn span(&self, from: &str, to: &str) -> Option<(u64, u64, u64)> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let find = |name: &str| inner.marks.iter().find(|m| m.0 == name);
        let (start, end) = (find(from)?, find(to)?);
        let peak = inner
            .samples
            .iter()
            .filter(|s| s.0 >= start.2 && s.0 <= end.2)
            .map(|s| s.1)
            .max()
            .unwrap_or(start.1);
        Some((start.1, peak, end.1))
    }

    /// The summary, with `sockets` held between `start` and `connected`
    /// and the measured phase's first `warmup` ignored by the drift.
    pub fn finish(self, sockets: u64, warmup: Duration) -> RssSummary {
        self.task.abort();
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mark = |name: &str| inner.marks.iter().find(|m| m.0 == name);
        let per_socket_kib = match (mark("start"), mark("connected")) {
            (Some(start), Some(connected)) if sockets > 0 => {
                Some((connected.1 as f64 - start.1 as f64) / sockets as f64)
            }
            _ => None,
        };
        let drift = match (mark("measure"), mark("end")) {
            (Some(measure), Some(end)) => {
                drift(&inner.samples, measure.2 + warmup.as_secs_f64(), end.2)
            }
            _ => None,
        };
        RssSummary {
            pid: inner.pid,
            samples: inner.samples.clone(),
            marks: inner.marks.iter().map(|m| (m.0.clone(), m.1)).collect(),
            peak_kib: inner.samples.iter().map(|s| s.1).max().unwrap_or(0),
            per_socket_kib,
            drift,
        }
    }
}

/// Largest |sample - first| / first over samples in `[from, to]`.
pub fn drift(samples: &[(f64, u64)], from: f64, to: f64) -> Option<f64> {
    let mut window = samples.iter().filter(|s| s.0 >= from && s.0 <= to);
    let first = window.next()?.1 as f64;
    if first == 0.0 {
        return None;
    }
    Some(
        window
            .map(|s| (s.1 as f64 - first).abs() / first)
            .fold(0.0, f64::max),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_measured_from_the_first_sample_after_warmup() {
        let samples = [(0.0, 50), (1.0, 100), (2.0, 104), (3.0, 97), (4.0, 200)];
        assert_eq!(drift(&samples, 1.0, 3.0), Some(0.04));
        assert_eq!(drift(&samples, 5.0, 9.0), None);
        assert_eq!(drift(&samples, 3.0, 3.0), Some(0.0));
    }

    #[test]
    fn reads_this_process() {
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_ticks(pid).expect("own stat");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_ticks(pid).expect("own stat") > before, "{x}");
        assert_eq!(cpu_ticks(u32::MAX), None);
    }

    #[tokio::test]
    async fn marks_from_another_task_bound_a_span() {
        let watch = RssWatch::start(std::process::id());
        let marker = watch.marker();
        tokio::spawn(async move { marker.mark("from") })
            .await
            .unwrap();
        watch.mark("to");
        let (from, peak, to) = watch.span("from", "to").expect("both marks");
        // The span's own marks are samples inside it.
        assert!(peak >= from.max(to), "{from} {peak} {to}");
        assert!(watch.span("from", "missing").is_none());
        let summary = watch.finish(0, Duration::ZERO);
        let names: Vec<&str> = summary.marks.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names, ["start", "from", "to"]);
    }

    #[tokio::test]
    async fn settle_returns_once_a_process_is_quiet() {
        let mut quiet = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep(1)");
        let started = Instant::now();
        settle(&[quiet.id()], Duration::from_secs(20)).await;
        let waited = started.elapsed();
        let _ = quiet.kill();
        let _ = quiet.wait();
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    }
}
