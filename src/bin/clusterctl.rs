//! `clusterctl`: controls a running clusterd over its Unix socket, or the clusterds of other
//! hosts through ssh (`-H`).
//!
//! Exit codes: 0 done, 1 the request failed (or permission denied), 2 usage error, 3 clusterd
//! is not reachable (or, for `logs -f` and `top`, went away).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clusterd::cli::clusterctl_args::{ClusterctlArgs, ClusterctlCommand as Command};
use clusterd::client::connection::{open_stream, send_request, ClientError};
use clusterd::client::status_table::render;
use clusterd::client::top::{frame, Screen, SortBy};
use clusterd::client::transport::Target;
use clusterd::printable::{json_for_terminal, printable, printable_lines};
use clusterd::protocol::{LogPosition, Request};

/// `eprintln!` that cannot panic: stderr may be a closed pipe too.
macro_rules! complain {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = ClusterctlArgs::parse();
    if let Command::Completions { shell } = args.command {
        return completions(shell);
    }
    let targets = match clusterd::client::fleet::targets(
        &args.hosts,
        args.hosts_file.as_deref(),
        args.socket,
    ) {
        Ok(targets) => targets,
        Err(e) => return usage(&e),
    };
    let local = match targets.as_slice() {
        [Target::Local(socket)] => Some(socket.clone()),
        _ => None,
    };
    let parallel = args.parallel;
    let mut json = false;
    let mut metrics = false;
    let request = match args.command {
        Command::Metrics => {
            metrics = true;
            Request::Status { unit: None }
        }
        Command::Status { unit, json: true } if targets.len() > 1 => {
            return status_of_hosts(&targets, unit, true);
        }
        Command::Status { unit, json: false } if targets.len() > 1 => {
            return status_of_hosts(&targets, unit, false);
        }
        Command::Status { unit, json: j } => {
            json = j;
            Request::Status { unit }
        }
        Command::Start { unit } => Request::Start { unit },
        Command::Stop { units } => match <[String; 1]>::try_from(units) {
            Ok([unit]) => Request::Stop { unit },
            Err(units) => return each(&targets, parallel, |t| stop_several(t, &units)),
        },
        Command::Restart { unit } => Request::Restart { unit },
        Command::Reload { unit } => Request::Reload { unit },
        Command::Scale { unit, count } => Request::Scale { unit, count },
        Command::Kill {
            unit,
            signal,
            instance,
            all,
        } => Request::Kill {
            unit,
            instance,
            // By number: kill(1)'s names and numbers are both already checked.
            signal: signal.number().to_string(),
            all,
        },
        Command::Send {
            unit,
            message,
            instance,
        } => Request::Send {
            unit,
            instance,
            // `clusterctl send web shutdown`: the string "shutdown", as PM2's
            // shutdown_with_message sends it.
            message: match serde_json::from_str::<serde_json::Value>(&message) {
                Ok(_) => message,
                Err(_) => serde_json::Value::String(message).to_string(),
            },
        },
        Command::DaemonReload => Request::DaemonReload {},
        Command::DaemonReexec => Request::DaemonReexec {},
        // Every host's readiness is read at once: nothing changes.
        Command::Ready { units } => return each(&targets, true, |t| ready(t, &units)),
        Command::Completions { shell } => return completions(shell),
        // Verbs that work on this machine's files, or are the far end of -H themselves.
        Command::Import { .. } | Command::DialStdio if local.is_none() => {
            return usage("`import` and `dial-stdio` work on this machine's files and socket, not over --host (run `clusterctl import` here and copy the units to the hosts)");
        }
        Command::DialStdio => return local.map_or(ExitCode::FAILURE, |s| dial_stdio(&s)),
        Command::CompleteUnits => return local.map_or(ExitCode::FAILURE, |s| complete_units(&s)),
        Command::Import {
            file,
            env,
            out,
            force,
            allow_exec,
        } => return import(&file, env.as_deref(), out.as_deref(), force, allow_exec),
        Command::ReopenLogs => Request::ReopenLogs {},
        Command::Top {
            unit,
            interval,
            sort,
        } => {
            let [target] = targets.as_slice() else {
                return usage("`top` shows one host at a time");
            };
            return top(target, unit, interval, sort);
        }
        Command::Logs {
            unit,
            lines,
            follow,
            instance,
            stream,
            raw,
        } => {
            let [target] = targets.as_slice() else {
                return usage("`logs` reads one host at a time");
            };
            let Some(unit) = unit else {
                return logs_all(target, lines, follow, instance, stream, raw);
            };
            let request = Request::Logs {
                unit,
                lines,
                follow,
                instance,
                stream,
                after: None,
            };
            return logs(target, request, follow, raw);
        }
    };
    if metrics && targets.len() > 1 {
        // One exposition per host: Prometheus scrapes each (docs/fleet.md).
        return usage("`metrics` reads one host at a time");
    }
    each(&targets, parallel, |target| {
        ask(target, request.clone(), metrics, json)
    })
}

