//! `node_cluster = true`: clusterd is the Node cluster primary, so an unmodified Node app that
//! calls `server.listen(PORT)` shares the port across its instances, as under `pm2 -i N`.
//! Every test runs real `node` workers and is skipped, with a message, where node is absent.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// The seed's app, unchanged but for where its port comes from.
const APP: &str = r#"
const http = require('http');
http.createServer((req, res) => {
  if (req.url === '/suicide') {
    process.send({act: 'suicide'});
    setTimeout(() => process.exit(0), 300);
  }
  res.end(String(process.pid));
}).listen(+process.env.PORT, process.env.HOST);
"#;

fn node_available() -> bool {
    available("node", runs("node", &["--version"]))
}

/// Writes `app.js` (source `app`) next to the units and returns a unit running it.
fn node_unit(dir: &Path, app: &str, port: u16, instances: u32, extra: &str) -> String {
    let script = dir.join("app.js");
    std::fs::write(&script, app).expect("write app.js");
    format!(
        "command = [\"node\", \"{}\"]\ninstances = {instances}\nkill_timeout = \"3s\"\n\
         environment = {{ PORT = \"{port}\", HOST = \"127.0.0.1\" }}\n{extra}\n",
        toml_path(&script)
    )
}

/// Starts clusterd with unit `web` and waits until every instance listens.
fn start(app: &str, port: u16, instances: u32, extra: &str) -> (Daemon, Vec<u32>) {
    let mut daemon = Daemon::start(&[]);
    let text = node_unit(daemon.dir.path(), app, port, instances, extra);
    daemon.write_unit("web", &text);
    // Restart clusterd on the unit written next to the app.
    daemon.terminate();
    daemon.launch();
    let pids = daemon.wait_running("web", instances as usize);
    (daemon, pids)
}

/// One HTTP request on a new connection; the body (the serving worker's pid).
fn get(port: u16, path: &str) -> std::io::Result<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!("bad response {response:?}"))),
    }
}

fn get_pid(port: u16) -> std::io::Result<u32> {
    get(port, "/")?
        .trim()
        .parse()
        .map_err(std::io::Error::other)
}

/// Sends requests until every pid in `pids` has answered (bounded in count and time).
fn wait_all_serve(daemon: &Daemon, port: u16, pids: &[u32]) {
    let wanted: BTreeSet<u32> = pids.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..3000 {
        if seen.is_superset(&wanted) || Instant::now() > deadline {
            break;
        }
        if let Ok(pid) = get_pid(port) {
            seen.insert(pid);
        }
    }
    assert!(
        seen.is_superset(&wanted),
        "workers {wanted:?} should all serve, saw {seen:?}\n{}",
        daemon.log()
    );
}

/// Sequential requests from background threads until stopped (bounded in count and time).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
}

