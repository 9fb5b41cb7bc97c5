//! The integration-test harness: a real `clusterd` in a scratch directory, driven with the
//! real `clusterctl`. Every wait polls with a deadline; dropping a [`Daemon`] stops clusterd
//! (SIGTERM, then SIGKILL) so a failing test leaves no process behind.

#![allow(dead_code)]

pub(crate) mod http_load;
pub(crate) mod tmux;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub(crate) const CLUSTERD: &str = env!("CARGO_BIN_EXE_clusterd");
pub(crate) const CLUSTERCTL: &str = env!("CARGO_BIN_EXE_clusterctl");

/// Generous: tests check behaviour, not speed (that is what benches/ is for).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// The longest any clusterctl request of the tests may take (the slowest waits for stops
/// with kill timeouts of a few seconds): past it, clusterctl is killed and the test fails.
pub(crate) const CTL_DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` every 10 ms until it returns true; panics with `what` after `timeout`.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub(crate) fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

pub(crate) struct Daemon {
    pub dir: TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    /// clusterd's RLIMIT_NOFILE, when a test wants it at its limits.
    fd_limit: Option<u64>,
    /// More flags for clusterd.
    extra_args: Vec<String>,
    /// A command clusterd runs under (`unshare --pid --fork ...`): then `child` is that
    /// command, and clusterd is its child.
    wrapper: Vec<String>,
    /// The clusterd binary run, when not [`CLUSTERD`] (a copy a test replaces on disk).
    program: Option<PathBuf>,
}

impl Daemon {
    /// Writes `units` (file stem, TOML text) into a fresh units directory and starts clusterd
    /// on it; returns once the control socket answers.
    pub(crate) fn start(units: &[(&str, &str)]) -> Daemon {
        Self::start_with_fd_limit(units, None)
    }

    /// [`Daemon::start`] with more flags for clusterd.
    pub(crate) fn start_with_args(units: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.extra_args = args.iter().map(|a| a.to_string()).collect();
        daemon.launch();
        daemon
    }

    /// [`Daemon::start_with_args`] with clusterd as PID 1 of a PID namespace of its own
    /// (`unshare --pid --fork --mount-proc`), as in a container. The caller checks that
    /// unshare works here ([`pid_namespaces_work`]).
    pub(crate) fn start_as_pid_1(units: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.extra_args = args.iter().map(|a| a.to_string()).collect();
        daemon.wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            .map(String::from)
            .to_vec();
        daemon.launch();
        daemon
    }

    /// [`Daemon::start`] with `variables` (NAME=value) added to clusterd's environment
    /// (through `env`, which execs clusterd: its pid is clusterd's).
    pub(crate) fn start_with_env(units: &[(&str, &str)], variables: &[&str]) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.wrapper = std::iter::once("env")
            .chain(variables.iter().copied())
            .map(String::from)
            .collect();
        daemon.launch();
        // `env` has become clusterd (its control socket answered): no wrapper to see past.
        daemon.wrapper.clear();
        daemon
    }

    /// [`Daemon::start`] with clusterd's file-descriptor limit (soft and hard) set to `limit`.
    pub(crate) fn start_with_fd_limit(units: &[(&str, &str)], limit: Option<u64>) -> Daemon {
        let mut daemon = Self::prepare(units, limit);
        daemon.launch();
        daemon
    }

    fn prepare(units: &[(&str, &str)], limit: Option<u64>) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("clusterd-test-")
            .tempdir()
            .expect("temp dir");
        fs::create_dir(dir.path().join("units")).expect("units dir");
        for (name, text) in units {
            fs::write(dir.path().join("units").join(format!("{name}.toml")), text)
                .expect("write unit");
        }
        Daemon {
            socket: dir.path().join("ctl.sock"),
            dir,
            child: None,
            fd_limit: limit,
            extra_args: Vec::new(),
            wrapper: Vec::new(),
            program: None,
        }
    }

    /// [`Daemon::start`] running `program` (made by `make(dir)` in the test's directory)
    /// instead of [`CLUSTERD`].
    pub(crate) fn start_program(
        units: &[(&str, &str)],
        make: impl FnOnce(&Path) -> PathBuf,
    ) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.program = Some(make(daemon.dir.path()));
        daemon.launch();
        daemon
    }

    /// [`Daemon::start_program`] with `args` added to clusterd's command line.
    pub(crate) fn start_program_with_args(
        units: &[(&str, &str)],
        args: &[&str],
        make: impl FnOnce(&Path) -> PathBuf,
    ) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.extra_args = args.iter().map(|a| a.to_string()).collect();
        daemon.program = Some(make(daemon.dir.path()));
        daemon.launch();
        daemon
    }

    pub(crate) fn launch(&mut self) {
        let log = fs::File::create(self.log_path()).expect("log file");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(CLUSTERD);
                command
            }
            None => Command::new(self.program.as_deref().unwrap_or(Path::new(CLUSTERD))),
        };
        if let Some(limit) = self.fd_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only a local struct.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("--units")
            .arg(self.units_dir())
            .arg("--socket")
            .arg(&self.socket)
            .args(
                (!self.extra_args.iter().any(|a| a == "--log-dir"))
                    .then(|| ["--log-dir".into(), self.log_dir().into_os_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "debug")
            .env_remove("CLUSTERD_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start clusterd");
        self.child = Some(child);
        let socket = self.socket.clone();
        wait_for("the control socket to answer", PATIENCE, || {
            let request = clusterd::protocol::Request::Status { unit: None };
            clusterd::client::connection::send_request_within(&socket, request, CTL_DEADLINE)
                .is_ok_and(|r| r.ok)
        });
    }

    pub(crate) fn units_dir(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    /// Where the units' log files are (`--log-dir`).
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("clusterd.log")
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// clusterd's pid (as this test sees it: in a PID namespace of its own, clusterd is 1
    /// only to itself).
    pub(crate) fn pid(&self) -> u32 {
        self.clusterd_pid().expect("clusterd running")
    }

    fn clusterd_pid(&self) -> Option<u32> {
        let child = self.child.as_ref().map(Child::id)?;
        if self.wrapper.is_empty() {
            return Some(child);
        }
        // The wrapper's only child; it exists once the control socket answered.
        fs::read_to_string(format!("/proc/{child}/task/{child}/children"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
    }

    pub(crate) fn write_unit(&self, name: &str, text: &str) {
        fs::write(self.units_dir().join(format!("{name}.toml")), text).expect("write unit");
    }

    pub(crate) fn remove_unit(&self, name: &str) {
        fs::remove_file(self.units_dir().join(format!("{name}.toml"))).expect("remove unit");
    }

    /// Runs `clusterctl --socket <ours> <args>`; fails the test if it has not ended within
    /// [`CTL_DEADLINE`].
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_within(args, CTL_DEADLINE).unwrap_or_else(|| {
            panic!(
                "clusterctl {args:?} did not answer within {CTL_DEADLINE:?}\n{}",
                self.log()
            )
        })
    }

    /// Runs `clusterctl --socket <ours> <args>`; None if it has not ended within `limit` (it
    /// is killed then).
    pub(crate) fn ctl_within(&self, args: &[&str], limit: Duration) -> Option<Output> {
        let child = Command::new(CLUSTERCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run clusterctl");
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel();
        // Read while it runs: a large answer fills the pipe.
        let waiter = std::thread::spawn(move || {
            let output = child.wait_with_output();
            let _ = done.send(());
            output
        });
        if finished.recv_timeout(limit).is_err() {
            send_signal(pid, libc::SIGKILL);
            let _ = waiter.join();
            return None;
        }
        waiter.join().ok().and_then(Result::ok)
    }

    /// `unit`'s log files in its log directory: the current one and the rotated ones, by
    /// name.
    pub(crate) fn log_files(&self, unit: &str) -> Vec<PathBuf> {
        let prefix = format!("{unit}.log");
        let mut files: Vec<PathBuf> = fs::read_dir(self.log_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// `clusterctl status --json`, parsed.
    /// Asked in-process through the library's client, not by starting clusterctl: tests
    /// poll it every 10 ms.
    pub(crate) fn status(&self) -> Value {
        let request = clusterd::protocol::Request::Status { unit: None };
        let response =
            clusterd::client::connection::send_request_within(&self.socket, request, CTL_DEADLINE)
                .unwrap_or_else(|e| panic!("status failed: {e:?}\n{}", self.log()));
        assert!(response.ok, "status failed: {:?}", response.error);
        serde_json::to_value(response.status).expect("status JSON")
    }

    /// One unit's entry of the status JSON (Null if absent).
    pub(crate) fn unit(&self, name: &str) -> Value {
        self.status()["units"]
            .as_array()
            .and_then(|units| units.iter().find(|u| u["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    /// Pids of the unit's current (not draining) instances, by index.
    pub(crate) fn pids(&self, name: &str) -> Vec<u32> {
        let unit = self.unit(name);
        unit["instances"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|i| !i["draining"].as_bool().unwrap_or(false))
                    .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the unit has `count` running instances and returns their pids.
    pub(crate) fn wait_running(&self, name: &str, count: usize) -> Vec<u32> {
        let mut pids = Vec::new();
        wait_for(
            &format!("{name} to run {count} instance(s)"),
            PATIENCE,
            || {
                let unit = self.unit(name);
                let running: Vec<u32> = unit["instances"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter(|i| {
                                i["state"] == "running" && !i["draining"].as_bool().unwrap_or(false)
                            })
                            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
                            .collect()
                    })
                    .unwrap_or_default();
                pids = running;
                pids.len() == count
            },
        );
        pids
    }

    /// Sends SIGTERM and waits for clusterd to exit; returns its exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        send_signal(self.pid(), libc::SIGTERM);
        self.wait_exit(PATIENCE)
    }

    /// Waits for clusterd to exit on its own (after a signal the test sent).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        // Under a wrapper, the wrapper exits with clusterd's status.
        let mut child = self.child.take().expect("clusterd running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("clusterd did not exit within {timeout:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // clusterd itself, not its wrapper: the wrapper's SIGTERM would leave clusterd
        // behind (`--kill-child` then SIGKILLs it).
        let target = self.clusterd_pid();
        if let Some(mut child) = self.child.take() {
            let pid = target.unwrap_or(child.id());
            // SIGTERM stops every instance gracefully; a second SIGTERM, if that takes longer
            // than 10 s (a unit with a long kill_timeout), kills them at once. Either way
            // clusterd removes its cgroups on the way out, which a SIGKILL of clusterd
            // itself would leave behind.
            'stopping: for _ in 0..2 {
                send_signal(pid, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break 'stopping;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Instances die with clusterd (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
        }
        // A clusterd the test (or the lines above) SIGKILLed could not remove its cgroups.
        remove_cgroup_tree_of(&self.socket);
    }
}

/// Removes what is left of the cgroup tree of the clusterd whose control socket is `socket`
/// (`<its cgroup>/clusterd.<hash of the socket's path>`, as src/daemon/os/cgroup.rs names
/// it), deepest first, killing anything still in it. Nothing to do without cgroups.
fn remove_cgroup_tree_of(socket: &Path) {
    let Some(mount) = fs::read_to_string("/proc/mounts").ok().and_then(|mounts| {
        mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"cgroup2"))
            .and_then(|f| f.get(1).map(PathBuf::from))
    }) else {
        return;
    };
    let Some(own) = fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| p.trim_start_matches('/').to_string())
            })
        })
    else {
        return;
    };
    let absolute = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
    let hash = std::os::unix::ffi::OsStrExt::as_bytes(absolute.as_os_str())
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let root = mount.join(own).join(format!("clusterd.{hash:016x}"));
    if !root.is_dir() {
        return;
    }
    let _ = fs::write(root.join("cgroup.kill"), "1");
    let deadline = Instant::now() + PATIENCE;
    while fs::read_to_string(root.join("cgroup.events")).is_ok_and(|e| e.contains("populated 1"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every directory below, deepest first.
    let mut directories = vec![root.clone()];
    let mut index = 0;
    while let Some(directory) = directories.get(index).cloned() {
        if let Ok(entries) = fs::read_dir(&directory) {
            directories.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        index += 1;
    }
    for directory in directories.iter().rev() {
        let _ = fs::remove_dir(directory);
    }
}

/// Whether a test's prerequisite (`what`: a tool, root) is here. Where it is not, the test
/// says so on the terminal (see [`report_skip`]) and returns, on a developer's machine; in CI,
/// which installs everything and sets `CLUSTERD_TEST_REQUIRE_ALL=1`, a missing prerequisite
/// fails the test instead, so that nothing is skipped silently there.
pub(crate) fn available(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CLUSTERD_TEST_REQUIRE_ALL").is_some_and(|v| !v.is_empty()) {
        panic!("{what} is required (CLUSTERD_TEST_REQUIRE_ALL is set) but is missing");
    }
    report_skip(what);
    false
}

/// The tests that skipped so far, with why, for the summary [`print_skips`] prints at exit.
static SKIPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Says at once, on the terminal, that the running test skipped and why, and once more in a
/// summary after libtest's own: libtest has no "skipped" result, so the test shows `ok`, and
/// what a test prints with `eprintln!` goes to libtest's capture, shown only for a failure.
/// A write to the process's stderr itself is not captured.
fn report_skip(what: &str) {
    use std::io::Write;
    // libtest names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} is missing (with CLUSTERD_TEST_REQUIRE_ALL=1 this fails)"
    );
    let mut skips = SKIPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if skips.is_empty() {
        // SAFETY: print_skips is an `extern "C" fn()` that never unwinds (it only writes,
        // ignoring errors) and reads a static that outlives the process's exit.
        unsafe {
            libc::atexit(print_skips);
        }
    }
    skips.push(format!("{test}: {what} is missing"));
}

