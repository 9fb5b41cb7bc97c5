//! The stamp worker every supervisor runs, its stamp file, and the C restart floors.

use super::*;

pub(super) const WORKER_C: &str = include_str!("workers/stamp_worker.c");

pub(super) const FLOOR_C: &str = include_str!("workers/restart_floor.c");

pub(super) const FLOOR_SUPERVISOR_C: &str = include_str!("workers/floor_supervisor.c");

pub(super) const FEATURED_FLOOR_C: &str = include_str!("workers/featured_floor.c");

/// Where the featured floor may make its workers' cgroups: the bench's own cgroup in the
/// cgroup2 hierarchy (as clusterd makes its own under its cgroup), if the bench may write
/// there (root, or a delegated cgroup).
pub(super) fn floor_cgroup_base() -> Result<PathBuf, String> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // `36 25 0:30 / /sys/fs/cgroup/unified rw,... shared:10 - cgroup2 cgroup2 rw,...`
    let mount = mounts
        .lines()
        .find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            (after.split(' ').next()? == "cgroup2").then(|| before.split(' ').nth(4))?
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("the bench is in no cgroup2 cgroup")?;
    let base = PathBuf::from(format!("{mount}{}", own.trim_end_matches('/')));
    let probe = base.join(format!("clusterd-bench-probe.{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| format!("cannot make a cgroup in {base:?}: {e}"))?;
    let _ = fs::remove_dir(&probe);
    Ok(base)
}

/// Removes a featured floor's cgroup directory and what it left in it (empty cgroups: their
/// workers are gone), best effort.
pub(super) fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Builds a C restart floor named `name` from `source` (it needs the static C worker, not the
/// shell fallback).
pub(super) fn build_floor(
    scratch: &Path,
    worker: &[String],
    name: &str,
    source: &str,
) -> Option<PathBuf> {
    if worker.len() != 1 {
        return None;
    }
    let src = scratch.join(format!("{name}.c"));
    let bin = scratch.join(name);
    fs::write(&src, source).ok()?;
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    built.then_some(bin)
}

/// The self-killing floor's restart latencies (ms), `kills` of them.
pub(super) fn floor_latencies(env: &Env, floor: &Path, kills: usize) -> Result<Vec<f64>, String> {
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
pub(super) fn build_worker(scratch: &Path) -> Result<Vec<String>, String> {
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

pub(super) struct Stamps {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) partial: String,
    /// Every (pid, start ns) seen, in file order.
    pub(super) all: Vec<(i32, i64)>,
}

impl Stamps {
    pub(super) fn new(path: PathBuf) -> Stamps {
        let _ = fs::write(&path, "");
        Stamps {
            path,
            offset: 0,
            partial: String::new(),
            all: Vec::new(),
        }
    }
    pub(super) fn poll(&mut self) {
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
    pub(super) fn wait_count(&mut self, n: usize, timeout: Duration) -> bool {
        wait_for(timeout, Duration::from_millis(1), || {
            self.poll();
            self.all.len() >= n
        })
    }
    pub(super) fn pids(&self) -> Vec<i32> {
        self.all.iter().map(|&(p, _)| p).collect()
    }
}
