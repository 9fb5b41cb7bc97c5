//! The container image, built and run for real: packaging/container/scratch/ (a FROM-scratch
//! image of clusterd, clusterctl, sh and sleep with their libraries, nothing pulled) built by
//! podman and run with runc (`--runtime runc --cgroup-manager cgroupfs` and explicit ulimits:
//! crun refuses the hybrid cgroups of VMs like CI's).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{self, wait_for, CLUSTERCTL, PATIENCE};

const IMAGE: &str = "localhost/clusterd-test-scratch";

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("podman runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the image once per test run; `None` if podman or runc is missing.
fn image() -> Option<&'static str> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if !common::available(
        "podman and runc",
        common::runs("podman", &["--version"]) && common::runs("runc", &["--version"]),
    ) {
        return None;
    }
    let built = BUILT.get_or_init(|| {
        let context = tempfile::Builder::new()
            .prefix("clusterd-image-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/container/scratch");
        let bin_dir = Path::new(CLUSTERCTL).parent().ok_or("no bin dir")?;
        let made = run(Command::new(scratch.join("make-rootfs"))
            .arg(bin_dir)
            .arg(context.path().join("rootfs"))
            // node: the shipped node-web example runs in the image too.
            .args(["sh", "sleep", "node"]));
        if !made.status.success() {
            return Err(format!("make-rootfs: {}", text(&made.stderr)));
        }
        std::fs::copy(
            scratch.join("Containerfile"),
            context.path().join("Containerfile"),
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let built = run(podman()
            .args([
                "build",
                "--format",
                "docker",
                "--pull=never",
                "-q",
                "-t",
                IMAGE,
            ])
            .arg(context.path()));
        eprintln!("podman build: {:?}", started.elapsed());
        if built.status.success() {
            Ok(())
        } else {
            Err(format!("podman build: {}", text(&built.stderr)))
        }
    });
    match built {
        Ok(()) => Some(IMAGE),
        Err(e) => panic!("{e}"),
    }
}

/// A container of the image with `units`, removed (killed if need be) when dropped.
struct Container {
    name: String,
    _units: tempfile::TempDir,
}

