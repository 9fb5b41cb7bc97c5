//! One unit's log file, `<dir>/<unit>.log`, with size rotation: when the next line would take
//! it past `max_size`, the file is renamed to `<unit>.log.<UTC time>` (one rename: tools that
//! follow files by inode keep the right one; the name sorts by age) and a new one is opened;
//! old files beyond `keep` are deleted. Rotation happens between lines, and clusterd is the
//! only writer, so no line is lost or split (copy-and-truncate loses what is written between
//! the copy and the truncate). A unit's files take at most `max_size × (keep + 1)`. Every
//! open, rename and removal goes through the [`LogDir`]: no link is followed, and only files
//! clusterd created are written, kept or deleted.
//!
//! On ext4, a burst reserves the file's next blocks ahead of its writes ([`RESERVE_AHEAD`] at
//! a time, `fallocate` without changing the size): ext4 then maps each written block to one
//! already allocated instead of reserving it (and its quota) one 4 KiB block at a time, which
//! was a quarter of the kernel's time in writing a fast program's lines. All files together
//! hold at most [`RESERVED_AT_MOST`] beyond their ends (a thousand units that each had a burst
//! do not hold a thousand reservations); what is reserved beyond the last line is given back
//! when the file is rotated, reopened or closed (a crash leaves it, taken by the next start's
//! writes and given back by it).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::statfs::{fstatfs, EXT4_SUPER_MAGIC};

use super::log_dir::LogDir;

/// A point in a unit's log: the file (by device and inode, as rotation renames it) and its
/// length then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boundary {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
}

/// Blocks reserved ahead of a burst at a time.
const RESERVE_AHEAD: u64 = 4 << 20;
/// What all files may hold reserved beyond their ends at once: 16 bursts.
const RESERVED_AT_MOST: u64 = 64 << 20;
/// What all files hold reserved beyond their ends now (each file's `reserved_to - size`).
static RESERVED: AtomicU64 = AtomicU64::new(0);
/// A write at least this large is part of a burst (a trickle of lines reserves nothing).
const BURST_WRITE: usize = 64 * 1024;

pub(crate) struct UnitLogFile {
    dir: LogDir,
    /// `<unit>.log`, in `dir`.
    name: String,
    /// For messages.
    path: PathBuf,
    file: File,
    size: u64,
    /// 0: never rotate.
    pub(crate) max_size: u64,
    pub(crate) keep: u32,
    /// On ext4: blocks are reserved ahead of bursts (until a reservation fails) and given
    /// back.
    ext4: bool,
    /// A reservation failed (no space for it, a quota): none is tried again until the file
    /// is opened again.
    reserve_failed: bool,
    /// The file's blocks are reserved up to this offset (nothing beyond the end when it is
    /// not past `size`).
    reserved_to: u64,
    /// This file's part of [`RESERVED`]: `reserved_to - size` when last counted.
    held: u64,
}

impl UnitLogFile {
    /// `<unit>.log`: the unit's file in the log directory.
    pub(crate) fn name_of(unit: &str) -> String {
        format!("{unit}.log")
    }

    pub(crate) fn path_of(dir: &Path, unit: &str) -> PathBuf {
        dir.join(Self::name_of(unit))
    }

    /// Whether the unit has a log file (a link at its name counts: history says why it is
    /// left out).
    pub(crate) fn exists(dir: &LogDir, unit: &str) -> bool {
        dir.contains(&Self::name_of(unit))
    }

    /// Opens (or creates) the unit's file. The error names the file.
    #[cfg(test)]
    pub(crate) fn open(dir: &LogDir, unit: &str, max_size: u64, keep: u32) -> io::Result<Self> {
        Self::open_named(dir, &Self::name_of(unit), max_size, keep)
    }

    /// Opens (or creates) the log file `name` in `dir` (a unit's, or one of its streams' or
    /// instances'). The error names the file.
    pub(crate) fn open_named(
        dir: &LogDir,
        name: &str,
        max_size: u64,
        keep: u32,
    ) -> io::Result<Self> {
        let name = name.to_string();
        let file = dir.open_append(&name)?;
        let size = file.metadata()?.len();
        Ok(UnitLogFile {
            path: dir.path_of(&name),
            dir: dir.clone(),
            name,
            ext4: is_ext4(&file),
            reserve_failed: false,
            file,
            size,
            max_size,
            keep,
            reserved_to: 0,
            held: 0,
        })
    }

