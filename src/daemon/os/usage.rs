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
//!
//! In a cgroup, CPU is read at every measurement, memory only when it can have changed: when
//! the cgroup's `usage_usec` moved since memory was last read (a process that has not run has
//! neither allocated, freed, forked nor exited), and at least every [`MEMORY_MAX_AGE`] (the
//! kernel can reclaim an idle process's pages; root can move a process in). With 1000 idle
//! instances that is 1000 reads per status instead of 3000 (`cpu.stat`; `cgroup.procs` and
//! each process's `statm`, or `memory.current`, only for those that ran).
//!
//! Opening and closing a kernel file costs more than reading it (with 1000 instances, two
//! thirds of a status went to path walks, kernfs open and release), so the meter keeps the
//! files it has read open and reads them again from offset 0: one `pread` per file per
//! status. They are a cache, held only while clusterd uses less than half of its descriptor
//! limit, and let go when the instance is released.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
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
    memory_controller: Cell<Option<bool>>,
    /// The files held open per instance in a cgroup.
    cgroup_files: RefCell<HashMap<SpawnId, HeldFiles>>,
    /// What the held files are read into (a cgroup's file, a process's statm), reused.
    buffers: RefCell<(Vec<u8>, Vec<u8>)>,
}

/// An instance cgroup's files kept open between measurements.
struct HeldFiles {
    cpu_stat: File,
    /// `memory.current`, or `cgroup.procs` without the memory controller.
    memory: File,
    /// `/proc/PID/statm` of the processes last listed in `cgroup.procs`. A held statm stays
    /// bound to its process: once the process is gone, reading it fails.
    statm: HashMap<i32, File>,
    /// What the memory files gave last, to answer again while the cgroup has not run.
    memory_read: Option<MemoryRead>,
}

/// One reading of an instance's memory.
#[derive(Clone, Copy)]
struct MemoryRead {
    /// The cgroup's `usage_usec` when it was read.
    usage_usec: u64,
    bytes: u64,
    at: Instant,
}

/// How old a memory reading may be answered again, for an instance that has not run since.
pub(crate) const MEMORY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// From this many instances in cgroups on, a status reads their kernel files on two threads:
/// those reads are most of a big status's time, and each is independent of the others.
const SPLIT_FROM: usize = 200;

