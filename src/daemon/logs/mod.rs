//! Logs: where every instance's stdout and stderr go (`[log] to` in its unit file).
//!
//! - `file`: both streams of every instance of a unit into `<log dir>/<unit>.log`, one line
//!   each, timestamped and tagged with the instance and stream ([`line_format`]), rotated by
//!   size ([`unit_log_file`]), with clusterd's own events about the unit in between; served
//!   to `clusterctl logs` ([`history`] for the last lines, then live).
//! - `console`: the same lines on clusterd's own stdout/stderr, `web[3] | ` before each.
//! - `journal`: captured as for `file`, each line sent to journald as an entry of its own
//!   ([`journal`]), with a backlog and the unit's file as a fallback while journald is gone.
//! - `inherit`: clusterd's own stdout and stderr, as they are.
//!
//! Captured output is read by a thread of its own ([`capture`]): a slow disk never holds up
//! the supervisor loop, the control socket or the worker I/O thread. Files are created,
//! opened, rotated and read only inside a log directory clusterd checked ([`log_dir`]): an
//! unsafe one is refused at start-up.

pub(crate) mod capture;
pub(crate) mod framing;
pub(crate) mod history;
pub(crate) mod journal;
pub(crate) mod line_format;
pub(crate) mod local_clock;
pub(crate) mod log_client;
pub(crate) mod log_dir;
pub(crate) mod unit_log_file;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;
use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::daemon::os::doorbell::Doorbell;
use crate::unit::{LogSettings, LogTo, Unit};
use capture::CaptureThread;
use log_dir::LogDir;
use unit_log_file::UnitLogFile;

/// Where logs go unless a unit says otherwise, and where files live.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub dir: PathBuf,
    pub default_to: LogTo,
}

impl LogOptions {
    /// `/var/log/clusterd` for root, else `$XDG_STATE_HOME/clusterd/log` (or
    /// `~/.local/state/clusterd/log`).
    /// The log directory of a clusterd on `socket` when no `--log-dir` is given: the default
    /// one ([`LogOptions::default_dir`]) for the clusterd on this user's default socket (the
    /// packaged service's, as root), else one of its own beside it, named after the socket as
    /// `systemd-escape --path` names it (`/var/log/clusterd@srv-a-clusterd.sock`): two clusterd
    /// daemons never share a directory (a socket has one clusterd), so same-named units of
    /// two daemons never write into one file.
    pub fn default_dir_for(socket: &Path) -> PathBuf {
        let dir = Self::default_dir();
        let socket = std::path::absolute(socket).unwrap_or_else(|_| socket.to_path_buf());
        if socket == crate::protocol::socket_path::default_socket_path() {
            return dir;
        }
        let mut name = dir.into_os_string();
        name.push("@");
        name.push(escape_path(&socket));
        PathBuf::from(name)
    }

    pub fn default_dir() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/log/clusterd");
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state"))
            })
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        state.join("clusterd/log")
    }
}

/// How the log thread treats one unit's captured output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaptureSettings {
    pub(crate) to: LogTo,
    pub(crate) timestamps: bool,
    pub(crate) max_size: u64,
    pub(crate) keep: u32,
    /// The unit's `[log]`: its files' names and its timestamps' format.
    pub(crate) log: Arc<LogSettings>,
    /// Instances (for the files of a `per_instance` unit that history reads).
    pub(crate) instances: u32,
}

/// `clusterctl logs UNIT [--lines N] [--follow] [--instance I] [--stream out|err]`.
#[derive(Debug, Clone)]
pub(crate) struct LogsQuery {
    pub(crate) unit: String,
    pub(crate) lines: usize,
    pub(crate) follow: bool,
    pub(crate) instance: Option<u32>,
    pub(crate) stream: Option<String>,
    /// Every line after this position instead of the last `lines` (a follower back after a
    /// re-exec).
    pub(crate) after: Option<crate::protocol::LogPosition>,
}

