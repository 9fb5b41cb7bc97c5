//! clusterd: a process supervisor for Linux that keeps N copies of any program running, the
//! way Node's cluster module and PM2 do for Node programs.
//!
//! How the pieces fit, from the outside in:
//!
//! - [`unit`]: unit files. A raw serde form ([`unit::UnitFile`]) becomes a validated
//!   [`unit::Unit`]; errors name the file, line and column.
//! - [`daemon`]: wiring. Three threads turn the world into [`event::Event`]s on one channel:
//!   [`signals`] (SIGCHLD/TERM/INT/HUP), [`control_server`] (clusterctl requests) and
//!   [`worker_io`] (worker channels and NOTIFY_SOCKET). The main thread runs the loop.
//! - [`supervisor`]: the state machine that owns every unit, instance, deadline and restart
//!   budget ([`restart_limiter`]). It sees the OS only through [`process_control`], so tests
//!   drive it with fed events and an injected clock.
//! - [`os_process_control`] and [`spawn`]: the real OS side — fork/exec safe in a threaded
//!   process, killpg, waitpid; [`listen_sockets`] binds the sockets units share.
//! - [`node_cluster`]: for `node_cluster` units the I/O thread is the Node cluster primary, so
//!   unmodified Node apps that call `server.listen(3000)` share the port.
//! - [`protocol`]: request and response types shared by clusterd and clusterctl;
//!   [`control_client`], [`socket_path`] and [`status_table`] are clusterctl's side.
//! - [`service_notify`]: sd_notify to clusterd's own service manager (Type=notify).

pub mod cgroup;
pub mod control_client;
pub mod control_server;
pub mod daemon;
pub mod event;
pub mod listen_sockets;
pub mod log_limit;
pub mod node_cluster;
pub mod os_process_control;
pub mod printable;
pub mod process_control;
pub mod protocol;
pub mod restart_limiter;
pub mod service_notify;
pub mod signals;
pub mod socket_path;
pub mod spawn;
pub mod status_table;
pub mod supervisor;
pub mod unit;
pub mod unix_socket_file;
pub mod worker_io;
