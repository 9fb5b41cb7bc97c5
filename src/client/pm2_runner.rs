//! How PM2 runs an app's `script`, for `clusterctl import`: with which interpreter (PM2's
//! `resolveInterpreter`: by extension, else node for anything that is not a native program,
//! read from the file's first bytes), and whether the process is node (or ts-node, which
//! runs in node's process, or bun, whose `node:cluster` worker speaks Node's protocol), which
//! decides whether PM2's cluster mode can become `node_cluster` (and, when it cannot, why, in
//! words a PM2 user can act on).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How many bytes of a script are read to tell what it is.
const SNIFF_BYTES: u64 = 512;

/// The interpreter chosen for a script, and what the unit's process will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Runner {
    /// The interpreter, or none: the script is the program (or a command line).
    pub interpreter: Option<String>,
    /// `Ok` when the process is node (or a Node program that runs in node's own process,
    /// as ts-node does, or bun, whose node:cluster is Node's protocol): clusterd can be its
    /// cluster primary. Else why it cannot.
    pub node: Result<(), String>,
    /// How the interpreter was chosen, when that is worth a word in the unit's comment.
    pub how: Option<String>,
    /// The worker is bun, which takes Node's cluster `disconnect` for a user message: it
    /// is stopped by its signal (`node_cluster_stop = "signal"`).
    pub bun: bool,
}

/// Package managers: `npm start` runs the server as a child of npm.
const PACKAGE_MANAGERS: &[&str] = &["npm", "npx", "yarn", "pnpm", "bun", "bunx"];

/// Whether `script` (its first word) is a package manager: `npm start` runs the server as
/// its child.
pub(super) fn is_package_manager(script: &str) -> bool {
    let first = script.split_whitespace().next().unwrap_or_default();
    let name = Path::new(first)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(first);
    PACKAGE_MANAGERS.contains(&name)
}

/// PM2's interpreter for a script, by its extension, as PM2 picks it (`.ts`: PM2 uses bun if
/// it is installed, else node's own type stripping; node here, which a unit can rely on).
fn interpreter_for(script: &str) -> Option<&'static str> {
    let extension = Path::new(script).extension().and_then(|e| e.to_str())?;
    Some(match extension {
        "js" | "cjs" | "mjs" | "jsx" | "ts" | "mts" | "cts" | "tsx" => "node",
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        "sh" => "bash",
        "pl" => "perl",
        "coffee" => "coffee",
        _ => return None,
    })
}

/// Programs that run a TypeScript script in node's own process: that process is node, so
/// it can be a Node cluster worker.
const NODE_PROGRAMS: &[&str] = &[
    "ts-node",
    "ts-node-script",
    "ts-node-transpile-only",
    "ts-node-cwd",
];

/// The last component of a path, or the whole text.
fn base_name(program: &str) -> &str {
    Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program)
}

/// Whether an interpreter (a name or a path) is node, or runs its script in node's own
/// process (ts-node), as PM2's `/node$/` test of the interpreter's name says.
fn is_node(interpreter: &str) -> bool {
    let name = base_name(interpreter);
    name == "node" || name == "nodejs" || NODE_PROGRAMS.contains(&name) || name.starts_with("node@")
}

/// Whether an interpreter is bun, which PM2 (`determineExecMode`) runs in cluster mode as it
/// does node.
fn is_bun(interpreter: &str) -> bool {
    base_name(interpreter) == "bun"
}

/// Why bun can be clusterd's cluster worker, for the unit's comment.
const BUN_WORKER: &str = "bun: PM2's cluster workers run in PM2's own runtime, bun for a PM2 installed with bun; bun is the Node cluster worker here, and its node:cluster shares the port with SO_REUSEPORT on Linux";

/// What a script file is, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    /// A native program (ELF, or binary bytes): PM2 runs it as it is.
    Native,
    /// `#!` naming node: a Node program.
    NodeShebang,
    /// `#!` naming another interpreter (sh, python): the kernel runs it with that one.
    OtherShebang(String),
    /// Text without `#!`: PM2 runs it with node.
    Text,
    /// Not found (on this machine), or not readable.
    Missing,
}

/// Where `script` is: relative to the app's directory, else (a bare name, as PM2 does with
/// `which`) on PATH, else in the app's `node_modules/.bin`.
fn locate(dir: &Path, script: &str) -> Option<PathBuf> {
    let here = dir.join(script);
    if here.is_file() || script.contains('/') {
        return here.is_file().then_some(here);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|p| p.join(script))
        .chain(std::iter::once(dir.join("node_modules/.bin").join(script)))
        .find(|p| p.is_file())
}

