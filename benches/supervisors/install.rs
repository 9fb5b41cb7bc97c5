//! Installing the peers into the scratch directory: PM2 with npm, supervisord into a venv.

use super::*;

pub(super) fn install_pm2(scratch: &Path) -> Result<PathBuf, String> {
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

pub(super) fn install_venv(scratch: &Path, package: &str, probe: &str) -> Result<PathBuf, String> {
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

pub(super) fn version(cmd: &mut Command) -> String {
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

pub(super) fn machine_info(env: &Env) -> Value {
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
