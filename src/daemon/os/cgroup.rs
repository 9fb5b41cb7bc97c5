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
//!
//! An instance running as root can make cgroups of its own below its cgroup, move processes
//! into them and freeze them (`cgroup.freeze`). Everything here therefore works on the whole
//! subtree: `cgroup.kill` and `populated` cover it already; other signals and the thaw of a
//! stop walk it ([`Walk`]), and so does the removal, children before parents. A subtree may
//! be thousands of cgroups wide or deep: a walk holds one directory open and no recursion,
//! and each call does a bounded amount of it (the supervisor loop does this work).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, Pid, UnlinkatFlags};

/// How long start-up waits for what a previous clusterd left to die after `cgroup.kill`.
const LEFTOVER_DEADLINE: Duration = Duration::from_secs(5);

/// The most steps (about one per cgroup) a signal other than SIGKILL walks below an
/// instance's cgroup: the walk runs in the supervisor loop, on a stop. Past it the processes
/// of the cgroups not reached get `cgroup.kill` at `kill_timeout`, like any that ignore the
/// signal. (Below [`LIST_LIMIT`], so a signal walk never lists a directory twice.)
const SIGNAL_WALK_LIMIT: usize = 1024;

/// The most subdirectory names read from one directory at once: a removal lists it again
/// once those are gone.
const LIST_LIMIT: usize = 4096;

/// The cgroup under which this clusterd creates one cgroup per instance.
#[derive(Debug)]
pub(crate) struct CgroupTree {
    root: PathBuf,
    /// The next `<serial>`.
    serial: u64,
    /// Created ahead, empty: the cgroup of the next instance of each (unit, index).
    spares: HashMap<(String, u32), PathBuf>,
}

/// The tree's bookkeeping in the `daemon-reexec` state: the next serial, and each spare
/// cgroup by (unit, index).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldTree {
    pub serial: u64,
    pub spares: Vec<(String, u32, PathBuf)>,
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

    /// `daemon-reexec`: the next serial and the spares, for the new image.
    pub(crate) fn held(&self) -> HeldTree {
        let spares = self
            .spares
            .iter()
            .map(|((unit, index), path)| (unit.clone(), *index, path.clone()))
            .collect();
        HeldTree {
            serial: self.serial,
            spares,
        }
    }

    /// The new image's side of [`CgroupTree::held`]: spares outside this tree are ignored.
    pub(crate) fn resume(&mut self, held: HeldTree) {
        self.serial = self.serial.max(held.serial);
        for (unit, index, path) in held.spares {
            if path.parent() == Some(self.root.as_path()) {
                self.spares.insert((unit, index), path);
            }
        }
    }

    /// An instance's cgroup after `daemon-reexec`, by its path: `None` if the path is not
    /// one of this tree's cgroups (`present`, from [`CgroupTree::present`]).
    pub(crate) fn adopt(
        &self,
        path: PathBuf,
        present: &std::collections::HashSet<PathBuf>,
    ) -> Option<InstanceCgroup> {
        (path.parent() == Some(self.root.as_path()) && present.contains(&path))
            .then_some(InstanceCgroup { path })
    }

    /// The cgroups in the tree now, read once: a `stat` per instance to check that its
    /// cgroup is there would be 1000 lookups during a re-exec's pause.
    pub(crate) fn present(&self) -> std::collections::HashSet<PathBuf> {
        fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
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
            let pids = pids_below(path);
            // `populated` too: the pids listed are those of at most SIGNAL_WALK_LIMIT cgroups.
            if !pids.is_empty() || populated(path) {
                killed += pids.len().max(1);
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
            // With whatever an instance made below it, within the same deadline.
            let mut removal = Removal::of(path.clone());
            match removal.go_on(&mut Budget::until(deadline)) {
                Ok(true) => {}
                Ok(false) => warn!(
                    "cannot remove the leftover cgroup {} within {}s; it is left",
                    path.display(),
                    LEFTOVER_DEADLINE.as_secs()
                ),
                Err(e) => warn!("cannot remove the leftover cgroup: {e}"),
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
        match fs::remove_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // Said once, at exit, with what is left: the next clusterd on this socket clears
            // it before it starts anything.
            Err(e) => {
                let left: Vec<String> = fs::read_dir(&self.root)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .take(20)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                warn!(
                    "cannot remove {}: {e}; left in it: {}",
                    self.root.display(),
                    left.join(", ")
                );
            }
        }
    }
}

