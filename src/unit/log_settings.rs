//! `[log]`: where a unit's output goes and how its files are kept, with the defaults: the
//! files' names (one for the unit, one per stream, one per instance) and the timestamps'
//! format.

use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::timestamp_format::TimestampFormat;
use super::unit_error::{At, UnitError, UnitErrorKind};
use super::unit_file::LogTable;
use super::values::LogTo;

/// Rotate at 50 MiB, keep 10 old files (supervisord's defaults).
const DEFAULT_LOG_MAX_SIZE: u64 = 50 << 20;
pub(super) const DEFAULT_LOG_KEEP: u32 = 10;
/// More old files than this is a typo: each is up to `max_size`.
const MAX_LOG_KEEP: u32 = 1000;

/// Where a unit's output goes and how its file is kept (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `None`: clusterd's default (`--log-default`).
    pub to: Option<LogTo>,
    /// `None`: true for files, false on the console.
    pub timestamps: Option<bool>,
    /// Rotate when the file reaches this size; 0 = never.
    pub max_size: u64,
    /// Rotated files kept.
    pub keep: u32,
    /// `file`: the unit's file (both streams unless `stdout`/`stderr` say otherwise);
    /// `None`: `<unit>.log`. A relative one is a name in the log directory.
    pub file: Option<PathBuf>,
    /// `stdout` / `stderr`: that stream's own file.
    pub stdout: Option<LogFileSetting>,
    pub stderr: Option<LogFileSetting>,
    /// `split`: each stream in a file of its own, `<name>.out.log` and `<name>.err.log`.
    pub split: bool,
    /// `per_instance`: each instance in files of its own, `<name>-<n>.log`.
    pub per_instance: bool,
    /// `None`: RFC 3339 UTC with microseconds.
    pub timestamp_format: Option<TimestampFormat>,
}

/// Where one stream goes, as `stdout`/`stderr` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFileSetting {
    /// Absolute, or a name in the log directory.
    Path(PathBuf),
    /// `"/dev/null"`: nowhere (PM2's way to say it).
    Discard,
}

/// Which stream a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Out,
    Err,
}

impl LogSettings {
    /// The file the `stream` of instance `index` of `unit` goes to: absolute, or a name in
    /// the log directory; `None`: discarded. clusterd's own events about an instance go to
    /// its stdout's file.
    pub fn file_for(&self, unit: &str, stream: LogStream, index: u32) -> Option<PathBuf> {
        let own = match stream {
            LogStream::Out => &self.stdout,
            LogStream::Err => &self.stderr,
        };
        let path = match own {
            Some(LogFileSetting::Discard) => return None,
            Some(LogFileSetting::Path(path)) => path.clone(),
            None => {
                let base = self
                    .file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("{unit}.log")));
                if self.split {
                    insert_before_log(
                        &base,
                        match stream {
                            LogStream::Out => ".out",
                            LogStream::Err => ".err",
                        },
                    )
                } else {
                    base
                }
            }
        };
        Some(if self.per_instance {
            insert_before_log(&path, &format!("-{index}"))
        } else {
            path
        })
    }
}

impl LogSettings {
    /// Every file of the layout (each instance's of `instances`, each stream's), once each,
    /// in order: absolute, or names in the log directory.
    pub fn files(&self, unit: &str, instances: u32) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        let instances = if self.per_instance {
            instances.max(1)
        } else {
            1
        };
        for index in 0..instances {
            for stream in [LogStream::Out, LogStream::Err] {
                if let Some(path) = self.file_for(unit, stream, index) {
                    if !files.contains(&path) {
                        files.push(path);
                    }
                }
            }
        }
        files
    }
}

/// `web.log` + `.out` → `web.out.log`; a name without `.log` gets it at the end:
/// `web` → `web.out`.
fn insert_before_log(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new = match name.strip_suffix(".log") {
        Some(stem) if !stem.is_empty() => format!("{stem}{what}.log"),
        _ => format!("{name}{what}"),
    };
    path.with_file_name(new)
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            to: None,
            timestamps: None,
            max_size: DEFAULT_LOG_MAX_SIZE,
            keep: DEFAULT_LOG_KEEP,
            file: None,
            stdout: None,
            stderr: None,
            split: false,
            per_instance: false,
            timestamp_format: None,
        }
    }
}

