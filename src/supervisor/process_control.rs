//! `ProcessControl`: everything the supervisor asks of the operating system — start an
//! instance or a hook, signal a process group, collect exited children, release a worker
//! channel. The daemon uses [`crate::daemon::os_process_control::OsProcessControl`]; the supervisor's
//! unit tests use a recording fake, so the state machine runs without real processes.
//!
//! The trait has no default bodies: every method is a request the supervisor makes, and an
//! implementation that does not answer one does not compile. (Of its 31 methods, 23 had a default body and 18 of those did
//! nothing, so a new OS side, or a method added later, could be ignored without a word.) The test fake says for each what it does — records it, or answers "nothing" with
//! the reason. The methods come in four groups, each under a heading: starting, signalling
//! and collecting processes; what outlives an instance (sockets, cgroups, leftovers); files
//! and time; the unit's log and what status reports.
//!
//! Why one trait and not one per group: the supervisor needs all four from the one OS side
//! (there is no implementation that has some groups and not others), so separate traits
//! would be taken together everywhere, and each side would be spread over four `impl`
//! blocks. A method added to the trait goes into its group, without a default body, and is
//! implemented in `OsProcessControl` and in the fake of `src/supervisor/tests.rs`.

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::unit::Unit;

/// Identifies one started process for its whole life, across pid reuse. Worker-channel and
/// timer events carry it, so a late event for a process that is gone is recognised as stale.
pub(crate) type SpawnId = u64;

/// Everything needed to start one instance of a unit.
pub(crate) struct SpawnRequest<'a> {
    pub id: SpawnId,
    pub unit: &'a Unit,
    pub index: u32,
    /// `CLUSTERD_INSTANCES`: how many instances the unit runs now.
    pub instances: u32,
}

/// Where starting a process failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStage {
    /// Before anything was created: the program is not in PATH, an argument holds a NUL.
    Program,
    /// Reading the unit's `environment_file`s.
    EnvironmentFile,
    /// Binding the unit's `listen` sockets for this instance.
    Sockets,
    /// Creating the worker channel.
    Channel,
    /// Creating the instance's cgroup.
    Cgroup,
    /// Creating its stdout and stderr (pipes to the log thread, journald streams).
    Output,
    /// Creating the process (the exec-report pipe, the signal mask, fork).
    Fork,
    /// In the child: its own session.
    Session,
    /// In the child: stdin from /dev/null.
    Stdin,
    /// In the child: the passed file descriptors.
    PassFds,
    /// In the child: the unit's user and groups.
    Credentials,
    /// In the child: its working directory.
    WorkingDirectory,
    /// In the child: moving into its cgroup (where it could not be created inside).
    JoinCgroup,
    /// In the child: execve.
    Exec,
}

/// Why a process could not be started: where, the OS error if there was one, and a message
/// for status and the log (`cannot execute "nosuch": No such file or directory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpawnError {
    pub stage: SpawnStage,
    pub errno: Option<nix::errno::Errno>,
    /// The program, as the unit's `command` names it.
    pub program: String,
    pub message: String,
}

impl SpawnError {
    /// A failure without an OS error (the program is not found, a socket cannot be bound).
    pub(crate) fn new(stage: SpawnStage, program: &str, message: impl Into<String>) -> Self {
        SpawnError {
            stage,
            errno: None,
            program: program.to_string(),
            message: message.into(),
        }
    }

    /// A failed system call: `what: <errno text>`.
    pub(crate) fn from_errno(
        stage: SpawnStage,
        program: &str,
        what: &str,
        errno: nix::errno::Errno,
    ) -> Self {
        SpawnError {
            stage,
            errno: Some(errno),
            program: program.to_string(),
            message: format!("{what}: {}", errno.desc()),
        }
    }

    /// A failed I/O operation of std: its OS error (EIO if it has none).
    pub(crate) fn from_io(
        stage: SpawnStage,
        program: &str,
        what: &str,
        e: &std::io::Error,
    ) -> Self {
        let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        Self::from_errno(stage, program, what, errno)
    }

    /// The system ran out of something (file descriptors, processes, memory: EMFILE, ENFILE,
    /// EAGAIN, ENOMEM, ENOBUFS): the program is not at fault and a later try may work, so this
    /// is no crash to count against the restart budget.
    pub(crate) fn out_of_resources(&self) -> bool {
        use nix::errno::Errno;
        matches!(
            self.errno,
            Some(Errno::EMFILE | Errno::ENFILE | Errno::EAGAIN | Errno::ENOMEM | Errno::ENOBUFS)
        )
    }

