//! The log capture benchmark: one instance writes 200 MB of 100-byte lines as fast as it can
//! (`workers/log_writer.c`), and each supervisor writes them to its log file — clusterd
//! with timestamps, instance and stream on every line (and once more with `timestamps =
//! false`: instance and stream only), PM2 with `time: true`, supervisord without timestamps
//! (it has none) — next to `writer | cat > file` in the same run, each as a ratio to it. Measured
//! from the moment the writer is let go until `done` is the last line of the file: MB/s of
//! the writer's output, the daemon's CPU time (and `cat`'s: the kernel's own price for the
//! bytes), and its RSS growth. Then, clusterd only: how
//! long a line takes to reach `clusterctl logs --follow`.

use super::*;

/// Bytes the writer writes.
const TOTAL: u64 = 200_000_000;
const WRITER_C: &str = include_str!("workers/log_writer.c");

pub(super) fn build_log_writer(scratch: &Path) -> Option<PathBuf> {
    let src = scratch.join("log_writer.c");
    let bin = scratch.join("log_writer");
    fs::write(&src, WRITER_C).ok()?;
    Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then_some(bin)
}

/// How one supervisor's burst is measured.
type MeasureBurst = fn(&Env, &Path, usize) -> Result<Burst, String>;

/// One measurement: MB/s, the daemon's (or `cat`'s) CPU ms, its RSS growth MiB.
struct Burst {
    mb_per_s: f64,
    cpu_ms: Option<f64>,
    rss_growth_mib: Option<f64>,
}

/// Lets the writer go (creates `go`) and waits until `file` ends with `done`. The page cache
/// is written back first, so that no run pays for the previous one's writeback.
fn burst(go: &Path, file: &Path, daemon_pid: Option<i32>) -> Result<Burst, String> {
    let _ = Command::new("sync").status();
    let cpu0 = daemon_pid.and_then(run_ms);
    let rss0 = daemon_pid.and_then(rss_kib);
    let t0 = Instant::now();
    fs::write(go, "").map_err(|e| e.to_string())?;
    let done = wait_for(Duration::from_secs(120), Duration::from_millis(1), || {
        ends_with_done(file)
    });
    let elapsed = t0.elapsed().as_secs_f64();
    if !done {
        return Err(format!("{} never ended with `done`", file.display()));
    }
    Ok(Burst {
        mb_per_s: TOTAL as f64 / 1e6 / elapsed,
        cpu_ms: daemon_pid
            .and_then(run_ms)
            .zip(cpu0)
            .map(|(after, before)| after - before),
        rss_growth_mib: daemon_pid
            .and_then(hwm_kib)
            .zip(rss0)
            .map(|(after, before)| (after - before).max(0.0) / 1024.0),
    })
}

/// CPU time of every thread of `pid`, from schedstat (nanoseconds; `stat`'s ticks are 10 ms,
/// as coarse as the difference measured).
fn run_ms(pid: i32) -> Option<f64> {
    thread_counters(pid).map(|(_, run_ns)| run_ns / 1e6)
}

fn ends_with_done(file: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = fs::File::open(file) else {
        return false;
    };
    let mut tail = [0u8; 5];
    f.seek(SeekFrom::End(-5)).is_ok() && f.read_exact(&mut tail).is_ok() && &tail == b"done\n"
}

fn rss_kib(pid: i32) -> Option<f64> {
    status_kib(pid, "VmRSS:")
}

fn hwm_kib(pid: i32) -> Option<f64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: i32, field: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Removes what a measurement wrote (200 MB or more each): its dirty pages are dropped rather
/// than written back during the next one.
fn remove_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

