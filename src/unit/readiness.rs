//! When a new instance counts as ready: `ready` (its default follows `node_cluster`),
//! `ready_timeout`, `listen_timeout` and `ready_after`, with their defaults and the checks
//! that tie them together.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};
use super::values::{HumanDuration, NodeScheduling, ReadyMode};

const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// PM2's `listen_timeout`.
const DEFAULT_LISTEN_TIMEOUT: Duration = Duration::from_secs(3);
/// Without `ready_after`: ready as soon as the mode says so.
const DEFAULT_READY_AFTER: Duration = Duration::ZERO;

/// `ready`, by default `"listening"` for a Node cluster unit and `"started"` otherwise;
/// `"listening"` only for a Node cluster unit.
pub(super) fn ready_mode(
    ready: Option<ReadyMode>,
    node_cluster: Option<NodeScheduling>,
    path: &Path,
) -> Result<ReadyMode, UnitError> {
    // A Node cluster worker is ready once it listens (its `listening` message), as in
    // PM2's cluster mode, or after `listen_timeout` for an app that never listens;
    // `ready = "notify"` waits for `process.send('ready')` (PM2's `wait_ready`).
    let ready = ready.unwrap_or(if node_cluster.is_some() {
        ReadyMode::Listening
    } else {
        ReadyMode::Started
    });
    if ready == ReadyMode::Listening && node_cluster.is_none() {
        return Err(UnitError::whole_file(
            path,
            UnitErrorKind::Conflict,
            "ready = \"listening\" is for node_cluster units, whose listen() clusterd sees (set node_cluster = true, or use \"notify\")",
        ));
    }
    Ok(ready)
}

/// `listen_timeout`, which applies with `ready = "listening"` only.
pub(super) fn listen_timeout(
    timeout: Option<Spanned<HumanDuration>>,
    ready: ReadyMode,
    at: &At,
) -> Result<Duration, UnitError> {
    match timeout {
        Some(timeout) if ready != ReadyMode::Listening => Err(at(
            timeout.span().start,
            UnitErrorKind::Conflict,
            "listen_timeout applies with ready = \"listening\" (the default of node_cluster units)"
                .into(),
        )),
        Some(timeout) => Ok(timeout.into_inner().0),
        None => Ok(DEFAULT_LISTEN_TIMEOUT),
    }
}

pub(super) fn ready_timeout(timeout: Option<HumanDuration>) -> Duration {
    timeout.map_or(DEFAULT_READY_TIMEOUT, |d| d.0)
}

/// `ready_after`, which must be shorter than a notify unit's `ready_timeout`.
pub(super) fn ready_after(
    after: Option<Spanned<HumanDuration>>,
    ready: ReadyMode,
    ready_timeout: Duration,
    at: &At,
) -> Result<Duration, UnitError> {
    match after {
        Some(after) if ready == ReadyMode::Notify && after.get_ref().0 >= ready_timeout => Err(at(
            after.span().start,
            UnitErrorKind::Conflict,
            format!(
                "ready_after ({}) must be shorter than ready_timeout ({}): a notify instance would always time out",
                humantime::format_duration(after.get_ref().0),
                humantime::format_duration(ready_timeout)
            ),
        )),
        Some(after) => Ok(after.into_inner().0),
        None => Ok(DEFAULT_READY_AFTER),
    }
}
