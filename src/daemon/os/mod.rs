//! The operating system as the supervisor needs it: [`os_process_control`] (the real
//! `ProcessControl`) built on [`spawn`] (fork/exec from a threaded process), [`cgroup`]
//! (instances in cgroups of their own), [`listen_sockets`] (the sockets units share) and
//! [`unix_socket_file`] (is a socket file stale?).

pub(crate) mod cgroup;
pub(crate) mod listen_sockets;
pub(crate) mod os_process_control;
pub(crate) mod spawn;
pub(crate) mod unix_socket_file;
