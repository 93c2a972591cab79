//! The standard `process_*` metrics of the director's own process, read from
//! `/proc/self` once per scrape (slow path). They are the names every
//! Prometheus client library exports (client_golang's process collector), so
//! that the usual dashboards and alerts (CPU, memory, fd exhaustion, restarts)
//! work on a director unchanged.
//!
//! Reading and parsing are apart: [`ProcessStats::read`] does the I/O, the
//! parsers are pure and tested on captured `/proc` text.

use std::fs;

/// One reading of the process's resources. A field is `None` when its
/// `/proc` file could not be read or parsed (it is then left out of the
/// exposition rather than exported as a false zero).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// File descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`RLIMIT_NOFILE`).
    pub max_fds: Option<u64>,
}

/// What `/proc/self/stat` gives: CPU ticks and the start in ticks after boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Parse `/proc/self/stat`. The second field (the command name in
/// parentheses) may itself hold spaces and parentheses, so the fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: get(14)?,
        stime: get(15)?,
        starttime: get(22)?,
    })
}

/// The boot time (`btime`) of `/proc/stat`, in seconds since the epoch.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` line of `/proc/self/status` (`VmRSS:   1234 kB`), in bytes.
fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    let mut parts = line.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(n * 1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

impl ProcessStats {
    /// Read the current process's figures from `/proc/self` (and the boot
    /// time from `/proc/stat`); `ticks_per_second` is `_SC_CLK_TCK`.
    pub fn read(ticks_per_second: Option<u64>) -> ProcessStats {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let btime = fs::read_to_string("/proc/stat").ok();
        let btime = btime.as_deref().and_then(parse_btime);
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = fs::read_to_string("/proc/self/limits").ok();
        // The directory listing holds the fd of the listing itself, which
        // was not open before the scrape: leave it out.
        let open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| (d.count() as u64).saturating_sub(1));
        let tck = ticks_per_second.map(|t| t as f64);
        ProcessStats {
            start_time_seconds: stat
                .zip(btime)
                .zip(tck)
                .map(|((s, b), t)| b as f64 + s.starttime as f64 / t),
            cpu_seconds: stat.zip(tck).map(|(s, t)| (s.utime + s.stime) as f64 / t),
            resident_memory_bytes: parse_status_kb(&status, "VmRSS"),
            virtual_memory_bytes: parse_status_kb(&status, "VmSize"),
            open_fds,
            max_fds: limits.as_deref().and_then(parse_max_fds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_name() {
        // A command name with a space and a parenthesis, as `comm` allows.
        let text = "4242 (ulvs (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 104857600 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 75,
                starttime: 123456
            }
        );
        assert_eq!(parse_stat("4242 (ulvs) S 1 2"), None, "truncated");
        assert_eq!(parse_stat("no name at all"), None);
    }

    #[test]
    fn status_limits_and_btime() {
        let status =
            "Name:\tulvs-director\nVmPeak:\t  200000 kB\nVmSize:\t  102400 kB\nVmRSS:\t    8192 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(8192 * 1024));
        assert_eq!(parse_status_kb(status, "VmSize"), Some(102_400 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(
            parse_status_kb("VmRSS:\t8192 pages\n", "VmRSS"),
            None,
            "unit checked"
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63473                63473                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds("Max open files            unlimited  unlimited  files\n"),
            None
        );
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read(Some(100));
        let start = p.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and not before this test binary could exist.
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.virtual_memory_bytes.unwrap() >= p.resident_memory_bytes.unwrap());
        // stdin, stdout and stderr at least.
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert_eq!(
            ProcessStats::read(None).cpu_seconds,
            None,
            "no tick rate, no CPU time"
        );
    }
}
