//! `OsProcessControl`: the real [`ProcessControl`] — fork/exec through [`crate::daemon::os::spawn`],
//! `killpg`, `waitpid`, and a worker channel for every instance. Instances of `node_cluster`
//! units also get Node's cluster-worker environment, and the I/O thread becomes their
//! cluster primary ([`crate::node_cluster`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::daemon::file_watch::FileWatch;
use crate::daemon::health_probe;
use crate::daemon::logs::{ChildOutput, Logs};
use crate::daemon::os::cgroup::{Budget, CgroupTree, InstanceCgroup, Removal, SpawnIntoCgroup};
use crate::daemon::os::environment_file;
use crate::daemon::os::listen_sockets::UnitSockets;
use crate::daemon::os::spawn::{
    exec_failures, finished_to_release, inherited_environment, release_finished, spawn, start,
    ExecRequest,
};
use crate::daemon::os::spawn_plan::{set, InstancePlan, InstanceStart};
use crate::daemon::os::usage::UsageMeter;
use crate::daemon::signals::EventSender;
use crate::daemon::worker_io::WorkerIo;
use crate::node_cluster::{WorkerInfo, WorkerRights};
use crate::supervisor::process_control::{
    GracefulStop, HookRequest, ProbeRequest, ProcessControl, RawWaitStatus, SpawnError, SpawnId,
    SpawnRequest, SpawnStage, Usage,
};
use crate::unit::{http_target, NodeClusterStop, Probe, Unit};

/// The most one idle moment of the loop spends creating spare cgroups and removing old ones:
/// the loop is idle only until the next event, which must not wait behind a hostile
/// instance's ten thousand cgroups.
const IDLE_SLICE: Duration = Duration::from_millis(2);

/// How many cgroups of instances that are over may wait for an idle moment; past it they are
/// removed as instances are released.
const REMOVAL_BACKLOG: usize = 256;

/// How long clusterd, on its way out, goes on removing the cgroups of instances that are over.
const EXIT_REMOVAL_DEADLINE: Duration = Duration::from_secs(5);

/// Children reaped per SIGCHLD event (a crash loop of 1,000 instances, or a flood of orphans
/// re-parented to clusterd as PID 1 or subreaper). Each exit may restart its instance, a fork and exec in
/// the loop: with 1,000 instances crash-looping, reaping them all in one event held the loop
/// (and every `clusterctl status` behind it) for 10–25 s. A batch at a time, with the events
/// that arrived meanwhile handled in between, bounds that wait to one batch.
const REAP_BATCH: usize = 32;

pub(crate) struct OsProcessControl {
    io: WorkerIo,
    /// Where instances get cgroups of their own; `Err` says why they cannot (process groups
    /// then).
    cgroups: Result<CgroupTree, String>,
    /// The cgroup of every instance that has one, from its spawn until the cgroup is empty
    /// (after its own process exited, what it left may still be running).
    instance_cgroups: HashMap<SpawnId, InstanceCgroup>,
    /// Released instances whose cgroup still has processes.
    draining: Vec<SpawnId>,
    /// Cgroups of released instances the supervisor stopped waiting for: processes that
    /// outlived a SIGKILL by its deadline (stuck in the kernel, say). Removed once empty.
    abandoned: Vec<InstanceCgroup>,
    /// Every unit's listening sockets, by unit name: they outlive its instances.
    sockets: HashMap<String, UnitSockets>,
    /// Opened once: every instance's stdin.
    dev_null: OwnedFd,
    /// clusterd's NOTIFY_SOCKET path, given to every instance.
    notify_socket: Option<PathBuf>,
    /// clusterd's environment as instances inherit it.
    base_environment: Vec<(String, String)>,
    /// `clusterd --environment NAME`: each unit's `[environments.NAME]` applies.
    environment_name: Option<String>,
    /// Where `Event::FilesChanged` goes; the watcher starts with the first unit that
    /// watches files.
    events: EventSender,
    file_watch: Option<FileWatch>,
    /// Live Node cluster workers, for graceful stops.
    node_workers: HashMap<SpawnId, NodeClusterStop>,
    /// Instances started since the last idle moment, whose replacement's cgroup is to be
    /// created ahead (creating a cgroup takes tens of microseconds, which a restart should
    /// not wait for).
    spares_wanted: BTreeSet<(String, u32)>,
    /// Cgroups of instances that are over (no process left), with whatever the instance made
    /// below them: removed when the loop is idle, [`IDLE_SLICE`] at a time.
    removals: VecDeque<Removal>,
    /// Where the instances' output goes.
    logs: Logs,
    usage: UsageMeter,
    /// The `PORT` each live instance of a unit with an HTTP `[health]` check was started
    /// with: its checks' `{port}`.
    instance_ports: HashMap<SpawnId, u16>,
}

