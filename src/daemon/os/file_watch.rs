//! `watch`: one inotify instance for every unit that watches files, read by a thread of its
//! own that blocks in `read` (no polling) and posts `Event::FilesChanged(unit)` — at most one
//! per unit per batch of changes; the supervisor waits for `watch_delay` of quiet before it
//! reloads. Directories are watched recursively: inotify is not, so every directory below a
//! watched path gets a watch of its own, and a directory created later gets one when it
//! appears. Names that match the unit's `watch_ignore` are neither watched nor reported.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, warn};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::daemon::signals::EventSender;
use crate::supervisor::event::Event;
use crate::unit::Unit;

/// What a change is: a file written and closed, created, removed or renamed.
fn interesting() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
}

/// More directories than this for one unit is a mistake (a watch of `/`), and each watch
/// costs kernel memory.
const MAX_DIRECTORIES_PER_UNIT: usize = 8192;

#[derive(Default)]
struct Watches {
    /// Each watch: its unit and directory.
    by_descriptor: HashMap<WatchDescriptor, (String, PathBuf)>,
    /// Each unit's patterns of names not to watch.
    ignore: HashMap<String, Vec<String>>,
}

pub(crate) struct FileWatch {
    inotify: Arc<Inotify>,
    watches: Arc<Mutex<Watches>>,
}

impl FileWatch {
    /// Creates the inotify instance and starts the thread that reads it.
    pub(crate) fn start(events: EventSender) -> std::io::Result<FileWatch> {
        let inotify = Arc::new(Inotify::init(InitFlags::IN_CLOEXEC)?);
        let watches = Arc::new(Mutex::new(Watches::default()));
        let (reader, state) = (Arc::clone(&inotify), Arc::clone(&watches));
        std::thread::Builder::new()
            .name("file-watch".into())
            .spawn(move || read_changes(&reader, &state, &events))?;
        Ok(FileWatch { inotify, watches })
    }

    /// Watches what `unit` asks for, instead of what it watched before (nothing, for a unit
    /// without `watch` or one that is gone).
    pub(crate) fn set(&self, name: &str, unit: Option<&Unit>) {
        let mut watches = lock(&self.watches);
        let old: Vec<WatchDescriptor> = watches
            .by_descriptor
            .iter()
            .filter(|(_, (owner, _))| owner == name)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in old {
            watches.by_descriptor.remove(&wd);
            let _ = self.inotify.rm_watch(wd);
        }
        watches.ignore.remove(name);
        let Some(unit) = unit.filter(|u| !u.watch.is_empty()) else {
            return;
        };
        watches
            .ignore
            .insert(name.to_string(), unit.watch_ignore.clone());
        for path in &unit.watch {
            add_tree(&self.inotify, &mut watches, name, path, &unit.watch_ignore);
        }
    }
}

fn lock(watches: &Mutex<Watches>) -> MutexGuard<'_, Watches> {
    watches.lock().unwrap_or_else(|e| e.into_inner())
}

/// Watches `dir` and every directory below it whose name is not ignored.
fn add_tree(inotify: &Inotify, watches: &mut Watches, unit: &str, dir: &Path, ignore: &[String]) {
    let mut pending = vec![dir.to_path_buf()];
    let mut added = 0;
    while let Some(dir) = pending.pop() {
        if added >= MAX_DIRECTORIES_PER_UNIT {
            warn!("{unit}: watch: more than {MAX_DIRECTORIES_PER_UNIT} directories; the rest is not watched");
            return;
        }
        match inotify.add_watch(&dir, interesting() | AddWatchFlags::IN_ONLYDIR) {
            Ok(wd) => {
                watches
                    .by_descriptor
                    .insert(wd, (unit.to_string(), dir.clone()));
                added += 1;
            }
            Err(e) => {
                warn!("{unit}: cannot watch {}: {e}", dir.display());
                continue;
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let name = entry.file_name();
            if is_dir && !ignored(&name.to_string_lossy(), ignore) {
                pending.push(entry.path());
            }
        }
    }
}

/// The reading thread: one blocking read per batch of changes.
fn read_changes(inotify: &Inotify, watches: &Mutex<Watches>, events: &EventSender) {
    loop {
        let batch = match inotify.read_events() {
            Ok(batch) => batch,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!("file watching stops: {e}");
                return;
            }
        };
        let mut changed = BTreeSet::new();
        let mut watches = lock(watches);
        for event in batch {
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                watches.by_descriptor.remove(&event.wd);
                continue;
            }
            let Some((unit, dir)) = watches.by_descriptor.get(&event.wd).cloned() else {
                continue;
            };
            let Some(name) = event
                .name
                .as_ref()
                .map(|n| n.to_string_lossy().into_owned())
            else {
                continue;
            };
            let ignore = watches.ignore.get(&unit).cloned().unwrap_or_default();
            if ignored(&name, &ignore) {
                continue;
            }
            let created_dir = event.mask.contains(AddWatchFlags::IN_ISDIR)
                && event
                    .mask
                    .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
            if created_dir {
                add_tree(inotify, &mut watches, &unit, &dir.join(&name), &ignore);
            }
            debug!("{unit}: watch: {} changed", dir.join(&name).display());
            changed.insert(unit);
        }
        drop(watches);
        for unit in changed {
            if events.send(Event::FilesChanged(unit)).is_err() {
                return;
            }
        }
    }
}

/// Whether `name` matches one of the patterns (`*`: any run of characters, `?`: one).
pub(crate) fn ignored(name: &str, patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|p| matches(p.as_bytes(), name.as_bytes()))
}

fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            matches(&pattern[1..], name) || (!name.is_empty() && matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_patterns_match_as_shell_globs_do() {
        let defaults = [".*".to_string(), "node_modules".to_string()];
        assert!(ignored(".git", &defaults));
        assert!(ignored("node_modules", &defaults));
        assert!(!ignored("src", &defaults));
        assert!(ignored("app.log", &["*.log".to_string()]));
        assert!(!ignored("app.logs", &["*.log".to_string()]));
        assert!(ignored("v1", &["v?".to_string()]));
    }
}
