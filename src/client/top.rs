//! `clusterctl top`: a live view of units and instances — CPU, memory, restarts, uptime,
//! state — refreshed every interval, sorted by CPU or memory, until `q` or Ctrl-C. The
//! terminal is put in raw mode on the alternate screen and restored however `top` ends
//! (a guard's `Drop`). When stdout is not a terminal, one frame is printed.
//!
//! Each frame is one `status` request: clusterd measures when asked and never samples in the
//! background, so `top` costs clusterd one status per interval.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

use crate::printable::printable;
use crate::protocol::StatusReport;

/// What `top` sorts instances by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Cpu,
    Mem,
}

/// One frame: a header, then every instance, busiest first, at most `rows` lines.
/// `live`: on the terminal, where `q` quits; a frame printed once (stdout not a terminal)
/// does not say so.
pub fn frame(report: &StatusReport, sort: SortBy, rows: usize, live: bool) -> String {
    let mut lines: Vec<(f64, Vec<String>)> = Vec::new();
    for unit in &report.units {
        for i in unit.instances.iter().filter(|i| i.pid.is_some()) {
            let key = match sort {
                SortBy::Cpu => i.cpu_percent.unwrap_or(0.0),
                SortBy::Mem => i.memory_bytes.unwrap_or(0) as f64,
            };
            lines.push((
                key,
                vec![
                    format!("{}[{}]", unit.name, i.index),
                    i.pid.map_or("-".into(), |p| p.to_string()),
                    i.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")),
                    i.memory_bytes.map_or("-".into(), mebibytes),
                    i.restarts.to_string(),
                    i.uptime_ms.map_or("-".into(), |ms| seconds(ms / 1000)),
                    i.state.to_string(),
                ],
            ));
        }
    }
    lines.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total_cpu: f64 = report.units.iter().filter_map(|u| u.cpu_percent).sum();
    let total_mem: u64 = report.units.iter().filter_map(|u| u.memory_bytes).sum();
    let mut out = format!(
        "clusterd: {} unit(s), {} instance(s), CPU {total_cpu:.1}%, MEM {}   (sorted by {}{})\n\n",
        report.units.len(),
        lines.len(),
        mebibytes(total_mem),
        match sort {
            SortBy::Cpu => "CPU",
            SortBy::Mem => "memory",
        },
        if live { "; q to quit" } else { "" }
    );
    out.push_str(&format!(
        "{:<24} {:>8} {:>7} {:>9} {:>8} {:>9}  {}\n",
        "INSTANCE", "PID", "CPU", "MEM", "RESTARTS", "UPTIME", "STATE"
    ));
    for (_, cells) in lines.iter().take(rows.saturating_sub(3)) {
        out.push_str(&format!(
            "{:<24} {:>8} {:>7} {:>9} {:>8} {:>9}  {}\n",
            printable(&cells[0]),
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6]
        ));
    }
    out
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1u64 << 20) as f64)
}

fn seconds(total: u64) -> String {
    match total {
        t if t < 60 => format!("{t}s"),
        t if t < 3600 => format!("{}m{:02}s", t / 60, t % 60),
        t => format!("{}h{:02}m", t / 3600, t / 60 % 60),
    }
}

/// The terminal in raw mode on the alternate screen, restored when dropped.
pub struct Screen {
    saved: Termios,
}

impl Screen {
    pub fn enter() -> io::Result<Screen> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        // Keys arrive one by one, unechoed; Ctrl-C is a key (0x03), so quitting always
        // goes through the restore below.
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(Screen { saved })
    }

    /// Replaces what is shown with `text`, each line cut to the terminal's width: a line
    /// that wrapped, or a newline after the last row, would scroll the header off the screen.
    pub fn show(&self, text: &str) -> io::Result<()> {
        let columns = self.size().1;
        let lines: Vec<String> = text
            .lines()
            .map(|line| line.chars().take(columns).collect())
            .collect();
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[H\x1b[2J")?;
        // Raw mode: a newline alone does not return the carriage.
        out.write_all(lines.join("\r\n").as_bytes())?;
        out.flush()
    }

    /// Waits up to `timeout` for a key; true when it says quit (`q`, `Q`, Ctrl-C, Ctrl-D).
    pub fn quit_within(&self, timeout: Duration) -> bool {
        let stdin = io::stdin();
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {
                let mut key = [0u8; 16];
                match nix::unistd::read(&stdin, &mut key) {
                    Ok(0) | Err(_) => true,
                    Ok(n) => key[..n].iter().any(|k| matches!(k, b'q' | b'Q' | 3 | 4)),
                }
            }
            _ => false,
        }
    }

    /// Rows of the terminal (24 if it does not say).
    pub fn rows(&self) -> usize {
        self.size().0
    }

    /// Rows and columns of the terminal (24 by 80 if it does not say).
    fn size(&self) -> (usize, usize) {
        let mut size: libc::winsize = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into a valid local.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
        match (ok, size.ws_row, size.ws_col) {
            (true, rows, columns) if rows > 0 && columns > 0 => {
                (usize::from(rows), usize::from(columns))
            }
            _ => (24, 80),
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
