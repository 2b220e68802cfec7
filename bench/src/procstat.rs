//! CPU time and memory of a process, from `/proc` (Linux).
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (fields 14 and 15, in
//! clock ticks), memory is `VmRSS` of `/proc/PID/status`.

use std::sync::OnceLock;

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` in clock ticks, parsed from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields after the last ')' start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB, parsed from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) of process `pid` so far, microseconds.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat_ticks(&stat)? * 1_000_000 / clock_ticks())
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Busy CPU time of the whole machine so far (all CPUs: user, nice, system,
/// irq, softirq, steal of the first line of `/proc/stat`), microseconds.
pub fn machine_busy_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_machine_busy_ticks(&stat).unwrap_or(0) * 1_000_000 / clock_ticks()
}

/// Busy ticks of the `cpu` line of `/proc/stat` (everything but idle and iowait).
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is in user)
    Some(v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).copied().unwrap_or(0))
}

/// Total CPU time of several processes, µs (missing ones count 0).
pub fn cpu_us_all(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_us(p)).sum()
}

/// Total resident memory of several processes, KiB.
pub fn rss_kib_all(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| rss_kib(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (im server) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 12 1000 300";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        let status = "Name:\tim-server\nVmPeak:\t  9000 kB\nVmRSS:\t   46900 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(46_900));
        let proc_stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\n";
        assert_eq!(parse_machine_busy_ticks(proc_stat), Some(161));
        assert!(cpu_us(std::process::id()).is_some());
        assert!(rss_kib(std::process::id()).unwrap_or(0) > 0);
    }
}
