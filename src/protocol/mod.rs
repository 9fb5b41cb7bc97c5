//! The control protocol between `clusterctl` and `clusterd`: one JSON object per line over a
//! Unix stream socket, a request from the client, one response from the daemon. Both binaries
//! use these types, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

pub mod signal;
pub mod socket_path;

/// Bumped when a request or response changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Requests longer than this are refused without being parsed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// What goes on the wire: `{"version":1,"command":"stop","unit":"web"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status {
        unit: Option<String>,
    },
    Start {
        unit: String,
    },
    Stop {
        unit: String,
    },
    Restart {
        unit: String,
    },
    Reload {
        unit: String,
    },
    Scale {
        unit: String,
        count: ScaleCount,
    },
    /// Send `signal` to the unit's running instances (or instance `instance`): to each one's
    /// own process, or with `all` to every process of it.
    Kill {
        unit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<u32>,
        signal: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all: bool,
    },
    /// Write `message`, the text of one JSON value, on the worker channel of the unit's
    /// running instances (or instance `instance`): a Node app receives it with
    /// `process.on('message')`.
    Send {
        unit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<u32>,
        message: String,
    },
    /// A struct variant, not a unit one: serde lets unit variants of a tagged enum through
    /// with any extra fields, and every request must reject fields it does not know.
    DaemonReload {},
    /// The last `lines` lines of the unit's log, then (with `follow`) every new one. The
    /// answer is one response line, then the log lines as they are stored.
    Logs {
        unit: String,
        lines: usize,
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<u32>,
        /// `out` or `err`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<LogStream>,
        /// Instead of the last `lines` lines: every line after this position (a follower
        /// that reconnects after a `daemon-reexec` asks from where its stream stood).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<LogPosition>,
    },
    /// Reopen every log file by name (after an external logrotate renamed them).
    ReopenLogs {},
    /// Replace clusterd's image by the binary now on disk, keeping every instance
    /// (`daemon-reexec`); only root and clusterd's own user may.
    DaemonReexec {},
}

/// Which output of an instance `clusterctl logs --stream` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogStream {
    Out,
    Err,
}

impl LogStream {
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }
}

/// Where a unit's log stood when the history of a `logs` answer ended: each file the
/// history read, at the length it had then, and how many history lines the answer has
/// before the lines that follow. A follower counts the lines it gets after its history; on
/// reconnecting (its connection closes at a `daemon-reexec`) it asks for the lines after
/// this position and skips as many as it counted: it misses and repeats none, whether it
/// had shown a line or not (`-n 0` on a quiet unit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub files: Vec<LogFilePosition>,
    #[serde(default)]
    pub history_lines: usize,
}

/// One log file of a [`LogPosition`]: its path, its identity, its length then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilePosition {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
}

/// The line a `logs` follower gets in place of `count` new lines it did not take in time
/// (clusterd skips them rather than wait): the follower counts them as lines it had.
pub fn skipped_lines_mark(count: u64) -> String {
    format!("[clusterctl: {count} lines skipped]\n")
}

/// How many lines a [`skipped_lines_mark`] stands for (None: an ordinary line).
pub fn skipped_lines_in(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("[clusterctl: ")?
        .strip_suffix(" lines skipped]\n")?
        .parse()
        .ok()
}

/// `clusterctl logs` asks for at most this many lines of history.
pub const MAX_LOG_LINES: usize = 1_000_000;

/// `scale web 4`, `scale web +2`, `scale web -1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleCount {
    To(u32),
    Up(u32),
    Down(u32),
}

impl std::str::FromStr for ScaleCount {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid instance count {text:?}: expected N, +N or -N");
        if let Some(n) = text.strip_prefix('+') {
            n.parse().map(ScaleCount::Up).map_err(|_| bad())
        } else if let Some(n) = text.strip_prefix('-') {
            n.parse().map(ScaleCount::Down).map_err(|_| bad())
        } else {
            text.parse().map(ScaleCount::To).map_err(|_| bad())
        }
    }
}

impl ScaleCount {
    pub fn apply(self, current: u32) -> u32 {
        match self {
            ScaleCount::To(n) => n,
            ScaleCount::Up(n) => current.saturating_add(n),
            ScaleCount::Down(n) => current.saturating_sub(n),
        }
    }
}

/// `{"ok":true,"message":"..."}`, `{"ok":true,"status":{...}}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    /// The answer to `logs`: where the unit's log stood when its history ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<LogPosition>,
}

impl Response {
    pub fn done(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: Some(message.into()),
            error: None,
            status: None,
            log_position: None,
        }
    }
    pub fn failed(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            message: None,
            error: Some(error.into()),
            status: None,
            log_position: None,
        }
    }
    pub fn status(report: StatusReport) -> Self {
        Response {
            ok: true,
            message: None,
            error: None,
            status: Some(report),
            log_position: None,
        }
    }
}

