//! The memory limit's reaction: an instance of a unit with `memory_max = "100MiB"` (checked
//! every `memory_check_interval`, 1 s by default) grows to 200 MiB at a known moment; measured
//! from the moment it is above the limit until its replacement runs (the replacement stamps
//! its own start). PM2's `max_memory_restart` is polled every 30 s.

use super::*;

/// The first instance grows past the limit once `go` exists and stamps the moment; every
/// instance stamps its start.
const GROWER: &str = r#"
import os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "starts"), "a") as f:
    f.write(f"{os.getpid()} {time.time_ns()}\n")
if not os.path.exists(os.path.join(here, "crossed")):
    while not os.path.exists(os.path.join(here, "go")):
        time.sleep(0.005)
    hoard = bytearray(200 << 20)
    hoard[::4096] = b"x" * len(hoard[::4096])
    with open(os.path.join(here, "crossed"), "w") as f:
        f.write(str(time.time_ns()))
while True:
    time.sleep(1)
"#;

/// Milliseconds from crossing the limit to the replacement's start.
pub(super) fn memory_limit_reaction(env: &Env, run: usize) -> Result<f64, String> {
    let dir = env.tmp.join(format!("memlimit-{run}"));
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    let script = dir.join("grow.py");
    fs::write(&script, GROWER).map_err(|e| e.to_string())?;
    let unit = format!(
        "command = [\"python3\", {:?}]\nmemory_max = \"100MiB\"\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        script.display().to_string()
    );
    fs::write(units.join("g.toml"), unit).map_err(|e| e.to_string())?;
    let socket = dir.join("clusterd.sock");
    let _daemon = launch_clusterd(env, &units, &socket, &dir)?;
    let starts = dir.join("starts");
    if !wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() == 1)
    }) {
        return Err("the grower did not start".into());
    }
    fs::write(dir.join("go"), "").map_err(|e| e.to_string())?;
    if !wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        fs::read_to_string(&starts).is_ok_and(|t| t.lines().count() >= 2)
    }) {
        return Err("no replacement within 15 s".into());
    }
    let crossed: i64 = fs::read_to_string(dir.join("crossed"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("crossed: {e}"))?;
    let text = fs::read_to_string(&starts).map_err(|e| e.to_string())?;
    let replaced_at: i64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|n| n.parse().ok())
        .ok_or("no second start")?;
    Ok((replaced_at - crossed) as f64 / 1e6)
}