impl OsProcessControl {
    pub(crate) fn new(
        io: WorkerIo,
        notify_socket: Option<PathBuf>,
        cgroups: Result<CgroupTree, String>,
        logs: Logs,
        environment_name: Option<String>,
        events: EventSender,
    ) -> std::io::Result<Self> {
        let dev_null = std::fs::File::open("/dev/null")?.into();
        Ok(OsProcessControl {
            io,
            cgroups,
            instance_cgroups: HashMap::new(),
            draining: Vec::new(),
            abandoned: Vec::new(),
            sockets: HashMap::new(),
            dev_null,
            notify_socket,
            base_environment: inherited_environment(),
            environment_name,
            events,
            file_watch: None,
            node_workers: HashMap::new(),
            spares_wanted: BTreeSet::new(),
            removals: VecDeque::new(),
            logs: logs.for_the_loop(),
            usage: UsageMeter::default(),
            instance_ports: HashMap::new(),
        })
    }

    /// clusterd's environment, then the account's, then the unit's `environment`, then its
    /// `[environments.NAME]` for `--environment NAME`.
    fn environment_for(&self, unit: &Unit) -> Vec<(String, String)> {
        let mut env = self.base_environment.clone();
        let credentials = &unit.credentials;
        if let Some(user) = &credentials.user_name {
            set(&mut env, "USER", user);
            set(&mut env, "LOGNAME", user);
        }
        if let Some(home) = &credentials.home {
            set(&mut env, "HOME", &home.to_string_lossy());
        }
        for (key, value) in &unit.environment {
            set(&mut env, key, value);
        }
        let selected = self
            .environment_name
            .as_ref()
            .and_then(|name| unit.environments.get(name));
        for (key, value) in selected.into_iter().flatten() {
            set(&mut env, key, value);
        }
        env
    }
}

impl OsProcessControl {
    /// Removes the cgroups of instances that are over, oldest first, within `budget`. One
    /// that cannot be removed is left, with a warning (the next clusterd on this control
    /// socket clears it at start-up).
    fn remove_cgroups(&mut self, budget: &mut Budget) {
        while let Some(removal) = self.removals.front_mut() {
            match removal.go_on(budget) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => warn!("{e}; the cgroup is left"),
            }
            self.removals.pop_front();
        }
    }
}

impl Drop for OsProcessControl {
    /// On the way out: the cgroups of instances that are over go (within
    /// [`EXIT_REMOVAL_DEADLINE`]), and what could not be waited for is named.
    fn drop(&mut self) {
        self.spares_wanted.clear();
        let cgroups = self.instance_cgroups.drain().map(|(_, cgroup)| cgroup);
        for cgroup in cgroups.chain(self.abandoned.drain(..)) {
            if cgroup.populated() {
                warn!(
                    "exiting with processes left in cgroup {:?}: pid(s) {:?}",
                    cgroup.name(),
                    cgroup.pids()
                );
            } else {
                self.removals.push_back(Removal::new(cgroup));
            }
        }
        let mut budget = Budget::until(Instant::now() + EXIT_REMOVAL_DEADLINE);
        self.remove_cgroups(&mut budget);
        for removal in &self.removals {
            warn!(
                "exiting before the cgroup {:?} and those below it could be removed",
                removal.name()
            );
        }
    }
}

/// The unit's environment files, read now, at every start: a changed file applies to the next
/// instance started. Read for the unit's user: only what it could read itself, or what root
/// put there for it.
fn read_environment_files(unit: &Unit) -> Result<Vec<(String, String)>, SpawnError> {
    let program = unit.command[0].as_str();
    let mut variables = Vec::new();
    for file in &unit.environment_files {
        match environment_file::read(&file.path, &unit.credentials) {
            Ok(read) => variables.extend(read),
            Err(environment_file::ReadError::Missing) if file.optional => {}
            Err(environment_file::ReadError::Missing) => {
                return Err(SpawnError::new(
                    SpawnStage::EnvironmentFile,
                    program,
                    format!(
                        "cannot read its environment_file {}: No such file or directory (write it, or mark it optional with a leading -)",
                        file.path.display()
                    ),
                ))
            }
            Err(environment_file::ReadError::Bad(why)) => {
                return Err(SpawnError::new(
                    SpawnStage::EnvironmentFile,
                    program,
                    format!("cannot read its environment_file {}: {why}", file.path.display()),
                ))
            }
        }
    }
    Ok(variables)
}