/// What `clusterctl status --json` prints; scripts depend on these names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub units: Vec<UnitStatus>,
    /// How instances are kept together: `cgroup (PATH)` or `process-group (why)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// clusterd itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonStatus>,
    /// clusterd is stopping (after SIGTERM, during `--shutdown-delay` too): not ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What clusterd itself uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub open_fds: u64,
    /// When it started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
    /// The version of the running clusterd binary (after a package upgrade, the binary on
    /// disk may be newer: `daemon-reexec`). Empty from a clusterd that did not say.
    #[serde(default)]
    pub version: String,
    /// When this clusterd was last re-executed (`daemon-reexec`), in seconds since the Unix
    /// epoch; `None` if it runs the image it started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reexecuted_at_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    /// `running`, `starting`, `stopping`, `stopped`, `failed`, `invalid`, `waiting` or
    /// `done`.
    pub state: UnitState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Automatic restarts since the unit was last started by hand.
    pub restarts: u32,
    pub gave_up: bool,
    /// How many instances the unit is meant to run now (after any `scale`).
    pub wanted_instances: u32,
    /// Why the unit is invalid, why it gave up, or why the last daemon-reload could not
    /// apply its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where its instances' output goes: `file PATH`, `journal`, `console` or `inherit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Why its output is not where it should be: the file cannot be written (disk full),
    /// journald cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_problem: Option<String>,
    /// How many directories its `watch` paths make clusterd watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched_directories: Option<u64>,
    /// Why some of what `watch` names is not watched: a limit reached (`watch limit
    /// reached: N directories not watched`), a path that does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_problem: Option<String>,
    /// The sums over its instances of `cpu_percent` and `memory_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    pub instances: Vec<InstanceStatus>,
    /// Instances replaced for going above `memory_max`, since clusterd started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_replacements: u32,
    /// Times the unit gave up, since clusterd started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub give_ups: u32,
    /// Instances replaced because they were hung (`watchdog`, `[health]`), since clusterd
    /// started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub health_replacements: u32,
    /// Its last lifecycle events, oldest first (`status UNIT` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventStatus>,
    /// `waiting`: for what (`migrate (running)`, or `its schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// A one-shot's runs and schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
    /// The units it starts after (`after`), as in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

impl UnitStatus {
    /// A unit with `state` and nothing else to say (no instances, no counts).
    pub fn bare(name: &str, state: UnitState) -> UnitStatus {
        UnitStatus {
            name: name.to_string(),
            state,
            description: None,
            restarts: 0,
            gave_up: false,
            wanted_instances: 0,
            error: None,
            log: None,
            log_problem: None,
            watched_directories: None,
            watch_problem: None,
            cpu_percent: None,
            memory_bytes: None,
            instances: Vec::new(),
            memory_replacements: 0,
            give_ups: 0,
            health_replacements: 0,
            events: Vec::new(),
            waiting_for: None,
            job: None,
            after: Vec::new(),
        }
    }
}

/// A one-shot's runs and schedule, as status shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Runs started since clusterd started, and how many of them failed.
    pub runs: u64,
    pub failures: u64,
    /// Due times skipped because the previous run was still going.
    #[serde(default)]
    pub skipped: u64,
    /// The run going on, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunStatus>,
    /// How long ago the last successful run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ago_ms: Option<u64>,
    /// The `schedule` as written (normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// When the schedule is due next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_in_ms: Option<u64>,
}

/// One run of a one-shot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub started_ago_ms: u64,
    /// How long it took; none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// How it ended (`run done: exited with code 0, after 1s 200ms`); none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// It succeeded; none while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// The state of a unit, as status shows it. On the wire it is the lower-case name
/// (`"running"`): scripts depend on these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Every instance it has is ready.
    Running,
    /// Some instance is not ready yet.
    Starting,
    /// Stopped by hand, or stopping instances outside a rolling reload.
    Stopping,
    /// Nothing of it runs.
    Stopped,
    /// It gave up (restart budget spent, sockets cannot be bound).
    Failed,
    /// Its unit file does not parse.
    Invalid,
    /// Meant to run, but held back: a unit of its `after` is not satisfied, or a scheduled
    /// one-shot waits for its time.
    Waiting,
    /// A one-shot whose last run succeeded.
    Done,
}

/// The state of one instance (or of a replaced process still finishing), as status shows it.
/// On the wire it is the lower-case name (`"running"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Started, not ready yet.
    Starting,
    /// Ready to serve.
    Running,
    /// Replaced (suicide, reload, `memory_max`), finishing its work.
    Draining,
    /// Told to stop; SIGKILL follows after `kill_timeout`.
    Stopping,
    /// Waiting out its `restart_delay` or backoff.
    Restarting,
    /// No process.
    Stopped,
}