/// A wrong use of clusterctl (exit 2).
fn usage(why: &str) -> ExitCode {
    complain!("clusterctl: {}", printable(why));
    ExitCode::from(EXIT_USAGE)
}

/// What one clusterd answered, as text to print, or why there is none.
type Answer = Result<String, Failure>;

/// Runs `ask` on the one target, or on several (one after the other, stopping at the first
/// that fails, unless `parallel`), each line of an answer and each failure led by its host.
/// Exit: that of the first failure, else 0.
fn each(targets: &[Target], parallel: bool, ask: impl Fn(&Target) -> Answer + Sync) -> ExitCode {
    if let [target] = targets {
        return match ask(target) {
            Ok(text) => print_out(&text),
            Err(failure) => failure.on(target).report(),
        };
    }
    let results = clusterd::client::fleet::across(targets, parallel, |t| {
        ask(t).map_err(|failure| failure.on(t))
    });
    let mut code = None;
    let mut out = String::new();
    for (target, result) in targets.iter().zip(results) {
        let host = target.name();
        match result {
            Some(Ok(text)) if text.is_empty() => out.push_str(&format!("{host}: done\n")),
            Some(Ok(text)) => {
                for line in text.lines() {
                    out.push_str(&format!("{host}: {line}\n"));
                }
            }
            Some(Err(failure)) => {
                // The lines so far first, so the order on a terminal is the hosts' order.
                let _ = print_out(&std::mem::take(&mut out));
                code.get_or_insert(failure.code);
                failure.report();
            }
            None => {
                let _ = print_out(&std::mem::take(&mut out));
                complain!("clusterctl: {host}: not asked: an earlier host failed (--parallel asks every host)");
            }
        }
    }
    let printed = print_out(&out);
    code.map_or(printed, ExitCode::from)
}

/// `status` of several hosts: one set of tables with a HOST column, or (`--json`) one object
/// per host, with its `status` or its `error`. Every host is asked at once.
fn status_of_hosts(targets: &[Target], unit: Option<String>, json: bool) -> ExitCode {
    // No host in the messages: the HOST column, or the `host` key, says it.
    let results = clusterd::client::fleet::across(targets, true, |target| {
        status_report(target, unit.clone())
    });
    let mut code = None;
    let mut reports = Vec::new();
    for (target, result) in targets.iter().zip(results) {
        let result = result.unwrap_or_else(|| {
            Err(Failure {
                message: "not asked".into(),
                code: EXIT_FAILED,
            })
        });
        if let Err(failure) = &result {
            code.get_or_insert(failure.code);
        }
        reports.push((target.name(), result.map_err(|f| f.message)));
    }
    let text = if json {
        let hosts: Vec<_> = reports
            .iter()
            .map(|(host, report)| match report {
                Ok(status) => serde_json::json!({ "host": host, "status": status }),
                Err(error) => serde_json::json!({ "host": host, "error": error }),
            })
            .collect();
        match serde_json::to_string_pretty(&hosts) {
            Ok(text) => json_for_terminal(text) + "\n",
            Err(e) => return usage(&e.to_string()),
        }
    } else {
        clusterd::client::status_table::render_hosts(&reports)
    };
    let printed = print_out(&text);
    code.map_or(printed, ExitCode::from)
}

