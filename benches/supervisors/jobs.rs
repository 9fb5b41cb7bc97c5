//! What scheduled one-shots cost while nothing is due: clusterd with one service, then with
//! the same service and 100 scheduled one-shots (issue 22), side by side in one run. A
//! schedule is one timer per unit, so clusterd must wake no more than with none: 0 context
//! switches over the window in both.

use super::*;

/// Scheduled one-shots of the second setup.
const JOBS: usize = 100;

pub(super) fn job_idle_costs(
    env: &Env,
    opts: &Opts,
    run: usize,
    r: &mut Results,
) -> Result<(), String> {
    let secs = if opts.quick { 3 } else { 10 };
    // Per 30 s, like the idle rows.
    let scale = 30.0 / secs as f64;
    for (jobs, key) in [(0, "jobs_idle_csw_none"), (JOBS, "jobs_idle_csw_100")] {
        let dir = env.tmp.join(format!("jobs-{run}-{jobs}"));
        let _ = fs::remove_dir_all(&dir);
        let units = dir.join("units");
        fs::create_dir_all(&units).map_err(|e| e.to_string())?;
        fs::write(units.join("w.toml"), "command = [\"sleep\", \"100000\"]\n")
            .map_err(|e| e.to_string())?;
        for i in 0..jobs {
            // Half by cron, half by interval; none due within the window.
            let schedule = if i % 2 == 0 { "0 0 1 1 *" } else { "every 6h" };
            fs::write(
                units.join(format!("job{i:03}.toml")),
                format!(
                    "command = [\"true\"]\ntype = \"oneshot\"\nschedule = \"{schedule}\"\nafter = [\"w\"]\n"
                ),
            )
            .map_err(|e| e.to_string())?;
        }
        let socket = dir.join("clusterd.sock");
        let daemon = launch_clusterd(env, &units, &socket, &dir)?;
        let loaded = || {
            status_json(env, &socket).and_then(|v| v["units"].as_array().map(|a| a.len()))
                == Some(jobs + 1)
        };
        if !wait_for(Duration::from_secs(30), Duration::from_millis(50), loaded) {
            return Err(format!("{} units did not load", jobs + 1));
        }
        sleep(Duration::from_secs(1));
        let (cpu, csw) = usage_over(daemon.pid, Duration::from_secs(secs))?;
        r.add(key, Peer::Clusterd, csw * scale);
        r.add(&format!("{key}_cpu"), Peer::Clusterd, cpu * scale);
        drop(daemon);
    }
    Ok(())
}
