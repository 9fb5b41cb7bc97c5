//! The examples users copy must work: every unit file in `units/` loads, every ```toml block
//! in the documentation is a complete, valid unit file, the example the Debian package puts
//! in /etc/clusterd serves once copied, and `packaging/clusterd.service` passes
//! `systemd-analyze verify` (where that tool exists).

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clusterd::unit::{load_units_dir, Unit};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn root() -> &'static Path {
    Path::new(ROOT)
}

#[test]
fn every_example_unit_in_units_is_valid() {
    let dir = root().join("units");
    let files = load_units_dir(&dir).expect("read units/");
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for expected in ["crashy", "node-web", "suicide", "ticker", "web"] {
        assert!(
            names.contains(&expected),
            "units/{expected}.toml is missing (found {names:?})"
        );
    }
    let errors: Vec<String> = files
        .iter()
        .filter_map(|f| f.result.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        errors.is_empty(),
        "invalid example units:\n{}",
        errors.join("\n")
    );
}

/// packaging/etc/hello.toml.example, copied to a unit as its comments say (on a free port,
/// and as clusterd's own user where the test cannot switch users), runs and answers.
#[test]
fn the_packaged_example_unit_serves_once_copied() {
    let text = fs::read_to_string(root().join("packaging/etc/hello.toml.example"))
        .expect("read the packaged example");
    let port = common::free_port();
    let mut unit = text.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
    assert_ne!(
        unit, text,
        "the example no longer listens on 127.0.0.1:8000"
    );
    // The packaged service finds python3 in /usr/bin; this test's PATH may find one only
    // its own user can run (pyenv under /root), which `nobody` cannot.
    let system_python = Path::new("/usr/bin/python3").exists();
    if common::have_root() && system_python {
        unit = unit.replace("[\"python3\"", "[\"/usr/bin/python3\"");
    } else {
        unit = unit.replace("user = \"nobody\"", "");
    }
    let daemon = common::Daemon::start(&[("hello", &unit)]);
    daemon.wait_running("hello", 2);
    let mut answers = std::collections::BTreeSet::new();
    common::wait_for("both instances to answer", common::PATIENCE, || {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        if let Some(line) = reply.lines().find(|l| l.starts_with("hello from instance")) {
            answers.insert(line.split(',').next().unwrap_or_default().to_string());
        }
        answers.len() == 2
    });
}

#[test]
fn example_units_refer_to_workers_that_exist() {
    let dir = root().join("units");
    for file in load_units_dir(&dir).expect("read units/") {
        let unit = file.result.expect("valid unit");
        let Some(working_directory) = &unit.working_directory else {
            continue;
        };
        assert!(
            working_directory.is_dir(),
            "{}: working_directory {} does not exist",
            file.path.display(),
            working_directory.display()
        );
        // Script arguments such as "web.py" must be there, relative to working_directory.
        for argument in &unit.command[1..] {
            let looks_like_script = [".py", ".js", ".sh"]
                .iter()
                .any(|ext| argument.ends_with(ext));
            if looks_like_script {
                let script = working_directory.join(argument);
                assert!(
                    script.is_file(),
                    "{}: {} does not exist",
                    file.path.display(),
                    script.display()
                );
            }
        }
    }
}

