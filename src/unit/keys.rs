//! The one table of unit-file keys: each key's name, the value it takes, its default, what it
//! means, and the check of a value on its own. `clusterd --check` checks every key of a file
//! with it, the error for an unknown key lists it, and the key table of docs/unit-files.md is
//! rendered from it ([`markdown_table`]; a test keeps the two equal). Tests also keep serde's
//! [`super::UnitFile`] accepting exactly these keys, and every default shown here equal to
//! the one the parser applies (the section modules own the values).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::health::HealthTable;
use super::unit_file::{ListenOptionsTable, LogTable, RestartBackoffTable, RestartLimitTable};
use super::values::{
    Balance, ByteSize, CommandLine, EnvValue, HumanDuration, InstanceCount, ListenAddress,
    NodeClusterSetting, NodeClusterStop, PathList, ReadyMode, RestartPolicy, SignalName,
    WatchSetting,
};

/// One key of a unit file.
pub struct Key {
    pub name: &'static str,
    /// The value it takes, for people (Markdown).
    pub value: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    /// Checks a value of this key on its own (cross-key checks are `Unit::parse`'s).
    pub(crate) check: fn(&Spanned<DeValue<'_>>) -> Result<(), toml::de::Error>,
}

/// Every key a unit file may have, in the order the docs list them.
pub const KEYS: &[Key] = &[
    Key {
        name: "command",
        value: "string or array of strings",
        default: "**required**",
        meaning: "the program and its arguments",
        check: check::<CommandLine>,
    },
    Key {
        name: "description",
        value: "string",
        default: "none",
        meaning: "one line shown by `clusterctl status`",
        check: check::<String>,
    },
    Key {
        name: "instances",
        value: "integer, 0–4096, `\"max\"` or a negative integer",
        default: "`1`",
        meaning: "copies to run; `0` or `\"max\"` means one per CPU, `-1` one fewer than the CPUs (at least one), as PM2's `instances`",
        check: check::<InstanceCount>,
    },
    Key {
        name: "restart",
        value: "`\"always\"`, `\"on-failure\"`, `\"never\"`",
        default: "`\"always\"`",
        meaning: "when an instance that exited on its own is started again (a one-shot: `\"never\"` by default, `\"always\"` refused)",
        check: check::<RestartPolicy>,
    },
    Key {
        name: "restart_limit",
        value: "table `{ burst = N, interval = \"D\", min_uptime = \"D\" }`",
        default: "`{ burst = 10, interval = \"60s\" }`",
        meaning: "at most `burst` automatic restarts in any sliding `interval`, or the unit gives up; with `min_uptime`, a restart after a run at least that long is not counted (PM2's `min_uptime` with `max_restarts`)",
        check: check::<RestartLimitTable>,
    },
    Key {
        name: "restart_delay",
        value: "duration",
        default: "`\"0s\"`",
        meaning: "wait this long before restarting an instance that exited (PM2's `restart_delay`)",
        check: check::<HumanDuration>,
    },
    Key {
        name: "restart_backoff",
        value: "table `{ initial, max, reset_after }`",
        default: "off; `{ initial = \"100ms\", max = \"15s\", reset_after = \"30s\" }` once set",
        meaning: "wait before each restart, from `initial`, 1.5 times longer after each crash in a row, at most `max`; an instance that ran `reset_after` starts from `initial` again (PM2's `exp_backoff_restart_delay`)",
        check: check::<RestartBackoffTable>,
    },
    Key {
        name: "restart_prevent_exit_codes",
        value: "array of exit codes (0–255)",
        default: "none",
        meaning: "services: an instance that exits with one of these codes is not restarted, whatever `restart` says, and the exit is no crash (systemd's `RestartPreventExitStatus=`, PM2's `stop_exit_codes`); `clusterctl start` or a reload starts it again",
        check: check::<Vec<i32>>,
    },
    Key {
        name: "kill_signal",
        value: "signal name",
        default: "`\"SIGTERM\"`",
        meaning: "sent to every process of the instance to stop it",
        check: check::<SignalName>,
    },
    Key {
        name: "kill_timeout",
        value: "duration",
        default: "`\"5s\"`",
        meaning: "time between `kill_signal` and SIGKILL",
        check: check::<HumanDuration>,
    },
    Key {
        name: "on_giveup",
        value: "string or array of strings",
        default: "none",
        meaning: "command run once when the unit gives up (the alarm)",
        check: check::<CommandLine>,
    },
    Key {
        name: "working_directory",
        value: "path",
        default: "clusterd's",
        meaning: "directory the instances (and `on_giveup`) run in",
        check: check::<PathBuf>,
    },
    Key {
        name: "environment",
        value: "table of strings, numbers or booleans",
        default: "none",
        meaning: "variables added to the instances' environment; `PORT = 3000` is `\"3000\"`, `DEBUG = true` is `\"true\"`",
        check: check::<BTreeMap<String, EnvValue>>,
    },
    Key {
        name: "environment_file",
        value: "path or array of paths",
        default: "none",
        meaning: "files of `KEY=VALUE` lines read at every start (systemd's `EnvironmentFile=`): secrets stay out of the unit file; a path starting with `-` may be missing; a variable from a file wins over `environment`",
        check: check::<PathList>,
    },
    Key {
        name: "environments",
        value: "tables of variables, by name (`[environments.production]`)",
        default: "none",
        meaning: "variables for one environment, added over `environment` when clusterd runs with `--environment NAME` (PM2's `env_production` with `--env production`)",
        check: check::<BTreeMap<String, BTreeMap<String, EnvValue>>>,
    },
    Key {
        name: "user",
        value: "user name or uid",
        default: "clusterd's",
        meaning: "account the instances run as",
        check: check::<String>,
    },
    Key {
        name: "group",
        value: "group name or gid",
        default: "`user`'s group",
        meaning: "primary group the instances run as",
        check: check::<String>,
    },
    Key {
        name: "listen",
        value: "array of addresses",
        default: "none",
        meaning: "sockets clusterd binds and passes to every instance",
        check: check::<Vec<ListenAddress>>,
    },
    Key {
        name: "balance",
        value: "`\"shared\"`, `\"reuseport\"`",
        default: "`\"shared\"`",
        meaning: "how connections on `listen` sockets are spread",
        check: check::<Balance>,
    },
    Key {
        name: "listen_options",
        value: "table `{ nodelay, backlog, keepalive, send_buffer, receive_buffer, defer_accept }`",
        default: "`{ nodelay = true, backlog = 4096, keepalive = false }`, buffers the kernel's, `defer_accept` off",
        meaning: "how the `listen` sockets are set up, as systemd's socket units: `nodelay` (TCP_NODELAY, inherited by accepted connections: without it a server that writes a response in pieces waits ~40 ms per keep-alive request), `backlog` (connections that wait while no instance accepts), `keepalive` (SO_KEEPALIVE), `send_buffer`/`receive_buffer` (sizes), `defer_accept` (a duration: wake an instance only once a connection has data); the TCP options apply to `tcp://` addresses ([cluster-mode.md](cluster-mode.md#socket-options))",
        check: check::<ListenOptionsTable>,
    },
    Key {
        name: "ready",
        value: "`\"started\"`, `\"notify\"`, `\"listening\"`",
        default: "`\"started\"`",
        meaning: "when a new instance counts as ready",
        check: check::<ReadyMode>,
    },
    Key {
        name: "ready_timeout",
        value: "duration",
        default: "`\"30s\"`",
        meaning: "how long to wait for a `notify` instance to be ready",
        check: check::<HumanDuration>,
    },
    Key {
        name: "listen_timeout",
        value: "duration",
        default: "`\"3s\"`",
        meaning: "with `ready = \"listening\"`: a Node worker that has not listened by then counts as ready anyway (PM2's `listen_timeout`), for apps that never listen",
        check: check::<HumanDuration>,
    },
    Key {
        name: "ready_after",
        value: "duration",
        default: "`\"0s\"`",
        meaning: "an instance is ready only once it has run this long (and, with `notify`, said so): for servers that never say when they serve, so that a rolling reload waits for each new instance (supervisord's `startsecs`, Kubernetes' `minReadySeconds`)",
        check: check::<HumanDuration>,
    },
    Key {
        name: "node_cluster",
        value: "`true`, `false`, `\"round-robin\"`, `\"shared\"`",
        default: "`false`",
        meaning: "clusterd is the Node cluster primary of the instances: an unmodified `server.listen(3000)` shares the port ([node-cluster.md](node-cluster.md)); `ready` then defaults to `\"listening\"`",
        check: check::<NodeClusterSetting>,
    },
    Key {
        name: "node_cluster_stop",
        value: "`\"disconnect\"`, `\"signal\"`",
        default: "`\"disconnect\"`",
        meaning: "with `node_cluster`: stop a worker with Node's `disconnect`, or with `kill_signal` for an app that has its own shutdown handler ([node-cluster.md](node-cluster.md#stopping))",
        check: check::<NodeClusterStop>,
    },
    Key {
        name: "stop_message",
        value: "string",
        default: "none",
        meaning: "to stop an instance, send it this message on its worker channel first (PM2's `shutdown_with_message`: `\"shutdown\"` reaches a Node app's `process.on('message')`); `kill_signal` follows after half of `kill_timeout`, SIGKILL after `kill_timeout`",
        check: check::<String>,
    },
    Key {
        name: "instance_variable",
        value: "variable name",
        default: "none",
        meaning: "a variable that each instance also gets its index in, besides `CLUSTERD_INSTANCE` (PM2's `instance_var`)",
        check: check::<String>,
    },
    Key {
        name: "increment_variable",
        value: "variable name",
        default: "none",
        meaning: "a variable of the unit's environment (a number; 0 if unset) that each instance gets plus its index: `PORT = 3000` is 3000, 3001, ... (PM2's `increment_var`)",
        check: check::<String>,
    },
    Key {
        name: "log",
        value: "table `{ to, timestamps, max_size, keep, file, stdout, stderr, split, per_instance, timestamp_format }` (or a `[log]` section)",
        default: "`{ to = \"file\", timestamps = true, max_size = \"50MiB\", keep = 10, split = false, per_instance = false }`",
        meaning: "where the instances' output goes: `\"file\"` (`<log dir>/<unit>.log`, rotated at `max_size` — `\"0\"` never — keeping `keep` old files), `\"console\"` (clusterd's stdout, each line after its instance's name, `web[3]`; no timestamps by default), `\"journal\"` (journald, as systemd services), `\"inherit\"` (clusterd's stdout and stderr, untouched); `to` defaults to `clusterd --log-default`. Files: `file` (the unit's file: an absolute path, in a directory only root or clusterd's user may write, or a name in the log directory), `stdout`/`stderr` (a stream's own file; `\"/dev/null\"` keeps nothing), `split` (`web.out.log` and `web.err.log`), `per_instance` (`web-0.log`, `web-1.log`…); each file rotates on its own. `timestamp_format`: local time, strftime's `%Y %m %d %H %M %S %L %z %Z`… (default RFC 3339 UTC with microseconds) ([logs.md](logs.md#file-layout))",
        check: check::<LogTable>,
    },
    Key {
        name: "memory_max",
        value: "size: `\"512MiB\"`, `\"1GiB\"`, bytes",
        default: "none",
        meaning: "an instance whose memory (all of its processes) goes above this is replaced gracefully: its replacement starts and becomes ready, then it gets `kill_signal`, as after a suicide; counts against `restart_limit` ([monitoring.md](monitoring.md#memory-limit))",
        check: check::<ByteSize>,
    },
    Key {
        name: "memory_check_interval",
        value: "duration",
        default: "`\"1s\"`",
        meaning: "how often `memory_max` is checked (a timer that exists only for units with a limit)",
        check: check::<HumanDuration>,
    },
    Key {
        name: "cron_restart",
        value: "cron schedule: `\"0 3 * * *\"`",
        default: "none",
        meaning: "reload the unit's instances one by one at these times, local time (PM2's `cron_restart`, but rolling: the old instance serves until its replacement is ready)",
        check: check::<super::cron::CronSchedule>,
    },
    Key {
        name: "watch",
        value: "`true` or array of paths",
        default: "`false`",
        meaning: "reload the unit's instances one by one when files change under these paths (`true`: its working directory), relative to `working_directory` (PM2's `watch`, but rolling: the old instances serve on if the new code does not come up)",
        check: check::<WatchSetting>,
    },
    Key {
        name: "watch_ignore",
        value: "array of name or path patterns (`*`, `?`)",
        default: "`[\".*\", \"node_modules\"]`",
        meaning: "files and directories whose name matches a pattern without `/` (at every depth), or whose path matches a pattern with `/` (relative to `working_directory` unless absolute; a component of two stars: any number of directories), are not watched, nor anything below them (PM2's `ignore_watch`)",
        check: check::<Vec<String>>,
    },
    Key {
        name: "watch_delay",
        value: "duration",
        default: "`\"1s\"`",
        meaning: "reload once the files have been quiet this long (PM2's `watch_delay`): a deploy that writes many files makes one reload",
        check: check::<HumanDuration>,
    },
    Key {
        name: "type",
        value: "`\"service\"`, `\"oneshot\"`",
        default: "`\"service\"`",
        meaning: "`\"oneshot\"`: the instances run to completion; exit 0 (or a code of `success_exit_codes`) makes the unit `done`, a failure is restarted as `restart` says (default `\"never\"` for a one-shot; `\"always\"` is refused) or makes it `failed`; `clusterctl start` runs it again ([jobs.md](jobs.md)). A one-shot takes no `listen`, `ready`, `ready_after`, `node_cluster`, `memory_max`, `cron_restart`, `watch`, `watchdog` or `health`",
        check: check::<super::job::UnitKind>,
    },
    Key {
        name: "after",
        value: "array of unit names",
        default: "none",
        meaning: "start only once each of these units is satisfied — a service when all its instances are ready, a one-shot when it is `done`; until then the unit is `waiting`, and status says for what. No more than ordering: stopping or restarting a dependency leaves this unit alone; at shutdown this unit stops first ([jobs.md](jobs.md#order)). At most 256 names; an unknown name or a cycle is an error",
        check: check::<Vec<String>>,
    },
    Key {
        name: "schedule",
        value: "cron schedule (`\"0 3 * * *\"`) or `\"every DURATION\"` (`\"every 10s\"`, at least 1s)",
        default: "none",
        meaning: "one-shots only: run at these times (cron: local time); a run still going when the next is due makes that one skipped and logged, never overlapped; `clusterctl start` runs it now without moving the schedule ([jobs.md](jobs.md#schedules))",
        check: check::<super::job::Schedule>,
    },
    Key {
        name: "success_exit_codes",
        value: "array of exit codes (0–255)",
        default: "none (only 0)",
        meaning: "one-shots only: exit codes that count as success besides 0 (systemd's `SuccessExitStatus=`)",
        check: check::<Vec<i32>>,
    },
    Key {
        name: "watchdog",
        value: "duration",
        default: "none",
        meaning: "once ready, an instance must say it is alive at least this often (`WATCHDOG=1` on `NOTIFY_SOCKET`, which gets `WATCHDOG_USEC` and `WATCHDOG_PID` as under systemd, or `{\"act\":\"watchdog\"}` on its channel); one that does not is replaced ([health.md](health.md))",
        check: check::<HumanDuration>,
    },
    Key {
        name: "health",
        value: "table `{ command or http, interval, timeout, failures, start_period }` (or a `[health]` section)",
        default: "none; `{ interval = \"10s\", timeout = \"5s\", failures = 3 }` once set",
        meaning: "a check clusterd runs for each instance: `command` (exit 0 is healthy; `CLUSTERD_UNIT`, `CLUSTERD_INSTANCE`, `MAINPID` in its environment) or `http` (a GET, 2xx is healthy; `{index}` and `{port}` are the instance's index and `PORT`); after `failures` failures in a row the instance is replaced; failures within `start_period` of its start do not count ([health.md](health.md))",
        check: check::<HealthTable>,
    },
];

/// The key named `name`.
pub(super) fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The key table of docs/unit-files.md (and, later, of the unit-file man page).
pub fn markdown_table() -> String {
    let mut table = String::from("| key | type | default | meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            key.name, key.value, key.default, key.meaning
        ));
    }
    table
}

