//! The operating system as the supervisor needs it: [`os_process_control`] (the real
//! `ProcessControl`) built on [`spawn`] (fork/exec from a threaded process) and [`spawn_plan`]
//! (what a child is started with, decided without a system call), [`cgroup`]
//! (instances in cgroups of their own), [`listen_sockets`] (the sockets units share),
//! [`unix_socket_file`] (is a socket file stale?), [`environment_file`] (variables read at
//! every start), [`file_watch`] (inotify for `watch`), [`fd_limit`] (clusterd's own, and its
//! instances') and [`usage`] (what each instance uses); [`low_fds`] keeps the fd numbers through which a child gets
//! its fds without copying clusterd's table.

pub(crate) mod cgroup;
pub(crate) mod environment_file;
pub(crate) mod fd_limit;
pub(crate) mod file_watch;
pub(crate) mod listen_sockets;
pub(crate) mod low_fds;
pub(crate) mod os_process_control;
pub(crate) mod spawn;
pub(crate) mod spawn_plan;
pub(crate) mod unix_socket_file;
pub(crate) mod usage;
