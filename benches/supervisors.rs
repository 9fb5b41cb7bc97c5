//! `cargo bench --bench supervisors`: clusterd against PM2, supervisord and Node's cluster
//! module on the same machine in the same run, printed as one Markdown table.
//!
//! The peers are installed into a scratch directory (PM2 with `npm install --prefix`,
//! supervisord into a Python venv); a peer that cannot be installed is skipped with a message.
//! Every supervisor runs the same worker: a tiny C program (compiled with gcc into the scratch
//! directory) that appends "PID CLOCK_REALTIME-ns" to a stamp file as its first action, so
//! start and restart times are measured from outside, from the workers' own clocks.
//!
//! Options (arguments after `--`, or environment variables):
//! * `--quick` / `CLUSTERD_BENCH_QUICK=1`: clusterd only, tiny counts, a few seconds; exits
//!   non-zero if clusterd itself fails (for CI).
//! * `--runs N` / `CLUSTERD_BENCH_RUNS`: repetitions per metric (default 3).
//! * `--only mem,idle,restart,mass,ctl,http,reload` / `CLUSTERD_BENCH_ONLY`: pick metrics.
//! * `--skip pm2,supervisord,node` / `CLUSTERD_BENCH_SKIP`: skip peers.
//! * `--idle-secs S`, `--kills K`, `--mass N`, `--wrk-secs S`: sizes (defaults 30, 30, 1000, 10).
//! * `--json PATH`: also write the results as JSON; `--chart PATH`: draw a PNG with
//!   benches/supervisors_chart.py (matplotlib is installed into the scratch venv).
//! * `CLUSTERD_BENCH_SCRATCH`: where the peers are installed (default target/tmp/supervisors-bench).
//! * `CLUSTERD_BENCH_ISOLATION=cgroup|process-group`: clusterd's `--isolation` (default:
//!   clusterd's own default, `auto`).
//!
//! Hygiene: the bench makes itself a child subreaper, so daemons that detach (PM2's God) stay
//! its descendants; every daemon is owned by a guard whose Drop kills it (and `pm2 kill`s PM2,
//! whose PM2_HOME is inside the run's temporary directory); the workers die with their parent
//! (PR_SET_PDEATHSIG); and a final sweep kills any descendant that is still alive.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Peer {
    Clusterd,
    Pm2,
    Supervisord,
    NodeCluster,
}

const PEERS: [Peer; 4] = [
    Peer::Clusterd,
    Peer::Pm2,
    Peer::Supervisord,
    Peer::NodeCluster,
];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Clusterd => "clusterd",
            Peer::Pm2 => "PM2",
            Peer::Supervisord => "supervisord",
            Peer::NodeCluster => "Node cluster",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Peer::Clusterd => "clusterd",
            Peer::Pm2 => "pm2",
            Peer::Supervisord => "supervisord",
            Peer::NodeCluster => "node",
        }
    }
}

struct Opts {
    quick: bool,
    runs: usize,
    only: Option<HashSet<String>>,
    skip: HashSet<String>,
    idle_secs: u64,
    kills: usize,
    mass: usize,
    wrk_secs: u64,
    json: Option<PathBuf>,
    chart: Option<PathBuf>,
    scratch: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let list = |v: &str| -> HashSet<String> {
            v.split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut o = Opts {
            quick: env("CLUSTERD_BENCH_QUICK").is_some_and(|v| v != "0"),
            runs: env("CLUSTERD_BENCH_RUNS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
            only: env("CLUSTERD_BENCH_ONLY").map(|v| list(&v)),
            skip: env("CLUSTERD_BENCH_SKIP")
                .map(|v| list(&v))
                .unwrap_or_default(),
            idle_secs: 30,
            kills: 30,
            mass: 1000,
            wrk_secs: 10,
            json: None,
            chart: None,
            scratch: env("CLUSTERD_BENCH_SCRATCH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_TARGET_TMPDIR")).join("supervisors-bench")
                }),
        };
        let mut explicit = HashSet::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut num = |name: &str| -> u64 {
                explicit.insert(name.to_string());
                args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("supervisors: {name} needs a number");
                    std::process::exit(2)
                })
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--runs" => o.runs = num("--runs") as usize,
                "--idle-secs" => o.idle_secs = num("--idle-secs"),
                "--kills" => o.kills = num("--kills") as usize,
                "--mass" => o.mass = num("--mass") as usize,
                "--wrk-secs" => o.wrk_secs = num("--wrk-secs"),
                "--only" => o.only = args.next().map(|v| list(&v)),
                "--skip" => o
                    .skip
                    .extend(args.next().map(|v| list(&v)).unwrap_or_default()),
                "--json" => o.json = args.next().map(PathBuf::from),
                "--chart" => o.chart = args.next().map(PathBuf::from),
                "--bench" => {} // cargo bench passes this to harness = false targets
                other => eprintln!("supervisors: ignoring unknown argument {other:?}"),
            }
        }
        if o.quick {
            for p in ["pm2", "supervisord", "node"] {
                o.skip.insert(p.into());
            }
            if !explicit.contains("--runs") {
                o.runs = 1;
            }
            if !explicit.contains("--idle-secs") {
                o.idle_secs = 2;
            }
            if !explicit.contains("--kills") {
                o.kills = 5;
            }
            if !explicit.contains("--mass") {
                o.mass = 100;
            }
            if !explicit.contains("--wrk-secs") {
                o.wrk_secs = 2;
            }
            if o.only.is_none() {
                o.only = Some(list("mem,idle,restart,mass,ctl"));
            }
        }
        o.runs = o.runs.max(1);
        o
    }
    fn wants(&self, metric: &str) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(metric))
    }
    fn peer_on(&self, p: Peer) -> bool {
        p == Peer::Clusterd || !self.skip.contains(p.key())
    }
}

// ---------------------------------------------------------------------------------------------
// Process hygiene

/// Process groups (and single pids) to SIGKILL if the bench itself is interrupted.
static REGISTERED: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];

