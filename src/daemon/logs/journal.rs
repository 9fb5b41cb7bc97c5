//! `to = "journal"`: an instance's stdout and stderr are connected to journald's stream socket
//! as systemd connects a service's (src/core/exec-invoke.c `connect_logger_as`): a stream to
//! `/run/systemd/journal/stdout`, the reading side shut down, then a header of seven lines —
//! identifier, unit id, priority, level prefix, forward to syslog, to kmsg, to the console.
//! journald timestamps, stores and rotates; clusterd is not on the data path at all. journald
//! takes each writer's pid from the socket's credentials, so `_PID` is the instance's.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Where journald listens for stream connections.
pub(crate) const JOURNAL_STDOUT: &str = "/run/systemd/journal/stdout";

/// syslog priorities: stdout lines are "info", stderr lines "err" (`journalctl -p err`).
const PRIORITY_INFO: u8 = 6;
const PRIORITY_ERR: u8 = 3;

/// A stream for one of an instance's outputs, tagged with `identifier` (the unit's name:
/// `journalctl -t web`).
pub(crate) fn connect(socket: &Path, identifier: &str, stderr: bool) -> io::Result<OwnedFd> {
    let mut stream = UnixStream::connect(socket)?;
    stream.shutdown(Shutdown::Read)?;
    let priority = if stderr { PRIORITY_ERR } else { PRIORITY_INFO };
    // identifier, unit id (journald finds the unit from the cgroup), priority, no level
    // prefix parsing (`<3>` stays text), no forwarding to syslog, kmsg or the console.
    let header = format!("{identifier}\n\n{priority}\n0\n0\n0\n0\n");
    stream.write_all(header.as_bytes())?;
    Ok(stream.into())
}
