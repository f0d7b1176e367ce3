//! [`ProcessSnapshot`]: the process's CPU time, resident memory and threads, read from
//! `/proc/self` on Linux (and absent elsewhere: a snapshot's `process` is `None`).

use std::time::Duration;

/// What the whole process uses, beside the stages: read with each snapshot (Linux only).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ProcessSnapshot {
    /// CPU time in user mode, all threads, since the process started.
    pub cpu_user: Duration,
    /// CPU time in the kernel, all threads, since the process started.
    pub cpu_system: Duration,
    /// CPU time per second of the snapshot's interval (1.0: one core busy all the time); 0
    /// for a first snapshot.
    pub cpu_cores: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
}

impl ProcessSnapshot {
    /// The process's figures now, or `None` where they cannot be read (not Linux, or
    /// `/proc` not mounted).
    pub fn read() -> Option<ProcessSnapshot> {
        #[cfg(target_os = "linux")]
        {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            parse(&stat, &status)
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// User and system CPU time together.
    pub fn cpu(&self) -> Duration {
        self.cpu_user + self.cpu_system
    }
}

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, which Linux fixes at 100
/// on every architecture it exports to user space but Alpha's (std has no `sysconf`).
const TICKS_PER_SEC: u64 = 100;

/// Parses `/proc/self/stat` (CPU times) and `/proc/self/status` (memory, threads).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // the parser is tested everywhere
fn parse(stat: &str, status: &str) -> Option<ProcessSnapshot> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses: the
    // fields after it start past its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let tick = |i: usize| -> Option<Duration> {
        let ticks: u64 = fields.get(i - 3)?.parse().ok()?;
        Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
    };
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let n: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(n * 1024)
    };
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(ProcessSnapshot {
        cpu_user: tick(14)?,
        cpu_system: tick(15)?,
        cpu_cores: 0.0,
        resident_bytes: kib("VmRSS:").unwrap_or(0),
        virtual_bytes: kib("VmSize:").unwrap_or(0),
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 75 0 0 20 0 9 0 100 1000 300";
        let status = "Name:\tx\nVmSize:\t  20480 kB\nVmRSS:\t    1024 kB\nThreads:\t9\n";
        let p = parse(stat, status).unwrap();
        assert_eq!(p.cpu_user, Duration::from_millis(2500));
        assert_eq!(p.cpu_system, Duration::from_millis(750));
        assert_eq!(
            (p.resident_bytes, p.virtual_bytes, p.threads),
            (1 << 20, 20 << 20, 9)
        );
        assert_eq!(parse("garbage", status), None);
        assert_eq!(parse(stat, "VmRSS: 1 kB\n"), None, "no thread count");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let p = ProcessSnapshot::read().expect("/proc/self on Linux");
        assert!(p.threads >= 1 && p.resident_bytes > 0, "{p:?}");
    }
}
