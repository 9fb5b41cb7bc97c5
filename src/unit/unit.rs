//! `Unit`: a validated unit, with every default applied and every name resolved, ready for
//! the supervisor. Built from a [`UnitFile`] by [`Unit::parse`], which reads each section
//! with the module that owns it (and its defaults): [`super::instances`],
//! [`super::restarts`], [`super::environment`], [`super::credentials`], [`super::listen`],
//! [`super::readiness`], [`super::log_settings`], [`super::memory_limit`], [`super::watch`], [`super::health`].
//! The keys with a plain default have it here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use toml::Spanned;

use super::credentials::{resolve_credentials, Credentials};
use super::environment::{environment_files, environments, variables, EnvironmentFile};
use super::health::{health_check, watchdog, HealthCheck};
use super::instances::instances;
use super::listen::{listen_addresses, listen_options, ListenOptions};
use super::log_settings::{log_settings, LogSettings};
use super::memory_limit::{memory_check_interval, memory_max};
use super::readiness::{listen_timeout, ready_after, ready_mode, ready_timeout};
use super::restarts::{
    restart_limit, restart_prevent_exit_codes, restart_wait, RestartBackoff, RestartLimit,
};
use super::unit_error::{At, UnitError, UnitErrorKind};
use super::unit_file::UnitFile;
pub use super::values::{
    Balance, ListenAddress, NodeClusterStop, NodeScheduling, ReadyMode, RestartPolicy,
};
use super::watch::{watch_delay, watch_ignore, watch_paths};

pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_KILL_SIGNAL: Signal = Signal::SIGTERM;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The file stem: `web.toml` is unit `web`.
    pub name: String,
    /// The text it was parsed from, as loaded: `daemon-reexec` hands it to the new image,
    /// which re-parses it (an edit on disk since the load must not apply by a re-exec).
    pub source: SourceText,
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
    /// Exit codes after which an instance is not restarted, whatever `restart` says
    /// (`restart_prevent_exit_codes`: systemd's `RestartPreventExitStatus=`, PM2's
    /// `stop_exit_codes`).
    pub restart_prevent_exit_codes: Vec<i32>,
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
    /// A variable that also holds the instance's index (PM2's `instance_var`).
    pub instance_variable: Option<String>,
    /// A variable of the environment given to each instance plus its index: `PORT = 3000`
    /// is 3000, 3001, ... (PM2's `increment_var`).
    pub increment_variable: Option<String>,
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
    /// `type`, `after`, `schedule`, `success_exit_codes` ([`super::job`]).
    pub job: super::job::JobSettings,
    /// An instance that is ready must say it is alive at least this often.
    pub watchdog: Option<Duration>,
    /// The `[health]` check clusterd runs for each instance.
    pub health: Option<HealthCheck>,
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
    /// Parses and validates the text of the unit file at `path`. Sections are read in a
    /// fixed order, so that of two mistakes the same one is reported first.
    pub fn parse(path: &Path, text: &str) -> Result<Unit, UnitError> {
        let name = unit_name(path)?;
        let file: UnitFile =
            toml::from_str(text).map_err(|e| UnitError::from_toml(path, text, &e))?;
        let at = |spanned_start: usize, kind: UnitErrorKind, message: String| {
            UnitError::at_offset(path, text, spanned_start, kind, message)
        };
        let at: &At = &at;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let instances = instances(file.instances.as_ref(), at)?;
        let restart_limit = restart_limit(file.restart_limit, at)?;
        let working_directory = file
            .working_directory
            .map(|dir| relative_to(&base_dir, dir.into_inner()));
        let environment = variables(file.environment.unwrap_or_default(), at)?;
        let environments = environments(file.environments.unwrap_or_default(), at)?;
        let environment_files = environment_files(file.environment_file, &base_dir, at)?;
        let instance_variable =
            super::environment::variable_name(file.instance_variable, "instance_variable", at)?;
        let increment_variable =
            super::environment::variable_name(file.increment_variable, "increment_variable", at)?;
        let credentials = resolve_credentials(file.user.as_ref(), file.group.as_ref(), at)?;
        let balance = file.balance.unwrap_or_default();
        let listen = listen_addresses(file.listen, balance, &base_dir, at)?;
        let listen_options = listen_options(file.listen_options, &listen, at)?;
        let node_cluster = file.node_cluster.and_then(|setting| setting.0);
        let node_cluster_stop = node_cluster_stop(file.node_cluster_stop, node_cluster, at)?;
        let ready = ready_mode(file.ready, node_cluster, path)?;
        let listen_timeout = listen_timeout(file.listen_timeout, ready, at)?;
        let log = log_settings(file.log, at)?;
        let memory_max = memory_max(file.memory_max, at)?;
        let memory_check_interval = memory_check_interval(file.memory_check_interval, at)?;
        let ready_timeout = ready_timeout(file.ready_timeout);
        let ready_after = ready_after(file.ready_after, ready, ready_timeout, at)?;
        let (restart_delay, restart_backoff) =
            restart_wait(file.restart_delay.as_ref(), file.restart_backoff, at)?;
        let oneshot = file
            .kind
            .as_ref()
            .is_some_and(|k| *k.get_ref() == super::job::UnitKind::Oneshot);
        let restart_prevent_exit_codes =
            restart_prevent_exit_codes(file.restart_prevent_exit_codes, oneshot, at)?;
        // Relative to where the instances run: their working directory, else the file's.
        let watchdog = watchdog(file.watchdog, at)?;
        let health = health_check(file.health, at)?;
        let watch = watch_paths(file.watch, working_directory.as_ref().unwrap_or(&base_dir));
        let watch_ignore = watch_ignore(
            file.watch_ignore,
            working_directory.as_ref().unwrap_or(&base_dir),
        );
        let (job, restart) = super::job::job_settings(
            super::job::JobKeys {
                kind: file.kind,
                after: file.after,
                schedule: file.schedule,
                success_exit_codes: file.success_exit_codes,
            },
            file.restart,
            text,
            at,
        )?;

        Ok(Unit {
            name,
            source: SourceText(text.into()),
            path: path.to_path_buf(),
            description: file.description,
            command: file.command.0,
            instances,
            restart,
            restart_limit,
            restart_delay,
            restart_backoff,
            restart_prevent_exit_codes,
            kill_signal: file.kill_signal.map_or(DEFAULT_KILL_SIGNAL, |s| s.0),
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
            instance_variable,
            increment_variable,
            log,
            memory_max,
            memory_check_interval,
            cron_restart: file.cron_restart,
            watch,
            watch_ignore,
            watch_delay: watch_delay(file.watch_delay),
            job,
            watchdog,
            health,
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

/// A unit file's text as loaded. Not part of what the unit is: two texts that differ only in
/// comments or layout make equal units (every `SourceText` equals every other), so a
/// daemon-reload of a file whose comments changed restarts nothing.
#[derive(Debug, Clone, Default)]
pub struct SourceText(pub std::sync::Arc<str>);

impl PartialEq for SourceText {
    fn eq(&self, _: &SourceText) -> bool {
        true
    }
}

impl Eq for SourceText {}

/// The unit's name: the file stem (`web.toml` is unit `web`), if it is a valid one.
fn unit_name(path: &Path) -> Result<String, UnitError> {
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
    Ok(name)
}

/// `node_cluster_stop`, which applies to Node cluster units only.
fn node_cluster_stop(
    stop: Option<Spanned<NodeClusterStop>>,
    node_cluster: Option<NodeScheduling>,
    at: &At,
) -> Result<NodeClusterStop, UnitError> {
    match stop {
        Some(stop) if node_cluster.is_none() => Err(at(
            stop.span().start,
            UnitErrorKind::Conflict,
            "node_cluster_stop applies to node_cluster units only (set node_cluster = true)".into(),
        )),
        Some(stop) => Ok(stop.into_inner()),
        None => Ok(NodeClusterStop::default()),
    }
}

/// `path` as it is if absolute, else relative to `base_dir`.
fn relative_to(base_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        absolute(&base_dir.join(path))
    }
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::instances::cpu_count;
    use crate::unit::log_settings::DEFAULT_LOG_KEEP;
    use crate::unit::LogTo;

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
                ..LogSettings::default()
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