/// One request, its answer as text: a status table (or JSON, or metrics), or clusterd's
/// message.
fn ask(target: &Target, request: Request, metrics: bool, json: bool) -> Answer {
    let response = send_request(target, request).map_err(|e| Failure::from(&e))?;
    if !response.ok {
        return Err(Failure::refused(&response));
    }
    Ok(if let Some(status) = &response.status {
        if metrics {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            clusterd::metrics::render(status, now)
        } else if json {
            let text = serde_json::to_string_pretty(status).map_err(|e| Failure {
                message: e.to_string(),
                code: EXIT_FAILED,
            })?;
            json_for_terminal(text) + "\n"
        } else {
            render(status)
        }
    } else if let Some(message) = &response.message {
        format!("{}\n", printable_lines(message))
    } else {
        String::new()
    })
}

/// `clusterctl logs`: the response, then the lines as clusterd sends them. On a terminal,
/// control characters a program wrote are shown escaped (they could drive the terminal),
/// unless `--raw`. A follower's connection ends only when clusterd goes away (or drops it):
/// that is said, with exit 3, so a script does not take it for a clean end — unless clusterd
/// was re-executed (`daemon-reexec`), which closes every follower: then the follower
/// reconnects and goes on from where its stream stood ([`LogStream::read`]).
fn logs(socket: &Target, request: Request, follow: bool, raw: bool) -> ExitCode {
    let last_reexec = if follow { reexecuted_at(socket) } else { None };
    let (response, reader) = match open_stream(socket, request.clone()) {
        Ok(opened) => opened,
        Err(e) => return Failure::from(&e).on(socket).report(),
    };
    if !response.ok {
        return Failure::refused(&response).on(socket).report();
    }
    let mut out = LineWriter::new(raw);
    let stream = LogStream {
        socket,
        request: &request,
        follow,
        last_reexec,
    };
    match stream.read((response.log_position, reader), &mut |line| {
        out.write("", line)
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(StreamEnd::Code(code)) => code,
        Err(StreamEnd::Lost(why)) => {
            complain!("clusterctl: {why}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// When clusterd was last re-executed, as it says now (`None`: never, or it does not answer).
fn reexecuted_at(socket: &Target) -> Option<f64> {
    send_request(socket, Request::Status { unit: None })
        .ok()
        .and_then(|r| r.status?.daemon?.reexecuted_at_seconds)
}

/// How a log stream ended, other than cleanly.
enum StreamEnd {
    /// The lines could not be shown: end with this code.
    Code(ExitCode),
    /// The connection to clusterd was lost (and not because of a re-exec): why.
    Lost(String),
}

/// One unit's log stream as `logs` asked for it, read to its end; with `follow`, read on
/// across a `daemon-reexec` (which closes every follower). Used by `logs UNIT` and, once per
/// unit, by `logs` without a unit.
struct LogStream<'a> {
    socket: &'a Target,
    request: &'a Request,
    follow: bool,
    /// When clusterd was last re-executed as the stream was opened: a connection that ends
    /// while this is still so was not ended by a re-exec.
    last_reexec: Option<f64>,
}

impl LogStream<'_> {
    /// Reads the stream whose answer said `position` (where its history ended). It counts
    /// the lines after its history; after a re-exec it reconnects asking for every line
    /// after that position and skips as many as it counted: the lines written meanwhile are
    /// shown, none twice, whether it had shown any line or not (`-n 0` on a quiet unit).
    /// Without a position (an older clusterd's answer), it goes on with the new lines only.
    fn read(
        &self,
        (mut position, mut reader): (
            Option<LogPosition>,
            std::io::BufReader<clusterd::client::transport::Connection>,
        ),
        show: &mut dyn FnMut(&[u8]) -> Result<(), ExitCode>,
    ) -> Result<(), StreamEnd> {
        use std::io::BufRead;
        let mut last_reexec = self.last_reexec;
        let mut line = Vec::new();
        // Lines of the history still to come (they stand before `position`), and how many
        // of them were shown before a reconnection; then the lines after it, counted.
        let mut history_left = position.as_ref().map_or(0, |p| p.history_lines);
        let mut shown_already = 0usize;
        let mut after_position = 0usize;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) if !self.follow => return Ok(()),
                Ok(0) => {
                    let now = reexecuted_at(self.socket);
                    if now.is_some() && now != last_reexec {
                        if let Some((again, reopened)) =
                            reopen_follower(self.socket, self.request, position.as_ref())
                        {
                            last_reexec = now;
                            reader = reopened;
                            if position.is_some() {
                                shown_already = after_position;
                            }
                            history_left = again.as_ref().map_or(0, |p| p.history_lines);
                            after_position = 0;
                            position = again;
                            continue;
                        }
                    }
                    return Err(StreamEnd::Lost(format!("lost the connection to clusterd at {} (it stopped, or dropped this follower); no more lines", self.socket.name())));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(StreamEnd::Lost(format!(
                        "lost the connection to clusterd at {}: {e}",
                        self.socket.name()
                    )))
                }
            }
            if history_left > 0 {
                history_left -= 1;
                if shown_already > 0 {
                    shown_already -= 1;
                    continue;
                }
            } else {
                let stands_for = clusterd::protocol::skipped_lines_in(&line).unwrap_or(1);
                after_position =
                    after_position.saturating_add(usize::try_from(stands_for).unwrap_or(1));
            }
            show(&line).map_err(StreamEnd::Code)?;
        }
    }
}

