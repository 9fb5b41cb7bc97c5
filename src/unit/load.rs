//! Reading a units directory: every `DIR/*.toml` file becomes a unit, or an error that names
//! the file. A broken file never hides the others.

use std::path::{Path, PathBuf};

use super::unit::Unit;
use super::unit_error::UnitError;

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
    Ok(paths
        .into_iter()
        .map(|path| load_unit_file(&path))
        .collect())
}

pub fn load_unit_file(path: &Path) -> LoadedFile {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match std::fs::read(path) {
        Err(e) => Err(UnitError::whole_file(path, format!("cannot read: {e}"))),
        Ok(bytes) => match String::from_utf8(bytes) {
            Err(_) => Err(UnitError::whole_file(path, "not valid UTF-8")),
            Ok(text) => Unit::parse(path, &text),
        },
    };
    LoadedFile {
        name,
        path: path.to_path_buf(),
        result,
    }
}
