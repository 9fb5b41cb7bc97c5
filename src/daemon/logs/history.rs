//! The last lines of a unit's log, for `clusterctl logs`: read backwards from the end of the
//! current file, then of the rotated ones, newest first, in 64 KiB blocks — so asking for the
//! last 10 lines of a 1 GiB log reads a few kilobytes. Only files clusterd created are read
//! ([`LogDir::open_read`]): clusterd reads as root for whoever may ask, and a link planted
//! at a rotated name (`web.log.19700101T000000.000000Z -> /etc/shadow`) is left out, with a
//! warning in clusterd's log. Each file is read through the descriptor that was checked, up
//! to the size it had then: a file renamed or replaced meanwhile is read as it was opened.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::line_format::label_and_stream;
use super::log_dir::{is_refusal, LogDir};
use super::unit_log_file::{rotated_names, Boundary};

const BLOCK: u64 = 64 * 1024;

/// Which lines `clusterctl logs` wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineFilter {
    /// `web[3]`: only that instance's lines (and clusterd's about it).
    pub(crate) label: Option<String>,
    /// `out` or `err`.
    pub(crate) stream: Option<String>,
}

impl LineFilter {
    pub(crate) fn accepts(&self, line: &[u8]) -> bool {
        if self.label.is_none() && self.stream.is_none() {
            return true;
        }
        let Some((label, stream)) = label_and_stream(line) else {
            return false;
        };
        self.label.as_ref().is_none_or(|l| l.as_bytes() == label)
            && self.stream.as_ref().is_none_or(|s| s.as_bytes() == stream)
    }
}

/// A partial line longer than this (no newline for a megabyte: not a line clusterd wrote) is
/// cut there, so reading backwards never holds more than a block and this much.
const MAX_TAIL: usize = 1024 * 1024;

/// The last `count` lines of `unit`'s file and its rotated files in `dir` that `filter`
/// accepts, oldest first, each with its newline, holding at most about `max_bytes` of them
/// (a socket-group member's `-n 100000000` on a large log must not make clusterd read the
/// whole log into memory). The flag says the bytes, not the count, ended the read.
///
/// With a `boundary` (where the current file stood when the client asked), the history ends
/// there: files newer than it (a rotation since) and what was appended to it since are left
/// to the lines the client is sent as they come, so none is shown twice or missed.
///
/// With a `since` (a follower back after a re-exec: where the file stood when its previous
/// stream's history ended), the history begins there: `Some(None)` is a file that did not
/// exist then (all of it is newer). The file `since` names is read from its length then;
/// older files are not read.
pub(crate) fn last_lines(
    dir: &LogDir,
    name: &str,
    (count, max_bytes): (usize, usize),
    (since, boundary): (Option<Option<Boundary>>, Option<Boundary>),
    filter: &LineFilter,
) -> (Vec<Vec<u8>>, bool) {
    let mut found = Found {
        newest_first: Vec::new(),
        count,
        bytes: 0,
        max_bytes,
        cut_short: false,
    };
    if count == 0 {
        return (found.newest_first, false);
    }
    let mut files = rotated_names(dir, name);
    files.push(name.to_string());
    let mut before_boundary = boundary.is_none();
    for name in files.iter().rev() {
        match dir.open_read(name) {
            Ok(file) => {
                let Ok(meta) = file.metadata() else { continue };
                let mut end = meta.len();
                if let Some(b) = boundary.filter(|_| !before_boundary) {
                    if (meta.dev(), meta.ino()) != (b.dev, b.ino) {
                        // Newer than the boundary: its lines reach the client as they come.
                        continue;
                    }
                    before_boundary = true;
                    end = end.min(b.len);
                }
                let start = since
                    .flatten()
                    .filter(|s| (meta.dev(), meta.ino()) == (s.dev, s.ino))
                    .map(|s| s.len.min(end));
                let _ = collect_backwards(&file, (start.unwrap_or(0), end), filter, &mut found);
                if start.is_some() {
                    // The file where the position was: older ones were before it.
                    break;
                }
            }
            Err(e) if is_refusal(&e) => dir.warn_refused(&e),
            Err(_) => {}
        }
        if found.full() {
            break;
        }
    }
    found.newest_first.reverse();
    (found.newest_first, found.cut_short)
}

