//! Where the control socket lives, the same rule for `clusterd` and `clusterctl`:
//! `--socket`, else `$CLUSTERD_SOCKET`, else `/run/clusterd/clusterd.sock` for root and
//! `$XDG_RUNTIME_DIR/clusterd.sock` (or `/tmp/clusterd-$UID/clusterd.sock`) for other users.
//! clusterctl run by a user without a clusterd of their own talks to the system's.

use std::path::PathBuf;

/// The system clusterd's socket (root's default; the packaged service's).
pub const SYSTEM_SOCKET: &str = "/run/clusterd/clusterd.sock";

pub fn control_socket_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    if let Some(path) = std::env::var_os("CLUSTERD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    default_socket_path()
}

/// This user's socket when none is named (no `--socket`, no `$CLUSTERD_SOCKET`): the one
/// clusterd of this user that keeps the default log directory too.
pub fn default_socket_path() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from(SYSTEM_SOCKET);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("clusterd.sock"),
        None => PathBuf::from(format!("/tmp/clusterd-{uid}/clusterd.sock")),
    }
}

/// The socket clusterctl talks to: [`control_socket_path`], except that a user who named none
/// (no `--socket`, no `$CLUSTERD_SOCKET`) and runs no clusterd of their own gets the system
/// clusterd's, which answers members of its `--socket-group`.
pub fn client_socket_path(flag: Option<PathBuf>) -> PathBuf {
    let named =
        flag.is_some() || std::env::var_os("CLUSTERD_SOCKET").is_some_and(|p| !p.is_empty());
    let own = control_socket_path(flag);
    if named || own.exists() {
        return own;
    }
    let system = PathBuf::from(SYSTEM_SOCKET);
    if system.exists() {
        system
    } else {
        own
    }
}
