//! `clusterctl`'s arguments: its verbs and their flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client::top::SortBy;
use crate::protocol::signal::KillSignal;
use crate::protocol::{LogStream, ScaleCount};

/// Examples and exit codes, under headings of their own (the man page shows them as they are).
const AFTER_HELP: &str = "\
Examples:
  clusterctl status                  every unit and instance (also: clusterctl ls)
  clusterctl logs web -f             follow one unit's log; `clusterctl logs` follows all
  clusterctl reload web              replace web's instances one by one, no downtime
  clusterctl daemon-reload           apply edited, new and removed unit files
  clusterctl scale web +2            two more instances
  clusterctl import ecosystem.config.js --out /etc/clusterd

Exit status:
  0  done
  1  the request failed (clusterd said why: unknown unit, gave up, a unit file that cannot
     be applied, ...), permission denied on the socket, or for `ready`, a unit is not ready
  2  a wrong argument (usage error)
  3  clusterd is not reachable (not running, or no socket at that path), or went away under
     `logs -f` or `top`";

#[derive(Parser)]
#[command(
    name = "clusterctl",
    version,
    about = "Control a running clusterd",
    long_about = "Control a running clusterd: start, stop, reload and scale its units, show their \
status and logs, over clusterd's control socket. Each verb answers when its work is done (or \
has failed), like systemctl. `clusterctl VERB --help` describes one verb.",
    after_long_help = AFTER_HELP
)]
pub struct ClusterctlArgs {
    /// Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Talk to the clusterd of another host through ssh, which runs `clusterctl dial-stdio`
    /// there (--socket then names the remote socket): ssh://[USER@]HOST[:PORT]. Repeat it or
    /// give a comma list for several hosts [env: CLUSTERD_HOST].
    #[arg(
        short = 'H',
        long = "host",
        global = true,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub hosts: Vec<String>,

    /// Read host URLs from this file, one a line (`#` starts a comment), as for --host.
    #[arg(long, global = true, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,

    /// With several hosts, ask them all at once; without it, `reload`, `restart`,
    /// `daemon-reload` (and every other verb that changes something) go host by host and stop
    /// at the first host that fails.
    #[arg(long, global = true)]
    pub parallel: bool,

    #[command(subcommand)]
    pub command: ClusterctlCommand,
}