pub(crate) enum Command {
    /// The unit's settings, for units whose output clusterd does not read (journal,
    /// inherit): so that `clusterctl logs` can say where to look.
    Configure {
        unit: String,
        settings: CaptureSettings,
    },
    Capture {
        unit: String,
        label: String,
        settings: CaptureSettings,
        out: OwnedFd,
        err: OwnedFd,
    },
    Event {
        unit: String,
        label: String,
        settings: CaptureSettings,
        text: String,
    },
    /// The instance `label` was spawned (pid in `text`): its start goes into the unit's file
    /// first, then its pipes are read — its first lines come after its start.
    Started {
        unit: String,
        label: String,
        pid: i32,
        text: String,
    },
    /// The spawn of instance `label` failed: its pipes go.
    Abandon {
        label: String,
    },
    Serve {
        query: LogsQuery,
        socket: UnixStream,
    },
    /// The history a `clusterctl logs` client asked for, read on a thread of its own.
    History {
        client: u64,
        lines: Vec<Vec<u8>>,
        /// The share of the history budget the read held.
        budget: usize,
        /// The read stopped at that share before it had the lines asked for.
        cut_short: bool,
        /// Where the files stood when the client asked (the history ends there).
        position: Vec<crate::protocol::LogFilePosition>,
    },
    Reopen,
    Finish,
    /// `daemon-reexec`: write what was read, say which pipes are read (with the bytes of an
    /// unfinished line), then read nothing until `resume` speaks or is dropped.
    HandOver {
        reply: Sender<Result<Vec<HandedPipe>, String>>,
        resume: crossbeam_channel::Receiver<()>,
    },
    /// After `daemon-reexec`: the pipes the old image read, read on from where it stopped
    /// (one command for them all: one wake-up of the log thread, not thousands).
    Adopt(Vec<(CaptureSettings, HandedPipe, OwnedFd)>),
}

/// One pipe the log thread reads, as `daemon-reexec` hands it to the new image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandedPipe {
    pub unit: String,
    /// `web[2]`.
    pub label: String,
    pub stderr: bool,
    pub fd: i32,
    /// Bytes read after the last newline: the start of the next line.
    pub partial: Vec<u8>,
}

impl Command {
    /// What it is, for a log line.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Configure { .. } => "a unit's settings",
            Command::Capture { .. } => "an instance's new pipes",
            Command::Event { .. } => "an event for a unit's file",
            Command::Started { .. } => "an instance's start",
            Command::Abandon { .. } => "a failed spawn's pipes",
            Command::Serve { .. } => "a `clusterctl logs` client",
            Command::History { .. } => "a client's history",
            Command::Reopen => "reopen-logs",
            Command::Finish => "the finish at exit",
            Command::HandOver { .. } => "daemon-reexec's hand-over",
            Command::Adopt { .. } => "a pipe handed over by daemon-reexec",
        }
    }
}

/// What the log thread and the others share: problems to show in status.
pub(crate) struct Shared {
    dir: LogDir,
    /// Per unit: why its log is not where it should be (disk full, journald missing).
    problems: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn set_problem(&self, unit: &str, problem: Option<String>) {
        // A panic caught while the lock was held leaves it poisoned; the map is still whole.
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        {
            match problem {
                Some(p) => problems.insert(unit.to_string(), p),
                None => problems.remove(unit),
            };
        }
    }

    fn problem(&self, unit: &str) -> Option<String> {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(unit)
            .cloned()
    }
}

/// The child's stdout and stderr: clusterd's ends of them are with the log thread (or
/// journald). `None`: clusterd's own.
#[derive(Default)]
pub(crate) struct ChildOutput {
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
}

/// A handle on the log thread, for every thread that needs it.
#[derive(Clone)]
pub(crate) struct Logs {
    commands: Sender<Command>,
    /// Rung after each command; the loop's handle ([`Logs::for_the_loop`]) rings once at
    /// the end of its turn.
    bell: Doorbell,
    shared: Arc<Shared>,
    default_to: LogTo,
}

/// The log thread itself, joined at exit once every pipe is drained.
pub(crate) struct LogThread {
    logs: Logs,
    handle: Option<JoinHandle<()>>,
}