    /// Where the file stands now: a history read up to here and the lines offered to a
    /// follower from now on meet exactly, whatever is written or rotated meanwhile.
    pub(crate) fn boundary(&self) -> Option<Boundary> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().ok()?;
        Some(Boundary {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        })
    }

    /// Where the file `name` in `dir` stands now, if it is clusterd's (a file not open yet).
    pub(crate) fn boundary_of(dir: &LogDir, name: &str) -> Option<Boundary> {
        use std::os::unix::fs::MetadataExt;
        let meta = dir.open_read(name).ok()?.metadata().ok()?;
        Some(Boundary {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// True when `extra` more bytes would take a non-empty file past `max_size`.
    pub(crate) fn is_full_for(&self, extra: usize) -> bool {
        self.max_size > 0 && self.size > 0 && self.size + extra as u64 > self.max_size
    }

    /// True when `extra` more bytes keep the file within `max_size`.
    pub(crate) fn fits(&self, extra: usize) -> bool {
        self.max_size == 0 || self.size + extra as u64 <= self.max_size
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.ext4
            && !self.reserve_failed
            && bytes.len() >= BURST_WRITE
            && self.size + bytes.len() as u64 > self.reserved_to
        {
            self.reserve_ahead();
        }
        // On error, what was written is counted: the retry writes only the rest.
        let mut written = 0;
        while written < bytes.len() {
            match self.file.write(&bytes[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.size += n as u64;
                    if self.held > 0 {
                        self.count_held();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        PartialWrite { written, source: e },
                    ))
                }
            }
        }
        Ok(())
    }

    /// Reserves the file's next [`RESERVE_AHEAD`] bytes of blocks (not past `max_size`).
    /// A failure (no space for that much, a quota) is not an error: writes go on without,
    /// and say themselves when they fail.
    fn reserve_ahead(&mut self) {
        let room = match self.max_size {
            0 => RESERVE_AHEAD,
            max => max.saturating_sub(self.size).min(RESERVE_AHEAD),
        };
        let (Ok(from), Ok(len)) = (i64::try_from(self.size), i64::try_from(room)) else {
            return;
        };
        // This file's own reservation, if any, is used up: only other files' count.
        let others = RESERVED.load(Ordering::Relaxed).saturating_sub(self.held);
        if len == 0 || others + room > RESERVED_AT_MOST {
            return;
        }
        match fallocate(&self.file, FallocateFlags::FALLOC_FL_KEEP_SIZE, from, len) {
            Ok(()) => {
                self.reserved_to = self.size + room;
                self.count_held();
            }
            Err(_) => self.reserve_failed = true,
        }
    }

    /// Updates this file's part of [`RESERVED`] after a write or a reservation.
    fn count_held(&mut self) {
        let held = self.reserved_to.saturating_sub(self.size);
        if held > self.held {
            RESERVED.fetch_add(held - self.held, Ordering::Relaxed);
        } else {
            RESERVED.fetch_sub(self.held - held, Ordering::Relaxed);
        }
        self.held = held;
    }

    /// Gives back the blocks held beyond the file's end: reserved by this clusterd, or left
    /// by one that was killed or re-executed (a truncation to its own length frees them; the
    /// length is the file's, not what clusterd counted, in case someone else truncated it).
    fn give_back_reserved(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.reserved_to = 0;
        self.count_held();
        if !self.ext4 {
            return;
        }
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        if meta.blocks() * 512 > meta.len().div_ceil(4096) * 4096 {
            if let Ok(len) = i64::try_from(meta.len()) {
                let _ = nix::unistd::ftruncate(&self.file, len);
            }
        }
    }

    /// Renames the file aside (never over an existing name), opens a new one, and deletes
    /// the oldest beyond `keep`.
    pub(crate) fn rotate(&mut self) -> io::Result<()> {
        self.give_back_reserved();
        let stamp = super::line_format::timestamp(SystemTime::now());
        // `2026-11-29T21:05:03.123456Z` → `20261129T210503.123456Z`: no colons in names.
        let compact: String = String::from_utf8_lossy(&stamp)
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        self.dir
            .rename_aside(&self.name, &format!("{}.{compact}", self.name))?;
        self.reopen()?;
        self.prune();
        Ok(())
    }

    /// Opens the file by its name again (after an external logrotate renamed it).
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        self.give_back_reserved();
        self.file = self.dir.open_append(&self.name)?;
        self.size = self.file.metadata()?.len();
        self.ext4 = is_ext4(&self.file);
        self.reserve_failed = false;
        Ok(())
    }

    /// Deletes the oldest rotated files beyond `keep` — clusterd's own only: a file someone
    /// else put there is neither counted nor deleted.
    fn prune(&self) {
        let rotated: Vec<String> = rotated_names(&self.dir, &self.name)
            .into_iter()
            .filter(|name| self.dir.is_own_file(name))
            .collect();
        let excess = rotated.len().saturating_sub(self.keep as usize);
        for old in rotated.iter().take(excess) {
            if let Err(e) = self.dir.remove(old) {
                log::warn!("cannot delete the old log file: {e}");
            }
        }
    }
}

impl Drop for UnitLogFile {
    fn drop(&mut self) {
        self.give_back_reserved();
    }
}

