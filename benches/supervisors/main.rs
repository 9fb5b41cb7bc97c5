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
//! * `--only mem,idle,restart,mass,ctl,http,reload,logs,memlimit,watch,jobs,python,health,reexec` / `CLUSTERD_BENCH_ONLY`:
//!   pick metrics.
//! * `--skip pm2,supervisord,node` / `CLUSTERD_BENCH_SKIP`: skip peers.
//! * `--idle-secs S`, `--kills K`, `--mass N`, `--wrk-secs S`: sizes (defaults 30, 30, 1000, 10).
//! * `--json PATH`: also write the results as JSON; `--chart PATH`: draw a PNG with
//!   benches/supervisors_chart.py (matplotlib is installed into the scratch venv).
//! * `CLUSTERD_BENCH_SCRATCH`: where the peers are installed (default target/tmp/supervisors-bench).
//! * `CLUSTERD_BENCH_BIN_DIR`: the directory of the `clusterd` and `clusterctl` to measure
//!   (default: the ones built with the bench), to compare two builds with the same bench.
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

mod health;
mod hygiene;
mod install;
mod jobs;
mod logs;
mod measure;
mod memory_limit;
mod options;
mod peers;
mod procfs;
mod python_servers;
mod reexec;
mod results;
mod util;
mod watch;
mod worker;

