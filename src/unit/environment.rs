//! A unit's environment: `environment`, `[environments.NAME]` and `environment_file`, each
//! checked so that every name and value is one a process can hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::unit::{absolute, is_valid_unit_name};
use super::unit_error::{At, UnitError, UnitErrorKind};
use super::unit_file::Variables;
use super::values::PathList;

/// One `environment_file` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    /// Absolute; a relative path is taken relative to the unit file's directory.
    pub path: PathBuf,
    /// Written with a leading `-`: a missing file is no error.
    pub optional: bool,
}

/// A table of variables, checked: names non-empty without `=`, nothing with a NUL byte.
pub(super) fn variables(table: Variables, at: &At) -> Result<BTreeMap<String, String>, UnitError> {
    let mut variables = BTreeMap::new();
    for (key, value) in table {
        let span = key.span();
        let key = key.into_inner();
        let value = value.0;
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(at(
                span.start,
                UnitErrorKind::BadValue,
                format!("invalid environment variable name {key:?}"),
            ));
        }
        variables.insert(key, value);
    }
    Ok(variables)
}

/// `[environments.NAME]`, checked: names as unit names, variables as [`variables`].
pub(super) fn environments(
    tables: BTreeMap<Spanned<String>, Variables>,
    at: &At,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, UnitError> {
    let mut environments = BTreeMap::new();
    for (name, table) in tables {
        if !is_valid_unit_name(name.get_ref()) {
            return Err(at(
                name.span().start,
                UnitErrorKind::BadValue,
                format!(
                    "invalid environment name {:?}: use letters, digits, '-', '_' and '.'",
                    name.get_ref()
                ),
            ));
        }
        environments.insert(name.into_inner(), variables(table, at)?);
    }
    Ok(environments)
}

/// `environment_file`: absolute paths (relative to `base_dir`), `-path` optional.
pub(super) fn environment_files(
    paths: Option<Spanned<PathList>>,
    base_dir: &Path,
    at: &At,
) -> Result<Vec<EnvironmentFile>, UnitError> {
    let mut environment_files = Vec::new();
    let Some(paths) = paths else {
        return Ok(environment_files);
    };
    let start = paths.span().start;
    for path in paths.into_inner().0 {
        let (optional, path) = match path.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, path.as_str()),
        };
        if path.is_empty() || path.contains('\0') {
            return Err(at(
                start,
                UnitErrorKind::BadValue,
                format!("invalid environment_file path {path:?}"),
            ));
        }
        environment_files.push(EnvironmentFile {
            path: absolute(&base_dir.join(path)),
            optional,
        });
    }
    Ok(environment_files)
}

/// `instance_variable` and `increment_variable`: a variable's name, checked as
/// [`variables`] checks names.
pub(super) fn variable_name(
    name: Option<Spanned<String>>,
    key: &str,
    at: &At,
) -> Result<Option<String>, UnitError> {
    let Some(name) = name else {
        return Ok(None);
    };
    let start = name.span().start;
    let name = name.into_inner();
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Err(at(
            start,
            UnitErrorKind::BadValue,
            format!("{key}: invalid environment variable name {name:?}"),
        ));
    }
    Ok(Some(name))
}
