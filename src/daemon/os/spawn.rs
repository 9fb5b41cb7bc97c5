//! Starting a child process safely from a multi-threaded daemon.
//!
//! Everything the child needs (program path, argv, envp, fd list, credentials) is prepared in
//! the parent as an [`ExecPlan`]; between `fork` and `execve` the child only makes
//! async-signal-safe system calls and never allocates. A failure in the child is reported to
//! the parent (in memory they share until exec, or through a close-on-exec pipe after a plain
//! fork), so the caller gets "No such file or directory" rather than a mysterious exit code 127.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid};

use super::low_fds;
use super::spawn_plan::{fd_layout, CredentialPlan};
use crate::supervisor::process_control::{SpawnError, SpawnStage};

/// Placeholder in the envp for the child's own pid, written after fork: `LISTEN_PID` must be
/// the pid of the process that receives the sockets, which does not exist before fork.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
/// The same for `WATCHDOG_PID`, which `sd_watchdog_enabled()` compares with its own pid.
const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";
const PID_DIGITS: usize = 20;

/// How a child is created. By default the first way that works here; `CLUSTERD_SPAWN_PATH`
/// (a testing switch, read once at start-up) forces one, so that the fallbacks, which the
/// machines clusterd is tested on never need, are tested too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpawnPath {
    /// `clone3-vm`, else `clone3`, else `fork`: the first that works.
    #[default]
    Auto,
    /// `clone3-vm`: `clone3(CLONE_VM | CLONE_VFORK [| CLONE_INTO_CGROUP])` only, a child
    /// that shares clusterd's memory until it execs, created in its cgroup.
    Clone3Vm,
    /// `clone3`: a child with a copy of clusterd's memory, created in its cgroup by
    /// `clone3(CLONE_INTO_CGROUP)` (without a cgroup, a fork).
    Clone3,
    /// `fork`: the child moves itself into its cgroup through `cgroup.procs`.
    Fork,
}

impl SpawnPath {
    /// The testing switch.
    pub const VARIABLE: &'static str = "CLUSTERD_SPAWN_PATH";

    /// Each way by the name the switch gives it.
    const NAMES: [(&'static str, SpawnPath); 4] = [
        ("auto", SpawnPath::Auto),
        ("clone3-vm", SpawnPath::Clone3Vm),
        ("clone3", SpawnPath::Clone3),
        ("fork", SpawnPath::Fork),
    ];

    /// [`SpawnPath::VARIABLE`] as clusterd was started with it: unset or empty is `Auto`.
    pub fn from_environment() -> Result<SpawnPath, String> {
        let value = std::env::var_os(Self::VARIABLE).unwrap_or_default();
        if value.is_empty() {
            return Ok(SpawnPath::Auto);
        }
        Self::NAMES
            .iter()
            .find(|(name, _)| value.to_str() == Some(name))
            .map(|&(_, path)| path)
            .ok_or_else(|| {
                format!(
                    "{}={value:?}: expected clone3-vm, clone3, fork or auto",
                    Self::VARIABLE
                )
            })
    }

    /// The switch's name for this way.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|&&(_, path)| path == self)
            .map_or("auto", |&(name, _)| name)
    }
}

/// The way `CLUSTERD_SPAWN_PATH` forced, if it did: set once, at start-up.
static FORCED_PATH: std::sync::OnceLock<SpawnPath> = std::sync::OnceLock::new();

/// From now on every spawn takes `path` (clusterd's start-up, once).
pub(crate) fn use_path(path: SpawnPath) {
    if path != SpawnPath::Auto {
        log::warn!(
            "{}={}: children are created only this way (a testing switch)",
            SpawnPath::VARIABLE,
            path.name()
        );
    }
    let _ = FORCED_PATH.set(path);
    // While clusterd's fd numbers are still small.
    low_fds::reserve();
}

/// Where a child failed before exec, for the error message.
#[repr(u32)]
#[derive(Clone, Copy)]
enum Stage {
    Session = 1,
    Stdin,
    MoveFds,
    Credentials,
    WorkingDirectory,
    Exec,
    Cgroup,
    /// Sharing clusterd's fd table, the child could not get one of its own (before 5.9).
    UnshareFds,
}

impl ExecPlan {
    /// What the child was doing when it failed, naming what it was working on.
    fn describe_failure(&self, stage: u32) -> (SpawnStage, String) {
        let directory = || {
            self.working_directory
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match stage {
            1 => (SpawnStage::Session, "cannot create its session".to_string()),
            2 => (
                SpawnStage::Stdin,
                "cannot set stdin to /dev/null".to_string(),
            ),
            3 => (
                SpawnStage::PassFds,
                "cannot pass its file descriptors".to_string(),
            ),
            4 => (
                SpawnStage::Credentials,
                format!("cannot switch to {}", self.credentials.account()),
            ),
            5 => (
                SpawnStage::WorkingDirectory,
                format!("cannot change to its working directory {:?}", directory()),
            ),
            7 => (
                SpawnStage::JoinCgroup,
                "cannot move into its cgroup".to_string(),
            ),
            8 => (
                SpawnStage::PassFds,
                "cannot get a descriptor table of its own".to_string(),
            ),
            _ => {
                // Name the file found in PATH: "python3" may be a shim under a directory the
                // instance's user cannot read.
                let resolved = self.program.to_string_lossy();
                let what = if resolved == self.program_name.as_str() {
                    format!("cannot execute {:?}", self.program_name)
                } else {
                    format!("cannot execute {:?} ({resolved})", self.program_name)
                };
                (SpawnStage::Exec, what)
            }
        }
    }
}

pub(crate) struct ExecRequest<'a> {
    pub command: &'a [String],
    pub environment: Vec<(String, String)>,
    /// fds to place at 3, 4, ... in the child, in order.
    pub pass_fds: Vec<RawFd>,
    /// Add `LISTEN_PID=<child pid>` to the environment.
    pub listen_pid: bool,
    /// Add `WATCHDOG_PID=<child pid>` to the environment.
    pub watchdog_pid: bool,
    pub working_directory: Option<&'a Path>,
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    pub groups: &'a [Gid],
    /// An open /dev/null, for stdin.
    pub stdin: RawFd,
    /// The child's stdout and stderr; `None`: clusterd's own.
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
    /// The directory of the cgroup the child is to run in, if any, opened.
    pub cgroup: Option<RawFd>,
}

/// A cgroup, opened before fork: the directory for `clone3(CLONE_INTO_CGROUP)`, and — only
/// where that cannot be used — `cgroup.procs`, which the forked child writes to to move
/// itself in (an async-signal-safe `write`, no path lookup after fork).
#[derive(Debug, Clone, Copy)]
struct CgroupFds {
    directory: RawFd,
    /// -1 until the fallback opens it.
    procs: RawFd,
}

/// Everything the child touches, prepared before fork.
struct ExecPlan {
    program: CString,
    /// What the user called the program, for error messages.
    program_name: String,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    env_storage: Vec<Vec<u8>>,
    env_ptrs: Vec<*const libc::c_char>,
    /// In `env_storage`, the entries the child writes its pid into: (index, prefix length).
    pid_entries: Vec<(usize, usize)>,
    /// Where each fd the child gets goes: (clusterd's fd, the child's fd number) — stdin,
    /// stdout and stderr when given, then the passed fds at 3, 4, ...
    placements: Vec<(RawFd, RawFd)>,
    /// Scratch space for the fds while they are moved out of the way.
    scratch_fds: Vec<RawFd>,
    /// The first fd number above every placement.
    floor: RawFd,
    cgroup: Option<CgroupFds>,
    /// The child was created in its cgroup (clone3): it need not move itself.
    created_in_cgroup: bool,
    /// The child shares clusterd's fd table and, first thing, takes a copy of the fds below
    /// this number only, where every fd it keeps was put (low_fds.rs).
    unshare_below: Option<RawFd>,
    credentials: CredentialPlan,
    working_directory: Option<CString>,
    parent_pid: libc::pid_t,
    /// The signals whose disposition in clusterd is not the default.
    signals_to_reset: &'static [libc::c_int],
    /// The file-descriptor limit to give the program (clusterd raised its own).
    fd_limit: Option<libc::rlimit>,
}

