//! Unit tests of the supervisor state machine: a recording fake `ProcessControl`, a fake
//! clock, and events fed by hand. No real process is started and no signal is sent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::phase::{every_timer_of, Phase, Readiness, Step, UnitPhase, UnitStep};
use super::timers::Timer;
use super::{Ending, ShutdownPolicy, Supervisor};
use crate::protocol::{
    DaemonStatus, InstanceState, Request, Response, ScaleCount, UnitState, UnitStatus,
};
use crate::supervisor::event::{Credit, Event, NotifyMessage, WorkerMessage};
use crate::supervisor::process_control::{
    ExitStatus, GracefulStop, HookRequest, ProcessControl, RawWaitStatus, SpawnError, SpawnId,
    SpawnRequest, SpawnStage, Usage,
};
use crate::unit::{LoadedFile, Unit};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const NO_SUCH_PROGRAM: &str = "cannot execute \"nosuch\": No such file or directory";
/// A failure in the child that is not about the program: counted like a crash.
const CANNOT_PASS_FDS: &str = "cannot pass its file descriptors: Bad file number";

/// One spawn the supervisor asked for, successful or not.
#[derive(Debug, Clone)]
struct Spawned {
    id: SpawnId,
    unit: String,
    index: u32,
    instances: u32,
    command: Vec<String>,
    /// `None` when the fake refused to start it.
    pid: Option<Pid>,
}

#[derive(Debug, Clone)]
struct HookRun {
    pid: Pid,
    unit: String,
    command: Vec<String>,
    environment: Vec<(String, String)>,
}

/// Records every request and hands out pids 1000, 1001, ...
struct FakeOs {
    next_pid: i32,
    spawns: Vec<Spawned>,
    hooks: Vec<HookRun>,
    signals: Vec<(Pid, Signal)>,
    /// What `local_time` answers (cron_restart).
    local_time: crate::unit::cron::LocalTime,
    /// `clusterctl kill` without `--all`: one process each.
    process_signals: Vec<(Pid, Signal)>,
    /// `clusterctl kill` with a signal only a number names: (instance, pid, number, all).
    number_signals: Vec<(SpawnId, Pid, i32, bool)>,
    /// `clusterctl send`: (instance, line).
    messages: Vec<(SpawnId, String)>,
    /// Scale-downs: (unit, first index gone).
    released_indexes: Vec<(String, u32)>,
    /// clusterd's own events for the units' logs: (unit, index, text).
    unit_events: Vec<(String, Option<u32>, String)>,
    released: Vec<SpawnId>,
    /// Exits the next `reap` returns, as raw wait statuses like the kernel's.
    exits: Vec<(Pid, RawWaitStatus)>,
    /// Exec failures the next `exec_failures` returns.
    exec_failures: Vec<(Pid, SpawnError)>,
    /// How many of the next spawns fail with `CANNOT_PASS_FDS` (or EMFILE when `exhausted`,
    /// or `NO_SUCH_PROGRAM` when `missing_program`).
    failing_spawns: usize,
    /// Failing spawns fail for lack of file descriptors.
    exhausted: bool,
    /// Failing spawns fail because the program cannot be executed.
    missing_program: bool,
    /// Units whose listening sockets are open.
    sockets: std::collections::BTreeSet<String>,
    /// Every open and close of a unit's sockets, in order: ("open" | "close", unit).
    socket_log: Vec<(&'static str, String)>,
    /// Binding fails (the address is in use).
    port_taken: bool,
    /// Released instances whose processes are still running (their cgroup is not empty):
    /// they stay so until the test clears them, or for good (stuck in the kernel).
    leftovers: std::collections::BTreeSet<SpawnId>,
    /// Instances the supervisor stopped waiting for.
    given_up: Vec<SpawnId>,
    /// Every instance released from now on leaves processes behind.
    leave_processes: bool,
    /// `until_local` says every local time has passed (as mktime may for an hour that
    /// comes twice).
    until_local_is_zero: bool,
    /// `[health]` checks started: (instance, check number).
    probes: Vec<(SpawnId, u64)>,
    /// The pids of the command checks started, in order.
    probe_pids: Vec<Pid>,
    /// Instances withdrawn from round-robin as hung.
    withdrawn: Vec<SpawnId>,
}

impl FakeOs {
    fn new() -> Self {
        FakeOs {
            next_pid: 1000,
            spawns: Vec::new(),
            hooks: Vec::new(),
            process_signals: Vec::new(),
            // Sunday 2026-11-29, 02:59:30.
            local_time: crate::unit::cron::LocalTime {
                year: 2026,
                month: 11,
                day: 29,
                hour: 2,
                minute: 59,
                second: 30,
            },
            number_signals: Vec::new(),
            messages: Vec::new(),
            released_indexes: Vec::new(),
            unit_events: Vec::new(),
            signals: Vec::new(),
            released: Vec::new(),
            exits: Vec::new(),
            exec_failures: Vec::new(),
            failing_spawns: 0,
            exhausted: false,
            missing_program: false,
            sockets: Default::default(),
            socket_log: Vec::new(),
            port_taken: false,
            leftovers: Default::default(),
            given_up: Vec::new(),
            leave_processes: false,
            until_local_is_zero: false,
            probes: Vec::new(),
            probe_pids: Vec::new(),
            withdrawn: Vec::new(),
        }
    }

    fn new_pid(&mut self) -> Pid {
        let pid = Pid::from_raw(self.next_pid);
        self.next_pid += 1;
        pid
    }
}

impl ProcessControl for FakeOs {
    fn open_sockets(&mut self, unit: &Unit) -> Result<(), String> {
        if self.port_taken {
            return Err(format!(
                "{}: cannot listen on tcp://127.0.0.1:8080: Address already in use",
                unit.name
            ));
        }
        self.sockets.insert(unit.name.clone());
        self.socket_log.push(("open", unit.name.clone()));
        Ok(())
    }

    fn sockets_open(&self, unit: &str) -> bool {
        self.sockets.contains(unit)
    }

    fn close_sockets(&mut self, unit: &str) {
        if self.sockets.remove(unit) {
            self.socket_log.push(("close", unit.to_string()));
        }
    }

    fn spawn(&mut self, request: &SpawnRequest) -> Result<Pid, SpawnError> {
        let pid = if self.failing_spawns > 0 {
            self.failing_spawns -= 1;
            None
        } else {
            Some(self.new_pid())
        };
        self.spawns.push(Spawned {
            id: request.id,
            unit: request.unit.name.clone(),
            index: request.index,
            instances: request.instances,
            command: request.unit.command.clone(),
            pid,
        });
        match pid {
            Some(pid) => Ok(pid),
            None if self.exhausted => Err(SpawnError::from_errno(
                SpawnStage::Channel,
                &request.unit.command[0],
                "cannot create the worker channel",
                nix::errno::Errno::EMFILE,
            )),
            None if self.missing_program => Err(SpawnError::new(
                SpawnStage::Program,
                &request.unit.command[0],
                NO_SUCH_PROGRAM,
            )),
            None => Err(SpawnError::from_errno(
                SpawnStage::PassFds,
                &request.unit.command[0],
                "cannot pass its file descriptors",
                nix::errno::Errno::EBADF,
            )),
        }
    }

    fn spawn_hook(&mut self, request: &HookRequest) -> Result<Pid, SpawnError> {
        let pid = self.new_pid();
        self.hooks.push(HookRun {
            pid,
            unit: request.unit.name.clone(),
            command: request.command.to_vec(),
            environment: request.environment.clone(),
        });
        Ok(pid)
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) {
        self.signals.push((pgid, signal));
    }

    fn start_probe(
        &mut self,
        request: &crate::supervisor::process_control::ProbeRequest,
    ) -> Result<Option<Pid>, String> {
        self.probes.push((request.id, request.seq));
        match request.probe {
            crate::unit::Probe::Command(_) => {
                let pid = self.new_pid();
                self.probe_pids.push(pid);
                Ok(Some(pid))
            }
            crate::unit::Probe::Http(_) => Ok(None),
        }
    }

    fn withdraw_hung(&mut self, id: SpawnId) {
        self.withdrawn.push(id);
    }

    fn local_time(&self) -> crate::unit::cron::LocalTime {
        self.local_time
    }

    fn until_local(&self, then: crate::unit::cron::LocalTime) -> Duration {
        if self.until_local_is_zero {
            return Duration::ZERO;
        }
        self.local_time.duration_until(then)
    }

    fn signal_process(&mut self, pid: Pid, signal: Signal) {
        self.process_signals.push((pid, signal));
    }

    fn send_message(&mut self, id: SpawnId, line: Vec<u8>) -> Result<(), String> {
        self.messages
            .push((id, String::from_utf8_lossy(&line).into_owned()));
        Ok(())
    }

    fn reap(&mut self) -> Vec<(Pid, RawWaitStatus)> {
        std::mem::take(&mut self.exits)
    }

    fn exec_failures(&mut self, _wait: bool) -> Vec<(Pid, SpawnError)> {
        std::mem::take(&mut self.exec_failures)
    }

    fn release(&mut self, id: SpawnId) {
        self.released.push(id);
        if self.leave_processes {
            self.leftovers.insert(id);
        }
    }

    fn has_leftovers(&mut self, id: SpawnId) -> bool {
        self.leftovers.contains(&id)
    }

    fn give_up_on_leftovers(&mut self, id: SpawnId) -> String {
        self.leftovers.remove(&id);
        self.given_up.push(id);
        format!("the processes of instance {id}")
    }

    fn signal_number(&mut self, id: SpawnId, pid: Pid, number: i32, all: bool) {
        self.number_signals.push((id, pid, number, all));
    }

    /// Without cgroups: the instance's process group, recorded with the others.
    fn signal_instance(&mut self, _id: SpawnId, pgid: Pid, signal: Signal) {
        self.signals.push((pgid, signal));
    }

    /// No Node worker here: the unit's `stop_message` if it has one, else `kill_signal`.
    fn begin_stop(
        &mut self,
        id: SpawnId,
        _pid: Pid,
        _kill_signal: Signal,
        stop_message: Option<Vec<u8>>,
    ) -> GracefulStop {
        match stop_message {
            Some(line) => match self.send_message(id, line) {
                Ok(()) => GracefulStop::Asked,
                Err(_) => GracefulStop::SendKillSignal,
            },
            None => GracefulStop::SendKillSignal,
        }
    }

    fn release_indexes_from(&mut self, unit: &str, index: u32) {
        self.released_indexes.push((unit.to_string(), index));
    }

    /// Its sockets are all the fake keeps for a unit.
    fn release_unit(&mut self, unit: &str) {
        self.close_sockets(unit);
    }

    /// Without cgroups, unless the group's id is someone else's now.
    fn kill_leftovers(&mut self, _id: SpawnId, pgid: Pid, pid_reused: bool) {
        if !pid_reused {
            self.signals.push((pgid, Signal::SIGKILL));
        }
    }

    /// Leftovers here end only when the supervisor gives up on them: none ever clears.
    fn collect_cleared(&mut self) -> Vec<SpawnId> {
        Vec::new()
    }

    /// The fake prepares nothing ahead.
    fn has_idle_work(&self) -> bool {
        false
    }

    fn do_idle_work(&mut self) {}

    /// Nothing is watched: the tests feed `Event::FilesChanged` themselves.
    fn watch_files(&mut self, _name: &str, _unit: Option<&Unit>) {}

    fn watch_report(&self, _name: &str) -> Option<(u64, Option<String>)> {
        None
    }

    fn unit_event(&mut self, unit: &Unit, index: Option<u32>, text: &str) {
        self.unit_events
            .push((unit.name.clone(), index, text.to_string()));
    }

    /// The fake has no log: the spawn it recorded is the start.
    fn instance_started(&mut self, _unit: &Unit, _index: u32, _pid: Pid) {}

    /// No process to measure: status shows no usage.
    fn usage(&self, _instances: &[(SpawnId, Pid, Instant)]) -> HashMap<SpawnId, Usage> {
        HashMap::new()
    }

    fn daemon_status(&self) -> Option<DaemonStatus> {
        None
    }

    fn log_destination(&self, _unit: &Unit) -> Option<(String, Option<String>)> {
        None
    }

    fn isolation(&self) -> Option<String> {
        None
    }
}

fn file(name: &str, text: &str) -> LoadedFile {
    let path = PathBuf::from(format!("/units/{name}.toml"));
    LoadedFile {
        name: name.to_string(),
        result: Unit::parse(&path, text),
        path,
    }
}

/// A supervisor over the fake, with a clock that only moves when told.
struct Harness {
    sup: Supervisor<FakeOs>,
    now: Instant,
}

impl Harness {
    /// Starts the units on a fake OS the test has configured (failing spawns, a taken port).
    fn with_os(os: FakeOs, files: &[(&str, &str)]) -> Harness {
        let now = Instant::now();
        let mut sup = Supervisor::new(os);
        sup.start_all(files.iter().map(|(n, t)| file(n, t)).collect(), now);
        Harness { sup, now }
    }

    fn start(files: &[(&str, &str)]) -> Harness {
        let now = Instant::now();
        let mut sup = Supervisor::new(FakeOs::new());
        sup.start_all(files.iter().map(|(n, t)| file(n, t)).collect(), now);
        Harness { sup, now }
    }

    fn os(&self) -> &FakeOs {
        &self.sup.os
    }

    fn os_mut(&mut self) -> &mut FakeOs {
        &mut self.sup.os
    }

    fn handle(&mut self, event: Event) {
        self.sup.handle(event, self.now);
    }

    /// The children exit together, and one SIGCHLD tells of it.
    fn exit_all(&mut self, exits: &[(Pid, ExitStatus)]) {
        let raw = exits.iter().map(|&(pid, status)| {
            let raw = match status {
                ExitStatus::Code(code) => RawWaitStatus::exited(code as u8),
                ExitStatus::Signaled(number) => RawWaitStatus::killed(number),
            };
            (pid, raw)
        });
        self.os_mut().exits.extend(raw);
        self.handle(Event::Signal(libc::SIGCHLD));
    }

    /// The `count` current instances of `unit` all exit on the SIGTERM they were sent.
    fn all_exit_on_sigterm(&mut self, unit: &str, count: usize) {
        let exits: Vec<(Pid, ExitStatus)> = (0..count)
            .map(|i| (self.pid_of(unit, i), killed(Signal::SIGTERM)))
            .collect();
        self.exit_all(&exits);
    }

    fn exit(&mut self, pid: Pid, status: ExitStatus) {
        self.exit_all(&[(pid, status)]);
    }

    fn signal(&mut self, signal: i32) {
        self.handle(Event::Signal(signal));
    }

    fn request(&mut self, request: Request) -> Receiver<Response> {
        let (reply, receiver) = crossbeam_channel::unbounded();
        self.handle(Event::Control { request, reply });
        receiver
    }

    /// `scale UNIT N` on a unit whose instances are ready at once; true if it succeeded.
    fn ask_scale_to(&mut self, unit: &str, count: u32) -> bool {
        let request = Request::Scale {
            unit: unit.to_string(),
            count: ScaleCount::To(count),
        };
        self.ask(request).ok
    }

    /// A request that must be answered at once.
    fn ask(&mut self, request: Request) -> Response {
        let receiver = self.request(request);
        receiver.try_recv().expect("no immediate reply")
    }

    fn worker(&mut self, pid: Pid, message: WorkerMessage) {
        let id = self.spawn_of(pid).id;
        self.handle(Event::Worker {
            id,
            message,
            credit: Credit::none(),
        });
    }