/// The lines found so far, newest first, and what ends the search.
struct Found {
    newest_first: Vec<Vec<u8>>,
    count: usize,
    bytes: usize,
    max_bytes: usize,
    cut_short: bool,
}

impl Found {
    fn full(&self) -> bool {
        self.cut_short || self.newest_first.len() >= self.count
    }

    /// Takes `line` unless it would go past the byte budget (which ends the search).
    fn push(&mut self, line: &[u8]) {
        let len = line.len() + 1;
        if self.bytes.saturating_add(len) > self.max_bytes {
            self.cut_short = true;
            return;
        }
        self.bytes += len;
        self.newest_first.push(with_newline(line));
    }
}

/// The lines of `file` between offsets `floor` (the start of a line) and `end`, newest first.
fn collect_backwards(
    file: &File,
    (floor, mut end): (u64, u64),
    filter: &LineFilter,
    found: &mut Found,
) -> io::Result<()> {
    // Bytes of a line whose start lies in an earlier block.
    let mut tail: Vec<u8> = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    while end > floor && !found.full() {
        let start = end.saturating_sub(BLOCK).max(floor);
        let len = (end - start) as usize;
        let read = block.get_mut(..len).unwrap_or_default();
        file.read_exact_at(read, start)?;
        let mut chunk = read.to_vec();
        chunk.extend_from_slice(&tail);
        // Every line but the first of the chunk is whole (the first may start earlier).
        let mut line_end = chunk.len();
        let searched = chunk
            .get(..chunk.len().saturating_sub(1))
            .unwrap_or_default();
        for newline in memchr::memrchr_iter(b'\n', searched) {
            let line = chunk.get(newline + 1..line_end).unwrap_or_default();
            line_end = newline + 1;
            if !line.is_empty() && filter.accepts(line) {
                found.push(line);
                if found.full() {
                    return Ok(());
                }
            }
        }
        chunk.truncate(line_end);
        tail = chunk;
        if tail.len() > MAX_TAIL {
            // Its newest megabyte stands for it.
            let cut = tail.split_off(tail.len() - MAX_TAIL);
            if filter.accepts(&cut) {
                found.push(&cut);
            }
            tail.clear();
        }
        end = start;
    }
    if end == floor && !tail.is_empty() && !found.full() && filter.accepts(&tail) {
        found.push(&tail);
    }
    Ok(())
}