/// Forks and executes `request`; returns the child's pid, which is also its process group
/// id, once the child has exec'd — or the error, when it could not.
pub(crate) fn spawn(request: &ExecRequest) -> Result<Pid, SpawnError> {
    spawn_via(
        FORCED_PATH.get().copied().unwrap_or_default(),
        request,
        Exec::Wait,
    )
}

/// Starts `request` without waiting for its exec: returns the child's pid (also its process
/// group id, once the child has made its session) as soon as the child exists. Where the
/// child shares clusterd's memory, whether its exec failed is learnt later, from
/// [`exec_failures`]: such a child exits with status 127 after writing where it failed.
pub(crate) fn start(request: &ExecRequest) -> Result<Pid, SpawnError> {
    spawn_via(
        FORCED_PATH.get().copied().unwrap_or_default(),
        request,
        Exec::Later,
    )
}

/// Whether a spawn waits for its child's exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    /// The caller gets the exec's failure as its error.
    Wait,
    /// The caller gets the pid at once; a failure comes from [`exec_failures`].
    Later,
}

/// [`spawn`] or [`start`], creating the child the way `path` says.
fn spawn_via(path: SpawnPath, request: &ExecRequest, exec: Exec) -> Result<Pid, SpawnError> {
    let program_name = request.command.first().map_or("", String::as_str);
    let plan = ExecPlan::prepare(request)
        .map_err(|e| SpawnError::new(SpawnStage::Program, program_name, e))?;
    let os_error =
        |what: &str, errno| SpawnError::from_errno(SpawnStage::Fork, program_name, what, errno);

    // Block every signal across fork: the child must not run clusterd's signal handlers
    // before it has reset them, and no signal meant for clusterd is lost in the meantime.
    let mut previous = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut previous),
    )
    .map_err(|e| os_error("sigprocmask", e))?;
    let restore_mask = || {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    };
    let mut plan = plan;
    if matches!(path, SpawnPath::Auto | SpawnPath::Clone3Vm) {
        match spawn_sharing_memory_reporting(plan, exec) {
            Ok(started) => {
                restore_mask();
                return started;
            }
            Err((_, errno)) if path == SpawnPath::Clone3Vm => {
                restore_mask();
                return Err(os_error(
                    "cannot clone3 with CLONE_VM (CLUSTERD_SPAWN_PATH)",
                    errno,
                ));
            }
            Err((returned, _)) => plan = *returned,
        }
    }
    let started = fork_and_exec(&mut plan, path, program_name);
    restore_mask();
    let (pid, error_read) = started?;
    plan.outcome(pid, read_failure(error_read))
}

/// A child sharing clusterd's memory, from its creation until the kernel says that it has
/// exec'd or exited: its stack, its plan, where it writes a failure and the fd slots it was
/// lent are here, and clusterd touches none of them until then.
struct ChildState {
    /// Non-zero until the child has exec'd or exited: the kernel zeroes it then
    /// (`CLONE_CHILD_CLEARTID`, when the child lets go of clusterd's memory) and wakes a
    /// futex waiter.
    running: AtomicU32,
    /// Where the child writes its failure; stage 0 if it exec'd.
    failure: ChildFailure,
    /// What the child's entry point gets: pointers to `plan` and `failure`.
    start: ChildStart,
    plan: ExecPlan,
    /// The child's stack until exec.
    stack: ChildStack,
    /// The placements' own fds, while the plan names the slots they were lent into.
    sources: Vec<RawFd>,
    /// The slots the child takes its fds from; given back once it has exec'd or exited.
    lent: Option<low_fds::Lent>,
}

// SAFETY: a finished state (its child done) is owned by whoever holds the Box; its raw
// pointers point into itself, its fds and mapping are process-wide.
unsafe impl Send for ChildState {}

/// A child on its way to exec, owning its [`ChildState`] (from `Box::leak`).
struct InFlight {
    pid: Pid,
    state: std::ptr::NonNull<ChildState>,
}

// SAFETY: the state is owned by the `InFlight` alone (and by its child until the child lets
// go); it holds raw pointers into itself and fds, nothing tied to a thread.
unsafe impl Send for InFlight {}

impl InFlight {
    /// The child has exec'd or exited: its state is clusterd's again.
    fn done(&self) -> bool {
        // SAFETY: `state` is alive until `finish`; only the atomic is read, which the kernel
        // writes for the child.
        unsafe { &(*self.state.as_ptr()).running }.load(Ordering::Acquire) == 0
    }

    /// Waits until [`InFlight::done`]: the child runs on, so this is a few system calls and
    /// the exec itself at most (plus any wait for a CPU).
    fn wait(&self) {
        // SAFETY: as in `done`.
        let running = unsafe { &(*self.state.as_ptr()).running };
        while running.load(Ordering::Acquire) != 0 {
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            // SAFETY: FUTEX_WAIT on a live, aligned u32 while it still holds 1, with a
            // timeout; not the private variant: the kernel's wake at the child's exec or
            // exit is the shared one. A spurious or missed wake-up is caught by the loop.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    running.as_ptr(),
                    libc::FUTEX_WAIT,
                    1u32,
                    &timeout as *const libc::timespec,
                    0usize,
                    0u32,
                );
            }
        }
    }

    /// The state back, once [`InFlight::done`].
    fn finish(self) -> Box<ChildState> {
        let mut state = self.finish_later();
        // The slots go back (closing their duplicates), the plan gets its own fds again.
        state.lent = None;
        for (placement, &source) in state.plan.placements.iter_mut().zip(&state.sources) {
            placement.0 = source;
        }
        state
    }

    /// The state back, once [`InFlight::done`], still holding its fd slots.
    fn finish_later(self) -> Box<ChildState> {
        debug_assert!(self.done());
        // SAFETY: from `Box::leak`, and the child has let go of it (done).
        let mut state = unsafe { Box::from_raw(self.state.as_ptr()) };
        // SAFETY: the child that may have written it has exec'd or exited.
        state.failure = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(state.failure)) };
        state
    }
}

/// The children started without waiting for their exec, and the exec failures found among
/// them that [`exec_failures`] has not handed out yet.
#[derive(Default)]
struct Starting {
    in_flight: Vec<InFlight>,
    failed: Vec<(Pid, SpawnError)>,
    /// The states of children that exec'd, to let go of when the loop has a moment
    /// ([`release_finished`]): their fd slots and stacks, a few system calls each that need
    /// not stand between a reap and the next start.
    finished: Vec<ChildState>,
}

static STARTING: std::sync::Mutex<Starting> = std::sync::Mutex::new(Starting {
    in_flight: Vec::new(),
    failed: Vec::new(),
    finished: Vec::new(),
});

/// How many children may be on their way to exec at once; the next start waits for the
/// oldest. Each holds its stack (64 KiB) and, mostly, fd slots (low_fds.rs).
const MOST_IN_FLIGHT: usize = 16;