fn register(pid: i32) {
    for slot in &REGISTERED {
        if slot
            .compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister(pid: i32) {
    for slot in &REGISTERED {
        let _ = slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

extern "C" fn on_fatal_signal(_: libc::c_int) {
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

fn install_hygiene() {
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

fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

fn alive(pid: i32) -> bool {
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
fn sweep_descendants() {
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

struct SweepOnDrop;
impl Drop for SweepOnDrop {
    fn drop(&mut self) {
        sweep_descendants();
    }
}

/// A supervisor daemon started by the bench. Drop stops it for good.
struct Daemon {
    child: Option<Child>,
    /// The pid whose memory and CPU are measured (PM2: the God daemon, not the CLI).
    pid: i32,
    /// PM2 only: how to run `pm2 kill` on drop.
    pm2_kill: Option<Command>,
    /// Pids that must die with the daemon (every stamped worker).
    extra: Vec<i32>,
}

impl Daemon {
    fn from_child(child: Child) -> Daemon {
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
    fn terminate(&mut self, grace: Duration) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Small utilities

fn realtime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a command to completion, killing it after `timeout`.
fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    match status {
        Some(st) => Ok(Output {
            ok: st.success(),
            stdout,
            stderr,
        }),
        None => Err(format!("{cmd:?} timed out after {timeout:?}")),
    }
}

fn wait_for(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(step);
    }
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(38123)
}

/// True once a GET / on the port gets an HTTP 200.
fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf.starts_with(b"HTTP/1.1 200"))
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/// (RSS, PSS) in KiB from smaps_rollup.
fn memory_kib(pid: i32) -> Option<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// utime + stime of the whole process, in milliseconds.
fn cpu_ms(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// Context switches (voluntary + involuntary) and schedstat on-CPU ns, summed over all threads.
fn thread_counters(pid: i32) -> Option<(f64, f64)> {
    let mut csw = 0.0;
    let mut run_ns = 0.0;
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let p = e.path();
        if let Ok(status) = fs::read_to_string(p.join("status")) {
            for l in status.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    csw += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                }
            }
        }
        if let Ok(s) = fs::read_to_string(p.join("schedstat")) {
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Some((csw, run_ns))
}

// ---------------------------------------------------------------------------------------------
// The worker and its stamp file

const WORKER_C: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the supervisor */
    if (argc > 1) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "%d %lld\n", (int)getpid(),
                         (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) { if (write(fd, buf, n) < 0) return 1; close(fd); }
    }
    for (;;) pause();
}
"#;

const FLOOR_C: &str = include_str!("workers/restart_floor.c");

/// Builds the C restart floor (it needs the static C worker, not the shell fallback).
fn build_floor(scratch: &Path, worker: &[String]) -> Option<PathBuf> {
    if worker.len() != 1 {
        return None;
    }
    let src = scratch.join("restart_floor.c");
    let bin = scratch.join("restart_floor");
    fs::write(&src, FLOOR_C).ok()?;
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(bin)
}

/// The floor's restart latencies (ms), `kills` of them, measured the way the supervisors' are.
fn floor_latencies(env: &Env, floor: &Path, kills: usize) -> Result<Vec<f64>, String> {
    let stamps = env.tmp.join("floor-stamps");
    let out = run_timeout(
        Command::new(floor)
            .arg(&env.worker[0])
            .arg(&stamps)
            .arg(kills.to_string()),
        Duration::from_secs(60),
    )?;
    let lat: Vec<f64> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if lat.is_empty() {
        return Err("the floor measured nothing".into());
    }
    Ok(lat)
}

/// The worker's argv without the stamp path.
fn build_worker(scratch: &Path) -> Result<Vec<String>, String> {
    let src = scratch.join("stamp_worker.c");
    let bin = scratch.join("stamp_worker");
    fs::write(&src, WORKER_C).map_err(|e| e.to_string())?;
    for flags in [&["-O2", "-static"][..], &["-O2"][..]] {
        let ok = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(vec![bin.display().to_string()]);
        }
    }
    eprintln!("supervisors: gcc failed; using a /bin/sh worker (adds a `date` fork per start)");
    Ok(vec![
        "/bin/sh".into(),
        "-c".into(),
        r#"echo "$$ $(date +%s%N)" >> "$0"; exec sleep 2147483647"#.into(),
    ])
}

struct Stamps {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Every (pid, start ns) seen, in file order.
    all: Vec<(i32, i64)>,
}

impl Stamps {
    fn new(path: PathBuf) -> Stamps {
        let _ = fs::write(&path, "");
        Stamps {
            path,
            offset: 0,
            partial: String::new(),
            all: Vec::new(),
        }
    }
    fn poll(&mut self) {
        use std::io::Seek;
        let Ok(mut f) = fs::File::open(&self.path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut s = String::new();
        if let Ok(n) = f.read_to_string(&mut s) {
            self.offset += n as u64;
            self.partial.push_str(&s);
            while let Some(i) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=i).collect();
                let mut it = line.split_whitespace();
                if let (Some(Ok(p)), Some(Ok(t))) =
                    (it.next().map(str::parse), it.next().map(str::parse))
                {
                    self.all.push((p, t));
                }
            }
        }
    }
    fn wait_count(&mut self, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, Duration::from_millis(1), || {
            self.poll();
            self.all.len() >= n
        })
    }
    fn pids(&self) -> Vec<i32> {
        self.all.iter().map(|&(p, _)| p).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisors under test

struct Env {
    tmp: PathBuf,
    worker: Vec<String>,
    /// benches/workers/restart_floor.c built: the restart floor of this machine.
    floor: Option<PathBuf>,
    clusterd: PathBuf,
    clusterctl: PathBuf,
    node: Option<PathBuf>,
    pm2: Option<PathBuf>,
    supervisord: Option<PathBuf>,
    wrk: Option<PathBuf>,
}

/// A supervisor running `n` stamp workers.
struct Session {
    peer: Peer,
    daemon: Daemon,
    stamps: Stamps,
    /// The control command measured for the round trip.
    ctl: Box<dyn Fn() -> Command>,
    started_at_ns: i64,
}

impl Session {
    fn start(env: &Env, peer: Peer, n: usize, tag: &str) -> Result<Session, String> {
        let dir = env.tmp.join(format!("{}-{tag}", peer.key()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let stamps = Stamps::new(dir.join("stamps"));
        let mut argv = env.worker.clone();
        argv.push(stamps.path.display().to_string());
        match peer {
            Peer::Clusterd => start_clusterd(env, &dir, n, &argv, stamps),
            Peer::Pm2 => start_pm2(env, &dir, n, &argv, stamps),
            Peer::Supervisord => start_supervisord(env, &dir, n, &argv, stamps),
            Peer::NodeCluster => Err("not a general supervisor".into()),
        }
    }

    /// Waits for `n` started workers; returns seconds from the start command to the last.
    fn wait_started(&mut self, n: usize, timeout: Duration) -> Result<f64, String> {
        if !self.stamps.wait_count(n, timeout) {
            return Err(format!(
                "{}: only {} of {n} instances started within {timeout:?}",
                self.peer.name(),
                self.stamps.all.len()
            ));
        }
        let last = self.stamps.all[..n]
            .iter()
            .map(|&(_, t)| t)
            .max()
            .unwrap_or(0);
        Ok((last - self.started_at_ns) as f64 / 1e9)
    }

    fn stop(mut self) {
        self.daemon.extra = self.stamps.pids();
        match self.peer {
            Peer::Clusterd | Peer::Supervisord => {
                self.daemon.terminate(Duration::from_secs(15));
            }
            _ => {}
        }
    }
}

/// Starts clusterd on `units` with its log in `dir`/clusterd.log, in its own process group.
fn launch_clusterd(env: &Env, units: &Path, socket: &Path, dir: &Path) -> Result<Daemon, String> {
    let log = fs::File::create(dir.join("clusterd.log")).map_err(|e| e.to_string())?;
    let child = Command::new(&env.clusterd)
        .arg("--units")
        .arg(units)
        .arg("--socket")
        .arg(socket)
        .args(
            std::env::var("CLUSTERD_BENCH_ISOLATION")
                .map(|i| vec!["--isolation".to_string(), i])
                .unwrap_or_default(),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start clusterd: {e}"))?;
    Ok(Daemon::from_child(child))
}

fn start_clusterd(
    env: &Env,
    dir: &Path,
    n: usize,
    argv: &[String],
    stamps: Stamps,
) -> Result<Session, String> {
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let unit = format!(
        "command = {}\ninstances = {n}\nrestart = \"always\"\n\
         restart_limit = {{ burst = 1000000, interval = \"1s\" }}\n",
        json!(argv)
    );
    fs::write(units.join("w.toml"), unit).map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let t0 = realtime_ns();
    let daemon = launch_clusterd(env, &units, &socket, dir)?;
    let ctl_bin = env.clusterctl.clone();
    let sock = socket.clone();
    Ok(Session {
        peer: Peer::Clusterd,
        daemon,
        stamps,
        ctl: Box::new(move || {
            let mut c = Command::new(&ctl_bin);
            c.arg("--socket").arg(&sock).arg("status");
            c
        }),
        started_at_ns: t0,
    })
}

fn pm2_command(env: &Env, home: &Path) -> Command {
    let mut c = Command::new(env.pm2.as_ref().expect("pm2 installed"));
    c.env("PM2_HOME", home);
    if let Some(dir) = env.node.as_ref().and_then(|n| n.parent()) {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()));
    }
    c
}

/// Starts PM2 (`pm2 start ecosystem.json`) and records the God daemon's pid.
fn start_pm2_app(env: &Env, dir: &Path, app: Value) -> Result<(Daemon, i64), String> {
    let home = dir.join("pm2home");
    fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let eco = dir.join("ecosystem.json");
    fs::write(&eco, json!({ "apps": [app] }).to_string()).map_err(|e| e.to_string())?;
    let t0 = realtime_ns();
    // The CLI spawns God detached; as subreaper the bench inherits it.
    let mut start = pm2_command(env, &home);
    start.arg("start").arg(&eco);
    let mut kill_cmd = pm2_command(env, &home);
    kill_cmd.arg("kill");
    let out = run_timeout(&mut start, Duration::from_secs(300));
    let pid_file = home.join("pm2.pid");
    let god = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let daemon = Daemon {
        child: None,
        pid: god,
        pm2_kill: Some(kill_cmd),
        extra: Vec::new(),
    };
    register(god);
    let out = out?;
    if !out.ok || god == 0 {
        return Err(format!(
            "pm2 start failed: {}{}",
            out.stdout.trim(),
            out.stderr.trim()
        ));
    }
    Ok((daemon, t0))
}

fn start_pm2(
    env: &Env,
    dir: &Path,
    n: usize,
    argv: &[String],
    stamps: Stamps,
) -> Result<Session, String> {
    let app = json!({
        "name": "w",
        "script": argv[0],
        "args": argv[1..],
        "interpreter": "none",
        "exec_mode": "fork",
        "instances": n,
        "autorestart": true,
        "restart_delay": 0,
        "max_restarts": 1_000_000,
        "min_uptime": 100,
        "out_file": "/dev/null",
        "error_file": "/dev/null",
    });
    let (mut daemon, t0) = start_pm2_app(env, dir, app)?;
    if n > 100 {
        // `pm2 kill` deletes apps ten at a time: with 1000 it is a benchmark of its own.
        daemon.pm2_kill = None;
    }
    let home = dir.join("pm2home");
    let env_pm2 = env.pm2.clone();
    let node_dir = env
        .node
        .as_ref()
        .and_then(|n| n.parent().map(Path::to_path_buf));
    Ok(Session {
        peer: Peer::Pm2,
        daemon,
        stamps,
        ctl: Box::new(move || {
            let mut c = Command::new(env_pm2.as_ref().expect("pm2"));
            c.env("PM2_HOME", &home).arg("jlist");
            if let Some(d) = &node_dir {
                let path = std::env::var("PATH").unwrap_or_default();
                c.env("PATH", format!("{}:{path}", d.display()));
            }
            c
        }),
        started_at_ns: t0,
    })
}

fn supervisord_conf(dir: &Path, n: usize, argv: &[String]) -> String {
    format!(
        "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
         childlogdir={d}\nminfds=16384\nminprocs=4096\nloglevel=warn\n\n\
         [unix_http_server]\nfile={d}/supervisor.sock\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
         [program:w]\ncommand={cmd}\nnumprocs={n}\nprocess_name=%(program_name)s_%(process_num)s\n\
         autostart=true\nautorestart=true\nstartsecs=0\nstartretries=1000\n\
         stopasgroup=true\nkillasgroup=true\nstopwaitsecs=5\n\
         stdout_logfile=NONE\nstderr_logfile=NONE\n",
        d = dir.display(),
        cmd = argv.join(" "),
    )
}

fn start_supervisord(
    env: &Env,
    dir: &Path,
    n: usize,
    argv: &[String],
    stamps: Stamps,
) -> Result<Session, String> {
    let bin = env.supervisord.as_ref().expect("supervisord installed");
    let conf = dir.join("supervisord.conf");
    fs::write(&conf, supervisord_conf(dir, n, argv)).map_err(|e| e.to_string())?;
    let t0 = realtime_ns();
    let child = Command::new(bin)
        .arg("-n")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start supervisord: {e}"))?;
    let daemon = Daemon::from_child(child);
    let ctl_bin = bin.with_file_name("supervisorctl");
    Ok(Session {
        peer: Peer::Supervisord,
        daemon,
        stamps,
        ctl: Box::new(move || {
            let mut c = Command::new(&ctl_bin);
            c.arg("-c").arg(&conf).arg("status");
            c
        }),
        started_at_ns: t0,
    })
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Results {
    /// metric key → peer → one value per run.
    values: BTreeMap<String, BTreeMap<Peer, Vec<f64>>>,
    notes: Vec<String>,
    clusterd_failed: bool,
}

impl Results {
    fn add(&mut self, key: &str, peer: Peer, v: f64) {
        self.values
            .entry(key.to_string())
            .or_default()
            .entry(peer)
            .or_default()
            .push(v);
    }
    fn fail(&mut self, peer: Peer, what: &str, e: String) {
        let msg = format!("{} {what}: {e}", peer.name());
        eprintln!("supervisors: FAILED {msg}");
        if peer == Peer::Clusterd {
            self.clusterd_failed = true;
        }
        self.notes.push(msg);
    }
    fn median(&self, key: &str, peer: Peer) -> Option<f64> {
        let v = self.values.get(key)?.get(&peer)?;
        (!v.is_empty()).then(|| percentile(v, 0.5))
    }
}

enum Target {
    None,
    AtMost(f64),
    /// At least the median of the given peer.
    AtLeastPeer(Peer),
}

struct Row {
    key: &'static str,
    label: &'static str,
    target: Target,
    target_text: &'static str,
    digits: usize,
}

const ROWS: &[Row] = &[
    Row {
        key: "rss10",
        label: "daemon RSS, 10 instances (MiB)",
        target: Target::AtMost(3.0),
        target_text: "≤ 3",
        digits: 2,
    },
    Row {
        key: "pss10",
        label: "daemon PSS, 10 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "rss1000",
        label: "daemon RSS, 1000 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 1,
    },
    Row {
        key: "pss1000",
        label: "daemon PSS, 1000 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 1,
    },
    Row {
        key: "idle_csw",
        label: "idle context switches / 30 s (10 inst., all threads)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "idle_cpu",
        label: "idle CPU utime+stime / 30 s (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "idle_sched",
        label: "idle on-CPU time / 30 s, schedstat (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_p50",
        label: "restart latency p50 (ms)",
        target: Target::AtMost(1.0),
        target_text: "≤ 1",
        digits: 2,
    },
    Row {
        key: "restart_p90",
        label: "restart latency p90 (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "floor_p50",
        label: "restart latency p50 of a minimal C supervisor, same run (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_vs_floor",
        label: "clusterd restart p50 / C floor, same run",
        target: Target::AtMost(1.2),
        target_text: "≤ 1.2",
        digits: 2,
    },
    Row {
        key: "mass",
        label: "start → 1000th instance started (s)",
        target: Target::AtMost(1.0),
        target_text: "≤ 1",
        digits: 3,
    },
    Row {
        key: "ctl10",
        label: "control round trip, 10 inst. (ms)",
        target: Target::AtMost(5.0),
        target_text: "≤ 5",
        digits: 1,
    },
    Row {
        key: "ctl1000",
        label: "control round trip, 1000 inst. (ms)",
        target: Target::None,
        target_text: "",
        digits: 1,
    },
    Row {
        key: "http_shared",
        label: "HTTP req/s, 2 inst. (clusterd: shared)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_reuseport",
        label: "HTTP req/s, 2 inst. (clusterd: reuseport)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_node_rr",
        label: "HTTP req/s, 2 inst. (clusterd: node_cluster round-robin)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_node_shared",
        label: "HTTP req/s, 2 inst. (clusterd: node_cluster shared)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "reload_fail_shared",
        label: "failed requests, 2 reloads under load (clusterd: shared)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_reuseport",
        label: "failed requests, 2 reloads under load (clusterd: reuseport)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_node_rr",
        label: "failed requests, 2 reloads under load (clusterd: node_cluster round-robin)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_node_shared",
        label: "failed requests, 2 reloads under load (clusterd: node_cluster shared)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_secs_shared",
        label: "duration of one reload (s) (clusterd: shared)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_reuseport",
        label: "duration of one reload (s) (clusterd: reuseport)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_node_rr",
        label: "duration of one reload (s) (clusterd: node_cluster round-robin)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_node_shared",
        label: "duration of one reload (s) (clusterd: node_cluster shared)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
];

/// Which peers have a value in the reload rows (PM2's single figure is shown in both).
fn peer_key(row_key: &str, peer: Peer) -> String {
    if peer != Peer::Clusterd {
        for (prefix, shared) in [
            ("http_", "http"),
            ("reload_fail_", "reload_fail"),
            ("reload_secs_", "reload_secs"),
        ] {
            if row_key.starts_with(prefix) {
                return shared.to_string();
            }
        }
    }
    row_key.to_string()
}

fn fmt_num(v: f64, digits: usize) -> String {
    if v.abs() >= 10_000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.digits$}")
    }
}

fn cell(r: &Results, row: &Row, peer: Peer) -> Option<(f64, String)> {
    let v = r.values.get(&peer_key(row.key, peer))?.get(&peer)?;
    if v.is_empty() {
        return None;
    }
    let med = percentile(v, 0.5);
    let (lo, hi) = (percentile(v, 0.0), percentile(v, 1.0));
    let text = if v.len() > 1 {
        format!(
            "{} [{}–{}]",
            fmt_num(med, row.digits),
            fmt_num(lo, row.digits),
            fmt_num(hi, row.digits)
        )
    } else {
        fmt_num(med, row.digits)
    };
    Some((med, text))
}

fn render_table(r: &Results, opts: &Opts) -> String {
    // Peers that were skipped or measured nothing get no column.
    let peers: Vec<Peer> = PEERS
        .iter()
        .copied()
        .filter(|&p| {
            p == Peer::Clusterd
                || (opts.peer_on(p) && r.values.values().any(|m| m.contains_key(&p)))
        })
        .collect();
    let mut out = String::new();
    out.push_str("| metric | target |");
    for p in &peers {
        out.push_str(&format!(" {} |", p.name()));
    }
    for p in peers.iter().skip(1) {
        out.push_str(&format!(" clusterd/{} |", p.name()));
    }
    out.push_str(" target met |\n|---|---|");
    for _ in 0..(peers.len() * 2 - 1) {
        out.push_str("---:|");
    }
    out.push_str(":-:|\n");
    for row in ROWS {
        let cells: Vec<Option<(f64, String)>> = peers.iter().map(|&p| cell(r, row, p)).collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("| {} | {} |", row.label, row.target_text));
        for c in &cells {
            out.push_str(&format!(
                " {} |",
                c.as_ref().map_or("–".to_string(), |c| c.1.clone())
            ));
        }
        let cd = cells[0].as_ref().map(|c| c.0);
        for c in cells.iter().skip(1) {
            let ratio = match (cd, c.as_ref().map(|c| c.0)) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.3}", a / b),
                _ => "–".into(),
            };
            out.push_str(&format!(" {ratio} |"));
        }
        let met = match (&row.target, cd) {
            (Target::AtMost(t), Some(v)) => {
                if v <= *t + 1e-9 {
                    "yes"
                } else {
                    "**no**"
                }
            }
            (Target::AtLeastPeer(p), Some(v)) => match r.median(&peer_key(row.key, *p), *p) {
                Some(peer_v) if v >= peer_v => "yes",
                Some(_) => "**no**",
                None => "?",
            },
            _ => "",
        };
        out.push_str(&format!(" {met} |\n"));
    }
    out
}

fn results_json(r: &Results, opts: &Opts, machine: &Value) -> Value {
    let mut rows = Vec::new();
    for row in ROWS {
        let mut vals = serde_json::Map::new();
        for p in PEERS {
            if let Some(v) = r.values.get(&peer_key(row.key, p)).and_then(|m| m.get(&p)) {
                if !v.is_empty() {
                    vals.insert(
                        p.key().into(),
                        json!({"median": percentile(v, 0.5), "min": percentile(v, 0.0),
                               "max": percentile(v, 1.0), "runs": v}),
                    );
                }
            }
        }
        rows.push(json!({"key": row.key, "label": row.label, "values": vals}));
    }
    json!({"machine": machine, "runs": opts.runs, "rows": rows, "notes": r.notes})
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Memory, idle cost, control round trip and restart latency with 10 instances, one run.
/// The peers run side by side during the idle window (each idle daemon's own counters are
/// read, so they do not disturb one another), then one after the other for the active parts.
fn sessions_10(env: &Env, opts: &Opts, peers: &[Peer], run: usize, r: &mut Results) {
    let n = 10;
    let mut sessions = Vec::new();
    for &peer in peers {
        let started = Session::start(env, peer, n, &format!("10-{run}"))
            .and_then(|mut s| s.wait_started(n, Duration::from_secs(60)).map(|_| s));
        match started {
            Ok(s) => sessions.push(s),
            Err(e) => r.fail(peer, "start with 10 instances", e),
        }
    }
    sleep(Duration::from_secs(if opts.quick { 1 } else { 2 }));
    if opts.wants("mem") {
        for s in &sessions {
            match memory_kib(s.daemon.pid) {
                Some((rss, pss)) => {
                    r.add("rss10", s.peer, rss / 1024.0);
                    r.add("pss10", s.peer, pss / 1024.0);
                }
                None => r.fail(s.peer, "memory", "cannot read smaps_rollup".into()),
            }
        }
    }
    if opts.wants("idle") {
        let before: Vec<_> = sessions
            .iter()
            .map(|s| (cpu_ms(s.daemon.pid), thread_counters(s.daemon.pid)))
            .collect();
        sleep(Duration::from_secs(opts.idle_secs));
        let scale = 30.0 / opts.idle_secs as f64;
        for (s, b) in sessions.iter().zip(before) {
            let a = (cpu_ms(s.daemon.pid), thread_counters(s.daemon.pid));
            match (b, a) {
                ((Some(c0), Some((w0, s0))), (Some(c1), Some((w1, s1)))) => {
                    r.add("idle_cpu", s.peer, (c1 - c0) * scale);
                    r.add("idle_csw", s.peer, (w1 - w0).max(0.0) * scale);
                    r.add("idle_sched", s.peer, (s1 - s0) / 1e6 * scale);
                }
                _ => r.fail(s.peer, "idle", "the daemon disappeared".into()),
            }
        }
    }
    for mut s in sessions {
        let peer = s.peer;
        if opts.wants("ctl") {
            match control_rtt(&s, if opts.quick { 5 } else { 20 }) {
                Ok(v) => r.add("ctl10", peer, v),
                Err(e) => r.fail(peer, "control round trip", e),
            }
        }
        if opts.wants("restart") {
            match restart_latencies(&mut s, n, opts.kills) {
                Ok(lat) => {
                    r.add("restart_p50", peer, percentile(&lat, 0.5));
                    r.add("restart_p90", peer, percentile(&lat, 0.9));
                }
                Err(e) => r.fail(peer, "restart latency", e),
            }
        }
        s.stop();
    }
    // The floor in the same run, right after the supervisors: this VM's restart cost moves
    // by a third from one minute to the next, so only a ratio within one run means anything.
    if opts.wants("restart") {
        if let Some(floor) = &env.floor {
            match floor_latencies(env, floor, opts.kills) {
                Ok(lat) => {
                    let p50 = percentile(&lat, 0.5);
                    r.add("floor_p50", Peer::Clusterd, p50);
                    let clusterd = r
                        .values
                        .get("restart_p50")
                        .and_then(|v| v.get(&Peer::Clusterd))
                        .and_then(|v| v.last().copied());
                    if let Some(c) = clusterd {
                        r.add("restart_vs_floor", Peer::Clusterd, c / p50);
                    }
                }
                Err(e) => r.notes.push(format!("restart floor: {e}")),
            }
        }
    }
}

/// Median wall time (ms) of the control command.
fn control_rtt(s: &Session, reps: usize) -> Result<f64, String> {
    let mut times = Vec::new();
    // One untimed call: page cache, lazy daemon state.
    let _ = run_timeout(&mut (s.ctl)(), Duration::from_secs(60));
    for _ in 0..reps {
        let mut c = (s.ctl)();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t = Instant::now();
        let st = c.status().map_err(|e| format!("control command: {e}"))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // supervisorctl exits 3 when a process is not RUNNING; only clusterctl must succeed.
        if s.peer == Peer::Clusterd && !st.success() {
            return Err(format!("clusterctl status failed: {st}"));
        }
        times.push(ms);
    }
    Ok(percentile(&times, 0.5))
}

/// SIGKILL one instance at a time; latency = replacement's own start stamp − time of the kill.
fn restart_latencies(s: &mut Session, n: usize, kills: usize) -> Result<Vec<f64>, String> {
    s.stamps.poll();
    let mut live: Vec<i32> = s.stamps.pids().into_iter().take(n).collect();
    let mut out = Vec::new();
    for i in 0..kills {
        let victim = live[i % live.len()];
        let before = s.stamps.all.len();
        let t0 = realtime_ns();
        kill(victim, libc::SIGKILL);
        let ok = wait_for(Duration::from_secs(10), Duration::from_micros(200), || {
            s.stamps.poll();
            s.stamps.all.len() > before
        });
        if !ok {
            return Err(format!(
                "{}: no replacement for pid {victim} within 10 s",
                s.peer.name()
            ));
        }
        let (pid, t) = s.stamps.all[before];
        out.push((t - t0) as f64 / 1e6);
        let slot = i % live.len();
        live[slot] = pid;
        sleep(Duration::from_millis(50));
    }
    Ok(out)
}

/// Start with `mass` instances: time to the last start, memory, control round trip.
fn session_mass(
    env: &Env,
    opts: &Opts,
    peer: Peer,
    run: usize,
    r: &mut Results,
) -> Result<(), String> {
    let n = opts.mass;
    let mut s = Session::start(env, peer, n, &format!("mass-{run}"))?;
    let secs = s.wait_started(n, Duration::from_secs(180))?;
    r.add("mass", peer, secs);
    sleep(Duration::from_secs(if opts.quick { 1 } else { 3 }));
    if let Some((rss, pss)) = memory_kib(s.daemon.pid) {
        r.add("rss1000", peer, rss / 1024.0);
        r.add("pss1000", peer, pss / 1024.0);
    }
    if opts.wants("ctl") {
        r.add(
            "ctl1000",
            peer,
            control_rtt(&s, if opts.quick { 3 } else { 5 })?,
        );
    }
    s.stop();
    Ok(())
}

const APP_JS: &str = r#"'use strict';
// Hello-world HTTP server. Under clusterd it serves the inherited fd 3 (LISTEN_FDS) and says
// ready over the worker channel; elsewhere it listens on $PORT (PM2 / Node cluster mode).
const http = require('http');
const net = require('net');
let closing = false;
const server = http.createServer((req, res) => {
  if (closing) res.setHeader('Connection', 'close');
  res.end('hello world\n');
});
const where = process.env.LISTEN_FDS ? { fd: 3 } : { port: +process.env.PORT, host: '127.0.0.1' };
server.listen(where, () => {
  if (process.env.CLUSTERD_UNIT && process.send) process.send({ act: 'ready' });
});
// Graceful stop: stop accepting, answer every request still arriving on open keep-alive
// connections with "Connection: close", exit once they are all closed (at most 4 s).
// net.Server.close (not http's) so that idle keep-alive connections are not cut mid-race.
function stop() {
  if (closing) return;
  closing = true;
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => process.exit(0), 4000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Never outlive the supervisor that started us.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(1); }, 1000).unref();
"#;

const CLUSTER_JS: &str = r#"'use strict';
// Node's own cluster module: a primary forking 2 workers of the same app (round-robin).
const cluster = require('cluster');
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('exit', (w, code, sig) => { if (!process.exitCode) cluster.fork(); });
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) process.exit(1); }, 1000).unref();
} else {
  require('./app.js');
}
"#;

