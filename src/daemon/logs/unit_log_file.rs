//! One unit's log file, `<dir>/<unit>.log`, with size rotation: when the next line would take
//! it past `max_size`, the file is renamed to `<unit>.log.<UTC time>` (one rename: tools that
//! follow files by inode keep the right one; the name sorts by age) and a new one is opened;
//! old files beyond `keep` are deleted. Rotation happens between lines, and clusterd is the
//! only writer, so no line is lost or split (copy-and-truncate loses what is written between
//! the copy and the truncate). A unit's files take at most `max_size × (keep + 1)`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Log files may hold what programs print, secrets included: owner and group only.
const FILE_MODE: u32 = 0o640;

pub(crate) struct UnitLogFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// 0: never rotate.
    pub(crate) max_size: u64,
    pub(crate) keep: u32,
}

impl UnitLogFile {
    pub(crate) fn path_of(dir: &Path, unit: &str) -> PathBuf {
        dir.join(format!("{unit}.log"))
    }

    pub(crate) fn open(dir: &Path, unit: &str, max_size: u64, keep: u32) -> io::Result<Self> {
        let path = Self::path_of(dir, unit);
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(UnitLogFile {
            path,
            file,
            size,
            max_size,
            keep,
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
        // On error, what was written is counted: the retry writes only the rest.
        let mut written = 0;
        while written < bytes.len() {
            match self.file.write(&bytes[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.size += n as u64;
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

    /// Renames the file aside, opens a new one, and deletes the oldest beyond `keep`.
    pub(crate) fn rotate(&mut self) -> io::Result<()> {
        let stamp = super::line_format::timestamp(SystemTime::now());
        // `2026-11-29T21:05:03.123456Z` → `20261129T210503.123456Z`: no colons in names.
        let compact: String = String::from_utf8_lossy(&stamp)
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let mut aside = PathBuf::from(format!("{}.{compact}", self.path.display()));
        let mut n = 1;
        while aside.exists() {
            aside = PathBuf::from(format!("{}.{compact}-{n}", self.path.display()));
            n += 1;
        }
        fs::rename(&self.path, &aside)?;
        self.reopen()?;
        self.prune();
        Ok(())
    }

    /// Opens the file by its name again (after an external logrotate renamed it).
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    fn prune(&self) {
        let rotated = rotated_files(&self.path);
        let excess = rotated.len().saturating_sub(self.keep as usize);
        for old in &rotated[..excess] {
            if let Err(e) = fs::remove_file(old) {
                log::warn!("cannot delete the old log file {}: {e}", old.display());
            }
        }
    }
}

/// The rotated files of the log file `path`, oldest first.
pub(crate) fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // `<unit>.log.20261129T210503.123456Z[-n]`: a digit after the dot, so that unit
            // `web`'s files are never confused with unit `web.log`'s.
            name.strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
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
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = UnitLogFile::open(dir.path(), "web", 100, 2).unwrap();
        for i in 0..50 {
            let line = format!("line {i:03} of a unit that writes\n");
            if log.is_full_for(line.len()) {
                log.rotate().unwrap();
            }
            log.write_all(line.as_bytes()).unwrap();
        }
        let rotated = rotated_files(log.path());
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut all = String::new();
        for path in rotated.iter().chain([log.path().to_path_buf()].iter()) {
            let text = fs::read_to_string(path).unwrap();
            assert!(text.len() <= 100, "{path:?}: {} bytes", text.len());
            assert!(text.ends_with('\n'));
            all.push_str(&text);
        }
        // The newest lines, in order, none split.
        assert!(all.ends_with("line 049 of a unit that writes\n"));
        let numbers: Vec<u32> = all.lines().map(|l| l[5..8].parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        // A unit named `web.log` has files of its own.
        fs::write(dir.path().join("web.log.log"), "x").unwrap();
        assert_eq!(rotated_files(log.path()).len(), 2);
    }
}