impl Starting {
    /// Takes in every child that has exec'd or exited; `wait`: waits for all first.
    fn collect(&mut self, wait: bool) {
        let mut index = 0;
        while index < self.in_flight.len() {
            if wait {
                self.in_flight[index].wait();
            }
            if self.in_flight[index].done() {
                let child = self.in_flight.swap_remove(index);
                let pid = child.pid;
                let state = child.finish_later();
                if state.failure.stage != 0 {
                    self.failed.push((pid, state.error()));
                } else {
                    self.finished.push(*state);
                }
            } else {
                index += 1;
            }
        }
    }

    /// Waits until one more child may be started: the oldest has exec'd, if it had to.
    fn make_room(&mut self, lending: impl Fn() -> low_fds::Lending) -> low_fds::Lending {
        loop {
            self.collect(false);
            let lent = match lending() {
                low_fds::Lending::Busy if self.in_flight.is_empty() && self.finished.is_empty() => {
                    low_fds::Lending::No
                }
                lent => lent,
            };
            let busy = matches!(lent, low_fds::Lending::Busy);
            if busy && !self.finished.is_empty() {
                self.finished.clear();
                continue;
            }
            if !busy && self.in_flight.len() < MOST_IN_FLIGHT {
                return lent;
            }
            drop(lent);
            if let Some(oldest) = self.in_flight.first() {
                oldest.wait();
            }
        }
    }
}

impl ChildState {
    /// The child's failure as the error a caller reports.
    fn error(&self) -> SpawnError {
        let (stage, what) = self.plan.describe_failure(self.failure.stage);
        SpawnError::from_errno(
            stage,
            &self.plan.program_name,
            &what,
            Errno::from_raw(self.failure.errno),
        )
    }
}

/// Whether children from [`start`] have exec'd whose fd slots and stacks are still held:
/// work for [`release_finished`].
pub(crate) fn finished_to_release() -> bool {
    let starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    !starting.finished.is_empty() || starting.in_flight.iter().any(InFlight::done)
}

/// Lets go of the fd slots and stacks of the children from [`start`] that have exec'd (the
/// loop's idle work). An exec failure found meanwhile waits for [`exec_failures`].
pub(crate) fn release_finished() {
    let mut starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    starting.collect(false);
    starting.finished.clear();
}

/// The exec failures of children from [`start`] that have exec'd or exited since the last
/// call, by pid (such a child exited with status 127 and is still to be reaped); `wait`:
/// first waits until every child started so far has exec'd or exited (a few milliseconds:
/// they exec side by side).
pub(crate) fn exec_failures(wait: bool) -> Vec<(Pid, SpawnError)> {
    let mut starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    starting.collect(wait);
    std::mem::take(&mut starting.failed)
}

/// `killpg(pgid, signal)`, and where there is no such group yet but `pgid` is a child from
/// [`start`] not yet taken in (so not reaped: the pid is its own), the signal goes to that
/// child: on its way to exec it may not lead its group yet. It blocks every signal until it
/// has reset their handlers, so a signal sent now acts as on the program it becomes.
pub(crate) fn signal_group(pgid: Pid, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    use nix::sys::signal::{kill, killpg};
    match killpg(pgid, signal) {
        Err(Errno::ESRCH) => {
            let starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
            if !starting.in_flight.iter().any(|child| child.pid == pgid) {
                return Err(Errno::ESRCH);
            }
            // It may have made its group since.
            killpg(pgid, signal).or_else(|_| kill(pgid, signal))
        }
        sent => sent,
    }
}

/// First choice: a child that shares clusterd's memory until it execs (CLONE_VM, as
/// posix_spawn does), created in its cgroup: no page tables are copied and exec has nothing
/// of clusterd's to tear down. Unlike posix_spawn's (CLONE_VFORK), clusterd does not stop
/// until the child has exec'd: the child runs on a stack, plan and failure report of its own
/// ([`ChildState`]), which the kernel tells clusterd it is done with (`CLONE_CHILD_CLEARTID`)
/// when it has exec'd or exited — so the next start overlaps this child's way to exec.
/// `Exec::Wait` waits for that, and returns the failure. Every signal must be blocked. The
/// plan comes back with the error where this way cannot be taken.
#[allow(clippy::type_complexity)]
fn spawn_sharing_memory_reporting(
    mut plan: ExecPlan,
    exec: Exec,
) -> Result<Result<Pid, SpawnError>, (Box<ExecPlan>, Errno)> {
    plan.created_in_cgroup = plan.cgroup.is_some();
    let sources: Vec<RawFd> = plan.placements.iter().map(|&(source, _)| source).collect();
    let mut starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    // The child shares clusterd's fd table and keeps only what is below the lent slots
    // (low_fds.rs), rather than copy every instance's fds and close them again at exec.
    let lent = match starting.make_room(|| low_fds::lend(&sources)) {
        low_fds::Lending::Lent(lent) => Some(lent),
        _ => None,
    };
    if let Some(lent) = &lent {
        for (placement, &slot) in plan.placements.iter_mut().zip(&lent.fds) {
            placement.0 = slot;
        }
    }
    plan.unshare_below = lent.as_ref().map(|lent| lent.limit);
    // Until a child has been seen to unshare its table, wait: a kernel before 5.9 is found
    // by the first start, which is made again the copying way.
    let exec = if plan.unshare_below.is_some() && !low_fds::unshare_known_to_work() {
        Exec::Wait
    } else {
        exec
    };
    let stack = match ChildStack::map() {
        Ok(stack) => stack,
        Err(errno) => return Err((Box::new(plan), errno)),
    };
    let owned = std::ptr::NonNull::from(Box::leak(Box::new(ChildState {
        running: AtomicU32::new(1),
        failure: ChildFailure::default(),
        start: ChildStart {
            plan: std::ptr::null_mut(),
            report: FailureReport::Shared(std::ptr::null_mut()),
        },
        plan,
        stack,
        sources,
        lent,
    })));
    let state = owned.as_ptr();
    // SAFETY: `state` is a fresh allocation of ours; the child, once created, touches only its
    // plan, failure, stack and start (see `spawn_sharing_memory`), and clusterd none of them
    // until the child is done; every signal is blocked (the caller).
    let spawned = unsafe {
        (*state).start.plan = std::ptr::addr_of_mut!((*state).plan);
        (*state).start.report = FailureReport::Shared(std::ptr::addr_of_mut!((*state).failure));
        spawn_sharing_memory(state)
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(errno) => {
            // SAFETY: no child was created: the state is ours alone, and `running` was never
            // handed to one.
            unsafe { &(*state).running }.store(0, Ordering::Release);
            let unused = InFlight {
                pid: Pid::from_raw(0),
                state: owned,
            };
            let ChildState { plan, .. } = *unused.finish();
            return Err((Box::new(plan), errno));
        }
    };
    let in_flight = InFlight {
        pid: Pid::from_raw(pid),
        state: owned,
    };
    if exec == Exec::Later {
        starting.in_flight.push(in_flight);
        return Ok(Ok(Pid::from_raw(pid)));
    }
    drop(starting);
    in_flight.wait();
    let pid = in_flight.pid;
    let state = in_flight.finish();
    if state.plan.unshare_below.is_some() {
        if state.failure.stage == Stage::UnshareFds as u32 {
            // A kernel before 5.9: nothing was started; from now on the table is copied.
            let _ = waitpid(pid, None);
            low_fds::unshare_unsupported();
            let ChildState { mut plan, .. } = *state;
            plan.unshare_below = None;
            return spawn_sharing_memory_reporting(plan, exec);
        }
        low_fds::unshare_works();
    }
    Ok(state.plan.outcome(pid, state.failure))
}

