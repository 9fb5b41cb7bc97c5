//! `environment_file`: variables read from files at every start of an instance, so that
//! secrets stay out of unit files and a changed file applies at the next restart or reload —
//! systemd's `EnvironmentFile=`, in its format:
//!
//! ```text
//! # a comment; so is a line starting with ';'
//! DATABASE_URL=postgres://db/app
//! GREETING="hello world"        (quotes are removed; \" and \\ in double quotes)
//! export PORT=3000              (`export ` is allowed, as .env files have it)
//! ```
//!
//! clusterd is root and the instance may not be: a file is read for a unit with a `user` of
//! its own only when that user could read it itself, or when the whole path to it is root's
//! (see [`read`]), so that a user who can write in the file's directory cannot point it at a
//! file it may not read (another unit's secrets) and receive that in its environment.
//!
//! Every read runs on a short-lived thread of its own, which takes the unit user's
//! credentials where it needs to and which the supervisor loop waits for only
//! [`READ_DEADLINE`]: a file on a hung network mount fails the start instead of stopping
//! clusterd.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::unit::Credentials;

/// A larger file is a mistake (or not an environment file).
const MAX_BYTES: u64 = 1 << 20;

/// How long a start waits for its environment files: far more than a local file takes.
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(2);

/// Reads still running after their deadline (hung file systems); beyond this many, no new
/// one is started. A path whose read is stuck is not read again until that read ends, so a
/// hung mount costs the supervisor loop one deadline and clusterd one thread, not one of
/// each per restart.
const MAX_STUCK_READS: usize = 4;

/// Symbolic links followed on one path, as the kernel's limit (ELOOP).
const MAX_LINKS: usize = 40;

/// Why a file gave no variables: it is missing (fine for an optional one), or anything else.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    Missing,
    Bad(String),
}

/// The account an instance runs as, as far as reading a file goes.
#[derive(Debug, Clone)]
struct Reader {
    uid: Uid,
    gid: Gid,
    /// Supplementary groups; `None` keeps clusterd's (as the spawn does without any).
    groups: Option<Vec<Gid>>,
}

impl Reader {
    /// `None` when the instance runs as clusterd's own user: it may read what clusterd reads.
    fn of(credentials: &Credentials) -> Option<Reader> {
        let uid = credentials.uid.filter(|&uid| uid != Uid::effective())?;
        let groups = match (credentials.groups.is_empty(), credentials.gid) {
            (false, _) => Some(credentials.groups.clone()),
            (true, Some(gid)) => Some(vec![gid]),
            (true, None) => None,
        };
        Some(Reader {
            uid,
            gid: credentials.gid.unwrap_or_else(Gid::effective),
            groups,
        })
    }
}

