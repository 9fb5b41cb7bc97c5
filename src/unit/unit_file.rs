//! `UnitFile`: a unit file exactly as the user wrote it, deserialized by serde. Every key is
//! optional here except `command`; defaults and cross-checks are applied by [`super::Unit`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::values::{
    Balance, ByteSize, CommandLine, EnvValue, HumanDuration, InstanceCount, ListenAddress, LogTo,
    NodeClusterSetting, NodeClusterStop, PathList, ReadyMode, RestartPolicy, SignalName,
    WatchSetting,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFile {
    pub command: CommandLine,
    pub description: Option<String>,
    pub instances: Option<Spanned<InstanceCount>>,
    pub restart: Option<RestartPolicy>,
    pub restart_limit: Option<RestartLimitTable>,
    pub restart_delay: Option<Spanned<HumanDuration>>,
    pub restart_backoff: Option<Spanned<RestartBackoffTable>>,
    pub restart_prevent_exit_codes: Option<Spanned<Vec<i32>>>,
    pub kill_signal: Option<SignalName>,
    pub kill_timeout: Option<HumanDuration>,
    pub on_giveup: Option<CommandLine>,
    pub working_directory: Option<Spanned<PathBuf>>,
    pub environment: Option<Variables>,
    pub environment_file: Option<Spanned<PathList>>,
    pub environments: Option<BTreeMap<Spanned<String>, Variables>>,
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub listen: Option<Vec<Spanned<ListenAddress>>>,
    pub balance: Option<Balance>,
    pub listen_options: Option<Spanned<ListenOptionsTable>>,
    pub ready: Option<ReadyMode>,
    pub ready_timeout: Option<HumanDuration>,
    pub listen_timeout: Option<Spanned<HumanDuration>>,
    pub ready_after: Option<Spanned<HumanDuration>>,
    pub node_cluster: Option<NodeClusterSetting>,
    pub node_cluster_stop: Option<Spanned<NodeClusterStop>>,
    pub stop_message: Option<String>,
    pub instance_variable: Option<Spanned<String>>,
    pub increment_variable: Option<Spanned<String>>,
    pub log: Option<LogTable>,
    pub memory_max: Option<Spanned<ByteSize>>,
    pub memory_check_interval: Option<Spanned<HumanDuration>>,
    pub cron_restart: Option<super::cron::CronSchedule>,
    pub watch: Option<Spanned<WatchSetting>>,
    pub watch_ignore: Option<Vec<String>>,
    pub watch_delay: Option<HumanDuration>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<super::job::UnitKind>>,
    pub after: Option<Spanned<Vec<Spanned<String>>>>,
    pub schedule: Option<Spanned<super::job::Schedule>>,
    pub success_exit_codes: Option<Spanned<Vec<i32>>>,
    pub watchdog: Option<Spanned<HumanDuration>>,
    pub health: Option<Spanned<super::health::HealthTable>>,
}

/// A table of environment variables, each name with its place in the file.
pub(crate) type Variables = BTreeMap<Spanned<String>, EnvValue>;

/// `restart_limit = { burst = 10, interval = "60s" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartLimitTable {
    pub burst: Option<u32>,
    pub interval: Option<Spanned<HumanDuration>>,
    pub min_uptime: Option<HumanDuration>,
}

/// `listen_options = { nodelay = true, backlog = 4096 }`: how the `listen` sockets are set up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenOptionsTable {
    pub nodelay: Option<bool>,
    pub backlog: Option<Spanned<u32>>,
    pub keepalive: Option<bool>,
    pub send_buffer: Option<Spanned<ByteSize>>,
    pub receive_buffer: Option<Spanned<ByteSize>>,
    pub defer_accept: Option<Spanned<HumanDuration>>,
}

/// `restart_backoff = { initial = "100ms", max = "15s", reset_after = "30s" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartBackoffTable {
    pub initial: Option<Spanned<HumanDuration>>,
    pub max: Option<HumanDuration>,
    pub reset_after: Option<HumanDuration>,
}

/// `[log]`: where the instances' output goes and how it is kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogTable {
    pub to: Option<LogTo>,
    pub timestamps: Option<bool>,
    pub max_size: Option<ByteSize>,
    pub keep: Option<Spanned<u32>>,
    pub file: Option<Spanned<String>>,
    pub stdout: Option<Spanned<String>>,
    pub stderr: Option<Spanned<String>>,
    pub split: Option<bool>,
    pub per_instance: Option<bool>,
    pub timestamp_format: Option<Spanned<String>>,
}
