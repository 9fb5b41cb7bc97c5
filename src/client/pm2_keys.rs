//! The table of PM2 app keys for `clusterctl import`: for each key, how it maps to a unit
//! key, or why it is not carried over ([`PM2_KEYS`]; adding a key is one row), and the
//! decisions that need several keys (readiness, stopping) once every key is read.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::import::{toml_string, toml_strings, words, UnitDraft};
use crate::unit::cron::CronSchedule;
use crate::unit::is_valid_unit_name;

/// What clusterctl import does with one PM2 app key.
enum Pm2Key {
    /// Read with the command or the name, before the table.
    Read,
    /// Mapped by this function (which may still say why a value is not carried over).
    Map(fn(&mut AppKeys<'_>, &str, &Value)),
    /// Never carried over, for this reason: something the app relied on is lost.
    Skip(&'static str),
    /// Not carried over because nothing is lost: clusterd does it anyway, or it is PM2's own
    /// business (its agent, its versioning, its process list).
    Note(&'static str),
}

use Pm2Key::{Map as M, Note, Read, Skip};

const PM2_AGENT: &str = "PM2's monitoring agent (pmx/keymetrics); clusterd has its own metrics (`clusterctl top`, `clusterctl status --json`, the Prometheus endpoint)";
const REASON_UNKNOWN: &str = "not a key PM2 reads (PM2 ignores it too)";
/// Keys named `env_<name>`: the variables of one environment (see [`env_named`]).
const ENV_PREFIX: &str = "env_";

/// Every PM2 app key clusterctl import knows; any other is listed as not carried over with
/// [`REASON_UNKNOWN`], and `env_<name>` keys are read by [`env_named`].
const PM2_KEYS: &[(&str, Pm2Key)] = &[
    ("name", Read),
    ("script", Read),
    ("args", Read),
    ("interpreter", Read),
    ("exec_interpreter", Read),
    ("interpreter_args", Read),
    ("interpreterArgs", Read),
    ("exec", Read),
    ("node_args", Read),
    ("cwd", M(cwd)),
    ("instances", M(instances)),
    ("exec_mode", M(exec_mode)),
    ("env", M(env)),
    ("max_memory_restart", M(max_memory_restart)),
    ("autorestart", M(autorestart)),
    ("max_restarts", M(max_restarts)),
    ("min_uptime", M(min_uptime)),
    ("restart_delay", M(restart_delay)),
    ("exp_backoff_restart_delay", M(exp_backoff_restart_delay)),
    ("kill_timeout", M(kill_timeout)),
    ("shutdown_with_message", M(shutdown_with_message)),
    ("wait_ready", M(|a, _, value| a.wait_ready = value == &Value::Bool(true))),
    ("listen_timeout", M(listen_timeout)),
    ("cron_restart", M(cron_restart)),
    ("cron", M(cron_restart)),
    ("user", M(user)),
    ("uid", M(user)),
    ("gid", M(gid)),
    ("port", M(port)),
    ("out_file", M(|a, key, value| log_file(a, key, value, "stdout"))),
    ("error_file", M(|a, key, value| log_file(a, key, value, "stderr"))),
    ("err_file", M(|a, key, value| log_file(a, key, value, "stderr"))),
    ("log_file", M(|a, key, value| log_file(a, key, value, "file"))),
    // PM2's aliases (lib/API/schema.json) of out_file, error_file and log_file.
    ("out", M(|a, key, value| log_file(a, key, value, "stdout"))),
    ("output", M(|a, key, value| log_file(a, key, value, "stdout"))),
    ("out_log", M(|a, key, value| log_file(a, key, value, "stdout"))),
    ("err", M(|a, key, value| log_file(a, key, value, "stderr"))),
    ("error", M(|a, key, value| log_file(a, key, value, "stderr"))),
    ("err_log", M(|a, key, value| log_file(a, key, value, "stderr"))),
    ("log", M(|a, key, value| log_file(a, key, value, "file"))),
    ("merge_logs", M(merge_logs)),
    ("combine_logs", M(merge_logs)),
    ("log_type", M(log_type)),
    ("disable_logs", M(disable_logs)),
    ("log_date_format", M(log_date_format)),
    ("time", Note("clusterd's log lines always carry a timestamp")),
    ("watch", M(watch)),
    ("ignore_watch", M(ignore_watch)),
    ("watch_delay", M(watch_delay)),
    ("watch_options", M(watch_options)),
    ("stop_exit_codes", M(stop_exit_codes)),
    ("instance_var", M(|a, key, value| variable(a, key, value, "instance_variable"))),
    ("increment_var", M(|a, key, value| variable(a, key, value, "increment_variable"))),
    ("pid_file", Note("clusterd keeps every pid: `clusterctl status --json`, and MAINPID for health checks")),
    ("pid", Note("clusterd keeps every pid: `clusterctl status --json`, and MAINPID for health checks")),
    ("source_map_support", Note("PM2's wrapper installs source-map-support; node takes --enable-source-maps in the command for mapped stack traces")),
    ("disable_source_map_support", Note("clusterd wraps nothing around the app")),
    ("namespace", Note("PM2 groups apps by namespace for its commands; clusterctl takes unit names (and `--all`)")),
    ("vizion", Note("PM2 reads git metadata of the app for its dashboard; clusterd does not")),
    ("post_update", Skip("commands PM2 runs after a pull from its dashboard: clusterd has no dashboard that pulls")),
    ("autostart", M(|a, key, value| flag(a, key, value, true, "clusterd starts every unit of its directory", "clusterd starts every unit of its directory: move the file out (or `clusterctl stop` it) to keep it stopped"))),
    ("force", Note("a unit name is unique: clusterd never starts a unit twice")),
    ("treekill", M(|a, key, value| flag(a, key, value, true, "clusterd stops every process of the instance (its process group, or its cgroup), as PM2's treekill does", "clusterd stops the whole process group (a cgroup when it has one); there is no main-process-only stop"))),
    ("filter_env", M(|a, key, value| flag(a, key, value, false, "PM2's default: the app gets the environment PM2 has, as a unit gets clusterd's", "clusterd passes its own environment less its own variables; a unit cannot filter clusterd's environment"))),
    ("append_env_to_name", Note("the unit's name is the app's name; `clusterd --environment NAME` selects the environment")),
    ("disable_trace", Note(PM2_AGENT)),
    ("trace", Note(PM2_AGENT)),
    ("pmx", Note(PM2_AGENT)),
    ("automation", Note(PM2_AGENT)),
    ("deep_monitoring", Note(PM2_AGENT)),
    ("v8", Note(PM2_AGENT)),
    ("event_loop_inspector", Note(PM2_AGENT)),
    ("io", Note(PM2_AGENT)),
    ("windowsHide", Note("Windows only")),
    ("username", Note("set by PM2 itself; `user` is the key for the user to run as")),
    ("kill_retry_time", Note("clusterd checks for the end of the process itself")),
    ("install_url", Note("set by `pm2 install` for PM2's own modules (plug-ins of PM2)")),
    ("name_prefix", Note("set by `pm2 install` for PM2's own modules (plug-ins of PM2)")),
    ("write", Note("`pm2 start --write` saves the app's settings to a file: the unit file is that file")),
    ("execute_command", Note("a flag of PM2's own command line, not an app setting")),
];

/// What an app's keys build up: the unit, and what the decisions after the last key need.
struct AppKeys<'a> {
    unit: &'a mut UnitDraft,
    /// `--env NAME`: its `env_NAME` is merged into `env`.
    environment: Option<&'a str>,
    /// The ecosystem file's directory.
    base: &'a Path,
    /// Whether the app runs under node (cluster mode is for Node apps), else why not.
    node: Result<(), String>,
    /// The app runs under bun: a cluster worker that is stopped by its signal.
    bun: bool,
    /// `exec_mode` is given (without it PM2 runs a Node app with `instances` in cluster
    /// mode).
    exec_mode: bool,
    /// `instances` is given.
    instances: bool,
    /// `restart_delay`, in ms: PM2 uses `exp_backoff_restart_delay` instead when both are set.
    restart_delay: Option<u64>,
    /// `exp_backoff_restart_delay`, in ms.
    backoff: Option<u64>,
    /// `max_restarts`.
    max_restarts: Option<i64>,
    /// `min_uptime`, in ms.
    min_uptime: Option<u64>,
    /// `env`, then the chosen `env_<name>` over it.
    env_lines: toml::Table,
    /// The other `env_<name>` tables.
    env_tables: BTreeMap<String, toml::Table>,
    wait_ready: bool,
    listen_timeout: Option<u64>,
    cluster: bool,
    kill_timeout: Option<u64>,
    /// `autorestart: false`.
    no_autorestart: bool,
    /// `cron_restart`, as five fields: with `autorestart: false` the app is a cron job
    /// (PM2 users' way to schedule one), a scheduled one-shot here.
    cron: Option<String>,
}

/// Maps every key of `app` into `unit` (whose command and name are set already), in the
/// app's key order, then decides what needs several keys.
pub(super) fn map_keys(
    app: &Map<String, Value>,
    unit: &mut UnitDraft,
    environment: Option<&str>,
    base: &Path,
    runner: super::pm2_runner::Runner,
) {
    let mut keys = AppKeys {
        unit,
        environment,
        base,
        node: runner.node,
        bun: runner.bun,
        exec_mode: false,
        instances: false,
        restart_delay: None,
        backoff: None,
        max_restarts: None,
        min_uptime: None,
        env_lines: toml::Table::new(),
        env_tables: BTreeMap::new(),
        wait_ready: false,
        listen_timeout: None,
        cluster: false,
        kill_timeout: None,
        no_autorestart: false,
        cron: None,
    };
    // serde_json's map is sorted: "env" comes before every "env_...", so the chosen
    // environment goes over `env`.
    for (key, value) in app {
        // `env_file: ".env"` is a file of variables (an object would be the environment
        // named "file").
        if key == "env_file" && !value.is_object() {
            env_file(&mut keys, key, value);
            continue;
        }
        if let Some(env_name) = key.strip_prefix(ENV_PREFIX) {
            env_named(&mut keys, key, env_name, value);
            continue;
        }
        match PM2_KEYS
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, how)| how)
        {
            Some(Read) => {}
            Some(M(map)) => map(&mut keys, key, value),
            Some(Skip(why)) => keys.unit.skip(key, why),
            Some(Note(why)) => keys.unit.note(key, why),
            None => keys.unit.skip(key, REASON_UNKNOWN),
        }
    }
    finish(keys, app.contains_key("cwd"));
}

/// What needs several keys, once every key is read.
fn finish(mut keys: AppKeys<'_>, has_cwd: bool) {
    // Before restart_or_schedule takes the schedule.
    let oneshot = keys.cron.is_some() && keys.no_autorestart;
    restart_or_schedule(&mut keys);
    restart_limit(&mut keys);
    restart_wait(&mut keys);
    // PM2 runs a Node app given `instances` and no `exec_mode` in cluster mode.
    let implicit_cluster = !keys.exec_mode && keys.instances && keys.node.is_ok();
    let t = keys.unit;
    if !has_cwd {
        t.set(
            "working_directory",
            toml_string(&keys.base.display().to_string()),
            "(no cwd: the ecosystem file's directory, where PM2 starts it)",
        );
    }
    if keys.cluster && oneshot {
        t.skip(
            "exec_mode",
            "a cron job (cron_restart with autorestart: false) runs to completion: no cluster mode",
        );
    } else if keys.cluster {
        t.set(
            "node_cluster",
            toml::Value::Boolean(true),
            "exec_mode: cluster",
        );
    } else if implicit_cluster && !oneshot {
        t.set(
            "node_cluster",
            toml::Value::Boolean(true),
            "instances without exec_mode: PM2 runs a Node app so in cluster mode",
        );
        keys.cluster = true;
    }
    if keys.cluster && keys.bun && !oneshot {
        t.set(
            "node_cluster_stop",
            toml_string("signal"),
            "interpreter: bun (bun takes Node's cluster disconnect for a user message; it stops on kill_signal)",
        );
    }
    // Readiness: wait_ready waits for process.send('ready'); listen_timeout bounds it.
    let runs_to_completion = "a cron job runs to completion: its end is what counts";
    if oneshot {
        if keys.wait_ready {
            t.skip("wait_ready", runs_to_completion);
        }
        if keys.listen_timeout.is_some() {
            t.skip("listen_timeout", runs_to_completion);
        }
    } else if keys.wait_ready {
        t.set("ready", toml_string("notify"), "wait_ready");
        if let Some(ms) = keys.listen_timeout {
            t.set("ready_timeout", toml_millis(ms), "listen_timeout");
        }
    } else if let Some(ms) = keys.listen_timeout {
        if keys.cluster {
            t.set("listen_timeout", toml_millis(ms), "listen_timeout");
        } else {
            t.note(
                "listen_timeout",
                "PM2 uses it in cluster mode or with wait_ready only, as clusterd does",
            );
        }
    }
    // PM2 stops with SIGINT and gives 1600 ms before SIGKILL: keep that behaviour.
    t.set(
        "kill_signal",
        toml_string("SIGINT"),
        "PM2 stops apps with SIGINT",
    );
    t.set(
        "kill_timeout",
        toml_millis(keys.kill_timeout.unwrap_or(1600)),
        if keys.kill_timeout.is_some() {
            "kill_timeout"
        } else {
            "PM2's default kill_timeout"
        },
    );
    t.environment = keys.env_lines;
    t.environments = keys.env_tables;
}

fn cwd(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value {
        Value::String(dir) => a.unit.set(
            "working_directory",
            toml_string(&a.base.join(dir).display().to_string()),
            "cwd",
        ),
        _ => a.unit.skip(key, "not a path"),
    }
}

fn instances(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    a.instances = true;
    match value {
        Value::String(s) if s == "max" => a.unit.set("instances", toml_string("max"), "instances"),
        _ => match value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        {
            Some(n) => a
                .unit
                .set("instances", toml::Value::Integer(n), "instances"),
            None => a.unit.skip(key, "not a number or \"max\""),
        },
    }
}

fn exec_mode(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    a.exec_mode = true;
    if let Some("cluster" | "cluster_mode") = value.as_str() {
        match &a.node {
            Ok(()) => a.cluster = true,
            Err(why) => {
                let why = why.clone();
                a.unit.skip(key, &why);
            }
        }
    }
}

fn env(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value {
        Value::Object(vars) => {
            let lines = env_table(vars, a.unit, "env");
            a.env_lines.extend(lines);
        }
        _ => a.unit.skip(key, "not an object"),
    }
}

/// `env_<name>`: merged into `env` when it is the chosen environment, else an
/// `[environments.<name>]` table.
fn env_named(a: &mut AppKeys<'_>, key: &str, env_name: &str, value: &Value) {
    let Value::Object(vars) = value else {
        a.unit.skip(key, "not an object");
        return;
    };
    let lines = env_table(vars, a.unit, key);
    if a.environment == Some(env_name) {
        a.env_lines.extend(lines);
    } else if !is_valid_unit_name(env_name) {
        a.unit.skip(
            key,
            "not an environment name clusterd takes (letters, digits, '-', '_', '.')",
        );
    } else {
        a.env_tables.insert(env_name.to_string(), lines);
    }
}

/// `out_file` / `error_file` → `log.stdout` / `log.stderr`, `log_file` → `log.file` (the
/// streams without a file of their own), relative paths from the ecosystem file's
/// directory; `/dev/null` keeps nothing, as in PM2.
fn log_file(a: &mut AppKeys<'_>, key: &str, value: &Value, to: &str) {
    let path = match value {
        Value::String(path) => path,
        // `log_file: true`: PM2's combined file in its own directory; clusterd's default
        // file holds both streams too.
        Value::Bool(true) if to == "file" => {
            return a.unit.note(
                key,
                "true: PM2 then keeps a combined file of both streams, as clusterd's default log file does (`clusterctl logs UNIT`)",
            )
        }
        _ => return a.unit.skip(key, "not a path"),
    };
    if path == "/dev/null" {
        if to == "file" {
            // PM2's combined file, off: clusterd makes none unless asked.
            return a
                .unit
                .skip(key, "/dev/null: no combined file, as without log.file");
        }
        return a.unit.set_in("log", to, toml_string(path), key);
    }
    let path = a.base.join(path).display().to_string();
    a.unit.set_in("log", to, toml_string(&path), key);
}

/// A flag whose value `nothing_lost` needs nothing under clusterd (`why_noted`); the other
/// value is listed with `why_skipped`.
fn flag(
    a: &mut AppKeys<'_>,
    key: &str,
    value: &Value,
    nothing_lost: bool,
    why_noted: &str,
    why_skipped: &str,
) {
    let empty = matches!(value, Value::Array(items) if items.is_empty());
    if value == &Value::Bool(nothing_lost) || (!nothing_lost && (value.is_null() || empty)) {
        a.unit.note(key, why_noted);
    } else {
        a.unit.skip(key, why_skipped);
    }
}

/// `log_type: "json"`: PM2 writes each line as a JSON object; clusterd writes text lines.
fn log_type(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    if value.as_str() == Some("json") {
        a.unit.skip(
            key,
            "\"json\": PM2 then writes each line as a JSON object; clusterd's files hold text lines with the time, instance and stream (`[log] to = \"journal\"` keeps them as fields)",
        );
    } else {
        a.unit
            .note(key, "PM2's default text lines, as clusterd writes them");
    }
}

/// `disable_logs: true`: PM2 keeps no log file: both streams to `/dev/null`.
fn disable_logs(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    if value == &Value::Bool(true) {
        for stream in ["stdout", "stderr"] {
            a.unit.set_in("log", stream, toml_string("/dev/null"), key);
        }
    }
}

/// `merge_logs: false` → `log.per_instance` (PM2 then adds `-<pm_id>` to the names,
/// clusterd `-<instance>`); `true` is clusterd's default, said all the same.
fn merge_logs(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value {
        Value::Bool(merge) => {
            a.unit
                .set_in("log", "per_instance", toml::Value::Boolean(!merge), key)
        }
        _ => a.unit.skip(key, "not true or false"),
    }
}

/// `log_date_format` (moment.js tokens) → `log.timestamp_format` (strftime), in local time
/// as PM2 writes it.
fn log_date_format(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    if matches!(value, Value::Bool(false) | Value::Null) {
        // PM2's default: no date of its own before each line.
        return a.unit.note(
            key,
            "false: PM2 adds no date; clusterd's log lines carry their time anyway ([log] timestamp_format sets its form)",
        );
    }
    let Value::String(moment) = value else {
        return a.unit.skip(key, "not a format");
    };
    match strftime_of_moment(moment) {
        Ok(format) => a
            .unit
            .set_in("log", "timestamp_format", toml_string(&format), key),
        Err(why) => a.unit.skip(key, &why),
    }
}

/// moment.js format tokens as strftime directives ([`crate::unit::timestamp_format`]);
/// `[text]` is literal text, as in moment. A token with no counterpart is an error.
fn strftime_of_moment(moment: &str) -> Result<String, String> {
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("YY", "%y"),
        ("MMMM", "%B"),
        ("MMM", "%b"),
        ("MM", "%m"),
        ("M", "%-m"),
        ("DDDD", "%j"),
        ("DD", "%d"),
        ("D", "%-d"),
        ("dddd", "%A"),
        ("ddd", "%a"),
        ("HH", "%H"),
        ("H", "%-H"),
        ("hh", "%I"),
        ("h", "%-I"),
        ("mm", "%M"),
        ("m", "%-M"),
        ("ss", "%S"),
        ("s", "%-S"),
        ("SSSSSS", "%f"),
        ("SSS", "%L"),
        ("A", "%p"),
        ("a", "%P"),
        ("ZZ", "%z"),
        ("Z", "%:z"),
        ("X", "%s"),
    ];
    let mut out = String::new();
    let mut rest = moment;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            let end = rest.find(']').ok_or("a [ without its ]")?;
            out.push_str(&rest.get(1..end).unwrap_or_default().replace('%', "%%"));
            rest = rest.get(end + 1..).unwrap_or_default();
        } else if let Some((token, directive)) = TOKENS.iter().find(|(t, _)| rest.starts_with(t)) {
            out.push_str(directive);
            rest = rest.get(token.len()..).unwrap_or_default();
        } else if c.is_ascii_alphabetic() {
            return Err(format!(
                "the moment.js token at {rest:?} has no strftime counterpart in log.timestamp_format"
            ));
        } else {
            if c == '%' {
                out.push('%');
            }
            out.push(c);
            rest = rest.get(c.len_utf8()..).unwrap_or_default();
        }
    }
    Ok(out)
}

