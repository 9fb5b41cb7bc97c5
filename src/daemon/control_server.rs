//! The control socket: clusterd's end of the `clusterctl` protocol. One thread accepts; each
//! connection gets a short-lived thread that checks the peer, reads one request line, hands it
//! to the supervisor loop and writes the answer back. A bad request gets an error reply and
//! never reaches the supervisor.
//!
//! Clients cannot hold clusterd: at most [`MAX_CONNECTIONS`] are served at once (the others
//! get an error at once), a request must arrive whole within [`REQUEST_DEADLINE`], and an
//! answer must be taken within [`ANSWER_DEADLINE`]. At the file-descriptor limit the accept
//! loop gives up a reserve fd to take one connection in, so clusterctl still gets an answer,
//! and otherwise backs off instead of spinning on EMFILE.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{debug, warn};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Uid};

use crate::daemon::logs::{Logs, LogsQuery};
use crate::daemon::os::unix_socket_file::{self, SocketFileState};
use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::protocol::{
    Request, RequestEnvelope, Response, MAX_LOG_LINES, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use crate::supervisor::event::Event;
use crate::unit::is_valid_unit_name;

/// A client must have sent its whole request line this long after connecting.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A client refused for its uid gets this long to finish sending (so it can read the refusal).
const REFUSED_DEADLINE: Duration = Duration::from_secs(1);
/// A client must take its answer within this long.
pub(crate) const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; one more is answered with an error and closed.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// After an accept error that leaves nothing to accept (EMFILE without a reserve fd, ENOMEM),
/// the accept loop waits this long, doubling up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Who may use the control socket: root, clusterd's own user, and the configured group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessPolicy {
    pub owner: Uid,
    pub group: Option<Gid>,
}

impl AccessPolicy {
    /// `groups`: the peer's supplementary groups, asked only when its uid and primary gid do
    /// not already decide.
    fn allows(&self, uid: u32, gid: u32, groups: impl FnOnce() -> Vec<u32>) -> bool {
        if uid == 0 || uid == self.owner.as_raw() {
            return true;
        }
        let Some(group) = self.group.map(Gid::as_raw) else {
            return false;
        };
        // A member of the group usually has it as a supplementary group (`adduser alice
        // clusterd`), not as the primary one.
        gid == group || groups().contains(&group)
    }
}

/// The supplementary groups the peer had when it connected (SO_PEERGROUPS: the kernel's
/// record, like SO_PEERCRED's uid and gid, not a look-up in /etc/group).
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut length = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the kernel writes at most `length` bytes into `groups`, which has that room.
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut length,
            )
        };
        let count = length as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return groups;
        }
        // ERANGE: `length` says how much room it needs.
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && count > groups.len()
        {
            groups.resize(count, 0);
            continue;
        }
        return Vec::new();
    }
}

/// Creates the control socket: 0600, or 0660 with `group`. Refuses to start when another
/// clusterd answers on the path; removes a stale socket file left by a crash.
pub(crate) fn bind_control_socket(path: &Path, group: Option<Gid>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match unix_socket_file::probe(path) {
        SocketFileState::Absent => {}
        SocketFileState::Stale => std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?,
        SocketFileState::InUse(reason) => {
            return Err(format!(
                "cannot use {} for the control socket: {reason} (is another clusterd running? stop it first, or pass --socket to use another path)",
                path.display()
            ))
        }
    }
    // Create the file with its final mode: no window in which others could connect.
    let mask = if group.is_some() { 0o117 } else { 0o177 };
    let previous = umask(Mode::from_bits_truncate(mask));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {gid}: {e}", path.display()))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    }
    Ok(listener)
}

/// Serves the control socket on its own thread until the process exits.
pub(crate) fn serve(
    listener: UnixListener,
    events: EventSender,
    policy: AccessPolicy,
    logs: Logs,
) -> std::io::Result<()> {
    let routes = Routes { events, logs };
    thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(listener, routes, policy))?;
    Ok(())
}

/// Where requests go: the supervisor loop, or — for the logs — the log thread.
#[derive(Clone)]
struct Routes {
    events: EventSender,
    logs: Logs,
}

fn accept_loop(listener: UnixListener, events: Routes, policy: AccessPolicy) {
    let active = Arc::new(AtomicUsize::new(0));
    // Given up to accept one connection when clusterd is out of file descriptors.
    let mut reserve = open_reserve();
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    let mut guard = ThreadGuard::new("control");
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if reserve.take().is_some() {
                    // One fd is free now: take the waiting connection in and answer it.
                    warn_limited("control socket: clusterd is out of file descriptors; using its reserve to answer");
                    if let Ok((stream, _)) = listener.accept() {
                        dispatch(stream, &events, policy, &active);
                    }
                    reserve = open_reserve();
                } else {
                    warn_limited("control socket: clusterd is out of file descriptors; waiting before accepting again");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    reserve = open_reserve();
                }
                continue;
            }
            Err(e) => {
                warn_limited(&format!("control socket: accept failed: {e}"));
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_ACCEPT_BACKOFF;
        if reserve.is_none() {
            reserve = open_reserve();
        }
        // A panic costs only that connection, never the accept loop (see thread_guard).
        if let Err(caught) = guard.run(|| dispatch(stream, &events, policy, &active)) {
            guard.report(
                caught,
                "dispatching a connection",
                "that connection is closed",
            );
        }
    }
}

