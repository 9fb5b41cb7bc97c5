//! `Unit`: a validated unit, with every default applied and every name resolved, ready for
//! the supervisor. Built from a [`UnitFile`] by [`Unit::parse`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Group, Uid, User};
use toml::Spanned;

use super::unit_error::{UnitError, UnitErrorKind};
use super::unit_file::{ListenOptionsTable, UnitFile, Variables};
pub use super::values::{
    Balance, ListenAddress, NodeClusterStop, NodeScheduling, ReadyMode, RestartPolicy,
};
use super::values::{ByteSize, InstanceCount, LogTo, WatchSetting};

/// Default `restart_limit`: at most 10 automatic restarts in any 60 s.
const DEFAULT_RESTART_BURST: u32 = 10;
const DEFAULT_RESTART_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// PM2's `listen_timeout`.
const DEFAULT_LISTEN_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_MEMORY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// `[log]` defaults: rotate at 50 MiB, keep 10 old files (supervisord's defaults).
const DEFAULT_LOG_MAX_SIZE: u64 = 50 << 20;
const DEFAULT_LOG_KEEP: u32 = 10;
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

/// How the `listen` sockets are set up (`listen_options`). The TCP options apply to TCP
/// sockets only; connections accepted from a socket inherit them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// TCP_NODELAY: small writes go out at once. On by default: servers that write a
    /// response in pieces (asyncio's, uvicorn) otherwise wait ~40 ms for the client's
    /// delayed ACK on every keep-alive request, and asyncio sets it only on sockets it
    /// created itself.
    pub nodelay: bool,
    /// Connections that may wait while no instance accepts (the kernel caps it at
    /// net.core.somaxconn).
    pub backlog: u32,
    /// SO_KEEPALIVE: the kernel probes idle connections.
    pub keepalive: bool,
    /// SO_SNDBUF and SO_RCVBUF in bytes; `None`: the kernel's.
    pub send_buffer: Option<u32>,
    pub receive_buffer: Option<u32>,
    /// TCP_DEFER_ACCEPT: wake an instance only once a connection has data, waiting at most
    /// this long; `None`: off.
    pub defer_accept: Option<Duration>,
}

/// More than this is a typo (and more than any kernel accepts).
const MAX_BACKLOG: u32 = 65535;
/// The default backlog: enough for a burst while every instance restarts.
const DEFAULT_BACKLOG: u32 = 4096;

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            nodelay: true,
            backlog: DEFAULT_BACKLOG,
            keepalive: false,
            send_buffer: None,
            receive_buffer: None,
            defer_accept: None,
        }
    }
}

/// One `environment_file` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    /// Absolute; a relative path is taken relative to the unit file's directory.
    pub path: PathBuf,
    /// Written with a leading `-`: a missing file is no error.
    pub optional: bool,
}

/// A guard against typing `instances = 10000`: every instance is a process.
pub const MAX_INSTANCES: u32 = 4096;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartLimit {
    pub burst: u32,
    pub interval: Duration,
}

