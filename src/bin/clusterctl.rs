//! `clusterctl`: controls a running clusterd over its Unix socket.
//!
//! Exit codes: 0 done, 1 the request failed, 2 usage error, 3 clusterd is not reachable.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clusterd::client::connection::{open_stream, send_request, ClientError};
use clusterd::client::status_table::render;
use clusterd::client::top::{frame, Screen, SortBy};
use clusterd::printable::{json_for_terminal, printable};
use clusterd::protocol::socket_path::control_socket_path;
use clusterd::protocol::{LogStream, Request, ScaleCount};

#[derive(Parser)]
#[command(version, about = "Control a running clusterd")]
struct Args {
    /// Control socket path [default: $CLUSTERD_SOCKET, else the same default as clusterd].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show units and their instances.
    Status {
        /// Only this unit.
        unit: Option<String>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Start a unit's instances (clears a give-up); returns once they are ready.
    Start { unit: String },
    /// Stop every instance of a unit gracefully; returns once they are gone.
    Stop { unit: String },
    /// Stop, then start every instance (clears a give-up).
    Restart { unit: String },
    /// Replace every instance one by one without downtime.
    Reload { unit: String },
    /// Change the number of instances: N, +N or -N.
    Scale {
        unit: String,
        #[arg(allow_hyphen_values = true, value_name = "N|+N|-N")]
        count: ScaleCount,
    },
    /// Re-read the units directory (same as SIGHUP to clusterd).
    DaemonReload,
    /// Show the last lines of a unit's log, then (with --follow) every new one.
    Logs {
        unit: String,
        /// How many lines of history.
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
}

/// `eprintln!` that cannot panic: stderr may be a closed pipe too.
macro_rules! complain {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = control_socket_path(args.socket);
    let mut json = false;
    let mut metrics = false;
    let request = match args.command {
        Command::Metrics => {
            metrics = true;
            Request::Status { unit: None }
        }
        Command::Status { unit, json: j } => {
            json = j;
            Request::Status { unit }
        }
        Command::Start { unit } => Request::Start { unit },
        Command::Stop { unit } => Request::Stop { unit },
        Command::Restart { unit } => Request::Restart { unit },
        Command::Reload { unit } => Request::Reload { unit },
        Command::Scale { unit, count } => Request::Scale { unit, count },
        Command::DaemonReload => Request::DaemonReload {},
        Command::ReopenLogs => Request::ReopenLogs {},
        Command::Top {
            unit,
            interval,
            sort,
        } => return top(&socket, unit, interval, sort),
        Command::Logs {
            unit,
            lines,
            follow,
            instance,
            stream,
            raw,
        } => {
            let request = Request::Logs {
                unit,
                lines,
                follow,
                instance,
                stream,
            };
            return logs(&socket, request, raw);
        }
    };
    let response = match send_request(&socket, request) {
        Ok(response) => response,
        Err(e) => return unanswered(&e),
    };
    if let Some(code) = refused(&response) {
        return code;
    }
    let text = if let Some(status) = &response.status {
        if metrics {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            clusterd::metrics::render(status, now)
        } else if json {
            match serde_json::to_string_pretty(status) {
                Ok(text) => json_for_terminal(&text) + "\n",
                Err(e) => {
                    complain!("clusterctl: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        } else {
            render(status)
        }
    } else if let Some(message) = &response.message {
        format!("{}\n", printable(message))
    } else {
        String::new()
    };
    print_out(&text)
}

/// `clusterctl logs`: the response, then the lines as clusterd sends them. On a terminal,
/// control characters a program wrote are shown escaped (they could drive the terminal),
/// unless `--raw`.
fn logs(socket: &std::path::Path, request: Request, raw: bool) -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    let (response, mut reader) = match open_stream(socket, request) {
        Ok(opened) => opened,
        Err(e) => return unanswered(&e),
    };
    if let Some(code) = refused(&response) {
        return code;
    }
    let escape = !raw && std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => {
                complain!("clusterctl: the connection to clusterd broke: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
        let written = if escape {
            let text = String::from_utf8_lossy(&line);
            let body = text.strip_suffix('\n').unwrap_or(&text);
            writeln!(stdout, "{}", printable(body))
        } else {
            stdout.write_all(&line)
        };
        // Flushed line by line: a follower sees each line as it comes.
        match written.and_then(|()| stdout.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
            Err(e) => {
                complain!("clusterctl: cannot write: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
}

/// `clusterctl top`: a frame per interval on the alternate screen, or one frame when stdout
/// is not a terminal.
fn top(
    socket: &std::path::Path,
    unit: Option<String>,
    interval: std::time::Duration,
    sort: SortBy,
) -> ExitCode {
    use std::io::IsTerminal;
    let status = || -> Result<clusterd::protocol::StatusReport, ExitCode> {
        let response = send_request(socket, Request::Status { unit: unit.clone() })
            .map_err(|e| unanswered(&e))?;
        if let Some(code) = refused(&response) {
            return Err(code);
        }
        response.status.ok_or(ExitCode::from(EXIT_FAILED))
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return match status() {
            Ok(report) => print_out(&frame(&report, sort, usize::MAX)),
            Err(code) => code,
        };
    }
    let screen = match Screen::enter() {
        Ok(screen) => screen,
        Err(e) => {
            complain!("clusterctl: cannot use the terminal: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    loop {
        let report = match status() {
            Ok(report) => report,
            Err(code) => {
                drop(screen);
                return code;
            }
        };
        if screen.show(&frame(&report, sort, screen.rows())).is_err() {
            return ExitCode::SUCCESS;
        }
        if screen.quit_within(interval) {
            return ExitCode::SUCCESS;
        }
    }
}

/// Says why clusterd could not be asked; exit 3 when it is not reachable, else 1.
fn unanswered(error: &ClientError) -> ExitCode {
    match error {
        ClientError::Unreachable(e) => {
            complain!("clusterctl: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        ClientError::Protocol(e) => {
            complain!("clusterctl: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Says why clusterd refused, if it did (exit 1).
fn refused(response: &clusterd::protocol::Response) -> Option<ExitCode> {
    if response.ok {
        return None;
    }
    complain!(
        "clusterctl: {}",
        printable(response.error.as_deref().unwrap_or("the request failed"))
    );
    Some(ExitCode::from(EXIT_FAILED))
}

/// Writes the answer to stdout. A reader that went away (`clusterctl status | head -1`) is
/// not an error worth a message, the way `ls | head` is not: exit quietly, with success.
fn print_out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            complain!("clusterctl: cannot write the answer: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
