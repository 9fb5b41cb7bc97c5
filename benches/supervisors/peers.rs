//! The supervisors under test: how each one starts `n` stamp workers (`Session`).

use super::*;

pub(super) struct Env {
    pub(super) tmp: PathBuf,
    pub(super) worker: Vec<String>,
    /// benches/supervisors/workers/restart_floor.c built: the restart floor of this machine.
    pub(super) floor: Option<PathBuf>,
    /// benches/supervisors/workers/floor_supervisor.c built: the same floor, but a process
    /// of its own whose workers the bench kills as it kills every supervisor's.
    pub(super) floor_supervisor: Option<PathBuf>,
    /// benches/supervisors/workers/featured_floor.c built, and the cgroup it makes its
    /// workers' cgroups under: that supervisor giving each worker what clusterd gives each
    /// instance (a cgroup, captured output, a channel).
    pub(super) featured_floor: Option<(PathBuf, PathBuf)>,
    pub(super) clusterd: PathBuf,
    pub(super) clusterctl: PathBuf,
    pub(super) node: Option<PathBuf>,
    pub(super) pm2: Option<PathBuf>,
    pub(super) supervisord: Option<PathBuf>,
    pub(super) wrk: Option<PathBuf>,
}

/// A supervisor running `n` stamp workers.
pub(super) struct Session {
    pub(super) peer: Peer,
    pub(super) daemon: Daemon,
    pub(super) stamps: Stamps,
    /// The control command measured for the round trip.
    pub(super) ctl: Box<dyn Fn() -> Command>,
    pub(super) started_at_ns: i64,
}

impl Session {
    pub(super) fn start(env: &Env, peer: Peer, n: usize, tag: &str) -> Result<Session, String> {
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
    pub(super) fn wait_started(&mut self, n: usize, timeout: Duration) -> Result<f64, String> {
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

    pub(super) fn stop(mut self) {
        self.daemon.extra = self.stamps.pids();
        match self.peer {
            Peer::Clusterd | Peer::Supervisord => {
                self.daemon.terminate(Duration::from_secs(15));
            }
            _ => {}
        }
    }
}

/// `clusterctl --socket SOCKET status --json`, parsed; None if it did not answer.
pub(super) fn status_json(env: &Env, socket: &Path) -> Option<serde_json::Value> {
    Command::new(&env.clusterctl)
        .arg("--socket")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
}

/// Starts clusterd on `units` with its log in `dir`/clusterd.log and its instances' logs in
/// `dir`/logs, in its own process group.
pub(super) fn launch_clusterd(
    env: &Env,
    units: &Path,
    socket: &Path,
    dir: &Path,
) -> Result<Daemon, String> {
    let log = fs::File::create(dir.join("clusterd.log")).map_err(|e| e.to_string())?;
    let child = Command::new(&env.clusterd)
        .arg("--units")
        .arg(units)
        .arg("--socket")
        .arg(socket)
        // The instances' log files stay in the run's directory.
        .arg("--log-dir")
        .arg(dir.join("logs"))
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

pub(super) fn start_clusterd(
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
            // The JSON, with every instance's CPU and memory: what `pm2 jlist` answers.
            c.arg("--socket").arg(&sock).args(["status", "--json"]);
            c
        }),
        started_at_ns: t0,
    })
}

pub(super) fn pm2_command(env: &Env, home: &Path) -> Command {
    pm2_at(
        env.pm2.as_ref().expect("pm2 installed"),
        home,
        env.node.as_ref().and_then(|n| n.parent()),
    )
}

/// `pm2` with its home, and the directory of the node it needs first in PATH.
fn pm2_at(pm2: &Path, home: &Path, node_dir: Option<&Path>) -> Command {
    let mut c = Command::new(pm2);
    c.env("PM2_HOME", home);
    if let Some(dir) = node_dir {
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", dir.display()));
    }
    c
}

/// Starts PM2 (`pm2 start ecosystem.json`) and records the God daemon's pid.
pub(super) fn start_pm2_app(env: &Env, dir: &Path, app: Value) -> Result<(Daemon, i64), String> {
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

pub(super) fn start_pm2(
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
            let mut c = pm2_at(env_pm2.as_ref().expect("pm2"), &home, node_dir.as_deref());
            c.arg("jlist");
            c
        }),
        started_at_ns: t0,
    })
}

pub(super) fn supervisord_conf(dir: &Path, n: usize, argv: &[String]) -> String {
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

pub(super) fn start_supervisord(
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
    let daemon = spawn_supervisord(bin, &conf)?;
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

/// `supervisord -n -c CONF` in its own process group, owned by a guard.
pub(super) fn spawn_supervisord(bin: &Path, conf: &Path) -> Result<Daemon, String> {
    let child = Command::new(bin)
        .arg("-n")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start supervisord: {e}"))?;
    Ok(Daemon::from_child(child))
}