    /// The program cannot be executed as the unit says (not found, not executable, not a
    /// program, its working directory or user missing): no crash either — running it again
    /// at once fails the same way, and what fixes it is the user (installing the program,
    /// creating the directory), so it is retried on a backoff outside the restart budget.
    pub(crate) fn cannot_execute(&self) -> bool {
        !self.out_of_resources()
            && matches!(
                self.stage,
                SpawnStage::Program
                    | SpawnStage::WorkingDirectory
                    | SpawnStage::Credentials
                    | SpawnStage::Exec
            )
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One `[health]` check of an instance.
pub(crate) struct ProbeRequest<'a> {
    /// The instance checked.
    pub id: SpawnId,
    /// The check's number: an HTTP check's result comes back with it.
    pub seq: u64,
    pub unit: &'a Unit,
    pub index: u32,
    /// The instance's own process (`MAINPID` of a command check).
    pub pid: Pid,
    pub probe: &'a crate::unit::Probe,
    /// An HTTP check answers by then at the latest (a command is killed by the supervisor).
    pub timeout: std::time::Duration,
}

/// The `on_giveup` alarm of a unit.
pub(crate) struct HookRequest<'a> {
    pub unit: &'a Unit,
    pub command: &'a [String],
    pub environment: Vec<(String, String)>,
}

/// A wait status exactly as `waitpid(2)` wrote it. The OS side hands these over undecoded so
/// that the supervisor's own decoding ([`ExitStatus::decode`]) is the one path every exit
/// takes, including signal numbers no library knows by name (real-time signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawWaitStatus(pub i32);

impl RawWaitStatus {
    /// The status of a child that called `exit(code)`.
    #[cfg(test)]
    pub(crate) fn exited(code: u8) -> Self {
        RawWaitStatus(i32::from(code) << 8)
    }

    /// The status of a child ended by signal `number`.
    #[cfg(test)]
    pub(crate) fn killed(number: i32) -> Self {
        RawWaitStatus(number & 0x7f)
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    Code(i32),
    /// Ended by this signal number (any of 1..=64, named or not).
    Signaled(i32),
}

impl ExitStatus {
    /// Decodes a wait status the way `<sys/wait.h>`'s macros do. `None` for a stopped or
    /// continued child, which has not ended.
    pub(crate) fn decode(raw: RawWaitStatus) -> Option<ExitStatus> {
        let status = raw.0;
        let termination_signal = status & 0x7f;
        if termination_signal == 0 {
            // WIFEXITED
            Some(ExitStatus::Code((status >> 8) & 0xff))
        } else if termination_signal != 0x7f {
            // WIFSIGNALED (the core-dump bit 0x80 does not matter here)
            Some(ExitStatus::Signaled(termination_signal))
        } else {
            // WIFSTOPPED; WIFCONTINUED (0xffff) also lands here
            None
        }
    }

    /// systemd's definition of a clean exit, used by `restart = "on-failure"`: code 0, or
    /// ended by SIGHUP, SIGINT, SIGTERM or SIGPIPE.
    pub(crate) fn is_clean(self) -> bool {
        match self {
            ExitStatus::Code(code) => code == 0,
            ExitStatus::Signaled(n) => {
                [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE].contains(&n)
            }
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled(n) => match Signal::try_from(n) {
                Ok(signal) => write!(f, "killed by {}", signal.as_str()),
                Err(_) => match n - libc::SIGRTMIN() {
                    0 => write!(f, "killed by signal {n} (SIGRTMIN)"),
                    offset if offset > 0 => {
                        write!(f, "killed by signal {n} (SIGRTMIN+{offset})")
                    }
                    _ => write!(f, "killed by signal {n}"),
                },
            },
        }
    }
}

/// How a process is stopped, as [`ProcessControl::begin_stop`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GracefulStop {
    /// Send `kill_signal` now (SIGKILL follows after `kill_timeout`).
    SendKillSignal,
    /// The process was asked to leave — a Node cluster worker to disconnect (close its
    /// servers, finish its requests, exit), or any instance with its unit's `stop_message`:
    /// send `kill_signal` only if it is still running after half of `kill_timeout`.
    Asked,
}

/// What an instance uses: all of its processes together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    pub(crate) cpu_seconds: f64,
    /// Over the time since the previous measurement (or since the instance started).
    pub(crate) cpu_percent: f64,
    pub(crate) memory_bytes: u64,
}

pub(crate) trait ProcessControl {
    // Starting, signalling and collecting processes.

    /// Starts an instance, with the unit's sockets as fds 3, 4, ...; returns its pid, which is
    /// also its process group id. The error is a message for status and the log, such as
    /// `cannot execute "nosuch": No such file or directory`. It does not wait for the
    /// child's exec: a failure found in the child (a missing working directory, a program
    /// that cannot be executed) comes later from [`ProcessControl::exec_failures`].
    fn spawn(&mut self, request: &SpawnRequest) -> Result<Pid, SpawnError>;