fn max_memory_restart(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match memory(value) {
        Some(size) => a.unit.set(
            "memory_max",
            size,
            "max_memory_restart (checked every second, replaced gracefully)",
        ),
        None => a.unit.skip(key, "not a size such as \"200M\""),
    }
}

fn autorestart(a: &mut AppKeys<'_>, _: &str, value: &Value) {
    a.no_autorestart = value == &Value::Bool(false);
}

/// `autorestart: false` and `cron_restart` together are PM2 users' cron job (PM2 restarts a
/// stopped app at the cron time): a scheduled one-shot. Each alone keeps its own meaning.
fn restart_or_schedule(a: &mut AppKeys<'_>) {
    match (a.no_autorestart, a.cron.take()) {
        (true, Some(schedule)) => {
            let from = "cron_restart with autorestart: false (a cron job: a one-shot run at these times, never overlapped)";
            a.unit.set("type", toml_string("oneshot"), from);
            a.unit.set("schedule", toml_string(&schedule), from);
            a.unit.unset_needless(
                "restart_prevent_exit_codes",
                "with autorestart: false PM2 restarts no exit either; a one-shot's run ends at every exit",
            );
            for key in crate::unit::job::SERVICE_ONLY_KEYS {
                a.unit.unset(
                    key,
                    "a one-shot (cron job) runs to completion: it takes no such key",
                );
            }
        }
        (no_autorestart, cron) => {
            if no_autorestart {
                a.unit
                    .set("restart", toml_string("never"), "autorestart: false");
            }
            if let Some(schedule) = cron {
                a.unit.set(
                    "cron_restart",
                    toml_string(&schedule),
                    "cron_restart (a rolling reload)",
                );
            }
        }
    }
}