/// Otherwise a child with a copy of clusterd's memory — created in its cgroup by clone3 where
/// it can be (and `path` allows), else forked, to move itself in — which reports through a
/// pipe that closes on a successful exec. Returns its pid and the pipe's reading end. Every
/// signal must be blocked.
fn fork_and_exec(
    plan: &mut ExecPlan,
    path: SpawnPath,
    program_name: &str,
) -> Result<(Pid, OwnedFd), SpawnError> {
    let os_error =
        |what: &str, errno| SpawnError::from_errno(SpawnStage::Fork, program_name, what, errno);
    plan.created_in_cgroup = false;
    let _procs = match &mut plan.cgroup {
        Some(cgroup) => Some(open_cgroup_procs(cgroup, program_name)?),
        None => None,
    };
    let (error_read, error_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| os_error("cannot create a pipe", e))?;
    let pid = match (plan.cgroup, path) {
        (Some(cgroup), SpawnPath::Auto | SpawnPath::Clone3) => {
            // SAFETY: as for fork below; see `clone_into_cgroup`.
            match unsafe { clone_into_cgroup(cgroup.directory) } {
                Ok(pid) => {
                    // Only the child reads this (its copy of the plan), before it runs.
                    plan.created_in_cgroup = pid == 0;
                    pid
                }
                Err(errno) if path == SpawnPath::Clone3 => {
                    return Err(os_error(
                        "cannot clone3 into its cgroup (CLUSTERD_SPAWN_PATH)",
                        errno,
                    ))
                }
                // SAFETY: as below.
                Err(_) => unsafe { libc::fork() },
            }
        }
        // SAFETY: the child branch calls only `child_after_fork`, which makes
        // async-signal-safe system calls on memory prepared before the fork and ends in
        // execve or _exit.
        _ => unsafe { libc::fork() },
    };
    if pid == 0 {
        // We are the freshly forked child; see `child_after_fork`. Entered through the
        // `extern "C"` entry point, so that a panic aborts the child rather than unwinding
        // (clusterd unwinds panics, thread_guard.rs) through the stack it copied from clusterd.
        let mut start = ChildStart {
            plan,
            report: FailureReport::Pipe(error_write.as_raw_fd()),
        };
        child_entry(std::ptr::addr_of_mut!(start).cast())
    }
    if pid < 0 {
        return Err(os_error("cannot fork", Errno::last()));
    }
    Ok((Pid::from_raw(pid), error_read))
}

/// Opens the cgroup's `cgroup.procs` for a forked child to write itself into; the fd closes
/// when the returned one is dropped, once the spawn is over.
fn open_cgroup_procs(cgroup: &mut CgroupFds, program_name: &str) -> Result<OwnedFd, SpawnError> {
    // SAFETY: openat with a valid directory fd and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            cgroup.directory,
            c"cgroup.procs".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(SpawnError::from_errno(
            SpawnStage::JoinCgroup,
            program_name,
            "cannot open its cgroup's cgroup.procs",
            Errno::last(),
        ));
    }
    cgroup.procs = fd;
    // SAFETY: a new fd of ours, owned from here on.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// What a forked child wrote to its error pipe: 8 bytes arrive if it failed before exec,
/// none (end of file at exec) if it did not.
fn read_failure(error_read: OwnedFd) -> ChildFailure {
    let mut report = [0u8; 8];
    let mut received = 0;
    let mut pipe = std::fs::File::from(error_read);
    while received < report.len() {
        match pipe.read(&mut report[received..]) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if received < report.len() {
        ChildFailure::default()
    } else {
        ChildFailure::from_bytes(report)
    }
}

/// Where the child failed before exec, if it did: `stage` 0 means it did not.
#[derive(Debug, Default, Clone, Copy)]
struct ChildFailure {
    stage: u32,
    errno: i32,
}

impl ChildFailure {
    fn to_bytes(self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&self.stage.to_ne_bytes());
        bytes[4..].copy_from_slice(&self.errno.to_ne_bytes());
        bytes
    }

    fn from_bytes(bytes: [u8; 8]) -> ChildFailure {
        ChildFailure {
            stage: u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            errno: i32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

/// How the child tells the parent where it failed.
#[derive(Clone, Copy)]
enum FailureReport {
    /// A child sharing clusterd's memory writes here, in its [`ChildState`]; clusterd reads
    /// it once the child has exec'd or exited.
    Shared(*mut ChildFailure),
    /// A forked child writes the 8 bytes of a `ChildFailure` to this close-on-exec pipe.
    Pipe(RawFd),
}

impl ExecPlan {
    /// The child's pid, or — when it failed before exec — the error, after reaping it so
    /// that it never looks like a crash.
    fn outcome(&self, pid: Pid, failure: ChildFailure) -> Result<Pid, SpawnError> {
        if failure.stage == 0 {
            return Ok(pid);
        }
        let _ = waitpid(pid, None);
        let (stage, what) = self.describe_failure(failure.stage);
        Err(SpawnError::from_errno(
            stage,
            &self.program_name,
            &what,
            Errno::from_raw(failure.errno),
        ))
    }
}

impl ExecPlan {
    fn prepare(request: &ExecRequest) -> Result<ExecPlan, String> {
        let program_name = request.command.first().cloned().unwrap_or_default();
        let search_path = request
            .environment
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string());
        let program = resolve_program(&program_name, &search_path, request.working_directory)?;
        let to_c =
            |s: &[u8]| CString::new(s).map_err(|_| "argument contains a NUL byte".to_string());

        let argv: Vec<CString> = request
            .command
            .iter()
            .map(|a| to_c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());

        let pid_variables: Vec<&[u8]> = [
            (request.listen_pid, LISTEN_PID_PREFIX),
            (request.watchdog_pid, WATCHDOG_PID_PREFIX),
        ]
        .into_iter()
        .filter_map(|(wanted, prefix)| wanted.then_some(prefix))
        .collect();
        let (env_storage, pid_entries) = environment_block(&request.environment, &pid_variables);
        let mut env_ptrs: Vec<*const libc::c_char> =
            env_storage.iter().map(|e| e.as_ptr().cast()).collect();
        env_ptrs.push(std::ptr::null());

        let working_directory = request
            .working_directory
            .map(|d| to_c(d.as_os_str().as_bytes()))
            .transpose()?;

        let layout = fd_layout(
            request.stdin,
            request.stdout,
            request.stderr,
            &request.pass_fds,
        );

        Ok(ExecPlan {
            program: to_c(program.as_os_str().as_bytes())?,
            program_name,
            _argv: argv,
            argv_ptrs,
            env_storage,
            env_ptrs,
            pid_entries,
            scratch_fds: vec![-1; layout.placements.len()],
            floor: layout.floor,
            placements: layout.placements,
            cgroup: request.cgroup.map(|directory| CgroupFds {
                directory,
                procs: -1,
            }),
            created_in_cgroup: false,
            unshare_below: None,
            credentials: CredentialPlan::new(
                request.uid,
                request.gid,
                request.groups,
                nix::unistd::geteuid().is_root(),
            ),
            working_directory,
            // SAFETY: getpid has no preconditions.
            parent_pid: unsafe { libc::getpid() },
            signals_to_reset: signals_not_at_default(),
            fd_limit: super::fd_limit::for_instances(),
        })
    }
}

/// The envp's entries, `KEY=VALUE` and a NUL each; then, for each of `pid_variables`
/// (`b"LISTEN_PID="`), one more with room for the child to write its pid into, and where:
/// (index, prefix length).
fn environment_block(
    environment: &[(String, String)],
    pid_variables: &[&[u8]],
) -> (Vec<Vec<u8>>, Vec<(usize, usize)>) {
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(environment.len() + pid_variables.len());
    for (key, value) in environment {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 2);
        entry.extend_from_slice(key.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        entry.push(0);
        entries.push(entry);
    }
    let pid_entries = pid_variables
        .iter()
        .map(|prefix| {
            let mut entry = prefix.to_vec();
            entry.resize(prefix.len() + PID_DIGITS + 1, 0);
            entries.push(entry);
            (entries.len() - 1, prefix.len())
        })
        .collect();
    (entries, pid_entries)
}

/// Finds the program the way `execvp` would, but in the parent, so that the child does not
/// have to search (and allocate) and "not found" is reported precisely.
fn resolve_program(name: &str, search_path: &str, cwd: Option<&Path>) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    for dir in search_path.split(':').filter(|d| !d.is_empty()) {
        let mut candidate = PathBuf::from(dir).join(name);
        if candidate.is_relative() {
            if let Some(cwd) = cwd {
                candidate = cwd.join(candidate);
            }
        }
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "cannot execute {name:?}: No such file or directory (not found in PATH)"
    ))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the call.
    let executable = unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } == 0;
    executable && path.is_file()
}