/// Follows again after a re-exec: every line after `position` (no history without one);
/// the answer's position with the stream.
fn reopen_follower(
    socket: &Target,
    request: &Request,
    position: Option<&LogPosition>,
) -> Option<(
    Option<LogPosition>,
    std::io::BufReader<clusterd::client::transport::Connection>,
)> {
    let Request::Logs {
        unit,
        follow,
        instance,
        stream,
        ..
    } = request.clone()
    else {
        return None;
    };
    let again = Request::Logs {
        unit,
        lines: 0,
        follow,
        instance,
        stream,
        after: position.cloned(),
    };
    match open_stream(socket, again) {
        Ok((response, reader)) if response.ok => Some((response.log_position, reader)),
        _ => None,
    }
}

/// Log lines to stdout, one by one. On a terminal, control characters a program wrote are
/// shown escaped (they could drive the terminal), unless `--raw`.
struct LineWriter {
    escape: bool,
    stdout: std::io::StdoutLock<'static>,
}

impl LineWriter {
    fn new(raw: bool) -> LineWriter {
        use std::io::IsTerminal;
        LineWriter {
            escape: !raw && std::io::stdout().is_terminal(),
            stdout: std::io::stdout().lock(),
        }
    }

    /// Writes `prefix` and `line`, flushed: a follower sees each line as it comes. `Err` is
    /// the exit code to end with (success when the reader went away, as `ls | head`).
    fn write(&mut self, prefix: &str, line: &[u8]) -> Result<(), ExitCode> {
        let written = if self.escape {
            let text = String::from_utf8_lossy(line);
            let body = text.strip_suffix('\n').unwrap_or(&text);
            writeln!(self.stdout, "{prefix}{}", printable(body))
        } else {
            self.stdout
                .write_all(prefix.as_bytes())
                .and_then(|()| self.stdout.write_all(line))
                .and_then(|()| {
                    if line.ends_with(b"\n") {
                        Ok(())
                    } else {
                        self.stdout.write_all(b"\n")
                    }
                })
        };
        match written.and_then(|()| self.stdout.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
            Err(e) => {
                complain!("clusterctl: cannot write: {e}");
                Err(ExitCode::from(EXIT_FAILED))
            }
        }
    }
}