    /// The instances from [`ProcessControl::spawn`] whose exec failed, by pid, found since
    /// the last call: each has exited (status 127, still to be reaped) without running its
    /// program, and the error says why, as `spawn` would have. `wait`: first waits until
    /// every instance started so far has exec'd or failed (they exec side by side: about
    /// the slowest one's time), for an answer that is to name the cause.
    fn exec_failures(&mut self, wait: bool) -> Vec<(Pid, SpawnError)>;

    /// Starts an `on_giveup` hook.
    fn spawn_hook(&mut self, request: &HookRequest) -> Result<Pid, SpawnError>;

    /// Starts one `[health]` check, without waiting for it. A command check is a child of
    /// clusterd leading its own group (its pid is returned; the supervisor reaps it and
    /// kills it at its timeout); an HTTP check (`None` returned) runs off the loop and ends
    /// as `Event::ProbeDone` within its timeout. The error says why it cannot start.
    fn start_probe(&mut self, request: &ProbeRequest) -> Result<Option<Pid>, String>;

    /// Instance `id` is hung and about to be replaced: hand it no new work where clusterd
    /// hands work out (a Node cluster's round-robin connections).
    fn withdraw_hung(&mut self, id: SpawnId);

    /// Sends `signal` to the process group `pgid` (of a hook). A group that no longer exists
    /// is not an error worth reporting: the caller learns of exits through `reap`.
    fn signal_group(&mut self, pgid: Pid, signal: Signal);

    /// Sends `signal` to one process (an instance's own, for `clusterctl kill`).
    fn signal_process(&mut self, pid: Pid, signal: Signal);

    /// Sends signal `number`, one `Signal` has no name for (a real-time one, for `clusterctl
    /// kill`), to instance `id`'s own process `pid`, or with `all` to every process of it as
    /// [`ProcessControl::signal_instance`] does.
    fn signal_number(&mut self, id: SpawnId, pid: Pid, number: i32, all: bool);

    /// Sends `signal` to every process of instance `id`, whose process group is `pgid`: its
    /// cgroup where it has one, else its process group. Also after the instance's own
    /// process has been released, for what it left behind.
    fn signal_instance(&mut self, id: SpawnId, pgid: Pid, signal: Signal);

    /// Writes `line` (one JSON value and a newline) on instance `id`'s worker channel,
    /// without waiting: the channel's queue takes it, or the error says why it cannot (the
    /// instance leaves too much unread).
    fn send_message(&mut self, id: SpawnId, line: Vec<u8>) -> Result<(), String>;

    /// Process `id` (pid `pid`) is about to be stopped with `kill_signal`. The OS side may
    /// begin a gentler stop first; see [`GracefulStop`]. With a `stop_message` (a line for
    /// its worker channel), that message is the gentler stop; without one, and without a
    /// gentler way of its own, the answer is [`GracefulStop::SendKillSignal`].
    fn begin_stop(
        &mut self,
        id: SpawnId,
        pid: Pid,
        kill_signal: Signal,
        stop_message: Option<Vec<u8>>,
    ) -> GracefulStop;

    /// Every child that has exited since the last call (`waitpid(-1, WNOHANG)` until empty),
    /// with its wait status undecoded. Must never stop early on a status it does not
    /// understand: a child reaped and not reported is an exit lost for good.
    fn reap(&mut self) -> Vec<(Pid, RawWaitStatus)>;

    /// The process of `id` has exited: close clusterd's end of its worker channel.
    fn release(&mut self, id: SpawnId);

    // What outlives an instance: the unit's sockets, its cgroups, what an instance left.

    /// Binds the `listen` sockets of `unit` (the shared ones; reuseport sockets are bound per
    /// index when an instance needs them). They belong to the unit and outlive its instances
    /// until [`ProcessControl::close_sockets`]. The error names the unit, the address and the
    /// OS error.
    fn open_sockets(&mut self, unit: &Unit) -> Result<(), String>;

    /// True while the unit's sockets are open.
    fn sockets_open(&self, unit: &str) -> bool;

    /// Closes the unit's sockets and removes the unix socket files it created.
    fn close_sockets(&mut self, unit: &str);

    /// Instance indexes `index` and above are gone (scale-down): release what the OS side
    /// kept for them — their reuseport sockets, the cgroups made ready for their next start.
    fn release_indexes_from(&mut self, unit: &str, index: u32);

    /// The unit is stopped for good (stopped by hand, removed, or clusterd is exiting) and none
    /// of its processes is left: release what the OS side kept for it across its instances'
    /// lives — its `listen` sockets (as [`ProcessControl::close_sockets`]), the sockets of its
    /// Node cluster workers, the cgroups made ready for its next starts. Not called
    /// between the stop and the start of a restart.
    fn release_unit(&mut self, unit: &str);