fn max_restarts(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value.as_i64().filter(|n| *n >= 0) {
        Some(n) => a.max_restarts = Some(n),
        None => a.unit.skip(key, "not a number"),
    }
}

/// `min_uptime`: milliseconds, or a number of `s`, `m` or `h` (PM2's "10s").
fn min_uptime(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    let ms = match value {
        Value::String(s) => {
            let s = s.trim();
            let (digits, unit) =
                s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let scale = match unit {
                "" => Some(1),
                "s" => Some(1000),
                "m" => Some(60_000),
                "h" => Some(3_600_000),
                _ => None,
            };
            digits
                .parse::<u64>()
                .ok()
                .zip(scale)
                .map(|(n, k)| n.saturating_mul(k))
        }
        other => millis(other),
    };
    match ms {
        Some(ms) => a.min_uptime = Some(ms),
        None => a.unit.skip(key, "not a time such as 1000 or \"10s\""),
    }
}

/// `max_restarts` and `min_uptime`: PM2 gives up after `max_restarts` restarts of runs
/// shorter than `min_uptime` (1 s by default); longer runs never count. So does
/// `restart_limit.min_uptime`; the window is made long enough for that many short runs
/// and their waits (at least the default minute).
fn restart_limit(a: &mut AppKeys<'_>) {
    let Some(burst) = a.max_restarts else {
        if a.min_uptime.is_some() {
            a.max_restarts = Some(16);
            return restart_limit(a);
        }
        return;
    };
    let min_uptime = a.min_uptime.unwrap_or(1000);
    let wait = a.backoff.map_or(a.restart_delay.unwrap_or(0), |_| 15_000);
    let window_s = (u64::try_from(burst).unwrap_or(0))
        .saturating_mul(min_uptime.saturating_add(wait))
        .div_ceil(1000)
        .max(60);
    let from = if a.min_uptime.is_some() {
        "max_restarts, min_uptime (only runs shorter than min_uptime count, as in PM2)"
    } else {
        "max_restarts (only runs shorter than PM2's default min_uptime, 1 s, count)"
    };
    a.unit.set(
        "restart_limit",
        toml::Value::Table(toml::Table::from_iter([
            ("burst".to_string(), toml::Value::Integer(burst)),
            ("interval".to_string(), toml_string(&format!("{window_s}s"))),
            ("min_uptime".to_string(), toml_millis(min_uptime)),
        ])),
        from,
    );
}