/// `clusterctl logs` without a unit (`pm2 logs`): every unit that keeps a log file, its
/// history merged by time, then with `--follow` every new line as it comes; each line
/// prefixed by its unit. A unit whose log is elsewhere (the journal) is named on stderr.
/// Each unit's follower goes on across a `daemon-reexec` as `logs UNIT` does ([`LogStream`]).
fn logs_all(
    socket: &Target,
    lines: usize,
    follow: bool,
    instance: Option<u32>,
    stream: Option<clusterd::protocol::LogStream>,
    raw: bool,
) -> ExitCode {
    use clusterd::client::all_logs::{merge_by_time, MAX_FOLLOWED_UNITS};
    use std::io::BufRead;
    let report = match status_report(socket, None) {
        Ok(report) => report,
        Err(failure) => return failure.on(socket).report(),
    };
    let request = |unit: &str, lines: usize, follow: bool| Request::Logs {
        unit: unit.to_string(),
        lines,
        follow,
        instance,
        stream,
        after: None,
    };
    let names: Vec<String> = report.units.iter().map(|u| u.name.clone()).collect();
    if follow && names.len() > MAX_FOLLOWED_UNITS {
        complain!(
            "clusterctl: {} units: following every one would take too many of clusterd's connections (at most {MAX_FOLLOWED_UNITS}); name a unit",
            names.len()
        );
        return ExitCode::from(EXIT_FAILED);
    }
    // Followers first, then the history: a line written in between is shown twice rather
    // than lost.
    let (sender, lines_in) = std::sync::mpsc::channel::<(String, Option<Vec<u8>>)>();
    let last_reexec = if follow { reexecuted_at(socket) } else { None };
    let mut followed = 0;
    if follow {
        for name in &names {
            let follow_request = request(name, 0, true);
            let Ok((response, reader)) = open_stream(socket, follow_request.clone()) else {
                continue;
            };
            if !response.ok {
                continue;
            }
            followed += 1;
            let sender = sender.clone();
            let name = name.clone();
            let socket = socket.clone();
            std::thread::spawn(move || {
                let stream = LogStream {
                    socket: &socket,
                    request: &follow_request,
                    follow: true,
                    last_reexec,
                };
                // The main thread gone (stdout closed) is the only way `send` fails.
                let _ = stream.read((response.log_position, reader), &mut |line| {
                    sender
                        .send((name.clone(), Some(line.to_vec())))
                        .map_err(|_| ExitCode::SUCCESS)
                });
                let _ = sender.send((name, None));
            });
        }
    }
    drop(sender);
    let mut histories = Vec::new();
    for name in &names {
        let (response, mut reader) = match open_stream(socket, request(name, lines, false)) {
            Ok(opened) => opened,
            Err(e) => return unanswered(&e),
        };
        if !response.ok {
            complain!(
                "clusterctl: not shown: {}",
                printable(response.error.as_deref().unwrap_or(name))
            );
            continue;
        }
        let mut unit_lines = Vec::new();
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            unit_lines.push(std::mem::take(&mut line));
        }
        histories.push((name.clone(), unit_lines));
    }
    let width = names.iter().map(String::len).max().unwrap_or(0);
    let mut out = LineWriter::new(raw);
    for line in merge_by_time(histories) {
        if let Err(code) = out.write(&format!("{:width$} | ", line.unit), &line.line) {
            return code;
        }
    }
    if !follow {
        return ExitCode::SUCCESS;
    }
    while followed > 0 {
        match lines_in.recv() {
            Ok((unit, Some(line))) => {
                if let Err(code) = out.write(&format!("{unit:width$} | "), &line) {
                    return code;
                }
            }
            Ok((_, None)) => followed -= 1,
            Err(_) => break,
        }
    }
    complain!("clusterctl: lost the connection to clusterd (it stopped, or dropped these followers); no more lines");
    ExitCode::from(EXIT_UNREACHABLE)
}

