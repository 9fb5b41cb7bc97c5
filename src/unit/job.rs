//! The keys that make a unit a job and order it among the others: `type` (`"service"` or
//! `"oneshot"`), `after` (the units it starts after), `schedule` (when a one-shot runs by
//! itself: a 5-field cron schedule or `every DURATION`) and `success_exit_codes`. Parsed
//! here into [`JobSettings`], with the checks between them and the keys a one-shot cannot
//! have. Whether the names in `after` exist and form no cycle is a check over the whole
//! directory: [`super::order`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::cron::CronSchedule;
use super::unit_error::{At, UnitError, UnitErrorKind};
use super::values::RestartPolicy;

/// At most this many names in `after`: a unit file is written by a person, and each name
/// is looked at whenever a dependency changes.
pub const MAX_AFTER: usize = 256;

/// The shortest `every`: a job due more often than this is a service with a sleep.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// `type`: what the unit's instances are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// Long-running: kept running, restarted as `restart` says.
    #[default]
    Service,
    /// Runs its instances to completion: `done` when each exited successfully.
    Oneshot,
}

/// `schedule`: when a one-shot runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// At the minutes of a cron schedule, local time.
    Cron(CronSchedule),
    /// Every this long, counted from when clusterd loaded the unit.
    Every(Duration),
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Schedule::Cron(cron) => write!(f, "{cron}"),
            Schedule::Every(every) => write!(f, "every {}", humantime::format_duration(*every)),
        }
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let Some(duration) = text.trim().strip_prefix("every ") else {
            return text.parse().map(Schedule::Cron);
        };
        let every = humantime::parse_duration(duration.trim())
            .map_err(|e| format!("schedule {text:?}: invalid duration: {e}"))?;
        if every < MIN_EVERY {
            return Err(format!(
                "schedule {text:?}: at least every {}",
                humantime::format_duration(MIN_EVERY)
            ));
        }
        if every > super::MAX_DURATION {
            return Err(format!("schedule {text:?}: too long (at most 10 years)"));
        }
        Ok(Schedule::Every(every))
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The unit's kind, order and schedule, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSettings {
    pub kind: UnitKind,
    /// Units that must be satisfied (a service ready, a one-shot done) before this one
    /// starts; each name once.
    pub after: Vec<String>,
    pub schedule: Option<Schedule>,
    /// Exit codes that count as success besides 0 (one-shots only).
    pub success_exit_codes: Vec<i32>,
}

impl JobSettings {
    pub fn is_oneshot(&self) -> bool {
        self.kind == UnitKind::Oneshot
    }

    /// An exit with `code` is a successful run.
    pub fn succeeded_with(&self, code: i32) -> bool {
        code == 0 || self.success_exit_codes.contains(&code)
    }
}

/// The raw values of the job keys, as [`super::UnitFile`] read them.
pub(crate) struct JobKeys {
    pub kind: Option<Spanned<UnitKind>>,
    pub after: Option<Spanned<Vec<Spanned<String>>>>,
    pub schedule: Option<Spanned<Schedule>>,
    pub success_exit_codes: Option<Spanned<Vec<i32>>>,
}

/// Keys a one-shot cannot have: they are about a long-running process (serving, readiness,
/// replacing it while it serves; a hung one is replaced only once its replacement is ready,
/// which a run to completion has no use for).
pub const SERVICE_ONLY_KEYS: [&str; 9] = [
    "listen",
    "ready",
    "ready_after",
    "node_cluster",
    "memory_max",
    "cron_restart",
    "watch",
    "watchdog",
    "health",
];

