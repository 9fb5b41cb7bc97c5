//! Instances in cgroups (v2): where clusterd can create cgroups, every instance runs in a
//! cgroup of its own, so that nothing it starts can escape clusterd — not a process that calls
//! `setsid` or `setpgid`, not a daemon that double-forks — and so that a clusterd that was
//! SIGKILLed finds, when it starts again, everything its instances left behind.
//!
//! Layout: `<cgroup2 mount><clusterd's own cgroup>/clusterd.<hash>/<unit>.<index>.<serial>`,
//! where `<hash>` identifies this clusterd by its control socket path, so that several
//! clusterds on one machine (each with its own socket) never touch each other's instances,
//! and `<serial>` counts the cgroups this clusterd created.
//!
//! Creating a cgroup costs tens of microseconds, so it is done ahead: once an instance has
//! started, the cgroup its replacement will start in is created (a *spare*, empty), and a
//! restart after a crash finds it ready. Spares of a unit go when the unit stops, is removed
//! or is scaled down, and all of them when clusterd exits.
//!
//! What clusterd uses needs no controller: the cgroup directory (the child is created inside
//! with `clone3(CLONE_INTO_CGROUP)`; on older kernels it moves itself in through
//! `cgroup.procs` between fork and exec), `cgroup.kill` (SIGKILL to every process of the cgroup at once, including
//! ones forking meanwhile; Linux 5.14), `cgroup.events` (`populated 0` once the last process
//! has exited). Without a writable cgroup2 hierarchy, clusterd falls back to process groups.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long start-up waits for what a previous clusterd left to die after `cgroup.kill`.
const LEFTOVER_DEADLINE: Duration = Duration::from_secs(5);

/// The cgroup under which this clusterd creates one cgroup per instance.
#[derive(Debug)]
pub(crate) struct CgroupTree {
    root: PathBuf,
    /// The next `<serial>`.
    serial: u64,
    /// Created ahead, empty: the cgroup of the next instance of each (unit, index).
    spares: HashMap<(String, u32), PathBuf>,
}

/// The cgroup of one instance.
#[derive(Debug)]
pub(crate) struct InstanceCgroup {
    path: PathBuf,
}

/// The cgroup's directory, opened only for the spawn of its instance (an instance holds no
/// fd for its cgroup afterwards): `clone3(CLONE_INTO_CGROUP)` creates the child inside.
pub(crate) struct SpawnIntoCgroup {
    directory: OwnedFd,
}

impl SpawnIntoCgroup {
    pub(crate) fn directory(&self) -> RawFd {
        self.directory.as_raw_fd()
    }
}