    fn notify(&mut self, pid: Pid, pgid: Pid, message: NotifyMessage) {
        self.handle(Event::Notify {
            pid,
            pgid: Some(pgid),
            instance: None,
            message,
            credit: Credit::none(),
        });
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.sup.fire_due_timers(self.now);
    }

    fn apply(&mut self, files: &[(&str, &str)]) -> Response {
        let files = files.iter().map(|(n, t)| file(n, t)).collect();
        self.sup.apply_units(files, self.now)
    }

    fn status(&self, unit: &str) -> UnitStatus {
        let report = self.sup.status(Some(unit), self.now);
        assert_eq!(report.units.len(), 1, "no status for {unit}");
        report.units[0].clone()
    }

    fn has_unit(&self, unit: &str) -> bool {
        !self.sup.status(Some(unit), self.now).units.is_empty()
    }

    /// The pid serving each wanted index (`None` for an empty index).
    fn current_pids(&self, unit: &str) -> Vec<Option<Pid>> {
        let status = self.status(unit);
        status
            .instances
            .iter()
            .filter(|i| !i.draining && i.index < status.wanted_instances)
            .map(|i| i.pid.map(|p| Pid::from_raw(p as i32)))
            .collect()
    }

    fn pid_of(&self, unit: &str, index: usize) -> Pid {
        self.current_pids(unit)[index].expect("index not running")
    }

    fn spawn_count(&self) -> usize {
        self.os().spawns.len()
    }

    fn last_pid(&self) -> Pid {
        self.os()
            .spawns
            .last()
            .and_then(|s| s.pid)
            .expect("no successful spawn")
    }

    fn spawn_of(&self, pid: Pid) -> Spawned {
        self.os()
            .spawns
            .iter()
            .find(|s| s.pid == Some(pid))
            .cloned()
            .expect("unknown pid")
    }

    fn signals_to(&self, pid: Pid) -> Vec<Signal> {
        self.os()
            .signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }
}

fn code(n: i32) -> ExitStatus {
    ExitStatus::Code(n)
}

fn killed(signal: Signal) -> ExitStatus {
    ExitStatus::Signaled(signal as i32)
}

fn unit(name: &str) -> String {
    name.to_string()
}

fn ready() -> NotifyMessage {
    NotifyMessage {
        ready: true,
        ..NotifyMessage::default()
    }
}

/// Makes the unit's newest process exit with code 1 until nothing new is spawned, `pause`
/// apart; returns how many crashes it took.
fn crash_until_no_respawn(h: &mut Harness, pause: Duration, limit: usize) -> usize {
    for crashes in 0..limit {
        let before = h.spawn_count();
        let pid = h.last_pid();
        h.advance(pause);
        h.exit(pid, code(1));
        if h.spawn_count() == before {
            return crashes + 1;
        }
    }
    limit
}

const WEB: &str = "command = \"sleep 100\"\non_giveup = \"alarm web\"\n";

// ---- crash, restart limit, give-up ----

#[test]
fn a_crash_restarts_the_same_index_at_once() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 3\n")]);
    assert_eq!(h.spawn_count(), 3);
    let old = h.pid_of("web", 1);
    h.exit(old, code(1));
    assert_eq!(h.spawn_count(), 4);
    let new = h.os().spawns[3].clone();
    assert_eq!((new.unit.as_str(), new.index, new.instances), ("web", 1, 3));
    assert_eq!(h.pid_of("web", 1), new.pid.unwrap());
    assert!(h.os().released.contains(&h.spawn_of(old).id));
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.restarts, 1);
    assert_eq!(status.instances[1].restarts, 1);
    assert_eq!(
        status.instances[1].last_exit.as_deref(),
        Some("exited with code 1")
    );
    // The unit's log says why: the exit, against the instance's index.
    let events = &h.os().unit_events;
    assert!(
        events
            .iter()
            .any(|(u, i, text)| u == "web" && *i == Some(1) && text.contains("exited with code 1")),
        "{events:?}"
    );
}

const LISTENER: &str =
    "command = \"sleep 100\"\ninstances = 2\nlisten = [\"tcp://127.0.0.1:8080\"]\non_giveup = \"alarm\"\n";

#[test]
fn a_unit_that_gave_up_closes_its_sockets_once_no_instance_is_left_and_start_reopens_them() {
    let text = "command = \"sleep 100\"\ninstances = 2\nlisten = [\"tcp://127.0.0.1:8080\"]\nrestart_limit = { burst = 1 }\n";
    let mut h = Harness::start(&[("web", text)]);
    let survivor = h.pid_of("web", 1);
    h.exit(h.pid_of("web", 0), code(1));
    h.exit(h.pid_of("web", 0), code(1));
    assert!(h.status("web").gave_up);
    // Instance 1 still accepts: the sockets stay.
    assert!(h.os().sockets.contains("web"));
    h.exit(survivor, code(1));
    assert!(
        !h.os().sockets.contains("web"),
        "nobody accepts, yet the sockets are open"
    );
    let reply = h.request(Request::Start { unit: unit("web") });
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
    assert!(h.os().sockets.contains("web"));
    assert_eq!(
        h.os().socket_log,
        [
            ("open", unit("web")),
            ("close", unit("web")),
            ("open", unit("web"))
        ]
    );
}

#[test]
fn a_units_sockets_outlive_crashes_and_restarts_and_close_when_it_is_stopped() {
    let mut h = Harness::start(&[("web", LISTENER)]);
    assert!(h.os().sockets.contains("web"));
    h.exit(h.pid_of("web", 0), code(1));
    let reply = h.request(Request::Restart { unit: unit("web") });
    h.all_exit_on_sigterm("web", 2);
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
    // Opened once, never closed across a crash and a restart.
    assert_eq!(h.os().socket_log, [("open", unit("web"))]);
    let reply = h.request(Request::Stop { unit: unit("web") });
    h.all_exit_on_sigterm("web", 2);
    // Closed before the stop is answered.
    assert!(!h.os().sockets.contains("web"));
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
}

#[test]
fn a_unit_whose_port_is_taken_fails_alarms_once_and_starts_when_asked_again() {
    let mut os = FakeOs::new();
    os.port_taken = true;
    let mut h = Harness::with_os(os, &[("web", LISTENER)]);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Failed);
    assert!(status
        .error
        .unwrap_or_default()
        .contains("Address already in use"));
    assert_eq!(h.spawn_count(), 0);
    assert_eq!(h.os().hooks.len(), 1);
    let reply = h.request(Request::Start { unit: unit("web") });
    assert!(reply.try_recv().is_ok_and(|r| !r.ok), "still taken");
    assert_eq!(
        h.os().hooks.len(),
        2,
        "each failed start is a give-up with its alarm"
    );
    h.os_mut().port_taken = false;
    let reply = h.request(Request::Start { unit: unit("web") });
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.status("web").state, UnitState::Running);
}

#[test]
fn an_instance_killed_by_a_real_time_signal_is_recorded_and_restarted() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    let old = h.pid_of("web", 0);
    let other = h.pid_of("web", 1);
    // Handed over as the kernel writes it, with a signal number nix has no name for; the
    // other instance's exit in the same SIGCHLD must not be lost behind it.
    let rt = libc::SIGRTMIN() + 1;
    h.os_mut().exits.push((old, RawWaitStatus::killed(rt)));
    h.os_mut().exits.push((other, RawWaitStatus::exited(2)));
    h.handle(Event::Signal(libc::SIGCHLD));
    assert_eq!(h.spawn_count(), 4, "both indexes restarted");
    let status = h.status("web");
    assert_ne!(h.pid_of("web", 0), old);
    let last = status.instances[0].last_exit.clone().unwrap_or_default();
    assert!(last.contains(&format!("signal {rt}")), "{last}");
    assert_eq!(
        status.instances[1].last_exit.as_deref(),
        Some("exited with code 2")
    );
}

#[test]
fn an_always_failing_unit_is_spawned_eleven_times_then_gives_up_and_alarms_once() {
    let mut h = Harness::start(&[("web", WEB)]);
    let crashes = crash_until_no_respawn(&mut h, 100 * MS, 50);
    assert_eq!(crashes, 11);
    assert_eq!(h.spawn_count(), 11, "1 start + 10 restarts");
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Failed);
    assert!(status.gave_up);
    assert_eq!(status.restarts, 10);
    assert!(status.error.as_deref().unwrap().contains("gave up"));
    assert_eq!(status.instances[0].state, InstanceState::Stopped);
    assert_eq!(
        status.instances[0].last_exit.as_deref(),
        Some("exited with code 1")
    );

    assert_eq!(h.os().hooks.len(), 1);
    let hook = h.os().hooks[0].clone();
    assert_eq!(hook.unit, "web");
    assert_eq!(hook.command, ["alarm", "web"]);
    let env = |key: &str| {
        hook.environment
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env("CLUSTERD_UNIT").as_deref(), Some("web"));
    assert_eq!(env("CLUSTERD_RESTARTS").as_deref(), Some("10"));
    assert_eq!(env("CLUSTERD_INTERVAL").as_deref(), Some("1m"));

    // The hook's exit is not mistaken for an instance, and nothing more happens.
    h.exit(hook.pid, code(0));
    h.advance(120 * SECOND);
    assert_eq!(h.spawn_count(), 11);
    assert_eq!(h.os().hooks.len(), 1);
    assert_eq!(h.status("web").state, UnitState::Failed);
}

#[test]
fn instances_that_still_run_keep_serving_after_a_give_up() {
    let text = "command = \"sleep 100\"\ninstances = 2\nrestart_limit = { burst = 1 }\n";
    let mut h = Harness::start(&[("web", text)]);
    let survivor = h.pid_of("web", 1);
    h.exit(h.pid_of("web", 0), code(1));
    h.exit(h.pid_of("web", 0), code(1));
    let status = h.status("web");
    assert!(status.gave_up);
    assert_eq!(status.instances[1].pid, Some(survivor.as_raw() as u32));
    assert_eq!(status.instances[1].state, InstanceState::Running);
    assert!(h.signals_to(survivor).is_empty());
    // Its crash is not restarted either.
    h.exit(survivor, code(1));
    assert_eq!(h.spawn_count(), 3);
}

#[test]
fn restarts_spread_wider_than_the_window_never_give_up() {
    let mut h = Harness::start(&[("web", WEB)]);
    let crashes = crash_until_no_respawn(&mut h, 7 * SECOND, 100);
    assert_eq!(crashes, 100, "gave up after {crashes} crashes");
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.restarts, 100);
    assert!(h.os().hooks.is_empty());
}

#[test]
fn start_clears_a_give_up_and_restarts_the_unit() {
    let mut h = Harness::start(&[("web", WEB)]);
    crash_until_no_respawn(&mut h, 100 * MS, 50);
    assert!(h.status("web").gave_up);

    let reply = h.ask(Request::Start { unit: unit("web") });
    assert!(reply.ok, "{reply:?}");
    assert_eq!(h.spawn_count(), 12);
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.restarts, 0);
    assert_eq!(status.error, None);

    // A full budget again: 10 more restarts, and the 11th crash gives up.
    let crashes = crash_until_no_respawn(&mut h, 100 * MS, 50);
    assert_eq!(crashes, 11);
    assert!(h.status("web").gave_up);
    assert_eq!(h.os().hooks.len(), 2, "one alarm per give-up");
}

#[test]
fn restart_clears_a_give_up() {
    let mut h = Harness::start(&[("web", WEB)]);
    crash_until_no_respawn(&mut h, 100 * MS, 50);
    let reply = h.ask(Request::Restart { unit: unit("web") });
    assert!(reply.ok, "{reply:?}");
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(h.spawn_count(), 12);
}

#[test]
fn manual_starts_and_restarts_do_not_count_against_the_limit() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 2, interval = \"1m\" }\n";
    let mut h = Harness::start(&[("web", text)]);
    for _ in 0..5 {
        let old = h.pid_of("web", 0);
        let reply = h.request(Request::Restart { unit: unit("web") });
        assert_eq!(h.signals_to(old), [Signal::SIGTERM, Signal::SIGCONT]);
        assert!(
            reply.try_recv().is_err(),
            "replied before the stop was done"
        );
        h.exit(old, killed(Signal::SIGTERM));
        assert!(reply.try_recv().unwrap().ok);
        let stop = h.request(Request::Stop { unit: unit("web") });
        h.exit(h.pid_of("web", 0), killed(Signal::SIGTERM));
        assert!(stop.try_recv().unwrap().ok);
        assert!(h.ask(Request::Start { unit: unit("web") }).ok);
    }
    assert_eq!(h.spawn_count(), 11);
    assert_eq!(h.status("web").restarts, 0);
    // The whole budget is still there.
    let crashes = crash_until_no_respawn(&mut h, 100 * MS, 50);
    assert_eq!(crashes, 3);
}

/// `restart_limit.min_uptime` (PM2's `min_uptime` with `max_restarts`): a crash after a run
/// of at least `min_uptime` is restarted without counting, so a service that crashes once a
/// day never gives up; a loop of short runs still does.
#[test]
fn with_min_uptime_only_short_runs_count_against_the_limit() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 2, interval = \"30d\", min_uptime = \"10s\" }\n";
    let mut h = Harness::start(&[("web", text)]);
    // A crash a day for a week: every one restarted.
    for _ in 0..7 {
        let before = h.spawn_count();
        let pid = h.last_pid();
        h.advance(Duration::from_secs(24 * 3600));
        h.exit(pid, code(1));
        assert_eq!(h.spawn_count(), before + 1);
    }
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 7);
    // Runs of 1 s: two are restarted, the third gives up.
    assert_eq!(
        crash_until_no_respawn(&mut h, Duration::from_secs(1), 50),
        3
    );
    assert!(h.status("web").gave_up);
}

// ---- spawn errors ----

#[test]
fn a_spawn_error_counts_as_a_failed_start_and_gives_up_after_the_budget() {
    let mut os = FakeOs::new();
    os.failing_spawns = usize::MAX;
    let h = Harness::with_os(os, &[("web", WEB)]);
    assert_eq!(h.spawn_count(), 11, "1 start + 10 retries");
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Failed);
    assert!(status.gave_up);
    assert_eq!(status.restarts, 10);
    let last_exit = status.instances[0].last_exit.clone().unwrap();
    assert!(last_exit.contains(CANNOT_PASS_FDS), "{last_exit}");
    assert_eq!(h.os().hooks.len(), 1);
}

#[test]
fn a_spawn_that_fails_for_lack_of_resources_is_retried_later_outside_the_budget() {
    let mut os = FakeOs::new();
    os.failing_spawns = 5;
    os.exhausted = true;
    let mut h = Harness::with_os(os, &[("web", WEB)]);
    // One try, no tight loop, and the budget is untouched.
    assert_eq!(h.spawn_count(), 1);
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 0);
    // Retried after 100 ms, 200 ms, 400 ms, 800 ms: each a deadline, never a spin.
    let mut delays = Vec::new();
    let mut waited = Duration::ZERO;
    while h.spawn_count() < 6 && waited < 10 * SECOND {
        let before = h.spawn_count();
        h.advance(10 * MS);
        waited += 10 * MS;
        if h.spawn_count() > before {
            delays.push(waited);
            waited = Duration::ZERO;
        }
    }
    assert_eq!(
        delays,
        [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS],
        "retry delays"
    );
    assert_eq!(h.status("web").state, UnitState::Running);
    assert_eq!(h.status("web").restarts, 0);
    assert!(h.os().hooks.is_empty(), "no alarm for exhaustion");
}