fn restart_delay(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match millis(value) {
        Some(ms) => a.restart_delay = Some(ms),
        None => a.unit.skip(key, "not milliseconds"),
    }
}

fn exp_backoff_restart_delay(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match millis(value) {
        Some(ms) if ms > 0 => a.backoff = Some(ms),
        _ => a.unit.skip(key, "not milliseconds"),
    }
}

/// The wait before a restart: PM2 uses `exp_backoff_restart_delay` when it is set (its
/// defaults are restart_backoff's: 1.5 times longer each crash, at most 15 s, from the start
/// again after 30 s up), else `restart_delay`.
fn restart_wait(a: &mut AppKeys<'_>) {
    match (a.backoff, a.restart_delay) {
        (Some(ms), delay) => {
            a.unit.set(
                "restart_backoff",
                toml::Value::Table(toml::Table::from_iter([(
                    "initial".to_string(),
                    toml_millis(ms),
                )])),
                "exp_backoff_restart_delay",
            );
            if delay.is_some() {
                a.unit.note(
                    "restart_delay",
                    "PM2 waits as exp_backoff_restart_delay says when both are set (restart_backoff)",
                );
            }
        }
        (None, Some(ms)) => a
            .unit
            .set("restart_delay", toml_millis(ms), "restart_delay"),
        (None, None) => {}
    }
}