/// `clusterctl top`: a frame per interval on the alternate screen, or one frame when stdout
/// is not a terminal. An error is printed once the alternate screen is left: printed on it,
/// it would vanish with it.
fn top(
    socket: &Target,
    unit: Option<String>,
    interval: std::time::Duration,
    sort: SortBy,
) -> ExitCode {
    use std::io::IsTerminal;
    let status = || status_report(socket, unit.clone()).map_err(|f| f.on(socket));
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return match status() {
            Ok(report) => print_out(&frame(&report, sort, usize::MAX, false)),
            Err(failure) => failure.report(),
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
            Err(failure) => {
                drop(screen);
                return failure.report();
            }
        };
        if screen
            .show(&frame(&report, sort, screen.rows(), true))
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        if screen.quit_within(interval) {
            return ExitCode::SUCCESS;
        }
    }
}

/// `clusterctl stop A B C`: one `stop` after the other, dependents first; stops at the first
/// that fails.
fn stop_several(target: &Target, units: &[String]) -> Answer {
    let report = status_report(target, None)?;
    let mut said = String::new();
    for unit in clusterd::client::stop_order::stop_order(&report, units) {
        let response =
            send_request(target, Request::Stop { unit }).map_err(|e| Failure::from(&e))?;
        if !response.ok {
            let _ = print_out(&said);
            return Err(Failure::refused(&response));
        }
        if let Some(message) = &response.message {
            said.push_str(&format!("{}\n", printable_lines(message)));
        }
    }
    Ok(said)
}

/// The status of `unit` (or every unit), or why there is none.
fn status_report(
    target: &Target,
    unit: Option<String>,
) -> Result<clusterd::protocol::StatusReport, Failure> {
    let response = send_request(target, Request::Status { unit }).map_err(|e| Failure::from(&e))?;
    if !response.ok {
        return Err(Failure::refused(&response));
    }
    response.status.ok_or(Failure {
        message: "clusterd sent no status".into(),
        code: EXIT_FAILED,
    })
}

/// `clusterctl ready`: exit 0 when every named unit (default: all) runs every wanted
/// instance and each is ready, and clusterd is not stopping; else say what is missing, exit 1.
fn ready(target: &Target, units: &[String]) -> Answer {
    let report = status_report(target, None)?;
    match clusterd::client::readiness::not_ready(&report, units) {
        None => Ok(String::new()),
        Some(why) => Err(Failure {
            message: format!("not ready: {}", printable(&why)),
            code: EXIT_FAILED,
        }),
    }
}