/// The kernel's `struct sigaction` for `SIG_DFL` with no flags and an empty mask: all
/// zeros, whatever the architecture's layout (with or without `sa_restorer`), and large
/// enough for the largest.
const DEFAULT_DISPOSITION: [u64; 4] = [0; 4];

/// The signals that clusterd catches or ignores — its handlers, SIGPIPE, and whatever its own
/// parent made it ignore (real-time signals included, which glibc's `sigaction` will not even
/// show) — looked up once, at the first spawn: the child resets only these, rather than make
/// sixty system calls between fork and exec. clusterd sets every disposition it uses before
/// it starts anything.
fn signals_not_at_default() -> &'static [libc::c_int] {
    static SIGNALS: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(|| {
        (1..=libc::SIGRTMAX())
            .filter(|&signal| signal != libc::SIGKILL && signal != libc::SIGSTOP)
            .filter(|&signal| {
                let mut current = [0u64; 4];
                // SAFETY: the raw rt_sigaction with no new action writes the current one
                // (at most 32 bytes) into `current`.
                let queried = unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        signal,
                        std::ptr::null::<u64>(),
                        current.as_mut_ptr(),
                        8usize,
                    )
                } == 0;
                // The handler comes first in every layout; SIG_DFL is 0. Unknown: reset it.
                !queried || current[0] != 0
            })
            .collect()
    })
}

/// Reports `stage` and `errno` to the parent and exits.
///
/// # Safety
/// Only to be called in the child before exec; async-signal-safe.
unsafe fn fail(report: FailureReport, stage: Stage, errno: i32) -> ! {
    let failure = ChildFailure {
        stage: stage as u32,
        errno,
    };
    // SAFETY: a shared report points into the child's state (`ChildState`), which clusterd
    // leaves alone until this child has exited; the bytes are a local buffer.
    unsafe {
        match report {
            FailureReport::Shared(slot) => std::ptr::write_volatile(slot, failure),
            FailureReport::Pipe(fd) => {
                let bytes = failure.to_bytes();
                let write = [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0];
                let _ = sys(libc::SYS_write, write);
            }
        }
        let _ = sys(libc::SYS_exit_group, [127, 0, 0, 0]);
        // exit_group does not return.
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

/// A system call made by the child before exec: its result, or `Err(errno)`. Raw, not
/// glibc's wrappers: a child sharing clusterd's memory runs on the spawning thread's
/// thread-local storage, so a wrapper setting `errno` on failure would write into that
/// thread's `errno` while it runs on.
///
/// # Safety
/// As the system call `number` with these arguments.
#[cfg(target_arch = "x86_64")]
unsafe fn sys(number: libc::c_long, args: [usize; 4]) -> Result<usize, i32> {
    let result: isize;
    // SAFETY: the caller's; `syscall` clobbers only rcx and r11 besides rax.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&result) {
        Err(-result as i32)
    } else {
        Ok(result as usize)
    }
}

/// Elsewhere children never share clusterd's memory (`spawn_sharing_memory`): glibc's
/// `syscall` and its `errno` are the child's own.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn sys(number: libc::c_long, args: [usize; 4]) -> Result<usize, i32> {
    // SAFETY: the caller's.
    let result = unsafe { libc::syscall(number, args[0], args[1], args[2], args[3]) };
    if result < 0 {
        // SAFETY: this process's own errno.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(result as usize)
    }
}

/// The child side of `spawn`: reset signals, move into the instance's cgroup, lead a new
/// session (and so a new process group), put stdin and the passed fds in place, mark every
/// other fd close-on-exec, write LISTEN_PID, switch user, change directory, exec.
///
/// # Safety
/// Only to be called in the freshly created child of a multi-threaded process: it makes only
/// raw system calls ([`sys`]) and does not allocate.
unsafe fn child_after_fork(plan: &mut ExecPlan, report: FailureReport) -> ! {
    // SAFETY: every call below is a raw system call; all memory touched was allocated before
    // the child was created and belongs to this process's copy (or, sharing clusterd's
    // memory, to the child's state, which clusterd leaves alone until this child has exec'd
    // or exited).
    unsafe {
        // Before anything touches an fd: while the table is clusterd's too, nothing may.
        if let Some(limit) = plan.unshare_below {
            let range = [limit as usize, libc::c_uint::MAX as usize];
            let flags = libc::CLOSE_RANGE_UNSHARE as usize;
            if let Err(errno) = sys(libc::SYS_close_range, [range[0], range[1], flags, 0]) {
                fail(report, Stage::UnshareFds, errno);
            }
        }
        reset_signals(plan);
        // First, while clusterd's fds are where they were and the child is still root: from
        // here on, everything it starts is in the cgroup and cannot leave it.
        if let Some(cgroup) = plan.cgroup.filter(|_| !plan.created_in_cgroup) {
            let zero = b"0";
            match sys(
                libc::SYS_write,
                [cgroup.procs as usize, zero.as_ptr() as usize, 1, 0],
            ) {
                Ok(1) => {}
                Ok(_) => fail(report, Stage::Cgroup, libc::EIO),
                Err(errno) => fail(report, Stage::Cgroup, errno),
            }
        }
        // A session of its own, not only a process group: a process may join another group
        // only within its own session, so no instance (whatever user it runs as) can move a
        // process into another instance's group and speak for it or be stopped with it.
        if let Err(errno) = sys(libc::SYS_setsid, [0; 4]) {
            fail(report, Stage::Session, errno);
        }
        let report = place_fds(plan, report);

        if let Some(limit) = &plan.fd_limit {
            // Not fatal: at worst the program may open more files than it would have.
            let limit = limit as *const libc::rlimit as usize;
            let _ = sys(
                libc::SYS_prlimit64,
                [0, libc::RLIMIT_NOFILE as usize, limit, 0],
            );
        }

        let pid = sys(libc::SYS_getpid, [0; 4]).unwrap_or(0) as u64;
        for &(entry, prefix) in &plan.pid_entries {
            if let Some(digits) = plan
                .env_storage
                .get_mut(entry)
                .and_then(|e| e.get_mut(prefix..))
            {
                write_decimal(digits, pid);
            }
        }

        switch_account(&plan.credentials, report);

        // If clusterd dies without stopping its instances (SIGKILL, crash), they die too,
        // rather than hold its ports as orphans. Set after setuid, which would clear it.
        let death = [
            libc::PR_SET_PDEATHSIG as usize,
            libc::SIGKILL as usize,
            0,
            0,
        ];
        let _ = sys(libc::SYS_prctl, death);
        if sys(libc::SYS_getppid, [0; 4]) != Ok(plan.parent_pid as usize) {
            let _ = sys(libc::SYS_exit_group, [127, 0, 0, 0]);
        }

        if let Some(dir) = &plan.working_directory {
            if let Err(errno) = sys(libc::SYS_chdir, [dir.as_ptr() as usize, 0, 0, 0]) {
                fail(report, Stage::WorkingDirectory, errno);
            }
        }
        let exec = [
            plan.program.as_ptr() as usize,
            plan.argv_ptrs.as_ptr() as usize,
            plan.env_ptrs.as_ptr() as usize,
            0,
        ];
        let errno = sys(libc::SYS_execve, exec).err().unwrap_or(libc::ENOEXEC);
        fail(report, Stage::Exec, errno)
    }
}