impl LogThread {
    /// Waits until every captured pipe is closed (or a few seconds) and everything is
    /// written.
    pub(crate) fn finish(mut self) {
        self.logs.command(Command::Finish);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Logs {
    /// Checks the log directory (an unsafe one is refused: the error says why and what to
    /// do) and starts the log thread.
    pub(crate) fn start(options: &LogOptions) -> Result<(Logs, LogThread), String> {
        let dir = LogDir::new(&options.dir);
        dir.check_at_start()?;
        Self::start_thread(options, dir).map_err(|e| format!("cannot start the log thread: {e}"))
    }

    fn start_thread(options: &LogOptions, dir: LogDir) -> io::Result<(Logs, LogThread)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
        let (commands, receiver) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            dir,
            problems: Mutex::new(HashMap::new()),
        });
        let thread = CaptureThread::new(
            epoll,
            Arc::clone(&wake),
            (commands.clone(), receiver),
            Arc::clone(&shared),
        );
        let handle = thread::Builder::new()
            .name("logs".into())
            .spawn(move || thread.run())?;
        let logs = Logs {
            commands,
            bell: Doorbell::new(wake),
            shared,
            default_to: options.default_to,
        };
        Ok((
            logs.clone(),
            LogThread {
                logs,
                handle: Some(handle),
            },
        ))
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.bell.ring();
        }
    }

    /// A handle for the supervisor loop, whose wake-ups of the log thread can wait for the
    /// end of its turn ([`Logs::defer_wakes`]) without holding back the other threads'.
    pub(crate) fn for_the_loop(&self) -> Logs {
        Logs {
            bell: self.bell.own(),
            ..self.clone()
        }
    }

    /// From now until [`Logs::flush_wakes`], this handle's commands are queued (in order,
    /// with every other handle's) and one wake-up is owed: a new instance's pipes, its
    /// start and its events are read when the loop's turn is over, its child exec'ing
    /// meanwhile. The pipes hold what the child writes until then.
    pub(crate) fn defer_wakes(&self) {
        self.bell.defer();
    }

    /// Wakes the log thread once for what was queued since [`Logs::defer_wakes`].
    pub(crate) fn flush_wakes(&self) {
        self.bell.flush();
    }

    /// Where `unit`'s output goes, as configured.
    pub(crate) fn destination(&self, unit: &Unit) -> LogTo {
        unit.log.to.unwrap_or(self.default_to)
    }

    fn settings(&self, unit: &Unit, to: LogTo) -> CaptureSettings {
        CaptureSettings {
            to,
            timestamps: unit.log.timestamps.unwrap_or(to == LogTo::File),
            max_size: unit.log.max_size,
            keep: unit.log.keep,
            log: Arc::new(unit.log.clone()),
            instances: unit.instances,
        }
    }

    /// The stdout and stderr of a new instance of `unit`: pipes to the log thread, journald
    /// streams, or nothing (clusterd's own).
    pub(crate) fn output_for(&self, unit: &Unit, index: u32) -> io::Result<ChildOutput> {
        // Journal units too: clusterd writes their lines to journald (see `journal`).
        let to = self.destination(unit);
        if to == LogTo::Inherit {
            self.command(Command::Configure {
                unit: unit.name.clone(),
                settings: self.settings(unit, to),
            });
            return Ok(ChildOutput::default());
        }
        let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        self.command(Command::Capture {
            unit: unit.name.clone(),
            label: format!("{}[{index}]", unit.name),
            settings: self.settings(unit, to),
            out: out_read,
            err: err_read,
        });
        Ok(ChildOutput {
            stdout: Some(out_write),
            stderr: Some(err_write),
        })
    }

    /// The instance `index` of `unit` runs as `pid`: noted in its file, and its output is
    /// read from now on.
    pub(crate) fn started(&self, unit: &Unit, index: u32, pid: i32) {
        self.command(Command::Started {
            unit: unit.name.clone(),
            label: format!("{}[{index}]", unit.name),
            pid,
            text: format!("started, pid {pid}"),
        });
    }

    /// The instance `index` of `unit` could not be started: what was prepared for its
    /// output goes.
    pub(crate) fn abandon(&self, unit: &Unit, index: u32) {
        self.command(Command::Abandon {
            label: format!("{}[{index}]", unit.name),
        });
    }

    /// clusterd's own event about an instance of `unit` (`index`) or the unit itself, written
    /// into the unit's file among its lines — for `file` units (the others have clusterd's
    /// own log beside theirs).
    pub(crate) fn event(&self, unit: &Unit, index: Option<u32>, text: &str) {
        let to = self.destination(unit);
        if to != LogTo::File {
            return;
        }
        let label = match index {
            Some(i) => format!("{}[{i}]", unit.name),
            None => unit.name.clone(),
        };
        self.command(Command::Event {
            unit: unit.name.clone(),
            label,
            settings: self.settings(unit, to),
            text: text.to_string(),
        });
    }

    /// Hands a `clusterctl logs` connection to the log thread, which answers it.
    pub(crate) fn serve(&self, query: LogsQuery, socket: UnixStream) {
        self.command(Command::Serve { query, socket });
    }

    /// `daemon-reexec`: the log thread writes what it read and stops reading; returns the
    /// pipes it reads, and the handle that lets it read on (dropped: it reads on).
    pub(crate) fn hand_over(
        &self,
        deadline: std::time::Instant,
    ) -> Result<(Vec<HandedPipe>, Sender<()>), String> {
        let (reply, pipes) = crossbeam_channel::bounded(1);
        let (go_on, resume) = crossbeam_channel::bounded(1);
        self.command(Command::HandOver { reply, resume });
        // Waited for here: not at the end of the turn.
        self.bell.ring_now();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let pipes = pipes
            .recv_timeout(left)
            .map_err(|_| "the log thread did not stop reading in time".to_string())??;
        Ok((pipes, go_on))
    }

    /// After `daemon-reexec`: reads each pipe (of an instance of its unit) on.
    pub(crate) fn adopt(&self, pipes: Vec<(&Unit, HandedPipe, OwnedFd)>) {
        let mut settings: HashMap<&str, CaptureSettings> = HashMap::new();
        let pipes = pipes
            .into_iter()
            .map(|(unit, pipe, fd)| {
                let of_unit = settings
                    .entry(unit.name.as_str())
                    .or_insert_with(|| self.settings(unit, self.destination(unit)));
                (of_unit.clone(), pipe, fd)
            })
            .collect();
        self.command(Command::Adopt(pipes));
    }

    /// Reopens every log file by name (`clusterctl reopen-logs`, SIGUSR1).
    pub(crate) fn reopen(&self) {
        self.command(Command::Reopen);
    }

    /// For status: where the unit's output goes, and any trouble with it.
    pub(crate) fn describe(&self, unit: &Unit) -> (String, Option<String>) {
        let where_to = match self.destination(unit) {
            LogTo::File => {
                let files = unit.log.files(&unit.name, unit.instances);
                let first = files.first().map_or_else(
                    || UnitLogFile::path_of(self.shared.dir.path(), &unit.name),
                    |f| self.shared.dir.path().join(f),
                );
                match files.len() {
                    0 => "file: none (stdout and stderr are /dev/null)".to_string(),
                    1 => format!("file {}", first.display()),
                    n => format!("file {} and {} more", first.display(), n - 1),
                }
            }
            other => other.name().to_string(),
        };
        (where_to, self.shared.problem(&unit.name))
    }
}