/// An HTTP server under some supervisor, 2 instances on one port.
struct HttpSetup {
    _daemon: Daemon,
    port: u16,
    /// Replaces every instance without downtime; returns when done.
    reload: Option<Box<dyn Fn() -> Command>>,
    /// Pids of the serving instances (to check that a reload replaced them).
    pids: Box<dyn Fn() -> Vec<i64>>,
}

fn start_http(env: &Env, kind: &str, tag: &str) -> Result<HttpSetup, String> {
    let node = env.node.clone().ok_or("node not found")?;
    let dir = env.tmp.join(format!("http-{kind}-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let app = dir.join("app.js");
    fs::write(&app, APP_JS).map_err(|e| e.to_string())?;
    fs::write(dir.join("cluster.js"), CLUSTER_JS).map_err(|e| e.to_string())?;
    let port = free_port();
    let setup = match kind {
        "shared" | "reuseport" | "node_rr" | "node_shared" => {
            let units = dir.join("units");
            fs::create_dir_all(&units).map_err(|e| e.to_string())?;
            let command = json!([node.display().to_string(), app.display().to_string()]);
            let unit = match kind {
                // The unchanged app calls listen(PORT); clusterd is its cluster primary. The
                // app shuts down gracefully on SIGTERM itself (as PM2 expects of it), so it is
                // stopped with its signal rather than Node's `disconnect`.
                "node_rr" | "node_shared" => format!(
                    "command = {command}\ninstances = 2\nnode_cluster = \"{}\"\n\
                     node_cluster_stop = \"signal\"\n\
                     environment = {{ PORT = \"{port}\" }}\nready_timeout = \"10s\"\n\
                     kill_timeout = \"5s\"\n",
                    if kind == "node_rr" {
                        "round-robin"
                    } else {
                        "shared"
                    }
                ),
                // The app serves the socket clusterd passes as fd 3.
                _ => format!(
                    "command = {command}\ninstances = 2\nlisten = [\"tcp://127.0.0.1:{port}\"]\n\
                     balance = \"{kind}\"\nready = \"notify\"\nready_timeout = \"10s\"\n\
                     kill_timeout = \"5s\"\n"
                ),
            };
            fs::write(units.join("web.toml"), unit).map_err(|e| e.to_string())?;
            let socket = dir.join("clusterd.sock");
            let daemon = launch_clusterd(env, &units, &socket, &dir)?;
            let ctl = env.clusterctl.clone();
            let ctl2 = ctl.clone();
            let sock2 = socket.clone();
            HttpSetup {
                _daemon: daemon,
                port,
                reload: Some(Box::new(move || {
                    let mut c = Command::new(&ctl);
                    c.arg("--socket").arg(&socket).arg("reload").arg("web");
                    c
                })),
                pids: Box::new(move || {
                    let mut c = Command::new(&ctl2);
                    c.arg("--socket").arg(&sock2).args(["status", "--json"]);
                    let v: Value = run_timeout(&mut c, Duration::from_secs(10))
                        .ok()
                        .and_then(|o| serde_json::from_str(&o.stdout).ok())
                        .unwrap_or(Value::Null);
                    v["units"][0]["instances"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|i| i["pid"].as_i64()).collect())
                        .unwrap_or_default()
                }),
            }
        }
        "node" => {
            let child = Command::new(&node)
                .arg(dir.join("cluster.js"))
                .env("PORT", port.to_string())
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start node: {e}"))?;
            HttpSetup {
                _daemon: Daemon::from_child(child),
                port,
                reload: None,
                pids: Box::new(Vec::new),
            }
        }
        "pm2" => {
            let appj = json!({
                "name": "web",
                "script": app.display().to_string(),
                "instances": 2,
                "exec_mode": "cluster",
                "env": { "PORT": port.to_string() },
                "out_file": "/dev/null",
                "error_file": "/dev/null",
                "autorestart": true,
                "restart_delay": 0,
                "max_restarts": 1_000_000,
                "min_uptime": 100,
            });
            let (daemon, _) = start_pm2_app(env, &dir, appj)?;
            let home = dir.join("pm2home");
            let home2 = home.clone();
            let pm2 = env.pm2.clone();
            let node_dir = node.parent().map(Path::to_path_buf);
            let base = move |home: &Path| {
                let mut c = Command::new(pm2.as_ref().expect("pm2"));
                c.env("PM2_HOME", home);
                if let Some(d) = &node_dir {
                    let path = std::env::var("PATH").unwrap_or_default();
                    c.env("PATH", format!("{}:{path}", d.display()));
                }
                c
            };
            let base2 = base.clone();
            HttpSetup {
                _daemon: daemon,
                port,
                reload: Some(Box::new(move || {
                    let mut c = base(&home);
                    c.args(["reload", "web"]);
                    c
                })),
                pids: Box::new(move || {
                    let mut c = base2(&home2);
                    c.arg("jlist");
                    let v: Value = run_timeout(&mut c, Duration::from_secs(30))
                        .ok()
                        .and_then(|o| serde_json::from_str(o.stdout.trim()).ok())
                        .unwrap_or(Value::Null);
                    v.as_array()
                        .map(|a| a.iter().filter_map(|i| i["pid"].as_i64()).collect())
                        .unwrap_or_default()
                }),
            }
        }
        _ => return Err(format!("unknown kind {kind}")),
    };
    if !wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
        http_ok(port)
    }) {
        return Err(format!(
            "{kind}: the HTTP server did not answer on port {port}"
        ));
    }
    // Both instances listening (and PM2's/Node's cluster primaries settled).
    sleep(Duration::from_millis(500));
    Ok(setup)
}