fn fresh_dir(env: &Env, name: &str) -> Result<PathBuf, String> {
    let dir = env.tmp.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// `writer | cat > file`: the baseline (with `cat`'s CPU: the kernel's cost of reading the
/// bytes from a pipe and writing them to a file, which a supervisor pays too).
fn cat_baseline(env: &Env, writer: &Path, run: usize) -> Result<Burst, String> {
    let dir = fresh_dir(env, &format!("logs-cat-{run}"))?;
    let (go, file) = (dir.join("go"), dir.join("out.log"));
    let mut child = Command::new(writer)
        .arg(TOTAL.to_string())
        .arg(&go)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run the writer: {e}"))?;
    let pipe = child.stdout.take();
    let writer_guard = Daemon::from_child(child);
    let out = fs::File::create(&file).map_err(|e| e.to_string())?;
    let cat = Command::new("cat")
        .stdin(pipe.map_or_else(Stdio::null, Stdio::from))
        .stdout(out)
        .process_group(writer_guard.pid)
        .spawn()
        .map_err(|e| format!("cannot run cat: {e}"))?;
    let cat_guard = Daemon::from_child(cat);
    let result = burst(&go, &file, Some(cat_guard.pid));
    drop(writer_guard);
    drop(cat_guard);
    remove_dir(&dir);
    result
}

/// clusterd with its default format: timestamp, instance, stream.
fn clusterd_burst(env: &Env, writer: &Path, run: usize) -> Result<Burst, String> {
    clusterd_format_burst(env, writer, run, true)
}

/// clusterd with `timestamps = false`: instance and stream only.
fn clusterd_untimed_burst(env: &Env, writer: &Path, run: usize) -> Result<Burst, String> {
    clusterd_format_burst(env, writer, run, false)
}

fn clusterd_format_burst(
    env: &Env,
    writer: &Path,
    run: usize,
    timestamps: bool,
) -> Result<Burst, String> {
    let dir = fresh_dir(env, &format!("logs-clusterd-{timestamps}-{run}"))?;
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let go = dir.join("go");
    let unit = format!(
        "command = {}\nrestart = \"never\"\nlog = {{ timestamps = {timestamps} }}\n",
        json!([
            writer.display().to_string(),
            TOTAL.to_string(),
            go.display().to_string()
        ])
    );
    fs::write(units.join("w.toml"), unit).map_err(|e| e.to_string())?;
    let logs = dir.join("logs");
    let socket = dir.join("clusterd.sock");
    let daemon = launch_clusterd(env, &units, &socket, &dir)?;
    // The log file exists once the start is noted in it.
    let file = logs.join("w.log");
    if !wait_for(Duration::from_secs(10), Duration::from_millis(2), || {
        file.exists()
    }) {
        return Err("clusterd did not start the writer".into());
    }
    let result = burst(&go, &file, Some(daemon.pid));
    drop(daemon);
    remove_dir(&dir);
    result
}

fn pm2_burst(env: &Env, writer: &Path, run: usize) -> Result<Burst, String> {
    let dir = fresh_dir(env, &format!("logs-pm2-{run}"))?;
    let (go, file) = (dir.join("go"), dir.join("out.log"));
    let app = json!({
        "name": "w",
        "script": writer,
        "args": [TOTAL.to_string(), go],
        "interpreter": "none",
        "exec_mode": "fork",
        "autorestart": false,
        "time": true,
        "out_file": file,
        "error_file": dir.join("err.log"),
    });
    let (daemon, _) = start_pm2_app(env, &dir, app)?;
    let result = burst(&go, &file, Some(daemon.pid));
    drop(daemon);
    remove_dir(&dir);
    result
}

fn supervisord_burst(env: &Env, writer: &Path, run: usize) -> Result<Burst, String> {
    let dir = fresh_dir(env, &format!("logs-supervisord-{run}"))?;
    let (go, file) = (dir.join("go"), dir.join("out.log"));
    let bin = env
        .supervisord
        .as_ref()
        .ok_or("supervisord not installed")?;
    let conf = dir.join("supervisord.conf");
    let text = format!(
        "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
         loglevel=warn\n\n[program:w]\ncommand={w} {t} {g}\nautostart=true\nautorestart=false\n\
         startsecs=0\nstdout_logfile={f}\nstdout_logfile_maxbytes=0\nstderr_logfile=NONE\n",
        d = dir.display(),
        w = writer.display(),
        t = TOTAL,
        g = go.display(),
        f = file.display(),
    );
    fs::write(&conf, text).map_err(|e| e.to_string())?;
    let daemon = spawn_supervisord(bin, &conf)?;
    if !wait_for(Duration::from_secs(20), Duration::from_millis(5), || {
        file.exists()
    }) {
        return Err("supervisord did not start the writer".into());
    }
    let result = burst(&go, &file, Some(daemon.pid));
    drop(daemon);
    remove_dir(&dir);
    result
}

/// Every log measurement of one run.
pub(super) fn log_runs(env: &Env, opts: &Opts, run: usize, r: &mut Results) {
    let Some(writer) = build_log_writer(&opts.scratch) else {
        r.notes
            .push("log benchmark skipped: gcc could not build the writer".into());
        return;
    };
    let cat = match cat_baseline(env, &writer, run) {
        Ok(b) => {
            r.add("log_cat", Peer::Clusterd, b.mb_per_s);
            if let Some(cpu) = b.cpu_ms {
                r.add("log_cat_cpu", Peer::Clusterd, cpu);
            }
            Some(b.mb_per_s)
        }
        Err(e) => {
            r.notes.push(format!("log baseline: {e}"));
            None
        }
    };
    sweep_descendants();
    // Each with the suffix of its rows' keys.
    let mut peers: Vec<(Peer, &str, MeasureBurst)> = vec![
        (Peer::Clusterd, "", clusterd_burst),
        (Peer::Clusterd, "_untimed", clusterd_untimed_burst),
    ];
    if opts.peer_on(Peer::Pm2) && env.pm2.is_some() {
        peers.push((Peer::Pm2, "", pm2_burst));
    }
    if opts.peer_on(Peer::Supervisord) && env.supervisord.is_some() {
        peers.push((Peer::Supervisord, "", supervisord_burst));
    }
    for (peer, suffix, measure) in peers {
        match measure(env, &writer, run) {
            Ok(b) => {
                r.add(&format!("log_mbs{suffix}"), peer, b.mb_per_s);
                if let Some(cpu) = b.cpu_ms {
                    r.add(&format!("log_cpu{suffix}"), peer, cpu);
                }
                if let Some(rss) = b.rss_growth_mib {
                    r.add(&format!("log_rss{suffix}"), peer, rss);
                }
                if let Some(cat) = cat {
                    r.add(&format!("log_vs_cat{suffix}"), peer, b.mb_per_s / cat);
                }
            }
            Err(e) => r.fail(peer, "log capture", e),
        }
        sweep_descendants();
    }
    match follow_latency(env, run) {
        Ok(ms) => r.add("log_follow", Peer::Clusterd, ms),
        Err(e) => r.fail(Peer::Clusterd, "logs --follow latency", e),
    }
    sweep_descendants();
}

/// Median time (ms) from a line's write (the instance stamps it) to its arrival at
/// `clusterctl logs --follow`.
fn follow_latency(env: &Env, run: usize) -> Result<f64, String> {
    let dir = fresh_dir(env, &format!("logs-follow-{run}"))?;
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let ping = dir.join("ping");
    let script = format!(
        "import os, time\nwhile True:\n    if os.path.exists({p:?}):\n        os.remove({p:?})\n        print(time.time_ns(), flush=True)\n    time.sleep(0.002)\n",
        p = ping.display().to_string()
    );
    fs::write(dir.join("ping.py"), script).map_err(|e| e.to_string())?;
    let unit = format!(
        "command = [\"python3\", {:?}]\n",
        dir.join("ping.py").display().to_string()
    );
    fs::write(units.join("p.toml"), unit).map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let logs = dir.join("logs");
    let _daemon = launch_clusterd(env, &units, &socket, &dir)?;
    if !wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        logs.join("p.log").exists()
    }) {
        return Err("clusterd did not start the pinger".into());
    }
    let child = Command::new(&env.clusterctl)
        .arg("--socket")
        .arg(&socket)
        .args(["logs", "p", "--lines", "0", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start clusterctl logs: {e}"))?;
    let mut follower = Daemon::from_child(child);
    let stdout = follower
        .child
        .as_mut()
        .and_then(|c| c.stdout.take())
        .ok_or("no stdout")?;
    let (tx, rx) = crossbeam_channel::unbounded::<(i64, String)>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send((realtime_ns(), line)).is_err() {
                break;
            }
        }
    });
    sleep(Duration::from_millis(200));
    let mut latencies = Vec::new();
    for _ in 0..20 {
        fs::write(&ping, "").map_err(|e| e.to_string())?;
        let (at, line) = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "no line reached the follower within 5 s".to_string())?;
        let written: i64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        latencies.push((at - written) as f64 / 1e6);
        sleep(Duration::from_millis(20));
    }
    Ok(percentile(&latencies, 0.5))
}