/// The account an instance runs as, resolved when the file is loaded so that a typo is a
/// load error with a position rather than a failed start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    /// Supplementary groups of `user` (initgroups), set when `user` is.
    pub groups: Vec<Gid>,
    /// USER/LOGNAME/HOME for the environment, set when `user` is.
    pub user_name: Option<String>,
    pub home: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The file stem: `web.toml` is unit `web`.
    pub name: String,
    pub path: PathBuf,
    pub description: Option<String>,
    pub command: Vec<String>,
    /// How many instances the file asks for; `instances = 0` is resolved to the CPU count.
    pub instances: u32,
    pub restart: RestartPolicy,
    pub restart_limit: RestartLimit,
    /// Wait before restarting an instance that exited (`restart_delay`).
    pub restart_delay: Duration,
    /// Growing waits instead (`restart_backoff`).
    pub restart_backoff: Option<RestartBackoff>,
    pub kill_signal: Signal,
    pub kill_timeout: Duration,
    pub on_giveup: Option<Vec<String>>,
    /// Absolute; a relative path in the file is taken relative to the file's directory.
    pub working_directory: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
    /// Read at every start, in order; later files and variables win.
    pub environment_files: Vec<EnvironmentFile>,
    /// `[environments.NAME]`: variables added over `environment` when clusterd runs with
    /// `--environment NAME`.
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
    pub credentials: Credentials,
    pub listen: Vec<ListenAddress>,
    pub balance: Balance,
    pub listen_options: ListenOptions,
    pub ready: ReadyMode,
    pub ready_timeout: Duration,
    /// Ready only once it has run this long (and, with `notify`, said so).
    pub ready_after: Duration,
    /// `ready = "listening"`: a worker that has not listened by then counts as ready.
    pub listen_timeout: Duration,
    /// `node_cluster`: clusterd is the Node cluster primary of the instances, with this
    /// scheduling; `None` when off.
    pub node_cluster: Option<NodeScheduling>,
    /// How its Node workers are stopped gracefully (only with `node_cluster`).
    pub node_cluster_stop: NodeClusterStop,
    /// Sent (as a JSON string) on an instance's worker channel to stop it, before
    /// `kill_signal`.
    pub stop_message: Option<String>,
    pub log: LogSettings,
    /// Replace an instance gracefully once its memory goes above this many bytes.
    pub memory_max: Option<u64>,
    /// How often `memory_max` is checked.
    pub memory_check_interval: Duration,
    /// A rolling reload at these (local) times.
    pub cron_restart: Option<super::cron::CronSchedule>,
    /// Reload when files change under these (absolute) paths.
    pub watch: Vec<PathBuf>,
    /// Names not watched (`*` and `?` patterns).
    pub watch_ignore: Vec<String>,
    /// Reload once the files have been quiet this long.
    pub watch_delay: Duration,
}

/// Unit names end up in environment variables, log lines and the control protocol: keep them
/// to characters that need no quoting anywhere.
pub fn is_valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        && !name.starts_with('.')
}

