//! Process hygiene: every daemon the bench starts is owned by a guard that kills it, and a final sweep kills what is left.

use super::*;

/// Process groups (and single pids) to SIGKILL if the bench itself is interrupted.
pub(super) static REGISTERED: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

pub(super) fn register(pid: i32) {
    for slot in &REGISTERED {
        if slot
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

pub(super) fn unregister(pid: i32) {
    for slot in &REGISTERED {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

pub(super) extern "C" fn on_fatal_signal(_: libc::c_int) {
    for slot in &REGISTERED {
        let pid = slot.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) is async-signal-safe and has no memory-safety preconditions.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    // SAFETY: _exit is async-signal-safe; workers die with their parents (PDEATHSIG).
    unsafe { libc::_exit(130) }
}

pub(super) fn install_hygiene() {
    // SAFETY: prctl with integer arguments; the handler only calls async-signal-safe functions.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        let handler = on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGHUP, handler);
        // 1000 instances need more than 1024 fds in some supervisors; children inherit this.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub(super) fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

pub(super) fn alive(pid: i32) -> bool {
    // A zombie still "exists" for kill(0): look at its state instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills every live child of the bench (daemons re-parented to it as subreaper included) until
/// none is left, and reaps them.
pub(super) fn sweep_descendants() {
    let me = std::process::id() as i32;
    for _ in 0..50 {
        let mut found = false;
        if let Ok(dir) = fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let Some((_, rest)) = stat.rsplit_once(") ") else {
                    continue;
                };
                let f: Vec<&str> = rest.split(' ').collect();
                if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(me) {
                    found = true;
                    if !f[0].starts_with('Z') {
                        kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        loop {
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            if r <= 0 {
                break;
            }
        }
        if !found {
            return;
        }
        sleep(Duration::from_millis(20));
    }
}

pub(super) struct SweepOnDrop;
impl Drop for SweepOnDrop {
    fn drop(&mut self) {
        sweep_descendants();
    }
}

/// A supervisor daemon started by the bench. Drop stops it for good.
pub(super) struct Daemon {
    pub(super) child: Option<Child>,
    /// The pid whose memory and CPU are measured (PM2: the God daemon, not the CLI).
    pub(super) pid: i32,
    /// PM2 only: how to run `pm2 kill` on drop.
    pub(super) pm2_kill: Option<Command>,
    /// Pids that must die with the daemon (every stamped worker).
    pub(super) extra: Vec<i32>,
}

impl Daemon {
    pub(super) fn from_child(child: Child) -> Daemon {
        let pid = child.id() as i32;
        register(pid);
        Daemon {
            child: Some(child),
            pid,
            pm2_kill: None,
            extra: Vec::new(),
        }
    }

    /// SIGTERM, then wait up to `grace` for the daemon to exit.
    pub(super) fn terminate(&mut self, grace: Duration) -> bool {
        kill(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return true;
                }
            } else if !alive(self.pid) {
                return true;
            }
            sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut cmd) = self.pm2_kill.take() {
            let _ = run_timeout(&mut cmd, Duration::from_secs(30));
        }
        // A graceful stop first: clusterd removes its instances' cgroups on the way out,
        // which a SIGKILL would leave behind (empty, but one tree per run).
        self.terminate(Duration::from_secs(5));
        kill(-self.pid, libc::SIGKILL);
        kill(self.pid, libc::SIGKILL);
        for &p in &self.extra {
            kill(p, libc::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        unregister(self.pid);
    }
}
