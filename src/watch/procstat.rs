//! The process's own figures for `/metrics` (CPU time, resident memory, open descriptors,
//! start time), read from `/proc/self` when a page is asked for: nothing is kept between
//! scrapes. A figure that cannot be read is left out of the page rather than shown as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// The figures one scrape shows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStat {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// Unix time, seconds.
    pub start_time: f64,
}

impl ProcStat {
    /// Reads the figures now; `started` is when the process started (taken at start).
    pub fn read(started: SystemTime) -> ProcStat {
        ProcStat {
            cpu_seconds: cpu_seconds(),
            resident_bytes: resident_bytes(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            start_time: started
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// utime + stime of `/proc/self/stat` (fields 14 and 15, counted after the command's closing
/// parenthesis, which may itself hold spaces).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

/// The second field of `/proc/self/statm` (resident pages) in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = rustix::param::page_size() as u64;
    Some(pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_figures() {
        let p = ProcStat::read(SystemTime::now());
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20));
        assert!(p.open_fds.is_some_and(|n| n >= 3));
        assert!(p.start_time > 1.7e9);
    }
}
