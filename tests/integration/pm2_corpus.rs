//! Real PM2 ecosystem files (tests/data/pm2_corpus: one file per public project, each with
//! its repository, path and commit; the apps as the file declares them, evaluated to data
//! and with secrets and hosts redacted) go through `clusterctl import`, and every unit made
//! passes `clusterd --check`. Each file is classified by what the unit files' headers list,
//! and the classification is held to tests/data/pm2_corpus/EXPECTED, so that a change that
//! drops more of what real files say fails here. The counts are printed for the record:
//! `cargo test --test integration pm2_corpus:: -- --nocapture`.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// PM2's log keys: kept as listed reasons until the unit has a `[log]` for them.
const LOG_KEYS: &[&str] = &[
    "out_file",
    "error_file",
    "err_file",
    "log_file",
    "log",
    "out",
    "output",
    "err",
    "error",
    "merge_logs",
    "combine_logs",
    "log_date_format",
    "log_type",
];

/// What importing one file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Every key carried over.
    Clean,
    /// Imported; the header lists only keys that need nothing under clusterd ("Not needed").
    Noted,
    /// Imported; among what is not carried over there are log keys only.
    LogsOnly,
    /// Imported; something else is not carried over.
    Dropped,
    /// No unit, or a unit `clusterd --check` rejects.
    Error,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Clean => "clean",
            Class::Noted => "noted",
            Class::LogsOnly => "logs-only",
            Class::Dropped => "dropped",
            Class::Error => "error",
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pm2_corpus")
}

/// The keys a unit file's header lists under `heading`, up to the next blank comment line.
fn listed(unit: &str, heading: &str) -> Vec<String> {
    unit.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| l.starts_with("#   "))
        .map(|l| {
            let key = l.trim_start_matches("#   ").split(':').next().unwrap_or("");
            // `env.X` and `env_production.X` name variables of a table.
            key.to_string()
        })
        .collect()
}

/// Imports one corpus file into a fresh directory and classifies it; the second value says
/// why, for the table printed.
fn classify(file: &Path, scratch: &Path) -> (Class, String) {
    let text = fs::read_to_string(file).expect("read corpus file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("corpus file is JSON");
    let dir = scratch.join(file.file_stem().expect("a name"));
    let units = dir.join("units");
    fs::create_dir_all(&units).expect("mkdir");
    let ecosystem = dir.join("ecosystem.json");
    fs::write(&ecosystem, doc["ecosystem"].to_string()).expect("write ecosystem.json");
    let out = Command::new(CLUSTERCTL)
        .arg("import")
        .arg("--out")
        .arg(&units)
        .arg(&ecosystem)
        .output()
        .expect("run clusterctl import");
    if !out.status.success() {
        return (
            Class::Error,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        );
    }
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(&units)
        .output()
        .expect("clusterd --check");
    if !check.status.success() {
        return (
            Class::Error,
            format!("--check: {}", String::from_utf8_lossy(&check.stderr).trim()),
        );
    }
    let mut dropped = Vec::new();
    let mut noted = Vec::new();
    for entry in fs::read_dir(&units).expect("units").flatten() {
        let unit = fs::read_to_string(entry.path()).expect("read unit");
        dropped.extend(listed(&unit, "# Not carried over:"));
        noted.extend(listed(&unit, "# Not needed under clusterd:"));
    }
    dropped.sort();
    dropped.dedup();
    noted.sort();
    noted.dedup();
    let (logs, others): (Vec<String>, Vec<String>) = dropped
        .into_iter()
        .partition(|k| LOG_KEYS.contains(&k.as_str()));
    let class = if !others.is_empty() {
        Class::Dropped
    } else if !logs.is_empty() {
        Class::LogsOnly
    } else if !noted.is_empty() {
        Class::Noted
    } else {
        Class::Clean
    };
    let why = [
        (!others.is_empty()).then(|| format!("dropped: {}", others.join(", "))),
        (!logs.is_empty()).then(|| format!("logs: {}", logs.join(", "))),
        (!noted.is_empty()).then(|| format!("not needed: {}", noted.join(", "))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    (class, why)
}

/// Every file of the corpus imports as EXPECTED says, and the units check.
#[test]
fn real_ecosystem_files_import_as_classified() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("the corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "only {} corpus files", files.len());
    let expected: BTreeMap<String, String> = fs::read_to_string(dir.join("EXPECTED"))
        .expect("tests/data/pm2_corpus/EXPECTED")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (file, class) = l.split_once(' ')?;
            Some((file.to_string(), class.trim().to_string()))
        })
        .collect();
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut counts: BTreeMap<Class, usize> = BTreeMap::new();
    let mut got = Vec::new();
    let mut report = String::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (class, why) = classify(file, scratch.path());
        *counts.entry(class).or_default() += 1;
        report.push_str(&format!("{name:60} {:9} {why}\n", class.name()));
        got.push(format!("{name} {}", class.name()));
    }
    let total = files.len();
    let count = |c: Class| counts.get(&c).copied().unwrap_or(0);
    println!("{report}");
    println!(
        "pm2 corpus: {total} files: {} clean, {} with listed reasons ({} only keys clusterd needs not, {} only log keys, {} other keys dropped), {} errors",
        count(Class::Clean),
        count(Class::Noted) + count(Class::LogsOnly) + count(Class::Dropped),
        count(Class::Noted),
        count(Class::LogsOnly),
        count(Class::Dropped),
        count(Class::Error)
    );
    let differences: Vec<String> = got
        .iter()
        .filter(|line| {
            let (file, class) = line.split_once(' ').unwrap_or_default();
            expected.get(file).map(String::as_str) != Some(class)
        })
        .cloned()
        .collect();
    assert!(
        differences.is_empty(),
        "classification changed (update tests/data/pm2_corpus/EXPECTED if it improved):\n{}\n\n{report}",
        differences.join("\n")
    );
}
