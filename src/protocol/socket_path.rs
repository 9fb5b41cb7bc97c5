//! Where the control socket lives, the same rule for `clusterd` and `clusterctl`:
//! `--socket`, else `$CLUSTERD_SOCKET`, else `/run/clusterd/clusterd.sock` for root and
//! `$XDG_RUNTIME_DIR/clusterd.sock` (or `/tmp/clusterd-$UID/clusterd.sock`) for other users.

use std::path::PathBuf;

pub fn control_socket_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    if let Some(path) = std::env::var_os("CLUSTERD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/clusterd/clusterd.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("clusterd.sock"),
        None => PathBuf::from(format!("/tmp/clusterd-{uid}/clusterd.sock")),
    }
}
