//! Running `[health]` checks for the supervisor, never on its loop.
//!
//! - A **command** check is started like an `on_giveup` hook (the unit's account, directory
//!   and environment, plus `CLUSTERD_UNIT`, `CLUSTERD_INSTANCE` and `MAINPID`), with its
//!   output thrown away; it is a child of clusterd in a session of its own, so the supervisor
//!   reaps it with every other child and kills its whole group at its timeout.
//! - An **HTTP** check is one GET on a short-lived thread of its own (at most one per
//!   instance, the supervisor sees to that), which ends by its deadline whatever the server
//!   does: connect, write and every read are bounded by the time left, and only the status
//!   line is read — at most [`MAX_STATUS_LINE`] bytes — so a slow, huge or never-ending
//!   answer costs one thread for at most `timeout` and a few KiB. The result comes back as
//!   `Event::ProbeDone`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::daemon::signals::EventSender;
use crate::supervisor::event::Event;
use crate::supervisor::process_control::{ProbeRequest, SpawnId};
use crate::unit::HttpTarget;

/// The most of an answer an HTTP check reads: its status line must fit.
pub(crate) const MAX_STATUS_LINE: usize = 1024;

/// What a command check has in its environment besides its unit's.
pub(crate) fn command_environment(request: &ProbeRequest) -> Vec<(String, String)> {
    vec![
        ("CLUSTERD_UNIT".to_string(), request.unit.name.clone()),
        ("CLUSTERD_INSTANCE".to_string(), request.index.to_string()),
        ("MAINPID".to_string(), request.pid.to_string()),
    ]
}

/// Starts one HTTP check of instance `id` (check number `seq`) on a thread of its own; its
/// result goes to `events` within `timeout`.
pub(crate) fn start_http(
    events: EventSender,
    id: SpawnId,
    seq: u64,
    target: HttpTarget,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    std::thread::Builder::new()
        .name("health-http".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // A panic here (there should be none) is a failed check, not a lost one.
            let result = std::panic::catch_unwind(|| get(&target, deadline))
                .unwrap_or_else(|_| Err("the check failed inside clusterd".into()));
            let _ = events.send(Event::ProbeDone { id, seq, result });
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start a thread for the HTTP check: {e}"))
}

/// One GET of `target`, done by `deadline`: `Ok` for a 2xx status, else why not.
pub(crate) fn get(target: &HttpTarget, deadline: Instant) -> Result<(), String> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "no answer within the timeout".to_string())
    };
    let mut stream = TcpStream::connect_timeout(&target.address, left()?)
        .map_err(|e| format!("cannot connect to {}: {e}", target.address))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: clusterd-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.host
    );
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = [0u8; MAX_STATUS_LINE];
    let mut got = 0;
    loop {
        if let Some(end) = answer[..got].iter().position(|&b| b == b'\n') {
            return status(&answer[..end]);
        }
        if got == answer.len() {
            return Err(format!(
                "the answer has no status line in its first {MAX_STATUS_LINE} bytes"
            ));
        }
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        match stream.read(&mut answer[got..]) {
            Ok(0) => return Err("the connection closed before a status line".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer within the timeout".into())
            }
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
}

/// `HTTP/1.1 200 OK`: healthy for 2xx.
fn status(line: &[u8]) -> Result<(), String> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let code = line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    match code {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP status {code}")),
        None => Err(format!(
            "not an HTTP answer: {}",
            crate::printable::printable(&line.chars().take(80).collect::<String>())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_healthy_for_2xx_only() {
        assert!(status(b"HTTP/1.1 200 OK\r").is_ok());
        assert!(status(b"HTTP/1.0 204 No Content").is_ok());
        assert_eq!(
            status(b"HTTP/1.1 503 Unavailable"),
            Err("HTTP status 503".into())
        );
        assert!(status(b"SSH-2.0-OpenSSH").is_err());
        assert!(status(b"HTTP/1.1 2000 OK").is_err());
    }
}
