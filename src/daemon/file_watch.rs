//! `watch`: a thread of its own owns one inotify instance for every unit that watches files.
//! The supervisor loop only tells it what each unit watches (a command on a channel, an
//! eventfd to wake it); the thread walks the trees, follows the changes and posts
//! `Event::FilesChanged(unit)` (at most one per unit per 100 ms), so no walk of a file system
//! ever runs on the loop, and a unit whose `watch` did not change keeps its watches.
//!
//! The path is watched, not the inode: the parent directory of each watched path is watched
//! too, for that name, so a deploy that swaps a directory (`mv app.new app`), deletes and
//! recreates it, or replaces a watched file is followed: the path is resolved again and the
//! old tree's watches are dropped (edits to `app.old` are no change). One watch serves every
//! unit that wants its directory (inotify has one descriptor per inode), and its events go to
//! all of them.
//!
//! Bounds, since another user may write in a watched tree: trees are walked through
//! directory fds, never following a symlink (out of the tree, or into a loop), at most
//! [`MAX_DEPTH`] deep (also when made one directory at a time), their paths together at most
//! [`MAX_PATH_BYTES_PER_UNIT`]; a unit gets at most [`MAX_DIRECTORIES_PER_UNIT`] watches and clusterd
//! at most half the system's `fs.inotify.max_user_watches` (they are counted per user, and
//! root's other programs need theirs); what is left unwatched is counted and shown in status.
//! An overflowed event queue counts as a change of every unit, whose trees are walked again.
//! Names (and paths, for a pattern with a `/`) that match the unit's `watch_ignore` are
//! neither watched nor reported.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::supervisor::event::Event;
use crate::unit::Unit;

/// The most directories one unit watches (a watch of `/` is a mistake, and an instance that
/// can write in its tree must not make clusterd grow without end). Documented in
/// docs/unit-files.md.
pub(crate) const MAX_DIRECTORIES_PER_UNIT: usize = 8192;

/// Directories deeper than this below a watched path are not watched.
const MAX_DEPTH: usize = 128;

/// The most bytes of path names one unit's watches keep (a tree of long names, deep, would
/// otherwise make each of its 8192 paths kilobytes long).
const MAX_PATH_BYTES_PER_UNIT: usize = 2 << 20;

/// A unit's changes are posted to the loop at most this often; the last one always is.
const POST_INTERVAL: Duration = Duration::from_millis(100);

/// At most this many reads of events before the thread looks at its commands again.
const BATCHES_PER_ROUND: usize = 64;

/// What a change is: a file written and closed, created, removed or renamed; and for the
/// watched directory itself, being removed or renamed.
fn interesting() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// What a unit watches, as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchSpec {
    roots: Vec<PathBuf>,
    ignore: Vec<String>,
}

/// What status shows of a unit's watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WatchReport {
    /// Directories watched.
    pub(crate) directories: u64,
    /// Why some of what the unit asks for is not watched (a limit, a missing path).
    pub(crate) problem: Option<String>,
}

/// The loop's side: tells the watcher thread what each unit watches, reads its reports.
pub(crate) struct FileWatch {
    commands: Sender<(String, Option<WatchSpec>)>,
    wake: Arc<EventFd>,
    reports: Arc<Mutex<HashMap<String, WatchReport>>>,
}