/// Whether `file` is on ext4 (where reserving blocks ahead saves its per-block reservation;
/// elsewhere it would only take space early: tmpfs memory, a copy-on-write file system's
/// blocks).
fn is_ext4(file: &File) -> bool {
    fstatfs(file).is_ok_and(|fs| fs.filesystem_type() == EXT4_SUPER_MAGIC)
}

/// The rotated names of the log file `name` in `dir`, oldest first: clusterd's own
/// `<name>.<UTC time>[-n]`, and an external logrotate's `<name>.<n>` (the larger, the older).
/// Nothing else: unit `web.log.1`'s file `web.log.1.log` is not unit `web`'s.
pub(crate) fn rotated_names(dir: &LogDir, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    let mut found: Vec<(Option<u64>, String)> = dir
        .names()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let rest = entry.strip_prefix(&prefix)?;
            if is_rotation_stamp(rest) {
                Some((None, entry))
            } else if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                Some((Some(rest.parse().unwrap_or(u64::MAX)), entry))
            } else {
                None
            }
        })
        .collect();
    // logrotate's before clusterd's, each oldest first.
    found.sort_by(|(a_n, a), (b_n, b)| match (a_n, b_n) {
        (Some(a_n), Some(b_n)) => b_n.cmp(a_n),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    });
    found.into_iter().map(|(_, entry)| entry).collect()
}

/// `20261129T210503.123456Z`, maybe followed by `-<n>` (a second rotation in the same
/// microsecond).
fn is_rotation_stamp(rest: &str) -> bool {
    let (stamp, n) = rest.split_once('-').unwrap_or((rest, "1"));
    let shape = "ddddddddTdddddd.ddddddZ";
    stamp.len() == shape.len()
        && stamp.bytes().zip(shape.bytes()).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// A write that failed after `written` bytes had gone out.
#[derive(Debug)]
pub(crate) struct PartialWrite {
    pub(crate) written: usize,
    source: io::Error,
}

impl std::fmt::Display for PartialWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for PartialWrite {}

/// How many bytes of a failed `write_all` went out.
pub(crate) fn written_before(error: &io::Error) -> usize {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<PartialWrite>())
        .map_or(0, |partial| partial.written)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_the_size_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        let mut log = UnitLogFile::open(&dir, "web", 100, 2).unwrap();
        for i in 0..50 {
            let line = format!("line {i:03} of a unit that writes\n");
            if log.is_full_for(line.len()) {
                log.rotate().unwrap();
            }
            log.write_all(line.as_bytes()).unwrap();
        }
        let rotated = rotated_names(&dir, "web.log");
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut all = String::new();
        for name in rotated.iter().chain(["web.log".to_string()].iter()) {
            let text = fs::read_to_string(tmp.path().join(name)).unwrap();
            assert!(text.len() <= 100, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'));
            all.push_str(&text);
        }
        // The newest lines, in order, none split.
        assert!(all.ends_with("line 049 of a unit that writes\n"));
        let numbers: Vec<u32> = all.lines().map(|l| l[5..8].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        // Units named `web.log` and `web.log.1` have files of their own.
        fs::write(tmp.path().join("web.log.log"), "x").unwrap();
        fs::write(tmp.path().join("web.log.1.log"), "x").unwrap();
        assert_eq!(rotated_names(&dir, "web.log").len(), 2);
    }

    #[test]
    fn rotated_names_are_clusterds_by_time_after_logrotates_by_number() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        for name in [
            "web.log.20261129T210503.123456Z-1",
            "web.log.20261129T210503.123456Z",
            "web.log.20251129T210503.123456Z",
            "web.log.1",
            "web.log.2",
            "web.log.2.gz",
            "web.log.1x",
            "web.log.20261129T210503.123456Z.log",
        ] {
            fs::write(tmp.path().join(name), "x").unwrap();
        }
        assert_eq!(
            rotated_names(&dir, "web.log"),
            [
                "web.log.2",
                "web.log.1",
                "web.log.20251129T210503.123456Z",
                "web.log.20261129T210503.123456Z",
                "web.log.20261129T210503.123456Z-1",
            ]
        );
    }

    #[test]
    fn a_link_or_a_second_name_at_the_files_name_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(&tmp.path().join("logs"));
        let victim = tmp.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        // The directory is created (0750) when the first file is needed.
        let mut first = UnitLogFile::open(&dir, "first", 0, 1).unwrap();
        first.write_all(b"line\n").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("logs/web.log")).unwrap();
        let error = UnitLogFile::open(&dir, "web", 0, 1).err().unwrap();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        fs::hard_link(&victim, tmp.path().join("logs/api.log")).unwrap();
        let error = UnitLogFile::open(&dir, "api", 0, 1).err().unwrap();
        assert!(error.to_string().contains("2 names"), "{error}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    }
}