#[test]
fn one_pass_over_many_missing_instances_arms_one_retry_at_the_first_delay() {
    let mut os = FakeOs::new();
    os.failing_spawns = 1;
    os.exhausted = true;
    let mut h = Harness::with_os(os, &[("web", "command = \"sleep 100\"\ninstances = 3\n")]);
    // The first start failed; the other two were not tried in the same pass.
    assert_eq!(h.spawn_count(), 1);
    h.advance(100 * MS);
    assert_eq!(h.spawn_count(), 4, "all three started at the first retry");
    assert_eq!(h.status("web").state, UnitState::Running);
}

#[test]
fn a_spawn_error_is_retried_within_the_budget() {
    let mut os = FakeOs::new();
    os.failing_spawns = 3;
    let h = Harness::with_os(os, &[("web", WEB)]);
    assert_eq!(h.spawn_count(), 4);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 3);
    assert!(h.os().hooks.is_empty());
}

#[test]
fn a_unit_whose_program_cannot_start_alarms_once_for_all_its_instances() {
    let mut os = FakeOs::new();
    os.failing_spawns = usize::MAX;
    let text = format!("{WEB}instances = 3\n");
    let mut h = Harness::with_os(os, &[("web", &text)]);
    assert!(h.status("web").gave_up);
    assert_eq!(h.os().hooks.len(), 1, "on_giveup must run once");
    // Scaling a gave-up unit up does not sound the alarm again either.
    let _ = h.request(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::Up(1),
    });
    assert_eq!(h.os().hooks.len(), 1, "on_giveup must run once");
}

#[test]
fn a_program_that_cannot_be_executed_is_retried_on_a_backoff_outside_the_budget() {
    let mut os = FakeOs::new();
    os.failing_spawns = usize::MAX;
    os.missing_program = true;
    let mut h = Harness::with_os(os, &[("web", WEB)]);
    // One try, reported with its cause at once; no restart counted, no alarm.
    assert_eq!(h.spawn_count(), 1);
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 0);
    let error = status.error.clone().unwrap_or_default();
    assert!(error.starts_with(NO_SUCH_PROGRAM), "{status:?}");
    assert!(h
        .os()
        .unit_events
        .iter()
        .any(|(_, _, text)| text.contains(NO_SUCH_PROGRAM)));
    // Tried again after 1 s, doubling up to 60 s, for as long as it takes.
    let mut delays = Vec::new();
    let mut waited = Duration::ZERO;
    while delays.len() < 8 && waited < 120 * SECOND {
        let before = h.spawn_count();
        h.advance(100 * MS);
        waited += 100 * MS;
        if h.spawn_count() > before {
            delays.push(waited.as_secs());
            waited = Duration::ZERO;
        }
    }
    assert_eq!(
        delays,
        [1, 2, 4, 8, 16, 32, 60, 60],
        "retry delays in seconds"
    );
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 0);
    assert!(h.os().hooks.is_empty(), "no give-up alarm");
    // The program is installed: the next retry starts it, and the error is gone.
    h.os_mut().failing_spawns = 0;
    h.advance(60 * SECOND);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.error, None);
    assert_eq!(status.restarts, 0);
}

#[test]
fn start_answers_at_once_with_why_the_program_cannot_be_executed() {
    let mut h = Harness::start(&[("web", WEB)]);
    let stop = h.request(Request::Stop { unit: unit("web") });
    h.exit(h.pid_of("web", 0), killed(Signal::SIGTERM));
    assert!(stop.try_recv().unwrap().ok);
    h.os_mut().failing_spawns = usize::MAX;
    h.os_mut().missing_program = true;
    let reply = h.ask(Request::Start { unit: unit("web") });
    assert!(!reply.ok, "{reply:?}");
    let error = reply.error.unwrap_or_default();
    assert!(error.contains(NO_SUCH_PROGRAM), "{error}");
    // A manual start tries again at once, and the backoff starts over.
    let spawns = h.spawn_count();
    assert!(!h.ask(Request::Start { unit: unit("web") }).ok);
    assert_eq!(h.spawn_count(), spawns + 1);
    h.advance(SECOND);
    assert_eq!(h.spawn_count(), spawns + 2, "retried after 1 s");
}

/// The exec failure of a child found after `spawn` returned (the OS side does not wait for
/// each exec): reported and retried as a failed spawn is, on the backoff, outside the restart
/// budget; a start that waits for the execs answers with the cause.
#[test]
fn an_exec_failure_found_after_the_spawn_is_a_failed_start_retried_on_the_backoff() {
    let mut h = Harness::start(&[("web", WEB)]);
    let pid = h.pid_of("web", 0);
    let failure = |pid| {
        (
            pid,
            SpawnError::from_errno(
                SpawnStage::Exec,
                "nosuch",
                "cannot execute \"nosuch\"",
                nix::errno::Errno::ENOENT,
            ),
        )
    };
    h.os_mut().exec_failures.push(failure(pid));
    h.exit(pid, code(127));
    let status = h.status("web");
    assert_eq!(status.restarts, 0);
    assert!(!status.gave_up);
    let error = status.error.unwrap_or_default();
    assert!(error.contains(NO_SUCH_PROGRAM), "{error}");
    assert!(status.instances[0]
        .last_exit
        .as_deref()
        .is_some_and(|e| e.starts_with("failed to start: ")));
    // Not restarted as a crash: started again by the backoff, 1 s later.
    let spawns = h.spawn_count();
    h.advance(Duration::from_millis(900));
    assert_eq!(h.spawn_count(), spawns);
    h.advance(Duration::from_millis(100));
    assert_eq!(h.spawn_count(), spawns + 1, "retried after 1 s");

    // A manual start waits for the execs of what it started, and names the cause.
    let again = h.pid_of("web", 0);
    let stop = h.request(Request::Stop { unit: unit("web") });
    h.exit(again, killed(Signal::SIGTERM));
    assert!(stop.try_recv().expect("stopped").ok);
    let next = Pid::from_raw(h.os_mut().next_pid);
    h.os_mut().exec_failures.push(failure(next));
    let reply = h.ask(Request::Start { unit: unit("web") });
    assert!(!reply.ok, "{reply:?}");
    assert!(
        reply.error.unwrap_or_default().contains(NO_SUCH_PROGRAM),
        "the cause"
    );
}

#[test]
fn restart_answers_with_why_the_program_cannot_be_executed() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    h.os_mut().failing_spawns = usize::MAX;
    h.os_mut().missing_program = true;
    let reply = h.request(Request::Restart { unit: unit("web") });
    h.exit(old, killed(Signal::SIGTERM));
    let reply = reply.try_recv().expect("answered once the start failed");
    assert!(!reply.ok, "{reply:?}");
    let error = reply.error.unwrap_or_default();
    assert!(error.contains(NO_SUCH_PROGRAM), "{error}");
    assert_eq!(h.status("web").restarts, 0);
    assert!(!h.status("web").gave_up);
}

#[test]
fn daemon_reload_says_which_new_unit_cannot_be_executed() {
    let mut h = Harness::start(&[("web", WEB)]);
    h.os_mut().failing_spawns = 1;
    h.os_mut().missing_program = true;
    let response = h.apply(&[("web", WEB), ("api", "command = \"nosuch\"\n")]);
    assert!(!response.ok, "{response:?}");
    let error = response.error.unwrap_or_default();
    assert!(error.contains("started api"), "{error}");
    assert!(
        error.contains(&format!("api: {NO_SUCH_PROGRAM}")),
        "{error}"
    );
    h.advance(SECOND);
    assert_eq!(h.status("api").state, UnitState::Running);
}

#[test]
fn restart_never_does_not_retry_a_spawn_error() {
    let mut os = FakeOs::new();
    os.failing_spawns = 1;
    let h = Harness::with_os(
        os,
        &[("web", "command = \"nosuch\"\nrestart = \"never\"\n")],
    );
    assert_eq!(h.spawn_count(), 1);
    let status = h.status("web");
    assert!(!status.gave_up);
    assert_eq!(status.instances[0].state, InstanceState::Stopped);
}

// ---- restart policies ----

#[test]
fn on_failure_restarts_after_a_failure_but_not_after_a_clean_exit() {
    let text = "command = \"sleep 100\"\ninstances = 4\nrestart = \"on-failure\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pids: Vec<Pid> = (0..4).map(|i| h.pid_of("web", i)).collect();
    h.exit(pids[0], code(1));
    assert_eq!(h.spawn_count(), 5);
    assert_eq!(h.os().spawns[4].index, 0);
    h.exit(pids[1], code(0));
    h.exit(pids[2], killed(Signal::SIGTERM));
    assert_eq!(h.spawn_count(), 5, "a clean exit was restarted");
    h.exit(pids[3], killed(Signal::SIGKILL));
    assert_eq!(h.spawn_count(), 6, "SIGKILL is a failure");
    assert_eq!(h.os().spawns[5].index, 3);
    let status = h.status("web");
    let states: Vec<InstanceState> = status.instances.iter().map(|i| i.state).collect();
    assert_eq!(
        states,
        [
            InstanceState::Running,
            InstanceState::Stopped,
            InstanceState::Stopped,
            InstanceState::Running
        ]
    );
    assert_eq!(status.restarts, 2);
}

/// `restart_prevent_exit_codes` (PM2's `stop_exit_codes`): with `restart = "always"` an exit
/// with a listed code is not restarted and is no crash; other codes and signals are.
#[test]
fn restart_prevent_exit_codes_stop_an_instance_whatever_the_policy() {
    let text = "command = \"sleep 100\"\ninstances = 4\nrestart_prevent_exit_codes = [3]\n";
    let mut h = Harness::start(&[("web", text)]);
    let pids: Vec<Pid> = (0..4).map(|i| h.pid_of("web", i)).collect();
    h.exit(pids[0], code(3));
    assert_eq!(
        h.spawn_count(),
        4,
        "an exit with a prevented code was restarted"
    );
    h.exit(pids[1], code(0));
    h.exit(pids[2], killed(Signal::SIGTERM));
    h.exit(pids[3], code(1));
    assert_eq!(
        h.spawn_count(),
        7,
        "restart = always restarts the other exits"
    );
    let status = h.status("web");
    assert_eq!(status.instances[0].state, InstanceState::Stopped);
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 3);
}

#[test]
fn restart_never_never_restarts() {
    let text = "command = \"sleep 100\"\ninstances = 3\nrestart = \"never\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pids: Vec<Pid> = (0..3).map(|i| h.pid_of("web", i)).collect();
    h.exit(pids[0], code(1));
    h.exit(pids[1], code(0));
    h.exit(pids[2], killed(Signal::SIGSEGV));
    assert_eq!(h.spawn_count(), 3);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Stopped);
    assert!(!status.gave_up);
    assert_eq!(status.restarts, 0);
}

// ---- stop ----

#[test]
fn stop_signals_the_group_and_replies_once_the_exit_is_reaped() {
    let text = "command = \"sleep 100\"\ninstances = 2\nkill_signal = \"SIGINT\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pids = [h.pid_of("web", 0), h.pid_of("web", 1)];
    let reply = h.request(Request::Stop { unit: unit("web") });
    for pid in pids {
        assert_eq!(h.signals_to(pid), [Signal::SIGINT, Signal::SIGCONT]);
    }
    assert_eq!(h.status("web").state, UnitState::Stopping);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Stopping);
    h.exit(pids[0], killed(Signal::SIGINT));
    assert!(reply.try_recv().is_err(), "replied with an instance left");
    h.exit(pids[1], code(0));
    let reply = reply
        .try_recv()
        .expect("no reply once every instance is gone");
    assert!(reply.ok, "{reply:?}");
    assert_eq!(h.spawn_count(), 2, "a stopped instance was restarted");
    assert_eq!(h.status("web").state, UnitState::Stopped);
    // Stopping a stopped unit answers at once.
    assert!(h.ask(Request::Stop { unit: unit("web") }).ok);
}

#[test]
fn stop_sends_sigkill_once_kill_timeout_has_passed_and_not_before() {
    let text = "command = \"sleep 100\"\nkill_timeout = \"3s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.pid_of("web", 0);
    let reply = h.request(Request::Stop { unit: unit("web") });
    assert_eq!(h.sup.next_deadline(), Some(h.now + 3 * SECOND));
    h.advance(3 * SECOND - MS);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    h.advance(MS);
    assert_eq!(
        h.signals_to(pid),
        [Signal::SIGTERM, Signal::SIGCONT, Signal::SIGKILL]
    );
    assert!(reply.try_recv().is_err());
    h.exit(pid, killed(Signal::SIGKILL));
    assert!(reply.try_recv().unwrap().ok);
    assert_eq!(h.spawn_count(), 1);
}

#[test]
fn unknown_units_are_refused() {
    let mut h = Harness::start(&[("web", WEB)]);
    let reply = h.ask(Request::Stop {
        unit: unit("nosuch"),
    });
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("unknown unit"));
}

// ---- suicide ----

#[test]
fn suicide_starts_the_replacement_at_once_and_kills_the_old_process_after_kill_timeout() {
    let text = "command = \"sleep 100\"\ninstances = 2\nkill_timeout = \"5s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = h.pid_of("web", 1);
    h.worker(old, WorkerMessage::Suicide);
    assert_eq!(h.spawn_count(), 3);
    let new = h.os().spawns[2].clone();
    assert_eq!(new.index, 1);
    assert_eq!(h.pid_of("web", 1), new.pid.unwrap());
    assert!(h.status("web").instances.iter().any(|i| i.draining));

    h.advance(5 * SECOND - MS);
    assert!(
        h.signals_to(old).is_empty(),
        "signalled before kill_timeout"
    );
    h.advance(MS);
    assert_eq!(h.signals_to(old), [Signal::SIGKILL]);
    h.exit(old, killed(Signal::SIGKILL));
    assert_eq!(
        h.spawn_count(),
        3,
        "the old process's exit caused a restart"
    );
    let status = h.status("web");
    assert_eq!(status.restarts, 1, "the replacement counts as a restart");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.instances.len(), 2);
}

#[test]
fn sd_notify_stopping_is_a_suicide() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    let stopping = NotifyMessage {
        stopping: true,
        ..NotifyMessage::default()
    };
    h.notify(old, old, stopping.clone());
    assert_eq!(h.spawn_count(), 2);
    let new = h.pid_of("web", 0);
    assert_ne!(new, old);
    // Said twice, it is still one replacement.
    h.notify(old, old, stopping);
    assert_eq!(h.spawn_count(), 2);
    // It leaves on its own before its deadline: no second restart. What it left in its
    // group is cleaned up (kill_signal now, SIGKILL after kill_timeout), as after any exit,
    // and the suicide deadline adds no second SIGKILL.
    h.advance(SECOND);
    assert!(h.signals_to(old).is_empty());
    h.exit(old, code(0));
    h.advance(10 * SECOND);
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.signals_to(old), [Signal::SIGTERM, Signal::SIGKILL]);
    assert!(h.signals_to(new).is_empty());
    assert_eq!(h.pid_of("web", 0), new);
}

#[test]
fn suicide_replacements_count_against_the_limit() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 2 }\nkill_timeout = \"1s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    for _ in 0..2 {
        let old = h.pid_of("web", 0);
        h.worker(old, WorkerMessage::Suicide);
        h.advance(SECOND);
        h.exit(old, killed(Signal::SIGKILL));
    }
    assert_eq!(h.spawn_count(), 3);
    let last = h.pid_of("web", 0);
    h.worker(last, WorkerMessage::Suicide);
    assert_eq!(h.spawn_count(), 3, "a third replacement within the window");
    let status = h.status("web");
    assert!(status.gave_up);
    assert_eq!(status.state, UnitState::Failed);
    // It still gets its kill_timeout.
    assert!(h.signals_to(last).is_empty());
    h.advance(SECOND);
    assert_eq!(h.signals_to(last), [Signal::SIGKILL]);
}