fn kill_timeout(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match millis(value) {
        Some(ms) => a.kill_timeout = Some(ms),
        None => a.unit.skip(key, "not milliseconds"),
    }
}

fn shutdown_with_message(a: &mut AppKeys<'_>, _: &str, value: &Value) {
    if value == &Value::Bool(true) {
        a.unit.set(
            "stop_message",
            toml_string("shutdown"),
            "shutdown_with_message",
        );
    }
}

fn listen_timeout(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match millis(value) {
        Some(ms) => a.listen_timeout = Some(ms),
        None => a.unit.skip(key, "not milliseconds"),
    }
}

fn cron_restart(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value.as_str().map(cron_five_fields) {
        Some(Ok(schedule)) => a.cron = Some(schedule),
        Some(Err(e)) => a.unit.skip(key, &e),
        None => a.unit.skip(key, "not a cron schedule"),
    }
}

/// `user` and `uid`: a name or a number.
fn user(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value {
        Value::String(user) => a.unit.set("user", toml_string(user), key),
        Value::Number(uid) => a.unit.set("user", toml_string(&uid.to_string()), key),
        _ => a.unit.skip(key, "not a user"),
    }
}

fn gid(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match value {
        Value::String(group) => a.unit.set("group", toml_string(group), key),
        Value::Number(gid) => a.unit.set("group", toml_string(&gid.to_string()), key),
        _ => a.unit.skip(key, "not a group"),
    }
}