struct WrkResult {
    rps: f64,
    requests: f64,
    failed: f64,
}

fn wrk_args(env: &Env, port: u16, secs: u64) -> Result<Command, String> {
    let mut c = Command::new(env.wrk.as_ref().ok_or("wrk not found")?);
    c.args(["-t2", "-c50", &format!("-d{secs}s")])
        .arg(format!("http://127.0.0.1:{port}/"));
    Ok(c)
}

fn parse_wrk(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult {
        rps: f64::NAN,
        requests: 0.0,
        failed: 0.0,
    };
    for l in text.lines() {
        let l = l.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.failed += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            for part in v.split(',') {
                r.failed += part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        } else if l.contains(" requests in ") {
            r.requests = l
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
        }
    }
    if r.rps.is_nan() {
        return Err(format!("cannot parse wrk output: {text}"));
    }
    Ok(r)
}

fn http_throughput(env: &Env, opts: &Opts, kind: &str, run: usize) -> Result<f64, String> {
    let setup = start_http(env, kind, &format!("tp{run}"))?;
    // Warm-up (JIT, connection pools), not measured.
    run_timeout(&mut wrk_args(env, setup.port, 1)?, Duration::from_secs(30))?;
    let out = run_timeout(
        &mut wrk_args(env, setup.port, opts.wrk_secs)?,
        Duration::from_secs(opts.wrk_secs + 30),
    )?;
    let w = parse_wrk(&out.stdout)?;
    if w.failed > 0.0 {
        eprintln!(
            "supervisors: {kind}: {} failed requests in the throughput run",
            w.failed
        );
    }
    drop(setup);
    Ok(w.rps)
}

