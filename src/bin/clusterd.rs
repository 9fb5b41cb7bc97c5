//! `clusterd`: the supervisor daemon. Parses its flags and hands over to [`clusterd::daemon`].

use std::process::ExitCode;

use clap::Parser;
use clusterd::cli::clusterd_args::ClusterdArgs;
use clusterd::daemon::log_output::LogOutput;
use clusterd::daemon::logs::LogOptions;
use clusterd::daemon::reexec::resume;
use clusterd::daemon::{exit_code, resume, run, DaemonOptions, SpawnPath};
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
    // `clusterd --reexec-state FD ARGS...`: a re-exec'd clusterd. The state is read before
    // anything else (before the flags, which it carries too): a new image that cannot read
    // it goes back to the old binary with it.
    if let [flag, fd, ..] = words.as_slice() {
        if flag == resume::STATE_FLAG {
            return reexec_resume(fd);
        }
    }
    let args = ClusterdArgs::parse();
    if args.check {
        return check(&args.units);
    }
    let options = match options_from(args) {
        Ok(options) => options,
        Err(code) => return code,
    };
    match run(options) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(exit_code::FAILED)
        }
    }
}

/// The new image of a re-exec: the state, then the flags it carries, then the daemon rebuilt.
fn reexec_resume(fd: &str) -> ExitCode {
    let incoming = match resume::receive(fd) {
        Ok(incoming) => incoming,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(exit_code::FAILED);
        }
    };
    let args = std::iter::once("clusterd".to_string()).chain(incoming.args().iter().cloned());
    let options = match ClusterdArgs::try_parse_from(args)
        .map_err(|e| e.to_string())
        .and_then(|args| options_from(args).map_err(|_| "its flags are invalid".to_string()))
    {
        Ok(options) => options,
        Err(why) => {
            log::error!("{}", incoming.give_up(&format!("clusterd's flags: {why}")));
            return ExitCode::from(exit_code::FAILED);
        }
    };
    match resume(options, incoming) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(exit_code::FAILED)
        }
    }
}

/// The daemon's options from its flags (`Err`: the exit code of a usage error, said).
fn options_from(args: ClusterdArgs) -> Result<DaemonOptions, ExitCode> {
    let socket_group = match args.socket_group.as_deref().map(resolve_group).transpose() {
        Ok(group) => group,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return Err(ExitCode::from(exit_code::USAGE));
        }
    };
    let spawn_path = match SpawnPath::from_environment() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return Err(ExitCode::from(exit_code::USAGE));
        }
    };
    // A container's main process is PID 1 of its PID namespace.
    let container = args.container || std::process::id() == 1;
    let socket = control_socket_path(args.socket);
    Ok(DaemonOptions {
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
    })
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