impl Unit {
    /// Parses and validates the text of the unit file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Unit, UnitError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if !is_valid_unit_name(&name) {
            return Err(UnitError::whole_file(
                path,
                UnitErrorKind::BadName,
                format!("invalid unit name {name:?}: use letters, digits, '-', '_', '.' and '@'"),
            ));
        }
        let file: UnitFile =
            toml::from_str(text).map_err(|e| UnitError::from_toml(path, text, &e))?;
        let at = |spanned_start: usize, kind: UnitErrorKind, message: String| {
            UnitError::at_offset(path, text, spanned_start, kind, message)
        };
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let instances = match file
            .instances
            .as_ref()
            .map(|n| (*n.get_ref(), n.span().start))
        {
            None => 1,
            Some((InstanceCount::Max | InstanceCount::Count(0), _)) => cpu_count(),
            Some((InstanceCount::Count(n), start))
                if n > i64::from(MAX_INSTANCES) || n < -i64::from(MAX_INSTANCES) =>
            {
                return Err(at(
                    start,
                    UnitErrorKind::BadValue,
                    format!("instances = {n} is beyond the limit of {MAX_INSTANCES}"),
                ))
            }
            // -N: N fewer than the CPUs, at least one (PM2's `instances: -1`).
            Some((InstanceCount::Count(n), _)) if n < 0 => {
                let fewer = u32::try_from(n.unsigned_abs()).unwrap_or(MAX_INSTANCES);
                cpu_count().saturating_sub(fewer).max(1)
            }
            Some((InstanceCount::Count(n), _)) => u32::try_from(n).unwrap_or(MAX_INSTANCES),
        };

        let restart_limit = match file.restart_limit {
            None => RestartLimit {
                burst: DEFAULT_RESTART_BURST,
                interval: DEFAULT_RESTART_INTERVAL,
            },
            Some(table) => {
                let interval = match table.interval {
                    None => DEFAULT_RESTART_INTERVAL,
                    Some(i) if i.get_ref().0.is_zero() => {
                        return Err(at(
                            i.span().start,
                            UnitErrorKind::BadValue,
                            "restart_limit.interval must be longer than 0".into(),
                        ))
                    }
                    Some(i) => i.into_inner().0,
                };
                RestartLimit {
                    burst: table.burst.unwrap_or(DEFAULT_RESTART_BURST),
                    interval,
                }
            }
        };

        let working_directory = file.working_directory.map(|dir| {
            let dir = dir.into_inner();
            if dir.is_absolute() {
                dir
            } else {
                absolute(&base_dir.join(dir))
            }
        });

        let environment = variables(file.environment.unwrap_or_default(), &at)?;
        let mut environments = BTreeMap::new();
        for (name, table) in file.environments.unwrap_or_default() {
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
            environments.insert(name.into_inner(), variables(table, &at)?);
        }
        let mut environment_files = Vec::new();
        if let Some(paths) = file.environment_file {
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
        }

        let credentials = resolve_credentials(file.user.as_ref(), file.group.as_ref(), &at)?;

        let balance = file.balance.unwrap_or_default();
        let mut listen = Vec::new();
        for address in file.listen.unwrap_or_default() {
            let start = address.span().start;
            listen.push(match address.into_inner() {
                // SO_REUSEPORT exists for TCP and UDP only: a second unix socket on the same
                // path would fail to bind and spend the restart budget.
                ListenAddress::Unix(_) if balance == Balance::Reuseport => {
                    return Err(at(
                        start,
                        UnitErrorKind::Conflict,
                        "balance = \"reuseport\" works with tcp:// addresses only; a unix socket is always shared (use balance = \"shared\", or a separate unit)".into(),
                    ))
                }
                ListenAddress::Unix(p) if p.is_relative() => {
                    ListenAddress::Unix(absolute(&base_dir.join(p)))
                }
                other => other,
            });
        }

        let listen_options =
            match file.listen_options {
                None => ListenOptions::default(),
                Some(table) if listen.is_empty() => return Err(at(
                    table.span().start,
                    UnitErrorKind::Conflict,
                    "listen_options applies to units with listen addresses (add listen = [...])"
                        .into(),
                )),
                Some(table) => listen_options(table.into_inner(), &at)?,
            };

        let node_cluster = file.node_cluster.and_then(|setting| setting.0);
        let node_cluster_stop = match file.node_cluster_stop {
            Some(stop) if node_cluster.is_none() => return Err(at(
                stop.span().start,
                UnitErrorKind::Conflict,
                "node_cluster_stop applies to node_cluster units only (set node_cluster = true)"
                    .into(),
            )),
            Some(stop) => stop.into_inner(),
            None => NodeClusterStop::default(),
        };
        // A Node cluster worker is ready once it listens (its `listening` message), as in
        // PM2's cluster mode, or after `listen_timeout` for an app that never listens;
        // `ready = "notify"` waits for `process.send('ready')` (PM2's `wait_ready`).
        let ready = file.ready.unwrap_or(if node_cluster.is_some() {
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
        let listen_timeout = match file.listen_timeout {
            Some(timeout) if ready != ReadyMode::Listening => {
                return Err(at(
                    timeout.span().start,
                    UnitErrorKind::Conflict,
                    "listen_timeout applies with ready = \"listening\" (the default of node_cluster units)".into(),
                ))
            }
            Some(timeout) => timeout.into_inner().0,
            None => DEFAULT_LISTEN_TIMEOUT,
        };

        let log = match file.log {
            None => LogSettings::default(),
            Some(table) => LogSettings {
                to: table.to,
                timestamps: table.timestamps,
                max_size: table.max_size.map_or(DEFAULT_LOG_MAX_SIZE, |s| s.0),
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
                    None => DEFAULT_LOG_KEEP,
                },
            },
        };

        let memory_max = match file.memory_max {
            Some(max) if max.get_ref().0 == 0 => {
                return Err(at(
                    max.span().start,
                    UnitErrorKind::BadValue,
                    "memory_max must be more than 0 (leave it out for no limit)".into(),
                ))
            }
            other => other.map(|m| m.into_inner().0),
        };
        let memory_check_interval = match file.memory_check_interval {
            Some(i) if i.get_ref().0.is_zero() => {
                return Err(at(
                    i.span().start,
                    UnitErrorKind::BadValue,
                    "memory_check_interval must be longer than 0".into(),
                ))
            }
            Some(i) => i.into_inner().0,
            None => DEFAULT_MEMORY_CHECK_INTERVAL,
        };

        let ready_timeout = file.ready_timeout.map_or(DEFAULT_READY_TIMEOUT, |d| d.0);
        let ready_after = match file.ready_after {
            Some(after) if ready == ReadyMode::Notify && after.get_ref().0 >= ready_timeout => {
                return Err(at(
                    after.span().start,
                    UnitErrorKind::Conflict,
                    format!(
                        "ready_after ({}) must be shorter than ready_timeout ({}): a notify instance would always time out",
                        humantime::format_duration(after.get_ref().0),
                        humantime::format_duration(ready_timeout)
                    ),
                ))
            }
            Some(after) => after.into_inner().0,
            None => Duration::ZERO,
        };

        let restart_delay = file
            .restart_delay
            .as_ref()
            .map_or(Duration::ZERO, |d| d.get_ref().0);
        let restart_backoff = match (file.restart_backoff, &file.restart_delay) {
            (Some(table), Some(_)) => return Err(at(
                table.span().start,
                UnitErrorKind::Conflict,
                "restart_backoff and restart_delay both set the wait before a restart: keep one"
                    .into(),
            )),
            (Some(table), None) => {
                let defaults = RestartBackoff::default();
                let table = table.into_inner();
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
                Some(backoff)
            }
            (None, _) => None,
        };

        // Relative to where the instances run: their working directory, else the file's.
        let watch_base = working_directory
            .clone()
            .unwrap_or_else(|| base_dir.clone());
        let watch = match file.watch.map(Spanned::into_inner) {
            None | Some(WatchSetting::Off) => Vec::new(),
            Some(WatchSetting::WorkingDirectory) => vec![watch_base.clone()],
            Some(WatchSetting::Paths(paths)) => paths
                .iter()
                .map(|p| absolute(&watch_base.join(p)))
                .collect(),
        };

        Ok(Unit {
            name,
            path: path.to_path_buf(),
            description: file.description,
            command: file.command.0,
            instances,
            restart: file.restart.unwrap_or_default(),
            restart_limit,
            restart_delay,
            restart_backoff,
            kill_signal: file.kill_signal.map_or(Signal::SIGTERM, |s| s.0),
            kill_timeout: file.kill_timeout.map_or(DEFAULT_KILL_TIMEOUT, |d| d.0),
            on_giveup: file.on_giveup.map(|c| c.0),
            working_directory,
            environment,
            environment_files,
            environments,
            credentials,
            listen,
            balance,
            listen_options,
            ready,
            ready_timeout,
            ready_after,
            listen_timeout,
            node_cluster,
            node_cluster_stop,
            stop_message: file.stop_message,
            log,
            memory_max,
            memory_check_interval,
            cron_restart: file.cron_restart,
            watch,
            watch_ignore: file
                .watch_ignore
                .unwrap_or_else(|| vec![".*".to_string(), "node_modules".to_string()]),
            watch_delay: file.watch_delay.map_or(Duration::from_secs(1), |d| d.0),
        })
    }

    /// True when `other` differs from `self` only in the number of instances, which can be
    /// applied by scaling instead of restarting every instance.
    pub fn differs_only_in_instances(&self, other: &Unit) -> bool {
        let mut same = other.clone();
        same.instances = self.instances;
        &same == self
    }
}

