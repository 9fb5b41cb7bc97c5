//! The log directory, as clusterd trusts it: walked from `/` one component at a time and
//! checked on the way (every directory owned by root or by clusterd's user and not open to
//! others' writes, the log directory itself clusterd's own and writable by it alone), created
//! with safe modes where missing, then held open. Every log file is created, opened, renamed,
//! listed and removed relative to that descriptor, never through a symbolic link, and used
//! only once `fstat` on its own descriptor says clusterd created it: a regular file of
//! clusterd's user with no other name. A directory someone else could write is where another
//! user plants `web.log -> /etc/shadow`; clusterd runs as root. See docs/isolation.md.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{geteuid, unlinkat, Gid, Group, Uid, UnlinkatFlags, User};

use crate::log_limit::{LogLimit, Verdict};

/// Directories clusterd creates on the way to the log directory, as `mkdir -p` would.
const PARENT_MODE: u32 = 0o755;
/// The log directory itself: its group may list it, as it may read the files.
const DIR_MODE: u32 = 0o750;
/// Log files hold what programs print, secrets included: owner and group only.
const FILE_MODE: u32 = 0o640;
/// Symbolic links followed on the way to the directory (the kernel's own limit).
const MAX_SYMLINKS: u32 = 40;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// Every log file is opened with these: a link is never followed, a FIFO planted at the name
/// cannot block the open, and a terminal never becomes clusterd's.
const FILE_FLAGS: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY);

/// The log directory, shared by the log thread (which uses the descriptor) and the others
/// (which name the path in status and errors).
#[derive(Clone)]
pub(crate) struct LogDir {
    inner: Arc<Inner>,
}

struct Inner {
    /// Absolute, as given (`--log-dir`) or defaulted: what messages show.
    path: PathBuf,
    /// Open once checked; `None` until the directory exists (it is created when a file is
    /// first needed) or after it was removed.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Files that are in the directory but not clusterd's: a warning each, within limits.
    refusals: Mutex<LogLimit>,
}

/// Why the walk to the directory stopped.
enum WalkError {
    /// A component does not exist (and was not to be created).
    Missing,
    /// A directory on the way is not safe: the message says which, why, and what to do.
    Unsafe(String),
    Failed(io::Error),
}