impl FileWatch {
    /// Creates the inotify instance and starts the thread that owns it.
    pub(crate) fn start(events: EventSender) -> std::io::Result<FileWatch> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let (commands, inbox) = crossbeam_channel::unbounded();
        let reports = Arc::new(Mutex::new(HashMap::new()));
        let watcher = Watcher::new(inotify, events, Arc::clone(&reports));
        let thread_wake = Arc::clone(&wake);
        std::thread::Builder::new()
            .name("file-watch".into())
            .spawn(move || watcher.run(&inbox, &thread_wake))?;
        Ok(FileWatch {
            commands,
            wake,
            reports,
        })
    }

    /// Watches what `unit` asks for, instead of what it watched before (nothing, for a unit
    /// without `watch` or one that is gone). Returns at once: the thread does the work, and
    /// does none if nothing changed.
    pub(crate) fn set(&self, name: &str, unit: Option<&Unit>) {
        let spec = unit.filter(|u| !u.watch.is_empty()).map(|u| WatchSpec {
            roots: u.watch.clone(),
            ignore: u.watch_ignore.clone(),
        });
        if self.commands.send((name.to_string(), spec)).is_ok() {
            let _ = self.wake.write(1);
        }
    }

    /// What unit `name` watches now, if it watches anything.
    pub(crate) fn report(&self, name: &str) -> Option<WatchReport> {
        lock(&self.reports).get(name).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a unit wants a watch: a directory of the tree of its `root`-th path, or the parent
/// of that path (for its name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    unit: String,
    root: usize,
    role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Tree(PathBuf),
    Parent,
}

/// One unit's watching, in the thread.
struct UnitWatch {
    spec: WatchSpec,
    /// Directories of its trees watched.
    directories: usize,
    /// The length of their paths, together.
    path_bytes: usize,
    /// Directories met but not watched for a limit (at least this many).
    not_watched: usize,
    /// Which limit that was.
    limit: Option<String>,
    /// Per path: why it is not watched (missing, unreadable), if it is not.
    missing: Vec<Option<String>>,
}

impl UnitWatch {
    /// One of its directories is no longer watched.
    fn forget(&mut self, path: &Path) {
        self.directories = self.directories.saturating_sub(1);
        self.path_bytes = self.path_bytes.saturating_sub(path.as_os_str().len());
    }
}

/// Whether a directory was watched by [`Watcher::watch_dir`].
enum Added {
    New,
    /// The unit watches it already through this path: not walked again (a loop).
    Known,
    Refused,
}

struct Watcher {
    inotify: Inotify,
    events: EventSender,
    reports: Arc<Mutex<HashMap<String, WatchReport>>>,
    /// Who wants each watch.
    owners: HashMap<WatchDescriptor, Vec<Owner>>,
    units: HashMap<String, UnitWatch>,
    /// clusterd's own bound on watches: half the system's per-user limit.
    limit: usize,
    /// `/proc/self/fd` names an open directory, so watches are added by fd, not by path.
    proc_fds: bool,
    /// Units changed whose event is not posted yet, and when each was posted last.
    pending: BTreeSet<String>,
    posted: HashMap<String, Instant>,
}

impl Watcher {
    fn new(
        inotify: Inotify,
        events: EventSender,
        reports: Arc<Mutex<HashMap<String, WatchReport>>>,
    ) -> Watcher {
        let system = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(8192);
        Watcher {
            inotify,
            events,
            reports,
            owners: HashMap::new(),
            units: HashMap::new(),
            limit: (system / 2).max(1),
            proc_fds: Path::new("/proc/self/fd").is_dir(),
            pending: BTreeSet::new(),
            posted: HashMap::new(),
        }
    }

