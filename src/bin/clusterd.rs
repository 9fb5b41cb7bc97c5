//! `clusterd`: the supervisor daemon. Parses its flags and hands over to [`clusterd::daemon`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clusterd::daemon::log_output::LogOutput;
use clusterd::daemon::logs::LogOptions;
use clusterd::daemon::{run, DaemonOptions, Isolation};
use clusterd::protocol::socket_path::control_socket_path;
use clusterd::unit::{every_error, load_units_dir, read_unit_text, resolve_group, LogTo};

/// Keeps N copies of any program running: restarts with a limit, suicide replacement,
/// graceful stops, shared listening sockets, zero-downtime reloads.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory of unit files (*.toml); each file is one unit named after its stem.
    #[arg(long, value_name = "DIR")]
    units: PathBuf,

    /// Control socket path [default: $CLUSTERD_SOCKET, else /run/clusterd/clusterd.sock for
    /// root, $XDG_RUNTIME_DIR/clusterd.sock or /tmp/clusterd-$UID/clusterd.sock for others].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Let members of this group use the control socket too (mode 0660 instead of 0600).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    /// How instances are kept together: `cgroup` (each in a cgroup of its own; nothing it
    /// starts can escape a stop), `process-group`, or `auto` (cgroup where clusterd can create
    /// cgroups, else process-group).
    #[arg(long, value_enum, default_value_t = Isolation::Auto)]
    isolation: Isolation,

    /// Where `file` logs live [default: /var/log/clusterd for root, else
    /// $XDG_STATE_HOME/clusterd/log or ~/.local/state/clusterd/log]. Created if missing.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,

    /// Where the output of units without their own `[log] to` goes: file, console, journal
    /// or inherit.
    #[arg(long, value_name = "TO", default_value = "file", value_parser = parse_log_to)]
    log_default: LogTo,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (off by default;
    /// anyone who can reach the address can read them).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Validate the unit files, print every error, and exit (1 if any file is invalid).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .target(env_logger::Target::Pipe(Box::new(LogOutput)))
        .init();
    let args = Args::parse();
    if args.check {
        return check(&args.units);
    }
    let socket_group = match args.socket_group.as_deref().map(resolve_group).transpose() {
        Ok(group) => group,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return ExitCode::from(2);
        }
    };
    let options = DaemonOptions {
        units_dir: args.units,
        socket: control_socket_path(args.socket),
        socket_group,
        isolation: args.isolation,
        logs: LogOptions {
            dir: args.log_dir.unwrap_or_else(LogOptions::default_dir),
            default_to: args.log_default,
        },
        metrics_listen: args.metrics_listen,
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_log_to(text: &str) -> Result<LogTo, String> {
    text.parse()
}

/// `clusterd --check`: every error of every file, then a one-line verdict.
fn check(dir: &std::path::Path) -> ExitCode {
    let files = match load_units_dir(dir) {
        Ok(files) => files,
        Err(e) => {
            eprintln!(
                "clusterd: cannot read the units directory {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let total = files.len();
    let mut bad = 0;
    for file in &files {
        if let Err(first) = &file.result {
            // Every error of the file, so that it is fixed in one round.
            // Read the same careful way as the first time (no FIFO, no /dev/zero).
            let errors = read_unit_text(&file.path)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .map(|text| every_error(&file.path, &text))
                .unwrap_or_default();
            let errors = if errors.is_empty() {
                vec![first.clone()]
            } else {
                errors
            };
            for error in errors {
                eprintln!("{error}");
                if let Some(snippet) = error.snippet() {
                    eprintln!("{snippet}");
                }
            }
            bad += 1;
        }
    }
    if bad == 0 {
        println!("{total} unit file(s) in {}: all valid", dir.display());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{bad} of {total} unit file(s) in {} are invalid",
            dir.display()
        );
        ExitCode::FAILURE
    }
}
