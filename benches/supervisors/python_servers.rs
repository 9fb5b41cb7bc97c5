//! Real Python servers under clusterd against their own masters, in one run: uvicorn (two
//! instances on clusterd's shared socket, with the default TCP_NODELAY and without it)
//! against `uvicorn --workers 2`, and gunicorn (two instances of one worker) against
//! `gunicorn --workers 2`. Same app, same wrk load (keep-alive, 50 connections).

use super::*;

const ASGI_APP: &str = r#"
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello\n"})
"#;

const WSGI_APP: &str = r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]
"#;

/// One way of running a Python server: its row key and what starts it.
#[derive(Clone, Copy)]
pub(super) enum PythonSetup {
    UvicornUnderClusterd,
    UvicornUnderClusterdWithoutNodelay,
    UvicornOwnMaster,
    GunicornUnderClusterd,
    GunicornOwnMaster,
}

impl PythonSetup {
    pub(super) const ALL: [PythonSetup; 5] = [
        PythonSetup::UvicornUnderClusterd,
        PythonSetup::UvicornUnderClusterdWithoutNodelay,
        PythonSetup::UvicornOwnMaster,
        PythonSetup::GunicornUnderClusterd,
        PythonSetup::GunicornOwnMaster,
    ];

    pub(super) fn key(self) -> &'static str {
        match self {
            PythonSetup::UvicornUnderClusterd => "py_uvicorn_clusterd",
            PythonSetup::UvicornUnderClusterdWithoutNodelay => "py_uvicorn_clusterd_nagle",
            PythonSetup::UvicornOwnMaster => "py_uvicorn_own",
            PythonSetup::GunicornUnderClusterd => "py_gunicorn_clusterd",
            PythonSetup::GunicornOwnMaster => "py_gunicorn_own",
        }
    }

    fn program(self) -> &'static str {
        match self {
            PythonSetup::GunicornUnderClusterd | PythonSetup::GunicornOwnMaster => "gunicorn",
            _ => "uvicorn",
        }
    }
}

/// Requests per second of `setup` under `wrk -t2 -c50`, after a 1 s warm-up.
pub(super) fn python_throughput(
    env: &Env,
    opts: &Opts,
    setup: PythonSetup,
    run: usize,
) -> Result<f64, String> {
    let program = which(setup.program()).ok_or(format!("{} not found", setup.program()))?;
    let dir = env.tmp.join(format!("{}-{run}", setup.key()));
    let _ = fs::remove_dir_all(&dir);
    let units = dir.join("units");
    fs::create_dir_all(&units).map_err(|e| e.to_string())?;
    fs::write(dir.join("asgi_app.py"), ASGI_APP).map_err(|e| e.to_string())?;
    fs::write(dir.join("wsgi_app.py"), WSGI_APP).map_err(|e| e.to_string())?;
    let port = free_port();
    let program = program.display().to_string();
    let in_clusterd = |command: String, extra: &str| -> Result<Daemon, String> {
        let unit = format!(
            "command = {command}\ninstances = 2\nworking_directory = {:?}\nlisten = [\"tcp://127.0.0.1:{port}\"]\n{extra}",
            dir.display().to_string()
        );
        fs::write(units.join("py.toml"), unit).map_err(|e| e.to_string())?;
        launch_clusterd(env, &units, &dir.join("clusterd.sock"), &dir)
    };
    let own_master = |args: Vec<String>| -> Result<Daemon, String> {
        let log = fs::File::create(dir.join("master.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&program)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        Ok(Daemon::from_child(child))
    };
    let uvicorn = format!("[{program:?}, \"--fd\", \"3\", \"--no-access-log\", \"asgi_app:app\"]");
    let _daemon = match setup {
        PythonSetup::UvicornUnderClusterd => in_clusterd(uvicorn, "")?,
        PythonSetup::UvicornUnderClusterdWithoutNodelay => {
            in_clusterd(uvicorn, "listen_options = { nodelay = false }\n")?
        }
        PythonSetup::UvicornOwnMaster => own_master(
            [
                "--workers",
                "2",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--no-access-log",
                "asgi_app:app",
            ]
            .map(String::from)
            .to_vec(),
        )?,
        PythonSetup::GunicornUnderClusterd => in_clusterd(
            format!("[{program:?}, \"--workers\", \"1\", \"wsgi_app:app\"]"),
            "",
        )?,
        PythonSetup::GunicornOwnMaster => own_master(
            [
                "--workers",
                "2",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "wsgi_app:app",
            ]
            .map(String::from)
            .to_vec(),
        )?,
    };
    if !wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        http_ok(port)
    }) {
        return Err(format!("{} did not answer", setup.key()));
    }
    run_timeout(&mut wrk_args(env, port, 1)?, Duration::from_secs(30))?;
    let out = run_timeout(
        &mut wrk_args(env, port, opts.wrk_secs)?,
        Duration::from_secs(opts.wrk_secs + 30),
    )?;
    let w = parse_wrk(&out.stdout)?;
    if w.failed > 0.0 {
        eprintln!("supervisors: {}: {} failed requests", setup.key(), w.failed);
    }
    Ok(w.rps)
}