/// In the child: signal handlers of clusterd must not run, ignored signals must not stay
/// ignored in the program, and the mask blocked around fork must not be inherited.
///
/// # Safety
/// As [`child_after_fork`].
unsafe fn reset_signals(plan: &ExecPlan) {
    // SAFETY: raw rt_sigaction and rt_sigprocmask on constant and local memory.
    unsafe {
        for &signal in plan.signals_to_reset {
            // The raw system call: glibc's refuses the real-time signals it keeps for itself.
            let _ = sys(
                libc::SYS_rt_sigaction,
                [signal as usize, DEFAULT_DISPOSITION.as_ptr() as usize, 0, 8],
            );
        }
        // The kernel's signal set: 64 bits, none set.
        let empty = 0u64;
        let set = std::ptr::addr_of!(empty) as usize;
        let _ = sys(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, set, 0, 8],
        );
    }
}

/// In the child: every fd to its place of the plan's layout, and every other fd marked
/// close-on-exec. Returns where to report a failure from now on (the pipe moves too).
///
/// # Safety
/// As [`child_after_fork`].
unsafe fn place_fds(plan: &mut ExecPlan, report: FailureReport) -> FailureReport {
    let above = |fd: RawFd, floor: RawFd| {
        let args = [
            fd as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            floor as usize,
            0,
        ];
        // SAFETY: fcntl on an fd number; a bad one is an error, not undefined behaviour.
        unsafe { sys(libc::SYS_fcntl, args) }
    };
    // SAFETY: fcntl, dup3 and close_range on fds; the scratch space was allocated before.
    unsafe {
        // Move every fd we still need above the target range first, so that placing one can
        // never overwrite a source that is still to be placed (a pipe of clusterd's may be
        // fd 1 if clusterd was started with stdout closed).
        let floor = plan.floor;
        let report = match report {
            FailureReport::Pipe(fd) => match above(fd, floor) {
                Ok(moved) => FailureReport::Pipe(moved as RawFd),
                Err(errno) => fail(report, Stage::MoveFds, errno),
            },
            shared => shared,
        };
        for (i, &(source, _)) in plan.placements.iter().enumerate() {
            match above(source, floor) {
                Ok(moved) => plan.scratch_fds[i] = moved as RawFd,
                Err(errno) => fail(report, Stage::MoveFds, errno),
            }
        }
        for (&moved, &(_, target)) in plan.scratch_fds.iter().zip(&plan.placements) {
            // dup3 without O_CLOEXEC: the new fd survives exec. `moved` is at or above the
            // floor, `target` below it: never the same fd, which dup3 refuses.
            let args = [moved as usize, target as usize, 0, 0];
            if let Err(errno) = sys(libc::SYS_dup3, args) {
                let stage = if target == 0 {
                    Stage::Stdin
                } else {
                    Stage::MoveFds
                };
                fail(report, stage, errno);
            }
        }
        // Nothing else of clusterd's may leak into the program, including fds clusterd itself
        // inherited without CLOEXEC.
        let range = [
            floor as usize,
            libc::c_uint::MAX as usize,
            libc::CLOSE_RANGE_CLOEXEC as usize,
            0,
        ];
        if sys(libc::SYS_close_range, range).is_err() {
            for fd in floor..65536 {
                let args = [
                    fd as usize,
                    libc::F_SETFD as usize,
                    libc::FD_CLOEXEC as usize,
                    0,
                ];
                let _ = sys(libc::SYS_fcntl, args);
            }
        }
        report
    }
}

/// In the child: the plan's groups, group and user, in that order (the groups while still
/// root).
///
/// Raw system calls, not glibc's wrappers: those broadcast a credential change to every
/// thread glibc knows of (its "setxid" protocol), and a child made by a raw clone3 still lists
/// the parent's threads — it would wait for them forever. The child has one thread, so the
/// per-thread system call changes the whole process.
///
/// # Safety
/// As [`child_after_fork`].
unsafe fn switch_account(credentials: &CredentialPlan, report: FailureReport) {
    // SAFETY: raw setgroups/setgid/setuid on memory allocated before fork.
    unsafe {
        if let Some(groups) = &credentials.groups {
            let args = [groups.len(), groups.as_ptr() as usize, 0, 0];
            if let Err(errno) = sys(libc::SYS_setgroups, args) {
                fail(report, Stage::Credentials, errno);
            }
        }
        if let Some(gid) = credentials.gid {
            if let Err(errno) = sys(libc::SYS_setgid, [gid as usize, 0, 0, 0]) {
                fail(report, Stage::Credentials, errno);
            }
        }
        if let Some(uid) = credentials.uid {
            if let Err(errno) = sys(libc::SYS_setuid, [uid as usize, 0, 0, 0]) {
                fail(report, Stage::Credentials, errno);
            }
        }
    }
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks a child that starts life in the cgroup `directory`: 0 in the child, its pid in the
/// parent, the error (nothing forked) where the kernel cannot do it, so the caller forks the
/// usual way and the child moves itself in.
///
/// Why not fork and then write to `cgroup.procs`: moving a process between cgroups takes the
/// cgroup threadgroup lock for writing, which waits for an RCU grace period — about 12 ms per
/// restart measured here, against 1.4 ms for the whole restart without it. A child created in
/// its cgroup takes that lock only for reading, as every fork does.
///
/// # Safety
/// As `fork()`: in the child, only async-signal-safe calls until exec. The raw system call
/// skips glibc's fork handlers, so glibc in the child still believes in the parent's threads:
/// the child makes none of the calls that would act on them (no malloc, no stdio, no pthread
/// functions, and raw system calls instead of glibc's `setuid`/`setgid`/`setgroups`, which
/// would try to change the credentials of those threads too and wait for them forever).
unsafe fn clone_into_cgroup(directory: RawFd) -> Result<libc::pid_t, Errno> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: directory as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; no stack is given, so the
    // child runs on a copy of this thread's stack, as with fork.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    // Otherwise: no clone3 (before 5.3), no CLONE_INTO_CGROUP (before 5.7), a cgroup it
    // refuses — or out of processes or memory, which fork will then report.
    if pid < 0 {
        return Err(Errno::last());
    }
    Ok(pid as libc::pid_t)
}