fn with_newline(line: &[u8]) -> Vec<u8> {
    let mut owned = line.to_vec();
    if owned.last() != Some(&b'\n') {
        owned.push(b'\n');
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_come_from_the_end_across_blocks_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        let mut old = String::new();
        for i in 0..5000 {
            old.push_str(&format!("web[{}] out | old line {i}\n", i % 2));
        }
        std::fs::write(tmp.path().join("web.log.20260101T000000.000000Z"), &old).unwrap();
        let mut current = String::new();
        for i in 0..3 {
            current.push_str(&format!("web[0] err | new line {i}\n"));
        }
        std::fs::write(tmp.path().join("web.log"), &current).unwrap();

        let lines = last_lines(
            &dir,
            "web.log",
            (5, usize::MAX),
            (None, None),
            &LineFilter::default(),
        )
        .0;
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(
            text,
            [
                "web[0] out | old line 4998\n",
                "web[1] out | old line 4999\n",
                "web[0] err | new line 0\n",
                "web[0] err | new line 1\n",
                "web[0] err | new line 2\n",
            ]
        );
        let all = last_lines(
            &dir,
            "web.log",
            (100_000, usize::MAX),
            (None, None),
            &LineFilter::default(),
        )
        .0;
        assert_eq!(all.len(), 5003);
        let only = LineFilter {
            label: Some("web[1]".into()),
            stream: Some("out".into()),
        };
        let odd = last_lines(&dir, "web.log", (2, usize::MAX), (None, None), &only).0;
        assert_eq!(
            odd,
            [
                b"web[1] out | old line 4997\n".to_vec(),
                b"web[1] out | old line 4999\n".to_vec()
            ]
        );
    }

    #[test]
    fn a_read_holds_no_more_than_its_budget_and_says_it_was_cut_short() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("web[0] out | line {i:05}\n"));
        }
        std::fs::write(tmp.path().join("web.log"), &text).unwrap();
        let (lines, cut_short) = last_lines(
            &dir,
            "web.log",
            (usize::MAX, 10_000),
            (None, None),
            &LineFilter::default(),
        );
        assert!(cut_short);
        let bytes: usize = lines.iter().map(Vec::len).sum();
        assert!(bytes <= 10_000 && bytes > 9_000, "{bytes}");
        assert!(lines.last().unwrap().ends_with(b"line 09999\n"));
        let (all, cut_short) = last_lines(
            &dir,
            "web.log",
            (10_000, usize::MAX),
            (None, None),
            &LineFilter::default(),
        );
        assert!(!cut_short);
        assert_eq!(all.len(), 10_000);
    }

    #[test]
    fn a_file_without_newlines_is_read_in_bounded_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        std::fs::write(tmp.path().join("web.log"), vec![b'x'; 3 * MAX_TAIL + 10]).unwrap();
        let (lines, _) = last_lines(
            &dir,
            "web.log",
            (2, usize::MAX),
            (None, None),
            &LineFilter::default(),
        );
        assert_eq!(lines.len(), 2);
        assert!(lines
            .iter()
            .all(|l| l.len() <= MAX_TAIL + BLOCK as usize + 1));
    }

    /// `web.log` rotated once (its line `oldest`) with the line `before`, where it stands then,
    /// and after that: a line appended (`after`), the file rotated, a new file begun (`newer`).
    fn written_then_rotated(dir: &std::path::Path, oldest: &str) -> Boundary {
        use std::os::unix::fs::MetadataExt;
        let current = dir.join("web.log");
        std::fs::write(
            dir.join("web.log.20260101T000000.000000Z"),
            format!("web[0] out | {oldest}\n"),
        )
        .unwrap();
        std::fs::write(&current, "web[0] out | before\n").unwrap();
        let meta = std::fs::metadata(&current).unwrap();
        let then = Boundary {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&current)
            .unwrap();
        std::io::Write::write_all(&mut file, b"web[0] out | after\n").unwrap();
        std::fs::rename(&current, dir.join("web.log.20260102T000000.000000Z")).unwrap();
        std::fs::write(&current, "web[0] out | newer\n").unwrap();
        then
    }

    #[test]
    fn a_history_ends_at_its_boundary_whatever_was_appended_or_rotated_since() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        let boundary = written_then_rotated(tmp.path(), "old");

        let (lines, _) = last_lines(
            &dir,
            "web.log",
            (10, usize::MAX),
            (None, Some(boundary)),
            &LineFilter::default(),
        );
        assert_eq!(
            lines,
            [
                b"web[0] out | old\n".to_vec(),
                b"web[0] out | before\n".to_vec()
            ]
        );
    }

    #[test]
    fn a_history_after_a_position_has_every_line_since_across_a_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::new(tmp.path());
        let since = written_then_rotated(tmp.path(), "oldest");

        let all = LineFilter::default();
        let after = |since| last_lines(&dir, "web.log", (100, usize::MAX), (since, None), &all).0;
        assert_eq!(
            after(Some(Some(since))),
            [
                b"web[0] out | after\n".to_vec(),
                b"web[0] out | newer\n".to_vec()
            ]
        );
        // A file that did not exist then: all of it.
        assert_eq!(after(Some(None)).len(), 4);
    }
}
