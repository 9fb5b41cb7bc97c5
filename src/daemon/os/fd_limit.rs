//! clusterd's file-descriptor limit. Every instance costs clusterd three descriptors (its
//! worker channel, and the pipes of its stdout and stderr), so the usual soft limit of 1024
//! would stop clusterd near 300 instances: at start-up clusterd raises its soft limit to the
//! hard one, as systemd does for itself. Instances get the soft limit clusterd was started
//! with, not the raised one: programs that use `select()` break above 1024 descriptors.

use std::sync::OnceLock;

use log::{debug, info};

static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises the soft limit to the hard limit, remembering the original for instances.
pub(crate) fn raise() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a valid local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let _ = ORIGINAL.set(limit);
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads a valid local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        info!(
            "file descriptor limit raised from {} to {} (instances keep {})",
            limit.rlim_cur, limit.rlim_max, limit.rlim_cur
        );
    } else {
        debug!(
            "cannot raise the file descriptor limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The limit instances get: the one clusterd was started with, if it raised its own.
pub(crate) fn for_instances() -> Option<libc::rlimit> {
    ORIGINAL.get().copied()
}
