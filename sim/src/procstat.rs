//! CPU time and resident memory of a local process, read from Linux `/proc/<pid>/stat` and
//! `/proc/<pid>/status`. CPU times are in clock ticks; we assume `CLK_TCK` = 100 (the value
//! on every Linux architecture we deploy to; `getconf CLK_TCK` confirms), i.e. 10 ms
//! resolution, so measure over seconds, not milliseconds.

use std::time::Duration;

/// Clock ticks per second assumed for `/proc/<pid>/stat` (see the module docs).
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// One reading of a process's CPU time and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User-mode CPU time.
    pub user: Duration,
    /// Kernel-mode CPU time.
    pub system: Duration,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`; `None` if the process is gone or this
/// is not Linux.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(&stat, &status)
}

/// Reads this process's own figures.
pub fn sample_self() -> Option<ProcSample> {
    sample(std::process::id())
}

/// Parses the two files' contents.
pub fn parse(stat: &str, status: &str) -> Option<ProcSample> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) is index 0; utime is field 14, stime field 15.
    let ticks = |i: usize| -> Option<Duration> {
        let t: u64 = fields.get(i)?.parse().ok()?;
        Some(Duration::from_micros(t * 1_000_000 / CLOCK_TICKS_PER_SEC))
    };
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(ProcSample {
        user: ticks(11)?,
        system: ticks(12)?,
        rss_kib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (media ws) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 200000000 3000";
        let status = "Name:\tmedia-ws\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t9\n";
        let s = parse(stat, status).unwrap();
        assert_eq!(s.user, Duration::from_millis(2500));
        assert_eq!(s.system, Duration::from_millis(750));
        assert_eq!(s.rss_kib, 4321);
    }

    #[test]
    fn reads_this_process() {
        let s = sample_self().unwrap();
        assert!(s.rss_kib > 0);
    }
}
