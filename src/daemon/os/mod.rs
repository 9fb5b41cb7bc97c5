//! The operating system's primitives, as the daemon's real `ProcessControl`
//! ([`crate::daemon::os_process_control`]) uses them: [`spawn`] (fork/exec from a threaded
//! process) and [`spawn_plan`] (what a child is started with, decided without a system call),
//! [`cgroup`] (instances in cgroups of their own), [`listen_sockets`] (the sockets units
//! share), [`unix_socket_file`] (is a socket file stale?), [`environment_file`] (variables
//! read at every start), [`fd_limit`] (clusterd's own, and its instances'), [`usage`]
//! (what each instance uses), [`doorbell`] (a helper thread's eventfd, rung at once or at the
//! end of the loop's turn) and [`low_fds`] (the fd numbers through which a child gets its
//! fds without copying clusterd's table) and [`port_holder`] (who holds a port clusterd cannot
//! bind).
//!
//! A leaf: nothing here is one of clusterd's threads (`environment_file` only reads on a
//! short-lived one, with a deadline) or knows the log thread, the worker I/O, the loop's
//! inbox or the supervisor's `ProcessControl` trait. A file here may use only `os/` itself,
//! `crate::unit` and `crate::protocol` (configuration and reports, plain data), the plain data
//! types of `crate::supervisor::process_control` (`SpawnId`, `SpawnError`, `SpawnStage`,
//! `Usage`) and the leaf `crate::net_bind`; `src/layers.rs` holds it so.

pub(crate) mod cgroup;
pub(crate) mod doorbell;
pub(crate) mod environment_file;
pub(crate) mod fd_limit;
pub(crate) mod listen_sockets;
pub(crate) mod low_fds;
pub(crate) mod port_holder;
pub(crate) mod spawn;
pub(crate) mod spawn_plan;
pub(crate) mod unix_socket_file;
pub(crate) mod usage;
