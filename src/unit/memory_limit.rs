//! `memory_max` and `memory_check_interval`: the limit above which an instance is replaced
//! gracefully, and how often it is checked.

use std::time::Duration;

use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};
use super::values::{ByteSize, HumanDuration};

const DEFAULT_MEMORY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `memory_max` in bytes, more than 0 when set.
pub(super) fn memory_max(
    max: Option<Spanned<ByteSize>>,
    at: &At,
) -> Result<Option<u64>, UnitError> {
    match max {
        Some(max) if max.get_ref().0 == 0 => Err(at(
            max.span().start,
            UnitErrorKind::BadValue,
            "memory_max must be more than 0 (leave it out for no limit)".into(),
        )),
        other => Ok(other.map(|m| m.into_inner().0)),
    }
}

/// `memory_check_interval`, longer than 0.
pub(super) fn memory_check_interval(
    interval: Option<Spanned<HumanDuration>>,
    at: &At,
) -> Result<Duration, UnitError> {
    match interval {
        Some(i) if i.get_ref().0.is_zero() => Err(at(
            i.span().start,
            UnitErrorKind::BadValue,
            "memory_check_interval must be longer than 0".into(),
        )),
        Some(i) => Ok(i.into_inner().0),
        None => Ok(DEFAULT_MEMORY_CHECK_INTERVAL),
    }
}
