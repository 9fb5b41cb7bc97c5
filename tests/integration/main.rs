//! The integration tests: one test binary (`autotests = false` in Cargo.toml), one module per
//! area, as just and ripgrep do, so that a change to the library or to one test file links
//! one binary instead of one per file. Run one area's tests with
//! `cargo test --test integration kill_and_send::`, one test with its name.
//!
//! The modules run in one process, on libtest's threads: anything process-wide (the
//! environment, the working directory, rlimits, signal dispositions) is left alone, and a
//! resource of the whole system (the one systemd-journald) is taken through a guard in
//! [`common`].

mod common;

mod bad_units;
mod bench_tools;
mod cluster_mode;
mod completion;
mod container;
mod control_socket;
mod examples;
mod first_hour;
mod fleet;
mod generated_files;
mod health;
mod hostile_cgroups;
mod hostile_control;
mod hostile_env_and_send;
mod hostile_environment;
mod hostile_health_and_jobs;
mod hostile_instances;
mod hostile_logs;
mod hostile_logs_files;
mod import;
mod instance_environment;
mod jobs;
mod kill_and_send;
mod log_layout;
mod logs;
mod mass_start;
mod metrics;
mod node_cluster;
mod pm2_corpus;
mod podman_image;
mod real_servers;
mod reexec;
mod resource_usage;
mod restart_and_give_up;
mod smoke;
mod stopping;
mod suicide;
mod top;
mod watch_and_cron;

/// With `autotests = false` cargo builds no file it is not told about: a test file added to
/// tests/ (say, by a branch written before the move) or here without its `mod` line above
/// would never run, and nothing would say so. This test says so.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let here = root.join("integration");
    let main = std::fs::read_to_string(here.join("main.rs")).expect("read main.rs");
    let declared: Vec<&str> = main
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let rust_files = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read tests dir")
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    };
    let outside = rust_files(&root);
    assert!(
        outside.is_empty(),
        "{outside:?} in tests/ would not be built: move them into tests/integration/ \
         (git mv), replace `mod common;` with `use crate::common;` and add `mod NAME;` \
         to tests/integration/main.rs"
    );
    let undeclared: Vec<String> = rust_files(&here)
        .into_iter()
        .filter(|name| name != "main" && !declared.contains(&name.as_str()))
        .collect();
    assert!(
        undeclared.is_empty(),
        "{undeclared:?} in tests/integration/ would not be built: add `mod NAME;` to \
         tests/integration/main.rs"
    );
}