/// The variables of the file at `path`, in order, for an instance running with
/// `credentials`.
///
/// For an instance of clusterd's own user, the file is read as clusterd reads any file. For
/// one with a user of its own, the content is accepted if either
/// - every directory and symbolic link on the path (each link followed) and the file itself
///   belong to root (or clusterd's user) and none can be written by anyone else: the
///   administrator put the file there for the unit; or
/// - the unit's user could open the file itself: it is opened by a thread that holds that
///   user's file-system ids and groups and no capabilities, so the kernel checks every
///   directory, link, mode and ACL as it would for the instance.
///
/// Either way `/proc` magic links (`/proc/self/fd/N`) are not followed and no file of
/// `/proc` is read. Errors never quote the file's content.
pub(crate) fn read(
    path: &Path,
    credentials: &Credentials,
) -> Result<Vec<(String, String)>, ReadError> {
    let running = Running::start(path)?;
    let reader = Reader::of(credentials);
    let owned_path = path.to_path_buf();
    let (done, result) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("environment-file".into())
        .spawn(move || {
            let variables = read_here(&owned_path, reader.as_ref());
            // No longer running before the answer goes: a read that follows it at once is
            // never refused as "not finished".
            drop(running);
            // The receiver may have given up waiting: nothing to do then.
            let _ = done.send(variables);
        });
    if let Err(e) = spawned {
        return Err(ReadError::Bad(format!(
            "cannot start a thread to read it: {e}"
        )));
    }
    match result.recv_timeout(READ_DEADLINE) {
        Ok(variables) => variables,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ReadError::Bad(format!(
            "its file system did not answer within {} s (a hung network mount?)",
            READ_DEADLINE.as_secs()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(ReadError::Bad("reading it failed unexpectedly".into()))
        }
    }
}

/// Paths being read now. Reads are made one at a time, so any other entry is a read that
/// outlived its deadline and still waits on its file system.
static RUNNING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One entry of [`RUNNING`], removed when dropped (however the reader thread ends).
struct Running(PathBuf);

impl Running {
    /// Refuses a path whose earlier read is still stuck (its next start would only wait the
    /// whole deadline again) and, past [`MAX_STUCK_READS`], any path.
    fn start(path: &Path) -> Result<Running, ReadError> {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if running.iter().any(|p| p == path) {
            return Err(ReadError::Bad(format!(
                "an earlier read of it has not finished after more than {} s (a hung file system?)",
                READ_DEADLINE.as_secs()
            )));
        }
        if running.len() >= MAX_STUCK_READS {
            return Err(ReadError::Bad(format!(
                "{} earlier reads of environment files have not finished (hung file systems?); not starting another",
                running.len()
            )));
        }
        running.push(path.to_path_buf());
        Ok(Running(path.to_path_buf()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = running.iter().position(|p| *p == self.0) {
            running.swap_remove(at);
        }
    }
}

/// On the reader thread: opens the file as [`read`] says, then reads and parses it.
fn read_here(path: &Path, reader: Option<&Reader>) -> Result<Vec<(String, String)>, ReadError> {
    let file = match reader {
        None => open_no_magic(path).map_err(io_error)?,
        Some(reader) => match trusted_path(path) {
            Ok((resolved, checked)) => open_resolved(&resolved, &checked)?,
            Err(Walk::Missing) => return Err(ReadError::Missing),
            Err(Walk::Failed(e)) => return Err(ReadError::Bad(e)),
            Err(Walk::Untrusted(why)) => match open_as(path, reader) {
                Ok(file) => file,
                Err(Errno::ENOENT) => return Err(ReadError::Missing),
                Err(e) => {
                    return Err(ReadError::Bad(format!(
                        "the unit's user (uid {}) may not read it itself ({}), and {why}, so clusterd does not read it for the unit either (see \"environment_file\" in docs/unit-files.md)",
                        reader.uid,
                        e.desc()
                    )))
                }
            },
        },
    };
    read_open(file)
}

fn io_error(e: Errno) -> ReadError {
    match e {
        Errno::ENOENT => ReadError::Missing,
        Errno::ELOOP => {
            ReadError::Bad("too many symbolic links, or a /proc magic link (not followed)".into())
        }
        e => ReadError::Bad(std::io::Error::from(e).to_string()),
    }
}

/// Opens `path` for reading without waiting on a FIFO and without following `/proc` magic
/// links (`/proc/self/fd/N` would be clusterd's own descriptors).
fn open_no_magic(path: &Path) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(AT_FDCWD, path, how) {
        Ok(fd) => Ok(File::from(fd)),
        // Before Linux 5.6, or a container's seccomp filter that answers EPERM for system
        // calls it does not know: an ordinary open. The user's open then still checks the
        // file's own mode, and the root-owned path is walked without it.
        Err(Errno::ENOSYS | Errno::EPERM) => {
            nix::fcntl::open(path, flags, Mode::empty()).map(File::from)
        }
        Err(e) => Err(e),
    }
}

/// Reads an opened file: a regular file not in /proc, at most [`MAX_BYTES`], UTF-8.
fn read_open(file: File) -> Result<Vec<(String, String)>, ReadError> {
    let meta = file.metadata().map_err(|e| ReadError::Bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(ReadError::Bad("not a regular file".into()));
    }
    let on_proc = nix::sys::statfs::fstatfs(&file)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
    if on_proc {
        return Err(ReadError::Bad(
            "a file of /proc, not an environment file".into(),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ReadError::Bad(format!(
            "larger than {MAX_BYTES} bytes; not an environment file"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| ReadError::Bad("not UTF-8 text".into()))?;
    parse(&text).map_err(ReadError::Bad)
}

/// Why a path is not wholly root's.
enum Walk {
    Missing,
    /// Names the first component that is not root's alone.
    Untrusted(String),
    Failed(String),
}

/// Owners whose files clusterd trusts: root, and clusterd's own user.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == Uid::effective().as_raw()
}

/// Follows `path` one component at a time with `lstat` (links resolved by hand), checking
/// that each directory, link and the file itself is root's and writable by no one else.
/// Returns the path with every link resolved, and what `lstat` said of its last component.
/// What such a path names can change only by root's hand; opening it afterwards is checked
/// against that all the same.
fn trusted_path(path: &Path) -> Result<(PathBuf, std::fs::Metadata), Walk> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut current = PathBuf::from("/");
    // The walk goes on past the first component that is not root's, to tell a missing file
    // (fine for an optional one) from one the unit's user may or may not read.
    let mut last = lstat(&current)?;
    let mut untrusted = check_trusted(&current, &last).err();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = lstat(&next)?;
        if untrusted.is_none() {
            untrusted = check_trusted(&next, &meta).err();
        }
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Walk::Failed("too many symbolic links".into()));
            }
            let target = std::fs::read_link(&next).map_err(|e| Walk::Failed(e.to_string()))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
        } else if meta.is_dir() || pending.is_empty() {
            current = next;
            last = meta;
        } else {
            // A file with more path after it.
            return Err(Walk::Failed(format!(
                "{} is not a directory",
                next.display()
            )));
        }
    }
    match untrusted {
        None => Ok((current, last)),
        Some(why) => Err(Walk::Untrusted(why)),
    }
}