impl InstanceCgroup {
    /// Its directory (`daemon-reexec` hands it over).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path as `/proc/PID/cgroup` shows it for a process inside (for attributing
    /// notifications to the instance they come from).
    pub(crate) fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// Sends `signal` to every process of the instance, in its cgroup and in every cgroup it
    /// made below: SIGKILL through `cgroup.kill`, which covers them all and also catches
    /// processes forked meanwhile; other signals to each pid listed (a bounded walk:
    /// [`SIGNAL_WALK_LIMIT`]). SIGCONT also thaws every frozen cgroup of the subtree: it
    /// follows the `kill_signal` of a stop, which a frozen process, like a stopped one, would
    /// otherwise never see. The error says the cgroup's files could not be used (at clusterd's
    /// fd limit, say): the caller then signals the instance's process group instead.
    pub(crate) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        self.signal_number(signal as i32)
    }

    /// [`InstanceCgroup::signal`] by number, for the signals `Signal` has no name for
    /// (`clusterctl kill --signal 34`, the real-time ones).
    pub(crate) fn signal_number(&self, number: i32) -> std::io::Result<()> {
        if number == libc::SIGKILL {
            return OpenOptions::new()
                .write(true)
                .open(self.path.join("cgroup.kill"))
                .and_then(|mut f| f.write_all(b"1"));
        }
        let mut walk = match Walk::new(&self.path) {
            Ok(walk) => walk,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut budget = Budget::steps(SIGNAL_WALK_LIMIT);
        let mut top = true;
        let complete = walk.run(&mut budget, &mut |visit| {
            let Visit::Enter(directory) = visit else {
                return Ok(());
            };
            if number == libc::SIGCONT {
                thaw(directory);
            }
            // The instance's own cgroup must be readable; one below that is not (removed
            // meanwhile, say) is no reason to fall back to the process group.
            let pids = match pids_at(directory) {
                Ok(pids) => pids,
                Err(e) if top => return Err(e),
                Err(e) => {
                    debug!(
                        "cannot list the processes of a cgroup below {:?}: {e}",
                        self.name()
                    );
                    Vec::new()
                }
            };
            top = false;
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                if unsafe { libc::kill(pid.as_raw(), number) } != 0 {
                    let e = Errno::last();
                    if e != Errno::ESRCH {
                        debug!("kill({pid}, {number}) failed: {e}");
                    }
                }
            }
            Ok(())
        })?;
        if !complete {
            warn!(
                "cgroup {:?} has more than {SIGNAL_WALK_LIMIT} cgroups below it: signal {number} went to the processes of the first ones only (cgroup.kill reaches them all)",
                self.name(),
            );
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

    /// Removes the cgroup if it is empty and has no cgroup below it (the common case, one
    /// `rmdir`). False otherwise: [`InstanceCgroup::populated`] tells whether processes are
    /// left, and a [`Removal`] removes a subtree.
    pub(crate) fn remove(&self) -> bool {
        match fs::remove_dir(&self.path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => true,
            Err(_) => false,
        }
    }

    /// The processes left in the cgroup and below it (at most [`SIGNAL_WALK_LIMIT`] cgroups
    /// looked at), for a message saying what is left.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        pids_below(&self.path)
    }
}

/// The removal of an instance's cgroup and of every cgroup below it, once no process is left
/// in them: children before parents, a [`Budget`] at a time, so that thousands of cgroups (or
/// a chain thousands deep) never hold the supervisor loop for long.
pub(crate) struct Removal {
    path: PathBuf,
    /// Started once a plain `rmdir` found cgroups below.
    walk: Option<Walk>,
}

impl Removal {
    pub(crate) fn new(cgroup: InstanceCgroup) -> Removal {
        Removal {
            path: cgroup.path,
            walk: None,
        }
    }

    fn of(path: PathBuf) -> Removal {
        Removal { path, walk: None }
    }

    /// Its directory (`daemon-reexec` hands it over).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup's name, for messages.
    pub(crate) fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// Removes on, within `budget`. `Ok(true)` once the whole subtree is gone, `Ok(false)` if
    /// the budget ran out first; the error says what could not be removed (a process is left
    /// in it, say): the removal is over then.
    pub(crate) fn go_on(&mut self, budget: &mut Budget) -> Result<bool, String> {
        let walk = match &mut self.walk {
            Some(walk) => walk,
            None => {
                if !budget.take() {
                    return Ok(false);
                }
                match fs::remove_dir(&self.path) {
                    Ok(()) => return Ok(true),
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
                    // Cgroups below (EBUSY; ENOTEMPTY in any other file system).
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
                    Err(e) => return Err(format!("cannot remove {}: {e}", self.path.display())),
                }
                match Walk::new(&self.path) {
                    Ok(walk) => self.walk.insert(walk),
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
                    Err(e) => return Err(format!("cannot open {}: {e}", self.path.display())),
                }
            }
        };
        let complete = walk
            .run(budget, &mut |visit| match visit {
                Visit::Enter(_) => Ok(()),
                Visit::Leave { parent, name } => {
                    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => Ok(()),
                        Err(e) => Err(std::io::Error::other(format!(
                            "cannot remove the cgroup {name:?} below it: {e}"
                        ))),
                    }
                }
            })
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if !complete {
            return Ok(false);
        }
        self.walk = None;
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(format!("cannot remove {}: {e}", self.path.display())),
        }
    }
}

