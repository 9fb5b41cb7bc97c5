//! The typed values a unit file is made of: commands, durations, signals, policies and
//! listen addresses. Each parses itself during deserialization, so a bad value is reported by
//! `toml` with the position of that value in the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A program and its arguments. In the file it is either one string, split the way a shell
/// would split it (quotes and backslashes, but no `$VAR` expansion), or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(pub Vec<String>);

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a command line such as "python3 app.py" or an array such as ["python3", "app.py"]"#)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<CommandLine, E> {
                let words = shell_words::split(value)
                    .map_err(|_| E::custom("unterminated quote in command line"))?;
                CommandLine::from_words(words).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    words.push(word);
                }
                CommandLine::from_words(words).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

impl CommandLine {
    fn from_words(words: Vec<String>) -> Result<Self, &'static str> {
        match words.first() {
            None => Err("the command is empty"),
            Some(program) if program.is_empty() => Err("the program name is empty"),
            Some(_) if words.iter().any(|w| w.contains('\0')) => {
                Err("the command contains a NUL byte")
            }
            Some(_) => Ok(CommandLine(words)),
        }
    }
}

/// The longest duration a unit file may give. Every duration becomes a deadline (`now +
/// duration`), and a deadline past what the clock can represent would be an overflow: bounding
/// it here makes `--check` and the daemon reject the same files, with the position.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration written the humantime way: `"500ms"`, `"5s"`, `"1m 30s"`; at most
/// [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl<'de> Visitor<'de> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a duration string such as "500ms", "5s" or "1m 30s""#)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
                let duration = humantime::parse_duration(value)
                    .map_err(|e| E::custom(format!("invalid duration {value:?}: {e}")))?;
                if duration > MAX_DURATION {
                    return Err(E::custom(format!(
                        "duration {value:?} is too long (at most \"{}days\", 10 years)",
                        MAX_DURATION.as_secs() / 86_400
                    )));
                }
                Ok(HumanDuration(duration))
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Where an instance's output goes (`[log] to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum LogTo {
    /// `<log dir>/<unit>.log`, with timestamps, rotation and `clusterctl logs`.
    File,
    /// clusterd's own stdout/stderr, each line prefixed with its instance.
    Console,
    /// journald: each line an entry, sent by clusterd (src/daemon/logs/journal.rs).
    Journal,
    /// clusterd's own stdout/stderr, unchanged (no capture).
    Inherit,
}

impl LogTo {
    pub fn name(self) -> &'static str {
        match self {
            LogTo::File => "file",
            LogTo::Console => "console",
            LogTo::Journal => "journal",
            LogTo::Inherit => "inherit",
        }
    }
}

impl FromStr for LogTo {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "file" => Ok(LogTo::File),
            "console" => Ok(LogTo::Console),
            "journal" => Ok(LogTo::Journal),
            "inherit" => Ok(LogTo::Inherit),
            other => Err(format!(
                "unknown log destination {other:?}: use file, console, journal or inherit"
            )),
        }
    }
}

/// The largest size a unit file may give: more is certainly a typo.
const MAX_BYTE_SIZE: u64 = 1 << 50;

/// A size in bytes: an integer, or a string with a unit: `"50MiB"`, `"512KiB"`, `"1GiB"`,
/// `"10MB"`, `"4096"`. `"0"` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)"
                ))
            }
        };
        let number: u64 = digits.parse().map_err(|_| {
            format!("invalid size {text:?}: write a whole number and a unit, such as \"50MiB\"")
        })?;
        number
            .checked_mul(multiplier)
            .filter(|&bytes| bytes <= MAX_BYTE_SIZE)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large (at most 1 PiB)"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl<'de> Visitor<'de> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a size such as "50MiB", "512KiB" or a number of bytes"#)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom("a size cannot be negative"))
                    .and_then(|v| v.to_string().parse().map_err(E::custom))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A signal given by name: `"SIGTERM"`, `"TERM"` or `"term"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalName(pub Signal);

impl FromStr for SignalName {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let upper = value.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full)
            .map(SignalName)
            .map_err(|_| format!("unknown signal {value:?} (expected a name such as \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\")"))
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

/// When an instance that exited on its own is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    #[default]
    Always,
    /// Unless it exited with code 0 or was ended by SIGHUP, SIGINT, SIGTERM or SIGPIPE
    /// (systemd's definition of a clean exit).
    OnFailure,
    /// Never: an instance that exits stays stopped.
    Never,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

/// How the connections of a `listen` address are spread over the instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// One socket and one accept queue shared by all instances.
    #[default]
    Shared,
    /// One SO_REUSEPORT socket per instance index; the kernel hashes connections over them.
    Reuseport,
}

/// When a freshly started instance counts as ready to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyMode {
    /// As soon as its program has been executed.
    #[default]
    Started,
    /// When it says so: `{"act":"ready"}` on the worker channel or `READY=1` to NOTIFY_SOCKET.
    /// In a `node_cluster` unit that is PM2's `wait_ready`: listening is not enough.
    Notify,
    /// `node_cluster` units: when the app listens (or says it is ready), or, for an app that
    /// does not listen within `listen_timeout`, then, as PM2 counts it online.
    Listening,
}

/// How a `node_cluster` unit's connections reach its Node workers (Node's
/// `cluster.schedulingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeScheduling {
    /// clusterd accepts each connection and hands it to the worker that has waited longest
    /// (Node's `SCHED_RR`, its default on Linux).
    #[default]
    RoundRobin,
    /// clusterd sends the listening socket itself to every worker; the kernel spreads the
    /// connections (Node's `SCHED_NONE`).
    Shared,
}