/// Puts the components of `path` on the stack so that the first is popped first.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let start = stack.len();
    for component in path.components() {
        match component {
            Component::Normal(name) => stack.push(name.to_os_string()),
            Component::ParentDir => stack.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    stack[start..].reverse();
}

fn lstat(path: &Path) -> Result<std::fs::Metadata, Walk> {
    std::fs::symlink_metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Walk::Missing,
        _ => Walk::Failed(format!("{}: {e}", path.display())),
    })
}

/// `Err` says why the component is not root's alone.
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if !trusted_owner(meta.uid()) {
        return Err(format!("{} belongs to uid {}", path.display(), meta.uid()));
    }
    // A link's own mode means nothing; its directory decides who may replace it.
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.mode() & 0o002 != 0 {
        return Err(format!("{} is writable by everyone", path.display()));
    }
    if meta.mode() & 0o020 != 0 {
        return Err(format!(
            "{} is writable by group {}",
            path.display(),
            meta.gid()
        ));
    }
    // A FUSE file system shows whatever owners its server reports: trusted only if root (or
    // clusterd's user) mounted it, not a user with `allow_other`.
    let fuse = nix::sys::statfs::statfs(path)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
    if fuse {
        match fuse_mounted_by(meta.dev()) {
            Some(uid) if trusted_owner(uid) => {}
            Some(uid) => {
                return Err(format!(
                    "{} is on a FUSE file system mounted by uid {uid}",
                    path.display()
                ))
            }
            None => {
                return Err(format!(
                    "{} is on a FUSE file system whose owner is unknown",
                    path.display()
                ))
            }
        }
    }
    Ok(())
}

/// Who mounted the FUSE file system of device `dev`: its `user_id=` in /proc/self/mountinfo.
fn fuse_mounted_by(dev: u64) -> Option<u32> {
    let device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_user_id(&mountinfo, &device)
}

/// The `user_id=` super option of the mount of `device` (`major:minor`) in `mountinfo`.
fn mount_user_id(mountinfo: &str, device: &str) -> Option<u32> {
    mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(2) == Some(device))
        .find_map(|line| {
            // Super options come last, after " - fstype source ".
            let (_, after) = line.split_once(" - ")?;
            after
                .split(' ')
                .nth(2)?
                .split(',')
                .find_map(|option| option.strip_prefix("user_id=")?.parse().ok())
        })
}

/// Opens the resolved, checked path (no link left in it) and makes sure it is the file that
/// was checked.
fn open_resolved(path: &Path, checked: &std::fs::Metadata) -> Result<File, ReadError> {
    let file = open_no_magic_nofollow(path).map_err(io_error)?;
    let opened = file.metadata().map_err(|e| ReadError::Bad(e.to_string()))?;
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(ReadError::Bad(
            "it changed while it was being opened".into(),
        ));
    }
    Ok(file)
}

fn open_no_magic_nofollow(path: &Path) -> Result<File, Errno> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC
        | OFlag::O_NOFOLLOW;
    nix::fcntl::open(path, flags, Mode::empty()).map(File::from)
}

/// Opens `path` as `reader` would: this thread takes its file-system ids and groups and drops
/// every capability first (credentials are per thread in Linux; raw system calls, because
/// glibc's wrappers would change every thread of clusterd). The thread ends after the read,
/// with its credentials.
fn open_as(path: &Path, reader: &Reader) -> Result<File, Errno> {
    if let Some(groups) = &reader.groups {
        let groups: Vec<libc::gid_t> = groups.iter().map(|g| g.as_raw()).collect();
        // SAFETY: a raw setgroups on this thread with a valid array of its length.
        if unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) } != 0 {
            return Err(Errno::last());
        }
    }
    // setfsgid/setfsuid return the previous id and report no error: asked again, they say
    // whether the change took.
    // SAFETY: setfsgid/setfsuid on this thread; -1 (u32::MAX) only queries.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, reader.gid.as_raw());
        if libc::syscall(libc::SYS_setfsgid, u32::MAX) != i64::from(reader.gid.as_raw()) {
            return Err(Errno::EPERM);
        }
        libc::syscall(libc::SYS_setfsuid, reader.uid.as_raw());
        if libc::syscall(libc::SYS_setfsuid, u32::MAX) != i64::from(reader.uid.as_raw()) {
            return Err(Errno::EPERM);
        }
    }
    drop_effective_capabilities()?;
    open_no_magic(path)
}