#[derive(Default, Debug)]
struct LoadReport {
    ok: u32,
    refused: u32,
    other_errors: Vec<String>,
    pids: BTreeSet<u32>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match get_pid(port) {
                            Ok(pid) => {
                                report.ok += 1;
                                report.pids.insert(pid);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                report.refused += 1
                            }
                            Err(e) => report.other_errors.push(e.to_string()),
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for thread in self.threads.drain(..) {
            let report = thread.join().expect("load thread");
            total.ok += report.ok;
            total.refused += report.refused;
            total.other_errors.extend(report.other_errors);
            total.pids.extend(report.pids);
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mode_line(mode: &str) -> String {
    format!("node_cluster = \"{mode}\"")
}

#[test]
fn the_seed_app_serves_from_every_worker_in_both_modes() {
    if !node_available() {
        return;
    }
    for mode in ["round-robin", "shared"] {
        for instances in 2..=4 {
            let port = free_port();
            let (daemon, pids) = start(APP, port, instances, &mode_line(mode));
            wait_all_serve(&daemon, port, &pids);
            // The address a person reads, not Node's key `127.0.0.1:PORT:4:undefined:0`
            // (issue 23).
            assert!(
                daemon.log().contains(&format!(
                    "web: listening for Node workers on 127.0.0.1:{port} ({mode})"
                )),
                "{}",
                daemon.log()
            );
        }
    }
}

#[test]
fn round_robin_spreads_300_sequential_requests_evenly() {
    if !node_available() {
        return;
    }
    let port = free_port();
    // `node_cluster = true` means round-robin.
    let (daemon, pids) = start(APP, port, 3, "node_cluster = true");
    let mut counts: BTreeMap<u32, u32> = pids.iter().map(|&p| (p, 0)).collect();
    for _ in 0..300 {
        let pid = get_pid(port).expect("request");
        *counts.entry(pid).or_default() += 1;
    }
    eprintln!("round-robin, 3 workers, 300 sequential requests: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    let mean = 300.0 / 3.0;
    for (pid, &count) in &counts {
        assert!(
            (f64::from(count) - mean).abs() <= mean * 0.10,
            "worker {pid} served {count}, mean {mean}: {counts:?}\n{}",
            daemon.log()
        );
    }
}

#[test]
fn an_https_worker_is_served_in_both_modes() {
    if !node_available() {
        return;
    }
    if !available("openssl", runs("openssl", &["version"])) {
        return;
    }
    let certs = tempfile::tempdir().expect("temp dir");
    let key = certs.path().join("key.pem");
    let cert = certs.path().join("cert.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let app = format!(
        r#"
const https = require('https');
const fs = require('fs');
https.createServer({{key: fs.readFileSync({key:?}), cert: fs.readFileSync({cert:?})}},
  (req, res) => res.end(String(process.pid))).listen(+process.env.PORT, process.env.HOST);
"#,
        key = key.display().to_string(),
        cert = cert.display().to_string()
    );
    for mode in ["round-robin", "shared"] {
        let port = free_port();
        let (daemon, pids) = start(&app, port, 2, &mode_line(mode));
        // Node as the TLS client; a new connection per request.
        let client = format!(
            r#"
const https = require('https');
const seen = new Set();
let left = 200;
function next() {{
  if (seen.size >= 2 || left-- === 0) {{ console.log([...seen].join(' ')); return; }}
  https.get({{host: '127.0.0.1', port: {port}, rejectUnauthorized: false, agent: false}}, res => {{
    let body = ''; res.on('data', d => body += d); res.on('end', () => {{ seen.add(body); next(); }});
  }}).on('error', e => {{ console.error(e.message); process.exit(1); }});
}}
next();
"#
        );
        let out = Command::new("node")
            .arg("-e")
            .arg(&client)
            .output()
            .expect("run the node client");
        let served: BTreeSet<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let wanted: BTreeSet<u32> = pids.iter().copied().collect();
        assert_eq!(
            served,
            wanted,
            "{mode}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
}

#[test]
fn killing_every_worker_while_requests_arrive_refuses_none() {
    if !node_available() {
        return;
    }
    for mode in ["round-robin", "shared"] {
        let port = free_port();
        let (daemon, pids) = start(APP, port, 3, &mode_line(mode));
        let load = Load::start(port, 2);
        std::thread::sleep(Duration::from_millis(300));
        for &pid in &pids {
            send_signal(pid, libc::SIGKILL);
        }
        let mut replacements = Vec::new();
        wait_for("three replacement workers", PATIENCE, || {
            replacements = daemon.pids("web");
            replacements.len() == 3 && replacements.iter().all(|p| !pids.contains(p))
        });
        let replacements = daemon.wait_running("web", 3);
        wait_all_serve(&daemon, port, &replacements);
        let report = load.finish();
        eprintln!("{mode}: SIGKILL of every worker under load: {report:?}");
        assert_eq!(report.refused, 0, "{mode}: {report:?}\n{}", daemon.log());
        // Only a request a worker was serving when it was killed may fail (one per client).
        assert!(
            report.other_errors.len() <= 2,
            "{mode}: {report:?}\n{}",
            daemon.log()
        );
        assert!(
            report.pids.iter().any(|p| replacements.contains(p)),
            "{report:?}"
        );
    }
}

#[test]
fn reload_under_load_fails_zero_requests() {
    if !node_available() {
        return;
    }
    for mode in ["round-robin", "shared"] {
        let port = free_port();
        let (daemon, old) = start(APP, port, 3, &mode_line(mode));
        let load = Load::start(port, 2);
        std::thread::sleep(Duration::from_millis(200));
        let out = daemon.ctl(&["reload", "web"]);
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        let report = load.finish();
        eprintln!("{mode}: reload under load: {report:?}");
        assert_eq!(report.refused, 0, "{mode}: {report:?}\n{}", daemon.log());
        assert!(
            report.other_errors.is_empty(),
            "{mode}: {report:?}\n{}",
            daemon.log()
        );
        let new = daemon.wait_running("web", 3);
        assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
        // The old workers left through the protocol: closed their servers, exited 0.
        for pid in old {
            wait_for("an old worker to exit", PATIENCE, || !alive(pid));
            let line = format!("(pid {pid}): exited with code 0");
            wait_for(&line, PATIENCE, || daemon.log().contains(&line));
        }
    }
}

#[test]
fn a_worker_suicide_still_works_in_cluster_mode() {
    if !node_available() {
        return;
    }
    let port = free_port();
    let (daemon, pids) = start(APP, port, 1, "node_cluster = true");
    let old = pids[0];
    assert_eq!(
        get(port, "/suicide").expect("request").trim(),
        old.to_string()
    );
    wait_for("the replacement to serve", PATIENCE, || {
        get_pid(port).is_ok_and(|pid| pid != old)
    });
    wait_for("the old worker to exit", PATIENCE, || !alive(old));
    // One replacement, no second restart on the old one's exit.
    std::thread::sleep(Duration::from_millis(500));
    let unit = daemon.unit("web");
    assert_eq!(unit["restarts"], 1, "{unit}\n{}", daemon.log());
    assert_eq!(daemon.pids("web").len(), 1, "{unit}");
}

#[test]
fn port_zero_is_one_port_for_every_worker_and_udp_is_shared() {
    if !node_available() {
        return;
    }
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port");
    let app = r#"
const http = require('http');
const dgram = require('dgram');
const fs = require('fs');
const server = http.createServer((req, res) => res.end(String(process.pid)));
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync('port-' + process.pid, String(server.address().port));
});
const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => udp.send(String(process.pid), r.port, r.address));
udp.bind(+process.env.PORT, '127.0.0.1');
"#;
    let (daemon, pids) = start(app, udp_port, 2, "node_cluster = true");
    let port_file = |pid: u32| daemon.dir.path().join(format!("port-{pid}"));
    // writeFileSync creates the file before it writes the port: wait for the number itself.
    let read_port = |pid: u32| {
        std::fs::read_to_string(port_file(pid))
            .ok()
            .filter(|text| text.parse::<u16>().is_ok())
    };
    wait_for("both workers to write their port", PATIENCE, || {
        pids.iter().all(|&p| read_port(p).is_some())
    });
    let ports: BTreeSet<String> = pids.iter().filter_map(|&p| read_port(p)).collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let port: u16 = ports
        .iter()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    wait_all_serve(&daemon, port, &pids);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp client");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut answered = BTreeSet::new();
    for _ in 0..40 {
        socket
            .send_to(b"who", ("127.0.0.1", udp_port))
            .expect("send");
        let mut buffer = [0u8; 64];
        if let Ok((n, _)) = socket.recv_from(&mut buffer) {
            answered.insert(String::from_utf8_lossy(&buffer[..n]).to_string());
        }
    }
    assert!(!answered.is_empty(), "no UDP answer\n{}", daemon.log());
    for pid in &answered {
        assert!(pids.iter().any(|p| p.to_string() == *pid), "{answered:?}");
    }
    assert!(
        // The log names the address (`udp4 127.0.0.1:PORT`), not Node's key (issue 23).
        daemon
            .log()
            .lines()
            .any(|l| l.contains("listening for Node workers on udp4 ") && l.contains("(shared)")),
        "UDP is always shared\n{}",
        daemon.log()
    );
}

#[test]
fn stop_disconnects_the_workers_and_releases_the_port() {
    if !node_available() {
        return;
    }
    let port = free_port();
    let (daemon, pids) = start(APP, port, 2, "node_cluster = true");
    wait_all_serve(&daemon, port, &pids);
    let out = daemon.ctl(&["stop", "web"]);
    assert!(out.status.success(), "{}", daemon.log());
    for pid in &pids {
        // clusterd writes its log lines when its loop is about to wait again, which may come
        // just after the answer.
        let line = format!("(pid {pid}): exited with code 0");
        wait_for(&line, PATIENCE, || daemon.log().contains(&line));
    }
    wait_for(
        "the port to be released",
        PATIENCE,
        || matches!(get_pid(port), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
    );
}

/// An app with its own graceful shutdown: on SIGTERM it writes `term-PID` into its working
/// directory (the daemon's scratch directory) and closes.
const APP_WITH_SIGTERM_HANDLER: &str = r#"
const http = require('http');
const fs = require('fs');
const path = require('path');
const server = http.createServer((req, res) => res.end(String(process.pid)));
server.listen(+process.env.PORT, process.env.HOST);
process.on('SIGTERM', () => {
  fs.writeFileSync(path.join(process.cwd(), 'term-' + process.pid), '');
  server.close(() => process.exit(0));
});
"#;

#[test]
fn stop_uses_node_disconnect_by_default_and_the_apps_own_handler_with_node_cluster_stop_signal() {
    if !node_available() {
        return;
    }
    for (extra, expect_handler) in [
        ("node_cluster = true", false),
        ("node_cluster = true\nnode_cluster_stop = \"signal\"", true),
    ] {
        let port = free_port();
        let (daemon, pids) = start(APP_WITH_SIGTERM_HANDLER, port, 2, extra);
        wait_all_serve(&daemon, port, &pids);
        let stopped = daemon.ctl(&["stop", "web"]);
        assert!(stopped.status.success(), "{}", daemon.log());
        for pid in &pids {
            let line = format!("(pid {pid}): exited with code 0");
            wait_for(&line, PATIENCE, || daemon.log().contains(&line));
            // disconnect: the worker closes its servers and leaves before any signal.
            let handler_ran = daemon.path(&format!("term-{pid}")).exists();
            assert_eq!(handler_ran, expect_handler, "{extra}\n{}", daemon.log());
        }
    }
}

#[test]
fn a_listen_clusterd_cannot_serve_gets_an_error_not_silence() {
    if !node_available() {
        return;
    }
    let port = free_port();
    // Something else holds the port: the worker's listen() must fail (EADDRINUSE), not hang.
    let _squatter = TcpListener::bind(("127.0.0.1", port)).expect("squat the port");
    let app = r#"
const http = require('http');
const server = http.createServer((req, res) => res.end('x'));
server.on('error', e => { process.send({act: 'listen-error', code: e.code}); process.exit(3); });
server.listen(+process.env.PORT, process.env.HOST);
"#;
    let mut daemon = Daemon::start(&[]);
    let text = node_unit(
        daemon.dir.path(),
        app,
        port,
        1,
        "node_cluster = true\nrestart = \"never\"",
    );
    daemon.write_unit("web", &text);
    daemon.terminate();
    daemon.launch();
    wait_for("the worker to report the error and exit", PATIENCE, || {
        daemon.log().contains("\"code\":\"EADDRINUSE\"")
            && daemon.log().contains("exited with code 3")
    });
}

/// PM2's `examples/wait-ready`: the app listens, finishes initialising, then calls
/// `process.send('ready')`. Here it says it listens and then waits for a `go` file.
const WAIT_READY_APP: &str = r#"
const http = require('http');
const fs = require('fs');
http.createServer((req, res) => res.end(String(process.pid)))
  .listen(+process.env.PORT, process.env.HOST, () => {
    fs.writeFileSync('listening-' + process.pid, '');
    const poll = setInterval(() => {
      if (fs.existsSync('go')) {
        clearInterval(poll);
        process.send('ready');
      }
    }, 20);
  });
"#;

#[test]
fn with_ready_notify_a_worker_that_listens_is_ready_only_once_it_sends_ready() {
    if !node_available() {
        return;
    }
    let port = free_port();
    let daemon = Daemon::start(&[]);
    let text = node_unit(
        daemon.dir.path(),
        WAIT_READY_APP,
        port,
        1,
        "node_cluster = true\nready = \"notify\"",
    );
    daemon.write_unit("web", &text);
    let _ = daemon.ctl(&["daemon-reload"]);
    // Instances start in clusterd's directory, where the app writes its files.
    wait_for("the worker to listen", PATIENCE, || {
        fs_has_prefix(daemon.dir.path(), "listening-")
    });
    assert_eq!(daemon.unit("web")["instances"][0]["state"], "starting");
    std::fs::write(daemon.path("go"), "").expect("go");
    daemon.wait_running("web", 1);
}

#[test]
fn by_default_a_worker_that_never_listens_counts_as_ready_after_listen_timeout() {
    if !node_available() {
        return;
    }
    // A queue worker: it never listens.
    let (daemon, pids) = start(
        "setInterval(() => {}, 1000);\n",
        free_port(),
        2,
        "node_cluster = true",
    );
    assert_eq!(pids.len(), 2);
    assert!(
        daemon
            .log()
            .contains("did not listen within 3s (listen_timeout); counted as ready"),
        "{}",
        daemon.log()
    );
}

fn fs_has_prefix(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
}

/// Express from npm (`.ci/run` installs it into target/test-npm), its hello-world as its
/// docs show it, under `node_cluster = true`.
const EXPRESS_APP: &str = r#"
const express = require('express');
const app = express();
app.get('/', (req, res) => res.send(String(process.pid)));
app.listen(+process.env.PORT, process.env.HOST);
"#;

#[test]
fn express_from_npm_serves_from_four_workers_in_turn_and_reloads_under_load() {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-npm/node_modules");
    if !node_available()
        || !available(
            "express in target/test-npm (npm install --prefix target/test-npm express@4)",
            modules.join("express").exists(),
        )
    {
        return;
    }
    let env_file = tempfile::NamedTempFile::new().expect("env file");
    std::fs::write(
        env_file.path(),
        format!("NODE_PATH={}\n", modules.display()),
    )
    .expect("write");
    let port = free_port();
    let extra = format!(
        "node_cluster = true\nenvironment_file = \"{}\"",
        toml_path(env_file.path())
    );
    let (daemon, old) = start(EXPRESS_APP, port, 4, &extra);
    wait_all_serve(&daemon, port, &old);
    // Round-robin: 100 requests in a row, 25 to each worker.
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..100 {
        *counts.entry(get_pid(port).expect("served")).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 25), "{counts:?}");

    let load = Load::start(port, 2);
    let out = daemon.ctl(&["reload", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = load.finish();
    assert_eq!(report.refused, 0, "{report:?}");
    assert!(report.other_errors.is_empty(), "{report:?}");
    let new = daemon.wait_running("web", 4);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
}
