//! The injector's own resources, read from Linux's `/proc` (proc(5)): the busy share of the
//! CPUs this slave may run on, this process' CPU time, the host's memory, network throughput
//! and sockets. Sampled once per statistics interval (the run's collector) and once per
//! heartbeat (the agent); each sample covers the time since the previous one.
//!
//! Reading costs five small files per sample. Anything unreadable (no `/proc`, a kernel that
//! formats a line differently) reads as zero rather than failing the run.

use std::time::{Duration, Instant};

use lobster_fleet::stats::Resources;

/// `USER_HZ`: the unit of `/proc/self/stat`'s CPU times. Linux fixes it at 100 for user space
/// on every architecture a slave runs on (x86, arm), whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// Takes successive samples; each covers the time since the previous one (or since `new`).
pub(crate) struct Sampler {
    /// The CPUs this process may run on (`Cpus_allowed_list`); empty means all.
    cpus: Vec<usize>,
    /// Worker threads of the runtime: the process' CPU share is of this many cores.
    workers: f64,
    last: Snapshot,
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    at: Option<Instant>,
    /// Jiffies busy and in all, summed over the allowed CPUs.
    cpu_busy: u64,
    cpu_total: u64,
    /// This process' user + system time, in `USER_HZ` ticks.
    process_ticks: u64,
    net_rx: u64,
    net_tx: u64,
}

impl Sampler {
    /// Starts sampling; `workers` is the runtime's worker thread count (1 for a one-thread
    /// slave).
    pub(crate) fn new(workers: usize) -> Self {
        let cpus = read("/proc/self/status")
            .and_then(|s| allowed_cpus(&s))
            .unwrap_or_default();
        let mut s = Sampler {
            cpus,
            workers: workers.max(1) as f64,
            last: Snapshot::default(),
        };
        s.last = s.snapshot();
        s
    }

    /// For the current runtime (its worker count), or one worker outside a runtime.
    pub(crate) fn for_this_runtime() -> Self {
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or(1);
        Sampler::new(workers)
    }

    fn snapshot(&self) -> Snapshot {
        let (cpu_busy, cpu_total) = read("/proc/stat")
            .map(|s| cpu_jiffies(&s, &self.cpus))
            .unwrap_or_default();
        let (net_rx, net_tx) = read("/proc/net/dev")
            .map(|s| net_bytes(&s))
            .unwrap_or_default();
        Snapshot {
            at: Some(Instant::now()),
            cpu_busy,
            cpu_total,
            process_ticks: read("/proc/self/stat")
                .and_then(|s| process_ticks(&s))
                .unwrap_or_default(),
            net_rx,
            net_tx,
        }
    }

    /// The resources since the previous sample, when at least `min` has passed since it:
    /// CPU is counted in clock ticks (10 ms), so a few milliseconds' window reads 0 % or 100 %
    /// by chance, and a per-injector peak would keep the chance 100 %.
    pub(crate) fn sample_over(&mut self, min: Duration) -> Option<Resources> {
        let long_enough = self.last.at.is_some_and(|a| a.elapsed() >= min);
        long_enough.then(|| self.sample())
    }