/// `[log]`, checked: at most [`MAX_LOG_KEEP`] old files, file paths absolute or bare names,
/// a timestamp format clusterd knows.
pub(super) fn log_settings(table: Option<LogTable>, at: &At) -> Result<LogSettings, UnitError> {
    let defaults = LogSettings::default();
    let Some(table) = table else {
        return Ok(defaults);
    };
    let bad = |spanned: &Spanned<String>, why: String| {
        at(spanned.span().start, UnitErrorKind::BadValue, why)
    };
    let file = table
        .file
        .as_ref()
        .map(|f| match log_path("file", f.get_ref()) {
            Ok(LogFileSetting::Path(path)) => Ok(path),
            Ok(LogFileSetting::Discard) => Err(bad(
                f,
                "log.file = \"/dev/null\": to keep no output, write log.to = \"inherit\" or stdout/stderr = \"/dev/null\"".into(),
            )),
            Err(why) => Err(bad(f, why)),
        })
        .transpose()?;
    let stream = |key: &str, value: &Option<Spanned<String>>| {
        value
            .as_ref()
            .map(|v| log_path(key, v.get_ref()).map_err(|why| bad(v, why)))
            .transpose()
    };
    let timestamp_format = table
        .timestamp_format
        .as_ref()
        .map(|f| {
            TimestampFormat::parse(f.get_ref())
                .map_err(|why| bad(f, format!("log.timestamp_format: {why}")))
        })
        .transpose()?;
    Ok(LogSettings {
        stdout: stream("stdout", &table.stdout)?,
        stderr: stream("stderr", &table.stderr)?,
        file,
        split: table.split.unwrap_or(false),
        per_instance: table.per_instance.unwrap_or(false),
        timestamp_format,
        to: table.to,
        timestamps: table.timestamps,
        max_size: table.max_size.map_or(defaults.max_size, |s| s.0),
        keep: match table.keep {
            Some(keep) if *keep.get_ref() > MAX_LOG_KEEP => {
                return Err(at(
                    keep.span().start,
                    UnitErrorKind::BadValue,
                    format!(
                        "log.keep = {} is more than the limit of {MAX_LOG_KEEP}",
                        keep.get_ref()
                    ),
                ))
            }
            Some(keep) => keep.into_inner(),
            None => defaults.keep,
        },
    })
}

/// A `file`/`stdout`/`stderr` value: an absolute path to a file, or a bare name in the log
/// directory; `/dev/null` discards.
fn log_path(key: &str, text: &str) -> Result<LogFileSetting, String> {
    if text == "/dev/null" {
        return Ok(LogFileSetting::Discard);
    }
    let path = Path::new(text);
    let named =
        matches!(path.components().next_back(), Some(Component::Normal(_))) && !text.ends_with('/');
    let normal = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !named || !normal {
        return Err(format!(
            "log.{key} = {text:?} is not a file's path: give an absolute path without `.` or `..` (/var/log/app/web.log) or a name in the log directory (web.log)"
        ));
    }
    if !path.is_absolute() && path.components().count() != 1 {
        return Err(format!(
            "log.{key} = {text:?}: a relative path is a name in the log directory, without `/`; give an absolute path for a file elsewhere"
        ));
    }
    Ok(LogFileSetting::Path(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_and_instance_finds_its_file() {
        let mut log = LogSettings::default();
        let file = |log: &LogSettings, stream, i| log.file_for("web", stream, i);
        assert_eq!(file(&log, LogStream::Err, 3), Some("web.log".into()));
        log.split = true;
        assert_eq!(file(&log, LogStream::Out, 0), Some("web.out.log".into()));
        assert_eq!(file(&log, LogStream::Err, 0), Some("web.err.log".into()));
        log.per_instance = true;
        assert_eq!(file(&log, LogStream::Err, 1), Some("web.err-1.log".into()));
        log.split = false;
        log.file = Some("/var/log/app/web.log".into());
        assert_eq!(
            file(&log, LogStream::Out, 2),
            Some("/var/log/app/web-2.log".into())
        );
        log.per_instance = false;
        log.stdout = Some(LogFileSetting::Discard);
        log.stderr = Some(LogFileSetting::Path("/srv/err".into()));
        assert_eq!(file(&log, LogStream::Out, 0), None);
        assert_eq!(file(&log, LogStream::Err, 0), Some("/srv/err".into()));
    }

    #[test]
    fn paths_are_absolute_or_bare_names() {
        for good in ["web.log", "/var/log/app/web.log", "/dev/null"] {
            assert!(log_path("file", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "/var/log/",
            "logs/web.log",
            "../web.log",
            "/var/../etc/x",
        ] {
            assert!(log_path("file", bad).is_err(), "{bad}");
        }
    }
}