/// The first bytes of the file at `path`: opened without blocking (a FIFO named as a script
/// must not stall import), at most [`SNIFF_BYTES`].
fn sniff(path: &Path) -> Sniffed {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    else {
        return Sniffed::Missing;
    };
    let mut head = Vec::new();
    if file.take(SNIFF_BYTES).read_to_end(&mut head).is_err() {
        return Sniffed::Missing;
    }
    if head.starts_with(b"\x7fELF") || head.contains(&0) {
        return Sniffed::Native;
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return Sniffed::Text;
    };
    let line = String::from_utf8_lossy(line);
    let line = line.lines().next().unwrap_or_default().trim();
    // `#!/usr/bin/node`, `#!/usr/bin/env node`, `#!/usr/bin/env -S node --flag`.
    if line.split_whitespace().any(is_node) {
        Sniffed::NodeShebang
    } else {
        Sniffed::OtherShebang(line.to_string())
    }
}

/// How PM2 runs `script` of an app in `dir`, given its `interpreter` key (if any).
pub(super) fn runner(dir: &Path, script: &str, interpreter: Option<&str>) -> Runner {
    let name = Path::new(script)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(script);
    let first_word = script.split_whitespace().next().unwrap_or_default();
    let not_node = |why: String| Runner {
        interpreter: None,
        node: Err(why),
        how: None,
        bun: false,
    };
    match interpreter {
        Some("none") => return not_node(not_node_program(first_word)),
        Some(i) => {
            return Runner {
                interpreter: Some(i.to_string()),
                node: if is_node(i) || is_bun(i) {
                    Ok(())
                } else {
                    Err(not_node_program(i))
                },
                how: is_bun(i).then(|| BUN_WORKER.to_string()),
                bun: is_bun(i),
            }
        }
        None => {}
    }
    // `script: "ts-node"` with the TypeScript file in `args`: the program is a Node program
    // found on PATH (or in node_modules/.bin) where it runs, and runs as it is.
    if NODE_PROGRAMS.contains(&script) {
        return Runner {
            interpreter: None,
            node: Ok(()),
            how: Some(format!(
                "{script} runs the TypeScript in node's own process"
            )),
            bun: false,
        };
    }
    // A directory is a Node package (node runs its main file), as PM2 runs it.
    if dir.join(script).is_dir() {
        return with_node(None);
    }
    if let Some(i) = interpreter_for(script) {
        return Runner {
            interpreter: Some(i.to_string()),
            node: if i == "node" {
                Ok(())
            } else {
                Err(not_node_program(i))
            },
            how: None,
            bun: false,
        };
    }
    // A command line (`"DEBUG=x npm start"`): run as written, as before.
    if script.split_whitespace().count() > 1 {
        return not_node(not_node_program(first_word));
    }
    if PACKAGE_MANAGERS.contains(&name) {
        return not_node(not_node_program(name));
    }
    let located = locate(dir, script);
    // A bare name found on PATH: `node NAME` would look for NAME in the working directory.
    let on_path = !dir.join(script).is_file();
    match located.map(|p| sniff(&p)) {
        Some(Sniffed::NodeShebang) if on_path => Runner {
            interpreter: None,
            node: Ok(()),
            how: Some(format!("{script} is a Node program on PATH (its first line names node)")),
            bun: false,
        },
        Some(Sniffed::NodeShebang) => with_node(Some("its first line names node")),
        Some(Sniffed::Text) => with_node(Some(
            "a text file: PM2 runs any script that is not a native program with node",
        )),
        Some(Sniffed::Native) => not_node(format!(
            "{script} is a native program, and PM2's cluster mode is for Node apps"
        )),
        Some(Sniffed::OtherShebang(line)) => {
            not_node(format!("{script} is run by `{line}`, not node"))
        }
        Some(Sniffed::Missing) | None if script.contains('/') => with_node(Some(
            "not found here; PM2 runs a script that is not a native program with node (as `./bin/www`)",
        )),
        Some(Sniffed::Missing) | None => not_node(format!(
            "{script} is not found on this machine, so whether it is a Node program is not known; if it is, write `interpreter: \"node\"` and the path of its script and import again"
        )),
    }
}

fn with_node(how: Option<&str>) -> Runner {
    Runner {
        interpreter: Some("node".to_string()),
        node: Ok(()),
        how: how.map(str::to_string),
        bun: false,
    }
}