/// The wire name of a state: what status tables and `clusterctl top` print.
macro_rules! state_names {
    ($type:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_names!(UnitState {
    Running => "running",
    Starting => "starting",
    Stopping => "stopping",
    Stopped => "stopped",
    Failed => "failed",
    Invalid => "invalid",
    Waiting => "waiting",
    Done => "done",
});

state_names!(InstanceState {
    Starting => "starting",
    Running => "running",
    Draining => "draining",
    Stopping => "stopping",
    Restarting => "restarting",
    Stopped => "stopped",
});

/// One lifecycle event of a unit: started, exited, restarting, suicide, gave up, reload...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventStatus {
    /// How long ago, in milliseconds.
    pub ago_ms: u64,
    /// The instance it is about; none for the unit as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// What happened, as the unit's log says it (`pid 4242 exited with code 1`).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub index: u32,
    pub pid: Option<u32>,
    /// `starting`, `running`, `draining` (replaced, finishing its work), `stopping`,
    /// `restarting` (waiting out its `restart_delay` or backoff) or `stopped`.
    pub state: InstanceState,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_ms: Option<u64>,
    /// `exited with code 1`, `killed by SIGKILL`, or why it could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// The last `STATUS=` the instance sent to NOTIFY_SOCKET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// True for a process that was replaced (suicide or reload) and is finishing its work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// CPU used by the whole instance (every process of it, exited children included where
    /// clusterd puts instances in cgroups), in % of one CPU, since the previous status (or,
    /// on the first, since the instance started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// CPU seconds used by the whole instance since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Resident memory of the whole instance, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// What its `watchdog` and `[health]` check say; absent when its unit has neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
}

/// An instance's health, as its watchdog and `[health]` check see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// `ok`, `failing` or `unknown` (no check has passed or failed yet).
    pub state: HealthState,
    /// Failed checks in a row (a missed watchdog counts as one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Why the last check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// On the wire the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Failing,
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let envelope = RequestEnvelope {
            version: PROTOCOL_VERSION,
            request: Request::Scale {
                unit: "web".into(),
                count: ScaleCount::Up(2),
            },
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"command":"scale","unit":"web","count":{"up":2}}"#
        );
        assert_eq!(
            serde_json::from_str::<RequestEnvelope>(&text).unwrap(),
            envelope
        );
        let reload: RequestEnvelope =
            serde_json::from_str(r#"{"version":1,"command":"daemon-reload"}"#).unwrap();
        assert_eq!(reload.request, Request::DaemonReload {});
    }

    #[test]
    fn every_request_rejects_fields_it_does_not_know() {
        for text in [
            r#"{"version":1,"command":"daemon-reload","force":true}"#,
            r#"{"version":1,"command":"status","unit":null,"verbose":1}"#,
            r#"{"version":1,"command":"stop","unit":"web","now":true}"#,
            r#"{"version":1,"command":"scale","unit":"web","count":{"to":2},"x":0}"#,
        ] {
            let parsed = serde_json::from_str::<RequestEnvelope>(text);
            assert!(parsed.is_err(), "{text} was accepted: {parsed:?}");
        }
    }

    /// Each state goes on the wire as its name, and comes back.
    fn travel_as_their_names<T>(states: &[T])
    where
        T: Serialize + for<'de> Deserialize<'de> + std::fmt::Display + PartialEq + std::fmt::Debug,
    {
        for state in states {
            let text = serde_json::to_string(state).unwrap();
            assert_eq!(text, format!("\"{state}\""));
            assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), state);
        }
    }

    #[test]
    fn states_travel_as_their_lower_case_names() {
        travel_as_their_names(&[
            UnitState::Running,
            UnitState::Starting,
            UnitState::Stopping,
            UnitState::Stopped,
            UnitState::Failed,
            UnitState::Invalid,
            UnitState::Waiting,
            UnitState::Done,
        ]);
        travel_as_their_names(&[
            InstanceState::Starting,
            InstanceState::Running,
            InstanceState::Draining,
            InstanceState::Stopping,
            InstanceState::Restarting,
            InstanceState::Stopped,
        ]);
        assert_eq!(UnitState::Running.as_str(), "running");
        assert_eq!(InstanceState::Restarting.to_string(), "restarting");
    }

    #[test]
    fn scale_counts_parse_and_apply() {
        assert_eq!("4".parse(), Ok(ScaleCount::To(4)));
        assert_eq!("+2".parse::<ScaleCount>().map(|c| c.apply(3)), Ok(5));
        assert_eq!("-5".parse::<ScaleCount>().map(|c| c.apply(3)), Ok(0));
        assert!("two".parse::<ScaleCount>().is_err());
    }
}
