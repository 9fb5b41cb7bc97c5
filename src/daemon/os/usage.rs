//! What an instance uses — CPU time and resident memory of all of its processes together —
//! read from the kernel when status is asked for, never sampled in the background.
//!
//! - In a cgroup: CPU from `cpu.stat` (`usage_usec`, which counts processes that have exited
//!   too); memory from `memory.current` where the memory controller is enabled, else the sum
//!   of the resident memory of every process listed in `cgroup.procs`.
//! - In a process group: one pass over `/proc` sums, per group, the CPU of its processes and
//!   of the children they reaped (`utime + stime + cutime + cstime`) and their resident
//!   memory.
//!
//! CPU % is over the time since the previous measurement of the instance, or, the first time,
//! since the instance started.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use nix::unistd::Pid;

use crate::daemon::os::cgroup::InstanceCgroup;
use crate::protocol::DaemonStatus;
use crate::supervisor::process_control::{SpawnId, Usage};

#[derive(Default)]
pub(crate) struct UsageMeter {
    /// The previous measurement of each instance: when, and its CPU seconds then.
    previous: RefCell<HashMap<SpawnId, (Instant, f64)>>,
    /// Whether instance cgroups have `memory.current` (the memory controller is enabled for
    /// clusterd's tree), found out once: saves a failing open per instance.
    memory_controller: std::cell::Cell<Option<bool>>,
}

impl UsageMeter {
    pub(crate) fn measure(
        &self,
        instances: &[(SpawnId, Pid, Instant)],
        cgroups: &HashMap<SpawnId, InstanceCgroup>,
    ) -> HashMap<SpawnId, Usage> {
        let now = Instant::now();
        let mut groups: Option<HashMap<i32, (f64, u64)>> = None;
        let mut measured = HashMap::new();
        let mut previous = self.previous.borrow_mut();
        for &(id, pid, started_at) in instances {
            let totals = match cgroups.get(&id) {
                Some(cgroup) => {
                    let controller = match self.memory_controller.get() {
                        Some(known) => known,
                        None => {
                            let found = cgroup.file("memory.current").exists();
                            self.memory_controller.set(Some(found));
                            found
                        }
                    };
                    cgroup_totals(cgroup, controller)
                }
                None => groups
                    .get_or_insert_with(process_groups)
                    .get(&pid.as_raw())
                    .copied(),
            };
            let Some((cpu_seconds, memory_bytes)) = totals else {
                continue;
            };
            let (since, cpu_before) = previous.get(&id).copied().unwrap_or((started_at, 0.0));
            let elapsed = now.saturating_duration_since(since).as_secs_f64();
            let cpu_percent = if elapsed > 0.0 {
                ((cpu_seconds - cpu_before).max(0.0) / elapsed * 100.0 * 10.0).round() / 10.0
            } else {
                0.0
            };
            previous.insert(id, (now, cpu_seconds));
            measured.insert(
                id,
                Usage {
                    cpu_seconds,
                    cpu_percent,
                    memory_bytes,
                },
            );
        }
        // Only instances measured this time are remembered (a status of one unit forgets the
        // others' previous measurement; their next CPU % covers a longer time).
        previous.retain(|id, _| measured.contains_key(id));
        measured
    }
}

/// CPU seconds and resident bytes of everything in the cgroup.
fn cgroup_totals(cgroup: &InstanceCgroup, memory_controller: bool) -> Option<(f64, u64)> {
    let stat = read_small(&cgroup.file("cpu.stat"))?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    let memory = if memory_controller {
        read_small(&cgroup.file("memory.current"))?
            .trim()
            .parse()
            .ok()?
    } else {
        read_small(&cgroup.file("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter_map(resident_bytes)
            .sum()
    };
    Some((usec as f64 / 1e6, memory))
}

/// Per process group: CPU seconds (with reaped children's) and resident bytes of its
/// processes.
fn process_groups() -> HashMap<i32, (f64, u64)> {
    let ticks = clock_ticks();
    let mut groups: HashMap<i32, (f64, u64)> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return groups;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some((pgrp, cpu_ticks)) = stat_fields(pid) else {
            continue;
        };
        let slot = groups.entry(pgrp).or_default();
        slot.0 += cpu_ticks as f64 / ticks;
        slot.1 += resident_bytes(pid).unwrap_or(0);
    }
    groups
}

/// The process group and utime + stime + cutime + cstime of `pid` (/proc/PID/stat).
fn stat_fields(pid: i32) -> Option<(i32, u64)> {
    let stat = read_small(Path::new(&format!("/proc/{pid}/stat")))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14).
    let pgrp = fields.get(2)?.parse().ok()?;
    let cpu = (11..=14)
        .map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum::<Option<u64>>()?;
    Some((pgrp, cpu))
}

fn resident_bytes(pid: i32) -> Option<u64> {
    let statm = read_small(Path::new(&format!("/proc/{pid}/statm")))?;
    let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// clusterd's own pid, CPU, memory, open descriptors and start time.
pub(crate) fn own_process() -> Option<DaemonStatus> {
    let pid = std::process::id();
    let stat = read_small(Path::new("/proc/self/stat"))?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = clock_ticks();
    let cpu: u64 = (11..=12)
        .map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum::<Option<u64>>()?;
    // starttime (field 22 of stat, 19 after the name): ticks after boot.
    let started_ticks: f64 = fields.get(19)?.parse().ok()?;
    let boot_time: f64 = read_small(Path::new("/proc/stat"))?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let open_fds = fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(DaemonStatus {
        pid,
        cpu_seconds: cpu as f64 / ticks,
        memory_bytes: resident_bytes(pid as i32)?,
        open_fds,
        start_time_seconds: boot_time + started_ticks / ticks,
    })
}

/// A small kernel file as text, in as few system calls as it takes: open, one read (more
/// only if the buffer fills), close. `fs::read_to_string` also asks for the file's size,
/// which these files do not know: with 1000 instances that is 3000 system calls per status.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    let mut buffer = vec![0u8; 4096];
    let mut filled = 0;
    loop {
        let n = file.read(&mut buffer[filled..]).ok()?;
        filled += n;
        if n == 0 || filled < buffer.len() {
            break;
        }
        buffer.resize(buffer.len() * 2, 0);
    }
    buffer.truncate(filled);
    String::from_utf8(buffer).ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_in_its_group_with_its_memory() {
        let me = std::process::id() as i32;
        let (pgrp, _) = stat_fields(me).expect("own stat");
        let groups = process_groups();
        let (_, memory) = groups.get(&pgrp).copied().expect("own group");
        assert!(memory >= resident_bytes(me).unwrap_or(0));
        assert!(memory > 0);
    }
}
