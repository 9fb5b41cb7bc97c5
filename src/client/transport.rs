//! How clusterctl reaches a clusterd: its local control socket, or a remote one through the
//! system's `ssh` running `clusterctl dial-stdio` on the host (OpenSSH does the
//! authentication, the encryption, `~/.ssh/config`, jump hosts and the agent). Either way the
//! client code gets one byte stream, with the same deadline.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::connection::ClientError;

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The control socket on this machine.
    Local(PathBuf),
    /// A clusterd on another host, through ssh.
    Ssh(SshHost),
}

impl Target {
    /// How the target is named in messages: the socket path, or the host's URL.
    pub fn name(&self) -> String {
        match self {
            Target::Local(socket) => socket.display().to_string(),
            Target::Ssh(host) => host.url.clone(),
        }
    }
}

/// `ssh://[USER@]HOST[:PORT]`, and the remote socket `--socket` named (else the remote
/// clusterctl's default applies).
#[derive(Debug, Clone)]
pub struct SshHost {
    /// As the user wrote it, for messages.
    pub url: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    remote_socket: Option<PathBuf>,
}

impl SshHost {
    pub fn parse(url: &str, remote_socket: Option<PathBuf>) -> Result<SshHost, String> {
        let bad = |why: &str| format!("{url:?} is not a host: {why} (ssh://[USER@]HOST[:PORT])");
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("only ssh:// is supported"))?;
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user.to_string()), hostport),
            None => (None, rest),
        };
        // [v6::1]:22, host:22, host
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))
            })
            .transpose()?;
        // Neither may pass for one of ssh's options, nor hide a path or a command.
        let fine = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:%".contains(c))
        };
        if !fine(host) {
            return Err(bad(
                "no host name, or a character a host name does not have",
            ));
        }
        if user.as_deref().is_some_and(|u| !fine(u)) {
            return Err(bad(
                "a user name that is empty, or with a character ssh would misread",
            ));
        }
        Ok(SshHost {
            url: url.to_string(),
            user,
            host: host.to_string(),
            port,
            remote_socket,
        })
    }

    /// `ssh -o BatchMode=yes [-p PORT] [-l USER] -- HOST clusterctl dial-stdio [--socket S]`.
    /// `$CLUSTERD_SSH_COMMAND` replaces `ssh` (run by `sh`, as git runs `$GIT_SSH_COMMAND`):
    /// for an identity or options ~/.ssh/config does not hold.
    fn command(&self) -> Command {
        let mut command = match std::env::var("CLUSTERD_SSH_COMMAND") {
            Ok(ssh) if !ssh.trim().is_empty() => {
                let mut command = Command::new("sh");
                command.arg("-c").arg(format!("{ssh} \"$@\"")).arg("ssh");
                command
            }
            _ => Command::new("ssh"),
        };
        // BatchMode: a password prompt would wait on a terminal nobody watches.
        command.args(["-o", "BatchMode=yes"]);
        if let Some(port) = self.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.user {
            command.arg("-l").arg(user);
        }
        command.arg("--").arg(&self.host);
        // The remote shell reads this line: the socket path is quoted for it.
        let mut remote = "clusterctl dial-stdio".to_string();
        if let Some(socket) = &self.remote_socket {
            remote.push_str(" --socket ");
            remote.push_str(&shell_words::quote(&socket.to_string_lossy()));
        }
        command.arg(remote);
        command
    }
}

/// An open connection to one clusterd.
pub struct Connection {
    inner: Inner,
}

enum Inner {
    Unix(UnixStream),
    Ssh(SshSession),
}

/// The ssh child, its ends of the pipes, and what it said on stderr.
struct SshSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// ssh's (or the remote clusterctl's) stderr, its last 64 KiB, read by a thread so that
    /// ssh never blocks on it.
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    timeout: Option<Duration>,
}