fn port(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match env_value(value) {
        Some(v) => {
            a.env_lines.insert("PORT".to_string(), v);
        }
        None => a.unit.skip(key, "not a port"),
    }
}

fn watch(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    const FROM: &str = "watch (a rolling reload)";
    match value {
        Value::Bool(true) => a.unit.set("watch", toml::Value::Boolean(true), FROM),
        Value::Bool(false) => {}
        Value::String(path) => a
            .unit
            .set("watch", toml_strings(std::slice::from_ref(path)), FROM),
        Value::Array(_) => match words(value) {
            Ok(paths) => a.unit.set("watch", toml_strings(&paths), FROM),
            Err(e) => a.unit.skip(key, &e),
        },
        _ => a.unit.skip(key, "not true, a path or a list of paths"),
    }
}

/// `ignore_watch`: chokidar's `ignored` in PM2, strings being globs relative to the app's
/// directory (a directory matched is left with all below it). A name (no `/`) is kept as
/// a name pattern, which clusterd matches at every depth (chokidar only directly in the
/// app's directory: clusterd ignores at least what PM2 does); a path is kept as a path
/// pattern, which the unit reads relative to `working_directory`, as PM2 does. Glob
/// syntax beyond `*`, `?` and `**`, and regular expressions (from a `.js` file), are
/// listed.
fn ignore_watch(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut kept = Vec::new();
    let mut others = Vec::new();
    for item in items {
        match item {
            Value::String(p)
                if !p.is_empty()
                    && !p.starts_with('!')
                    && !p.contains([
                        '[', ']', '{', '}', '(', ')', '+', '@', '\\', '^', '$', '|', '\0',
                    ]) =>
            {
                kept.push(p.clone());
            }
            Value::String(p) => others.push(format!("`{p}`")),
            Value::Object(o) => match o.get("regexp").and_then(Value::as_str) {
                Some(re) => others.push(format!("the regular expression {re}")),
                None => others.push(item.to_string()),
            },
            other => others.push(other.to_string()),
        }
    }
    if !kept.is_empty() {
        a.unit
            .set("watch_ignore", toml_strings(&kept), "ignore_watch");
    }
    if !others.is_empty() {
        a.unit.skip(
            key,
            &format!(
                "{}: watch_ignore takes name and path patterns with `*`, `?` and `**` only (no character classes, braces, negation or regular expressions): write each as such patterns",
                others.join(", ")
            ),
        );
    }
}

