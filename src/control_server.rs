//! The control socket: clusterd's end of the `clusterctl` protocol. One thread accepts; each
//! connection gets a short-lived thread that checks the peer, reads one request line, hands it
//! to the supervisor loop and writes the answer back. A bad request gets an error reply and
//! never reaches the supervisor.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use log::{debug, warn};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Uid};

use crate::event::Event;
use crate::protocol::{RequestEnvelope, Response, MAX_REQUEST_BYTES, PROTOCOL_VERSION};
use crate::unix_socket_file::{self, SocketFileState};

/// A client that connects and says nothing is dropped after this long.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may use the control socket: root, clusterd's own user, and the configured group.
#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy {
    pub owner: Uid,
    pub group: Option<Gid>,
}

impl AccessPolicy {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0 || uid == self.owner.as_raw() || self.group.is_some_and(|g| g.as_raw() == gid)
    }
}

/// Creates the control socket: 0600, or 0660 with `group`. Refuses to start when another
/// clusterd answers on the path; removes a stale socket file left by a crash.
pub fn bind_control_socket(path: &Path, group: Option<Gid>) -> Result<UnixListener, String> {
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
pub fn serve(
    listener: UnixListener,
    events: Sender<Event>,
    policy: AccessPolicy,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for connection in listener.incoming() {
                let Ok(stream) = connection else { continue };
                let events = events.clone();
                let spawned = thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || handle_connection(stream, events, policy));
                if let Err(e) = spawned {
                    warn!("control socket: cannot serve a connection: {e}");
                }
            }
        })?;
    Ok(())
}

fn handle_connection(mut stream: UnixStream, events: Sender<Event>, policy: AccessPolicy) {
    let response = match getsockopt(&stream, sockopt::PeerCredentials) {
        Err(e) => Response::failed(format!("cannot identify the client: {e}")),
        Ok(peer) if !policy.allows(peer.uid(), peer.gid()) => {
            warn!(
                "control socket: refused uid {} (pid {})",
                peer.uid(),
                peer.pid()
            );
            // Read (and drop) the request first: hanging up on an unread request would make
            // the client's write fail, and it would never see this answer.
            let _ = read_request(&stream);
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
        Ok(_) => match read_request(&stream) {
            Err(error) => Response::failed(error),
            Ok(envelope) => {
                let (reply, answer) = crossbeam_channel::bounded(1);
                let sent = events.send(Event::Control {
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
    let mut line = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        debug!("control socket: client went away before the answer: {e}");
    }
}

fn read_request(stream: &UnixStream) -> Result<RequestEnvelope, String> {
    let _ = stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT));
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES as u64 + 1));
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
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
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