/// Two reloads under `wrk` load; returns (failed requests, mean seconds per reload).
fn reload_under_load(env: &Env, kind: &str, run: usize) -> Result<(f64, f64), String> {
    let setup = start_http(env, kind, &format!("rl{run}"))?;
    run_timeout(&mut wrk_args(env, setup.port, 2)?, Duration::from_secs(30))?;
    let reload = setup.reload.as_ref().ok_or("no reload command")?;
    let total = 10;
    let mut wrk = wrk_args(env, setup.port, total)?;
    let wrk_child = wrk
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("wrk: {e}"))?;
    let t0 = Instant::now();
    let mut durations = Vec::new();
    let mut error = None;
    for at in [2u64, 5] {
        let wait = Duration::from_secs(at).saturating_sub(t0.elapsed());
        sleep(wait);
        let before = (setup.pids)();
        let t = Instant::now();
        match run_timeout(&mut reload(), Duration::from_secs(60)) {
            Ok(o) if o.ok => durations.push(t.elapsed().as_secs_f64()),
            Ok(o) => {
                error = Some(format!(
                    "reload failed: {}{}",
                    o.stdout.trim(),
                    o.stderr.trim()
                ));
                break;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        let after = (setup.pids)();
        if before.iter().any(|p| after.contains(p)) || after.is_empty() {
            error = Some(format!(
                "reload did not replace the instances: {before:?} → {after:?}"
            ));
        }
    }
    let out = wrk_child
        .wait_with_output()
        .map_err(|e| format!("wrk: {e}"))?;
    if t0.elapsed() > Duration::from_secs(total + 5) {
        eprintln!("supervisors: {kind}: the reloads outlasted the load");
    }
    drop(setup);
    if let Some(e) = error {
        return Err(e);
    }
    let w = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    Ok((w.failed, mean))
}

// ---------------------------------------------------------------------------------------------
// Installation of the peers

fn install_pm2(scratch: &Path) -> Result<PathBuf, String> {
    let bin = scratch.join("npm/node_modules/pm2/bin/pm2");
    if bin.is_file() {
        return Ok(bin);
    }
    which("npm").ok_or("npm not found")?;
    eprintln!(
        "supervisors: installing PM2 with npm into {} ...",
        scratch.display()
    );
    let out = run_timeout(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(scratch.join("npm"))
            .arg("pm2"),
        Duration::from_secs(600),
    )?;
    if !out.ok || !bin.is_file() {
        return Err(format!("npm install pm2 failed: {}", out.stderr.trim()));
    }
    Ok(bin)
}

fn install_venv(scratch: &Path, package: &str, probe: &str) -> Result<PathBuf, String> {
    let venv = scratch.join("venv");
    let py = venv.join("bin/python3");
    if !py.is_file() {
        eprintln!(
            "supervisors: creating a Python venv in {} ...",
            venv.display()
        );
        let out = run_timeout(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            Duration::from_secs(300),
        )?;
        if !out.ok {
            return Err(format!("python3 -m venv failed: {}", out.stderr.trim()));
        }
    }
    let have = Command::new(&py)
        .args(["-c", &format!("import {probe}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("supervisors: pip install {package} ...");
        let out = run_timeout(
            Command::new(venv.join("bin/pip")).args(["install", "-q", package]),
            Duration::from_secs(600),
        )?;
        if !out.ok {
            return Err(format!(
                "pip install {package} failed: {}",
                out.stderr.trim()
            ));
        }
    }
    Ok(py)
}

fn version(cmd: &mut Command) -> String {
    run_timeout(cmd, Duration::from_secs(60))
        .map(|o| {
            format!("{}{}", o.stdout, o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn machine_info(env: &Env) -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut m = json!({"nproc": nproc, "kernel": kernel, "cpu": cpu});
    if let Some(node) = &env.node {
        m["node"] = json!(version(Command::new(node).arg("--version")));
    }
    if env.pm2.is_some() {
        // Not `pm2 --version`: that starts a daemon.
        let pkg = env
            .pm2
            .as_ref()
            .and_then(|p| p.parent()?.parent().map(|d| d.join("package.json")));
        let v: Value = pkg
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        m["pm2"] = v["version"].clone();
    }
    if let Some(sd) = &env.supervisord {
        m["supervisord"] = json!(version(Command::new(sd).arg("--version")));
    }
    if let Some(w) = &env.wrk {
        m["wrk"] = json!(version(Command::new(w).arg("-v")));
    }
    m
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    install_hygiene();
    let _sweep = SweepOnDrop;
    let mut opts = Opts::parse();
    let tmp = match tempfile::Builder::new()
        .prefix("cdbench")
        .tempdir_in("/tmp")
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("supervisors: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = fs::create_dir_all(&opts.scratch);
    let worker = match build_worker(&opts.scratch) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("supervisors: cannot build the worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let floor = build_floor(&opts.scratch, &worker);
    let mut env = Env {
        tmp: tmp.path().to_path_buf(),
        worker,
        floor,
        clusterd: PathBuf::from(env!("CARGO_BIN_EXE_clusterd")),
        clusterctl: PathBuf::from(env!("CARGO_BIN_EXE_clusterctl")),
        node: which("node"),
        pm2: None,
        supervisord: None,
        wrk: which("wrk"),
    };
    let mut results = Results::default();
    if opts.peer_on(Peer::Pm2) {
        if env.node.is_none() {
            opts.skip.insert("pm2".into());
            results.notes.push("PM2 skipped: node not found".into());
        } else {
            match install_pm2(&opts.scratch) {
                Ok(p) => env.pm2 = Some(p),
                Err(e) => {
                    eprintln!("supervisors: skipping PM2: {e}");
                    results.notes.push(format!("PM2 skipped: {e}"));
                    opts.skip.insert("pm2".into());
                }
            }
        }
    }
    if opts.peer_on(Peer::Supervisord) {
        match install_venv(&opts.scratch, "supervisor", "supervisor") {
            Ok(py) => env.supervisord = Some(py.with_file_name("supervisord")),
            Err(e) => {
                eprintln!("supervisors: skipping supervisord: {e}");
                results.notes.push(format!("supervisord skipped: {e}"));
                opts.skip.insert("supervisord".into());
            }
        }
    }
    if opts.peer_on(Peer::NodeCluster) && env.node.is_none() {
        opts.skip.insert("node".into());
        results
            .notes
            .push("Node cluster skipped: node not found".into());
    }
    let http_wanted = opts.wants("http") || opts.wants("reload");
    if http_wanted && (env.wrk.is_none() || env.node.is_none()) {
        let msg = "HTTP metrics skipped: they need wrk (apt-get install wrk) and node";
        eprintln!("supervisors: {msg}");
        results.notes.push(msg.into());
    }
    let machine = machine_info(&env);
    eprintln!("supervisors: machine {machine}");
    let started = Instant::now();

    let sup_peers: Vec<Peer> = [Peer::Clusterd, Peer::Pm2, Peer::Supervisord]
        .into_iter()
        .filter(|&p| opts.peer_on(p))
        .collect();
    if ["mem", "idle", "ctl", "restart"]
        .iter()
        .any(|m| opts.wants(m))
    {
        for run in 0..opts.runs {
            eprintln!(
                "supervisors: [{:>4.0}s] 10 instances under {}, run {}",
                started.elapsed().as_secs_f64(),
                sup_peers
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                run + 1
            );
            sessions_10(&env, &opts, &sup_peers, run, &mut results);
            sweep_descendants();
        }
    }
    if opts.wants("mass") || opts.wants("mem") {
        for run in 0..opts.runs {
            for &p in &sup_peers {
                eprintln!(
                    "supervisors: [{:>4.0}s] {} with {} instances, run {}",
                    started.elapsed().as_secs_f64(),
                    p.name(),
                    opts.mass,
                    run + 1
                );
                if let Err(e) = session_mass(&env, &opts, p, run, &mut results) {
                    results.fail(p, "mass start", e);
                }
                sweep_descendants();
            }
        }
    }
    if env.wrk.is_some() && env.node.is_some() {
        let mut kinds: Vec<(&str, Peer, &str)> = vec![
            ("shared", Peer::Clusterd, "http_shared"),
            ("reuseport", Peer::Clusterd, "http_reuseport"),
            ("node_rr", Peer::Clusterd, "http_node_rr"),
            ("node_shared", Peer::Clusterd, "http_node_shared"),
        ];
        if opts.peer_on(Peer::NodeCluster) {
            kinds.push(("node", Peer::NodeCluster, "http"));
        }
        if opts.peer_on(Peer::Pm2) {
            kinds.push(("pm2", Peer::Pm2, "http"));
        }
        if opts.wants("http") {
            for run in 0..opts.runs {
                for &(kind, peer, key) in &kinds {
                    eprintln!(
                        "supervisors: [{:>4.0}s] HTTP throughput, {kind}, run {}",
                        started.elapsed().as_secs_f64(),
                        run + 1
                    );
                    match http_throughput(&env, &opts, kind, run) {
                        Ok(v) => results.add(key, peer, v),
                        Err(e) => results.fail(peer, &format!("HTTP throughput ({kind})"), e),
                    }
                    sweep_descendants();
                }
            }
        }
        if opts.wants("reload") {
            for run in 0..opts.runs {
                for &(kind, peer, _) in kinds.iter().filter(|k| k.0 != "node") {
                    eprintln!(
                        "supervisors: [{:>4.0}s] reloads under load, {kind}, run {}",
                        started.elapsed().as_secs_f64(),
                        run + 1
                    );
                    let suffix = if peer == Peer::Clusterd {
                        format!("_{kind}")
                    } else {
                        String::new()
                    };
                    match reload_under_load(&env, kind, run) {
                        Ok((failed, secs)) => {
                            results.add(&format!("reload_fail{suffix}"), peer, failed);
                            results.add(&format!("reload_secs{suffix}"), peer, secs);
                        }
                        Err(e) => results.fail(peer, &format!("reload ({kind})"), e),
                    }
                    sweep_descendants();
                }
            }
        }
    }
    sweep_descendants();

    let table = render_table(&results, &opts);
    println!();
    println!(
        "clusterd vs peers — {} run(s) per cell, median [min–max]; machine: {} CPU(s), {}, kernel {}; {:.0} s total",
        opts.runs,
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    println!();
    print!("{table}");
    if opts.mass != 1000 {
        println!(
            "\nnote: the \"1000 instances\" rows ran {} instances",
            opts.mass
        );
    }
    for n in &results.notes {
        println!("\nnote: {n}");
    }
    let data = results_json(&results, &opts, &machine);
    if let Some(path) = &opts.json {
        if let Err(e) = fs::write(
            path,
            serde_json::to_string_pretty(&data).unwrap_or_default(),
        ) {
            eprintln!("supervisors: cannot write {}: {e}", path.display());
        }
    }
    if let Some(png) = &opts.chart {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/supervisors_chart.py");
        let data_path = env.tmp.join("results.json");
        let drawn = fs::write(&data_path, data.to_string())
            .map_err(|e| e.to_string())
            .and_then(|_| install_venv(&opts.scratch, "matplotlib", "matplotlib"))
            .and_then(|py| {
                run_timeout(
                    Command::new(py).arg(&script).arg(&data_path).arg(png),
                    Duration::from_secs(120),
                )
            });
        match drawn {
            Ok(o) if o.ok => eprintln!("supervisors: chart written to {}", png.display()),
            Ok(o) => eprintln!("supervisors: chart failed: {}", o.stderr.trim()),
            Err(e) => eprintln!("supervisors: chart failed: {e}"),
        }
    }
    if results.clusterd_failed {
        eprintln!("supervisors: clusterd failed a measurement");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