/// How much one call may do: a number of steps (about one per cgroup), and a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    steps: usize,
    until: Option<Instant>,
}

impl Budget {
    pub(crate) fn steps(steps: usize) -> Budget {
        Budget { steps, until: None }
    }

    pub(crate) fn until(deadline: Instant) -> Budget {
        Budget {
            steps: usize::MAX,
            until: Some(deadline),
        }
    }

    /// Takes one step if any is left.
    pub(crate) fn take(&mut self) -> bool {
        if self.steps == 0 || self.until.is_some_and(|until| Instant::now() >= until) {
            return false;
        }
        self.steps -= 1;
        true
    }
}

/// One step of a [`Walk`].
enum Visit<'a> {
    /// A cgroup was entered, the top one first: parents before their children.
    Enter(BorrowedFd<'a>),
    /// Every cgroup below `name`, a cgroup in `parent`, has been visited: children before
    /// their parents. Not said of the top.
    Leave {
        parent: BorrowedFd<'a>,
        name: &'a OsStr,
    },
}

/// A depth-first walk of a cgroup subtree that can stop and go on later. It holds one
/// directory open, whatever the depth (every step is relative to it, so even a chain deeper
/// than a path can name is walked), and keeps what is left to visit on the heap, never on
/// the stack.
struct Walk {
    /// The directory the walk is in.
    at: OwnedFd,
    /// The top has been entered.
    started: bool,
    /// The names entered, from the top down to `at`.
    entered: Vec<OsString>,
    /// Per level, the top's first and `at`'s last: the subdirectories still to enter, and
    /// whether the listing stopped at [`LIST_LIMIT`] (then the directory is listed again once
    /// they are done).
    to_enter: Vec<(Vec<OsString>, bool)>,
}

impl Walk {
    fn new(top: &Path) -> std::io::Result<Walk> {
        let at = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(top)?;
        Ok(Walk {
            at: at.into(),
            started: false,
            entered: Vec::new(),
            to_enter: Vec::new(),
        })
    }

