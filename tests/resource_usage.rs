//! What an instance uses, in `clusterctl status`: the CPU and memory of the whole instance —
//! children included, exited ones' CPU too — not only of the process clusterd started, with
//! cgroups and with process groups alike.

mod common;

use common::*;

/// `sh` (the instance's own process) starts a Python child that holds 64 MiB, and a busy
/// loop that burns about a second of CPU and exits; then waits.
const UNIT: &str = r#"command = ["sh", "-c", "python3 -c 'import time; x = bytearray(64 << 20); x[::4096] = b\"x\" * len(x[::4096]); time.sleep(300)' & python3 -c 'import time; t = time.process_time(); exec(\"while time.process_time() - t < 1.0: pass\")'; echo burnt > burnt; wait"]
"#;

fn the_whole_instance_is_measured(args: &[&str]) {
    let files = tempfile::tempdir().expect("tmp");
    let unit = format!(
        "{UNIT}working_directory = \"{}\"\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start_with_args(&[("hungry", &unit)], args);
    daemon.wait_running("hungry", 1);
    wait_for("the busy child to have burnt its second", PATIENCE, || {
        files.path().join("burnt").exists()
    });
    wait_for("64 MiB and a second of CPU counted", PATIENCE, || {
        let unit = daemon.unit("hungry");
        let instance = &unit["instances"][0];
        let memory = instance["memory_bytes"].as_u64().unwrap_or(0);
        let cpu = instance["cpu_seconds"].as_f64().unwrap_or(0.0);
        memory >= 64 << 20 && cpu >= 0.8
    });
    let unit = daemon.unit("hungry");
    let instance = &unit["instances"][0];
    assert!(instance["cpu_percent"].as_f64().is_some(), "{unit}");
    assert_eq!(unit["memory_bytes"], instance["memory_bytes"], "{unit}");
    // The human table has the columns.
    let out = daemon.ctl(&["status", "hungry"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CPU") && text.contains("MEM") && text.contains('M'),
        "{text}"
    );
}

#[test]
fn an_instance_s_children_count_in_its_cpu_and_memory_with_cgroups() {
    the_whole_instance_is_measured(&["--isolation", "auto"]);
}

#[test]
fn an_instance_s_children_count_in_its_cpu_and_memory_with_process_groups() {
    the_whole_instance_is_measured(&["--isolation", "process-group"]);
}

/// Grows by 16 MiB every 100 ms; on SIGTERM writes `term-PID` and exits.
const GROWER: &str = r#"
import os, signal, sys, time
def bye(*_):
    open(f"term-{os.getpid()}", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
hoard = []
while True:
    if len(hoard) < 40:
        chunk = bytearray(16 << 20)
        chunk[::4096] = b"x" * len(chunk[::4096])
        hoard.append(chunk)
    time.sleep(0.1)
"#;

#[test]
fn an_instance_above_memory_max_is_replaced_before_it_is_stopped() {
    let files = tempfile::tempdir().expect("tmp");
    std::fs::write(files.path().join("grow.py"), GROWER).expect("script");
    let unit = format!(
        "command = [\"python3\", \"grow.py\"]\nworking_directory = \"{}\"\nmemory_max = \"100MiB\"\nmemory_check_interval = \"200ms\"\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start(&[("grow", &unit)]);
    let first = daemon.wait_running("grow", 1)[0];
    wait_for("the first instance to be told to stop", PATIENCE, || {
        files.path().join(format!("term-{first}")).exists()
    });
    let log = std::fs::read_to_string(daemon.log_dir().join("grow.log")).unwrap_or_default();
    let over = log.find("above memory_max 100.0 MiB").expect(&log);
    let replacement = log[over..]
        .find("clusterd | started, pid")
        .map(|i| i + over);
    let stopping = log.find(&format!("clusterd | stopping pid {first}"));
    assert!(
        replacement.is_some() && stopping.is_some() && replacement < stopping,
        "the old instance was stopped before its replacement ran:\n{log}"
    );
    let unit = daemon.unit("grow");
    assert!(
        unit["memory_replacements"].as_u64().unwrap_or(0) >= 1,
        "{unit}"
    );
    assert!(unit["restarts"].as_u64().unwrap_or(0) >= 1, "{unit}");
    let out = daemon.ctl(&["metrics"]);
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("clusterd_unit_memory_limit_replacements_total{unit=\"grow\"}"));
}