/// A table of variables, checked: names non-empty without `=`, nothing with a NUL byte.
fn variables(
    table: Variables,
    at: &impl Fn(usize, UnitErrorKind, String) -> UnitError,
) -> Result<BTreeMap<String, String>, UnitError> {
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

/// `listen_options`, checked: a backlog within 1–65535, buffers the kernel can take.
fn listen_options(
    table: ListenOptionsTable,
    at: &impl Fn(usize, UnitErrorKind, String) -> UnitError,
) -> Result<ListenOptions, UnitError> {
    let defaults = ListenOptions::default();
    let backlog = match table.backlog {
        Some(backlog) if !(1..=MAX_BACKLOG).contains(backlog.get_ref()) => {
            return Err(at(
                backlog.span().start,
                UnitErrorKind::BadValue,
                format!(
                    "listen_options.backlog = {} is outside 1–{MAX_BACKLOG}",
                    backlog.get_ref()
                ),
            ))
        }
        Some(backlog) => backlog.into_inner(),
        None => defaults.backlog,
    };
    let buffer = |size: Option<Spanned<ByteSize>>, name: &str| -> Result<Option<u32>, UnitError> {
        match size {
            None => Ok(None),
            Some(size) => match u32::try_from(size.get_ref().0) {
                Ok(bytes) if bytes > 0 && bytes <= i32::MAX as u32 => Ok(Some(bytes)),
                _ => Err(at(
                    size.span().start,
                    UnitErrorKind::BadValue,
                    format!("listen_options.{name} must be between 1 byte and 2GiB"),
                )),
            },
        }
    };
    let defer_accept = match table.defer_accept {
        Some(wait) if wait.get_ref().0.is_zero() => None,
        Some(wait) if wait.get_ref().0 > Duration::from_secs(3600) => {
            return Err(at(
                wait.span().start,
                UnitErrorKind::BadValue,
                "listen_options.defer_accept is at most 1h".into(),
            ))
        }
        Some(wait) => Some(wait.into_inner().0),
        None => None,
    };
    Ok(ListenOptions {
        nodelay: table.nodelay.unwrap_or(defaults.nodelay),
        backlog,
        keepalive: table.keepalive.unwrap_or(defaults.keepalive),
        send_buffer: buffer(table.send_buffer, "send_buffer")?,
        receive_buffer: buffer(table.receive_buffer, "receive_buffer")?,
        defer_accept,
    })
}

fn resolve_credentials(
    user: Option<&Spanned<String>>,
    group: Option<&Spanned<String>>,
    at: &dyn Fn(usize, UnitErrorKind, String) -> UnitError,
) -> Result<Credentials, UnitError> {
    let mut credentials = Credentials {
        uid: None,
        gid: None,
        groups: Vec::new(),
        user_name: None,
        home: None,
    };
    if let Some(user) = user {
        let name = user.get_ref();
        let found = match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(name),
        };
        let entry = match found {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                return Err(at(
                    user.span().start,
                    UnitErrorKind::UnknownAccount,
                    format!("unknown user {name:?}"),
                ))
            }
            Err(e) => {
                return Err(at(
                    user.span().start,
                    UnitErrorKind::UnknownAccount,
                    format!("cannot look up user {name:?}: {e}"),
                ))
            }
        };
        let c_name = std::ffi::CString::new(entry.name.clone()).unwrap_or_default();
        credentials.groups = nix::unistd::getgrouplist(&c_name, entry.gid).unwrap_or_default();
        credentials.uid = Some(entry.uid);
        credentials.gid = Some(entry.gid);
        credentials.user_name = Some(entry.name);
        credentials.home = Some(entry.dir);
    }
    if let Some(group) = group {
        let gid = resolve_group(group.get_ref())
            .map_err(|e| at(group.span().start, UnitErrorKind::UnknownAccount, e))?;
        credentials.gid = Some(gid);
    }
    Ok(credentials)
}