impl LogDir {
    pub(crate) fn new(path: &Path) -> LogDir {
        LogDir {
            inner: Arc::new(Inner {
                path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
                fd: Mutex::new(None),
                refusals: Mutex::new(LogLimit::default()),
            }),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The path of `name` in the directory, for messages.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.inner.path.join(name)
    }

    /// At start-up: an existing directory that is not safe is refused (the error says why
    /// and what to do); a missing one is created when a file is first needed; any other
    /// trouble is reported then, for the units that log to files.
    pub(crate) fn check_at_start(&self) -> Result<(), String> {
        match walk(&self.inner.path, false) {
            Ok(fd) => {
                *self.lock_fd() = Some(Arc::new(fd));
                Ok(())
            }
            Err(WalkError::Unsafe(why)) => Err(why),
            Err(WalkError::Missing) => Ok(()),
            Err(WalkError::Failed(e)) => {
                log::warn!("the log directory {}: {e}", self.inner.path.display());
                Ok(())
            }
        }
    }

    fn lock_fd(&self) -> std::sync::MutexGuard<'_, Option<Arc<OwnedFd>>> {
        self.inner.fd.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory's descriptor: walked to when none is open, or when the one open was
    /// removed (`rm -rf` of the directory). Only a
    /// file to write creates it ([`LogDir::create`]): reading history or asking for a unit
    /// that has no file leaves a missing directory missing.
    fn fd(&self) -> io::Result<Arc<OwnedFd>> {
        self.open_dir(false)
    }

    fn create(&self) -> io::Result<Arc<OwnedFd>> {
        self.open_dir(true)
    }

    fn open_dir(&self, create: bool) -> io::Result<Arc<OwnedFd>> {
        let mut slot = self.lock_fd();
        if let Some(fd) = slot.as_ref() {
            if fstat(fd.as_fd()).is_ok_and(|st| st.st_nlink > 0) {
                return Ok(Arc::clone(fd));
            }
        }
        *slot = None;
        let fd = match walk(&self.inner.path, create) {
            Ok(fd) => Arc::new(fd),
            Err(WalkError::Unsafe(why)) => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
            }
            Err(WalkError::Missing) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    self.error(None, "no such directory"),
                ))
            }
            Err(WalkError::Failed(e)) => return Err(self.error(None, e)),
        };
        *slot = Some(Arc::clone(&fd));
        Ok(fd)
    }

    /// Forgets the descriptor, so that the next use walks to the directory again.
    fn forget(&self) {
        *self.lock_fd() = None;
    }

    fn error(&self, name: Option<&str>, e: impl std::fmt::Display) -> io::Error {
        let path = name.map_or_else(|| self.inner.path.clone(), |n| self.path_of(n));
        io::Error::other(format!("{}: {e}", path.display()))
    }

    fn errno(&self, name: &str, e: Errno) -> io::Error {
        io::Error::new(io::Error::from(e).kind(), self.error(Some(name), e))
    }

    /// `name`, opened to append to, created (mode 0640) if it does not exist — only ever a
    /// file clusterd created ([`LogDir::check_own_file`]).
    pub(crate) fn open_append(&self, name: &str) -> io::Result<File> {
        let flags = FILE_FLAGS | OFlag::O_WRONLY | OFlag::O_APPEND;
        // Twice at most: a name created between the two opens, a directory removed under us.
        for _ in 0..2 {
            let dir = self.create()?;
            let opened = match openat(dir.as_fd(), name, flags, Mode::empty()) {
                Err(Errno::ENOENT) => {
                    let create = flags | OFlag::O_CREAT | OFlag::O_EXCL;
                    match openat(
                        dir.as_fd(),
                        name,
                        create,
                        Mode::from_bits_truncate(FILE_MODE),
                    ) {
                        Err(Errno::EEXIST) => continue,
                        Err(Errno::ENOENT) => {
                            self.forget();
                            continue;
                        }
                        other => other,
                    }
                }
                other => other,
            };
            let file = File::from(opened.map_err(|e| self.open_error(name, e))?);
            self.check_own_file(&file, name)?;
            // Writes as before: O_NONBLOCK was for the open.
            nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND))
                .map_err(|e| self.errno(name, e))?;
            return Ok(file);
        }
        Err(self.error(Some(name), "created and removed again while opening it"))
    }

    /// `name`, opened to read, if it is a file clusterd created.
    pub(crate) fn open_read(&self, name: &str) -> io::Result<File> {
        let dir = self.fd()?;
        let flags = FILE_FLAGS | OFlag::O_RDONLY;
        let opened = openat(dir.as_fd(), name, flags, Mode::empty());
        let file = File::from(opened.map_err(|e| self.open_error(name, e))?);
        self.check_own_file(&file, name)?;
        Ok(file)
    }

    fn open_error(&self, name: &str, e: Errno) -> io::Error {
        match e {
            Errno::ELOOP => refused(self.error(
                Some(name),
                "a symbolic link: clusterd never writes or shows a log file through a link; remove it",
            )),
            // A FIFO without a reader, a socket.
            Errno::ENXIO | Errno::EOPNOTSUPP => refused(self.error(
                Some(name),
                "not a regular file: clusterd writes and shows only files it created; remove it",
            )),
            e => self.errno(name, e),
        }
    }

    /// Whether the file behind `file`'s own descriptor is one clusterd created: a regular
    /// file of clusterd's user, with no other name (a hard link planted by another user to a
    /// file of clusterd's user would otherwise pass).
    fn check_own_file(&self, file: &File, name: &str) -> io::Result<()> {
        let st = fstat(file.as_fd()).map_err(|e| self.errno(name, e))?;
        let why = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            "not a regular file".to_string()
        } else if st.st_uid != geteuid().as_raw() {
            // Numbers: a name would ask NSS (LDAP…) on the log thread.
            format!(
                "owned by uid {}, not by uid {}, the user clusterd runs as",
                st.st_uid,
                geteuid().as_raw()
            )
        } else if st.st_nlink != 1 {
            format!("a file with {} names (hard links)", st.st_nlink)
        } else {
            return Ok(());
        };
        Err(refused(self.error(
            Some(name),
            format!(
                "{why}: not a file clusterd created, so it neither writes nor shows it; remove it"
            ),
        )))
    }

    /// Whether `name` exists (a link is not followed).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.fd()
            .is_ok_and(|dir| fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok())
    }

    /// Whether `name` is a regular file of clusterd's user (a link is not followed).
    pub(crate) fn is_own_file(&self, name: &str) -> bool {
        self.fd().is_ok_and(|dir| {
            fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
                    && st.st_uid == geteuid().as_raw()
            })
        })
    }

    /// The names in the directory (those that are UTF-8: clusterd makes no others).
    pub(crate) fn names(&self) -> io::Result<Vec<String>> {
        let dir = self.fd()?;
        let mut listing = nix::dir::Dir::openat(dir.as_fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| self.error(None, e))?;
        Ok(listing
            .iter()
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str().ok().map(str::to_string))
            .collect())
    }

    /// Renames `from` to `to`, or to `to-1`, `to-2`… if taken: never over an existing name.
    /// Returns the name it got.
    pub(crate) fn rename_aside(&self, from: &str, to: &str) -> io::Result<String> {
        let dir = self.fd()?;
        let dir = dir.as_fd();
        let mut aside = to.to_string();
        for n in 1..1000 {
            match renameat2(
                dir,
                from,
                dir,
                aside.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => return Ok(aside),
                Err(Errno::EEXIST) => {}
                // A file system without RENAME_NOREPLACE: look first (only clusterd writes
                // a safe directory, so nothing comes in between).
                Err(Errno::EINVAL) => {
                    match fstatat(dir, aside.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Err(Errno::ENOENT) => {
                            return renameat(dir, from, dir, aside.as_str())
                                .map(|()| aside.clone())
                                .map_err(|e| self.errno(from, e));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(self.errno(&aside, e)),
                    }
                }
                Err(e) => return Err(self.errno(from, e)),
            }
            aside = format!("{to}-{n}");
        }
        Err(self.error(Some(to), "every name for it is taken"))
    }

    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        let dir = self.fd()?;
        unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir).map_err(|e| self.errno(name, e))
    }

    /// A file that is not clusterd's was left out: said in clusterd's log, a few times per
    /// window at most (whoever planted it may ask for the history in a loop).
    pub(crate) fn warn_refused(&self, error: &io::Error) {
        let verdict = self
            .inner
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(Instant::now());
        if let Verdict::Show { suppressed, last } = verdict {
            log::warn!("{error}{}", LogLimit::note(suppressed, last));
        }
    }
}