/// The ```toml blocks of a Markdown text, numbered from 1 in order of appearance.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start();
        match current.as_mut() {
            None => {
                if fence.starts_with("```") && fence[3..].trim() == "toml" {
                    current = Some(String::new());
                }
            }
            Some(block) => {
                if fence.starts_with("```") {
                    blocks.push(current.take().unwrap_or_default());
                } else {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated ```toml block");
    blocks
}

fn documentation_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files.push(root().join("README.md"));
    files
}

#[test]
fn every_toml_snippet_in_the_docs_is_a_valid_unit_file() {
    let mut checked = 0;
    let mut errors = Vec::new();
    for file in documentation_files() {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let relative = file.strip_prefix(root()).unwrap_or(&file);
        for (n, block) in toml_blocks(&text).iter().enumerate() {
            // docs/unit-files.md#3 is the third ```toml block of that file; the unit is named
            // after the file's stem, which is a valid unit name.
            let label = PathBuf::from(format!("{}#{}", relative.display(), n + 1));
            checked += 1;
            if let Err(e) = Unit::parse(&label, block) {
                errors.push(format!("{e}\n--- the block:\n{block}---"));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "invalid TOML snippets in the docs:\n{}",
        errors.join("\n")
    );
    assert!(
        checked >= 10,
        "only {checked} ```toml blocks found in docs/ and README.md: was the fence syntax changed?"
    );
}

#[test]
fn the_snippet_extractor_finds_only_toml_blocks() {
    let markdown = "text\n```toml\ncommand = \"a\"\n```\n```\nnot toml\n```\n  ```toml\ncommand = \"b\"\ninstances = 2\n  ```\n";
    assert_eq!(
        toml_blocks(markdown),
        ["command = \"a\"\n", "command = \"b\"\ninstances = 2\n"]
    );
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success());
    found.map(|_| PathBuf::from("systemd-analyze"))
}

#[test]
fn the_systemd_service_passes_systemd_analyze_verify() {
    let tool = systemd_analyze();
    if !common::available("systemd-analyze", tool.is_some()) {
        return;
    }
    let Some(tool) = tool else { return };
    let service = root().join("packaging/clusterd.service");
    let text = fs::read_to_string(&service).expect("read packaging/clusterd.service");
    for required in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/clusterd --units /etc/clusterd --socket-group clusterd",
        "Delegate=yes",
        "ExecReload=/usr/bin/clusterctl daemon-reload",
        "KillMode=mixed",
        "RuntimeDirectory=clusterd",
    ] {
        assert!(
            text.lines().any(|line| line.trim() == required),
            "packaging/clusterd.service lacks the line {required:?}"
        );
    }

    // verify checks that ExecStart= programs exist, and /usr/bin/clusterd is not installed
    // here: check a copy that points at the binaries this build made, so that any complaint
    // left is about the file itself.
    let clusterd = env!("CARGO_BIN_EXE_clusterd");
    let clusterctl = env!("CARGO_BIN_EXE_clusterctl");
    let copy = text
        .replace("/usr/bin/clusterd ", &format!("\"{clusterd}\" "))
        .replace("/usr/bin/clusterctl ", &format!("\"{clusterctl}\" "));
    assert_ne!(copy, text, "ExecStart/ExecReload paths were not replaced");
    let dir = tempfile::tempdir().expect("temp dir");
    let unit_path = dir.path().join("clusterd.service");
    fs::write(&unit_path, copy).expect("write the copy");

    let output = Command::new(tool)
        .arg("verify")
        .arg(&unit_path)
        .output()
        .expect("run systemd-analyze verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 even for unknown keys and unparsable values, which it reports as
    // "clusterd.service:LINE: ..." warnings: any line naming the file is a failure.
    let complaints: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|line| line.contains("clusterd.service"))
        .collect();
    assert!(
        output.status.success() && complaints.is_empty(),
        "systemd-analyze verify packaging/clusterd.service (with ExecStart= pointing at {clusterd}) failed ({}):\n{stdout}{stderr}",
        output.status
    );
}

/// The key table of docs/unit-files.md is the one in `unit::KEYS`, word for word: the docs
/// cannot list a key the parser does not take, or miss one it does.
#[test]
fn the_docs_key_table_is_the_parsers_key_table() {
    let doc = fs::read_to_string(root().join("docs/unit-files.md")).expect("unit-files.md");
    let start = doc
        .find("| key | type | default | meaning |")
        .expect("the key table");
    let table: String = doc[start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(table, clusterd::unit::markdown_table());
}