#[test]
fn a_suicide_waits_for_a_notify_replacement_to_be_ready_before_the_kill_timeout_starts() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\nkill_timeout = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = h.pid_of("web", 0);
    h.worker(old, WorkerMessage::Ready);
    h.worker(old, WorkerMessage::Suicide);
    let new = h.last_pid();
    assert_ne!(new, old);
    h.advance(5 * SECOND);
    assert!(h.signals_to(old).is_empty());
    h.worker(new, WorkerMessage::Ready);
    h.advance(2 * SECOND);
    assert_eq!(h.signals_to(old), [Signal::SIGKILL]);
}

#[test]
fn a_replacement_that_announces_its_exit_before_it_is_ready_is_restarted_when_it_exits() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\nkill_timeout = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let first = h.pid_of("web", 0);
    h.worker(first, WorkerMessage::Ready);
    h.worker(first, WorkerMessage::Suicide);
    let second = h.last_pid();
    // The replacement is leaving too before it was ever ready.
    h.worker(second, WorkerMessage::Suicide);
    h.exit(second, code(0));
    assert_eq!(h.spawn_count(), 3, "index 0 was left without a process");
    let third = h.last_pid();
    assert_eq!(h.spawn_of(third).index, 0);
    assert_eq!(h.current_pids("web"), [Some(third)]);
    h.advance(2 * SECOND);
    assert_eq!(h.signals_to(first), [Signal::SIGKILL]);
}

#[test]
fn a_suicide_whose_replacement_cannot_start_still_gives_the_old_process_its_kill_timeout() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 2 }\nkill_timeout = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = h.pid_of("web", 0);
    h.os_mut().failing_spawns = usize::MAX;
    h.worker(old, WorkerMessage::Suicide);
    assert_eq!(h.spawn_count(), 3, "1 start + 2 failed replacements");
    assert!(h.status("web").gave_up);
    assert!(h.signals_to(old).is_empty());
    h.advance(2 * SECOND);
    assert_eq!(h.signals_to(old), [Signal::SIGKILL]);
    h.exit(old, killed(Signal::SIGKILL));
    assert_eq!(h.spawn_count(), 3);
    assert_eq!(h.os().hooks.len(), 0);
}

// ---- shutdown ----

#[test]
fn sigterm_stops_every_unit_in_parallel_and_finishes_once_every_child_is_reaped() {
    let mut h = Harness::start(&[
        ("api", "command = \"sleep 100\"\nkill_signal = \"SIGINT\"\n"),
        ("web", "command = \"sleep 100\"\ninstances = 2\n"),
    ]);
    let api = h.pid_of("api", 0);
    let web = [h.pid_of("web", 0), h.pid_of("web", 1)];
    h.signal(libc::SIGTERM);
    assert!(h.sup.is_shutting_down());
    assert!(!h.sup.finished());
    assert_eq!(h.signals_to(api), [Signal::SIGINT, Signal::SIGCONT]);
    for pid in web {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    let reply = h.ask(Request::Start { unit: unit("web") });
    assert!(!reply.ok, "a start was accepted during shutdown");
    assert!(h.ask(Request::Status { unit: None }).ok);

    h.exit(web[0], killed(Signal::SIGTERM));
    h.exit(api, code(1));
    assert!(!h.sup.finished());
    h.exit(web[1], code(0));
    assert!(h.sup.finished());
    assert_eq!(
        h.spawn_count(),
        3,
        "something was restarted during shutdown"
    );
}

#[test]
fn with_a_shutdown_delay_instances_serve_on_not_ready_until_it_ends_or_a_second_signal() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    h.sup.set_shutdown_policy(ShutdownPolicy {
        delay: 5 * SECOND,
        exit_on_giveup: false,
    });
    let web = [h.pid_of("web", 0), h.pid_of("web", 1)];
    h.signal(libc::SIGTERM);
    assert!(h.sup.is_stopping() && !h.sup.is_shutting_down());
    assert!(web.iter().all(|&pid| h.signals_to(pid).is_empty()));
    assert!(h.sup.status(None, h.now).stopping);
    // An instance that crashes meanwhile is still replaced: the delay is for serving.
    h.advance(4 * SECOND);
    assert!(web.iter().all(|&pid| h.signals_to(pid).is_empty()));
    h.advance(SECOND);
    assert!(h.sup.is_shutting_down());
    for pid in web {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    h.exit_all(&web.map(|pid| (pid, killed(Signal::SIGTERM))));
    assert!(h.sup.finished());
    assert_eq!(h.sup.ending(), Ending::default());

    // A second signal does not wait for the end of the delay.
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\n")]);
    h.sup.set_shutdown_policy(ShutdownPolicy {
        delay: 60 * SECOND,
        exit_on_giveup: false,
    });
    let pid = h.pid_of("web", 0);
    h.signal(libc::SIGTERM);
    h.signal(libc::SIGINT);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
}

#[test]
fn with_exit_on_giveup_a_give_up_stops_everything_and_lets_the_alarm_run() {
    let crashy = "command = \"false\"\nrestart_limit = { burst = 1 }\non_giveup = \"alarm\"\n";
    let mut h = Harness::start(&[("crashy", crashy), ("web", "command = \"sleep 100\"\n")]);
    h.sup.set_shutdown_policy(ShutdownPolicy {
        delay: 60 * SECOND,
        exit_on_giveup: true,
    });
    let web = h.pid_of("web", 0);
    h.exit(h.pid_of("crashy", 0), code(1));
    h.exit(h.pid_of("crashy", 0), code(1));
    assert!(h.status("crashy").gave_up);
    // No shutdown delay: nothing is left to serve for.
    assert!(h.sup.is_shutting_down());
    assert_eq!(h.signals_to(web), [Signal::SIGTERM, Signal::SIGCONT]);
    let hook = h.os().hooks[0].pid;
    assert!(h.signals_to(hook).is_empty(), "the alarm was stopped");
    h.exit(web, killed(Signal::SIGTERM));
    assert!(!h.sup.finished(), "finished before the alarm did");
    h.exit(hook, code(0));
    assert!(h.sup.finished());
    assert_eq!(
        h.sup.ending(),
        Ending {
            gave_up: true,
            killed: false
        }
    );
}

#[test]
fn an_instance_killed_after_its_kill_timeout_at_shutdown_shows_in_the_ending() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nkill_timeout = \"2s\"\n")]);
    let pid = h.pid_of("web", 0);
    h.signal(libc::SIGTERM);
    h.advance(2 * SECOND);
    assert_eq!(
        h.signals_to(pid),
        [Signal::SIGTERM, Signal::SIGCONT, Signal::SIGKILL]
    );
    h.exit(pid, killed(Signal::SIGKILL));
    assert!(h.sup.finished());
    assert!(h.sup.ending().killed);
}

#[test]
fn sighup_during_shutdown_starts_nothing_new() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\n")]);
    let web = h.pid_of("web", 0);
    h.signal(libc::SIGTERM);
    // A units directory with a unit that is not running yet: a reload would start it.
    let files = vec![
        file("web", "command = \"sleep 100\"\n"),
        file("late", "command = \"sleep 100\"\n"),
    ];
    h.handle(Event::Reload {
        files: Ok(files),
        reply: None,
    });
    assert_eq!(
        h.spawn_count(),
        1,
        "the reload started a unit during shutdown"
    );
    h.exit(web, killed(Signal::SIGTERM));
    assert!(h.sup.finished());
}

#[test]
fn a_second_sigterm_kills_every_group_at_once() {
    let mut h = Harness::start(&[
        ("api", "command = \"sleep 100\"\n"),
        ("web", "command = \"sleep 100\"\ninstances = 2\n"),
    ]);
    let pids = [h.pid_of("api", 0), h.pid_of("web", 0), h.pid_of("web", 1)];
    h.signal(libc::SIGTERM);
    h.signal(libc::SIGINT);
    for pid in pids {
        assert_eq!(
            h.signals_to(pid),
            [Signal::SIGTERM, Signal::SIGCONT, Signal::SIGKILL]
        );
    }
    h.exit_all(&pids.map(|pid| (pid, killed(Signal::SIGKILL))));
    assert!(h.sup.finished());
}

/// What an instance left in its cgroup, stuck in the kernel, outlives SIGKILL: a stop waits
/// for it only so long, then says what is left and answers.
#[test]
fn a_stop_answers_when_what_an_instance_left_outlives_sigkill_by_the_deadline() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\n")]);
    let pid = h.pid_of("web", 0);
    h.os_mut().leave_processes = true;
    let reply = h.request(Request::Stop { unit: unit("web") });
    h.exit(pid, killed(Signal::SIGTERM));
    // The instance's own process is gone; what it left got SIGKILL, and is waited for.
    assert_eq!(h.signals_to(pid).last(), Some(&Signal::SIGKILL));
    assert!(reply.try_recv().is_err());
    h.advance(super::AFTER_SIGKILL - MS);
    assert!(reply.try_recv().is_err());
    h.advance(MS);
    assert!(reply.try_recv().expect("stop answered").ok);
    assert_eq!(h.os().given_up.len(), 1);
    assert_eq!(h.status("web").state, UnitState::Stopped);
}

/// A second SIGTERM ends clusterd even if what it killed cannot die: past the deadline the
/// supervisor is finished, and the exit says an instance had to be killed.
#[test]
fn a_second_sigterm_ends_clusterd_even_if_a_process_outlives_sigkill() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    let stuck = h.pid_of("web", 0);
    let fine = h.pid_of("web", 1);
    h.signal(libc::SIGTERM);
    h.signal(libc::SIGTERM);
    h.exit(fine, killed(Signal::SIGKILL));
    assert!(!h.sup.finished());
    h.advance(super::AFTER_SIGKILL);
    assert!(h.sup.finished());
    assert!(h.sup.ending().killed);
    assert_eq!(h.signals_to(stuck).last(), Some(&Signal::SIGKILL));
}

/// A first SIGTERM's deadline is each unit's own: a unit whose process outlives its SIGKILL
/// does not cut short another's longer `kill_timeout` (only a second signal ends clusterd).
#[test]
fn a_process_that_outlives_sigkill_does_not_cut_another_units_kill_timeout_short() {
    let mut h = Harness::start(&[
        ("stuck", "command = \"sleep 100\"\nkill_timeout = \"1s\"\n"),
        ("slow", "command = \"sleep 100\"\nkill_timeout = \"60s\"\n"),
    ]);
    let slow = h.pid_of("slow", 0);
    h.signal(libc::SIGTERM);
    h.advance(SECOND + super::AFTER_SIGKILL + SECOND);
    assert!(!h.sup.finished());
    assert_eq!(h.signals_to(slow), [Signal::SIGTERM, Signal::SIGCONT]);
    h.signal(libc::SIGTERM);
    h.advance(super::AFTER_SIGKILL);
    assert!(h.sup.finished());
}

#[test]
fn shutdown_waits_for_a_running_on_giveup_hook() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 0 }\non_giveup = \"alarm\"\n";
    let mut h = Harness::start(&[("web", text)]);
    h.exit(h.pid_of("web", 0), code(1));
    let hook = h.os().hooks[0].pid;
    h.signal(libc::SIGTERM);
    assert_eq!(h.signals_to(hook), [Signal::SIGTERM]);
    assert!(!h.sup.finished());
    h.exit(hook, killed(Signal::SIGTERM));
    assert!(h.sup.finished());
}

#[test]
fn a_start_that_cannot_open_the_listen_sockets_fails_instead_of_hanging() {
    let mut os = FakeOs::new();
    os.port_taken = true;
    let mut h = Harness::with_os(os, &[("web", LISTENER)]);
    assert_eq!(h.spawn_count(), 0);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Failed);
    assert!(status.error.unwrap().contains("cannot listen"));
    for request in [
        Request::Start { unit: unit("web") },
        Request::Restart { unit: unit("web") },
    ] {
        let receiver = h.request(request);
        let reply = receiver.try_recv().expect("the request was left waiting");
        assert!(!reply.ok);
        assert!(reply.error.unwrap().contains("cannot listen"));
    }
    assert_eq!(h.spawn_count(), 0);
}

#[test]
fn sigterm_answers_a_restart_that_will_not_happen() {
    let mut h = Harness::start(&[("web", WEB)]);
    let pid = h.pid_of("web", 0);
    let restart = h.request(Request::Restart { unit: unit("web") });
    h.signal(libc::SIGTERM);
    h.exit(pid, killed(Signal::SIGTERM));
    assert!(h.sup.finished());
    assert_eq!(h.spawn_count(), 1, "started again during shutdown");
    let reply = restart.try_recv().expect("the restart was left waiting");
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("shutting down"));
}

// ---- scale ----

#[test]
fn scale_up_starts_new_indexes_and_replies_when_they_run() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    let before = h.current_pids("web");
    let reply = h.ask(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::Up(2),
    });
    assert!(reply.ok, "{reply:?}");
    let new: Vec<(u32, u32)> = h.os().spawns[2..]
        .iter()
        .map(|s| (s.index, s.instances))
        .collect();
    assert_eq!(new, [(2, 4), (3, 4)]);
    assert_eq!(h.current_pids("web")[..2], before[..]);
    assert!(h.os().signals.is_empty());
    let reply = h.ask(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::To(5),
    });
    assert!(reply.ok);
    assert_eq!(h.os().spawns[4].index, 4);
    assert_eq!(h.status("web").wanted_instances, 5);
}

#[test]
fn scale_up_with_notify_replies_once_the_new_instances_are_ready() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nready = \"notify\"\n")]);
    h.worker(h.pid_of("web", 0), WorkerMessage::Ready);
    let reply = h.request(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::To(2),
    });
    assert!(reply.try_recv().is_err());
    h.worker(h.last_pid(), WorkerMessage::Ready);
    assert!(reply.try_recv().unwrap().ok);
}

#[test]
fn scale_down_stops_the_highest_indexes_and_replies_once_they_are_gone() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 4\n")]);
    let pids: Vec<Pid> = (0..4).map(|i| h.pid_of("web", i)).collect();
    let reply = h.request(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::Down(2),
    });
    for &pid in &pids[..2] {
        assert!(h.signals_to(pid).is_empty());
    }
    for &pid in &pids[2..] {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    h.exit(pids[3], killed(Signal::SIGTERM));
    assert!(reply.try_recv().is_err());
    h.exit(pids[2], killed(Signal::SIGTERM));
    assert!(reply.try_recv().unwrap().ok);
    assert_eq!(h.spawn_count(), 4);
    let status = h.status("web");
    assert_eq!(status.instances.len(), 2);
    assert_eq!(status.state, UnitState::Running);

    let reply = h.request(Request::Scale {
        unit: unit("web"),
        count: ScaleCount::To(1),
    });
    assert_eq!(h.signals_to(pids[1]), [Signal::SIGTERM, Signal::SIGCONT]);
    assert!(h.signals_to(pids[0]).is_empty());
    h.exit(pids[1], code(0));
    assert!(reply.try_recv().unwrap().ok);
    assert_eq!(h.current_pids("web"), [Some(pids[0])]);
    // What the OS side kept for the indexes that went is released, from the first gone.
    assert_eq!(
        h.os().released_indexes.last(),
        Some(&("web".to_string(), 1))
    );
}

// ---- reload ----

const NOTIFY2: &str =
    "command = \"sleep 100\"\ninstances = 2\nready = \"notify\"\nready_timeout = \"10s\"\n";

