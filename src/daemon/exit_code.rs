//! clusterd's exit codes, for the service manager or orchestrator above it: the daemon decides
//! them (`run`'s result), the binary and its flags only pass them on.

/// Every instance stopped cleanly after SIGTERM or SIGINT.
pub const STOPPED: u8 = 0;
/// clusterd could not start (the control socket is in use, the units directory cannot be
/// read, ...), or `--check` found an invalid unit file.
pub const FAILED: u8 = 1;
/// A flag is wrong.
pub const USAGE: u8 = 2;
/// A unit gave up and `--exit-on-giveup` is set (sysexits' EX_UNAVAILABLE).
pub const GAVE_UP: u8 = 69;
/// As a container's main process: an instance had to be killed with SIGKILL after its
/// `kill_timeout` (128 + 9, as a shell reports a process SIGKILL ended).
pub const KILLED: u8 = 128 + 9;