impl CgroupTree {
    /// Finds the cgroup2 hierarchy and clusterd's own cgroup in it, and creates (or reuses)
    /// this clusterd's tree, named after its control socket. The error says why cgroups
    /// cannot be used here.
    pub(crate) fn create(control_socket: &Path) -> Result<CgroupTree, String> {
        let mount =
            cgroup2_mount().ok_or_else(|| "no cgroup2 file system is mounted".to_string())?;
        let own = own_cgroup()
            .ok_or_else(|| "clusterd's own cgroup is not in /proc/self/cgroup".to_string())?;
        let parent = mount.join(own.trim_start_matches('/'));
        if !parent.join("cgroup.kill").exists() && parent != mount {
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later is needed)",
                parent.display()
            ));
        }
        let root = parent.join(format!("clusterd.{:016x}", fnv1a(control_socket)));
        match fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
        }
        // The root cgroup of a hierarchy has no cgroup.kill; ours must.
        if !root.join("cgroup.kill").exists() {
            let _ = fs::remove_dir(&root);
            return Err("this kernel has no cgroup.kill (Linux 5.14 or later is needed)".into());
        }
        Ok(CgroupTree {
            root,
            serial: 1,
            spares: HashMap::new(),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Kills whatever a previous clusterd with the same control socket left in its instances'
    /// cgroups (it was SIGKILLed, say, and its instances' children lived on holding their
    /// sockets), waits for them to be gone, and removes those cgroups. Returns how many
    /// processes there were. Called once at start-up, before any socket is bound.
    pub(crate) fn clear_leftovers(&self) -> usize {
        let mut killed = 0;
        let Ok(entries) = fs::read_dir(&self.root) else {
            return 0;
        };
        let leftovers: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        for path in &leftovers {
            let pids = pids_in(path).unwrap_or_default();
            if !pids.is_empty() {
                killed += pids.len();
                warn!(
                    "killing {} process(es) a previous clusterd left in {}: {:?}",
                    pids.len(),
                    path.display(),
                    pids
                );
                cgroup_kill(path);
            }
        }
        let deadline = Instant::now() + LEFTOVER_DEADLINE;
        for path in &leftovers {
            // A bounded wait, once, at start-up: the processes were SIGKILLed.
            while populated(path) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Err(e) = fs::remove_dir(path) {
                warn!("cannot remove the leftover cgroup {}: {e}", path.display());
            }
        }
        killed
    }

    /// The cgroup of a new instance of (`unit`, `index`): its spare if there is one, else a
    /// new one; opened for the spawn.
    pub(crate) fn create_instance(
        &mut self,
        unit: &str,
        index: u32,
    ) -> std::io::Result<(InstanceCgroup, SpawnIntoCgroup)> {
        let path = match self.spares.remove(&(unit.to_string(), index)) {
            Some(spare) => spare,
            None => self.create_cgroup(unit, index)?,
        };
        let directory = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&path)
            .inspect_err(|_| {
                let _ = fs::remove_dir(&path);
            })?;
        Ok((
            InstanceCgroup { path },
            SpawnIntoCgroup {
                directory: directory.into(),
            },
        ))
    }

    /// Creates the spare of (`unit`, `index`) if it has none: called once an instance has
    /// started, off the path of a restart. A failure only means the next start creates its
    /// cgroup itself (and reports what fails then).
    pub(crate) fn prepare_spare(&mut self, unit: &str, index: u32) {
        let key = (unit.to_string(), index);
        if self.spares.contains_key(&key) {
            return;
        }
        match self.create_cgroup(unit, index) {
            Ok(path) => {
                self.spares.insert(key, path);
            }
            Err(e) => debug!("cannot create a spare cgroup for {unit}[{index}]: {e}"),
        }
    }

    /// Removes the spares of `unit` for indexes `from` and above (every one for 0).
    pub(crate) fn remove_spares(&mut self, unit: &str, from: u32) {
        self.spares.retain(|(spare_unit, index), path| {
            let keep = spare_unit != unit || *index < from;
            if !keep {
                let _ = fs::remove_dir(&*path);
            }
            keep
        });
    }

    fn create_cgroup(&mut self, unit: &str, index: u32) -> std::io::Result<PathBuf> {
        loop {
            let path = self.root.join(format!("{unit}.{index}.{}", self.serial));
            self.serial += 1;
            match fs::create_dir(&path) {
                Ok(()) => return Ok(path),
                // Left by a previous clusterd and not removable then: take the next serial.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for CgroupTree {
    /// The spares go, and the tree itself once empty (every instance's cgroup is removed once
    /// its last process has exited).
    fn drop(&mut self) {
        for path in self.spares.values() {
            let _ = fs::remove_dir(path);
        }
        let _ = fs::remove_dir(&self.root);
    }
}

impl InstanceCgroup {
    /// The path as `/proc/PID/cgroup` shows it for a process inside (for attributing
    /// notifications to the instance they come from).
    pub(crate) fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// Sends `signal` to every process of the instance: SIGKILL through `cgroup.kill`, which
    /// also catches processes forked meanwhile; other signals to each pid listed. The error
    /// says the cgroup's files could not be used (at clusterd's fd limit, say): the caller
    /// then signals the instance's process group instead.
    pub(crate) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if signal == Signal::SIGKILL {
            return OpenOptions::new()
                .write(true)
                .open(self.path.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"));
        }
        for pid in pids_in(&self.path)? {
            match kill(pid, signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => debug!("kill({pid}, {}) failed: {e}", signal.as_str()),
            }
        }
        Ok(())
    }

    /// True while any process is left in the cgroup. An empty one stays empty: nothing is
    /// left in it to fork.
    pub(crate) fn populated(&self) -> bool {
        populated(&self.path)
    }

    /// The path of one of the cgroup's files (`cpu.stat`, ...).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Removes the (empty) cgroup. False if it is not empty yet.
    pub(crate) fn remove(&self) -> bool {
        match fs::remove_dir(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => true,
            Err(_) => false,
        }
    }
}

fn cgroup_kill(path: &Path) {
    let written = OpenOptions::new()
        .write(true)
        .open(path.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if let Err(e) = written {
        warn!("cannot kill the processes of {}: {e}", path.display());
    }
}

/// `populated 1` in `cgroup.events`. A cgroup that cannot be read counts as empty: it was
/// removed.
fn populated(path: &Path) -> bool {
    use std::io::Read;
    // One read (the file is two short lines), no metadata lookup: this is on a restart's path.
    let mut events = [0u8; 256];
    match fs::File::open(path.join("cgroup.events")).and_then(|mut f| f.read(&mut events)) {
        Ok(n) => events[..n]
            .split(|&b| b == b'\n')
            .any(|line| line == b"populated 1"),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        // Unknown (out of fds, say): populated until `rmdir` says otherwise, which needs no fd.
        Err(_) => true,
    }
}

fn pids_in(path: &Path) -> std::io::Result<Vec<Pid>> {
    let text = match fs::read_to_string(path.join("cgroup.procs")) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .map(Pid::from_raw)
        .collect())
}

/// The mount point of the cgroup2 file system: `/sys/fs/cgroup` on current distributions,
/// `/sys/fs/cgroup/unified` on hybrid ones.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        // `36 25 0:30 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,...`
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount_point = before.split(' ').nth(4)?;
        Some(PathBuf::from(unescape_mount_path(mount_point)))
    })
}

/// mountinfo writes spaces and a few other bytes as `\040`-style octal escapes.
fn unescape_mount_path(text: &str) -> std::ffi::OsString {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(value) = u8::from_str_radix(&text[i + 1..i + 4], 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsStr::from_bytes(&out).to_owned()
}

/// clusterd's own cgroup in the cgroup2 hierarchy: the `0::` line of /proc/self/cgroup.
fn own_cgroup() -> Option<String> {
    cgroup_of("self")
}

/// The cgroup2 path of process `pid` (`"self"` for clusterd), from `/proc/PID/cgroup`.
pub(crate) fn cgroup_of(pid: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// FNV-1a, 64 bits: a stable name for a control socket path (no hash crate for 8 lines).
fn fnv1a(path: &Path) -> u64 {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Logs which isolation is in use, once, at start-up.
pub(crate) fn log_choice(tree: &Result<CgroupTree, String>) {
    match tree {
        Ok(tree) => info!(
            "instances run in cgroups of their own under {}",
            tree.root().display()
        ),
        Err(reason) => warn!(
            "instances run in process groups, not cgroups ({reason}): a process that leaves its instance's process group escapes stop"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
    }

    #[test]
    fn tree_names_are_stable_per_socket_and_differ_between_sockets() {
        let a = fnv1a(Path::new("/run/clusterd/clusterd.sock"));
        assert_eq!(a, fnv1a(Path::new("/run/clusterd/clusterd.sock")));
        assert_ne!(a, fnv1a(Path::new("/tmp/other.sock")));
    }
}