    /// Waits for commands and events; ends when clusterd's loop is gone.
    fn run(mut self, inbox: &Receiver<(String, Option<WatchSpec>)>, wake: &EventFd) {
        // A panic costs one unit's setup or one batch of events, never the thread (see
        // thread_guard); a lost batch counts as a change of every watching unit.
        let mut guard = ThreadGuard::new("file-watch");
        loop {
            let timeout = self
                .next_post(Instant::now())
                .map_or(PollTimeout::NONE, |d| {
                    PollTimeout::try_from(d.max(Duration::from_millis(1)))
                        .unwrap_or(PollTimeout::MAX)
                });
            let mut fds = [
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!("file watching stops: {e}");
                    return;
                }
            }
            let _ = wake.read();
            while let Ok((unit, spec)) = inbox.try_recv() {
                if let Err(caught) = guard.run(|| self.set(&unit, spec)) {
                    guard.report(
                        caught,
                        "setting up a unit's watches",
                        "that unit's watches may be incomplete",
                    );
                }
            }
            for _ in 0..BATCHES_PER_ROUND {
                match self.inotify.read_events() {
                    Ok(batch) if !batch.is_empty() => {
                        if let Err(caught) = guard.run(|| self.on_batch(batch)) {
                            guard.report(
                                caught,
                                "reading watch events",
                                "every watching unit counts as changed",
                            );
                            let units: Vec<String> = self.units.keys().cloned().collect();
                            self.pending.extend(units);
                        }
                    }
                    Ok(_) | Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        warn!("file watching stops: {e}");
                        return;
                    }
                }
            }
            if !self.post_changes(Instant::now()) {
                return;
            }
        }
    }

    /// How long until the next pending change may be posted.
    fn next_post(&self, now: Instant) -> Option<Duration> {
        self.pending
            .iter()
            .map(|unit| {
                self.posted
                    .get(unit)
                    .and_then(|at| at.checked_add(POST_INTERVAL))
                    .map_or(Duration::ZERO, |next| next.saturating_duration_since(now))
            })
            .min()
    }

    /// Posts the changes whose unit was not posted within [`POST_INTERVAL`]; false once the
    /// loop is gone.
    fn post_changes(&mut self, now: Instant) -> bool {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|unit| {
                self.posted
                    .get(*unit)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= POST_INTERVAL)
            })
            .cloned()
            .collect();
        for unit in due {
            self.pending.remove(&unit);
            self.posted.insert(unit.clone(), now);
            if self.events.send(Event::FilesChanged(unit)).is_err() {
                return false;
            }
        }
        true
    }

    /// A unit's new configuration: nothing is done if it watches what it watched (but a
    /// path that was missing is looked for again).
    fn set(&mut self, unit: &str, spec: Option<WatchSpec>) {
        let Some(spec) = spec else {
            self.release(|_, o| o.unit == unit);
            self.units.remove(unit);
            self.pending.remove(unit);
            self.posted.remove(unit);
            lock(&self.reports).remove(unit);
            return;
        };
        if let Some(current) = self.units.get(unit).filter(|w| w.spec == spec) {
            let missing: Vec<usize> = (0..current.missing.len())
                .filter(|&root| current.missing.get(root).is_some_and(Option::is_some))
                .collect();
            for root in missing {
                self.resolve(unit, root);
            }
            self.publish(unit);
            return;
        }
        self.release(|_, o| o.unit == unit);
        let roots = spec.roots.len();
        self.units.insert(
            unit.to_string(),
            UnitWatch {
                spec,
                directories: 0,
                path_bytes: 0,
                not_watched: 0,
                limit: None,
                missing: vec![None; roots],
            },
        );
        for root in 0..roots {
            self.resolve(unit, root);
        }
        self.publish(unit);
    }

    /// Drops every watch `drop` says the units no longer want; a watch nobody wants any
    /// more is removed from the kernel.
    fn release(&mut self, drop: impl Fn(WatchDescriptor, &Owner) -> bool) {
        let mut emptied = Vec::new();
        for (wd, owners) in &mut self.owners {
            owners.retain(|o| {
                if !drop(*wd, o) {
                    return true;
                }
                if let (Role::Tree(path), Some(w)) = (&o.role, self.units.get_mut(&o.unit)) {
                    w.forget(path);
                }
                false
            });
            if owners.is_empty() {
                emptied.push(*wd);
            }
        }
        for wd in emptied {
            self.owners.remove(&wd);
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// (Re)resolves a unit's `root`-th path: the old watches of its tree are dropped, its
    /// parent is watched for its name (the same watch kept if it is the same directory, so
    /// that no event falls between two watches), and the tree found at the path now is
    /// walked.
    fn resolve(&mut self, unit: &str, root: usize) {
        self.release(|_, o| o.unit == unit && o.root == root && matches!(o.role, Role::Tree(_)));
        let Some(w) = self.units.get_mut(unit) else {
            return;
        };
        let Some(path) = w.spec.roots.get(root).cloned() else {
            return;
        };
        if let Some(slot) = w.missing.get_mut(root) {
            *slot = None;
        }
        if w.directories == 0 {
            w.not_watched = 0;
            w.limit = None;
        }
        if let (Some(parent), Some(_)) = (path.parent(), path.file_name()) {
            let parent_owner = Owner {
                unit: unit.to_string(),
                root,
                role: Role::Parent,
            };
            let added = if self.owners.len() >= self.limit {
                self.note_limit(unit, 1, self.clusterd_limit());
                None
            } else {
                self.inotify
                    .add_watch(parent, interesting())
                    .inspect_err(|e| debug!("{unit}: cannot watch {}: {e}", parent.display()))
                    .ok()
            };
            // A parent that is another directory now (it was renamed or made again).
            self.release(|wd, o| *o == parent_owner && Some(wd) != added);
            if let Some(wd) = added {
                let owners = self.owners.entry(wd).or_default();
                if !owners.contains(&parent_owner) {
                    owners.push(parent_owner);
                }
            }
        }
        // The path itself is the operator's: a symlink there is followed.
        match open_dir(None, path.as_os_str(), true) {
            Ok(fd) => self.walk(unit, root, &path, fd, 0),
            // A file: its parent's events for its name are its changes.
            Err(Errno::ENOTDIR) => {}
            Err(e) => {
                let why = format!("{}: {}", path.display(), e.desc());
                debug!("{unit}: cannot watch {why}");
                if let Some(slot) = self
                    .units
                    .get_mut(unit)
                    .and_then(|w| w.missing.get_mut(root))
                {
                    *slot = Some(why);
                }
            }
        }
    }

    /// Watches `dir` (open as `fd`) and every directory below it whose name is not ignored,
    /// for the unit's `root`-th path; `depth` is how deep `dir` is below that path.
    fn walk(&mut self, unit: &str, root: usize, dir: &Path, fd: OwnedFd, depth: usize) {
        let Some(ignore) = self.units.get(unit).map(|w| w.spec.ignore.clone()) else {
            return;
        };
        if depth > MAX_DEPTH {
            self.note_limit(unit, 1, format!("deeper than {MAX_DEPTH} directories"));
            return;
        }
        if !matches!(self.watch_dir(unit, root, dir, &fd), Added::New) {
            return;
        }
        let Ok(listing) = Dir::from_fd(fd) else {
            return;
        };
        let mut stack = vec![(dir.to_path_buf(), listing.into_iter())];
        while let Some((path, entries)) = stack.last_mut() {
            let Some(Ok(entry)) = entries.next() else {
                // The end, or an error reading it (which would repeat).
                stack.pop();
                continue;
            };
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..")
                || !matches!(entry.file_type(), Some(Type::Directory) | None)
            {
                continue;
            }
            let name = OsStr::from_bytes(name.to_bytes());
            let child_path = path.join(name);
            if ignored_path(&child_path, &ignore) {
                continue;
            }
            let Ok(child) = open_dir(Some(entries.as_raw_fd()), name, false) else {
                continue;
            };
            if depth + stack.len() > MAX_DEPTH {
                self.note_limit(unit, 1, format!("deeper than {MAX_DEPTH} directories"));
                continue;
            }
            match self.watch_dir(unit, root, &child_path, &child) {
                Added::New => {}
                Added::Known | Added::Refused => continue,
            }
            if let Ok(listing) = Dir::from_fd(child) {
                stack.push((child_path, listing.into_iter()));
            }
        }
    }

    /// Adds a watch of one directory of a unit's tree, within the limits.
    fn watch_dir(&mut self, unit: &str, root: usize, path: &Path, fd: &OwnedFd) -> Added {
        let Some(w) = self.units.get(unit) else {
            return Added::Refused;
        };
        if w.directories >= MAX_DIRECTORIES_PER_UNIT {
            let why = format!("a unit watches at most {MAX_DIRECTORIES_PER_UNIT} directories");
            self.note_limit(unit, 1, why);
            return Added::Refused;
        }
        if w.path_bytes + path.as_os_str().len() > MAX_PATH_BYTES_PER_UNIT {
            let why =
                format!("a unit's watched paths take at most {MAX_PATH_BYTES_PER_UNIT} bytes");
            self.note_limit(unit, 1, why);
            return Added::Refused;
        }
        if self.owners.len() >= self.limit {
            self.note_limit(unit, 1, self.clusterd_limit());
            return Added::Refused;
        }
        let by_path = || {
            let flags = interesting() | AddWatchFlags::IN_DONT_FOLLOW;
            self.inotify.add_watch(path, flags)
        };
        let added = if self.proc_fds {
            let by_fd = format!("/proc/self/fd/{}", fd.as_raw_fd());
            match self.inotify.add_watch(by_fd.as_str(), interesting()) {
                // A /proc of another PID namespace has no `self` for clusterd.
                Err(Errno::ENOENT) => by_path(),
                other => other,
            }
        } else {
            by_path()
        };
        let wd = match added {
            Ok(wd) => wd,
            Err(Errno::ENOSPC) => {
                let why = "the system's limit of inotify watches (fs.inotify.max_user_watches) is reached";
                warn!("{unit}: cannot watch {}: {why}", path.display());
                self.note_limit(unit, 1, why.to_string());
                return Added::Refused;
            }
            Err(e) => {
                debug!("{unit}: cannot watch {}: {e}", path.display());
                return Added::Refused;
            }
        };
        let owners = self.owners.entry(wd).or_default();
        let known = owners
            .iter()
            .any(|o| o.unit == unit && o.root == root && matches!(o.role, Role::Tree(_)));
        if known {
            return Added::Known;
        }
        owners.push(Owner {
            unit: unit.to_string(),
            root,
            role: Role::Tree(path.to_path_buf()),
        });
        if let Some(w) = self.units.get_mut(unit) {
            w.directories += 1;
            w.path_bytes += path.as_os_str().len();
        }
        Added::New
    }

    fn clusterd_limit(&self) -> String {
        format!(
            "clusterd watches at most {} directories (half of fs.inotify.max_user_watches)",
            self.limit
        )
    }

    /// `count` directories of the unit are not watched, for `why`.
    fn note_limit(&mut self, unit: &str, count: usize, why: String) {
        if let Some(w) = self.units.get_mut(unit) {
            if w.limit.is_none() {
                warn!("{unit}: watch limit reached: {why}; the rest is not watched");
            }
            w.not_watched = w.not_watched.saturating_add(count);
            w.limit = Some(why);
        }
    }

    /// One read of events.
    fn on_batch(&mut self, batch: Vec<InotifyEvent>) {
        let mut again: BTreeSet<(String, usize)> = BTreeSet::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for event in batch {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                warn!("file watching: the kernel's queue of events overflowed; every watched path counts as changed and is walked again");
                for (unit, w) in &self.units {
                    self.pending.insert(unit.clone());
                    again.extend((0..w.spec.roots.len()).map(|root| (unit.clone(), root)));
                }
                continue;
            }
            let gone = event.mask.intersects(
                AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF
                    | AddWatchFlags::IN_IGNORED,
            );
            let owners = self.owners.get(&event.wd).cloned().unwrap_or_default();
            for owner in owners {
                let Some(w) = self.units.get(&owner.unit) else {
                    continue;
                };
                let Some(root_path) = w.spec.roots.get(owner.root) else {
                    continue;
                };
                match &owner.role {
                    Role::Parent => {
                        let named = event.name.as_deref() == root_path.file_name();
                        if gone || named {
                            debug!("{}: watch: {} changed", owner.unit, root_path.display());
                            again.insert((owner.unit.clone(), owner.root));
                            self.pending.insert(owner.unit.clone());
                        }
                    }
                    Role::Tree(dir) if gone => {
                        // The watched path itself went away (renamed, removed): what is at
                        // the path now is watched instead. Below it, the parent's event for
                        // the name did the work.
                        if dir == root_path {
                            debug!("{}: watch: {} changed", owner.unit, dir.display());
                            again.insert((owner.unit.clone(), owner.root));
                            self.pending.insert(owner.unit.clone());
                        }
                    }
                    Role::Tree(dir) => {
                        let Some(name) = &event.name else {
                            continue;
                        };
                        let path = dir.join(name);
                        if ignored_path(&path, &w.spec.ignore) {
                            continue;
                        }
                        debug!("{}: watch: {} changed", owner.unit, path.display());
                        if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                            self.directory_moved(&owner, &path, event.mask);
                        }
                        self.pending.insert(owner.unit.clone());
                        touched.insert(owner.unit);
                    }
                }
            }
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The kernel dropped the watch (its directory is gone).
                if let Some(owners) = self.owners.remove(&event.wd) {
                    for o in owners {
                        if let (Role::Tree(path), Some(w)) = (&o.role, self.units.get_mut(&o.unit))
                        {
                            w.forget(path);
                        }
                    }
                }
            }
        }
        for (unit, root) in &again {
            self.resolve(unit, *root);
            touched.insert(unit.clone());
        }
        for unit in touched {
            self.publish(&unit);
        }
    }

    /// A directory of a unit's tree was created, removed or renamed: its watches follow.
    fn directory_moved(&mut self, owner: &Owner, path: &Path, mask: AddWatchFlags) {
        if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
            let before = self.units.get(&owner.unit).map_or(0, |w| w.directories);
            self.release(|_, o| {
                o.unit == owner.unit
                    && o.root == owner.root
                    && matches!(&o.role, Role::Tree(p) if p.starts_with(path))
            });
            let after = self.units.get(&owner.unit).map_or(0, |w| w.directories);
            if before == after {
                // One that was not watched (at a limit) has gone.
                if let Some(w) = self.units.get_mut(&owner.unit) {
                    w.not_watched = w.not_watched.saturating_sub(1);
                }
            }
        }
        if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            let Some(root_path) = self
                .units
                .get(&owner.unit)
                .and_then(|w| w.spec.roots.get(owner.root))
            else {
                return;
            };
            let depth = path
                .strip_prefix(root_path)
                .map_or(0, |p| p.components().count());
            // Not followed if it is (already) a symlink.
            if let Ok(fd) = open_dir(None, path.as_os_str(), false) {
                self.walk(&owner.unit, owner.root, path, fd, depth);
            }
        }
    }

    /// Makes the unit's state what status shows.
    fn publish(&self, unit: &str) {
        let Some(w) = self.units.get(unit) else {
            return;
        };
        let mut problems: Vec<String> = w.missing.iter().flatten().cloned().collect();
        if let (Some(why), true) = (&w.limit, w.not_watched > 0) {
            problems.insert(
                0,
                format!(
                    "watch limit reached: {} directories not watched ({why})",
                    w.not_watched
                ),
            );
        }
        let report = WatchReport {
            directories: w.directories as u64,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        };
        lock(&self.reports).insert(unit.to_string(), report);
    }
}

