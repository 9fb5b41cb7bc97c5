//! The floor plan, held by a test: which module may use which. docs/architecture.md draws it;
//! this is the same plan as a table ([`RULES`]), and a test that reads every file under `src/`
//! and fails on a path (`use crate::…`, `crate::a::b(…)`, `super::…`) that the table does
//! not allow, so an arrow the wrong way cannot come back silently.
//!
//! A file belongs to the module its path names (`src/daemon/os/spawn.rs` is
//! `daemon::os::spawn`); the rule of the longest matching layer applies. Comments, strings
//! and test code (a `#[cfg(test)] mod … { … }` block, a file named `tests.rs` or
//! `*_tests.rs`) are not read: test code drives a layer from outside. The binaries in
//! `src/bin/` use the library by its name and are not held to it.
//!
//! Why a text check and not the compiler: Rust has no visibility that says "this module, but
//! not that one"; `pub(crate)` is all or nothing. Paths are how Rust names what a module
//! uses, so the paths are the graph.

#![cfg(test)]

use std::path::{Path, PathBuf};

/// One layer and what it may use: paths of the crate (segment prefixes: `unit` allows
/// `unit::Unit`; `supervisor::process_control::SpawnId` allows that one item) and, for the
/// layers that must not touch the OS, the paths outside the crate it must not use.
struct Rule {
    layer: &'static str,
    may_use: &'static [&'static str],
    must_not_use: &'static [&'static str],
    why: &'static str,
}

/// The plain data the supervisor's process-control module defines for both sides of the
/// `ProcessControl` trait (the trait itself is the supervisor's).
const SPAWN_DATA: [&str; 4] = [
    "supervisor::process_control::SpawnId",
    "supervisor::process_control::SpawnError",
    "supervisor::process_control::SpawnStage",
    "supervisor::process_control::Usage",
];

const RULES: &[Rule] = &[
    Rule {
        layer: "daemon::os",
        may_use: &[
            "daemon::os",
            "unit",
            "protocol",
            SPAWN_DATA[0],
            SPAWN_DATA[1],
            SPAWN_DATA[2],
            SPAWN_DATA[3],
            "net_bind",
        ],
        must_not_use: &[],
        why: "os/ is the OS's primitives: no thread, no log thread, worker I/O, inbox or \
              supervisor trait; what ties them together lives in src/daemon/",
    },
    Rule {
        layer: "daemon",
        may_use: &[
            "daemon",
            "supervisor",
            "node_cluster",
            "unit",
            "protocol",
            "metrics",
            "printable",
            "log_limit",
            "net_bind",
        ],
        must_not_use: &[],
        why: "the daemon is not the client: cli and client use it, never the other way",
    },
    Rule {
        layer: "node_cluster",
        may_use: &[
            "node_cluster",
            "unit",
            "supervisor::event::WorkerMessage",
            SPAWN_DATA[0],
            "printable",
            "log_limit",
            "net_bind",
        ],
        must_not_use: &[],
        why: "node_cluster is driven by the daemon's I/O thread and does not depend on the daemon",
    },
    Rule {
        layer: "supervisor",
        may_use: &["supervisor", "unit", "protocol", "printable", "log_limit"],
        must_not_use: &[
            "std::fs",
            "std::net",
            "std::os",
            "std::process",
            "std::thread",
            "Instant::now",
            "SystemTime::now",
        ],
        why:
            "the supervisor does not know the OS: it asks a ProcessControl, and is handed the time",
    },
    Rule {
        layer: "unit",
        may_use: &["unit", "printable"],
        must_not_use: &[],
        why: "unit files are read by both binaries and know nothing of either",
    },
    Rule {
        layer: "protocol",
        may_use: &["protocol", "unit"],
        must_not_use: &[],
        why: "the protocol is shared by both binaries",
    },
    Rule {
        layer: "net_bind",
        may_use: &["net_bind"],
        must_not_use: &[],
        why: "a leaf shared by daemon::os and node_cluster",
    },
    Rule {
        layer: "printable",
        may_use: &["printable"],
        must_not_use: &[],
        why: "a leaf",
    },
    Rule {
        layer: "log_limit",
        may_use: &["log_limit"],
        must_not_use: &[],
        why: "a leaf",
    },
];