    /// Walks on within `budget`, telling `visit` of each step. True once the whole subtree
    /// has been visited; an error (of `visit`, or a directory that cannot be read) ends the
    /// walk.
    fn run(
        &mut self,
        budget: &mut Budget,
        visit: &mut dyn FnMut(Visit<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<bool> {
        while budget.take() {
            if !self.started {
                self.started = true;
                // Visited before it is listed: the top's own processes are signalled even
                // if its subdirectories cannot be read.
                visit(Visit::Enter(self.at.as_fd()))?;
                self.to_enter.push(subdirectories(self.at.as_fd())?);
                continue;
            }
            let Some((names, truncated)) = self.to_enter.last_mut() else {
                return Ok(true);
            };
            let truncated = *truncated;
            if let Some(name) = names.pop() {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let directory = match openat(&self.at, name.as_os_str(), flags, Mode::empty()) {
                    Ok(directory) => directory,
                    // Removed meanwhile.
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                self.at = directory;
                self.entered.push(name);
                visit(Visit::Enter(self.at.as_fd()))?;
                let listing = subdirectories(self.at.as_fd())?;
                self.to_enter.push(listing);
                continue;
            }
            if truncated {
                let listing = subdirectories(self.at.as_fd())?;
                if let Some(level) = self.to_enter.last_mut() {
                    *level = listing;
                }
                continue;
            }
            self.to_enter.pop();
            let Some(name) = self.entered.pop() else {
                // The top is left: the whole subtree has been visited.
                return Ok(true);
            };
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            self.at = openat(&self.at, "..", flags, Mode::empty())?;
            visit(Visit::Leave {
                parent: self.at.as_fd(),
                name: &name,
            })?;
        }
        Ok(false)
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

/// The subdirectories (cgroups) of `directory`: at most [`LIST_LIMIT`] names, and whether
/// there may be more.
fn subdirectories(directory: BorrowedFd<'_>) -> std::io::Result<(Vec<OsString>, bool)> {
    // Through /proc: an fd names the directory whatever its depth.
    let entries = fs::read_dir(format!("/proc/self/fd/{}", directory.as_raw_fd()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if names.len() == LIST_LIMIT {
                return Ok((names, true));
            }
            names.push(entry.file_name());
        }
    }
    Ok((names, false))
}

/// The pids in `cgroup.procs` of the cgroup open as `directory`.
fn pids_at(directory: BorrowedFd<'_>) -> std::io::Result<Vec<Pid>> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let procs = openat(directory, "cgroup.procs", flags, Mode::empty())?;
    let mut text = String::new();
    fs::File::from(procs).read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .map(Pid::from_raw)
        .collect())
}

/// Thaws the cgroup open as `directory` (`cgroup.freeze` 0). A cgroup is frozen while it or
/// any cgroup above it is, so a stop thaws every cgroup of the subtree.
fn thaw(directory: BorrowedFd<'_>) {
    let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let written = openat(directory, "cgroup.freeze", flags, Mode::empty())
        .map_err(std::io::Error::from)
        .and_then(|fd| fs::File::from(fd).write_all(b"0"));
    if let Err(e) = written {
        debug!("cannot thaw a cgroup: {e}");
    }
}

/// Every pid in the cgroup at `path` and below it (a bounded walk), for messages.
fn pids_below(path: &Path) -> Vec<Pid> {
    let mut pids = Vec::new();
    if let Ok(mut walk) = Walk::new(path) {
        let _ = walk.run(&mut Budget::steps(SIGNAL_WALK_LIMIT), &mut |visit| {
            if let Visit::Enter(directory) = visit {
                pids.extend(pids_at(directory).unwrap_or_default());
            }
            Ok(())
        });
    }
    pids
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

    /// A tree `wide` children wide under `top/wide`, and a chain `depth` deep of long names
    /// (far past PATH_MAX), made by fd.
    fn make_tree(top: &Path, wide: usize, depth: usize) {
        fs::create_dir(top.join("wide")).unwrap();
        for i in 0..wide {
            fs::create_dir(top.join("wide").join(i.to_string())).unwrap();
        }
        let name = "d".repeat(200);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut at: OwnedFd = fs::File::open(top).unwrap().into();
        for _ in 0..depth {
            nix::sys::stat::mkdirat(&at, name.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
            at = openat(&at, name.as_str(), flags, Mode::empty()).unwrap();
        }
    }

    /// In memory where there is a tmpfs: thousands of directories on a busy disk are slow.
    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    }

    #[test]
    fn a_removal_goes_on_a_budget_at_a_time_through_any_width_and_depth() {
        let scratch = scratch();
        let top = scratch.path().join("instance");
        fs::create_dir(&top).unwrap();
        make_tree(&top, LIST_LIMIT + 10, 100);
        let mut removal = Removal::of(top.clone());
        let mut calls = 0;
        while !removal.go_on(&mut Budget::steps(50)).unwrap() {
            calls += 1;
            assert!(calls < 10_000, "the removal does not end");
        }
        assert!(calls > 10, "{calls} calls: the budget was not kept");
        assert!(!top.exists());
    }

    #[test]
    fn a_walk_enters_parents_before_children_and_leaves_children_first() {
        let scratch = scratch();
        let top = scratch.path();
        fs::create_dir_all(top.join("a/b")).unwrap();
        fs::create_dir(top.join("c")).unwrap();
        let mut walk = Walk::new(top).unwrap();
        let mut seen = Vec::new();
        let complete = walk
            .run(&mut Budget::steps(100), &mut |visit| {
                seen.push(match visit {
                    Visit::Enter(_) => "enter".to_string(),
                    Visit::Leave { name, .. } => format!("leave {}", name.to_string_lossy()),
                });
                Ok(())
            })
            .unwrap();
        assert!(complete);
        assert_eq!(seen.iter().filter(|s| *s == "enter").count(), 4);
        let leaves: Vec<&String> = seen.iter().filter(|s| s.starts_with("leave")).collect();
        assert_eq!(leaves.len(), 3);
        let b = seen.iter().position(|s| s == "leave b").unwrap();
        let a = seen.iter().position(|s| s == "leave a").unwrap();
        assert!(b < a, "{seen:?}");
    }

    #[test]
    fn tree_names_are_stable_per_socket_and_differ_between_sockets() {
        let a = fnv1a(Path::new("/run/clusterd/clusterd.sock"));
        assert_eq!(a, fnv1a(Path::new("/run/clusterd/clusterd.sock")));
        assert_ne!(a, fnv1a(Path::new("/tmp/other.sock")));
    }
}
