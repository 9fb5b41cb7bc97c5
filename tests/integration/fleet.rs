//! `clusterctl -H ssh://...` against real hosts: each "host" is a real OpenSSH server (sshd
//! from Debian's openssh-server) on its own loopback port, with its own host key, config and
//! authorized_keys, whose sessions get `CLUSTERD_SOCKET` (its own clusterd) and a `PATH` where
//! `clusterctl` is the one just built; the client is the system's `ssh`, told by
//! `CLUSTERD_SSH_COMMAND` which key to use and where known hosts go.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{self, alive, free_port, wait_for, Daemon, CLUSTERCTL, PATIENCE};

const SSHD: &str = "/usr/sbin/sshd";

/// The client's side: its keys (one of them restricted to `dial-stdio` by a forced command)
/// and known hosts, shared by every host of a test.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::Builder::new()
            .prefix("clusterd-fleet-")
            .tempdir()
            .expect("temp dir");
        for key in ["client", "restricted", "host"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(dir.path().join(key))
                .status()
                .expect("ssh-keygen");
            assert!(made.success(), "ssh-keygen {key}");
        }
        let public = |key: &str| {
            fs::read_to_string(dir.path().join(format!("{key}.pub"))).expect("public key")
        };
        fs::write(
            dir.path().join("authorized_keys"),
            format!(
                "{}command=\"clusterctl dial-stdio\",restrict {}",
                public("client"),
                public("restricted")
            ),
        )
        .expect("authorized_keys");
        Keys { dir }
    }

    /// What `CLUSTERD_SSH_COMMAND` holds to log in with `key`: no user config, this key, and
    /// the hosts' keys accepted into a file of the test's own.
    fn ssh_command(&self, key: &str) -> String {
        format!(
            "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=no",
            self.dir.path().join(key).display(),
            self.dir.path().join("known_hosts").display()
        )
    }
}

/// One host: a clusterd and an sshd whose sessions reach it.
struct Host {
    daemon: Daemon,
    sshd: Child,
    port: u16,
}

impl Host {
    fn start(keys: &Keys, units: &[(&str, &str)]) -> Host {
        Host::start_with_path(keys, units, &clusterctl_dir())
    }

    /// A host whose clusterd runs `unit`, a sleeper, once it runs.
    fn sleeping(keys: &Keys, unit: &str) -> Host {
        let host = Host::start(keys, &[(unit, "command = [\"sleep\", \"1000\"]\n")]);
        host.daemon.wait_running(unit, 1);
        host
    }

    /// A host whose sessions have `path_dir` first on their PATH.
    fn start_with_path(keys: &Keys, units: &[(&str, &str)], path_dir: &Path) -> Host {
        let daemon = Daemon::start(units);
        // sshd refuses to start without its privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let config = daemon.path("sshd_config");
        fs::write(
            &config,
            format!(
                "HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 StrictModes no\n\
                 PidFile none\n\
                 ListenAddress 127.0.0.1\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 SetEnv CLUSTERD_SOCKET={socket} PATH={path}:/usr/bin:/bin\n",
                host_key = keys.dir.path().join("host").display(),
                authorized = keys.dir.path().join("authorized_keys").display(),
                socket = daemon.socket.display(),
                path = path_dir.display(),
            ),
        )
        .expect("sshd_config");
        let port = free_port();
        let log = fs::File::create(daemon.path("sshd.log")).expect("sshd log");
        let sshd = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("sshd");
        let mut host = Host { daemon, sshd, port };
        let log = host.daemon.path("sshd.log");
        wait_for("sshd to listen", PATIENCE, || {
            if let Ok(Some(status)) = host.sshd.try_wait() {
                panic!(
                    "sshd exited ({status}): {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", host.port)).is_ok()
        });
        host
    }

    fn url(&self) -> String {
        format!("ssh://root@127.0.0.1:{}", self.port)
    }
}