use health::*;
use hygiene::*;
use install::*;
use jobs::*;
use logs::*;
use measure::*;
use memory_limit::*;
use options::*;
use peers::*;
use procfs::*;
use python_servers::*;
use reexec::*;
use results::*;
use util::*;
use watch::*;
use worker::*;

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
    let mut results = Results::default();
    let env = prepare(&mut opts, tmp.path(), worker, &mut results);
    let machine = machine_info(&env);
    eprintln!("supervisors: machine {machine}");
    let started = Instant::now();
    measure_all(&env, &opts, &mut results, started);
    sweep_descendants();
    report(&env, &opts, &results, &machine, started);
    if results.clusterd_failed {
        eprintln!("supervisors: clusterd failed a measurement");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `name` from `CLUSTERD_BENCH_BIN_DIR` when set (another build of clusterd, for a
/// before/after comparison with the same bench), else the one cargo built with the bench.
fn clusterd_binary(name: &str, built: &str) -> PathBuf {
    std::env::var_os("CLUSTERD_BENCH_BIN_DIR")
        .map(|dir| PathBuf::from(dir).join(name))
        .unwrap_or_else(|| PathBuf::from(built))
}

/// The environment of a run: the C floors, and the peers installed (a peer that cannot be is
/// skipped, with a note).
fn prepare(opts: &mut Opts, tmp: &Path, worker: Vec<String>, results: &mut Results) -> Env {
    let floor = build_floor(&opts.scratch, &worker, "restart_floor", FLOOR_C);
    let floor_supervisor = build_floor(
        &opts.scratch,
        &worker,
        "floor_supervisor",
        FLOOR_SUPERVISOR_C,
    );
    let featured_floor = match floor_cgroup_base() {
        Ok(base) => build_floor(&opts.scratch, &worker, "featured_floor", FEATURED_FLOOR_C)
            .map(|program| (program, base)),
        Err(e) => {
            results.notes.push(format!(
                "the C supervisor with cgroups, pipes and channels: {e}"
            ));
            None
        }
    };
    let mut env = Env {
        tmp: tmp.to_path_buf(),
        worker,
        floor,
        floor_supervisor,
        featured_floor,
        clusterd: clusterd_binary("clusterd", env!("CARGO_BIN_EXE_clusterd")),
        clusterctl: clusterd_binary("clusterctl", env!("CARGO_BIN_EXE_clusterctl")),
        node: which("node"),
        pm2: None,
        supervisord: None,
        wrk: which("wrk"),
    };
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
    env
}

/// `measure` once per run, clusterd alone: a failure is recorded, and whatever a run left
/// is swept before the next.
fn clusterd_runs(
    opts: &Opts,
    started: Instant,
    results: &mut Results,
    what: &str,
    mut measure: impl FnMut(usize, &mut Results) -> Result<(), String>,
) {
    for run in 0..opts.runs {
        eprintln!(
            "supervisors: [{:>4.0}s] {what}, run {}",
            started.elapsed().as_secs_f64(),
            run + 1
        );
        if let Err(e) = measure(run, results) {
            results.fail(Peer::Clusterd, what, e);
        }
        sweep_descendants();
    }
}

/// Every metric asked for, peer after peer, run after run.
fn measure_all(env: &Env, opts: &Opts, results: &mut Results, started: Instant) {
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
            sessions_10(env, opts, &sup_peers, run, results);
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
                if let Err(e) = session_mass(env, opts, p, run, results) {
                    results.fail(p, "mass start", e);
                }
                sweep_descendants();
            }
        }
    }
    if opts.wants("jobs") {
        clusterd_runs(
            opts,
            started,
            results,
            "100 scheduled one-shots, idle",
            |run, results| job_idle_costs(env, opts, run, results),
        );
    }
    if opts.wants("reexec") {
        clusterd_runs(
            opts,
            started,
            results,
            &format!("daemon-reexec with {} instances", opts.mass),
            |run, results| reexec_pause(env, opts, run, results),
        );
    }
    if opts.wants("memlimit") {
        clusterd_runs(
            opts,
            started,
            results,
            "memory limit reaction",
            |run, results| {
                memory_limit_reaction(env, run)
                    .map(|ms| results.add("memlimit", Peer::Clusterd, ms))
            },
        );
    }
    if opts.wants("health") {
        clusterd_runs(
            opts,
            started,
            results,
            "watchdog reaction",
            |run, results| {
                watchdog_reaction(env, run)
                    .map(|ms| results.add("health_watchdog", Peer::Clusterd, ms))
            },
        );
        clusterd_runs(
            opts,
            started,
            results,
            "HTTP check reaction",
            |run, results| {
                http_check_reaction(env, run)
                    .map(|ms| results.add("health_http", Peer::Clusterd, ms))
            },
        );
        clusterd_runs(
            opts,
            started,
            results,
            "200 instances with watchdogs, left alone",
            |run, results| watchdog_idle(env, opts, run, results),
        );
    }
    if opts.wants("watch") {
        clusterd_runs(
            opts,
            started,
            results,
            "200 instances left alone, then watched by top",
            |run, results| watch_costs(env, opts, run, results),
        );
    }
    if opts.wants("python") && env.wrk.is_some() {
        for run in 0..opts.runs {
            for setup in PythonSetup::ALL {
                eprintln!(
                    "supervisors: [{:>4.0}s] Python servers, {}, run {}",
                    started.elapsed().as_secs_f64(),
                    setup.key(),
                    run + 1
                );
                match python_throughput(env, opts, setup, run) {
                    Ok(rps) => results.add(setup.key(), Peer::Clusterd, rps),
                    Err(e) => results.notes.push(format!("{}: {e}", setup.key())),
                }
                sweep_descendants();
            }
            for (ours, theirs, ratio) in [
                ("py_uvicorn_clusterd", "py_uvicorn_own", "py_uvicorn_ratio"),
                (
                    "py_gunicorn_clusterd",
                    "py_gunicorn_own",
                    "py_gunicorn_ratio",
                ),
            ] {
                let last = |key: &str| {
                    results
                        .values
                        .get(key)
                        .and_then(|v| v.get(&Peer::Clusterd))
                        .and_then(|v| v.last().copied())
                };
                if let (Some(a), Some(b)) = (last(ours), last(theirs)) {
                    results.add(ratio, Peer::Clusterd, a / b);
                }
            }
        }
    }
    if opts.wants("logs") {
        for run in 0..opts.runs {
            eprintln!(
                "supervisors: [{:>4.0}s] log capture, 200 MB, run {}",
                started.elapsed().as_secs_f64(),
                run + 1
            );
            log_runs(env, opts, run, results);
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
                    match http_throughput(env, opts, kind, run) {
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
                    match reload_under_load(env, kind, run) {
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
}

/// The table (and, if asked, the JSON and the chart).
fn report(env: &Env, opts: &Opts, results: &Results, machine: &Value, started: Instant) {
    let table = render_table(results, opts);
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
    let data = results_json(results, opts, machine);
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
}