impl Container {
    fn run(image: &str, units: &[(&str, &str)], args: &[&str]) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("clusterd-units-")
            .tempdir()
            .expect("temp dir");
        for (name, unit) in units {
            std::fs::write(dir.path().join(format!("{name}.toml")), unit).expect("unit");
        }
        Self::run_dir(image, dir, args)
    }

    /// A container whose /etc/clusterd is `dir` (read-only).
    fn run_dir(image: &str, dir: tempfile::TempDir, args: &[&str]) -> Container {
        let name = format!(
            "clusterd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let started = run(podman()
            .args(["run", "-d", "--name", &name])
            .args([
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .arg("-v")
            .arg(format!("{}:/etc/clusterd:ro", dir.path().display()))
            .arg(image)
            .args(args));
        let container = Container { name, _units: dir };
        assert!(
            started.status.success(),
            "podman run: {}",
            text(&started.stderr)
        );
        container
    }

    fn exec(&self, args: &[&str]) -> Output {
        run(podman().args(["exec", &self.name]).args(args))
    }

    /// `podman wait`: the container's exit code, once it exited.
    fn wait(&self) -> Option<i32> {
        let out = run(podman().args(["wait", &self.name]));
        text(&out.stdout).trim().parse().ok()
    }

    fn logs(&self) -> String {
        let out = run(podman().args(["logs", &self.name]));
        text(&out.stdout) + &text(&out.stderr)
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(podman().args(["rm", "-f", "-t", "0", &self.name]));
    }
}

#[test]
fn clusterd_is_pid_1_healthy_reaps_orphans_and_stops_with_0() {
    let Some(image) = image() else { return };
    let ticker =
        "command = [\"sh\", \"-c\", \"while true; do echo tick; sleep 1; done\"]\ninstances = 2\n";
    // Each run leaves a `sleep` behind whose parent exited: PID 1 must reap it.
    let orphans = "command = [\"sh\", \"-c\", \"(sleep 0.2 &); (sleep 0.2 &); exec sleep 1000\"]\n";
    let container = Container::run(image, &[("ticker", ticker), ("orphans", orphans)], &[]);
    wait_for("clusterctl ready in the container", PATIENCE, || {
        container.exec(&["clusterctl", "ready"]).status.success()
    });
    let comm = container.exec(&["sh", "-c", "read -r c < /proc/1/comm; echo $c"]);
    assert_eq!(text(&comm.stdout).trim(), "clusterd");
    // The image's HEALTHCHECK is `clusterctl ready`.
    let health = run(podman().args(["healthcheck", "run", &container.name]));
    assert!(health.status.success(), "{}", text(&health.stderr));
    // The orphaned sleeps end after 0.2 s; none stays a zombie.
    let zombies = "n=0; for f in /proc/[0-9]*/stat; do read -r l < $f 2>/dev/null || continue; case \"$l\" in *\") Z \"*) n=$((n+1));; esac; done; echo $n";
    wait_for("no zombie in the container", PATIENCE, || {
        text(&container.exec(&["sh", "-c", zombies]).stdout).trim() == "0"
    });

    let started = Instant::now();
    let stopped = run(podman().args(["stop", "-t", "20", &container.name]));
    let took = started.elapsed();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(container.wait(), Some(0), "{}", container.logs());
    assert!(
        took < Duration::from_secs(20),
        "podman stop took {took:?}: SIGKILLed?"
    );
    eprintln!("podman stop: {took:?}");
}

/// The shipped examples that need no runtime beyond the image's (ticker: sh; node-web: node
/// and units/workers/worker.js), as the repository has them: they run, node-web serves on its
/// shared port inside the container, and `podman stop` ends it all with 0.
#[test]
fn the_shipped_ticker_and_node_web_examples_serve_in_the_container() {
    let Some(image) = image() else { return };
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    let dir = tempfile::Builder::new()
        .prefix("clusterd-units-")
        .tempdir()
        .expect("temp dir");
    std::fs::create_dir(dir.path().join("workers")).expect("workers dir");
    for file in ["ticker.toml", "node-web.toml", "workers/worker.js"] {
        std::fs::copy(units.join(file), dir.path().join(file)).expect("copy an example");
    }
    let container = Container::run_dir(image, dir, &[]);
    wait_for("clusterctl ready in the container", PATIENCE, || {
        container.exec(&["clusterctl", "ready"]).status.success()
    });
    let get = "require('http').get('http://127.0.0.1:8081/', r => { let b = ''; \
               r.on('data', d => b += d); r.on('end', () => { console.log(r.statusCode + ' ' + b); }); })\
               .on('error', e => { console.log('error ' + e.message); })";
    let answers: Vec<String> = (0..4)
        .map(|_| text(&container.exec(&["node", "-e", get]).stdout))
        .collect();
    for answer in &answers {
        assert!(
            answer.starts_with("200 hello from node-web instance "),
            "{answers:?}\n{}",
            container.logs()
        );
    }
    let status = text(&container.exec(&["clusterctl", "status"]).stdout);
    assert!(
        status.contains("ticker") && status.contains("node-web"),
        "{status}"
    );
    let stopped = run(podman().args(["stop", "-t", "20", &container.name]));
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert_eq!(container.wait(), Some(0), "{}", container.logs());
}

#[test]
fn a_give_up_with_exit_on_giveup_ends_the_container_with_69() {
    let Some(image) = image() else { return };
    let crashy = "command = [\"sh\", \"-c\", \"exit 1\"]\nrestart_limit = { burst = 1, interval = \"1m\" }\n";
    let container = Container::run(image, &[("crashy", crashy)], &["--exit-on-giveup"]);
    assert_eq!(container.wait(), Some(69), "{}", container.logs());
}

/// The Kubernetes manifest and the Nomad job probe with what the tests above exercise.
#[test]
fn the_kubernetes_and_nomad_files_use_what_the_tests_exercised() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/container");
    let k8s = std::fs::read_to_string(dir.join("deployment.yaml")).expect("deployment.yaml");
    let nomad = std::fs::read_to_string(dir.join("clusterd.nomad.hcl")).expect("nomad job");
    let bare = |text: &str| text.replace([' ', '\n'], "");
    assert!(bare(&k8s).contains("command:[\"clusterctl\",\"ready\"]"));
    assert!(bare(&nomad).contains("command=\"clusterctl\"args=[\"ready\"]"));
    for text in [&k8s, &nomad] {
        assert!(text.contains("--exit-on-giveup"));
        assert!(text.contains("--shutdown-delay"));
    }
    assert!(k8s.contains("terminationGracePeriodSeconds"));
    assert!(nomad.contains("kill_timeout"));
}