/// At the process's exit, after libtest's `test result:` line: every test that skipped.
extern "C" fn print_skips() {
    use std::io::Write;
    let skips = SKIPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut text = format!(
        "\n{} test(s) SKIPPED (shown as ok above) because a prerequisite is missing:\n",
        skips.len()
    );
    for skip in skips.iter() {
        text.push_str(&format!("    {skip}\n"));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// True if `program --version`-like `args` runs.
pub(crate) fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Root, needed by tests that run something as another user.
pub(crate) fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    available("root", unsafe { libc::geteuid() } == 0)
}

/// A TCP port on loopback that nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A copy of `binary` (such as [`CLUSTERCTL`]) inside `dir`, and `dir` opened to everyone
/// (0755), for tests that run it as another user: the checkout (and so `target/`) may be in
/// a directory only root can enter, as `/root` is and as CI may use.
pub(crate) fn copy_for_everyone(binary: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = Path::new(binary).file_name().expect("binary name");
    let copy = dir.join(name);
    if !copy.exists() {
        // Copied by `cp`, not fs::copy: a file this process has open for writing is inherited
        // for a moment by every child another test thread forks, and executing it meanwhile
        // fails with ETXTBSY. The write end must never exist in this process.
        let copied = Command::new("cp")
            .arg(binary)
            .arg(&copy)
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp {binary} failed");
    }
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod binary");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    copy
}

/// A path usable inside a TOML basic string.
pub(crate) fn toml_path(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

impl Daemon {
    /// [`Daemon::start_with_args`] with clusterd's file-descriptor limit (soft and hard) set
    /// to `limit`.
    pub(crate) fn start_with_fd_limit_and_args(
        units: &[(&str, &str)],
        limit: u64,
        args: &[&str],
    ) -> Daemon {
        let mut daemon = Self::prepare(units, Some(limit));
        daemon.extra_args = args.iter().map(|a| a.to_string()).collect();
        daemon.launch();
        daemon
    }
}

/// Runs `clusterctl` (a copy nobody may execute, see [`copy_for_everyone`]) on `socket` as
/// uid 65534 with `groups` as its supplementary groups: a socket-group member that is not
/// root (or, without groups, an outsider).
pub(crate) fn clusterctl_as_nobody_in(
    clusterctl: &Path,
    socket: &Path,
    groups: &[libc::gid_t],
    args: &[&str],
) -> Output {
    use std::os::unix::process::CommandExt;
    let groups = groups.to_vec();
    let mut command = Command::new(clusterctl);
    command
        .env_remove("CLUSTERD_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .current_dir("/");
    // By hand, in this order: std's uid() would drop the supplementary groups, and its
    // pre_exec runs after the uid change, when setgroups is no longer allowed.
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; the closure reads only
    // the moved-in vector.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run clusterctl as uid 65534")
}

/// The gid of `daemon`, the group tests hand `--socket-group` (any group other than nobody's
/// would do; `daemon` is in every Debian base), when the test can run as root; `None` (after
/// [`available`] said why) when it cannot.
pub(crate) fn socket_group_for_tests() -> Option<libc::gid_t> {
    if !have_root() {
        return None;
    }
    let group = nix::unistd::Group::from_name("daemon").ok().flatten();
    if !available("the group daemon", group.is_some()) {
        return None;
    }
    group.map(|g| g.gid.as_raw())
}

/// The system's one systemd-journald (its sockets in /run/systemd/journal) for the whole
/// test binary: a test that starts, uses or kills a journald holds this guard first, so that
/// another test does not find its journald gone, or one running where it expects none.
pub(crate) fn system_journald() -> std::sync::MutexGuard<'static, ()> {
    static JOURNALD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    JOURNALD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts systemd-journald (it runs without systemd as PID 1 when started as root) and waits
/// until it takes entries; `None` without the systemd package. The caller kills it.
pub(crate) fn spawn_journald() -> Option<Child> {
    let binary = [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())?;
    let mut child = Command::new(binary)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PATIENCE;
    while !journald_listens() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("journald did not open its sockets within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}

/// Whether a journald takes native entries (and stream connections).
pub(crate) fn journald_listens() -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/run/systemd/journal/socket"))
        .is_ok()
        && std::os::unix::net::UnixStream::connect("/run/systemd/journal/stdout").is_ok()
}

impl Daemon {
    /// [`Daemon::start`] with clusterd's stdin, stdout and stderr closed (as some init
    /// scripts start daemons): through `sh`, which execs clusterd, so its pid is clusterd's.
    pub(crate) fn start_with_stdio_closed(units: &[(&str, &str)], fd_limit: u64) -> Daemon {
        let mut daemon = Self::prepare(units, Some(fd_limit));
        daemon.wrapper = ["sh", "-c", "exec \"$@\" <&- >&- 2>&-", "sh"]
            .map(String::from)
            .to_vec();
        daemon.launch();
        daemon.wrapper.clear();
        daemon
    }

    /// [`Daemon::start`] without the `--log-dir` every other test passes: clusterd picks its
    /// default log directory. Through `sh -c`, which execs clusterd with `--units` and
    /// `--socket` only (its pid is clusterd's).
    pub(crate) fn start_with_default_log_dir(units: &[(&str, &str)]) -> Daemon {
        let mut daemon = Self::prepare(units, None);
        daemon.wrapper = ["sh", "-c", r#"exec "$0" "$1" "$2" "$3" "$4""#]
            .map(String::from)
            .to_vec();
        daemon.launch();
        daemon.wrapper.clear();
        daemon
    }
}

/// Reads a child's stdout on a thread into a shared buffer.
pub(crate) fn collect_stdout(
    child: &mut std::process::Child,
) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::io::Read;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let sink = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        // 64 KiB: a follower of a flood is read as fast as it comes.
        let mut buffer = vec![0u8; 65536];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buffer[..n]);
        }
    });
    seen
}

/// A child the test started, killed and reaped when the test ends, whichever way.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
