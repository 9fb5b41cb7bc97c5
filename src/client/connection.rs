//! `clusterctl`'s side of the control protocol: send one request, read one response (and,
//! for `logs`, the lines that follow it).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::transport::{Connection, Target};

use crate::protocol::{Request, RequestEnvelope, Response, PROTOCOL_VERSION};

#[derive(Debug)]
pub enum ClientError {
    /// clusterd is not running, or the socket cannot be reached (exit code 3).
    Unreachable(String),
    /// The connection broke or the answer made no sense.
    Protocol(String),
    /// clusterd runs, but this user may not use its socket (exit code 1, as when clusterd
    /// itself refuses the peer).
    Denied(String),
}

pub fn send_request(target: &Target, request: Request) -> Result<Response, ClientError> {
    exchange(target, request, None).map(|(response, _)| response)
}

/// Sends `request` and reads the response line; the rest of what clusterd sends (the lines
/// of `logs`) is left to read from the returned reader.
pub fn open_stream(
    target: &Target,
    request: Request,
) -> Result<(Response, BufReader<Connection>), ClientError> {
    exchange(target, request, None)
}

/// [`send_request`], giving up (with a `Protocol` error) if no answer came within `timeout`:
/// for callers that poll, such as tests and scripts.
pub fn send_request_within(
    socket: &std::path::Path,
    request: Request,
    timeout: std::time::Duration,
) -> Result<Response, ClientError> {
    exchange(&Target::Local(socket.to_path_buf()), request, Some(timeout))
        .map(|(response, _)| response)
}

fn exchange(
    target: &Target,
    request: Request,
    timeout: Option<std::time::Duration>,
) -> Result<(Response, BufReader<Connection>), ClientError> {
    let mut stream = Connection::open(target, timeout)?;
    let envelope = RequestEnvelope {
        version: PROTOCOL_VERSION,
        request,
    };
    let mut line =
        serde_json::to_vec(&envelope).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // If the write fails, clusterd may still have answered (a refusal, say): read it.
    let sent = stream.write_all(&line);
    let mut answer = Vec::new();
    // A status of 1000 instances is ~150 KB: in a few reads, not one per 8 KiB.
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let read = reader.read_until(b'\n', &mut answer);
    if answer.is_empty() {
        let why = match (sent, read) {
            (Err(e), _) => format!("cannot send the request: {e}"),
            (_, Err(e)) => format!("cannot read the answer: {e}"),
            _ => "clusterd closed the connection without answering".into(),
        };
        // Over ssh, ssh's exit status and stderr say more (no clusterctl there, say).
        return Err(reader.get_mut().why_closed(why));
    }
    let response = serde_json::from_slice(&answer)
        .map_err(|e| ClientError::Protocol(format!("malformed answer from clusterd: {e}")))?;
    Ok((response, reader))
}

/// Why `connect` failed, said so that the user knows what to do: EACCES means the socket is
/// there (clusterd runs) and its mode or a directory keeps this user out, which "is clusterd
/// running?" would only hide.
pub(super) fn connect_error(socket: &Path, e: &std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        use std::os::unix::fs::MetadataExt;
        let group = std::fs::metadata(socket)
            .ok()
            .and_then(|m| nix::unistd::Group::from_gid(m.gid().into()).ok().flatten())
            .map(|g| g.name)
            .filter(|name| name != "root");
        let join = match group {
            Some(group) => format!("join the {group} group (the socket's group: `sudo adduser $USER {group}`, then log in again)"),
            None => "join the socket's group (clusterd --socket-group; the packaged service uses clusterd)".to_string(),
        };
        return ClientError::Denied(format!(
            "permission denied on clusterd's socket {}: {join} or use sudo",
            socket.display()
        ));
    }
    ClientError::Unreachable(format!(
        "cannot connect to clusterd at {}: {e} (is clusterd running? use --socket or CLUSTERD_SOCKET for another path)",
        socket.display()
    ))
}