/// `systemd-escape --path`: `/srv/a/clusterd.sock` → `srv-a-clusterd.sock`, every byte but
/// ASCII letters, digits, `:`, `_` and `.` (and a leading `.`) as `\xNN`: one path, one name.
fn escape_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let mut name = String::new();
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'.' if i == 0 => name.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b":_.".contains(&b) => name.push(char::from(b)),
            b => name.push_str(&format!("\\x{b:02x}")),
        }
    }
    name
}

#[cfg(test)]
mod default_dir_tests {
    use super::*;

    #[test]
    fn a_socket_path_is_escaped_as_systemd_escape_does() {
        assert_eq!(
            escape_path(Path::new("/srv/a/clusterd.sock")),
            "srv-a-clusterd.sock"
        );
        assert_eq!(
            escape_path(Path::new("/tmp/my-app/.s")),
            "tmp-my\\x2dapp-.s"
        );
        assert_eq!(escape_path(Path::new("/.x")), "\\x2ex");
    }

    #[test]
    fn another_socket_gets_a_log_directory_of_its_own() {
        let default =
            LogOptions::default_dir_for(&crate::protocol::socket_path::default_socket_path());
        assert_eq!(default, LogOptions::default_dir());
        let other = LogOptions::default_dir_for(Path::new("/srv/a/clusterd.sock"));
        assert_eq!(
            other,
            PathBuf::from(format!(
                "{}@srv-a-clusterd.sock",
                LogOptions::default_dir().display()
            ))
        );
    }
}