impl fmt::Display for NodeScheduling {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            NodeScheduling::RoundRobin => "round-robin",
            NodeScheduling::Shared => "shared",
        })
    }
}

/// `node_cluster = true | false | "round-robin" | "shared"`: `true` is `"round-robin"`,
/// `false` turns the mode off. `None` inside means off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeClusterSetting(pub Option<NodeScheduling>);

impl<'de> Deserialize<'de> for NodeClusterSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingVisitor;
        impl<'de> Visitor<'de> for SettingVisitor {
            type Value = NodeClusterSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"true, false, "round-robin" or "shared""#)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<NodeClusterSetting, E> {
                Ok(NodeClusterSetting(
                    value.then_some(NodeScheduling::RoundRobin),
                ))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<NodeClusterSetting, E> {
                match value {
                    "round-robin" => Ok(NodeClusterSetting(Some(NodeScheduling::RoundRobin))),
                    "shared" => Ok(NodeClusterSetting(Some(NodeScheduling::Shared))),
                    other => Err(E::custom(format!(
                        "invalid node_cluster {other:?} (expected true, false, \"round-robin\" or \"shared\")"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(SettingVisitor)
    }
}

/// `node_cluster_stop`: how a Node cluster worker is stopped gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NodeClusterStop {
    /// Node's own `disconnect`: the worker closes its servers, finishes the requests in
    /// progress and exits; `kill_signal` after half of `kill_timeout` if it is still there.
    /// Graceful for an app with no shutdown code of its own.
    #[default]
    Disconnect,
    /// clusterd stops handing it connections and sends `kill_signal`, for an app that shuts
    /// down gracefully on that signal itself (as PM2 expects). Node's `disconnect` would close
    /// idle keep-alive connections under the client's feet.
    Signal,
}

/// An address clusterd binds for a unit: `tcp://0.0.0.0:3000`, `tcp://[::1]:3000` or
/// `unix:/run/web.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenAddress {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix("tcp://") {
            rest.parse::<SocketAddr>().map(ListenAddress::Tcp).map_err(|_| {
                format!("invalid TCP address {value:?} (expected an IP address and a port, such as \"tcp://0.0.0.0:3000\" or \"tcp://[::1]:3000\")")
            })
        } else if let Some(rest) = value.strip_prefix("unix:") {
            if rest.is_empty() {
                return Err(format!(
                    "invalid unix socket address {value:?}: the path is empty"
                ));
            }
            Ok(ListenAddress::Unix(PathBuf::from(rest)))
        } else {
            Err(format!(
                "invalid listen address {value:?} (expected \"tcp://HOST:PORT\" or \"unix:/path\")"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// `instances`: a count, `0` or `"max"` for one per CPU, or `-N` for N fewer than the CPUs
/// (PM2's `instances: -1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceCount {
    Count(i64),
    Max,
}

impl<'de> Deserialize<'de> for InstanceCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = InstanceCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a number of instances, 0 or "max" for one per CPU, or -N for N fewer than the CPUs"#)
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<InstanceCount, E> {
                Ok(InstanceCount::Count(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<InstanceCount, E> {
                Ok(InstanceCount::Count(
                    i64::try_from(value).unwrap_or(i64::MAX),
                ))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<InstanceCount, E> {
                match value {
                    "max" => Ok(InstanceCount::Max),
                    _ => Err(E::custom(format!(
                        r#"instances = {value:?}: write a number, or "max" for one per CPU"#
                    ))),
                }
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// `watch = true` (the working directory) or `watch = ["src", "config"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSetting {
    Off,
    WorkingDirectory,
    Paths(Vec<String>),
}

impl<'de> Deserialize<'de> for WatchSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WatchVisitor;
        impl<'de> Visitor<'de> for WatchVisitor {
            type Value = WatchSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"true, false, or an array of paths such as ["src", "config"]"#)
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<WatchSetting, E> {
                Ok(if value {
                    WatchSetting::WorkingDirectory
                } else {
                    WatchSetting::Off
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WatchSetting, A::Error> {
                let mut paths = Vec::new();
                while let Some(path) = seq.next_element::<String>()? {
                    paths.push(path);
                }
                Ok(WatchSetting::Paths(paths))
            }
        }
        deserializer.deserialize_any(WatchVisitor)
    }
}

/// `environment_file`: one path or an array of paths, each optional when it starts with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathList(pub Vec<String>);

impl<'de> Deserialize<'de> for PathList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathsVisitor;
        impl<'de> Visitor<'de> for PathsVisitor {
            type Value = PathList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a path such as "/etc/default/web" or an array of paths"#)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<PathList, E> {
                Ok(PathList(vec![value.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathList, A::Error> {
                let mut paths = Vec::new();
                while let Some(path) = seq.next_element::<String>()? {
                    paths.push(path);
                }
                Ok(PathList(paths))
            }
        }
        deserializer.deserialize_any(PathsVisitor)
    }
}

/// The value of an `environment` variable: a string, or a number or boolean written as
/// TOML writes it (`PORT = 3000` is "3000", `DEBUG = true` is "true"), as PM2 users write
/// them. Arrays and tables have no single text: an error says so at the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvVisitor;
        impl<'de> Visitor<'de> for EnvVisitor {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a boolean (an environment variable's value)")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(value.to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(value.to_string()))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(value.to_string()))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(value.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<EnvValue, A::Error> {
                Err(de::Error::custom(
                    "an environment variable's value is one string, number or boolean, not an array (join the items into one string)",
                ))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<EnvValue, A::Error> {
                Err(de::Error::custom(
                    "an environment variable's value is one string, number or boolean, not a table",
                ))
            }
        }
        deserializer.deserialize_any(EnvVisitor)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sizes_take_binary_and_decimal_units_and_refuse_the_rest() {
        let size = |t: &str| t.parse::<ByteSize>().map(|s| s.0);
        assert_eq!(size("50MiB"), Ok(50 << 20));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("1 GiB"), Ok(1 << 30));
        assert_eq!(size("10MB"), Ok(10_000_000));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("0"), Ok(0));
        assert!(size("5 parsecs").is_err());
        assert!(size("-1MiB").is_err());
        assert!(size("MiB").is_err());
        assert!(size("99999999TiB").is_err());
    }

    use super::*;

    #[test]
    fn signal_names_accept_short_and_long_forms() {
        assert_eq!(
            "SIGTERM".parse::<SignalName>().map(|s| s.0),
            Ok(Signal::SIGTERM)
        );
        assert_eq!(
            "quit".parse::<SignalName>().map(|s| s.0),
            Ok(Signal::SIGQUIT)
        );
        assert!("SIGNOPE".parse::<SignalName>().is_err());
    }

    #[derive(Deserialize)]
    struct DurationOnly {
        d: HumanDuration,
    }

    #[test]
    fn durations_are_bounded_so_no_deadline_can_overflow() {
        let parse = |text: &str| toml::from_str::<DurationOnly>(text).map(|t| t.d.0);
        assert_eq!(parse("d = \"1m 30s\""), Ok(Duration::from_secs(90)));
        assert_eq!(parse("d = \"3650days\""), Ok(MAX_DURATION));
        let err = parse("d = \"18446744073709551615s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("too long"), "{err}");
        assert!(parse("d = \"3651days\"").is_err());
    }

    #[test]
    fn listen_addresses_parse_tcp_v4_v6_and_unix() {
        assert_eq!(
            "tcp://127.0.0.1:3000".parse::<ListenAddress>(),
            Ok(ListenAddress::Tcp("127.0.0.1:3000".parse().unwrap()))
        );
        assert!("tcp://[::1]:80".parse::<ListenAddress>().is_ok());
        assert_eq!(
            "unix:/run/web.sock".parse::<ListenAddress>(),
            Ok(ListenAddress::Unix("/run/web.sock".into()))
        );
        assert!("tcp://localhost:80".parse::<ListenAddress>().is_err());
        assert!("http://x".parse::<ListenAddress>().is_err());
    }

    #[derive(Deserialize)]
    struct NodeClusterOnly {
        node_cluster: NodeClusterSetting,
    }

    fn node_cluster(text: &str) -> Result<Option<NodeScheduling>, String> {
        toml::from_str::<NodeClusterOnly>(text)
            .map(|t| t.node_cluster.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn node_cluster_accepts_booleans_and_both_modes() {
        assert_eq!(
            node_cluster("node_cluster = true"),
            Ok(Some(NodeScheduling::RoundRobin))
        );
        assert_eq!(node_cluster("node_cluster = false"), Ok(None));
        assert_eq!(
            node_cluster("node_cluster = \"round-robin\""),
            Ok(Some(NodeScheduling::RoundRobin))
        );
        assert_eq!(
            node_cluster("node_cluster = \"shared\""),
            Ok(Some(NodeScheduling::Shared))
        );
        let err = node_cluster("node_cluster = \"rr\"").unwrap_err();
        assert!(err.contains("invalid node_cluster \"rr\""), "{err}");
        assert!(node_cluster("node_cluster = 1").is_err());
    }
}