/// A group given by name or number, as `group =` in a unit and `clusterd --socket-group`
/// take it.
pub fn resolve_group(name: &str) -> Result<Gid, String> {
    let found = match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    };
    match found {
        Ok(Some(entry)) => Ok(entry.gid),
        Ok(None) => Err(format!("unknown group {name:?}")),
        Err(e) => Err(format!("cannot look up group {name:?}: {e}")),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `instances = 0` means one per CPU, like `pm2 start -i 0`.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Unit, UnitError> {
        Unit::parse(Path::new("/etc/clusterd/web.toml"), text)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let unit = parse(r#"command = "python3 -m http.server""#).unwrap();
        assert_eq!(unit.name, "web");
        assert_eq!(unit.command, ["python3", "-m", "http.server"]);
        assert_eq!(unit.instances, 1);
        assert_eq!(unit.restart, RestartPolicy::Always);
        assert_eq!(unit.restart_limit.burst, 10);
        assert_eq!(unit.restart_limit.interval, Duration::from_secs(60));
        assert_eq!(unit.kill_signal, Signal::SIGTERM);
        assert_eq!(unit.kill_timeout, Duration::from_secs(5));
        assert_eq!(unit.ready, ReadyMode::Started);
        assert_eq!(unit.ready_timeout, Duration::from_secs(30));
        assert_eq!(unit.balance, Balance::Shared);
        assert_eq!(unit.node_cluster, None);
    }

    #[test]
    fn node_cluster_stop_defaults_to_disconnect_and_needs_node_cluster() {
        let unit = parse("command = \"node app.js\"\nnode_cluster = true\n").unwrap();
        assert_eq!(unit.node_cluster_stop, NodeClusterStop::Disconnect);
        let unit = parse(
            "command = \"node app.js\"\nnode_cluster = true\nnode_cluster_stop = \"signal\"\n",
        )
        .unwrap();
        assert_eq!(unit.node_cluster_stop, NodeClusterStop::Signal);
        let err = parse("command = \"node app.js\"\nnode_cluster_stop = \"signal\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 21)), "{err}");
    }

    #[test]
    fn node_cluster_defaults_to_round_robin_and_readiness_by_listening() {
        let unit = parse("command = \"node app.js\"\nnode_cluster = true\n").unwrap();
        assert_eq!(unit.node_cluster, Some(NodeScheduling::RoundRobin));
        assert_eq!(unit.ready, ReadyMode::Listening);
        assert_eq!(unit.listen_timeout, Duration::from_secs(3));
        let err = parse("command = \"node app.js\"\nready = \"listening\"\n").unwrap_err();
        assert!(err.to_string().contains("node_cluster units"), "{err}");
        let err = parse("command = \"node app.js\"\nlisten_timeout = \"1s\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 18)), "{err}");
        let unit =
            parse("command = \"node app.js\"\nnode_cluster = \"shared\"\nready = \"started\"\n")
                .unwrap();
        assert_eq!(unit.node_cluster, Some(NodeScheduling::Shared));
        assert_eq!(unit.ready, ReadyMode::Started);
        let unit = parse("command = \"node app.js\"\nnode_cluster = false\n").unwrap();
        assert_eq!(unit.node_cluster, None);
        assert_eq!(unit.ready, ReadyMode::Started);
        let err = parse("command = \"node app.js\"\nnode_cluster = \"fair\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 16)), "{err}");
    }

    #[test]
    fn every_key_is_read() {
        let unit = parse(
            r#"
command = ["node", "app.js", "--port", "3000"]
description = "the web app"
instances = 4
restart = "on-failure"
restart_limit = { burst = 3, interval = "1m 30s" }
kill_signal = "SIGINT"
kill_timeout = "500ms"
on_giveup = "logger 'web gave up'"
working_directory = "app"
environment = { NODE_ENV = "production" }
listen = ["tcp://127.0.0.1:3000", "tcp://[::1]:3000"]
balance = "reuseport"
ready = "notify"
ready_timeout = "10s"
"#,
        )
        .unwrap();
        assert_eq!(unit.instances, 4);
        assert_eq!(unit.restart, RestartPolicy::OnFailure);
        assert_eq!(unit.restart_limit.burst, 3);
        assert_eq!(unit.restart_limit.interval, Duration::from_secs(90));
        assert_eq!(unit.kill_signal, Signal::SIGINT);
        assert_eq!(unit.kill_timeout, Duration::from_millis(500));
        assert_eq!(
            unit.on_giveup.as_deref(),
            Some(&["logger".to_string(), "web gave up".to_string()][..])
        );
        assert_eq!(
            unit.working_directory,
            Some(PathBuf::from("/etc/clusterd/app"))
        );
        assert_eq!(unit.environment["NODE_ENV"], "production");
        assert_eq!(
            unit.listen[1],
            ListenAddress::Tcp("[::1]:3000".parse().unwrap())
        );
        assert_eq!(unit.balance, Balance::Reuseport);
        assert_eq!(unit.ready, ReadyMode::Notify);
        let unit = parse("command = \"true\"\nlisten = [\"unix:web.sock\"]\n").unwrap();
        assert_eq!(
            unit.listen[0],
            ListenAddress::Unix("/etc/clusterd/web.sock".into())
        );
    }

    #[test]
    fn listen_options_default_to_nodelay_and_point_at_mistakes() {
        let listen = "command = \"true\"\nlisten = [\"tcp://127.0.0.1:3000\"]\n";
        assert_eq!(
            parse(listen).unwrap().listen_options,
            ListenOptions::default()
        );
        assert!(ListenOptions::default().nodelay);
        let unit = parse(&format!(
            "{listen}listen_options = {{ nodelay = false, backlog = 128, keepalive = true, send_buffer = \"1MiB\", receive_buffer = \"64KiB\", defer_accept = \"3s\" }}\n"
        ))
        .unwrap();
        assert_eq!(
            unit.listen_options,
            ListenOptions {
                nodelay: false,
                backlog: 128,
                keepalive: true,
                send_buffer: Some(1 << 20),
                receive_buffer: Some(64 << 10),
                defer_accept: Some(Duration::from_secs(3)),
            }
        );
        let err = parse(&format!("{listen}listen_options = {{ backlog = 0 }}\n")).unwrap_err();
        assert_eq!(err.position, Some((3, 30)), "{err}");
        assert!(err.to_string().contains("outside 1–65535"), "{err}");
        let err = parse(&format!(
            "{listen}listen_options = {{ nodelay = \"yes\" }}\n"
        ))
        .unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        let err = parse(&format!("{listen}listen_options = {{ no_delay = true }}\n")).unwrap_err();
        assert!(err.to_string().contains("no_delay"), "{err}");
        let err = parse("command = \"true\"\nlisten_options = { nodelay = false }\n").unwrap_err();
        assert!(err.to_string().contains("add listen"), "{err}");
    }

    #[test]
    fn environment_takes_numbers_and_booleans_as_their_toml_text_and_refuses_arrays() {
        let unit = parse(
            "command = \"true\"\nenvironment = { PORT = 3000, DEBUG = true, RATIO = 0.5, NAME = \"web\" }\n",
        )
        .unwrap();
        assert_eq!(unit.environment["PORT"], "3000");
        assert_eq!(unit.environment["DEBUG"], "true");
        assert_eq!(unit.environment["RATIO"], "0.5");
        assert_eq!(unit.environment["NAME"], "web");
        let err = parse("command = \"true\"\nenvironment = { PATH = [\"/bin\", \"/usr/bin\"] }\n")
            .unwrap_err();
        assert_eq!(err.position, Some((2, 24)), "{err}");
        assert!(err.to_string().contains("not an array"), "{err}");
        let err = parse("command = \"true\"\n[environment]\nDB = { host = \"x\" }\n").unwrap_err();
        assert!(err.to_string().contains("not a table"), "{err}");
    }

    #[test]
    fn ready_after_must_be_shorter_than_a_notify_units_ready_timeout() {
        let unit = parse("command = \"true\"\nready_after = \"5s\"\n").unwrap();
        assert_eq!(unit.ready_after, Duration::from_secs(5));
        let err = parse("command = \"true\"\nready = \"notify\"\nready_timeout = \"5s\"\nready_after = \"5s\"\n")
            .unwrap_err();
        assert_eq!(err.position, Some((4, 15)), "{err}");
        assert!(
            err.to_string().contains("shorter than ready_timeout"),
            "{err}"
        );
    }

    #[test]
    fn instances_zero_or_max_means_one_per_cpu_and_minus_n_that_many_fewer() {
        let unit = parse("command = \"true\"\ninstances = 0").unwrap();
        assert_eq!(unit.instances, cpu_count());
        let unit = parse("command = \"true\"\ninstances = \"max\"").unwrap();
        assert_eq!(unit.instances, cpu_count());
        let unit = parse("command = \"true\"\ninstances = -1").unwrap();
        assert_eq!(unit.instances, cpu_count().saturating_sub(1).max(1));
        // Never fewer than one.
        let unit = parse("command = \"true\"\ninstances = -4000").unwrap();
        assert_eq!(unit.instances, 1);
        let err = parse("command = \"true\"\ninstances = \"all\"").unwrap_err();
        assert!(err.to_string().contains("\"max\" for one per CPU"), "{err}");
        let err = parse("command = \"true\"\ninstances = 5000").unwrap_err();
        assert_eq!(err.position, Some((2, 13)), "{err}");
    }

    #[test]
    fn the_log_table_takes_its_four_keys_and_points_at_mistakes() {
        let unit = parse(
            "command = \"true\"\n[log]\nto = \"console\"\ntimestamps = true\nmax_size = \"1MiB\"\nkeep = 3\n",
        )
        .unwrap();
        assert_eq!(
            unit.log,
            LogSettings {
                to: Some(LogTo::Console),
                timestamps: Some(true),
                max_size: 1 << 20,
                keep: 3,
            }
        );
        let unit = parse("command = \"true\"\nlog = { max_size = \"0\" }\n").unwrap();
        assert_eq!(unit.log.max_size, 0);
        assert_eq!(unit.log.keep, DEFAULT_LOG_KEEP);
        assert_eq!(
            parse("command = \"true\"\n").unwrap().log,
            LogSettings::default()
        );

        let err = parse("command = \"true\"\n[log]\nto = \"files\"\n").unwrap_err();
        assert_eq!(err.position, Some((3, 6)), "{err}");
        assert_eq!(err.kind, UnitErrorKind::BadValue, "{err}");
        let err = parse("command = \"true\"\n[log]\nmax_size = \"50 furlongs\"\n").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err.message.contains("unknown unit"), "{err}");
        let err = parse("command = \"true\"\n[log]\nrotate = 3\n").unwrap_err();
        assert_eq!(err.position, Some((3, 1)), "{err}");
        let err = parse("command = \"true\"\n[log]\nkeep = 100000\n").unwrap_err();
        assert_eq!(err.position, Some((3, 8)), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("command = \"true\"\nrestrat = \"always\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 1)));
        assert!(err.message.contains("unknown field `restrat`"), "{err}");
        assert!(
            err.to_string().starts_with("/etc/clusterd/web.toml:2:1: "),
            "{err}"
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let err = parse("command = \"true\"\nkill_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 16)), "{err}");
        let err = parse("command = \"true\"\ninstances = \"four\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 13)), "{err}");
        let err = parse("command = \"true\"\nkill_signal = \"SIGFOO\"\n").unwrap_err();
        assert!(err.message.contains("unknown signal"), "{err}");
        let err = parse("command = \"true\"\nuser = \"no-such-user-here\"\n").unwrap_err();
        assert_eq!(err.position, Some((2, 8)), "{err}");
        let err = parse("command = \"\"\n").unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        let err = parse("command = \"sh -c 'oops\"\n").unwrap_err();
        assert!(err.message.contains("unterminated quote"), "{err}");
    }

    #[test]
    fn reuseport_refuses_unix_addresses() {
        let err = parse("command = \"true\"\nbalance = \"reuseport\"\nlisten = [\"tcp://127.0.0.1:1\", \"unix:/run/x.sock\"]\n")
            .unwrap_err();
        assert_eq!(err.position, Some((3, 32)), "{err}");
        assert!(err.message.contains("tcp:// addresses only"), "{err}");
    }

    #[test]
    fn every_error_says_what_kind_it_is() {
        use crate::unit::UnitErrorKind::*;
        for (text, kind) in [
            ("command = [\"true\"\n", Syntax),
            ("command = \"true\"\nrestrat = \"always\"\n", UnknownKey),
            ("instances = 2\n", MissingKey),
            ("command = \"true\"\ninstances = \"two\"\n", BadValue),
            ("command = \"true\"\ninstances = 5000\n", BadValue),
            (
                "command = \"true\"\nkill_timeout = \"3651days\"\n",
                BadValue,
            ),
            (
                "command = \"true\"\nnode_cluster_stop = \"signal\"\n",
                Conflict,
            ),
            (
                "command = \"true\"\nbalance = \"reuseport\"\nlisten = [\"unix:/run/x.sock\"]\n",
                Conflict,
            ),
            (
                "command = \"true\"\nuser = \"no-such-user-here\"\n",
                UnknownAccount,
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.kind, kind, "{text:?}: {error}");
        }
        let badly_named = Unit::parse(Path::new("/u/.hidden.toml"), "command = \"true\"\n");
        assert_eq!(badly_named.unwrap_err().kind, BadName);
    }

    #[test]
    fn missing_command_is_an_error() {
        let err = parse("instances = 2\n").unwrap_err();
        assert!(err.message.contains("command"), "{err}");
    }

    #[test]
    fn a_change_of_instances_alone_is_recognised() {
        let a = parse("command = \"true\"\ninstances = 2").unwrap();
        let b = parse("command = \"true\"\ninstances = 3").unwrap();
        let c = parse("command = \"false\"\ninstances = 3").unwrap();
        assert!(a.differs_only_in_instances(&b));
        assert!(!a.differs_only_in_instances(&c));
    }
}
