//! Doing work for a Node worker with that worker's rights, not clusterd's: a worker's
//! `listen()` makes the primary — clusterd, often root — bind a socket. A `nobody` worker must
//! not get a socket file in a directory only root may write to, a privileged port, or root's
//! hand in chmod or unlink.
//!
//! File-system work runs under the worker's file-system identity: `setfsuid`, `setfsgid` and
//! `setgroups` as raw system calls, which change only the calling thread (the I/O thread), not
//! every thread of clusterd as glibc's wrappers of `setgroups` would. While the fsuid is not 0
//! the kernel also drops the capabilities that bypass file permissions.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

/// The account a worker runs as; `uid: None` is clusterd's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkerRights {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    pub groups: Vec<Gid>,
}

impl WorkerRights {
    /// True if the worker may bind `port` (TCP or UDP): unprivileged ports always; the ones
    /// below `net.ipv4.ip_unprivileged_port_start` only for a worker that runs as root, or as
    /// clusterd itself (whose own rights the kernel checks).
    pub(crate) fn may_bind_port(&self, port: u16) -> bool {
        match self.uid {
            None => true,
            Some(uid) if uid.is_root() => true,
            Some(_) => port == 0 || port >= unprivileged_port_start(),
        }
    }

    /// Runs `work` with the worker's file-system identity on this thread, and switches back.
    /// Without a `uid`, or when clusterd is not root (then workers run as clusterd's user),
    /// `work` runs as it is.
    pub(crate) fn as_worker<T>(&self, work: impl FnOnce() -> T) -> Result<T, Errno> {
        let Some(uid) = self.uid else {
            return Ok(work());
        };
        if !nix::unistd::geteuid().is_root() {
            return Ok(work());
        }
        let gid = self.gid.unwrap_or(Gid::from_raw(uid.as_raw()));
        let own_groups = nix::unistd::getgroups()?;
        let groups: Vec<libc::gid_t> = if self.groups.is_empty() {
            vec![gid.as_raw()]
        } else {
            self.groups.iter().map(|g| g.as_raw()).collect()
        };
        set_thread_groups(&groups)?;
        // SAFETY: setfsgid/setfsuid take integers and change only this thread's credentials;
        // they return the previous value.
        let old_fsgid = unsafe { libc::syscall(libc::SYS_setfsgid, gid.as_raw()) };
        // SAFETY: as above.
        let old_fsuid = unsafe { libc::syscall(libc::SYS_setfsuid, uid.as_raw()) };
        let result = work();
        // SAFETY: as above; the old values came from the kernel.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, old_fsuid);
            libc::syscall(libc::SYS_setfsgid, old_fsgid);
        }
        let own: Vec<libc::gid_t> = own_groups.iter().map(|g| g.as_raw()).collect();
        if let Err(e) = set_thread_groups(&own) {
            log::error!("cannot restore the I/O thread's groups: {e}");
        }
        Ok(result)
    }
}

/// `setgroups(2)` for this thread only.
fn set_thread_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe a live slice for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `net.ipv4.ip_unprivileged_port_start` (1024 unless changed).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_ports_need_root() {
        let nobody = WorkerRights {
            uid: Some(Uid::from_raw(65534)),
            gid: Some(Gid::from_raw(65534)),
            groups: Vec::new(),
        };
        assert!(!nobody.may_bind_port(80));
        assert!(nobody.may_bind_port(0));
        assert!(nobody.may_bind_port(8080));
        assert!(WorkerRights::default().may_bind_port(80));
    }

    #[test]
    fn file_system_work_runs_as_the_worker_and_switches_back() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap(); // 0700, root's
        let nobody = WorkerRights {
            uid: Some(Uid::from_raw(65534)),
            gid: Some(Gid::from_raw(65534)),
            groups: Vec::new(),
        };
        let denied = nobody
            .as_worker(|| std::fs::write(dir.path().join("x"), "x"))
            .unwrap();
        assert_eq!(
            denied.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::PermissionDenied)
        );
        // Root again afterwards.
        std::fs::write(dir.path().join("y"), "y").unwrap();
    }
}