/// Clears this thread's effective capabilities: a new fsuid drops only the file capabilities
/// (CAP_DAC_OVERRIDE, ...); the others (CAP_SYS_PTRACE, CAP_SYS_ADMIN) are what /proc and
/// some other file systems check instead of a mode, and the user has none of them.
fn drop_effective_capabilities() -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset on this thread (pid 0) with a version 3 header and the two
    // data structs that version takes.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(Errno::last());
        }
        for d in &mut data {
            d.effective = 0;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// `KEY=VALUE` lines; the error names the line, never its content.
fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut variables = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", number + 1));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            // The name is not quoted: the error reaches logs and `status`, which the unit's
            // user may read, and the file may be one it could not read.
            return Err(format!(
                "line {}: the name before '=' is not a variable name (letters, digits and _, not starting with a digit)",
                number + 1
            ));
        }
        let value = unquote(value.trim())
            .ok_or_else(|| format!("line {}: a quote is not closed", number + 1))?;
        if value.contains('\0') {
            return Err(format!("line {}: the value holds a NUL byte", number + 1));
        }
        variables.push((key.to_string(), value));
    }
    Ok(variables)
}

/// A value without its quotes: "..." (with \" and \\ escapes) or '...' (as written).
fn unquote(value: &str) -> Option<String> {
    if let Some(rest) = value.strip_prefix('\'') {
        return rest.strip_suffix('\'').map(str::to_string);
    }
    let Some(rest) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            },
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).expect("parses")
    }

    #[test]
    fn lines_comments_quotes_and_export_are_read_as_systemd_reads_them() {
        let text = "# secrets\n; another comment\n\nDATABASE_URL=postgres://db/app\n  GREETING=\"hello \\\"world\\\"\"\nexport PORT=3000\nRAW='a \\ b'\nEMPTY=\nSPACED = x y \n";
        assert_eq!(
            pairs(text),
            [
                ("DATABASE_URL", "postgres://db/app"),
                ("GREETING", "hello \"world\""),
                ("PORT", "3000"),
                ("RAW", "a \\ b"),
                ("EMPTY", ""),
                ("SPACED", "x y"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(
            parse("A=1\nnonsense\n"),
            Err("line 2: not KEY=VALUE".into())
        );
        assert_eq!(
            parse("1A=x\n"),
            Err("line 1: the name before '=' is not a variable name (letters, digits and _, not starting with a digit)".into())
        );
        assert_eq!(
            parse("A=\"open\n"),
            Err("line 1: a quote is not closed".into())
        );
    }

    #[test]
    fn a_missing_file_is_told_apart_from_a_bad_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let own = Credentials {
            uid: None,
            gid: None,
            groups: Vec::new(),
            user_name: None,
            home: None,
        };
        assert_eq!(
            read(&dir.path().join("nope"), &own),
            Err(ReadError::Missing)
        );
        assert!(matches!(read(dir.path(), &own), Err(ReadError::Bad(_))));
        assert!(matches!(
            read(Path::new("/dev/zero"), &own),
            Err(ReadError::Bad(_))
        ));
        // clusterd's own descriptors are not a way in, nor is /proc.
        assert!(matches!(
            read(Path::new("/proc/self/fd/0"), &own),
            Err(ReadError::Bad(_))
        ));
        assert!(matches!(
            read(Path::new("/proc/self/environ"), &own),
            Err(ReadError::Bad(_))
        ));
    }

    #[test]
    fn the_user_who_mounted_a_fuse_file_system_is_read_from_mountinfo() {
        let mountinfo = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            90 30 0:52 / /srv/app rw,nosuid,nodev - fuse.sshfs app@host: rw,user_id=1001,group_id=1001,allow_other\n\
            91 30 0:53 / /mnt/root rw - fuse rootfs rw,user_id=0,group_id=0\n";
        assert_eq!(mount_user_id(mountinfo, "0:52"), Some(1001));
        assert_eq!(mount_user_id(mountinfo, "0:53"), Some(0));
        assert_eq!(mount_user_id(mountinfo, "0:21"), None);
        assert_eq!(mount_user_id(mountinfo, "0:99"), None);
    }
}