/// An error for a file that is not clusterd's: [`is_refusal`] tells it from I/O trouble.
fn refused(error: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, error)
}

/// Whether `error` says a file is not clusterd's (rather than missing, or a failing disk).
pub(crate) fn is_refusal(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
}

/// Opens `path` (absolute) from `/` down, never following a link found in a directory that
/// fails [`check`]: the directories on the way must be owned by root or by clusterd's user
/// and not writable by every user (unless sticky: then others cannot rename what they do not
/// own), the last must be clusterd's own and writable by it alone. Missing ones are created
/// (0755 on the way, 0750 the last, less the umask) when `create`.
fn walk(path: &Path, create: bool) -> Result<OwnedFd, WalkError> {
    let failed = |e: Errno| WalkError::Failed(e.into());
    let open_root = || nix::fcntl::open("/", DIR_FLAGS, Mode::empty()).map_err(failed);
    let mut fd = open_root()?;
    let mut at = PathBuf::from("/");
    check(&fstat(fd.as_fd()).map_err(failed)?, &at, path, false)?;
    // What is left to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let last = todo.is_empty();
        let here = if name == ".." {
            at.parent().map_or_else(|| at.clone(), Path::to_path_buf)
        } else {
            at.join(&name)
        };
        let st = match fstatat(fd.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) if create => {
                let mode = if last { DIR_MODE } else { PARENT_MODE };
                match mkdirat(fd.as_fd(), name.as_os_str(), Mode::from_bits_truncate(mode)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Failed(at_path(&here, e))),
                }
                todo.push(name);
                continue;
            }
            Err(Errno::ENOENT) => return Err(WalkError::Missing),
            Err(e) => return Err(WalkError::Failed(at_path(&here, e))),
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                // The link lies in a directory that passed the checks; in a sticky one,
                // others may have made it: only root's and clusterd's user's are followed.
                let me = geteuid().as_raw();
                if st.st_uid != 0 && st.st_uid != me {
                    return Err(WalkError::Unsafe(format!(
                        "{}, on the way to the log directory {}, is a symbolic link that \
                         belongs to {}: its owner chooses where it leads. Give the real path \
                         as --log-dir",
                        here.display(),
                        path.display(),
                        user_name(st.st_uid)
                    )));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(WalkError::Failed(at_path(&here, Errno::ELOOP)));
                }
                let target = readlinkat(fd.as_fd(), name.as_os_str())
                    .map_err(|e| WalkError::Failed(at_path(&here, e)))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    fd = open_root()?;
                    at = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
            }
            SFlag::S_IFDIR => {
                // Opened without following: a link put there since the look is refused.
                let next = openat(fd.as_fd(), name.as_os_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| WalkError::Failed(at_path(&here, e)))?;
                let st = fstat(next.as_fd()).map_err(|e| WalkError::Failed(at_path(&here, e)))?;
                check(&st, &here, path, last)?;
                fd = next;
                at = here;
            }
            _ => {
                return Err(WalkError::Failed(at_path(&here, "not a directory")));
            }
        }
    }
    Ok(fd)
}

fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(name) => todo.push(name.to_os_string()),
            Component::ParentDir => todo.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn at_path(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

/// Whether the directory `here` (on the way to the log directory `target`, or `last`: the
/// log directory itself) is safe, as sshd's StrictModes asks of the way to authorized_keys.
fn check(st: &FileStat, here: &Path, target: &Path, last: bool) -> Result<(), WalkError> {
    let me = geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    let problem = if last && st.st_uid != me {
        Problem::NotMine
    } else if last && writable_by_others {
        Problem::Writable
    } else if !last && st.st_uid != 0 && st.st_uid != me {
        Problem::NotMine
    } else if !last && mode & 0o002 != 0 && !sticky {
        // Writable by its group is accepted above the log directory: Ubuntu's /var/log is
        // root:syslog 0775. Every directory is opened by descriptor and checked, so that
        // group could at most swap in another directory of root's from the same parent.
        Problem::Writable
    } else {
        return Ok(());
    };
    // Names only now: looking them up may ask NSS.
    let found = format!(
        "mode {mode:04o}, owner {}, group {}",
        user_name(st.st_uid),
        group_name(st.st_gid)
    );
    let by = if mode & 0o002 != 0 {
        "every user".to_string()
    } else {
        format!("the members of group {}", group_name(st.st_gid))
    };
    let (here, target) = (here.display(), target.display());
    let why = match (last, problem) {
        (true, Problem::NotMine) => format!(
            "the log directory {here} ({found}) does not belong to {}, the user clusterd \
             runs as: its owner could plant links there that clusterd, writing and reading \
             log files, would follow. Give it to clusterd's user (chown {} {here}) or choose \
             another --log-dir",
            user_name(me),
            bare_user_name(me),
        ),
        (true, Problem::Writable) => format!(
            "the log directory {here} is writable by {by} ({found}): they could plant links \
             there that clusterd, writing and reading log files, would follow. Make it \
             writable by its owner alone (chmod go-w {here}) or choose another --log-dir"
        ),
        (false, Problem::NotMine) => format!(
            "{here} ({found}), on the way to the log directory {target}, belongs to neither \
             root nor {}, the user clusterd runs as: its owner could put another directory \
             in the log directory's place. Choose a --log-dir whose every parent belongs to \
             root or to clusterd's user",
            user_name(me),
        ),
        (false, Problem::Writable) => format!(
            "{here}, on the way to the log directory {target}, is writable by {by} ({found}): \
             they could put another directory in the log directory's place. Make it writable \
             by its owner alone (chmod go-w {here}), or sticky (chmod +t), or choose another \
             --log-dir"
        ),
    };
    Err(WalkError::Unsafe(why))
}

/// What is wrong with a directory on the way.
enum Problem {
    /// Another user owns it.
    NotMine,
    /// Others may write it (above the log directory: every user, and it is not sticky).
    Writable,
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The name alone (or the number), as `chown` takes it.
fn bare_user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => format!("gid {gid}"),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_a_file_to_write_creates_the_directory_and_a_removed_one_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("logs");
        let dir = LogDir::new(&path);
        dir.check_at_start().unwrap();
        assert!(!dir.contains("web.log"));
        assert!(dir.open_read("web.log").is_err());
        assert!(!path.exists(), "reading created the directory");

        dir.open_append("web.log").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path) & !0o022, 0o750);
        fs::remove_dir_all(&path).unwrap();
        dir.open_append("web.log").unwrap();
        assert!(path.join("web.log").is_file());
        assert_eq!(mode(&path.join("web.log")) & !0o022, 0o640);
    }

    #[test]
    fn a_parent_its_group_may_write_is_accepted_one_everyone_may_write_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, mode, accepted) in [("group", 0o775, true), ("all", 0o777, false)] {
            let parent = tmp.path().join(name);
            fs::create_dir(&parent).unwrap();
            fs::set_permissions(&parent, fs::Permissions::from_mode(mode)).unwrap();
            let dir = LogDir::new(&parent.join("logs"));
            assert_eq!(dir.open_append("web.log").is_ok(), accepted, "{name}");
        }
    }

    #[test]
    fn a_path_with_dots_and_a_link_root_made_is_walked_as_the_kernel_would() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        let dir = LogDir::new(&tmp.path().join("link/../link/./logs"));
        dir.open_append("web.log").unwrap();
        assert!(tmp.path().join("real/logs/web.log").is_file());
    }
}