/// Every `.rs` file under `dir`, but the binaries'.
fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                source_files(&path, files);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module a file under `src/` is: `daemon/os/mod.rs` → `["daemon", "os"]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if segments
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        segments.pop();
    }
    segments
}

fn is_test_file(relative: &Path) -> bool {
    relative
        .file_stem()
        .is_some_and(|s| s == "tests" || s.to_string_lossy().ends_with("_tests"))
}

/// The code of a Rust file with every comment, string and character literal blanked out
/// (so that braces and paths in them are not read as code), lines kept.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#, ….
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(&other) => out.push(blank(other)),
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&inner) = chars.get(i) {
                    out.push(blank(inner));
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime or label.
            let end = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` without its `#[cfg(test)] mod … { … }` blocks.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_block = trimmed
            .strip_prefix("mod ")
            .and_then(|m| m.find(['{', ';']).map(|p| m.as_bytes()[p] == b'{'))
            .unwrap_or(false);
        if !is_block {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let Some(open) = after.find('{') else {
            break;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (offset, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.extend(after[..end].chars().filter(|&c| c == '\n'));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads a path's continuation at `text` (just after `prefix::`): `a::b::c`, or a group
/// `{a::b, c::{d, e}, self}`; pushes every full path found, `prefix` included.
fn expand(text: &str, prefix: &str, paths: &mut Vec<String>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, ch) in group.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand_item(&group[start..i], prefix, paths);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_item(&group[start..i], prefix, paths);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    expand_item(text, prefix, paths);
}

fn expand_item(item: &str, prefix: &str, paths: &mut Vec<String>) {
    let item = item.trim_start();
    let name: String = item.chars().take_while(|&c| is_ident_char(c)).collect();
    let rest = &item[name.len()..];
    if name.is_empty() {
        // `*`, or nothing: the prefix itself.
        paths.push(prefix.to_string());
        return;
    }
    if name == "self" {
        paths.push(prefix.to_string());
        return;
    }
    let path = format!("{prefix}::{name}");
    match rest.trim_start().strip_prefix("::") {
        Some(more) => expand(more, &path, paths),
        None => paths.push(path),
    }
}

/// Where a path starts: the crate's own (`crate::`, `super::`), or outside it (`std::`, and
/// the clocks).
const ROOTS: [&str; 5] = ["crate", "super", "std", "Instant", "SystemTime"];

/// Every path `code` (of module `module`) names, with the byte offset where it is written:
/// the crate's own as `a::b::c` from the crate's root and `true`; the others as written.
fn paths_in(code: &str, module: &[String]) -> Vec<(usize, String, bool)> {
    let mut paths = Vec::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("::") {
        let before = &code[..at];
        let word_start = before
            .rfind(|c: char| !is_ident_char(c))
            .map_or(0, |p| p + 1);
        let word = &before[word_start..];
        // The middle of a path (`a::super::`) is not where one starts.
        let in_path = word_start >= 2 && &bytes[word_start - 2..word_start] == b"::";
        if !ROOTS.contains(&word) || in_path {
            continue;
        }
        let ours = word == "crate" || word == "super";
        let mut found = Vec::new();
        expand(&code[at + 2..], word, &mut found);
        for path in found {
            paths.push((word_start, resolve(&path, module), ours));
        }
    }
    paths
}

/// `crate::a::b` → `a::b`; `super::x` from module `m::n::o` → `m::n::x`; others unchanged.
fn resolve(path: &str, module: &[String]) -> String {
    let mut segments = path.split("::");
    let mut resolved: Vec<String> = match segments.next() {
        Some("crate") => Vec::new(),
        Some("super") => {
            let mut base = module.to_vec();
            base.pop();
            base
        }
        _ => return path.to_string(),
    };
    for segment in segments {
        if segment == "super" {
            resolved.pop();
        } else {
            resolved.push(segment.to_string());
        }
    }
    resolved.join("::")
}

/// True if `path` is `prefix` or inside it, segment by segment.
fn within(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// Every arrow the rules forbid: (file, line, path, why).
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    source_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Ok(relative) = file.strip_prefix(src) else {
            continue;
        };
        if is_test_file(relative) {
            continue;
        }
        let module = module_of(relative);
        let name = module.join("::");
        let Some(rule) = RULES
            .iter()
            .filter(|r| within(&name, r.layer))
            .max_by_key(|r| r.layer.len())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let code = without_test_modules(&code_only(&text));
        for (offset, path, ours) in paths_in(&code, &module) {
            let allowed = if ours {
                within(&path, &name) || rule.may_use.iter().any(|p| within(&path, p))
            } else {
                !rule.must_not_use.iter().any(|p| within(&path, p))
            };
            if !allowed {
                let line = code[..offset].matches('\n').count() + 1;
                found.push(format!(
                    "src/{}:{line}: {} uses {path}: {}",
                    relative.display(),
                    rule.layer,
                    rule.why
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_arrow_between_modules_goes_the_way_the_floor_plan_says() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "arrows the floor plan (src/layers.rs, docs/architecture.md) forbids:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_paths_however_they_are_written() {
    let module: Vec<String> = ["daemon", "os", "spawn"].map(String::from).to_vec();
    let code = code_only(
        "use crate::{daemon::signals::EventSender, supervisor::{event::Event, process_control::SpawnId}};\n\
         // crate::cli::nothing in a comment\n\
         let s = \"crate::client::nothing in a string\";\n\
         super::super::worker_io::WorkerIo::new(); crate::daemon::logs::Logs::x(); 'a: loop {}\n",
    );
    let paths: Vec<String> = paths_in(&code, &module)
        .into_iter()
        .map(|(_, path, _)| path)
        .collect();
    for expected in [
        "daemon::signals::EventSender",
        "supervisor::event::Event",
        "supervisor::process_control::SpawnId",
        "daemon::worker_io::WorkerIo::new",
        "daemon::logs::Logs::x",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} in {paths:?}"
        );
    }
    assert!(!paths
        .iter()
        .any(|p| p.starts_with("cli") || p.starts_with("client")));
    let tests = without_test_modules("a();\n#[cfg(test)]\nmod tests {\n use crate::x;\n}\nb();\n");
    assert_eq!(tests.lines().count(), 6);
    assert!(!tests.contains("crate::x") && tests.contains("b();"));
    assert!(within(
        "supervisor::process_control::SpawnId",
        SPAWN_DATA[0]
    ));
    assert!(!within(
        "supervisor::process_control::SpawnIdea",
        SPAWN_DATA[0]
    ));
}

/// The check itself fails where it should: a file of os/ that uses the signal inbox, or
/// `node_cluster` reaching into the daemon, is named.
#[test]
fn a_wrong_way_arrow_is_named_with_its_file_and_line() {
    let dir = std::env::temp_dir().join(format!("clusterd-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir)).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod daemon;\nmod node_cluster;\n");
    write("daemon/mod.rs", "pub mod os;\npub mod signals;\n");
    write("daemon/signals.rs", "pub struct EventSender;\n");
    write(
        "daemon/os/timer.rs",
        "use std::fs;\nuse crate::daemon::os::cgroup;\nuse crate::daemon::signals::EventSender;\n",
    );
    write(
        "node_cluster/listener.rs",
        "fn f() {\n    crate::daemon::os::listen_sockets::bind_tcp();\n}\n",
    );
    write(
        "supervisor/mod.rs",
        "use std::fs::File;\n#[cfg(test)]\nmod tests {\n    use std::fs;\n}\n",
    );
    let found = violations(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0]
        .starts_with("src/daemon/os/timer.rs:3: daemon::os uses daemon::signals::EventSender"));
    assert!(found[1].starts_with(
        "src/node_cluster/listener.rs:2: node_cluster uses daemon::os::listen_sockets::bind_tcp"
    ));
    assert!(found[2].starts_with("src/supervisor/mod.rs:1: supervisor uses std::fs::File"));
}