/// What one instance's totals are read with: its held files (or files opened for this one
/// measurement), and whether they go back into the cache afterwards.
struct Reading {
    id: SpawnId,
    files: HeldFiles,
    keep: bool,
    totals: Option<(f64, u64)>,
    /// `totals` is the result of reading (not yet: `None` only because not read).
    read: bool,
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
        let mut budget = descriptors_to_spare();
        let in_cgroups = self.read_cgroups(instances, cgroups, &mut budget, now);
        let mut previous = self.previous.borrow_mut();
        for &(id, pid, started_at) in instances {
            let totals = match cgroups.get(&id) {
                Some(_) => in_cgroups.get(&id).copied().flatten(),
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
        measured
    }

    /// Forgets a released instance: its previous measurement and its held files.
    pub(crate) fn forget(&self, id: SpawnId) {
        self.previous.borrow_mut().remove(&id);
        self.cgroup_files.borrow_mut().remove(&id);
    }

    /// CPU seconds and resident bytes of the instances in cgroups, through their held files
    /// (opened and held, while `budget` lasts, the first time); `None` for one that cannot
    /// be read. Many are read half on a helper thread, half here.
    fn read_cgroups(
        &self,
        instances: &[(SpawnId, Pid, Instant)],
        cgroups: &HashMap<SpawnId, InstanceCgroup>,
        budget: &mut u64,
        now: Instant,
    ) -> HashMap<SpawnId, Option<(f64, u64)>> {
        let mut held = self.cgroup_files.borrow_mut();
        let mut readings = Vec::new();
        let mut unreadable = HashMap::new();
        for &(id, _, _) in instances {
            let Some(cgroup) = cgroups.get(&id) else {
                continue;
            };
            let controller = match self.memory_controller.get() {
                Some(known) => known,
                None => {
                    let found = cgroup.file("memory.current").exists();
                    self.memory_controller.set(Some(found));
                    found
                }
            };
            let reading = match held.remove(&id) {
                Some(files) => Some((files, true)),
                None => HeldFiles::open(cgroup, controller).map(|files| {
                    let keep = *budget >= 2;
                    if keep {
                        *budget -= 2;
                    }
                    (files, keep)
                }),
            };
            match reading {
                Some((files, keep)) => readings.push(Reading {
                    id,
                    files,
                    keep,
                    totals: None,
                    read: false,
                }),
                None => {
                    unreadable.insert(id, None);
                }
            }
        }
        let controller = self.memory_controller.get().unwrap_or(false);
        let mut buffers = self.buffers.borrow_mut();
        let (text_buffer, statm_buffer) = &mut *buffers;
        let middle = if readings.len() >= SPLIT_FROM {
            readings.len() / 2
        } else {
            readings.len()
        };
        let (here, there) = readings.split_at_mut(middle);
        let mut budget_there = *budget / 2;
        *budget -= budget_there;
        std::thread::scope(|scope| {
            let helper = (!there.is_empty()).then(|| {
                std::thread::Builder::new()
                    .name("usage".into())
                    .spawn_scoped(scope, || {
                        let (mut text, mut statm) = (Vec::new(), Vec::new());
                        read_all(
                            there,
                            controller,
                            (&mut text, &mut statm),
                            &mut budget_there,
                            now,
                        );
                    })
            });
            read_all(here, controller, (text_buffer, statm_buffer), budget, now);
            // Its reads cannot panic; were it to, the rest are read below.
            if let Some(Ok(helper)) = helper {
                let _ = helper.join();
            }
        });
        // What the helper did not read (no thread to be had): here.
        read_all(
            &mut readings,
            controller,
            (text_buffer, statm_buffer),
            budget,
            now,
        );
        let mut totals = unreadable;
        for reading in readings {
            totals.insert(reading.id, reading.totals);
            if reading.keep {
                held.insert(reading.id, reading.files);
            }
        }
        totals
    }
}

/// Reads the totals of every reading not read yet.
fn read_all(
    readings: &mut [Reading],
    memory_controller: bool,
    (text_buffer, statm_buffer): (&mut Vec<u8>, &mut Vec<u8>),
    budget: &mut u64,
    now: Instant,
) {
    for reading in readings.iter_mut().filter(|r| !r.read) {
        reading.totals = reading.files.totals(
            memory_controller,
            (&mut *text_buffer, &mut *statm_buffer),
            budget,
            now,
        );
        reading.read = true;
    }
}

impl HeldFiles {
    fn open(cgroup: &InstanceCgroup, memory_controller: bool) -> Option<HeldFiles> {
        let memory_file = if memory_controller {
            "memory.current"
        } else {
            "cgroup.procs"
        };
        Some(HeldFiles {
            cpu_stat: File::open(cgroup.file("cpu.stat")).ok()?,
            memory: File::open(cgroup.file(memory_file)).ok()?,
            statm: HashMap::new(),
            memory_read: None,
        })
    }

    /// CPU seconds and resident bytes of everything in the cgroup at `now`: memory read again
    /// only if the cgroup ran since, or the last reading is [`MEMORY_MAX_AGE`] old. The
    /// buffers are reused for the whole status, not one allocated and zeroed per file read.
    fn totals(
        &mut self,
        memory_controller: bool,
        buffers: (&mut Vec<u8>, &mut Vec<u8>),
        budget: &mut u64,
        now: Instant,
    ) -> Option<(f64, u64)> {
        let usec: u64 = read_held_into(&self.cpu_stat, buffers.0)?
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        let memory = match self.memory_read {
            Some(read)
                if read.usage_usec == usec
                    && now.saturating_duration_since(read.at) < MEMORY_MAX_AGE =>
            {
                read.bytes
            }
            _ => {
                let bytes = self.read_memory(memory_controller, buffers, budget)?;
                self.memory_read = Some(MemoryRead {
                    usage_usec: usec,
                    bytes,
                    at: now,
                });
                bytes
            }
        };
        Some((usec as f64 / 1e6, memory))
    }