/// The OS side of an instance's start, around the spawn itself.
impl OsProcessControl {
    /// What the instance is started with: its environment (the environment files read now)
    /// and its fds (the unit's sockets, then `channel`, its end of the worker channel).
    fn plan_instance(
        &mut self,
        request: &SpawnRequest,
        channel: RawFd,
    ) -> Result<InstancePlan, SpawnError> {
        let unit = request.unit;
        let listen_fds = self
            .sockets
            .entry(unit.name.clone())
            .or_default()
            .fds_for(unit, request.index)
            .map_err(|e| SpawnError::new(SpawnStage::Sockets, &unit.command[0], e))?;
        let socket_names = if listen_fds.is_empty() {
            Vec::new()
        } else {
            UnitSockets::names(unit)
        };
        let from_files = read_environment_files(unit)?;
        Ok(InstancePlan::new(
            self.environment_for(unit),
            from_files,
            &InstanceStart {
                unit,
                id: request.id,
                index: request.index,
                instances: request.instances,
                listen_fds: &listen_fds,
                socket_names: &socket_names,
                channel,
                notify_socket: self.notify_socket.as_deref(),
            },
        ))
    }

    /// The instance's cgroup (where clusterd makes them) and its stdout and stderr; a cgroup
    /// made for a start whose output cannot be, goes again.
    fn cgroup_and_output(
        &mut self,
        unit: &Unit,
        index: u32,
    ) -> Result<(Option<(InstanceCgroup, SpawnIntoCgroup)>, ChildOutput), SpawnError> {
        let program = unit.command[0].as_str();
        let cgroup = match &mut self.cgroups {
            Ok(tree) => Some(tree.create_instance(&unit.name, index).map_err(|e| {
                SpawnError::from_io(SpawnStage::Cgroup, program, "cannot create its cgroup", &e)
            })?),
            Err(_) => None,
        };
        match self.logs.output_for(unit, index) {
            Ok(output) => Ok((cgroup, output)),
            Err(e) => {
                if let Some((cgroup, _)) = cgroup {
                    self.removals.push_back(Removal::new(cgroup));
                }
                Err(SpawnError::from_io(
                    SpawnStage::Output,
                    program,
                    "cannot create its stdout and stderr",
                    &e,
                ))
            }
        }
    }

    /// A started instance: its cgroup, its worker channel watched by the I/O thread (which is
    /// its Node cluster primary too), and a spare cgroup wanted for its next start.
    fn adopt(&mut self, request: &SpawnRequest, cgroup: Option<InstanceCgroup>, ours: UnixStream) {
        let unit = request.unit;
        let cgroup_name = cgroup
            .as_ref()
            .map(|c| c.name().to_string_lossy().into_owned());
        if let Some(cgroup) = cgroup {
            self.instance_cgroups.insert(request.id, cgroup);
        }
        let node = unit.node_cluster.map(|scheduling| WorkerInfo {
            unit: unit.name.clone(),
            scheduling,
            rights: WorkerRights {
                uid: unit.credentials.uid,
                gid: unit.credentials.gid,
                groups: unit.credentials.groups.clone(),
            },
        });
        if node.is_some() {
            self.node_workers.insert(request.id, unit.node_cluster_stop);
        }
        let label = format!("{}[{}]", unit.name, request.index);
        // A Node worker's event loop is checked by clusterd itself: no app change needed.
        let liveness = unit.watchdog.filter(|_| node.is_some());
        self.io
            .watch(request.id, ours.into(), label, cgroup_name, node, liveness);
        // Later, when the loop is idle: what the next spawn needs.
        self.spares_wanted
            .insert((unit.name.clone(), request.index));
    }
}

impl ProcessControl for OsProcessControl {
    fn open_sockets(&mut self, unit: &Unit) -> Result<(), String> {
        let sockets = UnitSockets::open(unit)?;
        self.sockets.insert(unit.name.clone(), sockets);
        Ok(())
    }

