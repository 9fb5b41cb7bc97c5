//! The last lines of a unit's log, for `clusterctl logs`: read backwards from the end of the
//! current file, then of the rotated ones, newest first, in 64 KiB blocks — so asking for the
//! last 10 lines of a 1 GiB log reads a few kilobytes. Only files clusterd created are read
//! ([`LogDir::open_read`]): clusterd reads as root for whoever may ask, and a link planted
//! at a rotated name (`web.log.19700101T000000.000000Z -> /etc/shadow`) is left out, with a
//! warning in clusterd's log. Each file is read through the descriptor that was checked, up
//! to the size it had then: a file renamed or replaced meanwhile is read as it was opened.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::line_format::label_and_stream;
use super::log_dir::{is_refusal, LogDir};
use super::unit_log_file::{rotated_names, UnitLogFile};

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

/// The last `count` lines of `unit`'s file and its rotated files in `dir` that `filter`
/// accepts, oldest first, each with its newline.
pub(crate) fn last_lines(
    dir: &LogDir,
    unit: &str,
    count: usize,
    filter: &LineFilter,
) -> Vec<Vec<u8>> {
    let mut newest_first: Vec<Vec<u8>> = Vec::new();
    if count == 0 {
        return newest_first;
    }
    let name = UnitLogFile::name_of(unit);
    let mut files = rotated_names(dir, &name);
    files.push(name);
    for name in files.iter().rev() {
        match dir.open_read(name) {
            Ok(file) => {
                let _ = collect_backwards(&file, count, filter, &mut newest_first);
            }
            Err(e) if is_refusal(&e) => dir.warn_refused(&e),
            Err(_) => {}
        }
        if newest_first.len() >= count {
            break;
        }
    }
    newest_first.reverse();
    newest_first
}

fn collect_backwards(
    file: &File,
    count: usize,
    filter: &LineFilter,
    newest_first: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    let mut end = file.metadata()?.len();
    // Bytes of a line whose start lies in an earlier block.
    let mut tail: Vec<u8> = Vec::new();
    let mut block = vec![0u8; BLOCK as usize];
    while end > 0 && newest_first.len() < count {
        let start = end.saturating_sub(BLOCK);
        let len = (end - start) as usize;
        file.read_exact_at(&mut block[..len], start)?;
        let mut chunk = block[..len].to_vec();
        chunk.extend_from_slice(&tail);
        // Every line but the first of the chunk is whole (the first may start earlier).
        let mut line_end = chunk.len();
        for newline in memchr::memrchr_iter(b'\n', &chunk[..chunk.len().saturating_sub(1)]) {
            let line = &chunk[newline + 1..line_end];
            line_end = newline + 1;
            if !line.is_empty() && filter.accepts(line) {
                newest_first.push(with_newline(line));
                if newest_first.len() >= count {
                    return Ok(());
                }
            }
        }
        tail = chunk[..line_end].to_vec();
        end = start;
    }
    if end == 0 && !tail.is_empty() && newest_first.len() < count && filter.accepts(&tail) {
        newest_first.push(with_newline(&tail));
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

        let lines = last_lines(&dir, "web", 5, &LineFilter::default());
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
        let all = last_lines(&dir, "web", 100_000, &LineFilter::default());
        assert_eq!(all.len(), 5003);
        let only = LineFilter {
            label: Some("web[1]".into()),
            stream: Some("out".into()),
        };
        let odd = last_lines(&dir, "web", 2, &only);
        assert_eq!(
            odd,
            [
                b"web[1] out | old line 4997\n".to_vec(),
                b"web[1] out | old line 4999\n".to_vec()
            ]
        );
    }
}