/// The stack a memory-sharing child runs on until it execs: `child_after_fork` needs little.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// A memory-sharing child's stack, mapped for it and unmapped once it is done: only the
/// pages the child touched were ever resident, and they go back to the system at once
/// (from the heap, up to 16 stacks of children exec'ing side by side could stay in
/// clusterd's resident memory).
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    fn map() -> Result<ChildStack, Errno> {
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(ChildStack { base })
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, which no child runs on any more (its state is
        // dropped only once the child is done).
        unsafe { libc::munmap(self.base, CHILD_STACK_BYTES) };
    }
}

/// What the memory-sharing child's entry point gets.
struct ChildStart {
    plan: *mut ExecPlan,
    report: FailureReport,
}

/// Where a memory-sharing child starts, on its own stack.
extern "C" fn child_entry(start: *mut libc::c_void) -> ! {
    // SAFETY: `start` is the `ChildStart` of the child's state (or, after a fork, on the
    // child's copy of the stack), alive until this child execs or exits.
    unsafe {
        let start = &*(start as *const ChildStart);
        child_after_fork(&mut *start.plan, start.report)
    }
}

/// `CLONE_CHILD_CLEARTID`: the kernel zeroes the word at `child_tid` when the child lets go
/// of the memory it shares (exec or exit).
const CLONE_CHILD_CLEARTID: u64 = libc::CLONE_CHILD_CLEARTID as u64;

/// Starts the child with `clone3(CLONE_VM [| CLONE_FILES] | CLONE_CHILD_CLEARTID
/// [| CLONE_INTO_CGROUP])` on the stack of `state`, running `child_after_fork` with its
/// plan. Returns the child's pid at once; the kernel zeroes `state.running` once the child
/// has exec'd or exited. The error (nothing started) where this cannot be done, and the
/// caller forks instead.
///
/// # Safety
/// The child shares every page of clusterd until it execs and runs at the same time; it runs
/// only `child_after_fork` (raw system calls, no allocation, no thread-local storage) on
/// `state`'s plan, failure and stack, which clusterd must leave alone — and alive — until
/// `state.running` is zero. Every signal must be blocked by the caller, so that no handler
/// of clusterd's runs in the child.
#[cfg(target_arch = "x86_64")]
unsafe fn spawn_sharing_memory(state: *mut ChildState) -> Result<libc::pid_t, Errno> {
    const CLONE_VM: u64 = libc::CLONE_VM as u64;
    // SAFETY: the caller's: `state` is valid; only its addresses and the plan's fds are read.
    let (args, start) = unsafe {
        // Page-aligned, so 16-byte aligned as the ABI wants the stack at a call.
        let (low, size) = ((*state).stack.base as usize, CHILD_STACK_BYTES);
        let plan = &(*state).plan;
        let directory = plan.cgroup.map(|c| c.directory);
        let files = plan.unshare_below.map_or(0, |_| libc::CLONE_FILES as u64);
        let args = CloneArgs {
            flags: CLONE_VM
                | CLONE_CHILD_CLEARTID
                | files
                | directory.map_or(0, |_| CLONE_INTO_CGROUP),
            child_tid: std::ptr::addr_of!((*state).running) as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: low as u64,
            stack_size: size as u64,
            cgroup: directory.map_or(0, |d| d as u64),
            ..CloneArgs::default()
        };
        (args, std::ptr::addr_of_mut!((*state).start))
    };
    let result: i64;
    // SAFETY: clone3 with a valid clone_args of the size given. In the child (rax == 0) the
    // kernel has set the stack pointer to the top of the state's stack; the child calls
    // `child_entry` with its `start` and never comes back (it execs or exits). rcx and r11
    // are clobbered by `syscall`; r12 and r13 survive it.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") &args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") start,
            in("r13") child_entry as *const () as usize,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    // Negative: -errno. Without clone3 (before 5.3), CLONE_INTO_CGROUP (5.7) or with a cgroup
    // it refuses, the caller's fork path works everywhere.
    if result > 0 {
        Ok(result as libc::pid_t)
    } else {
        Err(Errno::from_raw(-(result as i32)))
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn spawn_sharing_memory(_state: *mut ChildState) -> Result<libc::pid_t, Errno> {
    Err(Errno::ENOSYS)
}

/// Writes `value` in decimal followed by a NUL into `buffer`, without allocating.
fn write_decimal(buffer: &mut [u8], mut value: u64) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        value /= 10;
        n += 1;
        if value == 0 || n == PID_DIGITS {
            break;
        }
    }
    for i in 0..n.min(buffer.len().saturating_sub(1)) {
        buffer[i] = digits[n - 1 - i];
    }
    if let Some(end) = buffer.get_mut(n) {
        *end = 0;
    }
}