    fn sockets_open(&self, unit: &str) -> bool {
        self.sockets.get(unit).is_some_and(UnitSockets::is_open)
    }

    fn close_sockets(&mut self, unit: &str) {
        // Dropping them closes them and removes their unix socket files.
        self.sockets.remove(unit);
    }

    fn release_indexes_from(&mut self, unit: &str, index: u32) {
        if let Some(sockets) = self.sockets.get_mut(unit) {
            sockets.close_from_index(index);
        }
        if let Ok(tree) = &mut self.cgroups {
            tree.remove_spares(unit, index);
        }
        self.spares_wanted.retain(|(u, i)| u != unit || *i < index);
    }

    fn spawn(&mut self, request: &SpawnRequest) -> Result<Pid, SpawnError> {
        let unit = request.unit;
        let program = unit.command[0].as_str();
        let (ours, theirs) = UnixStream::pair().map_err(|e| {
            SpawnError::from_io(
                SpawnStage::Channel,
                program,
                "cannot create the worker channel",
                &e,
            )
        })?;
        let plan = self.plan_instance(request, theirs.as_raw_fd())?;
        if matches!(
            unit.health.as_ref().map(|h| &h.probe),
            Some(crate::unit::Probe::Http(_))
        ) {
            let port = plan
                .environment
                .iter()
                .rev()
                .find(|(k, _)| k == "PORT")
                .and_then(|(_, v)| v.trim().parse::<u16>().ok());
            match port {
                Some(port) => self.instance_ports.insert(request.id, port),
                None => self.instance_ports.remove(&request.id),
            };
        }
        let (cgroup, output) = self.cgroup_and_output(unit, request.index)?;
        let spawned = start(&ExecRequest {
            command: &unit.command,
            environment: plan.environment,
            pass_fds: plan.pass_fds,
            listen_pid: plan.listen_pid,
            watchdog_pid: plan.watchdog_pid,
            working_directory: unit.working_directory.as_deref(),
            uid: unit.credentials.uid,
            gid: unit.credentials.gid,
            groups: &unit.credentials.groups,
            stdin: self.dev_null.as_raw_fd(),
            stdout: output.stdout.as_ref().map(AsRawFd::as_raw_fd),
            stderr: output.stderr.as_ref().map(AsRawFd::as_raw_fd),
            cgroup: cgroup.as_ref().map(|(_, spawn)| spawn.directory()),
        });
        // The spawn's fds for the cgroup close here; the instance keeps only its path. The
        // child's ends of its output close too: the log thread sees end-of-file when the
        // instance (and all it started) is gone.
        drop(output);
        let cgroup = cgroup.map(|(cgroup, _)| cgroup);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                self.logs.abandon(unit, request.index);
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                return Err(e);
            }
        };
        // Our copy of the child's end must close, or we would never see the channel's EOF.
        drop(theirs);
        self.adopt(request, cgroup, ours);
        Ok(pid)
    }

    fn spawn_hook(&mut self, request: &HookRequest) -> Result<Pid, SpawnError> {
        let unit = request.unit;
        let mut env = self.environment_for(unit);
        for (key, value) in &request.environment {
            set(&mut env, key, value);
        }
        spawn(&ExecRequest {
            command: request.command,
            environment: env,
            pass_fds: Vec::new(),
            listen_pid: false,
            watchdog_pid: false,
            working_directory: unit.working_directory.as_deref(),
            uid: unit.credentials.uid,
            gid: unit.credentials.gid,
            groups: &unit.credentials.groups,
            stdin: self.dev_null.as_raw_fd(),
            stdout: None,
            stderr: None,
            cgroup: None,
        })
    }

    fn start_probe(&mut self, request: &ProbeRequest) -> Result<Option<Pid>, String> {
        let unit = request.unit;
        match request.probe {
            Probe::Command(command) => {
                let mut env = self.environment_for(unit);
                for (key, value) in health_probe::command_environment(request) {
                    set(&mut env, &key, &value);
                }
                let null = self.dev_null.as_raw_fd();
                spawn(&ExecRequest {
                    command,
                    environment: env,
                    pass_fds: Vec::new(),
                    listen_pid: false,
                    watchdog_pid: false,
                    working_directory: unit.working_directory.as_deref(),
                    uid: unit.credentials.uid,
                    gid: unit.credentials.gid,
                    groups: &unit.credentials.groups,
                    stdin: null,
                    stdout: Some(null),
                    stderr: Some(null),
                    cgroup: None,
                })
                .map(Some)
                .map_err(|e| e.to_string())
            }
            Probe::Http(url) => {
                let port = self.instance_ports.get(&request.id).copied();
                let target = http_target(url, request.index, port)?;
                health_probe::start_http(
                    self.events.clone(),
                    request.id,
                    request.seq,
                    target,
                    request.timeout,
                )
                .map(|()| None)
            }
        }
    }

    fn withdraw_hung(&mut self, id: SpawnId) {
        if self.node_workers.contains_key(&id) {
            self.io.withdraw(id);
        }
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        // A child still on its way to exec may not have made its group yet: see there.
        match crate::daemon::os::spawn::signal_group(pgid, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => debug!("killpg({pgid}, {}) failed: {e}", signal.as_str()),
        }
    }

    fn watch_files(&mut self, name: &str, unit: Option<&Unit>) {
        let wants = unit.is_some_and(|u| !u.watch.is_empty());
        if self.file_watch.is_none() && wants {
            match FileWatch::start(self.events.clone()) {
                Ok(watch) => self.file_watch = Some(watch),
                Err(e) => {
                    log::error!("{name}: cannot watch files: {e}");
                    return;
                }
            }
        }
        if let Some(watch) = &self.file_watch {
            watch.set(name, unit);
        }
    }

    fn watch_report(&self, name: &str) -> Option<(u64, Option<String>)> {
        let report = self.file_watch.as_ref()?.report(name)?;
        Some((report.directories, report.problem))
    }

    fn local_time(&self) -> crate::unit::cron::LocalTime {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seconds = libc::time_t::try_from(now).unwrap_or(0);
        // SAFETY: an all-zero `tm` is a valid value; localtime_r writes only into it.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to valid locals; localtime_r is thread-safe.
        if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
            log::warn!("cannot read the local time; cron_restart uses UTC");
            // SAFETY: as above; gmtime_r cannot fail for a time_t from the clock.
            unsafe { libc::gmtime_r(&seconds, &mut tm) };
        }
        crate::daemon::logs::local_clock::local_time_of(&tm)
    }

    fn until_local(&self, then: crate::unit::cron::LocalTime) -> std::time::Duration {
        // SAFETY: an all-zero `tm` is a valid value.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = i32::try_from(then.year - 1900).unwrap_or(i32::MAX);
        tm.tm_mon = i32::try_from(then.month).unwrap_or(1) - 1;
        tm.tm_mday = i32::try_from(then.day).unwrap_or(1);
        tm.tm_hour = i32::try_from(then.hour).unwrap_or(0);
        tm.tm_min = i32::try_from(then.minute).unwrap_or(0);
        tm.tm_sec = i32::try_from(then.second).unwrap_or(0);
        // Whether daylight saving time is in effect then: the C library knows.
        tm.tm_isdst = -1;
        // SAFETY: `tm` is a valid local; mktime only reads and normalizes it. A minute that
        // does not exist (skipped by daylight saving time) comes out as the one after the
        // change.
        let at = unsafe { libc::mktime(&mut tm) };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        match u64::try_from(at) {
            Ok(at) => std::time::Duration::from_secs(at).saturating_sub(now),
            // mktime could not place it (-1): count on the calendar.
            Err(_) => self.local_time().duration_until(then),
        }
    }

    fn signal_process(&mut self, pid: Pid, signal: Signal) {
        // Gone already: its exit arrives through reap.
        let _ = nix::sys::signal::kill(pid, signal);
    }

    fn signal_number(&mut self, id: SpawnId, pid: Pid, number: i32, all: bool) {
        let target = match (all, self.instance_cgroups.get(&id)) {
            (false, _) => pid.as_raw(),
            // Every process of the instance's cgroup and of those it made below it, as for
            // the named signals; its process group if the cgroup's files cannot be used.
            (true, Some(cgroup)) => match cgroup.signal_number(number) {
                Ok(()) => return,
                Err(e) => {
                    warn!(
                        "cannot signal the processes of cgroup {:?} ({e}); signalling process group {pid}",
                        cgroup.name()
                    );
                    -pid.as_raw()
                }
            },
            // Its process group.
            (true, None) => -pid.as_raw(),
        };
        // SAFETY: kill has no memory-safety preconditions. A process that is gone already
        // (ESRCH) has its exit coming through reap.
        unsafe { libc::kill(target, number) };
    }

    fn send_message(&mut self, id: SpawnId, line: Vec<u8>) -> Result<(), String> {
        self.io.send_from_client(id, line)
    }

    fn signal_instance(&mut self, id: SpawnId, pgid: Pid, signal: Signal) {
        match (self.instance_cgroups.get(&id), &self.cgroups) {
            // Every process of the instance, wherever it moved in the process tree.
            (Some(cgroup), _) => {
                if let Err(e) = cgroup.signal(signal) {
                    warn!(
                        "cannot signal the processes of cgroup {:?} ({e}); signalling process group {pgid}",
                        cgroup.name()
                    );
                    self.signal_group(pgid, signal);
                }
            }
            // Its cgroup was removed, empty: nothing of it is left.
            (None, Ok(_)) => {}
            (None, Err(_)) => self.signal_group(pgid, signal),
        }
    }

    fn kill_leftovers(&mut self, id: SpawnId, pgid: Pid, pid_reused: bool) {
        match (self.instance_cgroups.get(&id), &self.cgroups) {
            // A cgroup is the instance's alone, whoever has its old pid now.
            (Some(cgroup), _) => match cgroup.signal(Signal::SIGKILL) {
                Ok(()) => return,
                // Out of fds, say: the process group, with the checks below.
                Err(e) => warn!(
                    "cannot kill what is left in cgroup {:?}: {e}",
                    cgroup.name()
                ),
            },
            // Its cgroup was removed, empty: nothing of it is left.
            (None, Ok(_)) => return,
            (None, Err(_)) => {}
        }
        // While members of the group live, the kernel does not hand its id out as a pid; once
        // it exists as a process again, the old group is empty and this one is not ours.
        if pid_reused || std::path::Path::new(&format!("/proc/{pgid}")).exists() {
            debug!("not killing process group {pgid}: its id now belongs to a new process");
            return;
        }
        self.signal_group(pgid, Signal::SIGKILL);
    }

    fn has_leftovers(&mut self, id: SpawnId) -> bool {
        self.draining.contains(&id)
    }

    fn collect_cleared(&mut self) -> Vec<SpawnId> {
        let mut cleared = Vec::new();
        let cgroups = &mut self.instance_cgroups;
        let removals = &mut self.removals;
        self.draining.retain(|id| {
            let Some(cgroup) = cgroups.get(id) else {
                cleared.push(*id);
                return false;
            };
            // One rmdir, which needs no fd, in the common case; `populated` covers the
            // cgroups the instance made below its own, which the rmdir finds in the way.
            if cgroup.remove() {
                cgroups.remove(id);
            } else if cgroup.populated() {
                return true;
            } else if let Some(cgroup) = cgroups.remove(id) {
                removals.push_back(Removal::new(cgroup));
            }
            cleared.push(*id);
            false
        });
        for cgroup in std::mem::take(&mut self.abandoned) {
            if cgroup.populated() {
                self.abandoned.push(cgroup);
            } else {
                info!(
                    "the processes left in cgroup {:?} are gone at last",
                    cgroup.name()
                );
                self.removals.push_back(Removal::new(cgroup));
            }
        }
        cleared
    }

    fn give_up_on_leftovers(&mut self, id: SpawnId) -> String {
        self.draining.retain(|d| *d != id);
        let Some(cgroup) = self.instance_cgroups.remove(&id) else {
            return String::new();
        };
        let left = format!("pid(s) {:?} in cgroup {:?}", cgroup.pids(), cgroup.name());
        self.abandoned.push(cgroup);
        left
    }

    fn daemon_status(&self) -> Option<crate::protocol::DaemonStatus> {
        let mut status = crate::daemon::os::usage::own_process()?;
        status.reexecuted_at_seconds = crate::daemon::reexec::reexecuted_at();
        Some(status)
    }

    fn usage(&self, instances: &[(SpawnId, Pid, Instant)]) -> HashMap<SpawnId, Usage> {
        self.usage.measure(instances, &self.instance_cgroups)
    }

    fn instance_started(&mut self, unit: &Unit, index: u32, pid: Pid) {
        self.logs.started(unit, index, pid.as_raw());
    }

    fn unit_event(&mut self, unit: &Unit, index: Option<u32>, text: &str) {
        self.logs.event(unit, index, text);
    }

    fn log_destination(&self, unit: &Unit) -> Option<(String, Option<String>)> {
        Some(self.logs.describe(unit))
    }

    fn has_idle_work(&self) -> bool {
        !self.spares_wanted.is_empty() || !self.removals.is_empty() || finished_to_release()
    }

    fn do_idle_work(&mut self) {
        release_finished();
        let mut budget = Budget::until(Instant::now() + IDLE_SLICE);
        // Spares first: they are what a restart waits for.
        while budget.take() {
            let Some((unit, index)) = self.spares_wanted.pop_first() else {
                break;
            };
            if let Ok(tree) = &mut self.cgroups {
                tree.prepare_spare(&unit, index);
            }
        }
        self.remove_cgroups(&mut budget);
    }

    fn isolation(&self) -> Option<String> {
        Some(match &self.cgroups {
            Ok(tree) => format!("cgroup ({})", tree.root().display()),
            Err(reason) => format!("process-group ({reason})"),
        })
    }

    fn exec_failures(&mut self, wait: bool) -> Vec<(Pid, SpawnError)> {
        exec_failures(wait)
    }

    fn reap(&mut self) -> Vec<(Pid, RawWaitStatus)> {
        let mut exited = Vec::new();
        loop {
            // The rest stay zombies a moment longer: a SIGCHLD of our own, queued behind what
            // arrived meanwhile (a `clusterctl status`), comes back for them. No new SIGCHLD
            // would come for children that exited already; if none can be queued, reap on now.
            if exited.len() >= REAP_BATCH
                && self
                    .events
                    .send(crate::supervisor::event::Event::Signal(libc::SIGCHLD))
                    .is_ok()
            {
                break;
            }
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes only to `status`, a valid local. libc's waitpid, not nix's:
            // nix rejects signal numbers it has no name for (real-time signals) with EINVAL
            // *after* the kernel reaped the child, which would lose that exit.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            match pid {
                0 => break,
                pid if pid > 0 => exited.push((Pid::from_raw(pid), RawWaitStatus(status))),
                _ => match Errno::last() {
                    Errno::EINTR => continue,
                    Errno::ECHILD => break,
                    e => {
                        log::error!("waitpid failed: {e}");
                        break;
                    }
                },
            }
        }
        exited
    }

    fn release(&mut self, id: SpawnId) {
        self.io.forget(id);
        self.instance_ports.remove(&id);
        self.usage.forget(id);
        self.node_workers.remove(&id);
        if let Some(cgroup) = self.instance_cgroups.get(&id) {
            if cgroup.populated() {
                self.draining.push(id);
            } else if let Some(empty) = self.instance_cgroups.remove(&id) {
                // Removed when the loop is idle: a restart's child may be exec'ing now.
                self.removals.push_back(Removal::new(empty));
            }
        }
        // A loop that is never idle (instances crash-looping by the hundred) would let them
        // pile up: past the backlog, each release removes two steps' worth itself.
        if self.removals.len() > REMOVAL_BACKLOG {
            self.remove_cgroups(&mut Budget::steps(2));
        }
    }

    fn release_unit(&mut self, unit: &str) {
        self.close_sockets(unit);
        self.io.release_unit(unit);
        if let Ok(tree) = &mut self.cgroups {
            tree.remove_spares(unit, 0);
        }
        self.spares_wanted.retain(|(u, _)| u != unit);
    }

    fn begin_stop(
        &mut self,
        id: SpawnId,
        _pid: Pid,
        _kill_signal: Signal,
        stop_message: Option<Vec<u8>>,
    ) -> GracefulStop {
        match (self.node_workers.get(&id), stop_message) {
            // The unit's own message first; a Node worker is handed no new connection.
            (node, Some(line)) => {
                if node.is_some() {
                    self.io.withdraw(id);
                }
                self.io.send(id, line);
                GracefulStop::Asked
            }
            (None, None) => GracefulStop::SendKillSignal,
            (Some(NodeClusterStop::Signal), None) => {
                self.io.withdraw(id);
                GracefulStop::SendKillSignal
            }
            (Some(NodeClusterStop::Disconnect), None) => {
                self.io.disconnect(id);
                GracefulStop::Asked
            }
        }
    }
}