    /// The resources since the previous sample.
    pub(crate) fn sample(&mut self) -> Resources {
        let now = self.snapshot();
        let prev = std::mem::replace(&mut self.last, now);
        let secs = match (prev.at, now.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let total = now.cpu_total.saturating_sub(prev.cpu_total);
        let cpu_percent = if total == 0 {
            0.0
        } else {
            100.0 * now.cpu_busy.saturating_sub(prev.cpu_busy) as f64 / total as f64
        };
        let per_s = |a: u64, b: u64| {
            if secs > 0.0 {
                (a.saturating_sub(b) as f64 / secs) as u64
            } else {
                0
            }
        };
        let process_cpu_percent = if secs > 0.0 {
            let used = now.process_ticks.saturating_sub(prev.process_ticks) as f64 / USER_HZ;
            (100.0 * used / (secs * self.workers)).min(100.0)
        } else {
            0.0
        };
        let (memory_used_bytes, memory_total_bytes) = read("/proc/meminfo")
            .map(|s| memory(&s))
            .unwrap_or_default();
        Resources {
            cpu_percent: cpu_percent.min(100.0),
            process_cpu_percent,
            memory_used_bytes,
            memory_total_bytes,
            net_rx_bytes_per_s: per_s(now.net_rx, prev.net_rx),
            net_tx_bytes_per_s: per_s(now.net_tx, prev.net_tx),
            sockets: read("/proc/net/sockstat")
                .and_then(|s| sockets(&s))
                .unwrap_or_default(),
        }
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `Cpus_allowed_list:\t0-3,6` → `[0, 1, 2, 3, 6]`.
fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// Busy and total jiffies of the `cpuN` lines of `/proc/stat` whose N is in `cpus` (all when
/// empty). Busy: user, nice, system, irq, softirq, steal; idle: idle, iowait (guest time is
/// already inside user and nice).
fn cpu_jiffies(stat: &str, cpus: &[usize]) -> (u64, u64) {
    let (mut busy, mut total) = (0u64, 0u64);
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(n) = f
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.is_empty() && !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = f.take(8).map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 8 {
            continue;
        }
        let b = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        busy += b;
        total += b + v[3] + v[4];
    }
    (busy, total)
}

/// utime + stime of `/proc/self/stat` (fields 14 and 15; the command name in field 2 may hold
/// spaces and parentheses, so fields are counted after its last `)`).
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Bytes received and sent over every interface but `lo`, from `/proc/net/dev`.
fn net_bytes(dev: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// (MemTotal − MemAvailable, MemTotal) in bytes, from `/proc/meminfo` (kB lines).
fn memory(meminfo: &str) -> (u64, u64) {
    let kb = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = kb("MemTotal:");
    (total.saturating_sub(kb("MemAvailable:")), total)
}

/// `sockets: used N` of `/proc/net/sockstat`.
fn sockets(sockstat: &str) -> Option<u32> {
    sockstat
        .lines()
        .find_map(|l| l.strip_prefix("sockets: used "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window shorter than asked gives no sample and keeps the previous one as its start.
    #[test]
    fn a_sample_over_a_window_too_short_is_none() {
        let mut s = Sampler::new(1);
        let start = s.last.at;
        assert!(s.sample_over(Duration::from_secs(3600)).is_none());
        assert_eq!(
            s.last.at, start,
            "the window still starts at the first snapshot"
        );
        assert!(s.sample_over(Duration::ZERO).is_some());
    }

    const STAT: &str = "cpu  400 0 100 1500 0 0 0 0 0 0
cpu0 300 0 50 600 50 0 0 0 0 0
cpu1 100 0 50 900 0 0 0 0 0 0
intr 12345
";

    #[test]
    fn the_proc_files_are_read_as_proc5_describes_them() {
        assert_eq!(
            allowed_cpus("Name:\tx\nCpus_allowed_list:\t0-2,5\n"),
            Some(vec![0, 1, 2, 5])
        );
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t1\n"), Some(vec![1]));
        // Only the allowed CPUs count; the aggregate `cpu` line never does.
        assert_eq!(cpu_jiffies(STAT, &[0]), (350, 1000));
        assert_eq!(cpu_jiffies(STAT, &[1]), (150, 1050));
        assert_eq!(cpu_jiffies(STAT, &[]), (500, 2050));
        // A command name with spaces and a parenthesis.
        let stat = "42 (lobster (x) y) S 1 42 42 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(process_ticks(stat), Some(325));
        let dev = "Inter-|   Receive |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets
    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0
  eth0: 1000 5 0 0 0 0 0 0 2000 6 0 0 0 0 0 0
  eth1: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0
";
        assert_eq!(net_bytes(dev), (1010, 2020));
        let mem = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory(mem), (750 * 1024, 1000 * 1024));
        assert_eq!(sockets("sockets: used 321\nTCP: inuse 5\n"), Some(321));
    }

    #[test]
    fn a_busy_loop_on_this_process_shows_in_its_own_cpu_share() {
        let mut s = Sampler::new(1);
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let r = s.sample();
        // 300 ms of spinning in 300 ms: an idle process reads ~0 %; even sharing a loaded
        // 2-core machine with three other busy threads this one gets its fair quarter.
        assert!(r.process_cpu_percent > 20.0, "{r:?}");
        assert!(r.memory_total_bytes > 0 && r.memory_used_bytes <= r.memory_total_bytes);
        assert!(r.sockets > 0 || !std::path::Path::new("/proc/net/sockstat").exists());
    }
}
