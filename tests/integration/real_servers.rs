//! Servers nobody here wrote, run exactly as the docs show them: gunicorn as README.md's unit
//! and docs/cluster-mode.md say, uvicorn as docs/cluster-mode.md says. Each serves from
//! every instance and is reloaded under load without a refused connection, and gunicorn,
//! which drains, without a failed request. CI installs both (Debian's `gunicorn` and
//! `uvicorn` packages).

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use common::http_load::{get, Load};
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A WSGI app that answers with the pid of the worker that served.
const WSGI_APP: &str = r#"
import os
def app(environ, start_response):
    body = b"%d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// The same as an ASGI app.
const ASGI_APP: &str = r#"
import os
async def app(scope, receive, send):
    assert scope["type"] == "http"
    body = b"%d\n" % os.getpid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"#;

fn present(program: &str) -> bool {
    available(
        &format!("{program} (Debian package {program})"),
        runs(program, &["--version"]),
    )
}

/// The first ```toml block after `after` in the file `doc` of the repository.
fn toml_block_after(doc: &str, after: &str) -> String {
    let text = fs::read_to_string(format!("{ROOT}/{doc}")).expect("read the doc");
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{doc} no longer says {after:?}"));
    let block = &text[from..];
    let start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = block[start..].find("```").expect("the block's end");
    block[start..start + end].to_string()
}

/// A daemon running `unit` (named `name`) with `app.py` in its working directory, where the
/// instances start; returns it once `instances` instances run.
/// gunicorn 25.1 and later open a control socket per master, one path for every instance:
/// docs/cluster-mode.md says to add `--no-control-socket` then (older ones refuse the flag).
/// The examples run as the docs say: with the flag when the installed gunicorn has it.
fn as_the_docs_say_for_this_gunicorn(unit: &str) -> String {
    let doc = fs::read_to_string(format!("{ROOT}/docs/cluster-mode.md")).expect("read the doc");
    assert!(
        doc.contains("add `--no-control-socket`"),
        "docs/cluster-mode.md"
    );
    let help = std::process::Command::new("gunicorn")
        .arg("--help")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    if !help.contains("--no-control-socket") {
        return unit.to_string();
    }
    unit.replacen(
        "\"gunicorn\", ",
        "\"gunicorn\", \"--no-control-socket\", ",
        1,
    )
    .replacen("\"gunicorn ", "\"gunicorn --no-control-socket ", 1)
}

fn serve(name: &str, unit: &str, app: &str, instances: usize) -> Daemon {
    let unit = &if unit.contains("gunicorn") {
        as_the_docs_say_for_this_gunicorn(unit)
    } else {
        unit.to_string()
    };
    let daemon = Daemon::start(&[]);
    fs::write(daemon.path("app.py"), app).expect("write app.py");
    daemon.write_unit(name, unit);
    let out = daemon.ctl(&["daemon-reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_running(name, instances);
    daemon
}

/// How a server ends its connections when it is stopped.
#[derive(Clone, Copy, PartialEq)]
enum Shutdown {
    /// It answers every connection it accepted (gunicorn's sync workers take one at a time).
    Drains,
    /// It closes connections it accepted but has not read a request from yet (uvicorn: its
    /// shutdown closes every connection without a request in progress), so a reload under
    /// load may cost a request that way; it must never cost a refused connection.
    ClosesUnreadConnections,
}

/// Every instance answers, then two reloads under load replace every instance without a
/// refused connection (and, for a server that drains, without any failed request).
fn serves_and_reloads_under_load(
    daemon: &Daemon,
    name: &str,
    port: u16,
    instances: usize,
    shutdown: Shutdown,
) {
    let mut answered = BTreeSet::new();
    wait_for("the server to answer", PATIENCE, || {
        if let Ok(pid) = get(port) {
            answered.insert(pid);
        }
        !answered.is_empty()
    });
    let before = daemon.wait_running(name, instances);
    let load = Load::start(port, Duration::from_secs(120));
    for _ in 0..2 {
        let out = daemon.ctl(&["reload", name]);
        assert!(
            out.status.success(),
            "reload failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
    let report = load.finish();
    match shutdown {
        Shutdown::Drains => report.assert_every_request_served(),
        Shutdown::ClosesUnreadConnections => {
            assert!(report.ok > 0, "{report:?}");
            assert_eq!(report.refused, 0, "{report:?}");
        }
    }
    let after = daemon.wait_running(name, instances);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "{before:?} {after:?}"
    );
}

#[test]
fn gunicorn_as_the_readme_shows_it_serves_from_four_instances_and_reloads_under_load() {
    if !present("gunicorn") {
        return;
    }
    let unit = toml_block_after("README.md", "A unit file is short");
    assert!(
        unit.contains("command = [\"gunicorn\", \"--workers\", \"1\", \"app:app\"]"),
        "{unit}"
    );
    let port = free_port();
    let unit = unit.replace("0.0.0.0:8000", &format!("127.0.0.1:{port}"));
    let daemon = serve("api", &unit, WSGI_APP, 4);
    serves_and_reloads_under_load(&daemon, "api", port, 4, Shutdown::Drains);
    // gunicorn's log says it took the socket clusterd passed.
    assert!(
        fs::read_to_string(daemon.log_dir().join("api.log"))
            .unwrap_or_default()
            .contains(&format!("Listening at: http://127.0.0.1:{port}")),
        "{}",
        daemon.log()
    );
}

/// `command` as docs/cluster-mode.md's table shows it for `program`, two instances on one
/// port, serving and reloaded under load.
fn as_cluster_mode_md_shows_it(program: &str, command: &str, app: &str, shutdown: Shutdown) {
    let doc = fs::read_to_string(format!("{ROOT}/docs/cluster-mode.md")).expect("read the doc");
    assert!(
        doc.contains(&format!("| {program} | `{command}`")),
        "docs/cluster-mode.md no longer shows `{command}`"
    );
    if !present(program) {
        return;
    }
    let port = free_port();
    let unit = format!(
        "command = \"{command}\"\ninstances = 2\nlisten = [\"tcp://127.0.0.1:{port}\"]\nkill_timeout = \"10s\"\n"
    );
    let daemon = serve("web", &unit, app, 2);
    serves_and_reloads_under_load(&daemon, "web", port, 2, shutdown);
}

#[test]
fn gunicorn_as_cluster_mode_md_shows_it_serves_and_reloads_under_load() {
    as_cluster_mode_md_shows_it("gunicorn", "gunicorn app:app", WSGI_APP, Shutdown::Drains);
}

#[test]
fn uvicorn_as_cluster_mode_md_shows_it_serves_and_reloads_under_load() {
    as_cluster_mode_md_shows_it(
        "uvicorn",
        "uvicorn --fd 3 app:app",
        ASGI_APP,
        Shutdown::ClosesUnreadConnections,
    );
}
