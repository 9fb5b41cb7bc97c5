//! `clusterd`'s flags. This module depends on the daemon (the values it parses into), never
//! the other way round.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::daemon::{Isolation, ListenAddress};
use crate::unit::LogTo;

/// Examples, exit codes and signals, under headings of their own (the man page makes each a
/// section).
const AFTER_HELP: &str = "\
Examples:
  clusterd --units /etc/clusterd
      run the units of /etc/clusterd (as the Debian package's clusterd.service does)
  clusterd --check --units /etc/clusterd
      check every unit file, start nothing
  clusterd --units units --socket /tmp/clusterd.sock
      run the README's example units as yourself, on a socket of their own

Exit status:
  0    SIGTERM or SIGINT stopped every instance, or --check found every file valid
  1    clusterd could not start, or --check found an invalid file
  2    a wrong flag
  69   a unit gave up and --exit-on-giveup is set
  137  in container mode, an instance had to be killed with SIGKILL

Signals:
  SIGTERM, SIGINT  stop every instance gracefully (a second one kills them at once)
  SIGHUP           re-read the units directory (clusterctl daemon-reload)
  SIGUSR1          reopen the log files (clusterctl reopen-logs)
  SIGUSR2          re-execute clusterd from its binary on disk, keeping every instance
                   (clusterctl daemon-reexec)
  In container mode SIGQUIT stops like SIGTERM, and the other signals that would end or
  suspend clusterd (SIGALRM, SIGTSTP, ...) are ignored, as they are for a PID 1.";

/// Keeps N copies of any program running: restarts with a limit, suicide replacement,
/// graceful stops, shared listening sockets, zero-downtime reloads.
#[derive(Parser)]
#[command(
    name = "clusterd",
    version,
    about,
    after_long_help = AFTER_HELP
)]
pub struct ClusterdArgs {
    /// Directory of unit files (*.toml); each file is one unit named after its stem.
    #[arg(long, value_name = "DIR")]
    pub units: PathBuf,

    /// Control socket path [default: $CLUSTERD_SOCKET, else /run/clusterd/clusterd.sock for
    /// root, $XDG_RUNTIME_DIR/clusterd.sock or /tmp/clusterd-$UID/clusterd.sock for others].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Let members of this group use the control socket too (mode 0660 instead of 0600).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// How instances are kept together: `cgroup` (each in a cgroup of its own; nothing it
    /// starts can escape a stop), `process-group`, or `auto` (cgroup where clusterd can create
    /// cgroups, else process-group).
    #[arg(long, value_enum, default_value_t = Isolation::Auto)]
    pub isolation: Isolation,

    /// Where `file` logs live [default: /var/log/clusterd for root, else
    /// $XDG_STATE_HOME/clusterd/log or ~/.local/state/clusterd/log; with a --socket other than
    /// the default, that path, `@`, and the socket's path escaped as systemd-escape --path
    /// does, so that two daemons never share one]. Created if missing (0750); must belong to
    /// clusterd's user and be writable by it alone.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Where the output of units without their own `[log] to` goes: file, console, journal
    /// or inherit [default: file; console in container mode].
    #[arg(long, value_name = "TO", value_parser = parse_log_to)]
    pub log_default: Option<LogTo>,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 or localhost:9464
    /// (HOST:PORT; a host name is served on every address it resolves to; off by default;
    /// anyone who can reach the address can read them).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_address)]
    pub metrics_listen: Option<ListenAddress>,

    /// Run as a container's main process (implied when clusterd is PID 1): units log to the
    /// console by default, SIGQUIT stops like SIGTERM, and the exit status says whether an
    /// instance had to be killed.
    #[arg(long)]
    pub container: bool,

    /// When a unit gives up (reaches its restart limit), stop every unit and exit with
    /// status 69, so that the supervisor above clusterd (systemd, Kubernetes) sees it.
    #[arg(long)]
    pub exit_on_giveup: bool,

    /// After SIGTERM or SIGINT, go on serving this long before stopping the units (the
    /// instances keep running, `clusterctl ready` fails): time for a load balancer to stop
    /// sending traffic. A second signal stops at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Run the units in this environment: each unit's `[environments.NAME]` variables are
    /// added over its `environment` (PM2's `--env production`).
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,

    /// Validate the unit files, print every error, and exit (1 if any file is invalid).
    #[arg(long)]
    pub check: bool,
}

fn parse_log_to(text: &str) -> Result<LogTo, String> {
    text.parse()
}

/// Resolves `HOST:PORT` with the system's resolver (getaddrinfo, through std's
/// `ToSocketAddrs`: `/etc/hosts`, then DNS as nsswitch.conf says), once, at start-up. An IP
/// address, or a port that is not a number, needs no look-up.
fn parse_listen_address(text: &str) -> Result<ListenAddress, String> {
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT with a host that resolves: {e}"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("{text:?} resolves to no address"));
    }
    Ok(ListenAddress {
        text: text.to_string(),
        addresses,
    })
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    <ClusterdArgs as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_may_name_a_host_that_resolves() {
        let at = parse_listen_address("localhost:9464").expect("localhost");
        assert!(
            at.addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9464),
            "{at:?}"
        );
        assert!(!at.addresses.is_empty());
        let at = parse_listen_address("[::1]:0").expect("IPv6");
        assert_eq!(at.addresses, vec!["[::1]:0".parse().expect("address")]);
        for wrong in [
            "localhost",
            "127.0.0.1",
            "localhost:x",
            "127.0.0.1:65536",
            "",
        ] {
            let error = parse_listen_address(wrong).expect_err(wrong);
            assert!(error.contains("HOST:PORT"), "{wrong}: {error}");
        }
    }
}
