//! `to = "journal"`: clusterd stays on the data path. An instance writes into pipes like a
//! `file` unit's, and the log thread sends each line to journald as one entry of its native
//! protocol (a datagram to `/run/systemd/journal/socket`, systemd's `sd_journal_send`
//! format): `MESSAGE` (the bytes as written), `PRIORITY` (6 for stdout, 3 for stderr),
//! `SYSLOG_IDENTIFIER` (the unit: `journalctl -t web`), `SYSLOG_PID` (the instance's pid) and
//! `CLUSTERD_INSTANCE` (`web[3]`).
//!
//! Why not hand the instance journald's stream socket, as systemd does: when journald is
//! restarted outside systemd (which keeps the streams in journald's fd store), every instance
//! writing to it dies of SIGPIPE, its lines are lost, and `restart = "on-failure"` does not
//! bring it back (SIGPIPE counts as clean). With clusterd in between, a journald restart
//! costs nothing: the socket is non-blocking and unconnected (each entry is addressed, so
//! there is nothing to reconnect), entries journald cannot take wait in a bounded backlog
//! ([`JournalLink`]), and the log thread falls back to the unit's file when it is full.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald receives native-protocol entries.
pub(crate) const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// syslog priorities: stdout lines are "info", stderr lines "err" (`journalctl -p err`).
pub(crate) const PRIORITY_INFO: u8 = 6;
pub(crate) const PRIORITY_ERR: u8 = 3;

/// Entries kept for journald while it cannot take them.
pub(crate) const BACKLOG_BYTES: usize = 4 * 1024 * 1024;

/// One journal entry in the native protocol: `KEY=value\n` fields, and `MESSAGE` in the
/// binary-safe form (`KEY\n`, a little-endian 64-bit length, the bytes, `\n`), so a message
/// with a newline or any byte at all arrives as written.
pub(crate) fn entry(
    identifier: &str,
    pid: Option<i32>,
    instance: &str,
    priority: u8,
    message: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 96 + identifier.len() + instance.len());
    push_field(&mut out, "PRIORITY", priority.to_string().as_bytes());
    push_field(&mut out, "SYSLOG_IDENTIFIER", identifier.as_bytes());
    if let Some(pid) = pid {
        push_field(&mut out, "SYSLOG_PID", pid.to_string().as_bytes());
    }
    push_field(&mut out, "CLUSTERD_INSTANCE", instance.as_bytes());
    push_field(&mut out, "MESSAGE", message);
    out
}

fn push_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') || key == "MESSAGE" {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// clusterd's side of journald: one unconnected, non-blocking datagram socket, and the
/// entries journald has not taken yet, oldest first (with what each came from, so that they
/// can go to their units' files instead).
pub(crate) struct JournalLink<T> {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    backlog: VecDeque<(Vec<u8>, T)>,
    backlog_bytes: usize,
}

/// Why an entry could not go to journald now.
#[derive(Debug)]
pub(crate) enum NotSent {
    /// Queued: it goes with the next [`JournalLink::retry`].
    Queued(io::Error),
    /// The backlog is full: the caller gets the entry back (and should empty the backlog
    /// elsewhere).
    Full,
}

impl<T> JournalLink<T> {
    pub(crate) fn new(path: &Path) -> Self {
        JournalLink {
            socket: None,
            path: path.to_path_buf(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether entries wait for journald.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Sends `entry` now, or queues it behind the others (order is kept).
    pub(crate) fn send(&mut self, entry: Vec<u8>, tag: T) -> Result<(), NotSent> {
        if self.backlog.is_empty() {
            match self.send_one(&entry) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.queue(entry, tag)?;
                    return Err(NotSent::Queued(e));
                }
            }
        }
        self.queue(entry, tag)?;
        Err(NotSent::Queued(io::Error::from(ErrorKind::WouldBlock)))
    }

    fn queue(&mut self, entry: Vec<u8>, tag: T) -> Result<(), NotSent> {
        if self.backlog_bytes + entry.len() > BACKLOG_BYTES {
            return Err(NotSent::Full);
        }
        self.backlog_bytes += entry.len();
        self.backlog.push_back((entry, tag));
        Ok(())
    }

    /// Sends what waits, oldest first, until journald stops taking it. Ok when nothing
    /// waits any more.
    pub(crate) fn retry(&mut self) -> io::Result<()> {
        while let Some((entry, _)) = self.backlog.front() {
            let entry = entry.clone();
            self.send_one(&entry)?;
            if let Some((sent, _)) = self.backlog.pop_front() {
                self.backlog_bytes = self.backlog_bytes.saturating_sub(sent.len());
            }
        }
        Ok(())
    }

    /// Takes every waiting entry out (to write them elsewhere), oldest first.
    pub(crate) fn take_backlog(&mut self) -> Vec<T> {
        self.backlog_bytes = 0;
        self.backlog.drain(..).map(|(_, tag)| tag).collect()
    }

    fn send_one(&mut self, entry: &[u8]) -> io::Result<()> {
        if self.socket.is_none() {
            let socket = UnixDatagram::unbound()?;
            socket.set_nonblocking(true)?;
            self.socket = Some(socket);
        }
        let Some(socket) = &self.socket else {
            return Err(ErrorKind::NotConnected.into());
        };
        loop {
            match socket.send_to(entry, &self.path) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_any_bytes_is_sent_in_the_binary_safe_form() {
        let e = entry("web", Some(42), "web[0]", PRIORITY_ERR, b"a\nb\0c");
        let mut expected = b"PRIORITY=3\nSYSLOG_IDENTIFIER=web\nSYSLOG_PID=42\nCLUSTERD_INSTANCE=web[0]\nMESSAGE\n".to_vec();
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\0c\n");
        assert_eq!(e, expected);
    }

    #[test]
    fn entries_wait_in_order_while_nobody_listens_and_the_backlog_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let mut link = JournalLink::new(&path);
        assert!(matches!(
            link.send(b"one".to_vec(), 1),
            Err(NotSent::Queued(_))
        ));
        assert!(matches!(
            link.send(b"two".to_vec(), 2),
            Err(NotSent::Queued(_))
        ));
        let big = vec![0u8; BACKLOG_BYTES];
        assert!(matches!(link.send(big, 3), Err(NotSent::Full)));
        let journald = UnixDatagram::bind(&path).unwrap();
        link.retry().unwrap();
        let mut buffer = [0u8; 16];
        let n = journald.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"one");
        let n = journald.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"two");
        assert!(!link.has_backlog());
    }
}