/// Why cluster mode cannot be kept for an app run by `program` (a script or an interpreter
/// that is not node).
fn not_node_program(program: &str) -> String {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    if PACKAGE_MANAGERS.contains(&name) {
        return format!(
            "`{name}` cannot be clustered: {name} is not the server process but the program that starts it (through a shell), so the cluster workers would be {name} processes, each with the server as a child that shares no port (PM2 cannot either: its cluster workers `require()` the script, here the {name} program itself, and crash). Write the command that the package.json script runs instead (e.g. `script: \"./bin/www\"` or `script: \"dist/main.js\"`, with its arguments in `args`; for bun, the script with `interpreter: \"bun\"`) and import again"
        );
    }
    format!(
        "`{name}` is not node, and clusterd's node_cluster is Node's cluster protocol; for another program give the unit `listen = [\"tcp://...\"]` and make it accept from fd 3"
    )
}

/// The largest package.json read for [`package_script`].
const PACKAGE_JSON_MAX: u64 = 1 << 20;

/// What the package manager's arguments (`["run", "start"]`, `["start"]`) run, from
/// package.json in `dir`, as words for the reason: `; here package.json's "start" runs
/// `next start -p 3000`` (its programs are in node_modules/.bin).
pub(super) fn package_script(dir: &Path, args: &[String]) -> Option<String> {
    let mut words = args.iter().filter(|w| !w.starts_with('-'));
    let first = words.next()?;
    let name = match first.as_str() {
        "run" | "run-script" => words.next()?,
        "start" | "test" => first,
        _ => return None,
    };
    // Without blocking: a FIFO named package.json must not stall import.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(dir.join("package.json"))
        .ok()?;
    let mut text = String::new();
    file.take(PACKAGE_JSON_MAX).read_to_string(&mut text).ok()?;
    let package: serde_json::Value = serde_json::from_str(&text).ok()?;
    let command = package.get("scripts")?.get(name)?.as_str()?;
    Some(format!(
        "; here package.json's {name:?} runs `{command}` (its programs are in node_modules/.bin)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scripts_are_run_as_pm2_runs_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).expect("mkdir");
        std::fs::write(
            d.join("bin/www"),
            "#!/usr/bin/env node\nrequire('../app')\n",
        )
        .expect("www");
        std::fs::write(d.join("plain"), "console.log(1)\n").expect("plain");
        std::fs::write(d.join("tool"), "#!/bin/sh\necho hi\n").expect("tool");
        std::fs::write(d.join("elf"), b"\x7fELF\x02\x01\x01\0\0\0").expect("elf");
        for f in ["bin/www", "tool", "elf"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let www = runner(d, "./bin/www", None);
        assert_eq!(www.interpreter.as_deref(), Some("node"));
        assert!(www.node.is_ok());
        assert_eq!(
            runner(d, "plain", None).interpreter.as_deref(),
            Some("node")
        );
        let tool = runner(d, "./tool", None);
        assert_eq!(tool.interpreter, None);
        assert!(tool.node.unwrap_err().contains("/bin/sh"));
        let elf = runner(d, "./elf", None);
        assert_eq!(elf.interpreter, None);
        assert!(elf.node.unwrap_err().contains("native"));
        // Not here (imported on another machine): a path is a Node script, as PM2 assumes.
        assert!(runner(d, "./bin/missing", None).node.is_ok());
        assert!(runner(d, "app.mjs", None).node.is_ok());
        assert!(runner(d, "app.ts", Some("ts-node")).node.is_ok());
        assert!(
            runner(d, "app.ts", Some("/srv/x/node_modules/.bin/ts-node"))
                .node
                .is_ok()
        );
        let npm = runner(d, "npm", None);
        assert_eq!(npm.interpreter, None);
        assert!(npm
            .node
            .unwrap_err()
            .contains("cluster workers would be npm"));
        assert!(runner(d, "app.py", None).node.is_err());
        std::fs::write(
            d.join("package.json"),
            r#"{"scripts": {"start": "next start -p 3001"}}"#,
        )
        .expect("package.json");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for given in [
            &["run", "start"][..],
            &["start"],
            &["--bun", "run", "start"],
        ] {
            let hint = package_script(d, &args(given)).expect("a hint");
            assert!(hint.contains("`next start -p 3001`"), "{given:?}: {hint}");
        }
        assert_eq!(package_script(d, &args(&["run", "build"])), None);
        assert_eq!(package_script(d, &args(&["install"])), None);
        let bun = runner(d, "x.js", Some("/home/u/.bun/bin/bun"));
        assert!(bun.node.is_ok());
        assert!(bun.how.unwrap().contains("SO_REUSEPORT"));
        let ts_node = runner(d, "ts-node", None);
        assert_eq!(ts_node.interpreter, None);
        assert!(ts_node.node.is_ok());
    }
}
