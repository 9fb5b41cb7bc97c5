//! When an instance that exited is started again: `restart_limit` (the budget of automatic
//! restarts) and the wait before each, `restart_delay` or `restart_backoff`, with their
//! defaults.

use std::time::Duration;

use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};
use super::unit_file::{RestartBackoffTable, RestartLimitTable};
use super::values::HumanDuration;

/// Default `restart_limit`: at most 10 automatic restarts in any 60 s.
const DEFAULT_RESTART_BURST: u32 = 10;
const DEFAULT_RESTART_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartLimit {
    pub burst: u32,
    pub interval: Duration,
    /// A restart after a run at least this long is not counted (PM2's `min_uptime`: only
    /// unstable runs count against `max_restarts`); `None`: every restart counts.
    pub min_uptime: Option<Duration>,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit {
            burst: DEFAULT_RESTART_BURST,
            interval: DEFAULT_RESTART_INTERVAL,
            min_uptime: None,
        }
    }
}

/// `restart_backoff`: growing waits before restarts of an instance that keeps crashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    pub initial: Duration,
    pub max: Duration,
    /// An instance that ran this long before it exited starts from `initial` again.
    pub reset_after: Duration,
}

/// PM2's `exp_backoff_restart_delay` defaults.
impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(15),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl RestartBackoff {
    /// The wait after `delay`: 1.5 times longer, at most `max`.
    pub fn after(&self, delay: Duration) -> Duration {
        delay.mul_f64(1.5).min(self.max)
    }
}

/// `restart_limit`, checked: an interval longer than 0.
pub(super) fn restart_limit(
    table: Option<RestartLimitTable>,
    at: &At,
) -> Result<RestartLimit, UnitError> {
    let defaults = RestartLimit::default();
    let Some(table) = table else {
        return Ok(defaults);
    };
    let interval = match table.interval {
        None => defaults.interval,
        Some(i) if i.get_ref().0.is_zero() => {
            return Err(at(
                i.span().start,
                UnitErrorKind::BadValue,
                "restart_limit.interval must be longer than 0".into(),
            ))
        }
        Some(i) => i.into_inner().0,
    };
    Ok(RestartLimit {
        burst: table.burst.unwrap_or(defaults.burst),
        interval,
        min_uptime: table.min_uptime.map(|d| d.0),
    })
}

/// The wait before a restart: `restart_delay` (none by default), or `restart_backoff`
/// (checked: an `initial` longer than 0 and at most `max`), never both.
pub(super) fn restart_wait(
    delay: Option<&Spanned<HumanDuration>>,
    backoff: Option<Spanned<RestartBackoffTable>>,
    at: &At,
) -> Result<(Duration, Option<RestartBackoff>), UnitError> {
    let restart_delay = delay.map_or(Duration::ZERO, |d| d.get_ref().0);
    let restart_backoff =
        match (backoff, delay) {
            (Some(table), Some(_)) => return Err(at(
                table.span().start,
                UnitErrorKind::Conflict,
                "restart_backoff and restart_delay both set the wait before a restart: keep one"
                    .into(),
            )),
            (Some(table), None) => Some(restart_backoff(table.into_inner(), at)?),
            (None, _) => None,
        };
    Ok((restart_delay, restart_backoff))
}

/// `restart_prevent_exit_codes`: exit codes (0–255) after which a service's instance is
/// not restarted. A one-shot has `success_exit_codes` instead (its run ends either way).
pub(super) fn restart_prevent_exit_codes(
    codes: Option<Spanned<Vec<i32>>>,
    oneshot: bool,
    at: &At,
) -> Result<Vec<i32>, UnitError> {
    let Some(codes) = codes else {
        return Ok(Vec::new());
    };
    let start = codes.span().start;
    if oneshot {
        return Err(at(
            start,
            UnitErrorKind::Conflict,
            "restart_prevent_exit_codes applies to services; a one-shot's run ends at every exit (success_exit_codes says which are successes)".into(),
        ));
    }
    let codes = codes.into_inner();
    if let Some(bad) = codes.iter().find(|c| !(0..=255).contains(*c)) {
        return Err(at(
            start,
            UnitErrorKind::BadValue,
            format!("restart_prevent_exit_codes: {bad} is not an exit code (0–255)"),
        ));
    }
    Ok(codes)
}

fn restart_backoff(table: RestartBackoffTable, at: &At) -> Result<RestartBackoff, UnitError> {
    let defaults = RestartBackoff::default();
    let backoff = RestartBackoff {
        initial: table
            .initial
            .as_ref()
            .map_or(defaults.initial, |d| d.get_ref().0),
        max: table.max.map_or(defaults.max, |d| d.0),
        reset_after: table.reset_after.map_or(defaults.reset_after, |d| d.0),
    };
    if backoff.initial.is_zero() || backoff.initial > backoff.max {
        return Err(at(
            table.initial.map_or(0, |d| d.span().start),
            UnitErrorKind::BadValue,
            "restart_backoff.initial must be longer than 0 and at most max".into(),
        ));
    }
    Ok(backoff)
}