/// The first of [`SERVICE_ONLY_KEYS`] that `text` (a unit file that parsed) sets, with the
/// offset of its name.
pub(crate) struct ServiceOnlyKeys {
    pub set: Option<(&'static str, usize)>,
}

impl ServiceOnlyKeys {
    pub(crate) fn in_text(text: &str) -> ServiceOnlyKeys {
        let set = toml::de::DeTable::parse(text).ok().and_then(|document| {
            document
                .get_ref()
                .iter()
                .filter_map(|(key, _)| {
                    let name = SERVICE_ONLY_KEYS.iter().find(|k| **k == key.get_ref())?;
                    Some((*name, key.span().start))
                })
                .min_by_key(|(_, offset)| *offset)
        });
        ServiceOnlyKeys { set }
    }
}

/// Checks the job keys together; `restart` is the policy as written (`None`: the default).
pub(crate) fn job_settings(
    keys: JobKeys,
    restart: Option<RestartPolicy>,
    text: &str,
    at: &At,
) -> Result<(JobSettings, RestartPolicy), UnitError> {
    let kind = keys
        .kind
        .as_ref()
        .map_or(UnitKind::Service, |k| *k.get_ref());
    let oneshot = kind == UnitKind::Oneshot;
    let mut after: Vec<String> = Vec::new();
    if let Some(list) = keys.after {
        if list.get_ref().len() > MAX_AFTER {
            return Err(at(
                list.span().start,
                UnitErrorKind::BadValue,
                format!(
                    "after lists {} units; at most {MAX_AFTER}",
                    list.get_ref().len()
                ),
            ));
        }
        for name in list.into_inner() {
            let start = name.span().start;
            let name = name.into_inner();
            if !super::is_valid_unit_name(&name) {
                return Err(at(
                    start,
                    UnitErrorKind::BadValue,
                    format!("after: {name:?} is not a unit name (a file's name without .toml)"),
                ));
            }
            if !after.contains(&name) {
                after.push(name);
            }
        }
    }
    let oneshot_only = |key: &str, offset: Option<usize>| match offset {
        Some(offset) if !oneshot => Err(at(
            offset,
            UnitErrorKind::Conflict,
            format!("{key} applies to one-shot units only (set type = \"oneshot\")"),
        )),
        _ => Ok(()),
    };
    oneshot_only("schedule", keys.schedule.as_ref().map(|s| s.span().start))?;
    let codes_at = keys.success_exit_codes.as_ref().map(|c| c.span().start);
    oneshot_only("success_exit_codes", codes_at)?;
    if let Some(codes) = &keys.success_exit_codes {
        if let Some(bad) = codes.get_ref().iter().find(|c| !(0..=255).contains(*c)) {
            return Err(at(
                codes.span().start,
                UnitErrorKind::BadValue,
                format!("success_exit_codes: {bad} is not an exit code (0–255)"),
            ));
        }
    }
    if oneshot {
        if let Some((key, offset)) = ServiceOnlyKeys::in_text(text).set {
            return Err(at(
                offset,
                UnitErrorKind::Conflict,
                format!("{key} applies to services only, not to type = \"oneshot\""),
            ));
        }
    }
    // A one-shot that succeeded is done: "always" would run it again and again. Its
    // default is to run once.
    let restart = match (restart, oneshot) {
        (Some(RestartPolicy::Always), true) => {
            let offset = keys.kind.as_ref().map_or(0, |k| k.span().start);
            return Err(at(
                offset,
                UnitErrorKind::Conflict,
                "a one-shot unit restarts on failure only: use restart = \"on-failure\" or \"never\"".into(),
            ));
        }
        (Some(policy), _) => policy,
        (None, true) => RestartPolicy::Never,
        (None, false) => RestartPolicy::default(),
    };
    Ok((
        JobSettings {
            kind,
            after,
            schedule: keys.schedule.map(Spanned::into_inner),
            success_exit_codes: keys
                .success_exit_codes
                .map(Spanned::into_inner)
                .unwrap_or_default(),
        },
        restart,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::unit::Unit;

    fn parse(text: &str) -> Result<Unit, UnitError> {
        Unit::parse(Path::new("/etc/clusterd/job.toml"), text)
    }

    #[test]
    fn a_oneshot_runs_once_by_default_and_takes_its_keys() {
        let unit = parse("command = \"true\"\ntype = \"oneshot\"\nafter = [\"db\", \"cache\", \"db\"]\nschedule = \"every 10s\"\nsuccess_exit_codes = [3]\n").unwrap();
        assert!(unit.job.is_oneshot());
        assert_eq!(unit.restart, RestartPolicy::Never);
        assert_eq!(unit.job.after, ["db", "cache"]);
        assert_eq!(
            unit.job.schedule,
            Some(Schedule::Every(Duration::from_secs(10)))
        );
        assert!(unit.job.succeeded_with(3) && unit.job.succeeded_with(0));
        assert!(!unit.job.succeeded_with(1));
        let unit =
            parse("command = \"true\"\ntype = \"oneshot\"\nschedule = \"0 3 * * *\"\n").unwrap();
        assert!(matches!(unit.job.schedule, Some(Schedule::Cron(_))));
        let service = parse("command = \"true\"\n").unwrap();
        assert_eq!(service.job, JobSettings::default());
        assert_eq!(service.restart, RestartPolicy::Always);
    }

    #[test]
    fn job_keys_point_at_their_mistakes() {
        for (text, line, needle) in [
            (
                "command = \"true\"\nschedule = \"every 1s\"\n",
                2,
                "one-shot units only",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nschedule = \"every 10ms\"\n",
                3,
                "at least every 1s",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nschedule = \"0 25 * * *\"\n",
                3,
                "outside 0–23",
            ),
            (
                "command = \"true\"\ntype = \"cron\"\n",
                2,
                "unknown variant",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nrestart = \"always\"\n",
                2,
                "on failure only",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nlisten = [\"tcp://127.0.0.1:1\"]\n",
                3,
                "services only",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nready = \"notify\"\n",
                3,
                "services only",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nwatchdog = \"5s\"\n",
                3,
                "services only",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\n\n[health]\ncommand = [\"true\"]\n",
                4,
                "services only",
            ),
            (
                "command = \"true\"\nafter = [\"../etc\"]\n",
                2,
                "not a unit name",
            ),
            (
                "command = \"true\"\ntype = \"oneshot\"\nsuccess_exit_codes = [300]\n",
                3,
                "0–255",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.position.map(|p| p.0), Some(line), "{text}: {err}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let many: Vec<String> = (0..=MAX_AFTER).map(|i| format!("\"u{i}\"")).collect();
        let err = parse(&format!(
            "command = \"true\"\nafter = [{}]\n",
            many.join(",")
        ))
        .unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
    }
}