/// clusterd's own environment, less the variables that describe clusterd's own situation
/// (its service manager's notify socket and sockets, a Node channel it was given).
pub(crate) fn inherited_environment() -> Vec<(String, String)> {
    const OWN: &[&str] = &[
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        "NODE_CHANNEL_FD",
        "NODE_CHANNEL_SERIALIZATION_MODE",
        "NODE_UNIQUE_ID",
        "CLUSTERD_SOCKET",
    ];
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !OWN.contains(&k.as_str()) && !k.starts_with("CLUSTERD_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envp_has_a_nul_per_entry_and_room_for_listen_pid() {
        let environment = vec![("A".to_string(), "b c".to_string())];
        let (entries, pids) =
            environment_block(&environment, &[LISTEN_PID_PREFIX, WATCHDOG_PID_PREFIX]);
        assert_eq!(entries[0], b"A=b c\0");
        assert_eq!(
            pids,
            vec![(1, LISTEN_PID_PREFIX.len()), (2, WATCHDOG_PID_PREFIX.len())]
        );
        assert_eq!(entries[1].len(), LISTEN_PID_PREFIX.len() + PID_DIGITS + 1);
        assert!(entries[1].starts_with(LISTEN_PID_PREFIX));
        assert!(entries[2].starts_with(WATCHDOG_PID_PREFIX));
        assert!(environment_block(&environment, &[]).1.is_empty());
    }

    #[test]
    fn decimal_pids_are_written_in_place() {
        let mut buffer = [0xffu8; 21];
        write_decimal(&mut buffer, 40213);
        assert_eq!(&buffer[..6], b"40213\0");
        write_decimal(&mut buffer, 0);
        assert_eq!(&buffer[..2], b"0\0");
    }

    fn request<'a>(command: &'a [String], dir: Option<&'a Path>, stdin: RawFd) -> ExecRequest<'a> {
        ExecRequest {
            command,
            environment: vec![("PATH".into(), "/usr/bin:/bin".into())],
            pass_fds: Vec::new(),
            listen_pid: false,
            watchdog_pid: false,
            working_directory: dir,
            uid: None,
            gid: None,
            groups: &[],
            stdin,
            stdout: None,
            stderr: None,
            cgroup: None,
        }
    }

    #[test]
    fn a_failed_start_says_where_it_failed_with_which_error_for_which_program() {
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let null = std::fs::File::open("/dev/null").unwrap();
        let command = vec!["true".to_string()];
        let missing = Path::new("/no/such/directory");
        let error = spawn(&request(&command, Some(missing), null.as_raw_fd())).unwrap_err();
        assert_eq!(error.stage, SpawnStage::WorkingDirectory);
        assert_eq!(error.errno, Some(Errno::ENOENT));
        assert_eq!(error.program, "true");
        assert!(
            error.message.contains("/no/such/directory"),
            "{}",
            error.message
        );

        let command = vec!["no-such-program-here".to_string()];
        let error = spawn(&request(&command, None, null.as_raw_fd())).unwrap_err();
        assert_eq!(error.stage, SpawnStage::Program);
        assert_eq!(error.program, "no-such-program-here");
        assert!(!error.out_of_resources());

        // And a start that works is reaped here.
        let command = vec!["true".to_string()];
        let pid = spawn(&request(&command, None, null.as_raw_fd())).unwrap();
        assert!(waitpid(pid, None).is_ok());
    }

    #[test]
    fn started_children_do_not_wait_for_each_exec_and_a_failure_comes_afterwards() {
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let null = std::fs::File::open("/dev/null").unwrap();
        let command = vec!["true".to_string()];
        let pids: Vec<Pid> = (0..40)
            .map(|_| start(&request(&command, None, null.as_raw_fd())).unwrap())
            .collect();
        // The child fails at its chdir, after `start` has returned its pid.
        let missing = Path::new("/no/such/directory");
        let failing = start(&request(&command, Some(missing), null.as_raw_fd())).unwrap();
        let failures = exec_failures(true);
        assert_eq!(failures.len(), 1, "{failures:?}");
        let (pid, error) = &failures[0];
        assert_eq!(*pid, failing);
        assert_eq!(error.stage, SpawnStage::WorkingDirectory);
        assert_eq!(error.errno, Some(Errno::ENOENT));
        assert!(error.message.contains("/no/such/directory"), "{error:?}");
        use nix::sys::wait::WaitStatus;
        assert_eq!(waitpid(failing, None), Ok(WaitStatus::Exited(failing, 127)));
        for pid in pids {
            assert_eq!(waitpid(pid, None), Ok(WaitStatus::Exited(pid, 0)));
        }
        assert!(exec_failures(false).is_empty());
    }

    #[test]
    fn a_child_signalled_on_its_way_to_exec_gets_the_signal() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let null = std::fs::File::open("/dev/null").unwrap();
        let command = vec!["sleep".to_string(), "30".to_string()];
        // Signalled at once: before or after its setsid and exec, each gets it.
        let pids: Vec<Pid> = (0..20)
            .map(|_| {
                let pid = start(&request(&command, None, null.as_raw_fd())).unwrap();
                assert_eq!(signal_group(pid, Signal::SIGTERM), Ok(()));
                pid
            })
            .collect();
        for pid in pids {
            assert_eq!(
                waitpid(pid, None),
                Ok(WaitStatus::Signaled(pid, Signal::SIGTERM, false))
            );
        }
        assert!(exec_failures(false).is_empty());
    }

    const EVERY_PATH: [SpawnPath; 3] = [SpawnPath::Clone3Vm, SpawnPath::Clone3, SpawnPath::Fork];

    /// Runs `script` (sh) through `path` with the write end of a pipe at fd 3 and LISTEN_PID
    /// asked for, and what `adjust` sets; returns its pid, what it wrote to fd 3, and its
    /// exit status.
    fn run_through(
        path: SpawnPath,
        script: &str,
        adjust: impl FnOnce(&mut ExecRequest),
    ) -> (Pid, String, nix::sys::wait::WaitStatus) {
        let null = std::fs::File::open("/dev/null").unwrap();
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let command = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let mut request = request(&command, None, null.as_raw_fd());
        request.pass_fds = vec![write.as_raw_fd()];
        request.listen_pid = true;
        adjust(&mut request);
        let pid =
            spawn_via(path, &request, Exec::Wait).unwrap_or_else(|e| panic!("{path:?}: {e:?}"));
        drop(write);
        let mut output = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut output)
            .unwrap();
        (pid, output, waitpid(pid, None).unwrap())
    }

    #[test]
    fn every_path_starts_the_program_with_its_fds_listen_pid_session_and_account() {
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for path in EVERY_PATH {
            let (pid, output, status) = run_through(
                path,
                "echo \"$LISTEN_PID $$ $(cut -d' ' -f6 /proc/$$/stat)\" >&3; exit 7",
                |_| {},
            );
            let fields: Vec<&str> = output.split_whitespace().collect();
            let own = pid.to_string();
            // LISTEN_PID is the child's pid, and the child leads a session of its own.
            assert_eq!(
                fields,
                [own.as_str(), own.as_str(), own.as_str()],
                "{path:?}"
            );
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(pid, 7),
                "{path:?}"
            );
            if nix::unistd::geteuid().is_root() {
                let nobody = |request: &mut ExecRequest| {
                    request.uid = Some(Uid::from_raw(65534));
                    request.gid = Some(Gid::from_raw(65534));
                };
                let (_, output, _) =
                    run_through(path, "echo $(id -u) $(id -g) $(id -G) >&3", nobody);
                assert_eq!(output.trim(), "65534 65534 65534", "{path:?}");
            }
        }
    }

    #[test]
    fn every_path_starts_the_child_in_its_cgroup() {
        use crate::daemon::os::cgroup::CgroupTree;
        let socket = format!("/spawn-path-test/{}", std::process::id());
        let mut tree = match CgroupTree::create(Path::new(&socket)) {
            Ok(tree) => tree,
            Err(why) if std::env::var_os("CLUSTERD_TEST_REQUIRE_ALL").is_none() => {
                eprintln!("SKIPPED: no cgroup to start children in: {why}");
                return;
            }
            Err(why) => panic!("no cgroup to start children in: {why}"),
        };
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for (index, path) in (0..).zip(EVERY_PATH) {
            let (cgroup, spawn_into) = tree.create_instance("spawn", index).unwrap();
            let (_, output, _) = run_through(path, "cat /proc/self/cgroup >&3", |request| {
                request.cgroup = Some(spawn_into.directory());
            });
            let name = cgroup.name().to_string_lossy().into_owned();
            let own = output.lines().find_map(|l| l.strip_prefix("0::"));
            assert!(
                own.is_some_and(|own| own.ends_with(&format!("/{name}"))),
                "{path:?}: {output}"
            );
            drop(spawn_into);
            assert!(cgroup.remove(), "{path:?}");
        }
    }

    #[test]
    fn every_path_reports_a_failure_in_the_child_with_its_stage_and_errno() {
        let _forking = crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let null = std::fs::File::open("/dev/null").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let command = vec![script.to_string_lossy().into_owned()];
        let missing = Path::new("/no/such/directory");
        for path in EVERY_PATH {
            // Not executable: exec itself fails, the last thing the child does.
            let error = spawn_via(path, &request(&command, None, null.as_raw_fd()), Exec::Wait)
                .unwrap_err();
            assert_eq!(error.stage, SpawnStage::Exec, "{path:?}");
            assert_eq!(error.errno, Some(Errno::EACCES), "{path:?}");
            assert!(
                error.message.contains("run.sh"),
                "{path:?}: {}",
                error.message
            );

            let command = vec!["true".to_string()];
            let error = spawn_via(
                path,
                &request(&command, Some(missing), null.as_raw_fd()),
                Exec::Wait,
            )
            .unwrap_err();
            assert_eq!(error.stage, SpawnStage::WorkingDirectory, "{path:?}");
            assert_eq!(error.errno, Some(Errno::ENOENT), "{path:?}");
        }
    }

    #[test]
    fn programs_are_found_in_path_or_reported() {
        assert!(resolve_program("sh", "/usr/bin:/bin", None).is_ok());
        let err = resolve_program("no-such-program-here", "/usr/bin", None).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        assert_eq!(
            resolve_program("./run.sh", "/bin", None),
            Ok(PathBuf::from("./run.sh"))
        );
    }
}
