//! Readings from /proc: memory, CPU time, context switches.

use super::*;

/// (RSS, PSS) in KiB from smaps_rollup.
pub(super) fn memory_kib(pid: i32) -> Option<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// utime + stime of the whole process, in milliseconds.
pub(super) fn cpu_ms(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// Context switches (voluntary + involuntary) and schedstat on-CPU ns, summed over all threads.
pub(super) fn thread_counters(pid: i32) -> Option<(f64, f64)> {
    let mut csw = 0.0;
    let mut run_ns = 0.0;
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let p = e.path();
        if let Ok(status) = fs::read_to_string(p.join("status")) {
            for l in status.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    csw += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                }
            }
        }
        if let Ok(s) = fs::read_to_string(p.join("schedstat")) {
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Some((csw, run_ns))
}