/// `clusterctl import`: the units of a PM2 ecosystem file, printed or written into a directory.
fn import(
    file: &std::path::Path,
    env: Option<&str>,
    out: Option<&std::path::Path>,
    force: bool,
    allow_exec: bool,
) -> ExitCode {
    use clusterd::client::import::{import, read_ecosystem, write_units};
    // PM2 starts an app without a `cwd` in the ecosystem file's directory.
    let base = std::path::absolute(file)
        .ok()
        .and_then(|f| f.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_default();
    let units = match read_ecosystem(file, allow_exec).and_then(|ecosystem| {
        if let Some(name) = env.filter(|name| !has_key(&ecosystem, &format!("env_{name}"), 3)) {
            // A typo would otherwise give units without the variables, silently.
            complain!("clusterctl: warning: --env {}: no app has env_{}; the units get only their plain env", printable(name), printable(name));
        }
        import(&ecosystem, &file.display().to_string(), env, &base)
    }) {
        Ok(units) => units,
        Err(e) => {
            // node's error is several lines: each shown safely.
            let lines: Vec<_> = e.lines().map(printable).collect();
            complain!("clusterctl: {}", lines.join("\n"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let Some(dir) = out else {
        let text: Vec<String> = units
            .iter()
            .map(|u| format!("# ---- {}.toml ----\n{}", u.name, u.text))
            .collect();
        return print_out(&text.join("\n"));
    };
    let written = match write_units(dir, &units, force) {
        Ok(written) => written,
        Err(e) => {
            complain!("clusterctl: {}", printable(&e));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut summary = String::new();
    for (unit, path) in units.iter().zip(&written) {
        summary.push_str(&format!("wrote {}", path.display()));
        if unit.not_mapped.is_empty() {
            summary.push('\n');
        } else {
            summary.push_str(&format!(
                "; not carried over (see the file's header): {}\n",
                printable(
                    &unit
                        .not_mapped
                        .iter()
                        .map(|l| l.split(':').next().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            ));
        }
    }
    summary.push_str("check them with `clusterd --check --units DIR`; `clusterctl daemon-reload` starts them in clusterd's units directory\n");
    print_out(&summary)
}

/// `clusterctl dial-stdio`: the far end of `clusterctl -H`.
fn dial_stdio(socket: &std::path::Path) -> ExitCode {
    let mut stream = match clusterd::client::transport::connect_socket(socket) {
        Ok(stream) => stream,
        Err(e) => return unanswered(&e),
    };
    match clusterd::client::dial_stdio::bridge(&mut stream) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("clusterctl: dial-stdio: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Whether an object within `depth` levels of `value` (the apps of an ecosystem file) has
/// `key`.
fn has_key(value: &serde_json::Value, key: &str, depth: usize) -> bool {
    match value {
        serde_json::Value::Object(map) => {
            map.contains_key(key) || (depth > 0 && map.values().any(|v| has_key(v, key, depth - 1)))
        }
        serde_json::Value::Array(items) => {
            depth > 0 && items.iter().any(|v| has_key(v, key, depth - 1))
        }
        _ => false,
    }
}

/// `clusterctl completions SHELL`: the script, generated from clusterctl's own definitions.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    print_out(&String::from_utf8_lossy(
        &clusterd::cli::completion::clusterctl_script(shell),
    ))
}

/// `clusterctl __complete-units`: unit names for a completion script; silent when clusterd
/// does not answer (a completion must not print errors into the command line).
fn complete_units(socket: &std::path::Path) -> ExitCode {
    let asked = clusterd::client::connection::send_request_within(
        socket,
        Request::Status { unit: None },
        std::time::Duration::from_secs(1),
    );
    let Some(report) = asked.ok().and_then(|r| r.status) else {
        return ExitCode::from(EXIT_FAILED);
    };
    let names: String = report
        .units
        .iter()
        .map(|u| format!("{}\n", u.name))
        .collect();
    print_out(&names)
}

/// Why clusterctl ends without its answer, and the exit code that says so; told on stderr
/// by [`Failure::report`], when the terminal can show it.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// clusterd refused (exit 1).
    fn refused(response: &clusterd::protocol::Response) -> Failure {
        Failure {
            // clusterd's answers may list one problem a line (daemon-reload).
            message: printable_lines(response.error.as_deref().unwrap_or("the request failed"))
                .into_owned(),
            code: EXIT_FAILED,
        }
    }

    /// Says which host failed, when it is one (a local socket is named in its own messages).
    fn on(self, target: &Target) -> Failure {
        match target {
            Target::Local(_) => self,
            Target::Ssh(host) => Failure {
                message: format!("{}: {}", host.url, self.message),
                code: self.code,
            },
        }
    }

    fn report(self) -> ExitCode {
        complain!("clusterctl: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// clusterd could not be asked: exit 3 when it is not reachable, else 1.
impl From<&ClientError> for Failure {
    fn from(error: &ClientError) -> Failure {
        match error {
            ClientError::Unreachable(message) => Failure {
                message: message.clone(),
                code: EXIT_UNREACHABLE,
            },
            ClientError::Protocol(message) | ClientError::Denied(message) => Failure {
                message: message.clone(),
                code: EXIT_FAILED,
            },
        }
    }
}

/// Says why clusterd could not be asked; exit 3 when it is not reachable, else 1.
fn unanswered(error: &ClientError) -> ExitCode {
    Failure::from(error).report()
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