    /// Resident bytes of everything in the cgroup, from its files now.
    fn read_memory(
        &mut self,
        memory_controller: bool,
        (text_buffer, statm_buffer): (&mut Vec<u8>, &mut Vec<u8>),
        budget: &mut u64,
    ) -> Option<u64> {
        let memory_text = read_held_into(&self.memory, text_buffer)?;
        if memory_controller {
            return memory_text.trim().parse().ok();
        }
        let mut statm = HashMap::new();
        let mut sum = 0;
        for pid in memory_text.lines().filter_map(|l| l.trim().parse().ok()) {
            let (file, new) = match self.statm.remove(&pid) {
                Some(file) => (file, false),
                None => match File::open(format!("/proc/{pid}/statm")) {
                    Ok(file) => (file, true),
                    Err(_) => continue,
                },
            };
            // Fails once the process is gone (it left the list between the two reads).
            let Some(bytes) = read_held_into(&file, statm_buffer).and_then(statm_bytes) else {
                continue;
            };
            sum += bytes;
            if !new {
                statm.insert(pid, file);
            } else if *budget > 0 {
                *budget -= 1;
                statm.insert(pid, file);
            }
        }
        // Files of processes no longer listed are closed here.
        self.statm = statm;
        Some(sum)
    }
}

/// How many more descriptors the meter may hold: it keeps clusterd under half of its
/// descriptor limit, so that the cache never stands between an instance and its spawn.
fn descriptors_to_spare() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    open_descriptors().map_or(0, |open| (limit.rlim_cur / 2).saturating_sub(open))
}

/// How many descriptors clusterd has open. Since Linux 6.2 the size of `/proc/self/fd` is
/// that count, one `stat`; before, the directory has to be listed.
fn open_descriptors() -> Option<u64> {
    match fs::metadata("/proc/self/fd") {
        Ok(meta) if meta.len() > 0 => Some(meta.len()),
        _ => fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
    }
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
    statm_bytes(&read_small(Path::new(&format!("/proc/{pid}/statm")))?)
}

/// Resident bytes from the text of a statm file (its second field, in pages).
fn statm_bytes(statm: &str) -> Option<u64> {
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
    let open_fds = open_descriptors().unwrap_or(0);
    Some(DaemonStatus {
        pid,
        cpu_seconds: cpu as f64 / ticks,
        memory_bytes: resident_bytes(pid as i32)?,
        open_fds,
        start_time_seconds: boot_time + started_ticks / ticks,
        version: env!("CARGO_PKG_VERSION").to_string(),
        reexecuted_at_seconds: None,
    })
}

/// A small kernel file as text, in as few system calls as it takes: open, one read (more
/// only if the buffer fills), close. `fs::read_to_string` also asks for the file's size,
/// which these files do not know: with 1000 instances that is 3000 system calls per status.
fn read_small(path: &Path) -> Option<String> {
    read_held(&File::open(path).ok()?)
}

/// The whole text of an open kernel file, read from offset 0 (the kernel regenerates it):
/// one `pread`, more only if the buffer fills.
fn read_held(file: &File) -> Option<String> {
    read_held_into(file, &mut Vec::new()).map(str::to_owned)
}

/// [`read_held`] into `buffer`, which keeps its size for the next file.
fn read_held_into<'b>(file: &File, buffer: &'b mut Vec<u8>) -> Option<&'b str> {
    if buffer.len() < 4096 {
        buffer.resize(4096, 0);
    }
    let mut filled = 0;
    loop {
        let n = file.read_at(&mut buffer[filled..], filled as u64).ok()?;
        filled += n;
        if n == 0 || filled < buffer.len() {
            break;
        }
        buffer.resize(buffer.len() * 2, 0);
    }
    std::str::from_utf8(buffer.get(..filled)?).ok()
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

    #[test]
    fn a_held_kernel_file_reads_whole_again_and_fails_once_its_process_is_gone() {
        let _no_fork = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let file = File::open(format!("/proc/{}/statm", child.id())).expect("statm");
        let first = read_held(&file).expect("first read");
        let second = read_held(&file).expect("second read");
        assert!(statm_bytes(&first).is_some() && statm_bytes(&second).is_some());
        let _ = child.kill();
        let _ = child.wait();
        assert!(read_held(&file).as_deref().and_then(statm_bytes).is_none());
    }
}