/// `daemon-reexec`: what the OS side holds, written into the state by the old image and
/// taken back by the new one (the fds stay open across the exec, under the same numbers).
impl OsProcessControl {
    /// The bookkeeping, and each unit's listening sockets (by fd number).
    pub(crate) fn held(
        &self,
    ) -> (
        crate::daemon::reexec::state::OsHeld,
        Vec<(String, crate::daemon::os::listen_sockets::HeldSockets)>,
    ) {
        let held = crate::daemon::reexec::state::OsHeld {
            cgroups: self
                .instance_cgroups
                .iter()
                .map(|(id, cgroup)| (*id, cgroup.path().to_path_buf()))
                .collect(),
            draining: self.draining.clone(),
            abandoned: self
                .abandoned
                .iter()
                .map(|c| c.path().to_path_buf())
                .collect(),
            removals: self
                .removals
                .iter()
                .map(|r| r.path().to_path_buf())
                .collect(),
            cgroup_tree: self.cgroups.as_ref().ok().map(CgroupTree::held),
            ports: self
                .instance_ports
                .iter()
                .map(|(id, p)| (*id, *p))
                .collect(),
        };
        let sockets = self
            .sockets
            .iter()
            .map(|(unit, sockets)| (unit.clone(), sockets.held()))
            .collect();
        (held, sockets)
    }