impl Drop for Host {
    /// sshd first (its sessions end with their dial-stdio, which ends with clusterd, dropped
    /// after this).
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// The directory of the clusterctl just built: the hosts' PATH starts there.
fn clusterctl_dir() -> PathBuf {
    Path::new(CLUSTERCTL)
        .parent()
        .expect("clusterctl's directory")
        .to_path_buf()
}

/// The client's keys, if sshd and ssh are installed.
fn keys() -> Option<Keys> {
    common::available(
        "sshd (openssh-server) and ssh",
        Path::new(SSHD).exists() && common::runs("ssh", &["-V"]),
    )
    .then(Keys::new)
}

/// `clusterctl ARGS` on this machine, reaching the hosts through ssh with `key`; killed past
/// the deadline.
fn ctl(keys: &Keys, key: &str, args: &[&str]) -> Output {
    let child = Command::new(CLUSTERCTL)
        .args(args)
        .env("CLUSTERD_SSH_COMMAND", keys.ssh_command(key))
        .env_remove("CLUSTERD_HOST")
        .env_remove("CLUSTERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("clusterctl");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(common::CTL_DEADLINE) {
        Ok(output) => output.expect("clusterctl output"),
        Err(_) => {
            common::send_signal(pid, libc::SIGKILL);
            panic!(
                "clusterctl {args:?} did not finish within {:?}",
                common::CTL_DEADLINE
            );
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `-H` with every host, as one comma list.
fn hosts_arg(hosts: &[&Host]) -> String {
    hosts.iter().map(|h| h.url()).collect::<Vec<_>>().join(",")
}

#[test]
fn three_hosts_status_in_one_table_and_in_json() {
    let Some(keys) = keys() else { return };
    let a = Host::sleeping(&keys, "alpha");
    let b = Host::sleeping(&keys, "beta");
    let c = Host::sleeping(&keys, "gamma");
    // Two forms of several hosts: a comma list, and -H repeated.
    let hosts = hosts_arg(&[&a, &b]);
    let c_url = c.url();
    let out = ctl(&keys, "client", &["-H", &hosts, "-H", &c_url, "status"]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    let header = table.lines().next().expect("a header");
    assert!(header.starts_with("HOST "), "{table}");
    for (host, unit) in [(&a, "alpha"), (&b, "beta"), (&c, "gamma")] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", host.url())) && l.contains(unit))
            .unwrap_or_else(|| panic!("no row for {unit} on {}: {table}", host.url()));
        assert!(row.contains("running"), "{row}");
    }

    let out = ctl(
        &keys,
        "client",
        &["-H", &hosts, "-H", &c_url, "status", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let hosts = hosts.as_array().expect("one object per host");
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    for (object, (host, unit)) in hosts
        .iter()
        .zip([(&a, "alpha"), (&b, "beta"), (&c, "gamma")])
    {
        assert_eq!(object["host"], host.url().as_str());
        assert_eq!(object["status"]["units"][0]["name"], unit, "{object}");
        assert!(object.get("error").is_none(), "{object}");
    }
}

#[test]
fn logs_follow_over_ssh_sees_a_new_line_and_ends_with_the_client() {
    let Some(keys) = keys() else { return };
    let host = Host::start(&keys, &[]);
    let go = host.daemon.path("go");
    host.daemon.write_unit(
        "talker",
        &format!(
            "command = [\"sh\", \"-c\", \"echo first-line; while [ ! -e {go} ]; do sleep 0.05; done; echo second-line; exec sleep 1000\"]\n",
            go = go.display()
        ),
    );
    assert!(host.daemon.ctl(&["daemon-reload"]).status.success());
    host.daemon.wait_running("talker", 1);
    let mut follower = Command::new(CLUSTERCTL)
        .args(["-H", &host.url(), "logs", "-f", "talker"])
        .env("CLUSTERD_SSH_COMMAND", keys.ssh_command("client"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("clusterctl logs -f");
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut wait_line = |what: &str, got: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !got.iter().any(|l| l.contains(what)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match seen.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => {
                    let _ = follower.kill();
                    let _ = follower.wait();
                    panic!("no {what} over ssh: {got:?}");
                }
            }
        }
    };
    wait_line("first-line", &mut got);
    fs::write(&go, "").expect("go");
    wait_line("second-line", &mut got);

    // The follower goes away: its ssh, and the remote dial-stdio, end with it.
    let _ = follower.kill();
    let _ = follower.wait();
    wait_for("the remote dial-stdio to end", PATIENCE, || {
        dial_stdio_pids(&host.daemon.socket).is_empty()
    });
}

/// The `clusterctl dial-stdio` processes that serve the clusterd at `socket` (their
/// CLUSTERD_SOCKET, set by that host's sshd).
fn dial_stdio_pids(socket: &Path) -> Vec<u32> {
    let wanted = format!("CLUSTERD_SOCKET={}", socket.display());
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            text(&cmdline).contains("dial-stdio")
                && environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
                && alive(*pid)
        })
        .collect()
}

#[test]
fn a_serial_reload_stops_at_the_host_whose_unit_cannot_become_ready() {
    let Some(keys) = keys() else { return };
    // `app` exits at once where a file named `broken` is next to its socket; else it must
    // run a second to count as ready.
    let unit = |host_dir: &Path| {
        format!(
            "command = [\"sh\", \"-c\", \"[ -e {broken} ] && exit 1; exec sleep 1000\"]\nready_after = \"1s\"\n",
            broken = host_dir.join("broken").display()
        )
    };
    let hosts: Vec<Host> = (0..3).map(|_| Host::start(&keys, &[])).collect();
    for host in &hosts {
        host.daemon.write_unit("app", &unit(host.daemon.dir.path()));
        assert!(host.daemon.ctl(&["daemon-reload"]).status.success());
    }
    let before: Vec<Vec<u32>> = hosts
        .iter()
        .map(|h| h.daemon.wait_running("app", 1))
        .collect();
    // The second host's new code does not come up.
    fs::write(hosts[1].daemon.dir.path().join("broken"), "").expect("broken");

    let all = hosts_arg(&hosts.iter().collect::<Vec<_>>());
    let out = ctl(&keys, "client", &["-H", &all, "reload", "app"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{}: ", hosts[0].url())),
        "the first host reloaded: {stdout}{stderr}"
    );
    assert!(
        stderr.contains(&format!("clusterctl: {}: ", hosts[1].url())),
        "the second host's failure, named: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: not asked", hosts[2].url())),
        "{stderr}"
    );
    let after: Vec<Vec<u32>> = hosts.iter().map(|h| h.daemon.pids("app")).collect();
    assert_ne!(after[0], before[0], "the first host's app was replaced");
    assert_eq!(
        after[1], before[1],
        "the failing host keeps its old instance"
    );
    assert_eq!(after[2], before[2], "the third host is untouched");
    let third = hosts[2].daemon.unit("app");
    assert_eq!(third["instances"][0]["restarts"], 0, "{third}");

    // --parallel asks every host: the third reloads too, and the exit still says one failed.
    let out = ctl(
        &keys,
        "client",
        &["--parallel", "-H", &all, "reload", "app"],
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let last: Vec<Vec<u32>> = hosts.iter().map(|h| h.daemon.pids("app")).collect();
    assert_ne!(last[0], after[0]);
    assert_eq!(last[1], before[1]);
    assert_ne!(
        last[2], before[2],
        "the third host reloaded with --parallel"
    );
}

#[test]
fn a_dead_host_is_reported_with_its_error_while_the_others_answer() {
    let Some(keys) = keys() else { return };
    let live = Host::sleeping(&keys, "alive");
    // Nothing listens there.
    let dead = format!("ssh://root@127.0.0.1:{}", free_port());
    // sshd answers, but its sessions' PATH has no clusterctl.
    let empty = tempfile::tempdir().expect("temp dir");
    let bare = Host::start_with_path(&keys, &[], empty.path());

    let hosts = format!("{},{dead},{}", live.url(), bare.url());
    let out = ctl(&keys, "client", &["-H", &hosts, "status"]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{table}{}", text(&out.stderr));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&live.url()) && l.contains("alive")),
        "{table}"
    );
    assert!(
        table.contains(&format!("{dead}: ssh could not connect: ")) && table.contains("refused"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{}: no clusterctl on the host's PATH", bare.url())),
        "{table}"
    );

    let out = ctl(&keys, "client", &["-H", &hosts, "status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let objects: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(objects[0]["status"]["units"][0]["name"], "alive");
    let error = objects[1]["error"].as_str().expect("the dead host's error");
    assert!(error.starts_with("ssh could not connect: "), "{error}");
    assert!(objects[1].get("status").is_none());

    // One host: the error names it, and a socket that is not there is said to be.
    let out = ctl(&keys, "client", &["-H", &dead, "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).starts_with(&format!("clusterctl: {dead}: ssh could not connect")),
        "{}",
        text(&out.stderr)
    );
    let out = ctl(
        &keys,
        "client",
        &[
            "-H",
            &live.url(),
            "--socket",
            "/nonexistent/ctl.sock",
            "status",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let said = text(&out.stderr);
    assert!(
        said.contains(&live.url())
            && said.contains("cannot connect to clusterd at /nonexistent/ctl.sock"),
        "{said}"
    );
    // Verbs that read local files are refused over -H.
    let out = ctl(
        &keys,
        "client",
        &["-H", &live.url(), "import", "ecosystem.config.js"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_key_restricted_to_dial_stdio_can_run_nothing_else() {
    let Some(keys) = keys() else { return };
    let host = Host::sleeping(&keys, "svc");
    // clusterctl works with the restricted key.
    let out = ctl(&keys, "restricted", &["-H", &host.url(), "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("svc"));

    // Any other command is dial-stdio all the same: what it "sends" is no request.
    let marker = host.daemon.path("ran");
    let touch = format!("touch {}", marker.display());
    let out = ssh(&keys, "restricted", host.port, &["--", &touch]);
    let said = text(&out.stdout);
    assert!(
        said.contains("malformed request"),
        "{said}{}",
        text(&out.stderr)
    );
    assert!(!marker.exists(), "the restricted key ran a command");
    // Nor a forwarding (restrict): not even to sshd's own port.
    let to_sshd = format!("127.0.0.1:{}", host.port);
    let out = ssh(&keys, "restricted", host.port, &["-W", &to_sshd]);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("prohibited"),
        "{}",
        text(&out.stderr)
    );
    // The unrestricted key runs commands: the check above is the key's, not the server's.
    let out = ssh(&keys, "client", host.port, &["--", &touch]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists());
}

/// `ssh` with `key` to root on the host at `port`, then `args`, under `timeout` (a forwarding
/// that was allowed could wait forever).
fn ssh(keys: &Keys, key: &str, port: u16, args: &[&str]) -> Output {
    let command = keys.ssh_command(key);
    Command::new("timeout")
        .arg("20")
        .args(command.split(' '))
        .args([
            "-o",
            "BatchMode=yes",
            "-p",
            &port.to_string(),
            "root@127.0.0.1",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ssh")
}