/// `env_file` (not PM2's own key, though authors write it): a file of `KEY=VALUE` lines,
/// as clusterd's `environment_file` reads it, relative to the app's directory.
fn env_file(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    let paths = match value {
        Value::String(path) => vec![path.clone()],
        Value::Array(_) => words(value).unwrap_or_default(),
        _ => Vec::new(),
    };
    if paths.is_empty() {
        a.unit.skip(key, "not a path");
        return;
    }
    // `-`: may be missing, as PM2, which never reads it, never required it.
    let paths: Vec<String> = paths.iter().map(|p| format!("-{p}")).collect();
    a.unit.set(
        "environment_file",
        toml_strings(&paths),
        "env_file (PM2 itself does not read it; clusterd reads it at every start)",
    );
}

/// `instance_var` and `increment_var`: a variable's name, kept as the unit key `unit_key`.
fn variable(a: &mut AppKeys<'_>, key: &str, value: &Value, unit_key: &str) {
    match value.as_str() {
        Some(name) if !name.is_empty() && !name.contains(['=', '\0']) => {
            a.unit.set(unit_key, toml_string(name), key)
        }
        _ => a.unit.skip(key, "not a variable name"),
    }
}

/// `watch_options`, chokidar's: those clusterd's inotify watcher does anyway are noted, the
/// others listed.
fn watch_options(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    let Value::Object(options) = value else {
        return a.unit.skip(key, "not an object");
    };
    for (option, value) in options {
        let what = format!("{key}.{option}");
        match (option.as_str(), value) {
            ("followSymlinks", Value::Bool(false)) => a
                .unit
                .note(&what, "clusterd's watcher never follows symlinks"),
            ("usePolling" | "interval" | "binaryInterval", _) => a.unit.note(
                &what,
                "clusterd's watcher uses inotify, which needs no polling (a network file system is not watched)",
            ),
            ("persistent" | "ignoreInitial", _) => {
                a.unit.note(&what, "clusterd watches while the unit runs and ignores the files already there")
            }
            _ => a.unit.skip(&what, "a chokidar option with no counterpart in clusterd's inotify watcher"),
        }
    }
}

