//! `[log]`: where a unit's output goes and how its file is kept, with the defaults.

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
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            to: None,
            timestamps: None,
            max_size: DEFAULT_LOG_MAX_SIZE,
            keep: DEFAULT_LOG_KEEP,
        }
    }
}

/// `[log]`, checked: at most [`MAX_LOG_KEEP`] old files.
pub(super) fn log_settings(table: Option<LogTable>, at: &At) -> Result<LogSettings, UnitError> {
    let defaults = LogSettings::default();
    let Some(table) = table else {
        return Ok(defaults);
    };
    Ok(LogSettings {
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