/// Starts a unit with `ready = "notify"` and makes every instance ready.
fn started_notify_unit() -> (Harness, Vec<Pid>) {
    let mut h = Harness::start(&[("web", NOTIFY2)]);
    let pids: Vec<Pid> = (0..2).map(|i| h.pid_of("web", i)).collect();
    for &pid in &pids {
        h.worker(pid, WorkerMessage::Ready);
    }
    assert_eq!(h.status("web").state, UnitState::Running);
    (h, pids)
}

#[test]
fn reload_replaces_one_index_at_a_time_and_stops_each_old_process_once_its_replacement_is_ready() {
    let (mut h, old) = started_notify_unit();
    let reply = h.request(Request::Reload { unit: unit("web") });
    assert_eq!(h.spawn_count(), 3, "only one index at a time");
    let new0 = h.last_pid();
    assert_eq!(h.spawn_of(new0).index, 0);
    assert!(
        h.os().signals.is_empty(),
        "an old process was stopped too early"
    );

    h.worker(new0, WorkerMessage::Ready);
    assert_eq!(h.signals_to(old[0]), [Signal::SIGTERM, Signal::SIGCONT]);
    assert!(h.signals_to(old[1]).is_empty());
    assert_eq!(h.spawn_count(), 4);
    let new1 = h.last_pid();
    assert_eq!(h.spawn_of(new1).index, 1);

    h.exit(old[0], killed(Signal::SIGTERM));
    assert!(reply.try_recv().is_err());
    h.notify(new1, new1, ready());
    assert_eq!(h.signals_to(old[1]), [Signal::SIGTERM, Signal::SIGCONT]);
    assert!(
        reply.try_recv().is_err(),
        "replied before the old processes were gone"
    );
    h.exit(old[1], killed(Signal::SIGTERM));
    let reply = reply.try_recv().expect("no reply after the reload");
    assert!(reply.ok, "{reply:?}");
    assert_eq!(h.spawn_count(), 4, "an old process's exit caused a restart");
    assert_eq!(h.current_pids("web"), [Some(new0), Some(new1)]);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.restarts, 0, "a reload is not a restart");
    assert!(h.signals_to(new0).is_empty() && h.signals_to(new1).is_empty());
}

#[test]
fn reload_fails_and_keeps_the_old_process_when_the_new_one_exits_before_it_is_ready() {
    let (mut h, old) = started_notify_unit();
    let reply = h.request(Request::Reload { unit: unit("web") });
    let new0 = h.last_pid();
    h.exit(new0, code(1));
    let reply = reply.try_recv().expect("no reply after the failure");
    assert!(!reply.ok);
    let error = reply.error.unwrap();
    assert!(
        error.contains("web[0]") && error.contains("exited with code 1"),
        "{error}"
    );
    assert_eq!(h.current_pids("web"), [Some(old[0]), Some(old[1])]);
    assert!(h.signals_to(old[0]).is_empty() && h.signals_to(old[1]).is_empty());
    assert_eq!(
        h.spawn_count(),
        3,
        "the reload went on, or the failure was restarted"
    );
    assert_eq!(h.status("web").state, UnitState::Running);
    // A later reload can succeed.
    let reply = h.request(Request::Reload { unit: unit("web") });
    h.worker(h.last_pid(), WorkerMessage::Ready);
    h.worker(h.last_pid(), WorkerMessage::Ready);
    h.exit_all(&[(old[0], code(0)), (old[1], code(0))]);
    assert!(reply.try_recv().unwrap().ok);
}

#[test]
fn reload_fails_and_keeps_the_old_process_when_the_new_one_is_not_ready_in_time() {
    let (mut h, old) = started_notify_unit();
    let reply = h.request(Request::Reload { unit: unit("web") });
    let new0 = h.last_pid();
    h.advance(10 * SECOND - MS);
    assert!(reply.try_recv().is_err());
    h.advance(MS);
    let reply = reply.try_recv().expect("no reply after ready_timeout");
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("not ready within 10s"));
    assert_eq!(h.signals_to(new0), [Signal::SIGTERM, Signal::SIGCONT]);
    assert!(h.signals_to(old[0]).is_empty() && h.signals_to(old[1]).is_empty());
    assert_eq!(h.current_pids("web"), [Some(old[0]), Some(old[1])]);
    h.exit(new0, killed(Signal::SIGTERM));
    assert_eq!(h.spawn_count(), 3);
    assert_eq!(h.current_pids("web"), [Some(old[0]), Some(old[1])]);
}

#[test]
fn reload_with_ready_started_replaces_every_index_and_replies_once_the_old_ones_are_gone() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    let old = [h.pid_of("web", 0), h.pid_of("web", 1)];
    let reply = h.request(Request::Reload { unit: unit("web") });
    assert_eq!(h.spawn_count(), 4);
    let indexes: Vec<u32> = h.os().spawns[2..].iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1]);
    for pid in old {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    assert!(reply.try_recv().is_err());
    h.exit_all(&[(old[0], code(0)), (old[1], code(0))]);
    assert!(reply.try_recv().unwrap().ok);
    assert_eq!(h.spawn_count(), 4);
}

#[test]
fn stop_during_a_reload_fails_the_reload_and_stops_every_process() {
    let (mut h, old) = started_notify_unit();
    let reload = h.request(Request::Reload { unit: unit("web") });
    let new0 = h.last_pid();
    let stop = h.request(Request::Stop { unit: unit("web") });
    assert!(!reload.try_recv().unwrap().ok);
    for pid in [old[0], old[1], new0] {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    h.exit(new0, killed(Signal::SIGTERM));
    h.exit(old[0], killed(Signal::SIGTERM));
    assert!(stop.try_recv().is_err());
    h.exit(old[1], killed(Signal::SIGTERM));
    assert!(stop.try_recv().unwrap().ok);
    assert_eq!(h.spawn_count(), 3);
    assert_eq!(h.status("web").state, UnitState::Stopped);
}

#[test]
fn reload_of_a_stopped_unit_is_refused() {
    let mut h = Harness::start(&[("web", WEB)]);
    let stop = h.request(Request::Stop { unit: unit("web") });
    h.exit(h.pid_of("web", 0), killed(Signal::SIGTERM));
    assert!(stop.try_recv().unwrap().ok);
    assert!(!h.ask(Request::Reload { unit: unit("web") }).ok);
}

// ---- daemon-reload ----

#[test]
fn daemon_reload_leaves_an_unchanged_unit_alone() {
    let mut h = Harness::start(&[("web", WEB)]);
    let pid = h.pid_of("web", 0);
    let response = h.apply(&[("web", WEB)]);
    assert!(response.ok, "{response:?}");
    assert_eq!(h.spawn_count(), 1);
    assert!(h.os().signals.is_empty());
    assert_eq!(h.current_pids("web"), [Some(pid)]);
}

#[test]
fn daemon_reload_replaces_a_changed_unit_one_instance_at_a_time() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    let response = h.apply(&[("web", "command = \"sleep 200\"\n")]);
    assert!(response.ok, "{response:?}");
    assert!(
        response
            .message
            .as_deref()
            .unwrap_or("")
            .contains("reloaded web"),
        "{response:?}"
    );
    // The new process started before the old one was told to go (ready at once here).
    assert_eq!(
        h.spawn_count(),
        2,
        "no replacement before stopping the old one"
    );
    assert_eq!(h.os().spawns[1].command, ["sleep", "200"]);
    assert_eq!(h.signals_to(old), [Signal::SIGTERM, Signal::SIGCONT]);
    h.exit(old, killed(Signal::SIGTERM));
    assert_eq!(
        h.spawn_count(),
        2,
        "the old process's exit restarted something"
    );
    assert_eq!(h.status("web").state, UnitState::Running);
}

#[test]
fn daemon_reload_restarts_a_unit_whose_sockets_change() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    let response = h.apply(&[("web", "command = \"sleep 200\"\nbalance = \"reuseport\"\n")]);
    assert!(response.ok, "{response:?}");
    assert_eq!(h.signals_to(old), [Signal::SIGTERM, Signal::SIGCONT]);
    assert_eq!(h.spawn_count(), 1, "started before the old one was gone");
    h.exit(old, killed(Signal::SIGTERM));
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.os().spawns[1].command, ["sleep", "200"]);
}

#[test]
fn a_changed_unit_that_does_not_come_up_keeps_its_previous_configuration() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    h.os_mut().failing_spawns = 1;
    let response = h.apply(&[("web", "command = \"nosuch\"\n")]);
    assert!(response.ok, "{response:?}");
    // The old process was never signalled and still serves; the status says why.
    assert!(h.signals_to(old).is_empty());
    assert_eq!(h.current_pids("web"), [Some(old)]);
    let status = h.status("web");
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or("")
            .contains("previous configuration"),
        "{status:?}"
    );
    // It crashes later: restarted with the configuration it was running.
    h.exit(old, code(1));
    assert_eq!(
        h.os().spawns.last().map(|s| s.command.clone()),
        Some(vec!["sleep".to_string(), "100".to_string()])
    );
}

#[test]
fn a_scale_holds_across_a_daemon_reload_that_does_not_change_instances() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    assert!(h.ask_scale_to("web", 3));
    let old: Vec<Pid> = (0..3).map(|i| h.pid_of("web", i)).collect();
    // The command changes, `instances` does not: all 3 indexes are replaced, not 2.
    let response = h.apply(&[("web", "command = \"sleep 200\"\ninstances = 2\n")]);
    assert!(response.ok, "{response:?}");
    h.exit_all(
        &old.iter()
            .map(|&p| (p, killed(Signal::SIGTERM)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(h.status("web").wanted_instances, 3);
    let new: Vec<Pid> = (0..3).map(|i| h.pid_of("web", i)).collect();
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
    // A file that does change `instances` resets it (a restart: once the old ones are gone).
    h.apply(&[("web", "command = \"sleep 200\"\ninstances = 1\n")]);
    h.exit_all(
        &new.iter()
            .map(|&p| (p, killed(Signal::SIGTERM)))
            .collect::<Vec<_>>(),
    );
    assert_eq!(h.status("web").wanted_instances, 1);
}

#[test]
fn daemon_reload_scales_when_only_instances_changed() {
    let two = "command = \"sleep 100\"\ninstances = 2\n";
    let mut h = Harness::start(&[("web", two)]);
    let pids: Vec<Pid> = (0..2).map(|i| h.pid_of("web", i)).collect();
    let response = h.apply(&[("web", "command = \"sleep 100\"\ninstances = 3\n")]);
    assert!(response.ok, "{response:?}");
    assert!(h.os().signals.is_empty());
    assert_eq!(h.spawn_count(), 3);
    assert_eq!(h.os().spawns[2].index, 2);
    assert_eq!(h.current_pids("web")[..2], [Some(pids[0]), Some(pids[1])]);

    let third = h.pid_of("web", 2);
    h.apply(&[("web", "command = \"sleep 100\"\ninstances = 1\n")]);
    assert!(h.signals_to(pids[0]).is_empty());
    assert_eq!(h.signals_to(pids[1]), [Signal::SIGTERM, Signal::SIGCONT]);
    assert_eq!(h.signals_to(third), [Signal::SIGTERM, Signal::SIGCONT]);
    h.exit_all(&[(pids[1], code(0)), (third, code(0))]);
    assert_eq!(h.current_pids("web"), [Some(pids[0])]);
    assert_eq!(h.spawn_count(), 3);
}

#[test]
fn daemon_reload_of_a_stopped_unit_takes_the_new_file_and_stays_stopped() {
    let mut h = Harness::start(&[("web", WEB)]);
    let stop = h.request(Request::Stop { unit: unit("web") });
    h.exit(h.pid_of("web", 0), killed(Signal::SIGTERM));
    assert!(stop.try_recv().unwrap().ok);
    assert!(h.apply(&[("web", "command = \"sleep 200\"\n")]).ok);
    assert_eq!(h.spawn_count(), 1);
    assert_eq!(h.status("web").state, UnitState::Stopped);
    assert!(h.ask(Request::Start { unit: unit("web") }).ok);
    assert_eq!(h.os().spawns[1].command, ["sleep", "200"]);
}

#[test]
fn daemon_reload_stops_and_forgets_a_removed_unit() {
    let mut h = Harness::start(&[("api", WEB), ("web", WEB)]);
    let web = h.pid_of("web", 0);
    let api = h.pid_of("api", 0);
    let response = h.apply(&[("api", WEB)]);
    assert!(response.ok, "{response:?}");
    assert_eq!(h.signals_to(web), [Signal::SIGTERM, Signal::SIGCONT]);
    assert!(h.signals_to(api).is_empty());
    assert_eq!(h.status("web").state, UnitState::Stopping);
    h.exit(web, killed(Signal::SIGTERM));
    assert!(!h.has_unit("web"));
    assert_eq!(h.spawn_count(), 2);
    let reply = h.ask(Request::Start { unit: unit("web") });
    assert!(!reply.ok);
    assert_eq!(h.sup.status(None, h.now).units.len(), 1);
}

#[test]
fn daemon_reload_keeps_a_unit_running_when_its_file_no_longer_parses() {
    let mut h = Harness::start(&[("web", WEB)]);
    let pid = h.pid_of("web", 0);
    let response = h.apply(&[("web", "command = \"sleep 100\"\nrestrat = \"always\"\n")]);
    assert!(!response.ok);
    let error = response.error.unwrap();
    assert!(error.contains("/units/web.toml"), "{error}");
    assert!(h.os().signals.is_empty());
    assert_eq!(h.spawn_count(), 1);
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.instances[0].pid, Some(pid.as_raw() as u32));
    assert!(status.error.unwrap().contains("restrat"));
    // Fixed again: the error goes, the unit is untouched.
    assert!(h.apply(&[("web", WEB)]).ok);
    assert_eq!(h.status("web").error, None);
    assert_eq!(h.spawn_count(), 1);
}

#[test]
fn a_bad_file_shows_as_invalid_and_never_takes_good_units_down() {
    let mut h = Harness::start(&[("bad", "command = 3\n"), ("web", WEB)]);
    assert_eq!(h.status("web").state, UnitState::Running);
    let bad = h.status("bad");
    assert_eq!(bad.state, UnitState::Invalid);
    assert!(bad.error.unwrap().contains("/units/bad.toml"));
    let reply = h.ask(Request::Start { unit: unit("bad") });
    assert!(!reply.ok);
    assert!(reply.error.unwrap().contains("invalid"));

    // A new bad file on daemon-reload.
    let response = h.apply(&[("bad", "command = 3\n"), ("new", "nope"), ("web", WEB)]);
    assert!(!response.ok);
    assert!(response.error.unwrap().contains("/units/new.toml"));
    assert_eq!(h.status("new").state, UnitState::Invalid);
    assert_eq!(h.spawn_count(), 1);

    // Fixed: it starts.
    let response = h.apply(&[("bad", WEB), ("web", WEB)]);
    assert!(response.ok, "{response:?}");
    assert_eq!(h.status("bad").state, UnitState::Running);
    assert!(!h.has_unit("new"));
    assert_eq!(h.spawn_count(), 2);
}

#[test]
fn daemon_reload_during_a_pending_restart_starts_the_newest_file() {
    // `balance` changes, so each change is a restart (stop all, then start), not a reload.
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    h.apply(&[("web", "command = \"sleep 200\"\nbalance = \"reuseport\"\n")]);
    // The file changes again while the old process is still stopping.
    h.apply(&[("web", "command = \"sleep 300\"\nbalance = \"reuseport\"\n")]);
    h.exit(old, killed(Signal::SIGTERM));
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.os().spawns[1].command, ["sleep", "300"]);
    // And back to the running configuration while a restart to another one is pending.
    let pid = h.pid_of("web", 0);
    h.apply(&[("web", "command = \"sleep 400\"\n")]);
    h.apply(&[("web", "command = \"sleep 300\"\nbalance = \"reuseport\"\n")]);
    h.exit(pid, killed(Signal::SIGTERM));
    assert_eq!(h.os().spawns.last().unwrap().command, ["sleep", "300"]);
}