    /// From now until [`OsProcessControl::flush_wakes`] (the loop's turn), what is told to
    /// the log and worker I/O threads waits in their channels with one wake-up owed to each:
    /// a restart's child gets the CPUs to exec on while the loop finishes its turn.
    pub(crate) fn defer_wakes(&self) {
        self.io.defer_wakes();
        self.logs.defer_wakes();
    }

    /// Wakes the log and worker I/O threads once each for what the turn told them.
    pub(crate) fn flush_wakes(&self) {
        self.io.flush_wakes();
        self.logs.flush_wakes();
    }

    /// The worker I/O thread's hand-over (see [`WorkerIo::hand_over`]).
    pub(crate) fn hand_over_io(
        &self,
        deadline: Instant,
    ) -> Result<
        (
            crate::daemon::worker_io::IoHandover,
            crossbeam_channel::Sender<()>,
        ),
        String,
    > {
        self.io.hand_over(deadline)
    }

    /// After `daemon-reexec`, right after its instance: what its channel had in flight.
    pub(crate) fn carry_in_channel(&self, carried: crate::daemon::worker_io::CarriedChannel) {
        self.io.carry_in(carried);
    }

    /// After `daemon-reexec`, once the instances are adopted: the old image's Node primary.
    pub(crate) fn adopt_primary(
        &self,
        held: crate::node_cluster::primary::handover::HeldPrimary,
        fds: HashMap<i32, OwnedFd>,
    ) {
        self.io.adopt_primary(held, fds);
    }