#[derive(Subcommand)]
pub enum ClusterctlCommand {
    /// Show units and their instances: state, pids, CPU, memory, restarts, last exit.
    #[command(visible_alias = "ls")]
    Status {
        /// Only this unit.
        unit: Option<String>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Start a unit's instances (clears a give-up); returns once they are ready.
    Start {
        /// The unit (its file's name without .toml).
        unit: String,
    },
    /// Stop every instance of a unit gracefully; returns once they are gone. With several
    /// units, one after the other, dependents first (a unit after those that list it in
    /// `after`).
    Stop {
        /// One or more units.
        #[arg(required = true, value_name = "UNIT")]
        units: Vec<String>,
    },
    /// Stop, then start every instance (clears a give-up).
    Restart {
        /// The unit (its file's name without .toml).
        unit: String,
    },
    /// Replace every instance one by one without downtime, with the configuration clusterd
    /// has. Refuses when the unit's file changed on disk: `daemon-reload` applies files.
    Reload {
        /// The unit (its file's name without .toml).
        unit: String,
    },
    /// Change the number of instances: N, +N or -N.
    Scale {
        /// The unit (its file's name without .toml).
        unit: String,
        /// The new count (N), or how many to add (+N) or remove (-N).
        #[arg(allow_hyphen_values = true, value_name = "N|+N|-N")]
        count: ScaleCount,
    },
    /// Send a signal to a unit's running instances: each one's own process (gunicorn's
    /// `kill -HUP` reload), or with --all every process of each.
    Kill {
        /// The unit (its file's name without .toml).
        unit: String,
        /// A name with or without SIG (HUP, SIGHUP, RTMIN+1) or a number from 1 to 64 (15,
        /// 1, 10), as kill(1) takes them.
        #[arg(short, long, default_value = "SIGTERM")]
        signal: KillSignal,
        /// Only this instance (its index).
        #[arg(long, value_name = "INDEX")]
        instance: Option<u32>,
        /// Every process of each instance (its cgroup or process group), not only its own.
        #[arg(long)]
        all: bool,
    },
    /// Send a message on the worker channel of a unit's running instances: one JSON value
    /// (text that is not JSON is sent as a JSON string). Node apps receive it with
    /// process.on('message').
    Send {
        /// The unit (its file's name without .toml).
        unit: String,
        /// One JSON value, e.g. '{"cmd":"refresh"}' or shutdown (sent as "shutdown").
        message: String,
        /// Only this instance (its index).
        #[arg(long, value_name = "INDEX")]
        instance: Option<u32>,
    },
    /// Re-read the units directory and apply it (same as SIGHUP to clusterd): new files start,
    /// edited ones are applied, removed ones stop. Fails, naming them, for files that cannot
    /// be applied and new units that cannot start.
    DaemonReload,
    /// Check the clusterd binary now on disk for an upgrade in place (root and clusterd's own
    /// user only). The check only, for now: the re-exec that would follow it is not built
    /// yet, so this exits 1 and clusterd keeps running as it was.
    DaemonReexec,
    /// Show the last lines of a unit's log, then (with --follow) every new one. Without a
    /// unit, every unit's that keeps a log file, interleaved by time, each line prefixed by
    /// its unit.
    Logs {
        /// The unit; every unit when left out.
        unit: Option<String>,
        /// How many lines of history (of each unit).
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Go on printing new lines as they are written, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Only this instance (its index).
        #[arg(long, value_name = "INDEX")]
        instance: Option<u32>,
        /// Only stdout (`out`) or stderr (`err`).
        #[arg(long, value_enum)]
        stream: Option<LogStream>,
        /// Print control characters as they are, even on a terminal.
        #[arg(long)]
        raw: bool,
    },
    /// Reopen every log file by name, after an external logrotate renamed them (same as
    /// SIGUSR1 to clusterd).
    ReopenLogs,
    /// Print every unit's and instance's metrics in the Prometheus text format (for
    /// node_exporter's textfile collector).
    Metrics,
    /// A live view of every instance's CPU, memory, restarts, uptime and state, refreshed
    /// every interval, until q or Ctrl-C. Prints one frame when stdout is not a terminal.
    Top {
        /// Only this unit.
        unit: Option<String>,
        /// Time between frames.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Busiest first by CPU or by memory.
        #[arg(long, value_enum, default_value = "cpu")]
        sort: SortBy,
    },
    /// Exit 0 only if every named unit (default: every unit) runs all its wanted instances
    /// and each is ready, and clusterd is not stopping: for readiness probes.
    Ready {
        /// The units to check (default: every unit).
        units: Vec<String>,
    },
    /// Turn a PM2 ecosystem file (JavaScript, JSON or YAML) into unit files, one per app,
    /// saying what could not be carried over. Does not need clusterd running.
    ///
    /// Which files are executed: a .js, .cjs or .mjs file is JavaScript: it is RUN by node, as
    /// the user running clusterctl and with its environment, as PM2 does (at most 20 s and 16
    /// MiB of output). As root that needs --allow-exec. Every other file (.json, .json5, .yml,
    /// .yaml, any other name) is data: read as JSON5, or as YAML for .yml and .yaml, never
    /// run.
    Import {
        /// The ecosystem file (at most 16 MiB): ecosystem.config.js, process.json, pm2.yml...
        file: PathBuf,
        /// Merge each app's env_<NAME> into its environment (pm2 start --env NAME); without
        /// it, each env_<NAME> becomes an [environments.NAME] table.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        /// Write the units into this directory (else print them).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Overwrite unit files that exist (never through a symlink: a symlink is replaced).
        #[arg(long)]
        force: bool,
        /// Run a JavaScript ecosystem file with node even as root (it runs as root then:
        /// read it first). Not needed for data files, nor for users other than root.
        #[arg(long)]
        allow_exec: bool,
    },
    /// Copy stdin to the control socket and the socket to stdout, until either side closes:
    /// what `clusterctl -H ssh://HOST` runs on HOST through ssh (and what a key restricted with
    /// `command="clusterctl dial-stdio"` in authorized_keys may run).
    DialStdio,
    /// Print the completion script for a shell, e.g. `clusterctl completions bash >
    /// /etc/bash_completion.d/clusterctl`, or `source <(clusterctl completions bash)` in
    /// ~/.bashrc (no bash-completion package needed). Unit names are completed too, asked of
    /// the running clusterd.
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The names of clusterd's units, one a line, for the completion scripts (nothing when
    /// clusterd does not answer within a second).
    #[command(name = "__complete-units", hide = true)]
    CompleteUnits,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    <ClusterctlArgs as clap::CommandFactory>::command()
}