// ---- sd_notify ----

#[test]
fn notify_from_a_pid_outside_every_instance_is_ignored() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nready = \"notify\"\n")]);
    let stranger = Pid::from_raw(4242);
    h.notify(stranger, stranger, ready());
    h.handle(Event::Notify {
        pid: stranger,
        pgid: None,
        instance: None,
        message: NotifyMessage {
            stopping: true,
            ..NotifyMessage::default()
        },
        credit: Credit::none(),
    });
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Starting);
    assert_eq!(status.instances[0].state, InstanceState::Starting);
    assert_eq!(h.spawn_count(), 1);
}

#[test]
fn ready_from_a_member_of_the_instance_group_is_accepted() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nready = \"notify\"\n")]);
    let leader = h.pid_of("web", 0);
    let child = Pid::from_raw(4242);
    h.notify(
        child,
        leader,
        NotifyMessage {
            ready: true,
            status: Some("serving".into()),
            ..NotifyMessage::default()
        },
    );
    let status = h.status("web");
    assert_eq!(status.state, UnitState::Running);
    assert_eq!(status.instances[0].status_text.as_deref(), Some("serving"));
}

#[test]
fn a_start_with_notify_replies_once_every_instance_is_ready() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nready = \"notify\"\n")]);
    let stop = h.request(Request::Stop { unit: unit("web") });
    h.exit(h.pid_of("web", 0), killed(Signal::SIGTERM));
    assert!(stop.try_recv().unwrap().ok);
    let reply = h.request(Request::Start { unit: unit("web") });
    assert!(reply.try_recv().is_err());
    let pid = h.last_pid();
    h.notify(pid, pid, ready());
    assert!(reply.try_recv().unwrap().ok);
}

#[test]
fn late_events_for_a_reaped_process_are_ignored() {
    let mut h = Harness::start(&[("web", WEB)]);
    let old = h.pid_of("web", 0);
    let id = h.spawn_of(old).id;
    h.exit(old, code(1));
    h.handle(Event::Worker {
        id,
        message: WorkerMessage::Suicide,
        credit: Credit::none(),
    });
    h.notify(old, old, ready());
    assert_eq!(h.spawn_count(), 2);
    // An exit of an unknown pid (an adopted orphan) changes nothing.
    h.exit(Pid::from_raw(7), code(0));
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.status("web").state, UnitState::Running);
}

// ---- kill and send ----

#[test]
fn kill_signals_each_running_instance_or_one_and_never_a_draining_one() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 3\n")]);
    let pids = [h.pid_of("web", 0), h.pid_of("web", 1), h.pid_of("web", 2)];
    let reply = h.ask(Request::Kill {
        unit: unit("web"),
        instance: None,
        signal: "HUP".into(),
        all: false,
    });
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        h.os().process_signals,
        pids.map(|pid| (pid, Signal::SIGHUP)).to_vec()
    );
    // One instance, every process of it.
    let reply = h.ask(Request::Kill {
        unit: unit("web"),
        instance: Some(1),
        signal: "SIGUSR2".into(),
        all: true,
    });
    assert!(reply.ok, "{reply:?}");
    assert_eq!(h.signals_to(pids[1]), [Signal::SIGUSR2]);
    // A suicide's draining process is no longer addressed.
    h.worker(pids[2], WorkerMessage::Suicide);
    let reply = h.ask(Request::Kill {
        unit: unit("web"),
        instance: Some(2),
        signal: "TERM".into(),
        all: false,
    });
    let replacement = h.pid_of("web", 2);
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        h.os().process_signals.last(),
        Some(&(replacement, Signal::SIGTERM))
    );
    // Mistakes are refused, and nothing is signalled.
    let before = h.os().process_signals.len();
    for (instance, signal) in [(None, "SIGNOPE"), (Some(7), "HUP")] {
        let reply = h.ask(Request::Kill {
            unit: unit("web"),
            instance,
            signal: signal.into(),
            all: false,
        });
        assert!(!reply.ok, "{reply:?}");
    }
    assert_eq!(h.os().process_signals.len(), before);
    // A signal only a number names goes by number, to the instance's own process.
    let reply = h.ask(Request::Kill {
        unit: unit("web"),
        instance: Some(0),
        signal: "RTMIN+2".into(),
        all: false,
    });
    assert!(reply.ok, "{reply:?}");
    let id = h.os().spawns[0].id;
    assert_eq!(
        h.os().number_signals,
        [(id, pids[0], libc::SIGRTMIN() + 2, false)]
    );
}

#[test]
fn send_writes_one_compact_json_line_to_each_running_instance() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\ninstances = 2\n")]);
    let reply = h.ask(Request::Send {
        unit: unit("web"),
        instance: None,
        message: "{ \"topic\": \"reload-config\",\n \"n\": 1 }".into(),
    });
    assert!(reply.ok, "{reply:?}");
    let lines: Vec<&str> = h.os().messages.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["{\"n\":1,\"topic\":\"reload-config\"}\n"; 2]);
    // One line stays as written.
    let reply = h.ask(Request::Send {
        unit: unit("web"),
        instance: Some(1),
        message: " {\"topic\": \"x\", \"a\": 2} ".into(),
    });
    assert!(reply.ok, "{reply:?}");
    assert_eq!(h.os().messages[2].1, "{\"topic\": \"x\", \"a\": 2}\n");
    let reply = h.ask(Request::Send {
        unit: unit("web"),
        instance: Some(0),
        message: "not json".into(),
    });
    assert!(!reply.ok && reply.error.as_deref().unwrap_or("").contains("not JSON"));
    assert_eq!(h.os().messages.len(), 3);
}

// ---- ready_after ----

#[test]
fn with_ready_after_a_started_instance_is_ready_only_once_it_has_run_that_long() {
    let text = "command = \"sleep 100\"\ninstances = 2\nready_after = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    assert!(h
        .status("web")
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Starting));
    h.advance(Duration::from_millis(1999));
    assert!(h
        .status("web")
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Starting));
    h.advance(Duration::from_millis(1));
    assert!(h
        .status("web")
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Running));
}

#[test]
fn with_ready_after_a_rolling_reload_waits_that_long_for_each_new_instance() {
    let text = "command = \"sleep 100\"\nready_after = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    h.advance(2 * SECOND);
    let old = h.pid_of("web", 0);
    let reply = h.request(Request::Reload { unit: unit("web") });
    h.advance(SECOND);
    assert!(
        h.signals_to(old).is_empty(),
        "the old instance was stopped before its replacement had run ready_after"
    );
    h.advance(SECOND);
    assert_eq!(h.signals_to(old), [Signal::SIGTERM, Signal::SIGCONT]);
    h.exit(old, killed(Signal::SIGTERM));
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
}

#[test]
fn with_ready_after_a_notify_instance_needs_both_the_message_and_the_time() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\nready_after = \"1s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.pid_of("web", 0);
    h.worker(pid, WorkerMessage::Ready);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Starting);
    h.advance(SECOND);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Running);

    // The time alone is not enough.
    let mut h = Harness::start(&[("web", text)]);
    h.advance(5 * SECOND);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Starting);
    let pid = h.pid_of("web", 0);
    h.worker(pid, WorkerMessage::Ready);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Running);
}

#[test]
fn a_stop_message_is_sent_first_then_kill_signal_at_half_the_timeout_then_sigkill() {
    let text = "command = \"sleep 100\"\nstop_message = \"shutdown\"\nkill_timeout = \"4s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.pid_of("web", 0);
    let _reply = h.request(Request::Stop { unit: unit("web") });
    let lines: Vec<&str> = h.os().messages.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(lines, ["\"shutdown\"\n"]);
    assert!(h.signals_to(pid).is_empty());
    h.advance(2 * SECOND);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    h.advance(2 * SECOND);
    assert_eq!(
        h.signals_to(pid),
        [Signal::SIGTERM, Signal::SIGCONT, Signal::SIGKILL]
    );
}

// ---- restart_delay and restart_backoff ----

#[test]
fn restart_delay_waits_before_each_restart_and_shows_restarting_meanwhile() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nrestart_delay = \"2s\"\n")]);
    h.exit(h.pid_of("web", 0), code(1));
    assert_eq!(h.spawn_count(), 1);
    assert_eq!(
        h.status("web").instances[0].state,
        InstanceState::Restarting
    );
    h.advance(Duration::from_millis(1999));
    assert_eq!(h.spawn_count(), 1);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.spawn_count(), 2);
    assert_eq!(h.status("web").instances[0].state, InstanceState::Running);
}

#[test]
fn restart_backoff_grows_by_half_up_to_max_and_resets_after_a_stable_run() {
    let text = "command = \"sleep 100\"\nrestart_limit = { burst = 100, interval = \"1m\" }\nrestart_backoff = { initial = \"1s\", max = \"2s\", reset_after = \"10s\" }\n";
    let mut h = Harness::start(&[("web", text)]);
    let mut waits = Vec::new();
    for _ in 0..4 {
        h.exit(h.pid_of("web", 0), code(1));
        let before = h.spawn_count();
        let mut waited = Duration::ZERO;
        while h.spawn_count() == before {
            h.advance(Duration::from_millis(100));
            waited += Duration::from_millis(100);
        }
        waits.push(waited);
    }
    assert_eq!(
        waits,
        [1000, 1500, 2000, 2000].map(Duration::from_millis).to_vec()
    );
    // A run of reset_after: the next wait is the initial one again.
    h.advance(10 * SECOND);
    h.exit(h.pid_of("web", 0), code(1));
    h.advance(Duration::from_millis(999));
    assert_eq!(
        h.status("web").instances[0].state,
        InstanceState::Restarting
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.status("web").instances[0].state, InstanceState::Running);
}

#[test]
fn a_manual_start_or_stop_cancels_a_waiting_restart() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\nrestart_delay = \"1m\"\n")]);
    h.exit(h.pid_of("web", 0), code(1));
    let reply = h.request(Request::Stop { unit: unit("web") });
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
    assert_eq!(h.status("web").instances[0].state, InstanceState::Stopped);
    h.advance(2 * 60 * SECOND);
    assert_eq!(h.spawn_count(), 1, "a stopped unit was restarted");
    let reply = h.request(Request::Start { unit: unit("web") });
    assert_eq!(h.spawn_count(), 2, "start waited for the delay");
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
}

// ---- cron_restart ----