    /// The new image's side of [`OsProcessControl::held`]: paths outside clusterd's cgroup
    /// tree are ignored.
    pub(crate) fn adopt_held(
        &mut self,
        held: crate::daemon::reexec::state::OsHeld,
        sockets: Vec<(String, UnitSockets)>,
    ) {
        self.sockets.extend(sockets);
        self.instance_ports.extend(held.ports);
        // The instances' channels come next, thousands of them: one wake-up for all.
        self.defer_wakes();
        let Ok(tree) = &mut self.cgroups else {
            return;
        };
        if let Some(held_tree) = held.cgroup_tree {
            tree.resume(held_tree);
        }
        let present = tree.present();
        for (id, path) in held.cgroups {
            if let Some(cgroup) = tree.adopt(path, &present) {
                self.instance_cgroups.insert(id, cgroup);
            }
        }
        self.draining = held.draining;
        self.draining
            .retain(|id| self.instance_cgroups.contains_key(id));
        self.abandoned.extend(
            held.abandoned
                .into_iter()
                .filter_map(|p| tree.adopt(p, &present)),
        );
        self.removals.extend(
            held.removals
                .into_iter()
                .filter_map(|p| tree.adopt(p, &present))
                .map(Removal::new),
        );
    }

    /// A live instance of the old image, with its worker channel: watched as after a spawn
    /// (its cgroup was adopted with [`OsProcessControl::adopt_held`]).
    pub(crate) fn adopt_instance(
        &mut self,
        id: SpawnId,
        unit: &Unit,
        index: u32,
        channel: OwnedFd,
    ) {
        let cgroup = self.instance_cgroups.remove(&id);
        let request = SpawnRequest {
            id,
            unit,
            index,
            instances: unit.instances,
        };
        self.adopt(&request, cgroup, UnixStream::from(channel));
    }
}