impl Connection {
    /// Connects; `timeout` bounds each read and write (none: wait as long as it takes).
    pub fn open(target: &Target, timeout: Option<Duration>) -> Result<Connection, ClientError> {
        match target {
            Target::Local(socket) => {
                let stream = connect_local(socket)?;
                if timeout.is_some() {
                    let _ = stream.set_read_timeout(timeout);
                    let _ = stream.set_write_timeout(timeout);
                }
                Ok(Connection {
                    inner: Inner::Unix(stream),
                })
            }
            Target::Ssh(host) => {
                let mut command = host.command();
                // SAFETY: the closure runs in the child between fork and exec and only makes
                // prctl(2), which is async-signal-safe.
                unsafe {
                    use std::os::unix::process::CommandExt;
                    // ssh (and so the remote dial-stdio) ends with clusterctl, even killed.
                    command.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                            .map_err(std::io::Error::from)
                    });
                }
                let mut child = command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| ClientError::Unreachable(format!("cannot run ssh: {e}")))?;
                let (Some(stdin), Some(stdout), Some(mut stderr)) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take())
                else {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ClientError::Unreachable("ssh has no pipes".into()));
                };
                let stderr = std::thread::Builder::new()
                    .name("ssh-stderr".into())
                    .spawn(move || {
                        let mut kept = Vec::new();
                        let mut buffer = [0u8; 4096];
                        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
                            kept.extend_from_slice(buffer.get(..n).unwrap_or_default());
                            let excess = kept.len().saturating_sub(64 * 1024);
                            kept.drain(..excess);
                        }
                        kept
                    })
                    .ok();
                Ok(Connection {
                    inner: Inner::Ssh(SshSession {
                        child,
                        stdin: Some(stdin),
                        stdout,
                        stderr,
                        timeout,
                    }),
                })
            }
        }
    }

    /// Why the connection ended without an answer: for ssh, what ssh or the remote side said
    /// and its exit status; else `fallback`.
    pub fn why_closed(&mut self, fallback: String) -> ClientError {
        let Inner::Ssh(session) = &mut self.inner else {
            return ClientError::Protocol(fallback);
        };
        session.stdin = None;
        // ssh ends soon after its stdout closed; a bounded wait, then it is made to.
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match session.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = session.child.kill();
                    break session.child.wait().ok();
                }
            }
        };
        let said = session
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        let said = String::from_utf8_lossy(&said);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        let last = last.strip_prefix("clusterctl: ").unwrap_or(&last);
        // The caller says which host this was.
        ClientError::Unreachable(match status.and_then(|s| s.code()) {
            Some(255) => format!("ssh could not connect: {last}"),
            Some(127) => format!(
                "no clusterctl on the host's PATH (install it there, or put it on the PATH of non-interactive ssh sessions): {last}"
            ),
            Some(126) => format!("clusterctl cannot be run there: {last}"),
            _ if last.is_empty() => fallback,
            _ => last.to_string(),
        })
    }
}

fn connect_local(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| super::connection::connect_error(socket, &e))
}

/// The local socket, for `dial-stdio`.
pub fn connect_socket(socket: &Path) -> Result<UnixStream, ClientError> {
    connect_local(socket)
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::Unix(stream) => stream.read(buf),
            Inner::Ssh(session) => {
                if let Some(timeout) = session.timeout {
                    wait_readable(&session.stdout, timeout)?;
                }
                session.stdout.read(buf)
            }
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::Unix(stream) => stream.write(buf),
            Inner::Ssh(session) => match &mut session.stdin {
                Some(stdin) => stdin.write(buf),
                None => Err(std::io::ErrorKind::BrokenPipe.into()),
            },
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Unix(stream) => stream.flush(),
            Inner::Ssh(session) => session.stdin.as_mut().map_or(Ok(()), Write::flush),
        }
    }
}

/// Waits until `fd` has something to read, or fails with `TimedOut` after `timeout`, as a
/// socket's read timeout does.
fn wait_readable(fd: &impl AsFd, timeout: Duration) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return Err(std::io::ErrorKind::TimedOut.into()),
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Drop for SshSession {
    /// The answer is read (or given up on): ssh is not needed any more, and is not left
    /// behind.
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