#[test]
fn cron_restart_reloads_the_unit_one_by_one_at_its_time_and_waits_for_the_next() {
    // The fake clock says 02:59:30: 03:00 is 30 s away.
    let text = "command = \"sleep 100\"\ninstances = 2\ncron_restart = \"0 3 * * *\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = [h.pid_of("web", 0), h.pid_of("web", 1)];
    h.advance(29 * SECOND);
    assert_eq!(h.spawn_count(), 2);
    h.advance_to_local(SECOND, THREE);
    // A rolling reload, as `clusterctl reload`: each old instance goes once its replacement
    // is ready (here at once: ready = "started").
    assert_eq!(h.spawn_count(), 4);
    for pid in old {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    h.exit_all(&old.map(|pid| (pid, killed(Signal::SIGTERM))));
    assert_eq!(
        h.status("web").restarts,
        0,
        "a scheduled reload is no restart"
    );
    // The next time is a day later.
    assert!(h.sup.next_deadline().is_some());
}

#[test]
fn a_stopped_unit_is_not_reloaded_by_its_schedule() {
    let text = "command = \"sleep 100\"\ncron_restart = \"* * * * *\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let reply = h.request(Request::Stop { unit: unit("web") });
    h.all_exit_on_sigterm("web", 1);
    assert!(reply.try_recv().is_ok_and(|r| r.ok));
    h.advance(60 * SECOND);
    assert_eq!(h.spawn_count(), 1);
}

/// The fake's local time: 2026-11-29 at `seconds` after midnight.
fn local_at(seconds: u32) -> crate::unit::cron::LocalTime {
    crate::unit::cron::LocalTime {
        year: 2026,
        month: 11,
        day: 29,
        hour: seconds / 3600,
        minute: seconds / 60 % 60,
        second: seconds % 60,
    }
}

/// 03:00:00 on the fake's local clock.
const THREE: u32 = 3 * 3600;

impl Harness {
    /// Moves the monotonic clock and sets the wall clock (as the OS side reads it, to the
    /// second): the two are independent, as on a real machine.
    fn advance_to_local(&mut self, by: Duration, local_seconds: u32) {
        self.os_mut().local_time = local_at(local_seconds);
        self.advance(by);
    }

    /// The running instance exits on the SIGTERM a reload sent it.
    fn replaced_exits(&mut self, pid: Pid) {
        if self.signals_to(pid).first() == Some(&Signal::SIGTERM) {
            self.exit(pid, killed(Signal::SIGTERM));
        }
    }
}

const CRON_AT_THREE: &str = "command = \"sleep 100\"\ncron_restart = \"0 3 * * *\"\n";

/// Issue 18: a no-op daemon-reload in the first second of the minute a `cron_restart` is
/// due used to re-arm the timer for the next day (the timer fires up to a second into the
/// minute, since the wall clock is read to the second), so the restart never happened.
#[test]
fn a_no_op_daemon_reload_in_the_first_second_of_the_due_minute_keeps_the_restart() {
    // 02:59:30: the timer is 30 s away, and fires at 03:00:00 and a fraction, really.
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    let old = h.pid_of("web", 0);
    h.advance_to_local(Duration::from_millis(29_999), THREE);
    assert_eq!(h.spawn_count(), 1);
    // 03:00:00 on the wall clock, the timer not fired yet: a daemon-reload (or SIGHUP).
    h.apply(&[("web", CRON_AT_THREE)]);
    h.advance_to_local(MS, THREE);
    assert_eq!(h.spawn_count(), 2, "the 03:00 restart was skipped");
    h.replaced_exits(old);
    // Once: not again in the same minute, and next at 03:00 tomorrow.
    h.advance_to_local(50 * SECOND, THREE + 50);
    assert_eq!(h.spawn_count(), 2);
    let deadline = h.sup.next_deadline().expect("the next restart is armed");
    assert_eq!(deadline - h.now, Duration::from_secs(86_400 - 50));
}

/// A storm of reloads across the due minute (every 10 ms from 02:59:59 to 03:00:02) loses
/// no restart and makes none twice.
#[test]
fn a_storm_of_reloads_across_the_due_minute_restarts_exactly_once() {
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    let old = h.pid_of("web", 0);
    h.advance_to_local(29 * SECOND, THREE - 1);
    for step in 0..300u32 {
        h.apply(&[("web", CRON_AT_THREE)]);
        // The wall clock runs a little ahead of the timer, as it may.
        h.advance_to_local(10 * MS, THREE - 1 + (step + 10) / 100);
    }
    assert_eq!(
        h.spawn_count(),
        2,
        "one restart at 03:00, not zero, not two"
    );
    h.replaced_exits(old);
    assert!(h
        .status("web")
        .events
        .iter()
        .any(|e| e.text == "cron_restart: reloading"));
}

/// A changed schedule is armed anew; an unchanged unit's next time stays what it was.
#[test]
fn a_changed_schedule_takes_effect_and_an_unchanged_one_keeps_its_time() {
    let other = "command = \"sleep 100\"\ncron_restart = \"30 3 * * *\"\n";
    let mut h = Harness::start(&[("web", CRON_AT_THREE), ("api", CRON_AT_THREE)]);
    let web = h.pid_of("web", 0);
    h.advance_to_local(10 * SECOND, THREE - 20);
    // The changed file rolls web's instances (any change of its configuration does).
    h.apply(&[("web", other), ("api", CRON_AT_THREE)]);
    h.replaced_exits(web);
    let web = h.pid_of("web", 0);
    let before = h.spawn_count();
    h.advance_to_local(20 * SECOND, THREE);
    let reloaded: Vec<String> = h.os().spawns[before..]
        .iter()
        .map(|s| s.unit.clone())
        .collect();
    assert_eq!(
        reloaded,
        ["api"],
        "only the unchanged schedule fires at 03:00"
    );
    h.advance_to_local(30 * 60 * SECOND, THREE + 30 * 60);
    assert_eq!(h.os().spawns.last().map(|s| s.unit.as_str()), Some("web"));
    assert_eq!(h.spawn_count(), before + 2);
    h.replaced_exits(web);
}

/// A schedule changed while its minute has come and the timer not fired: the due restart
/// still happens, and the new schedule follows it.
#[test]
fn a_schedule_changed_in_its_due_second_does_not_lose_the_due_restart() {
    let every_hour = "command = \"sleep 100\"\ncron_restart = \"0 * * * *\"\n";
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    h.advance_to_local(Duration::from_millis(29_999), THREE);
    // The changed file rolls the instance at once; the due restart comes on top of it.
    let old = h.pid_of("web", 0);
    h.apply(&[("web", every_hour)]);
    h.replaced_exits(old);
    let rolled = h.spawn_count();
    let pid = h.pid_of("web", 0);
    h.advance_to_local(MS, THREE);
    assert_eq!(h.spawn_count(), rolled + 1, "the due restart was lost");
    h.replaced_exits(pid);
    let deadline = h.sup.next_deadline().expect("the next restart is armed");
    assert_eq!(
        deadline - h.now,
        Duration::from_secs(3600),
        "the new schedule: 04:00"
    );
}

/// The wall clock went back (daylight saving time ended, or an operator set it): a timer
/// that fires before its minute waits for it, and reloads once then; a clock that jumped
/// forward past the minute reloads once, late, not never.
#[test]
fn clock_jumps_neither_reload_early_nor_twice_nor_lose_a_restart() {
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    // 30 s later, the wall clock says 02:00:00: an hour back.
    h.advance_to_local(30 * SECOND, THREE - 3600);
    assert_eq!(h.spawn_count(), 1, "reloaded before its time");
    let deadline = h.sup.next_deadline().expect("waits for 03:00 again");
    assert_eq!(deadline - h.now, Duration::from_secs(3600));
    h.advance_to_local(3600 * SECOND, THREE);
    assert_eq!(h.spawn_count(), 2);

    // Forward: armed for 03:00 tomorrow, woken when the clock says 05:00 the day after.
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    h.os_mut().local_time = crate::unit::cron::LocalTime {
        day: 30,
        hour: 5,
        minute: 0,
        second: 0,
        ..local_at(0)
    };
    let pid = h.pid_of("web", 0);
    h.advance(30 * SECOND);
    assert_eq!(h.spawn_count(), 2, "a restart lost to a clock that jumped");
    h.replaced_exits(pid);
    let deadline = h.sup.next_deadline().expect("armed again");
    assert_eq!(
        deadline - h.now,
        Duration::from_secs(22 * 3600),
        "next: 03:00 the next day"
    );
}

/// An hour that comes twice (daylight saving time ends): where the OS side places the due
/// minute before the wall clock's, the early timer waits by the calendar, and the loop does
/// not spin on a timer due again at once.
#[test]
fn an_early_timer_never_spins_when_the_os_places_its_minute_in_the_past() {
    let mut h = Harness::start(&[("web", CRON_AT_THREE)]);
    h.os_mut().until_local_is_zero = true;
    // Fired 30 s later, the wall clock an hour back: early.
    h.advance_to_local(30 * SECOND, THREE - 3600);
    assert_eq!(h.spawn_count(), 1);
    let deadline = h.sup.next_deadline().expect("waits for 03:00");
    assert_eq!(deadline - h.now, Duration::from_secs(3600));
}

/// Schedules that never come (February 30th) arm nothing; one that matches every minute
/// reloads once a minute.
#[test]
fn a_schedule_that_never_comes_arms_nothing_and_every_minute_reloads_each_minute() {
    let never = "command = \"sleep 100\"\ncron_restart = \"0 0 30 2 *\"\n";
    let h = Harness::start(&[("web", never)]);
    assert_eq!(h.sup.next_deadline(), None);
    let every = "command = \"sleep 100\"\ncron_restart = \"* * * * *\"\n";
    let mut h = Harness::start(&[("web", every)]);
    for minute in 0..3 {
        let pid = h.pid_of("web", 0);
        h.advance_to_local(
            Duration::from_secs(if minute == 0 { 30 } else { 60 }),
            THREE + minute * 60,
        );
        assert_eq!(h.spawn_count(), 2 + minute as usize);
        h.replaced_exits(pid);
    }
}

// ---- watch ----

#[test]
fn changed_files_reload_the_unit_once_they_have_been_quiet_for_watch_delay() {
    let text = "command = \"sleep 100\"\ninstances = 2\nwatch = [\"src\"]\nwatch_delay = \"1s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = [h.pid_of("web", 0), h.pid_of("web", 1)];
    // A burst of changes, each within the delay of the previous one: one reload, after it.
    for _ in 0..3 {
        h.handle(Event::FilesChanged(unit("web")));
        h.advance(Duration::from_millis(500));
    }
    assert_eq!(h.spawn_count(), 2);
    h.advance(Duration::from_millis(500));
    assert_eq!(h.spawn_count(), 4, "one rolling reload of both instances");
    for pid in old {
        assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGCONT]);
    }
    // A unit that does not watch ignores the event (it cannot come from the OS side anyway).
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\n")]);
    h.handle(Event::FilesChanged(unit("web")));
    h.advance(10 * SECOND);
    assert_eq!(h.spawn_count(), 1);
}

// ---- the phase of a process and its timers ----

/// The process with `pid`, as the supervisor holds it.
fn process_of(h: &Harness, pid: Pid) -> super::Process {
    let id = h.spawn_of(pid).id;
    h.sup.processes.get(&id).cloned().expect("no such process")
}

/// The timers armed for process `pid`.
fn armed_for(h: &Harness, pid: Pid) -> std::collections::BTreeSet<Timer> {
    let id = h.spawn_of(pid).id;
    every_timer_of(id)
        .into_iter()
        .filter(|t| h.sup.timers.is_armed(t))
        .collect()
}

/// What status shows of process `pid` of `unit`.
fn shown(h: &Harness, unit: &str, pid: Pid) -> crate::protocol::InstanceStatus {
    h.status(unit)
        .instances
        .into_iter()
        .find(|i| i.pid == u32::try_from(pid.as_raw()).ok())
        .expect("the process is shown")
}

/// Process `pid` is in `phase`, and the timers armed for it are exactly those of that phase.
fn assert_phase(h: &Harness, pid: Pid, phase: Phase) {
    let process = process_of(h, pid);
    assert_eq!(process.phase, phase);
    let unit = &h.sup.units[&process.unit].unit;
    let expected: std::collections::BTreeSet<Timer> =
        phase.timers(process.id, unit).into_iter().collect();
    assert_eq!(armed_for(h, pid), expected, "timers of {phase:?}");
}

#[test]
fn each_phase_arms_exactly_its_timers_and_leaving_it_cancels_them() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\nready_after = \"2s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.last_pid();
    let id = h.spawn_of(pid).id;
    assert_phase(&h, pid, Phase::Starting);
    assert_eq!(armed_for(&h, pid).len(), 2, "ReadyTimeout and ReadyAfter");
    // Ready, but not for `ready_after` yet: the readiness timers still run.
    h.notify(pid, pid, ready());
    assert_phase(&h, pid, Phase::ReadyPending);
    h.advance(2 * SECOND);
    assert_phase(&h, pid, Phase::Running);
    assert!(armed_for(&h, pid).is_empty());
    h.request(Request::Stop { unit: unit("web") });
    let stopping = Phase::Stopping {
        readiness: Readiness::Ready,
        announced: false,
        asked: false,
    };
    assert_phase(&h, pid, stopping);
    assert!(h.sup.timers.is_armed(&Timer::Kill(id)));
    // Reaped: it leaves its phase for good, with every timer about it.
    h.exit(pid, killed(Signal::SIGTERM));
    assert!(!h.sup.processes.contains_key(&id));
    assert!(every_timer_of(id).iter().all(|t| !h.sup.timers.is_armed(t)));
}

#[test]
fn a_process_stopped_before_it_was_ready_keeps_waiting_for_readiness_until_it_is() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\nstop_message = \"bye\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.last_pid();
    h.request(Request::Stop { unit: unit("web") });
    // Asked by its stop message: SIGKILL at `kill_timeout`, `kill_signal` at half of it.
    assert_phase(
        &h,
        pid,
        Phase::Stopping {
            readiness: Readiness::NotYet,
            announced: false,
            asked: true,
        },
    );
    assert_eq!(armed_for(&h, pid).len(), 3);
    h.notify(pid, pid, ready());
    assert_phase(
        &h,
        pid,
        Phase::Stopping {
            readiness: Readiness::Ready,
            announced: false,
            asked: true,
        },
    );
    assert_eq!(h.status("web").instances[0].state, InstanceState::Stopping);
}

#[test]
fn a_suicide_drains_without_a_deadline_until_its_replacement_is_ready() {
    let text = "command = \"sleep 100\"\nready = \"notify\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let old = h.last_pid();
    h.notify(old, old, ready());
    assert_phase(&h, old, Phase::Running);
    h.worker(old, WorkerMessage::Suicide);
    let new = h.last_pid();
    assert_ne!(new, old);
    assert_phase(
        &h,
        old,
        Phase::Draining {
            readiness: Readiness::Ready,
            let_go: false,
        },
    );
    assert_phase(&h, new, Phase::Starting);
    h.notify(new, new, ready());
    assert_phase(&h, new, Phase::Running);
    // Let go: `kill_timeout` to leave on its own.
    assert_phase(
        &h,
        old,
        Phase::Draining {
            readiness: Readiness::Ready,
            let_go: true,
        },
    );
    let draining = shown(&h, "web", old);
    assert_eq!(draining.state, InstanceState::Draining);
    // Stopped now, it is shown as the replaced process it is.
    h.request(Request::Stop { unit: unit("web") });
    assert_phase(
        &h,
        old,
        Phase::Stopping {
            readiness: Readiness::Ready,
            announced: true,
            asked: false,
        },
    );
    let stopping = shown(&h, "web", old);
    assert_eq!(stopping.state, InstanceState::Stopping);
    assert!(stopping.draining);
}

#[test]
fn the_transition_table_ignores_steps_that_change_nothing_and_phases_serialize_whole() {
    let stopping = Phase::Stopping {
        readiness: Readiness::Pending,
        announced: true,
        asked: false,
    };
    assert_eq!(stopping.after(Step::Stop { asked: true }), None);
    assert_eq!(stopping.after(Step::Announce), None);
    assert_eq!(Phase::Running.after(Step::Ready), None);
    assert_eq!(Phase::Running.after(Step::LetGo), None);
    assert_eq!(Phase::ReadyPending.after(Step::ReadyLater), None);
    assert_eq!(
        Phase::ReadyPending.after(Step::Announce),
        Some(Phase::Draining {
            readiness: Readiness::Pending,
            let_go: false
        })
    );
    assert_eq!(
        stopping.after(Step::Ready),
        Some(Phase::Stopping {
            readiness: Readiness::Ready,
            announced: true,
            asked: false
        })
    );
    let text = serde_json::to_string(&stopping).unwrap();
    assert_eq!(
        text,
        r#"{"stopping":{"readiness":"pending","announced":true,"asked":false}}"#
    );
    assert_eq!(serde_json::from_str::<Phase>(&text).unwrap(), stopping);
    assert_eq!(
        serde_json::to_string(&Phase::Running).unwrap(),
        r#""running""#
    );
}

#[test]
fn only_an_active_unit_has_restarts_waiting_and_a_stop_keeps_why_it_gave_up() {
    let text = "command = \"sleep 100\"\nrestart_delay = \"5s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    assert_eq!(h.sup.units["web"].phase, UnitPhase::Active);
    let pid = h.last_pid();
    h.exit(pid, code(1));
    let restart = Timer::Restart(unit("web"), 0);
    assert!(h.sup.timers.is_armed(&restart));
    h.request(Request::Stop { unit: unit("web") });
    assert_eq!(h.sup.units["web"].phase, UnitPhase::Inactive);
    assert!(!h.sup.timers.is_armed(&restart));
    assert_eq!(h.status("web").instances[0].state, InstanceState::Stopped);

    let gave_up = UnitPhase::GaveUp {
        reason: "gave up".into(),
        active: true,
    };
    assert_eq!(
        gave_up.after(UnitStep::Stop),
        UnitPhase::GaveUp {
            reason: "gave up".into(),
            active: false
        }
    );
    assert_eq!(gave_up.after(UnitStep::Start), UnitPhase::Active);
    assert_eq!(
        UnitPhase::Inactive.after(UnitStep::GiveUp("no port".into())),
        UnitPhase::GaveUp {
            reason: "no port".into(),
            active: false
        }
    );
    assert_eq!(
        serde_json::to_string(&gave_up).unwrap(),
        r#"{"gave_up":{"reason":"gave up","active":true}}"#
    );
}

// One-shots, `after` and schedules (jobs.rs, ordering.rs).

const JOB: &str = "command = \"migrate\"\ntype = \"oneshot\"\n";
const WEB_AFTER_MIGRATE: &str = "command = \"web\"\nafter = [\"migrate\"]\n";

fn spawns_of(h: &Harness, unit: &str) -> usize {
    h.os().spawns.iter().filter(|s| s.unit == unit).count()
}

#[test]
fn a_dependent_starts_only_after_its_oneshot_exits_successfully_and_is_not_restarted_after() {
    // web sorts first: it is loaded before the job it waits for.
    let mut h = Harness::start(&[
        ("a-web", "command = \"web\"\nafter = [\"migrate\"]\n"),
        ("migrate", JOB),
    ]);
    assert_eq!(spawns_of(&h, "a-web"), 0);
    let web = h.status("a-web");
    assert_eq!(web.state, UnitState::Waiting);
    assert_eq!(web.waiting_for.as_deref(), Some("migrate (running)"));
    let job = h.pid_of("migrate", 0);
    h.exit(job, code(0));
    assert_eq!(h.status("migrate").state, UnitState::Done);
    assert_eq!(spawns_of(&h, "migrate"), 1, "a done job is not restarted");
    assert_eq!(spawns_of(&h, "a-web"), 1);
    assert_eq!(h.status("a-web").state, UnitState::Running);
    let run = h.status("migrate").job.and_then(|j| j.last_run).unwrap();
    assert_eq!(run.ok, Some(true));
    assert!(run.result.unwrap().contains("exited with code 0"));
}