/// `stop_exit_codes`: exit codes after which PM2 does not restart (God.js's `handleExit`),
/// whatever `autorestart` says: `restart_prevent_exit_codes`, systemd's
/// `RestartPreventExitStatus=`. Numbers or strings of digits, as PM2 reads them.
fn stop_exit_codes(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let codes: Option<Vec<i64>> = items
        .iter()
        .map(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .map(|c| c.filter(|c| (0..=255).contains(c)))
        .collect();
    match codes {
        Some(codes) if !codes.is_empty() => a.unit.set(
            "restart_prevent_exit_codes",
            toml::Value::Array(codes.into_iter().map(toml::Value::Integer).collect()),
            "stop_exit_codes",
        ),
        _ => a.unit.skip(key, "not a list of exit codes (0–255)"),
    }
}

fn watch_delay(a: &mut AppKeys<'_>, key: &str, value: &Value) {
    match millis(value) {
        Some(ms) => a.unit.set("watch_delay", toml_millis(ms), "watch_delay"),
        None => a.unit.skip(key, "not milliseconds"),
    }
}

/// A duration in milliseconds, as a unit writes it.
fn toml_millis(ms: u64) -> toml::Value {
    toml_string(&format!("{ms}ms"))
}

/// PM2 times are milliseconds (a number, or a string of digits).
fn millis(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A variable's value: strings as they are, integers and booleans as TOML's (a unit takes
/// their text), other numbers as their JSON text.
fn env_value(value: &Value) -> Option<toml::Value> {
    match value {
        Value::String(s) => Some(toml_string(s)),
        Value::Number(n) => Some(
            n.as_i64()
                .map_or_else(|| toml_string(&n.to_string()), toml::Value::Integer),
        ),
        Value::Bool(b) => Some(toml::Value::Boolean(*b)),
        _ => None,
    }
}

/// The variables of an `env` object that a unit can hold (a name without `=` or NUL, a
/// value without NUL); the others are listed as not carried over.
fn env_table(vars: &Map<String, Value>, t: &mut UnitDraft, from: &str) -> toml::Table {
    let mut table = toml::Table::new();
    for (key, value) in vars {
        let what = format!("{from}.{key}");
        match env_value(value) {
            _ if key.is_empty() || key.contains(['=', '\0']) => {
                t.skip(&what, "not a variable name")
            }
            Some(toml::Value::String(s)) if s.contains('\0') => {
                t.skip(&what, "a NUL byte, which no variable can hold")
            }
            Some(v) => {
                table.insert(key.clone(), v);
            }
            None => t.skip(&what, "not a string, number or boolean"),
        }
    }
    table
}

/// `max_memory_restart`: "200M", "1G", "300K" (binary multiples, as PM2 reads them) or bytes.
fn memory(value: &Value) -> Option<toml::Value> {
    let text = match value {
        Value::Number(n) => return n.as_u64().map(|b| toml_string(&b.to_string())),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    let unit = match unit.trim().to_ascii_uppercase().as_str() {
        "" => return Some(toml_string(&n.to_string())),
        "K" | "KB" => "KiB",
        "M" | "MB" => "MiB",
        "G" | "GB" => "GiB",
        _ => return None,
    };
    Some(toml_string(&format!("{n}{unit}")))
}

/// PM2 takes a six-field schedule with seconds too; clusterd's is minute-grained.
fn cron_five_fields(schedule: &str) -> Result<String, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let five = match fields.len() {
        6 if fields[0] == "0" => fields[1..].join(" "),
        6 => {
            return Err(format!(
                "{schedule:?} runs at second {}: clusterd schedules to the minute",
                fields[0]
            ))
        }
        _ => fields.join(" "),
    };
    five.parse::<CronSchedule>().map(|_| five)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_a_different_key() {
        // A second row of a name would never be reached.
        let mut names: Vec<&str> = PM2_KEYS.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
        assert!(names.iter().all(|n| !n.starts_with(ENV_PREFIX)));
    }

    /// docs/migrating-from-pm2.md maps PM2's app keys for people: every key it names is one
    /// this table knows, so that the guide and `clusterctl import` tell the same story.
    #[test]
    fn the_migration_guide_names_only_keys_of_the_table() {
        let guide = include_str!("../../docs/migrating-from-pm2.md");
        let table = guide
            .split_once("| PM2 | clusterd | notes |")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let mut named = 0;
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let pm2 = row.split('|').nth(1).unwrap_or_default();
            for (i, piece) in pm2.split('`').enumerate() {
                // Odd pieces are in backticks; `exec_mode: "cluster"` names `exec_mode`.
                let key = piece.split(':').next().unwrap_or_default();
                // Variable names (`NODE_APP_INSTANCE`), options of pm2 (`--env production`),
                // and `deploy`, which is the ecosystem file's, not an app's.
                if i % 2 == 0
                    || key.starts_with('-')
                    || key.chars().any(|c| c.is_ascii_uppercase())
                    || key == "deploy"
                {
                    continue;
                }
                assert!(
                    key.starts_with(ENV_PREFIX) || PM2_KEYS.iter().any(|(name, _)| *name == key),
                    "the guide names {key:?}, which clusterctl import does not know"
                );
                named += 1;
            }
        }
        assert!(named >= 30, "only {named} keys found in the guide");
    }

    #[test]
    fn pm2_date_formats_become_strftime_formats_clusterd_accepts() {
        for (moment, strftime) in [
            ("YYYY-MM-DD HH:mm Z", "%Y-%m-%d %H:%M %:z"),
            ("YYYY-MM-DD HH:mm:ss.SSS", "%Y-%m-%d %H:%M:%S.%L"),
            ("DD/MM/YYYY hh:mm:ss A ZZ", "%d/%m/%Y %I:%M:%S %p %z"),
            ("YYYY-MM-DD[T]HH:mm:ss [100%]", "%Y-%m-%dT%H:%M:%S 100%%"),
            ("ddd D MMM YY, H:m:s a", "%a %-d %b %y, %-H:%-M:%-S %P"),
        ] {
            let got = strftime_of_moment(moment).unwrap();
            assert_eq!(got, strftime, "{moment}");
            crate::unit::timestamp_format::TimestampFormat::parse(&got).unwrap();
        }
        assert!(strftime_of_moment("YYYY Qo").is_err());
        assert!(strftime_of_moment("[open").is_err());
    }
}
