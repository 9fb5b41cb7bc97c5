//! The pause of `clusterctl daemon-reexec` with 1000 instances (issue 24): how long the
//! control socket goes unanswered while clusterd execs itself in place. Two figures from one
//! run: the pause the new image reports (from the moment the old one stopped accepting to the
//! moment it serves again), and the slowest answer a client asking all along got (a request
//! for a unit that does not exist: the cheapest answer, so that the wait is the pause).

use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;

pub(super) fn reexec_pause(
    env: &Env,
    opts: &Opts,
    run: usize,
    r: &mut Results,
) -> Result<(), String> {
    let dir = env.tmp.join(format!("reexec-{run}"));
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    fs::write(
        units.join("w.toml"),
        format!(
            "command = [\"sleep\", \"100000\"]\ninstances = {}\n",
            opts.mass
        ),
    )
    .map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let daemon = launch_clusterd(env, &units, &socket, &dir)?;
    let running = || {
        status_json(env, &socket)
            .and_then(|v| v["units"][0]["instances"].as_array().map(|a| a.len()))
            == Some(opts.mass)
    };
    if !wait_for(
        Duration::from_secs(120),
        Duration::from_millis(100),
        running,
    ) {
        return Err(format!("{} instances did not start", opts.mass));
    }
    // A client asking all along, each request on a new connection.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let probe_socket = socket.clone();
    let probe = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !flag.load(Ordering::Relaxed) {
            let asked = Instant::now();
            let answered = UnixStream::connect(&probe_socket).and_then(|mut s| {
                s.write_all(b"{\"version\":1,\"command\":\"status\",\"unit\":\"none\"}\n")?;
                let mut answer = Vec::new();
                s.read_to_end(&mut answer).map(|_| answer)
            });
            if answered.is_ok_and(|a| !a.is_empty()) {
                slowest = slowest.max(asked.elapsed());
            }
        }
        slowest
    });
    sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let out = run_timeout(
        Command::new(&env.clusterctl)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon-reexec"),
        Duration::from_secs(60),
    );
    let round_trip = asked.elapsed();
    sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let slowest = probe.join().unwrap_or_default();
    let out = out?;
    if !out.ok {
        return Err(format!("daemon-reexec failed: {}", out.stderr.trim()));
    }
    // "... the control socket was unanswered for 14.2 ms"
    let reported: f64 = out
        .stdout
        .rsplit("unanswered for ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| format!("no pause in the reply: {}", out.stdout.trim()))?;
    if !running() {
        return Err("instances were lost across the re-exec".into());
    }
    r.add("reexec_pause", Peer::Clusterd, reported);
    r.add(
        "reexec_slowest_answer",
        Peer::Clusterd,
        slowest.as_secs_f64() * 1000.0,
    );
    r.add(
        "reexec_round_trip",
        Peer::Clusterd,
        round_trip.as_secs_f64() * 1000.0,
    );
    drop(daemon);
    Ok(())
}