#[test]
fn a_failed_job_keeps_its_dependent_waiting_with_the_reason_until_a_start_succeeds() {
    let mut h = Harness::start(&[("migrate", JOB), ("web", WEB_AFTER_MIGRATE)]);
    let job = h.pid_of("migrate", 0);
    h.exit(job, code(3));
    let migrate = h.status("migrate");
    assert_eq!(migrate.state, UnitState::Failed);
    assert_eq!(migrate.job.as_ref().map(|j| j.failures), Some(1));
    let web = h.status("web");
    assert_eq!(web.state, UnitState::Waiting);
    let reason = web.waiting_for.unwrap();
    assert!(
        reason.contains("migrate (failed: run failed: instance 0 exited with code 3"),
        "{reason}"
    );
    // Run again by hand: it succeeds, and web starts.
    let reply = h.request(Request::Start {
        unit: "migrate".into(),
    });
    let job = h.last_pid();
    h.exit(job, code(0));
    assert!(reply.try_recv().unwrap().ok);
    assert_eq!(spawns_of(&h, "web"), 1);
}

#[test]
fn a_job_with_restart_on_failure_is_retried_within_its_budget_and_success_codes_count() {
    let mut h = Harness::start(&[(
        "migrate",
        "command = \"m\"\ntype = \"oneshot\"\nrestart = \"on-failure\"\nsuccess_exit_codes = [2]\n",
    )]);
    let first = h.pid_of("migrate", 0);
    h.exit(first, code(1));
    let second = h.pid_of("migrate", 0);
    assert_ne!(first, second);
    h.exit(second, code(2));
    assert_eq!(h.status("migrate").state, UnitState::Done);
}

#[test]
fn a_service_dependency_counts_once_ready_and_a_dependency_ready_before_a_reload_adds_the_dependent(
) {
    let mut h = Harness::start(&[("db", "command = \"db\"\nready = \"notify\"\n")]);
    let db = h.pid_of("db", 0);
    h.notify(db, db, ready());
    assert_eq!(h.status("db").state, UnitState::Running);
    h.apply(&[
        ("db", "command = \"db\"\nready = \"notify\"\n"),
        ("web", "command = \"web\"\nafter = [\"db\"]\n"),
    ]);
    assert_eq!(spawns_of(&h, "web"), 1, "db was ready before web was added");

    let mut h = Harness::start(&[
        ("db", "command = \"db\"\nready = \"notify\"\n"),
        ("web", "command = \"web\"\nafter = [\"db\"]\n"),
    ]);
    assert_eq!(
        h.status("web").waiting_for.as_deref(),
        Some("db (not ready)")
    );
    let db = h.pid_of("db", 0);
    h.notify(db, db, ready());
    assert_eq!(spawns_of(&h, "web"), 1);
}

#[test]
fn stopping_a_dependency_leaves_its_running_dependent_alone() {
    let mut h = Harness::start(&[
        ("db", "command = \"db\"\n"),
        ("web", "command = \"web\"\nafter = [\"db\"]\n"),
    ]);
    let web = h.pid_of("web", 0);
    let _ = h.request(Request::Stop { unit: "db".into() });
    assert!(h.signals_to(web).is_empty());
    assert_eq!(h.status("web").state, UnitState::Running);
}

#[test]
fn shutdown_stops_dependents_before_what_they_depend_on() {
    let mut h = Harness::start(&[
        ("db", "command = \"db\"\n"),
        ("web", "command = \"web\"\nafter = [\"db\"]\n"),
    ]);
    let (db, web) = (h.pid_of("db", 0), h.pid_of("web", 0));
    h.signal(libc::SIGTERM);
    assert_eq!(h.signals_to(web).first(), Some(&Signal::SIGTERM));
    assert!(
        h.signals_to(db).is_empty(),
        "db is stopped only once web is gone"
    );
    h.exit(web, killed(Signal::SIGTERM));
    assert_eq!(h.signals_to(db).first(), Some(&Signal::SIGTERM));
    h.exit(db, killed(Signal::SIGTERM));
    assert!(h.sup.finished());
}

#[test]
fn a_schedule_runs_the_job_skips_a_due_time_while_it_runs_and_survives_an_unchanged_reload() {
    let text = "command = \"report\"\ntype = \"oneshot\"\nschedule = \"every 10s\"\n";
    let mut h = Harness::start(&[("report", text)]);
    assert_eq!(
        spawns_of(&h, "report"),
        0,
        "a scheduled job waits for its time"
    );
    assert_eq!(h.status("report").state, UnitState::Waiting);
    h.advance(5 * SECOND);
    // A reload of the unchanged file in between moves nothing.
    h.apply(&[("report", text)]);
    h.advance(5 * SECOND);
    assert_eq!(spawns_of(&h, "report"), 1);
    // Still running at the next due time: skipped, not overlapped.
    h.advance(10 * SECOND);
    assert_eq!(spawns_of(&h, "report"), 1);
    assert_eq!(h.status("report").job.map(|j| j.skipped), Some(1));
    let pid = h.pid_of("report", 0);
    h.exit(pid, code(0));
    assert_eq!(h.status("report").state, UnitState::Done);
    // A start by hand runs it now, and the schedule stays where it was (due at 30s).
    let _ = h.request(Request::Start {
        unit: "report".into(),
    });
    assert_eq!(spawns_of(&h, "report"), 2);
    let pid = h.last_pid();
    h.exit(pid, code(0));
    assert_eq!(
        h.status("report").job.and_then(|j| j.next_run_in_ms),
        Some(10_000)
    );
    h.advance(10 * SECOND);
    assert_eq!(spawns_of(&h, "report"), 3);
}

#[test]
fn a_long_chain_of_ready_services_is_released_without_recursion() {
    let count = 3000;
    let files: Vec<(String, String)> = (0..count)
        .map(|i| {
            let text = if i == 0 {
                "command = \"x\"\n".to_string()
            } else {
                format!("command = \"x\"\nafter = [\"u{:05}\"]\n", i - 1)
            };
            (format!("u{i:05}"), text)
        })
        .rev()
        .collect();
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let h = Harness::start(&borrowed);
    assert_eq!(h.spawn_count(), count);
}

#[test]
fn a_waiting_unit_is_not_reloaded_or_scaled_into_running_and_a_schedule_starts_nothing_at_shutdown()
{
    let mut h = Harness::start(&[
        ("db", "command = \"db\"\nready = \"notify\"\n"),
        ("web", "command = \"web\"\nafter = [\"db\"]\n"),
        (
            "report",
            "command = \"r\"\ntype = \"oneshot\"\nschedule = \"every 5s\"\nafter = [\"db\"]\n",
        ),
    ]);
    let reply = h.ask(Request::Reload { unit: "web".into() });
    assert!(!reply.ok && reply.error.unwrap().contains("waiting for db (not ready)"));
    let reply = h.ask(Request::Scale {
        unit: "web".into(),
        count: ScaleCount::To(3),
    });
    assert!(reply.ok && reply.message.unwrap().contains("waiting for db"));
    assert_eq!(spawns_of(&h, "web"), 0);
    // Due while db is not ready: it waits for db, and runs once db is.
    h.advance(5 * SECOND);
    assert_eq!(
        h.status("report").waiting_for.as_deref(),
        Some("db (not ready)")
    );
    let db = h.pid_of("db", 0);
    h.notify(db, db, ready());
    assert_eq!((spawns_of(&h, "web"), spawns_of(&h, "report")), (3, 1));
    let report = h.pid_of("report", 0);
    h.exit(report, code(0));
    h.signal(libc::SIGTERM);
    h.advance(5 * SECOND);
    assert_eq!(
        spawns_of(&h, "report"),
        1,
        "no run starts during the shutdown"
    );
}

#[test]
fn a_run_stopped_by_hand_ends_unfinished_without_counting_as_a_failure() {
    let mut h = Harness::start(&[("migrate", JOB)]);
    let pid = h.pid_of("migrate", 0);
    let _ = h.request(Request::Stop {
        unit: "migrate".into(),
    });
    h.exit(pid, killed(Signal::SIGTERM));
    let status = h.status("migrate");
    assert_eq!(status.state, UnitState::Stopped);
    let job = status.job.unwrap();
    assert_eq!((job.runs, job.failures), (1, 0));
    let run = job.last_run.unwrap();
    assert_eq!(run.ok, Some(false));
    assert!(run.result.unwrap().starts_with("run stopped after"));
}
/// watchdog and `[health]`, in a file of their own.
mod health;

/// daemon-reexec: what one supervisor writes down, a new one (over a fresh OS) takes back
/// whole: the same instances with their pids, indexes, phases and restart counts, the same
/// armed timers, the same status; and it goes on from there (a pending restart happens).
#[test]
fn a_restored_supervisor_holds_what_the_snapshot_wrote_and_goes_on() {
    let files = [
        ("web", "command = \"sleep 100\"\ninstances = 3\n"),
        (
            "api",
            "command = \"sleep 100\"\ninstances = 2\nready = \"notify\"\nready_timeout = \"30s\"\nrestart_delay = \"5s\"\n",
        ),
        ("nightly", "command = \"sleep 100\"\ncron_restart = \"0 3 * * *\"\n"),
    ];
    let mut h = Harness::start(&files);
    let crashed = h.pid_of("web", 1);
    h.exit(crashed, code(1));
    let ready_pid = h.pid_of("api", 0);
    h.notify(ready_pid, ready_pid, ready());
    let waiting = h.pid_of("api", 1);
    h.exit(waiting, code(3));
    h.advance(SECOND);
    let state = h.sup.snapshot(h.now);
    assert!(
        state
            .timers
            .iter()
            .any(|t| t.timer == Timer::Restart("api".into(), 1)),
        "{state:?}"
    );
    let text = serde_json::to_string(&state).expect("serializes");
    let read =
        super::snapshot::read_versioned::<super::snapshot::SupervisorState>(&text).expect("parses");
    read.validate().expect("valid");

    assert!(state
        .timers
        .iter()
        .any(|t| t.timer == Timer::Cron("nightly".into())));
    let mut new = Supervisor::new(FakeOs::new());
    new.restore(read, h.now).expect("restores");
    // Everything is as written, the cron timer's deadline and minute too.
    assert_eq!(new.snapshot(h.now), state);
    let old_status = h.sup.status(None, h.now);
    let mut next = Harness {
        sup: new,
        now: h.now,
    };
    assert_eq!(next.sup.status(None, next.now), old_status);
    // It goes on: the pending restart of api[1] happens when its delay is over, and an exit
    // of a kept instance is restarted.
    next.advance(5 * SECOND);
    assert_eq!(next.os().spawns.len(), 1, "{:?}", next.os().spawns);
    assert_eq!(
        (next.os().spawns[0].unit.as_str(), next.os().spawns[0].index),
        ("api", 1)
    );
    let kept = next.pid_of("web", 2);
    next.exit(kept, code(1));
    assert_eq!(next.os().spawns.len(), 2);
    assert_eq!(next.status("web").restarts, 2);
}

/// daemon-reexec at scale: 1000 instances written down, read and restored whole. The time
/// is printed (for the report's pause figure), not asserted.
#[test]
fn a_snapshot_of_1000_instances_round_trips() {
    let text = "command = \"sleep 100\"\ninstances = 1000\n";
    let h = Harness::start(&[("web", text)]);
    let started = std::time::Instant::now();
    let state = h.sup.snapshot(h.now);
    let json = serde_json::to_string(&state).expect("serializes");
    let read =
        super::snapshot::read_versioned::<super::snapshot::SupervisorState>(&json).expect("parses");
    read.validate().expect("valid");
    let mut new = Supervisor::new(FakeOs::new());
    new.restore(read, h.now).expect("restores");
    let took = started.elapsed();
    eprintln!(
        "snapshot + JSON ({} bytes) + parse + validate + restore of 1000 instances: {took:?}",
        json.len()
    );
    assert_eq!(new.snapshot(h.now), state);
    assert_eq!(state.instances.len(), 1000);
}

/// daemon-reexec with health: failures in a row, a command check running (its exit counted
/// once, by the new image, and no second one started meanwhile), an HTTP check in flight
/// (run again at once).
#[test]
fn health_and_the_checks_running_are_carried_by_a_restore() {
    let files = [
        (
            "cmd",
            "command = \"sleep 100\"\n[health]\ncommand = [\"check\"]\ninterval = \"1s\"\ntimeout = \"60s\"\nfailures = 3\n",
        ),
        (
            "web",
            "command = \"sleep 100\"\nenvironment = { PORT = \"8000\" }\n[health]\nhttp = \"http://127.0.0.1:8000/\"\ninterval = \"1s\"\nfailures = 3\n",
        ),
    ];
    let mut h = Harness::start(&files);
    let pid = h.pid_of("cmd", 0);
    // First check: fails. Second: running at the snapshot.
    h.advance(SECOND);
    let first = *h.os().probe_pids.last().expect("a command check");
    h.exit(first, code(1));
    h.advance(SECOND);
    let running = *h.os().probe_pids.last().expect("a second check");
    assert_ne!(running, first);
    let http_checks = h.os().probes.iter().filter(|p| p.0 != 1).count();
    assert!(http_checks >= 1, "{:?}", h.os().probes);

    let state = h.sup.snapshot(h.now);
    let text = serde_json::to_string(&state).expect("serializes");
    let read =
        super::snapshot::read_versioned::<super::snapshot::SupervisorState>(&text).expect("parses");
    let mut new = Supervisor::new(FakeOs::new());
    new.restore(read, h.now).expect("restores");
    let mut next = Harness {
        sup: new,
        now: h.now,
    };
    let health = |h: &Harness, unit: &str| h.status(unit).instances[0].health.clone();
    assert_eq!(health(&next, "cmd").map(|s| s.failures), Some(1));
    // The HTTP check in flight is run again at once; no command check is started twice.
    next.advance(std::time::Duration::from_millis(1));
    assert_eq!(next.os().probes.len(), 1, "{:?}", next.os().probes);
    next.advance(5 * SECOND);
    assert!(
        next.os().probes.iter().all(|p| p.0 != 1),
        "a second command check while one runs: {:?}",
        next.os().probes
    );
    // Its end is this image's: counted once, and the next check follows.
    next.exit(running, code(1));
    assert_eq!(health(&next, "cmd").map(|s| s.failures), Some(2));
    assert_eq!(next.pid_of("cmd", 0), pid);
}

/// daemon-reexec while what a stopped instance left outlives its SIGKILL: the new image still
/// waits for it, and gives up on it at the same deadline (without the carry it was no longer
/// known, and nobody gave up on it).
#[test]
fn leftovers_of_a_reaped_instance_are_carried_by_a_restore() {
    let mut h = Harness::start(&[("web", "command = \"sleep 100\"\n")]);
    let pid = h.pid_of("web", 0);
    h.os_mut().leave_processes = true;
    let _reply = h.request(Request::Stop { unit: unit("web") });
    h.exit(pid, killed(Signal::SIGTERM));
    h.advance(SECOND);
    let state = h.sup.snapshot(h.now);
    assert_eq!(state.lingering.len(), 1, "{state:?}");
    let text = serde_json::to_string(&state).expect("serializes");
    let read =
        super::snapshot::read_versioned::<super::snapshot::SupervisorState>(&text).expect("parses");
    read.validate().expect("valid");
    let mut new = Supervisor::new(FakeOs::new());
    new.restore(read, h.now).expect("restores");
    let mut next = Harness {
        sup: new,
        now: h.now,
    };
    next.advance(super::AFTER_SIGKILL - SECOND - MS);
    assert!(next.os().given_up.is_empty());
    next.advance(MS);
    assert_eq!(next.os().given_up.len(), 1);
    assert_eq!(next.status("web").state, UnitState::Stopped);
}
