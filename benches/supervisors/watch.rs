//! What watching costs: clusterd with 200 instances (no memory limits) left alone — it must
//! not wake at all — and then with `clusterctl top` attached in a real terminal (a tmux pane),
//! refreshing every second: clusterd's CPU and wake-ups, and top's own CPU.

use super::*;

/// Instances of the watched unit.
const INSTANCES: usize = 200;

pub(super) fn watch_costs(
    env: &Env,
    opts: &Opts,
    run: usize,
    r: &mut Results,
) -> Result<(), String> {
    let tmux = which("tmux").ok_or("tmux not found")?;
    let dir = env.tmp.join(format!("watch-{run}"));
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    fs::write(
        units.join("w.toml"),
        format!("command = [\"sleep\", \"100000\"]\ninstances = {INSTANCES}\n"),
    )
    .map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let daemon = launch_clusterd(env, &units, &socket, &dir)?;
    let running = || {
        status_json(env, &socket)
            .and_then(|v| v["units"][0]["instances"].as_array().map(|a| a.len()))
            == Some(INSTANCES)
    };
    if !wait_for(Duration::from_secs(30), Duration::from_millis(50), running) {
        return Err(format!("{INSTANCES} instances did not start"));
    }
    let secs = if opts.quick { 3 } else { 10 };
    let window = Duration::from_secs(secs);
    // Per 30 s, like the idle rows.
    let scale = 30.0 / secs as f64;
    sleep(Duration::from_secs(1));
    let (cpu, csw) = usage_over(daemon.pid, window)?;
    r.add("watch_idle_csw", Peer::Clusterd, csw * scale);
    r.add("watch_idle_cpu", Peer::Clusterd, cpu * scale);

    let session = format!("clusterd-bench-top-{}", std::process::id());
    let top = format!(
        "{} --socket {} top",
        env.clusterctl.display(),
        socket.display()
    );
    let tmux_cmd = |args: &[&str]| Command::new(&tmux).args(args).output();
    tmux_cmd(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "50",
        &top,
    ])
    .map_err(|e| format!("tmux: {e}"))?;
    let result = (|| {
        let pane_pid: i32 = wait_pane_pid(&tmux, &session)?;
        // Let top draw its first frames.
        sleep(Duration::from_secs(2));
        let top_before = thread_counters(pane_pid).ok_or("top is not running")?.1;
        let (cpu, csw) = usage_over(daemon.pid, window)?;
        let top_cpu = (thread_counters(pane_pid).ok_or("top stopped")?.1 - top_before) / 1e6;
        // CPU ms over the window → % of one CPU.
        let percent = |ms: f64| ms / (secs as f64 * 1000.0) * 100.0;
        r.add("watch_top_cpu", Peer::Clusterd, percent(cpu));
        r.add("watch_top_csw", Peer::Clusterd, csw * scale);
        r.add("watch_top_self_cpu", Peer::Clusterd, percent(top_cpu));
        Ok(())
    })();
    let _ = tmux_cmd(&["kill-session", "-t", &session]);
    drop(daemon);
    result
}

/// The pid of the program in the session's pane.
fn wait_pane_pid(tmux: &Path, session: &str) -> Result<i32, String> {
    let mut pid = None;
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        pid = Command::new(tmux)
            .args(["list-panes", "-t", session, "-F", "#{pane_pid}"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok());
        pid.is_some()
    });
    pid.ok_or_else(|| "top did not start in tmux".into())
}

/// clusterd's on-CPU time (ms, schedstat: exact where utime+stime counts 10 ms ticks) and
/// context switches, all threads, over `window`.
pub(super) fn usage_over(pid: i32, window: Duration) -> Result<(f64, f64), String> {
    let gone = || "clusterd disappeared".to_string();
    let (csw0, ns0) = thread_counters(pid).ok_or_else(gone)?;
    sleep(window);
    let (csw1, ns1) = thread_counters(pid).ok_or_else(gone)?;
    Ok(((ns1 - ns0) / 1e6, (csw1 - csw0).max(0.0)))
}