/// Serves one connection on a thread of its own, unless [`MAX_CONNECTIONS`] are served
/// already: then it gets an error at once.
fn dispatch(stream: UnixStream, events: &Routes, policy: AccessPolicy, active: &Arc<AtomicUsize>) {
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::SeqCst);
        warn_limited("control socket: too many connections; refusing one");
        // Never block on a client that is not reading.
        let _ = stream.set_nonblocking(true);
        write_response(
            &stream,
            &Response::failed(format!(
                "clusterd is serving {MAX_CONNECTIONS} connections already; try again"
            )),
        );
        return;
    }
    let events = events.clone();
    let guard = ActiveConnection(Arc::clone(active));
    let spawned = thread::Builder::new()
        .name("control-conn".into())
        .spawn(move || {
            let _guard = guard;
            let mut thread_guard = ThreadGuard::new("control-conn");
            if let Err(caught) = thread_guard.run(|| handle_connection(stream, events, policy)) {
                thread_guard.report(caught, "serving a connection", "that connection is closed");
            }
        });
    if let Err(e) = spawned {
        // The closure (and with it the guard and the stream) was dropped.
        warn_limited(&format!("control socket: cannot serve a connection: {e}"));
    }
}

/// Counts a connection being served until it is dropped.
struct ActiveConnection(Arc<AtomicUsize>);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// A warning at most once a second from the control thread, so that a client that keeps
/// clusterd at its limits cannot fill the log.
fn warn_limited(message: &str) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
        *last = Some(now);
        warn!("{message}");
    }
}

fn handle_connection(stream: UnixStream, routes: Routes, policy: AccessPolicy) {
    let response = match getsockopt(&stream, sockopt::PeerCredentials) {
        Err(e) => Response::failed(format!("cannot identify the client: {e}")),
        Ok(peer) if !policy.allows(peer.uid(), peer.gid(), || peer_groups(&stream)) => {
            warn!(
                "control socket: refused uid {} (pid {})",
                peer.uid(),
                peer.pid()
            );
            // Read (and drop) the request first: hanging up on an unread request would make
            // the client's write fail, and it would never see this answer.
            let _ = read_request(&stream, REFUSED_DEADLINE);
            Response::failed(format!(
                "permission denied: uid {} may not control clusterd (allowed: root, uid {}{})",
                peer.uid(),
                policy.owner,
                policy
                    .group
                    .map(|g| format!(", group {g}"))
                    .unwrap_or_default()
            ))
        }
        Ok(_) => match read_request(&stream, REQUEST_DEADLINE) {
            Err(error) => Response::failed(error),
            Ok(RequestEnvelope {
                request:
                    Request::Logs {
                        unit,
                        lines,
                        follow,
                        instance,
                        stream: which,
                    },
                ..
            }) => {
                if !is_valid_unit_name(&unit) {
                    Response::failed(format!("invalid unit name {unit:?}"))
                } else {
                    // The log thread answers, and keeps the connection to follow.
                    let query = LogsQuery {
                        unit,
                        lines: lines.min(MAX_LOG_LINES),
                        follow,
                        instance,
                        stream: which.map(|s| s.name().to_string()),
                    };
                    routes.logs.serve(query, stream);
                    return;
                }
            }
            Ok(RequestEnvelope {
                request: Request::ReopenLogs {},
                ..
            }) => {
                routes.logs.reopen();
                Response::done("reopening every log file")
            }
            Ok(envelope) => {
                let (reply, answer) = crossbeam_channel::bounded(1);
                let sent = routes.events.send(Event::Control {
                    request: envelope.request,
                    reply,
                });
                match sent.ok().and_then(|()| answer.recv().ok()) {
                    Some(response) => response,
                    None => Response::failed("clusterd is shutting down"),
                }
            }
        },
    };
    let _ = stream.set_write_timeout(Some(ANSWER_DEADLINE));
    write_response(&stream, &response);
}

fn write_response(mut stream: &UnixStream, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        debug!("control socket: client went away before the answer: {e}");
    }
}

/// Reads one request line, which must arrive whole within `deadline` (a client sending a byte
/// every few seconds cannot hold the connection) and be at most [`MAX_REQUEST_BYTES`].
fn read_request(mut stream: &UnixStream, deadline: Duration) -> Result<RequestEnvelope, String> {
    let give_up_at = std::time::Instant::now() + deadline;
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = give_up_at.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the request did not arrive within {}s",
                deadline.as_secs()
            ));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    line.truncate(end);
                    break;
                }
                if line.len() > MAX_REQUEST_BYTES {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(format!("cannot read the request: {e}")),
        }
    }
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))?;
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v} (this clusterd speaks version {PROTOCOL_VERSION}); use a matching clusterctl"
            ))
        }
        None => return Err("malformed request: no protocol version".into()),
    }
    serde_json::from_value(value).map_err(|e| format!("invalid request: {e}"))
}

/// Removes the socket file at shutdown.
pub(crate) struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
