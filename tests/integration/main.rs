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
mod cluster_mode;
mod container;
mod control_socket;
mod examples;
mod generated_files;
mod hostile_cgroups;
mod hostile_control;
mod hostile_env_and_send;
mod hostile_environment;
mod hostile_instances;
mod hostile_logs;
mod hostile_logs_files;
mod import;
mod instance_environment;
mod kill_and_send;
mod logs;
mod metrics;
mod node_cluster;
mod real_servers;
mod resource_usage;
mod restart_and_give_up;
mod smoke;
mod stopping;
mod suicide;
mod top;
mod watch_and_cron;
