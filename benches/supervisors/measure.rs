//! The measurements: memory, idle cost, control round trip, restarts, mass start, HTTP, reloads.

use super::*;

/// Memory, idle cost, control round trip and restart latency with 10 instances, one run.
/// The peers run side by side during the idle window (each idle daemon's own counters are
/// read, so they do not disturb one another), then one after the other for the active parts.
pub(super) fn sessions_10(env: &Env, opts: &Opts, peers: &[Peer], run: usize, r: &mut Results) {
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
    // The floors in the same run, right after the supervisors: this VM's restart cost moves
    // by a third from one minute to the next, so only a ratio within one run means anything.
    if opts.wants("restart") {
        if let Some(floor) = &env.floor {
            let lat = floor_latencies(env, floor, opts.kills);
            add_floor(r, lat, "floor_p50", "restart_vs_floor", "restart floor");
        }
        if let Some(program) = &env.floor_supervisor {
            let floor = FloorSupervisor::Minimal(program);
            let lat = floor_supervisor_latencies(env, &floor, n, opts.kills);
            add_floor(
                r,
                lat,
                "floor_supervisor_p50",
                "restart_vs_floor_supervisor",
                "restart floor supervisor",
            );
        }
        // What clusterd's cgroup, captured output and channel per instance cost a C
        // supervisor, in the same run.
        if let Some((program, cgroup_base)) = &env.featured_floor {
            let floor = FloorSupervisor::Featured {
                program,
                cgroup_base,
            };
            let lat = floor_supervisor_latencies(env, &floor, n, opts.kills);
            add_floor(
                r,
                lat,
                "featured_floor_p50",
                "restart_vs_featured_floor",
                "restart floor supervisor with cgroups, pipes and channels",
            );
        }
    }
}

/// Records a floor's p50 under `key` and clusterd's p50 of this run over it under `ratio_key`.
fn add_floor(
    r: &mut Results,
    latencies: Result<Vec<f64>, String>,
    key: &str,
    ratio_key: &str,
    what: &str,
) {
    let lat = match latencies {
        Ok(lat) => lat,
        Err(e) => return r.notes.push(format!("{what}: {e}")),
    };
    let p50 = percentile(&lat, 0.5);
    r.add(key, Peer::Clusterd, p50);
    let clusterd = r
        .values
        .get("restart_p50")
        .and_then(|v| v.get(&Peer::Clusterd))
        .and_then(|v| v.last().copied());
    if let Some(c) = clusterd {
        r.add(ratio_key, Peer::Clusterd, c / p50);
    }
}

/// Median wall time (ms) of the control command.
pub(super) fn control_rtt(s: &Session, reps: usize) -> Result<f64, String> {
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
pub(super) fn restart_latencies(
    s: &mut Session,
    n: usize,
    kills: usize,
) -> Result<Vec<f64>, String> {
    kill_and_time(&mut s.stamps, s.peer.name(), n, kills)
}

/// The same for a C floor supervisor in a process of its own, started here with `n` workers.
pub(super) fn floor_supervisor_latencies(
    env: &Env,
    floor: &FloorSupervisor,
    n: usize,
    kills: usize,
) -> Result<Vec<f64>, String> {
    let (mut stamps, mut daemon, _) = start_floor_supervisor(env, floor, "restart", n)?;
    let latencies = if stamps.wait_count(n, Duration::from_secs(10)) {
        kill_and_time(&mut stamps, floor.name(), n, kills)
    } else {
        Err(format!("{} did not start its workers", floor.name()))
    };
    daemon.extra = stamps.pids();
    daemon.terminate(Duration::from_secs(5));
    drop(daemon);
    floor.clean_up("restart");
    latencies
}

/// A C floor supervisor: the minimal one, or the one that gives each worker a cgroup, output
/// pipes and a channel (and makes its cgroups under the bench's own).
pub(super) enum FloorSupervisor<'a> {
    Minimal(&'a Path),
    Featured {
        program: &'a Path,
        cgroup_base: &'a Path,
    },
}

impl FloorSupervisor<'_> {
    fn name(&self) -> &'static str {
        match self {
            FloorSupervisor::Minimal(_) => "C floor supervisor",
            FloorSupervisor::Featured { .. } => "C supervisor with cgroups, pipes and channels",
        }
    }

    /// The cgroup directory of the run called `tag`.
    fn cgroup(&self, tag: &str) -> Option<PathBuf> {
        match self {
            FloorSupervisor::Minimal(_) => None,
            FloorSupervisor::Featured { cgroup_base, .. } => {
                Some(cgroup_base.join(format!("clusterd-bench-floor.{}.{tag}", std::process::id())))
            }
        }
    }

    /// After the supervisor of the run called `tag` stopped: its cgroups, if any are left.
    fn clean_up(&self, tag: &str) {
        if let Some(dir) = self.cgroup(tag) {
            remove_cgroup_tree(&dir);
        }
    }
}

