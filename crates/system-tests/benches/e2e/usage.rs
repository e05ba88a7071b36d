//! CPU and memory per process, from /proc: CPU as the share of one core a process used over a
//! step (utime + stime, in clock ticks of 10 ms), memory as the peak of VmRSS sampled while the
//! step ran.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Linux's USER_HZ: /proc/<pid>/stat counts CPU time in hundredths of a second.
const TICKS_PER_SECOND: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Usage {
    /// Cores used on average over the step (1.0 = one core busy all the time).
    pub cores: f64,
    pub peak_rss_mib: f64,
}

pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields counted from after it do not.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Watches `processes` from now until [`Watch::finish`].
pub struct Watch {
    started: Instant,
    ticks_at_start: Vec<Option<u64>>,
    processes: Vec<(String, u32)>,
    stop: watch::Sender<bool>,
    sampler: tokio::task::JoinHandle<Vec<u64>>,
}

impl Watch {
    pub fn start(processes: Vec<(String, u32)>) -> Self {
        let ticks_at_start = processes.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        let (stop, mut stopped) = watch::channel(false);
        let pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
        let sampler = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(rss_kib(*pid).unwrap_or(0));
                }
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = stopped.changed() => return peaks,
                }
            }
        });
        Self { started: Instant::now(), ticks_at_start, processes, stop, sampler }
    }

    pub async fn finish(self) -> BTreeMap<String, Usage> {
        let seconds = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(true);
        let peaks = self.sampler.await.expect("the sampler");
        self.processes
            .iter()
            .zip(self.ticks_at_start)
            .zip(peaks)
            .map(|(((name, pid), start), peak)| {
                let used = match (start, cpu_ticks(*pid)) {
                    (Some(start), Some(end)) => (end - start) as f64 / TICKS_PER_SECOND,
                    _ => 0.0,
                };
                (name.clone(), Usage { cores: used / seconds, peak_rss_mib: peak as f64 / 1024.0 })
            })
            .collect()
    }
}
