//! `clusterd`: the supervisor daemon. Parses its flags and hands over to [`clusterd::daemon`].

use std::process::ExitCode;

use clap::Parser;
use clusterd::cli::clusterd_args::ClusterdArgs;
use clusterd::daemon::log_output::LogOutput;
use clusterd::daemon::logs::LogOptions;
use clusterd::daemon::{exit_code, run, DaemonOptions, SpawnPath};
use clusterd::protocol::socket_path::control_socket_path;
use clusterd::unit::{every_error, load_units_dir, read_unit_text, resolve_group, LogTo};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .target(env_logger::Target::Pipe(Box::new(LogOutput)))
        .init();
    // `clusterd --reexec-check VERSION`, asked by a running clusterd of its successor: read
    // before the flags, as exactly these two words (it needs no `--units`), so that it means
    // the same to every version.
    let words: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, version] = words.as_slice() {
        if flag == "--reexec-check" {
            return reexec_check(version);
        }
    }
    let args = ClusterdArgs::parse();
    if args.check {
        return check(&args.units);
    }
    let socket_group = match args.socket_group.as_deref().map(resolve_group).transpose() {
        Ok(group) => group,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    let spawn_path = match SpawnPath::from_environment() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return ExitCode::from(exit_code::USAGE);
        }
    };
    // A container's main process is PID 1 of its PID namespace.
    let container = args.container || std::process::id() == 1;
    let socket = control_socket_path(args.socket);
    let options = DaemonOptions {
        units_dir: args.units,
        socket: socket.clone(),
        socket_group,
        isolation: args.isolation,
        logs: LogOptions {
            dir: args
                .log_dir
                .unwrap_or_else(|| LogOptions::default_dir_for(&socket)),
            // The runtime above a container collects its output; files would fill its
            // writable layer.
            default_to: args.log_default.unwrap_or(if container {
                LogTo::Console
            } else {
                LogTo::File
            }),
        },
        metrics_listen: args.metrics_listen,
        container,
        exit_on_giveup: args.exit_on_giveup,
        shutdown_delay: args.shutdown_delay,
        environment: args.environment,
        spawn_path,
    };
    match run(options) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(exit_code::FAILED)
        }
    }
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

/// `clusterd --reexec-check VERSION`: 0 if this binary reads a daemon-reexec state of that
/// version, 1 if not.
fn reexec_check(version: &str) -> ExitCode {
    let understood = version
        .parse()
        .is_ok_and(clusterd::daemon::reexec::understands);
    if understood {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "clusterd {}: cannot read a re-exec state of version {version}",
            env!("CARGO_PKG_VERSION")
        );
        ExitCode::FAILURE
    }
}
