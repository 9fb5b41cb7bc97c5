//! clusterd: a process supervisor for Linux that keeps N copies of any program running, the
//! way Node's cluster module and PM2 do for Node programs.
//!
//! The tree shows the architecture, from the outside in:
//!
//! - [`unit`]: unit files. A raw serde form becomes a validated [`unit::Unit`]; errors name
//!   the file, line and column.
//! - [`protocol`]: the requests and responses clusterd and clusterctl exchange, and where the
//!   control socket lives — shared by both binaries.
//! - [`cli`]: both binaries' command lines (clap), which also render the man pages and
//!   shell completions.
//! - [`client`]: clusterctl's side — sending a request, rendering the answer.
//! - [`supervisor`]: the state machine that owns every unit, instance, deadline and restart
//!   budget. It sees the OS only through its `ProcessControl` trait, so tests drive it with
//!   fed events and an injected clock.
//! - [`daemon`]: clusterd's side — the event loop, what feeds it (signals, the control
//!   socket's threads, the worker I/O thread), the real `ProcessControl`, and `daemon::os`,
//!   the OS's primitives it is built on: spawning, reaping, cgroups, listening sockets.
//! - [`node_cluster`]: for `node_cluster` units the I/O thread is the Node cluster primary, so
//!   unmodified Node apps that call `server.listen(3000)` share the port.
//! - [`metrics`]: a status report as Prometheus metrics, for `clusterctl metrics` and
//!   `clusterd --metrics-listen` alike.
//! - [`printable`], [`log_limit`] and [`net_bind`]: small helpers several of them share — text
//!   safe for a terminal, warnings that cannot flood the log, a TCP socket bound as clusterd
//!   binds them.
//!
//! Which module may use which is written down, and tested, in `src/layers.rs`
//! (docs/architecture.md draws it).

pub mod cli;
pub mod client;
pub mod daemon;
mod layers;
pub(crate) mod log_limit;
pub mod metrics;
pub(crate) mod net_bind;
pub(crate) mod node_cluster;
pub mod printable;
pub mod protocol;
pub(crate) mod supervisor;
pub mod unit;

/// Unit tests that fork, and unit tests that need an fd they close to be closed at once, hold
/// this lock: a child forked by another test thread holds a copy of every fd of the test
/// process until it execs.
#[cfg(test)]
pub(crate) static FORK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
