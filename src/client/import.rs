//! `clusterctl import`: a PM2 ecosystem file (`ecosystem.config.js`, `.cjs`, `.json`, `.yml`) becomes
//! one unit file per app, each key mapped to its clusterd counterpart with a comment saying
//! where it came from, and every key that has none listed with the reason
//! (docs/migrating-from-pm2.md is the same table for people).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

use crate::unit::cron::CronSchedule;

/// One unit made from one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUnit {
    /// The unit's name, from the app's `name` (made valid for a file name).
    pub name: String,
    /// The unit file's text.
    pub text: String,
    /// The app's keys that have no counterpart, with why.
    pub not_mapped: Vec<String>,
}

/// Reads the ecosystem file: JSON as it is; JavaScript evaluated by `node`, as PM2 does.
pub fn read_ecosystem(path: &Path) -> Result<Value, String> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text = match extension {
        // PM2 reads its .json files leniently (unquoted keys, comments, trailing commas, as
        // its own examples have them): strict JSON first, else node evaluates the object.
        "json" | "json5" => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if text.trim().is_empty() {
                return Err(format!("{}: the file is empty", path.display()));
            }
            if serde_json::from_str::<Value>(&text).is_ok() {
                text
            } else {
                node_json(
                    path,
                    "const t = require('fs').readFileSync(process.argv[1], 'utf8'); process.stdout.write(JSON.stringify((new Function('return (' + t + '\\n)'))()))",
                )?
            }
        }
        "js" | "cjs" => node_json(
            path,
            "const m = require(process.argv[1]); process.stdout.write(JSON.stringify(m && m.default ? m.default : m))",
        )?,
        // PM2's process.yml: the subset of YAML those files use.
        "yaml" | "yml" => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            return super::yaml_subset::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        _ => {
            return Err(format!(
                "{}: an ecosystem file is .js, .cjs, .json or .yml",
                path.display()
            ))
        }
    };
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: not an ecosystem file: {e}", path.display()))
}