    /// SIGKILLs what is left of instance `id`, whose own process (pid `pgid`) exited
    /// `kill_timeout` ago. Without a cgroup, only its process group can be reached, and a
    /// process that now has the pid `pgid` (`pid_reused`, or any other) means the group is
    /// someone else's: implementations must not kill it then.
    fn kill_leftovers(&mut self, id: SpawnId, pgid: Pid, pid_reused: bool);

    /// After [`ProcessControl::release`]: true if processes of the instance are still
    /// running (its cgroup is not empty). The supervisor then counts the instance as not
    /// gone until [`ProcessControl::collect_cleared`] names it.
    fn has_leftovers(&mut self, id: SpawnId) -> bool;

    /// Released instances whose last process has exited since the last call.
    fn collect_cleared(&mut self) -> Vec<SpawnId>;

    /// The supervisor stops waiting for what released instance `id` left (it outlived a
    /// SIGKILL by a deadline): it is no longer named by [`ProcessControl::collect_cleared`].
    /// Returns what is left, for the log.
    fn give_up_on_leftovers(&mut self, id: SpawnId) -> String;

    /// True while the OS side has work that is best done when nothing else happens —
    /// preparing what the next spawns need, say, which must not take the CPU from a child
    /// that is being exec'd. The daemon calls [`ProcessControl::do_idle_work`] once its loop
    /// has been idle for a moment.
    fn has_idle_work(&self) -> bool;

    fn do_idle_work(&mut self);

    // Files and time: `watch` and `cron_restart`.

    /// Watches the files `unit` asks to (`watch`) instead of what unit `name` watched before;
    /// `None` (a unit that is gone) watches nothing. Changes come back as
    /// `Event::FilesChanged`.
    fn watch_files(&mut self, name: &str, unit: Option<&Unit>);

    /// How many directories unit `name` watches, and why some of what it asks for is not
    /// watched, for status; `None` if it watches nothing.
    fn watch_report(&self, name: &str) -> Option<(u64, Option<String>)>;

    /// The local date and time now, for `cron_restart` schedules.
    fn local_time(&self) -> crate::unit::cron::LocalTime;

    /// How long until local time `then` (zero if it has passed). The daemon asks the C
    /// library, which knows when daylight saving time changes; counting on the calendar is
    /// [`crate::unit::cron::LocalTime::duration_until`].
    fn until_local(&self, then: crate::unit::cron::LocalTime) -> std::time::Duration;

    // The unit's log, and what status reports.

    /// clusterd's own event about `unit` (an instance of it when `index` is given): it goes
    /// into the unit's log among its instances' lines, so the log alone tells why an
    /// instance restarted.
    fn unit_event(&mut self, unit: &Unit, index: Option<u32>, text: &str);

    /// Instance `index` of `unit` runs as `pid` (after the events that led to its start):
    /// its log notes it, and its output is read from then on.
    fn instance_started(&mut self, unit: &Unit, index: u32, pid: Pid);

    /// What the given live instances (id, pid, start) use now, for status; instances it cannot
    /// measure are left out.
    fn usage(&self, instances: &[(SpawnId, Pid, Instant)]) -> HashMap<SpawnId, Usage>;

    /// What clusterd itself uses, for status and metrics.
    fn daemon_status(&self) -> Option<crate::protocol::DaemonStatus>;

    /// Where the unit's output goes, and any trouble with it, for status.
    fn log_destination(&self, unit: &Unit) -> Option<(String, Option<String>)>;

    /// How instances are isolated, for status: `cgroup` or `process-group`, with details.
    fn isolation(&self) -> Option<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_decode_like_the_c_macros() {
        assert_eq!(
            ExitStatus::decode(RawWaitStatus::exited(3)),
            Some(ExitStatus::Code(3))
        );
        assert_eq!(
            ExitStatus::decode(RawWaitStatus(libc::SIGSEGV | 0x80)),
            Some(ExitStatus::Signaled(libc::SIGSEGV))
        );
        // A real-time signal that nix's `Signal` cannot represent.
        let rt = libc::SIGRTMIN() + 1;
        let status = ExitStatus::decode(RawWaitStatus::killed(rt)).unwrap();
        assert_eq!(status, ExitStatus::Signaled(rt));
        assert!(status.to_string().contains("SIGRTMIN+1"), "{status}");
        assert!(!status.is_clean());
        // Stopped (WIFSTOPPED) and continued (WIFCONTINUED) children have not ended.
        assert_eq!(ExitStatus::decode(RawWaitStatus(0x137f)), None);
        assert_eq!(ExitStatus::decode(RawWaitStatus(0xffff)), None);
        assert!(ExitStatus::Signaled(libc::SIGTERM).is_clean());
    }
}