fn check<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Result<(), toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone())).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_accepts_exactly_the_keys_of_the_table() {
        // serde's error for an unknown key lists every field of UnitFile, in order.
        let error = toml::from_str::<super::super::UnitFile>("command = \"true\"\nzzz = 1\n")
            .err()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        let listed = error
            .split_once("expected one of ")
            .map(|(_, list)| list.trim().to_string())
            .unwrap_or_default();
        let fields: Vec<&str> = listed.split(", ").map(|f| f.trim_matches('`')).collect();
        let keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(fields, keys, "{error}");
    }

    /// The default the table shows for a key is the one the parser applies: a file that
    /// sets a key to its documented default parses to the same unit as one without it.
    /// Every default written as a value (in backticks) is checked; the others are words
    /// ("none", "clusterd's") or listed here with why.
    #[test]
    fn the_documented_defaults_are_the_parsers() {
        use std::path::Path;

        use crate::unit::Unit;

        // Keys that apply only with another key, and that key.
        let needs = |name: &str| match name {
            "listen_options" => "listen = [\"tcp://127.0.0.1:3000\"]\n",
            "listen_timeout" | "node_cluster_stop" => "node_cluster = true\n",
            _ => "",
        };
        let parse = |text: &str| Unit::parse(Path::new("/etc/clusterd/web.toml"), text);
        let mut checked = 0;
        for key in KEYS {
            // `user`'s group is a name of a key, not a value.
            if key.name == "group" {
                continue;
            }
            // restart_backoff is off by default; the value shown is what `{}` gives.
            let (base, value) = match key.default.split('`').nth(1) {
                Some(value) if key.name == "restart_backoff" => {
                    ("restart_backoff = {}\n".to_string(), value)
                }
                Some(value) if key.default.starts_with('`') => (String::new(), value),
                _ => continue,
            };
            let without = format!("command = \"true\"\n{}{base}", needs(key.name));
            let with = format!(
                "command = \"true\"\n{}{} = {value}\n",
                needs(key.name),
                key.name
            );
            let (Ok(without), Ok(mut with)) = (parse(&without), parse(&with)) else {
                panic!(
                    "{}: {:?} or {:?} does not parse",
                    key.name,
                    parse(&without).map_err(|e| e.to_string()),
                    parse(&with).map_err(|e| e.to_string())
                );
            };
            if key.name == "log" {
                // `to` and `timestamps` are shown as what they are for a log file; unset,
                // they follow `clusterd --log-default` and the destination.
                assert_eq!(with.log.to, Some(crate::unit::LogTo::File));
                assert_eq!(with.log.timestamps, Some(true));
                with.log.to = None;
                with.log.timestamps = None;
            }
            assert_eq!(with, without, "{}: the table says {value}", key.name);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} defaults checked");
    }
}