/// The units of every app of `ecosystem` (`{apps: [...]}`, an array of apps, or one app).
/// With `environment`, the app's `env_<environment>` is merged into its `env`, as
/// `pm2 start --env <environment>` does; without, each `env_<name>` becomes an
/// `[environments.<name>]` table for `clusterd --environment <name>`.
/// The JSON that `script`, run by node with the file's absolute path, prints.
fn node_json(path: &Path, script: &str) -> Result<String, String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let output = Command::new("node")
        .arg("-e")
        .arg(script)
        .arg(&absolute)
        .output()
        .map_err(|e| format!("cannot run node to read {}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!(
            "node could not read {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `base`: the ecosystem file's directory, where PM2 starts an app without a `cwd` (and
/// what a relative `cwd` is relative to).
pub fn import(
    ecosystem: &Value,
    source: &str,
    environment: Option<&str>,
    base: &Path,
) -> Result<Vec<ImportedUnit>, String> {
    // `apps`, or `pm2` in PM2's older files.
    let listed = match ecosystem {
        Value::Object(map) => map.get("apps").or_else(|| map.get("pm2")),
        _ => None,
    };
    let apps: Vec<&Value> = match (listed, ecosystem) {
        (Some(Value::Array(apps)), _) => apps.iter().collect(),
        (Some(app @ Value::Object(_)), _) => vec![app],
        (Some(_), _) => return Err("`apps` is neither a list nor an app".into()),
        (None, Value::Array(apps)) => apps.iter().collect(),
        (None, app @ Value::Object(_)) if app.get("script").is_some() => vec![app],
        _ => {
            return Err(
                "an ecosystem file holds `apps` (a list of apps), a list of apps or one app with a `script`"
                    .into(),
            )
        }
    };
    let mut units: Vec<ImportedUnit> = Vec::new();
    for (position, app) in apps.into_iter().enumerate() {
        let Value::Object(app) = app else {
            return Err(format!("app {} is not an object", position + 1));
        };
        let mut unit = import_app(app, source, environment, base)?;
        // PM2 allows two apps of one name; unit names are file names.
        if units.iter().any(|u| u.name == unit.name) {
            let taken = |name: &str| units.iter().any(|u| u.name == name);
            let renamed = (2..)
                .map(|n| format!("{}-{n}", unit.name))
                .find(|name| !taken(name))
                .unwrap_or_default();
            unit.text = unit.text.replacen(
                &format!("# {}: imported", unit.name),
                &format!("# {renamed} (another app is named {}): imported", unit.name),
                1,
            );
            unit.name = renamed;
        }
        units.push(unit);
    }
    Ok(units)
}

/// Lines of a unit being written: `key = value` with the PM2 key it came from.
#[derive(Default)]
struct UnitText {
    lines: Vec<String>,
    tables: Vec<String>,
    not_mapped: Vec<String>,
}

impl UnitText {
    fn set(&mut self, key: &str, value: String, from: &str) {
        self.lines.push(format!("{key} = {value}   # pm2: {from}"));
    }
    fn skip(&mut self, key: &str, why: &str) {
        self.not_mapped.push(format!("{key}: {why}"));
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn toml_strings(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// PM2 times are milliseconds (a number, or a string of digits).
fn millis(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A variable value as TOML: strings quoted, numbers and booleans as they are.
fn env_value(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(toml_string(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The variables of an `env` object, as TOML values by name.
fn env_table(vars: &Map<String, Value>, t: &mut UnitText, from: &str) -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    for (key, value) in vars {
        match env_value(value) {
            Some(v) => {
                table.insert(key.clone(), v);
            }
            None => t.skip(&format!("{from}.{key}"), "not a string, number or boolean"),
        }
    }
    table
}

fn table_lines(table: &BTreeMap<String, String>) -> String {
    table
        .iter()
        .map(|(key, value)| format!("{} = {value}", toml_key(key)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

/// The app's `cwd`, or "" (its scripts are then relative to the ecosystem file's directory).
fn app_dir(app: &Map<String, Value>) -> &str {
    app.get("cwd").and_then(Value::as_str).unwrap_or("")
}

/// PM2's interpreter for a script, by its extension, as PM2 picks it.
fn interpreter_for(script: &str) -> Option<&'static str> {
    let extension = Path::new(script).extension().and_then(|e| e.to_str())?;
    Some(match extension {
        "js" | "cjs" | "mjs" => "node",
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        "sh" => "bash",
        "pl" => "perl",
        "coffee" => "coffee",
        _ => return None,
    })
}

fn words(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => {
            shell_words::split(s).map_err(|_| format!("unterminated quote in {s:?}"))
        }
        Value::Array(items) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()),
        _ => Err("neither a string nor a list".into()),
    }
}

/// `max_memory_restart`: "200M", "1G", "300K" (binary multiples, as PM2 reads them) or bytes.
fn memory(value: &Value) -> Option<String> {
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

/// A unit name from an app's name: letters, digits, '-', '_', '.' and '@'; the rest '-'.
fn unit_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').to_string()
}

fn import_app(
    app: &Map<String, Value>,
    source: &str,
    environment: Option<&str>,
    base: &Path,
) -> Result<ImportedUnit, String> {
    let script = match app.get("script") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(format!(
                "an app without a `script`: {}",
                Value::Object(app.clone())
            ))
        }
    };
    let name = match app.get("name") {
        Some(Value::String(n)) => unit_name(n),
        _ => unit_name(
            Path::new(&script)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("app"),
        ),
    };
    if name.is_empty() {
        return Err(format!("app {script:?}: no usable name"));
    }
    let mut t = UnitText::default();

    // The command: interpreter, its arguments, the script (itself maybe a command line),
    // the script's arguments.
    let interpreter = match app
        .get("interpreter")
        .or_else(|| app.get("exec_interpreter"))
    {
        Some(Value::String(i)) if i == "none" => None,
        Some(Value::String(i)) => Some(i.clone()),
        // A directory is a Node package (node runs its main file), as PM2 runs it.
        _ if base.join(app_dir(app)).join(&script).is_dir() => Some("node".to_string()),
        _ => interpreter_for(&script).map(str::to_string),
    };
    let mut command = Vec::new();
    if let Some(interpreter) = &interpreter {
        command.push(interpreter.clone());
        for key in ["interpreter_args", "node_args"] {
            if let Some(args) = app.get(key) {
                command.extend(words(args).map_err(|e| format!("{name}: {key}: {e}"))?);
            }
        }
        command.push(script.clone());
    } else {
        command.extend(
            shell_words::split(&script)
                .map_err(|_| format!("{name}: script: unterminated quote"))?,
        );
    }
    if let Some(args) = app.get("args") {
        command.extend(words(args).map_err(|e| format!("{name}: args: {e}"))?);
    }
    t.set(
        "command",
        toml_strings(&command),
        "script, interpreter, args",
    );

    let node = interpreter.as_deref() == Some("node");
    let mut env_tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // `env`, then the chosen `env_<name>` over it (serde_json's map is sorted: "env" comes
    // before every "env_...").
    let mut env_lines: BTreeMap<String, String> = BTreeMap::new();
    let mut wait_ready = false;
    let mut listen_timeout = None;
    let mut cluster = false;
    let mut kill_timeout = None;
    for (key, value) in app {
        match key.as_str() {
            "name" | "script" | "args" | "interpreter" | "exec_interpreter" | "interpreter_args" | "node_args" => {}
            "cwd" => match value {
                Value::String(dir) => t.set(
                    "working_directory",
                    toml_string(&base.join(dir).display().to_string()),
                    "cwd",
                ),
                _ => t.skip(key, "not a path"),
            },
            "instances" => match value {
                Value::Number(n) if n.is_i64() => t.set("instances", n.to_string(), "instances"),
                Value::String(s) if s == "max" => t.set("instances", toml_string("max"), "instances"),
                Value::String(s) if s.parse::<i64>().is_ok() => t.set("instances", s.clone(), "instances"),
                _ => t.skip(key, "not a number or \"max\""),
            },
            "exec_mode" => match value.as_str() {
                Some("cluster" | "cluster_mode") if node => cluster = true,
                Some("cluster" | "cluster_mode") => t.skip(
                    key,
                    "PM2's cluster mode is for Node apps; for this program give the unit `listen = [\"tcp://...\"]` and make it accept from fd 3",
                ),
                _ => {}
            },
            "env" => match value {
                Value::Object(vars) => env_lines.extend(env_table(vars, &mut t, "env")),
                _ => t.skip(key, "not an object"),
            },
            other if other.starts_with("env_") => {
                let env_name = &other["env_".len()..];
                let Value::Object(vars) = value else {
                    t.skip(key, "not an object");
                    continue;
                };
                let lines = env_table(vars, &mut t, other);
                if environment == Some(env_name) {
                    env_lines.extend(lines);
                } else {
                    env_tables.insert(env_name.to_string(), lines);
                }
            }
            "max_memory_restart" => match memory(value) {
                Some(size) => t.set("memory_max", size, "max_memory_restart (checked every second, replaced gracefully)"),
                None => t.skip(key, "not a size such as \"200M\""),
            },
            "autorestart" => {
                if value == &Value::Bool(false) {
                    t.set("restart", toml_string("never"), "autorestart: false");
                }
            }
            "max_restarts" => match value.as_u64() {
                Some(n) => t.set(
                    "restart_limit",
                    format!("{{ burst = {n}, interval = \"60s\" }}"),
                    "max_restarts (PM2 counts restarts shorter than min_uptime; clusterd counts restarts within a sliding minute)",
                ),
                None => t.skip(key, "not a number"),
            },
            "min_uptime" => t.skip(key, "clusterd counts every restart within restart_limit's window; see ready_after and restart_backoff.reset_after"),
            "restart_delay" => match millis(value) {
                Some(ms) => t.set("restart_delay", toml_string(&format!("{ms}ms")), "restart_delay"),
                None => t.skip(key, "not milliseconds"),
            },
            "exp_backoff_restart_delay" => match millis(value) {
                Some(ms) if ms > 0 => t.set(
                    "restart_backoff",
                    format!("{{ initial = {} }}", toml_string(&format!("{ms}ms"))),
                    "exp_backoff_restart_delay",
                ),
                _ => t.skip(key, "not milliseconds"),
            },
            "kill_timeout" => match millis(value) {
                Some(ms) => kill_timeout = Some(ms),
                None => t.skip(key, "not milliseconds"),
            },
            "shutdown_with_message" => {
                if value == &Value::Bool(true) {
                    t.set("stop_message", toml_string("shutdown"), "shutdown_with_message");
                }
            }
            "wait_ready" => wait_ready = value == &Value::Bool(true),
            "listen_timeout" => match millis(value) {
                Some(ms) => listen_timeout = Some(ms),
                None => t.skip(key, "not milliseconds"),
            },
            "cron_restart" => match value.as_str().map(cron_five_fields) {
                Some(Ok(schedule)) => t.set("cron_restart", toml_string(&schedule), "cron_restart (a rolling reload)"),
                Some(Err(e)) => t.skip(key, &e),
                None => t.skip(key, "not a cron schedule"),
            },
            "user" | "uid" => match value {
                Value::String(user) => t.set("user", toml_string(user), key),
                Value::Number(uid) => t.set("user", toml_string(&uid.to_string()), key),
                _ => t.skip(key, "not a user"),
            },
            "gid" => match value {
                Value::String(group) => t.set("group", toml_string(group), key),
                Value::Number(gid) => t.set("group", toml_string(&gid.to_string()), key),
                _ => t.skip(key, "not a group"),
            },
            "port" => match env_value(value) {
                Some(v) => {
                    env_lines.insert("PORT".to_string(), v);
                }
                None => t.skip(key, "not a port"),
            },
            "out_file" | "error_file" | "err_file" | "log_file" | "log" | "out" | "output" | "err" | "error" | "merge_logs" | "combine_logs" | "log_type" => {
                t.skip(key, "clusterd keeps one log file per unit, each line with its instance and stream: `clusterctl logs UNIT` ([log] in the unit)")
            }
            "log_date_format" => t.skip(key, "clusterd's log lines carry RFC 3339 UTC timestamps"),
            "watch" => match value {
                Value::Bool(true) => t.set("watch", "true".into(), "watch (a rolling reload)"),
                Value::Bool(false) => {}
                Value::String(path) => t.set("watch", toml_strings(std::slice::from_ref(path)), "watch (a rolling reload)"),
                Value::Array(_) => match words(value) {
                    Ok(paths) => t.set("watch", toml_strings(&paths), "watch (a rolling reload)"),
                    Err(e) => t.skip(key, &e),
                },
                _ => t.skip(key, "not true, a path or a list of paths"),
            },
            "ignore_watch" => {
                // clusterd matches names (`*`, `?`); PM2 also takes paths and regular
                // expressions, which have no counterpart.
                let patterns = words(value).unwrap_or_default();
                let (names, others): (Vec<String>, Vec<String>) = patterns
                    .into_iter()
                    .partition(|p| !p.contains('/') && !p.contains(['[', '(', '^', '$', '\\', '+']));
                if !names.is_empty() {
                    t.set("watch_ignore", toml_strings(&names), "ignore_watch");
                }
                if !others.is_empty() {
                    t.skip(key, &format!("{others:?}: clusterd ignores by name pattern (`*`, `?`), not by path or regular expression"));
                }
            }
            "watch_delay" => match millis(value) {
                Some(ms) => t.set("watch_delay", toml_string(&format!("{ms}ms")), "watch_delay"),
                None => t.skip(key, "not milliseconds"),
            },
            "watch_options" => t.skip(key, "chokidar's options have no counterpart: clusterd uses inotify"),
            "instance_var" => t.skip(key, "each instance gets CLUSTERD_INSTANCE (and NODE_APP_INSTANCE in node_cluster units)"),
            "increment_var" => t.skip(key, "not supported: derive it from CLUSTERD_INSTANCE"),
            "pid_file" => t.skip(key, "clusterctl status --json has every pid"),
            "source_map_support" => t.skip(key, "add --enable-source-maps to the node arguments"),
            "namespace" | "vizion" | "post_update" | "autostart" | "force" | "time" | "treekill" | "filter_env" | "append_env_to_name" | "disable_trace" | "trace" | "pmx" | "automation" | "deep_monitoring" => {
                t.skip(key, "a PM2 feature with no counterpart in a unit")
            }
            _ => t.skip(key, "not a PM2 key clusterctl import knows"),
        }
    }
    if !app.contains_key("cwd") {
        t.set(
            "working_directory",
            toml_string(&base.display().to_string()),
            "(no cwd: the ecosystem file's directory, where PM2 starts it)",
        );
    }
    if cluster {
        t.set("node_cluster", "true".into(), "exec_mode: cluster");
    }
    // Readiness: wait_ready waits for process.send('ready'); listen_timeout bounds it.
    if wait_ready {
        t.set("ready", toml_string("notify"), "wait_ready");
        if let Some(ms) = listen_timeout {
            t.set(
                "ready_timeout",
                toml_string(&format!("{ms}ms")),
                "listen_timeout",
            );
        }
    } else if let Some(ms) = listen_timeout {
        if cluster {
            t.set(
                "listen_timeout",
                toml_string(&format!("{ms}ms")),
                "listen_timeout",
            );
        } else {
            t.skip(
                "listen_timeout",
                "applies to cluster mode or wait_ready only",
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
        toml_string(&format!("{}ms", kill_timeout.unwrap_or(1600))),
        if kill_timeout.is_some() {
            "kill_timeout"
        } else {
            "PM2's default kill_timeout"
        },
    );
    if !env_lines.is_empty() {
        t.tables
            .push(format!("[environment]\n{}", table_lines(&env_lines)));
    }
    for (env_name, table) in env_tables {
        t.tables.push(format!(
            "# clusterd --environment {env_name}\n[environments.{}]\n{}",
            toml_key(&env_name),
            table_lines(&table)
        ));
    }

    let mut text = format!("# {name}: imported from {source} by clusterctl import.\n");
    if !t.not_mapped.is_empty() {
        text.push_str("#\n# Not carried over:\n");
        for line in &t.not_mapped {
            text.push_str(&format!("#   {line}\n"));
        }
    }
    text.push('\n');
    for line in &t.lines {
        text.push_str(line);
        text.push('\n');
    }
    for table in &t.tables {
        text.push('\n');
        text.push_str(table);
        text.push('\n');
    }
    Ok(ImportedUnit {
        name,
        text,
        not_mapped: t.not_mapped,
    })
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
    use serde_json::json;

    fn unit_of(app: Value) -> ImportedUnit {
        let units = import(
            &json!({ "apps": [app] }),
            "ecosystem.config.js",
            None,
            Path::new("/srv"),
        )
        .expect("imports");
        units.into_iter().next().expect("one unit")
    }

    fn parses(unit: &ImportedUnit) -> crate::unit::Unit {
        let path = std::path::PathBuf::from(format!("/etc/clusterd/{}.toml", unit.name));
        crate::unit::Unit::parse(&path, &unit.text).unwrap_or_else(|e| panic!("{e}\n{}", unit.text))
    }

    #[test]
    fn a_cluster_mode_node_app_becomes_a_node_cluster_unit_with_pm2s_stop() {
        let unit = unit_of(json!({
            "name": "api", "script": "server.js", "cwd": "/srv/api", "instances": "max",
            "exec_mode": "cluster", "node_args": "--max-old-space-size=512",
            "env": {"NODE_ENV": "development", "PORT": 3000},
            "env_production": {"NODE_ENV": "production"},
            "max_memory_restart": "300M", "wait_ready": true, "listen_timeout": 10000,
            "exp_backoff_restart_delay": 100, "watch": ["src"], "ignore_watch": ["node_modules", "^logs/"],
            "watch_options": {}, "log_date_format": "YYYY"
        }));
        assert_eq!(unit.name, "api");
        let parsed = parses(&unit);
        assert_eq!(
            parsed.command,
            ["node", "--max-old-space-size=512", "server.js"]
        );
        assert!(parsed.node_cluster.is_some());
        assert_eq!(parsed.instances, crate::unit::cpu_count());
        assert_eq!(parsed.memory_max, Some(300 << 20));
        assert_eq!(parsed.ready, crate::unit::ReadyMode::Notify);
        assert_eq!(parsed.ready_timeout, std::time::Duration::from_secs(10));
        assert_eq!(parsed.kill_signal, nix::sys::signal::Signal::SIGINT);
        assert_eq!(parsed.kill_timeout, std::time::Duration::from_millis(1600));
        assert_eq!(parsed.environment["PORT"], "3000");
        assert_eq!(parsed.environments["production"]["NODE_ENV"], "production");
        assert_eq!(parsed.watch, [std::path::PathBuf::from("/srv/api/src")]);
        assert_eq!(parsed.watch_ignore, ["node_modules"]);
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.starts_with("ignore_watch:") && l.contains("^logs/")));
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.starts_with("watch_options:")));
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.starts_with("log_date_format:")));
        assert!(unit.text.contains("# pm2: max_memory_restart"));
    }

    #[test]
    fn the_chosen_environment_is_merged_and_other_programs_get_their_interpreter() {
        let units = import(
            &json!([
                {"name": "worker", "script": "worker.py", "env": {"A": "1"}, "env_production": {"A": "2"}},
                {"name": "bin", "script": "./server --port 80", "autorestart": false, "kill_timeout": 5000},
            ]),
            "ecosystem.json",
            Some("production"),
            Path::new("/srv"),
        )
        .expect("imports");
        let worker = parses(&units[0]);
        assert_eq!(worker.command, ["python3", "worker.py"]);
        assert_eq!(worker.environment["A"], "2");
        let bin = parses(&units[1]);
        assert_eq!(bin.command, ["./server", "--port", "80"]);
        assert_eq!(bin.restart, crate::unit::RestartPolicy::Never);
        assert_eq!(bin.kill_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn what_cannot_be_carried_over_is_said_and_mistakes_are_errors() {
        let unit = unit_of(
            json!({"script": "app.rb", "exec_mode": "cluster", "cron_restart": "*/30 * * * * *"}),
        );
        assert_eq!(unit.name, "app");
        assert!(unit.not_mapped.iter().any(|l| l.contains("for Node apps")));
        assert!(unit.not_mapped.iter().any(|l| l.contains("to the minute")));
        parses(&unit);
        assert!(import(
            &json!({"apps": [{"name": "x"}]}),
            "e.json",
            None,
            Path::new("/")
        )
        .is_err());
        let twins = import(
            &json!({"apps": [{"name": "a", "script": "a.js"}, {"name": "a", "script": "b.js"}]}),
            "e.json",
            None,
            Path::new("/"),
        )
        .expect("imports");
        assert_eq!(twins[1].name, "a-2");
        assert!(import(
            &json!({"static": [{"path": "."}]}),
            "e.json",
            None,
            Path::new("/")
        )
        .is_err());
    }
}