/// Opens a directory (relative to `parent`, if given), without following a symlink at its
/// last component unless `follow`.
fn open_dir(parent: Option<RawFd>, name: &OsStr, follow: bool) -> Result<OwnedFd, Errno> {
    let name = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    open_at(parent.unwrap_or(libc::AT_FDCWD), &name, flags)
}

fn open_at(parent: RawFd, name: &CStr, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is a valid C string; `parent` is AT_FDCWD or an open directory fd the
    // caller keeps open across the call.
    let fd = unsafe { libc::openat(parent, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `path` is ignored: a pattern that starts with `/` (the unit made every pattern
/// with a `/` absolute) matches the whole path, any other its last name (`*`: any run of
/// characters, `?`: one).
pub(crate) fn ignored_path(path: &Path, patterns: &[String]) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    patterns.iter().any(|p| match p.strip_prefix('/') {
        Some(rest) => path_matches(rest, path.as_os_str().as_bytes()),
        None => matches(p.as_bytes(), name.as_bytes()),
    })
}

/// Whether the absolute `path` matches `pattern` (without its leading `/`) one component at
/// a time: `*` and `?` within a component, `**` any number of components. Quadratic at most
/// (components of the pattern times those of the path), whatever the stars.
fn path_matches(pattern: &str, path: &[u8]) -> bool {
    let names: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    // reach[j]: the pattern so far matches the first j names of the path.
    let mut reach = vec![false; names.len() + 1];
    reach[0] = true;
    for part in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = vec![false; names.len() + 1];
        if part == "**" {
            let mut any = false;
            for (j, slot) in next.iter_mut().enumerate() {
                any |= reach.get(j).copied().unwrap_or(false);
                *slot = any;
            }
        } else {
            for (j, name) in names.iter().enumerate() {
                if reach.get(j).copied().unwrap_or(false) && matches(part.as_bytes(), name) {
                    if let Some(slot) = next.get_mut(j + 1) {
                        *slot = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach.last().copied().unwrap_or(false)
}

/// Glob matching in linear time per star (the classic backtrack to the last `*`): a
/// pattern full of stars against a long hostile name cannot take exponential time.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == name.get(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a name alone is ignored.
    fn ignored(name: &str, patterns: &[String]) -> bool {
        ignored_path(Path::new(name), patterns)
    }

    #[test]
    fn name_patterns_match_as_shell_globs_do() {
        let defaults = [".*".to_string(), "node_modules".to_string()];
        assert!(ignored(".git", &defaults));
        assert!(ignored("node_modules", &defaults));
        assert!(!ignored("src", &defaults));
        assert!(ignored("app.log", &["*.log".to_string()]));
        assert!(!ignored("app.logs", &["*.log".to_string()]));
        assert!(ignored("v1", &["v?".to_string()]));
        assert!(!ignored("v", &["v?".to_string()]));
        assert!(ignored("a-b-c", &["a*b*c".to_string()]));
        assert!(ignored("x", &["**".to_string()]));
        assert!(!ignored("", &["?".to_string()]));
        assert!(ignored("", &["*".to_string()]));
    }

    /// PM2's `ignore_watch` paths (chokidar's `ignored`, relative to the app's directory):
    /// the unit makes them absolute; a directory that matches is left with all below it.
    #[test]
    fn path_patterns_match_whole_paths_one_component_at_a_time() {
        let patterns = [
            "/srv/app/src/apps/notes/node_modules".to_string(),
            "/srv/app/data/*.tmp".to_string(),
            "/srv/app/**/cache".to_string(),
            "*.log".to_string(),
        ];
        let is = |p: &str| ignored_path(Path::new(p), &patterns);
        assert!(is("/srv/app/src/apps/notes/node_modules"));
        assert!(!is("/srv/app/src/apps/other/node_modules"));
        assert!(is("/srv/app/data/x.tmp"));
        assert!(!is("/srv/app/data/deeper/x.tmp"), "* stays within a name");
        assert!(is("/srv/app/cache"));
        assert!(is("/srv/app/a/b/c/cache"));
        assert!(!is("/srv/other/cache"));
        assert!(
            is("/anywhere/deep/app.log"),
            "a name pattern matches at every depth"
        );
        assert!(!is("/srv/app/src"));
        // A name pattern never matches a path pattern's text, and the reverse.
        assert!(!ignored("srv", &patterns));
        let started = Instant::now();
        let deep = format!("/{}", ["a"; 2000].join("/"));
        assert!(!ignored_path(
            Path::new(&deep),
            &["/**/**/**/**/**/**/**/**/b".to_string()]
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_pattern_of_many_stars_against_a_long_name_is_quick() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*a*a*b".to_string();
        let name = "a".repeat(255);
        let started = Instant::now();
        assert!(!ignored(&name, &[pattern]));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
