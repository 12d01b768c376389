//! Where CPU time goes, per CPU, from /proc: the CPU-map kernel threads that finish steered
//! frames (the VNIC side), and softirq time plus NAPI and ksoftirqd threads (the NIC side).

use std::{collections::HashMap, fs, time::Instant};

use serde::{Deserialize, Serialize};

/// Kernel threads are re-discovered this often (they come and go with CPU-map entries).
const RESCAN_EVERY: u32 = 50;

/// One reading of the counters.
#[derive(Clone, Debug)]
pub struct CpuTimes {
    pub at: Instant,
    /// Per CPU: ticks in softirq, and all ticks (from /proc/stat).
    pub softirq: Vec<u64>,
    pub total: Vec<u64>,
    /// Per CPU: ticks of the CPU-map threads bound to it.
    pub cpumap: Vec<u64>,
    /// Per CPU: ticks of its ksoftirqd thread and NAPI threads last seen on it.
    pub nic_threads: Vec<u64>,
}

/// Busy fractions of one CPU over a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuLoad {
    /// CPU-map threads: finishing steered frames (the VNIC side).
    pub vnic: f64,
    /// Softirq time (NET_RX among it) and NAPI threads (the NIC side).
    pub nic: f64,
}

/// Parses the per-CPU lines of /proc/stat: (softirq ticks, total ticks) per CPU.
pub fn parse_proc_stat(text: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let Some(cpu) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal guest guest_nice
        let fields: Vec<u64> = parts.filter_map(|f| f.parse().ok()).collect();
        if fields.len() < 7 {
            continue;
        }
        // guest time is already counted in user time.
        let total: u64 = fields.iter().take(8).sum();
        if out.len() <= cpu {
            out.resize(cpu + 1, (0, 0));
        }
        out[cpu] = (fields[6], total);
    }
    out
}

/// utime + stime (fields 14 and 15) and the last CPU (field 39) of /proc/PID/stat.
pub fn parse_task_stat(text: &str) -> Option<(u64, usize)> {
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let cpu: usize = f.get(36)?.parse().ok()?;
    Some((utime + stime, cpu))
}

/// What a kernel thread's name says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thread {
    /// `cpumap/<cpu>/map:<id>`: finishes CPU-map frames on `cpu`.
    CpuMap(usize),
    /// `ksoftirqd/<cpu>`.
    Softirq(usize),
    /// `napi/<dev>-<id>`: a threaded NAPI poller, on whatever CPU it last ran.
    Napi,
}

pub fn classify(comm: &str) -> Option<Thread> {
    if let Some(rest) = comm.strip_prefix("cpumap/") {
        return rest.split('/').next()?.parse().ok().map(Thread::CpuMap);
    }
    if let Some(rest) = comm.strip_prefix("ksoftirqd/") {
        return rest.parse().ok().map(Thread::Softirq);
    }
    comm.starts_with("napi/").then_some(Thread::Napi)
}

/// Reads the counters, remembering which threads to look at between rescans.
#[derive(Default)]
pub struct CpuMonitor {
    threads: HashMap<u32, Thread>,
    reads: u32,
}

impl CpuMonitor {
    fn rescan(&mut self) {
        self.threads.clear();
        let Ok(dir) = fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // Kernel threads are children of kthreadd (pid 2); reading comm is enough.
            if let Ok(comm) = fs::read_to_string(format!("/proc/{pid}/comm"))
                && let Some(t) = classify(comm.trim())
            {
                self.threads.insert(pid, t);
            }
        }
    }

    pub fn read(&mut self) -> CpuTimes {
        if self.reads.is_multiple_of(RESCAN_EVERY) {
            self.rescan();
        }
        self.reads += 1;
        let stat = parse_proc_stat(&fs::read_to_string("/proc/stat").unwrap_or_default());
        let n = stat.len();
        let mut times = CpuTimes {
            at: Instant::now(),
            softirq: stat.iter().map(|s| s.0).collect(),
            total: stat.iter().map(|s| s.1).collect(),
            cpumap: vec![0; n],
            nic_threads: vec![0; n],
        };
        for (pid, thread) in &self.threads {
            let Some((ticks, last_cpu)) = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| parse_task_stat(&t))
            else {
                continue;
            };
            let (slot, cpu) = match *thread {
                Thread::CpuMap(cpu) => (&mut times.cpumap, cpu),
                Thread::Softirq(cpu) => (&mut times.nic_threads, cpu),
                Thread::Napi => (&mut times.nic_threads, last_cpu),
            };
            if let Some(s) = slot.get_mut(cpu) {
                *s += ticks;
            }
        }
        times
    }
}

/// Busy fractions per CPU between two readings.
pub fn loads(prev: &CpuTimes, now: &CpuTimes) -> Vec<CpuLoad> {
    (0..now.total.len().min(prev.total.len()))
        .map(|cpu| {
            let total = now.total[cpu].saturating_sub(prev.total[cpu]).max(1) as f64;
            let d = |a: &[u64], b: &[u64]| b[cpu].saturating_sub(a[cpu]) as f64;
            // ksoftirqd runs softirqs, so its time is part of the softirq column too: take the
            // larger of the two rather than their sum.
            let nic = d(&prev.softirq, &now.softirq).max(d(&prev.nic_threads, &now.nic_threads));
            CpuLoad {
                vnic: (d(&prev.cpumap, &now.cpumap) / total).min(1.0),
                nic: (nic / total).min(1.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_give_softirq_and_total_per_cpu() {
        let text = "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 10 0 20 60 0 0 10 0 0 0\ncpu1 1 0 1 96 0 0 2 0 5 0\nintr 1 2\n";
        assert_eq!(parse_proc_stat(text), vec![(10, 100), (2, 100)]);
    }

    #[test]
    fn task_stat_survives_odd_command_names() {
        let text = "123 (cpumap/1/map:7) S 2 0 0 0 -1 69238880 0 0 0 0 40 2 0 0 20 0 1 0 \
                    100 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_task_stat(text), Some((42, 1)));
        let weird = text
            .replace("(cpumap/1/map:7)", "(a) b) c)")
            .replace(" 17 1 0", " 17 3 0");
        assert_eq!(parse_task_stat(&weird), Some((42, 3)));
    }

    #[test]
    fn kernel_threads_are_recognised() {
        assert_eq!(classify("cpumap/3/map:12"), Some(Thread::CpuMap(3)));
        assert_eq!(classify("ksoftirqd/0"), Some(Thread::Softirq(0)));
        assert_eq!(classify("napi/eth0-8193"), Some(Thread::Napi));
        assert_eq!(classify("kworker/0:1"), None);
    }

    #[test]
    fn loads_are_fractions_of_the_period() {
        let t = |softirq: Vec<u64>, total: Vec<u64>, cpumap: Vec<u64>| CpuTimes {
            at: Instant::now(),
            softirq,
            total,
            cpumap,
            nic_threads: vec![0, 0],
        };
        let a = t(vec![0, 0], vec![0, 0], vec![0, 0]);
        let b = t(vec![10, 50], vec![100, 100], vec![25, 0]);
        let l = loads(&a, &b);
        assert_eq!(
            l[0],
            CpuLoad {
                vnic: 0.25,
                nic: 0.10
            }
        );
        assert_eq!(
            l[1],
            CpuLoad {
                vnic: 0.0,
                nic: 0.5
            }
        );
    }
}
