//! Reading a units directory: every `DIR/*.toml` file becomes a unit, or an error that names
//! the file. A broken file never hides the others.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::unit::Unit;
use super::unit_error::{UnitError, UnitErrorKind};

/// One unit file of a directory: its unit name and either the unit or why it was rejected.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub name: String,
    pub path: PathBuf,
    pub result: Result<Unit, UnitError>,
}

/// Reads every `*.toml` file of `dir`, sorted by name. The outer error is for a directory that
/// cannot be read at all.
pub fn load_units_dir(dir: &Path) -> Result<Vec<LoadedFile>, std::io::Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut files: Vec<LoadedFile> = paths.iter().map(|path| load_unit_file(path)).collect();
    super::order::check_order(&mut files);
    Ok(files)
}

pub fn load_unit_file(path: &Path) -> LoadedFile {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match read_unit_text(path) {
        Err(message) => Err(UnitError::whole_file(
            path,
            UnitErrorKind::Unreadable,
            message,
        )),
        Ok(bytes) => match String::from_utf8(bytes) {
            Err(_) => Err(UnitError::whole_file(
                path,
                UnitErrorKind::Unreadable,
                "not valid UTF-8",
            )),
            Ok(text) => Unit::parse(path, &text),
        },
    };
    LoadedFile {
        name,
        path: path.to_path_buf(),
        result,
    }
}

/// A unit file is a few hundred bytes; anything near this is not one.
const MAX_UNIT_FILE_BYTES: u64 = 1024 * 1024;

/// The bytes of a unit file, which must be a regular file (a symlink to one is fine) of at
/// most [`MAX_UNIT_FILE_BYTES`]. Opened with O_NONBLOCK, so a FIFO named `x.toml` cannot hold
/// the daemon in `open`, and checked before anything is read, so `/dev/zero` is not read at
/// all.
pub fn read_unit_text(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file; a unit file must be one".into());
    }
    if meta.len() > MAX_UNIT_FILE_BYTES {
        return Err(format!(
            "too large ({} bytes; a unit file may have at most {MAX_UNIT_FILE_BYTES})",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may grow after the check.
    file.take(MAX_UNIT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_UNIT_FILE_BYTES {
        return Err(format!(
            "too large (a unit file may have at most {MAX_UNIT_FILE_BYTES} bytes)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_bounded_size_are_unit_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = load_unit_file(&fifo).result.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = load_unit_file(&zero).result.unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_UNIT_FILE_BYTES as usize + 1]).unwrap();
        let err = load_unit_file(&big).result.unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "command = \"true\"\n").unwrap();
        assert!(load_unit_file(&good).result.is_ok());
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(load_unit_file(&link).result.is_ok());
    }
}