/// A C floor supervisor started with `n` stamp workers in a fresh `env.tmp/DIR`: their
/// stamps, the supervisor, and the time just before it was started.
fn start_floor_supervisor(
    env: &Env,
    floor: &FloorSupervisor,
    tag: &str,
    n: usize,
) -> Result<(Stamps, Daemon, i64), String> {
    let dir = env.tmp.join(match floor {
        FloorSupervisor::Minimal(_) => format!("floor-supervisor-{tag}"),
        FloorSupervisor::Featured { .. } => format!("featured-floor-{tag}"),
    });
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stamps = Stamps::new(dir.join("stamps"));
    let program = match floor {
        FloorSupervisor::Minimal(program) | FloorSupervisor::Featured { program, .. } => program,
    };
    let mut command = Command::new(program);
    command
        .arg(&env.worker[0])
        .arg(&stamps.path)
        .arg(n.to_string());
    if let Some(cgroup) = floor.cgroup(tag) {
        command.arg(cgroup);
    }
    let t0 = realtime_ns();
    let child = command
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the {}: {e}", floor.name()))?;
    let daemon = Daemon::from_child(child);
    Ok((stamps, daemon, t0))
}

fn kill_and_time(
    stamps: &mut Stamps,
    name: &str,
    n: usize,
    kills: usize,
) -> Result<Vec<f64>, String> {
    stamps.poll();
    let mut live: Vec<i32> = stamps.pids().into_iter().take(n).collect();
    let mut out = Vec::new();
    for i in 0..kills {
        let victim = live[i % live.len()];
        let before = stamps.all.len();
        let t0 = realtime_ns();
        kill(victim, libc::SIGKILL);
        let ok = wait_for(Duration::from_secs(10), Duration::from_micros(200), || {
            stamps.poll();
            stamps.all.len() > before
        });
        if !ok {
            return Err(format!(
                "{name}: no replacement for pid {victim} within 10 s"
            ));
        }
        let (pid, t) = stamps.all[before];
        out.push((t - t0) as f64 / 1e6);
        let slot = i % live.len();
        live[slot] = pid;
        sleep(Duration::from_millis(50));
    }
    Ok(out)
}

/// Start with `mass` instances: time to the last start, memory, control round trip.
pub(super) fn session_mass(
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
    // The floors in the same run, right after: the minimal C supervisor starting the same
    // workers (fork and exec in a loop), then the one giving each a cgroup, output pipes and a
    // channel, timed the same way. A start of 1000 moves with this VM's load from one minute
    // to the next; the ratio within one run means more.
    if peer == Peer::Clusterd {
        let minimal = env
            .floor_supervisor
            .as_deref()
            .map(FloorSupervisor::Minimal);
        let featured =
            env.featured_floor
                .as_ref()
                .map(|(program, cgroup_base)| FloorSupervisor::Featured {
                    program,
                    cgroup_base,
                });
        let floors = [
            (minimal, "mass_floor", "mass_vs_floor"),
            (featured, "mass_featured_floor", "mass_vs_featured_floor"),
        ];
        for (floor, key, ratio_key) in floors {
            let Some(floor) = floor else { continue };
            sweep_descendants();
            // The kernel frees 1000 exited processes and removed cgroups for a while after
            // (workqueues): not on the floor's time.
            sleep(Duration::from_secs(1));
            match mass_floor(env, &floor, n) {
                Ok(time) => {
                    r.add(key, peer, time);
                    r.add(ratio_key, peer, secs / time);
                }
                Err(e) => r.notes.push(format!("mass start, {}: {e}", floor.name())),
            }
        }
    }
    Ok(())
}

/// Seconds from starting a C floor supervisor with `n` stamp workers to the last stamp.
fn mass_floor(env: &Env, floor: &FloorSupervisor, n: usize) -> Result<f64, String> {
    let (mut stamps, mut daemon, t0) = start_floor_supervisor(env, floor, "mass", n)?;
    let started = stamps.wait_count(n, Duration::from_secs(180));
    daemon.extra = stamps.pids();
    let last = stamps.all.iter().take(n).map(|&(_, t)| t).max();
    daemon.terminate(Duration::from_secs(15));
    drop(daemon);
    floor.clean_up("mass");
    match last {
        Some(last) if started => Ok((last - t0) as f64 / 1e9),
        _ => Err(format!("only {} of {n} workers started", stamps.all.len())),
    }
}

pub(super) const APP_JS: &str = include_str!("workers/app.js");

pub(super) const CLUSTER_JS: &str = include_str!("workers/cluster.js");

/// An HTTP server under some supervisor, 2 instances on one port.
pub(super) struct HttpSetup {
    pub(super) _daemon: Daemon,
    pub(super) port: u16,
    /// Replaces every instance without downtime; returns when done.
    pub(super) reload: Option<Box<dyn Fn() -> Command>>,
    /// Pids of the serving instances (to check that a reload replaced them).
    pub(super) pids: Box<dyn Fn() -> Vec<i64>>,
}

pub(super) fn start_http(env: &Env, kind: &str, tag: &str) -> Result<HttpSetup, String> {
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

pub(super) struct WrkResult {
    pub(super) rps: f64,
    pub(super) requests: f64,
    pub(super) failed: f64,
}

pub(super) fn wrk_args(env: &Env, port: u16, secs: u64) -> Result<Command, String> {
    let mut c = Command::new(env.wrk.as_ref().ok_or("wrk not found")?);
    c.args(["-t2", "-c50", &format!("-d{secs}s")])
        .arg(format!("http://127.0.0.1:{port}/"));
    Ok(c)
}

pub(super) fn parse_wrk(text: &str) -> Result<WrkResult, String> {
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

pub(super) fn http_throughput(
    env: &Env,
    opts: &Opts,
    kind: &str,
    run: usize,
) -> Result<f64, String> {
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
pub(super) fn reload_under_load(env: &Env, kind: &str, run: usize) -> Result<(f64, f64), String> {
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
