//! Line framing of one captured pipe, without the OS: bytes as `read` returned them go in,
//! lines come out, and what follows the last newline waits as the partial line.
//!
//! - A line is everything up to a `\n` (the `\n` is not part of it; a `\r` before it is,
//!   as the program wrote it). A read may end anywhere: in a line, between `\r` and `\n`,
//!   inside a UTF-8 sequence; bytes are never looked at beyond `\n`.
//! - A line longer than [`MAX_LINE`] goes out in pieces of `MAX_LINE` bytes, each marked
//!   `continued` (written with `+`), the last piece unmarked: the same pieces whatever the
//!   read sizes were.
//! - A partial line never holds more than `MAX_LINE` bytes: beyond, its first `MAX_LINE`
//!   bytes go out as a piece at once. [`LineFramer::take_partial`] hands out the rest: at
//!   end-of-file (a last line without a newline) or when it waited too long.
//! - Whole lines that need no cutting come out as runs straight from the read
//!   ([`Frame::Lines`]): the caller copies a run with one prefix per line, nothing per line
//!   is allocated or looked up.

use std::time::Instant;

/// Lines longer than this are written in pieces (64 KiB: long JSON lines and stack traces
/// stay whole, which Docker's 16 KiB split breaks).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Room a pipe's partial line keeps once its line is out: a long line's room (up to
/// [`MAX_LINE`]) is given back, not held for every pipe that once carried one.
const KEEP_PARTIAL: usize = 4 * 1024;

/// What framing hands on, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Whole lines, each ending with `\n` and at most [`MAX_LINE`] bytes before it.
    Lines(&'a [u8]),
    /// One line or piece of a line, without a newline, at most [`MAX_LINE`] bytes;
    /// `continued`: the next piece continues it.
    Piece { bytes: &'a [u8], continued: bool },
}

impl<'a> Frame<'a> {
    /// Each line of the frame, without its newline, with its `continued` mark.
    pub(crate) fn for_each_line(self, mut each: impl FnMut(&'a [u8], bool)) {
        match self {
            Frame::Lines(mut lines) => {
                while let Some(newline) = memchr::memchr(b'\n', lines) {
                    let (line, rest) = lines.split_at(newline);
                    each(line, false);
                    lines = rest.get(1..).unwrap_or_default();
                }
            }
            Frame::Piece { bytes, continued } => each(bytes, continued),
        }
    }
}

/// One pipe's partial line, and since when it waits.
#[derive(Debug, Default)]
pub(crate) struct LineFramer {
    /// Bytes after the last newline, at most [`MAX_LINE`] between calls.
    partial: Vec<u8>,
    /// When the bytes now in `partial` began to wait (`None` when it is empty).
    since: Option<Instant>,
}

impl LineFramer {
    /// Frames `read`, the next bytes of the pipe (read at `now`), into `out`.
    pub(crate) fn feed(&mut self, read: &[u8], now: Instant, mut out: impl FnMut(Frame<'_>)) {
        let mut rest = read;
        if !self.partial.is_empty() {
            let Some(newline) = memchr::memchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                self.cut_partial(now, &mut out);
                return;
            };
            // The carried line ends here: framed as if it had come in one read.
            let (end, after) = rest.split_at(newline);
            self.partial.extend_from_slice(end);
            pieces(&self.partial, false, &mut out);
            self.empty();
            rest = after.get(1..).unwrap_or_default();
        }
        // Runs of whole lines; a line longer than MAX_LINE in pieces between them. Found a
        // window at a time, not a line at a time: a window of MAX_LINE + 1 bytes from the
        // start of a line that holds a newline holds only lines short enough up to its last
        // newline. Lines are looked at once, by whoever copies them.
        let whole_end = memchr::memrchr(b'\n', rest).map_or(0, |i| i + 1);
        let (whole, tail) = rest.split_at(whole_end);
        let (mut run_start, mut line_start) = (0, 0);
        while whole.len() - line_start > MAX_LINE {
            let window = whole
                .get(line_start..=line_start + MAX_LINE)
                .unwrap_or_default();
            if let Some(last) = memchr::memrchr(b'\n', window) {
                line_start += last + 1;
                continue;
            }
            // The line at `line_start` is longer: it ends at a newline, as `whole` does.
            let long = whole.get(line_start..).unwrap_or_default();
            let end = memchr::memchr(b'\n', long).unwrap_or(long.len());
            if let Some(run) = whole.get(run_start..line_start).filter(|r| !r.is_empty()) {
                out(Frame::Lines(run));
            }
            pieces(long.get(..end).unwrap_or_default(), false, &mut out);
            line_start += end + 1;
            run_start = line_start;
        }
        if let Some(run) = whole.get(run_start..).filter(|r| !r.is_empty()) {
            out(Frame::Lines(run));
        }
        if !tail.is_empty() {
            self.partial.extend_from_slice(tail);
            self.cut_partial(now, &mut out);
        }
    }

    /// A partial line longer than [`MAX_LINE`] goes out in pieces until at most that much
    /// waits; the wait starts now if nothing waited.
    fn cut_partial(&mut self, now: Instant, out: &mut impl FnMut(Frame<'_>)) {
        let mut cut = 0;
        while self.partial.len() - cut > MAX_LINE {
            let bytes = self.partial.get(cut..cut + MAX_LINE).unwrap_or_default();
            out(Frame::Piece {
                bytes,
                continued: true,
            });
            cut += MAX_LINE;
        }
        self.partial.drain(..cut);
        if !self.partial.is_empty() {
            self.since.get_or_insert(now);
        }
    }

    /// The partial line, if any, goes out as one piece: `continued` when more of its line may
    /// follow (it waited too long), not at end-of-file.
    pub(crate) fn take_partial(&mut self, continued: bool, mut out: impl FnMut(Frame<'_>)) {
        if !self.partial.is_empty() {
            pieces(&self.partial, continued, &mut out);
        }
        self.empty();
    }

    /// No partial line any more.
    fn empty(&mut self) {
        self.partial.clear();
        if self.partial.capacity() > KEEP_PARTIAL {
            self.partial = Vec::new();
        }
        self.since = None;
    }

    /// Since when the partial line waits, if there is one.
    pub(crate) fn waiting_since(&self) -> Option<Instant> {
        self.since
    }

    /// The bytes after the last newline (`daemon-reexec` hands them over).
    pub(crate) fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Takes `partial` (at most [`MAX_LINE`], from [`LineFramer::partial`] of the old
    /// image) as the start of the next line.
    pub(crate) fn resume(&mut self, partial: &[u8], now: Instant) {
        if !partial.is_empty() {
            self.partial = partial.iter().copied().take(MAX_LINE).collect();
            self.since = Some(now);
        }
    }
}

/// `line` (without its newline) in pieces of at most [`MAX_LINE`], each but the last marked
/// continued; the last marked `continued`.
pub(crate) fn pieces(line: &[u8], continued: bool, out: &mut impl FnMut(Frame<'_>)) {
    let mut bytes = line;
    while let Some((piece, after)) = bytes
        .split_at_checked(MAX_LINE)
        .filter(|(_, after)| !after.is_empty())
    {
        out(Frame::Piece {
            bytes: piece,
            continued: true,
        });
        bytes = after;
    }
    out(Frame::Piece { bytes, continued });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A framed line as the log file shows it: its bytes, and `+` when continued.
    type Line = (Vec<u8>, bool);

    fn collect(out: &mut Vec<Line>) -> impl FnMut(Frame<'_>) + '_ {
        |frame| frame.for_each_line(|line, continued| out.push((line.to_vec(), continued)))
    }

    /// Feeds `input` in reads of the given sizes (the rest in one last read), then ends the
    /// pipe; returns the lines and the partial's size after each read.
    fn frame_in_reads(input: &[u8], sizes: &[usize]) -> (Vec<Line>, Vec<usize>) {
        let mut framer = LineFramer::default();
        let (mut lines, mut partials) = (Vec::new(), Vec::new());
        let mut rest = input;
        for &size in sizes {
            let (read, after) = rest.split_at(size.min(rest.len()));
            framer.feed(read, Instant::now(), collect(&mut lines));
            partials.push(framer.partial.len());
            rest = after;
        }
        framer.feed(rest, Instant::now(), collect(&mut lines));
        partials.push(framer.partial.len());
        framer.take_partial(false, collect(&mut lines));
        (lines, partials)
    }

    /// The pieces a line of `len` bytes becomes: MAX_LINE pieces marked, the last not.
    fn expected_pieces(byte: u8, len: usize) -> Vec<Line> {
        let mut pieces = Vec::new();
        let mut left = len;
        while left > MAX_LINE {
            pieces.push((vec![byte; MAX_LINE], true));
            left -= MAX_LINE;
        }
        pieces.push((vec![byte; left], false));
        pieces
    }

    fn line(bytes: &[u8]) -> Line {
        (bytes.to_vec(), false)
    }

    #[test]
    fn lines_come_out_whole_wherever_the_reads_split_them() {
        let input = b"alpha\r\nbeta\n\ngamma \xff\xfe\xc3\n\xa9 half\r\n\xe2\x82\xacdone";
        let want = vec![
            line(b"alpha\r"),
            line(b"beta"),
            line(b""),
            line(b"gamma \xff\xfe\xc3"),
            line(b"\xa9 half\r"),
            line(b"\xe2\x82\xacdone"),
        ];
        // Every split into two reads, and every split into three.
        for a in 0..=input.len() {
            assert_eq!(frame_in_reads(input, &[a]).0, want, "split at {a}");
            for b in 0..=input.len() - a {
                assert_eq!(frame_in_reads(input, &[a, b]).0, want, "split at {a}, {b}");
            }
        }
        // Byte by byte, with empty reads in between.
        let mut sizes = Vec::new();
        for _ in input {
            sizes.extend([1, 0]);
        }
        assert_eq!(frame_in_reads(input, &sizes).0, want);
    }

    #[test]
    fn a_read_of_whole_short_lines_is_one_run_from_the_read() {
        let mut framer = LineFramer::default();
        let mut frames = Vec::new();
        let read = b"one\ntwo\nthree\n";
        framer.feed(read, Instant::now(), |f| {
            frames.push(format!("{f:?}"));
        });
        assert_eq!(frames, vec![format!("{:?}", Frame::Lines(read))]);
        assert_eq!(framer.waiting_since(), None);
    }

    #[test]
    fn empty_reads_and_empty_pipes_give_nothing() {
        assert_eq!(frame_in_reads(b"", &[0, 0, 0]), (vec![], vec![0, 0, 0, 0]));
        let mut framer = LineFramer::default();
        let mut lines = Vec::new();
        framer.take_partial(true, collect(&mut lines));
        assert!(lines.is_empty());
    }

    #[test]
    fn max_line_boundaries() {
        for len in [
            MAX_LINE - 1,
            MAX_LINE,
            MAX_LINE + 1,
            2 * MAX_LINE,
            2 * MAX_LINE + 1,
            5 * MAX_LINE + 7,
        ] {
            let mut input = vec![b'a'; len];
            input.push(b'\n');
            input.extend_from_slice(b"next\n");
            let mut want = expected_pieces(b'a', len);
            want.push(line(b"next"));
            // Whole, and split at every place near the MAX_LINE multiples.
            assert_eq!(frame_in_reads(&input, &[]).0, want, "len {len}");
            for at in [1, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, len, len + 1] {
                assert_eq!(frame_in_reads(&input, &[at]).0, want, "len {len}, at {at}");
                let third = (MAX_LINE / 3).max(1);
                assert_eq!(
                    frame_in_reads(&input, &[at, third, third]).0,
                    want,
                    "len {len}, at {at}, thirds"
                );
            }
        }
    }

    #[test]
    fn lines_around_max_line_among_short_ones_in_one_read() {
        let lengths = [
            3,
            MAX_LINE,
            0,
            MAX_LINE + 1,
            MAX_LINE - 1,
            7,
            2 * MAX_LINE,
            MAX_LINE,
            MAX_LINE,
            1,
            3 * MAX_LINE + 2,
            5,
        ];
        let (mut input, mut want) = (Vec::new(), Vec::new());
        for (i, &len) in lengths.iter().enumerate() {
            let byte = b'a' + i as u8;
            input.extend(vec![byte; len]);
            input.push(b'\n');
            want.extend(expected_pieces(byte, len));
        }
        for sizes in [&[][..], &[MAX_LINE / 2; 40], &[MAX_LINE + 3; 20]] {
            assert_eq!(frame_in_reads(&input, sizes).0, want, "reads {sizes:?}");
        }
    }

    #[test]
    fn a_partial_line_never_holds_more_than_max_line() {
        // 300 KiB without a newline, in 7 KiB reads: pieces go out as it grows.
        let input = vec![b'z'; 300 * 1024];
        let (lines, partials) = frame_in_reads(&input, &[7 * 1024; 50]);
        assert!(partials.iter().all(|&p| p <= MAX_LINE), "{partials:?}");
        assert_eq!(lines, expected_pieces(b'z', 300 * 1024));
    }

    #[test]
    fn a_huge_line_among_short_ones_keeps_its_place() {
        let mut input = b"before\n".to_vec();
        input.extend(vec![b'h'; 3 * MAX_LINE + 5]);
        input.extend_from_slice(b"\nafter\nlast");
        let mut want = vec![line(b"before")];
        want.extend(expected_pieces(b'h', 3 * MAX_LINE + 5));
        want.extend([line(b"after"), line(b"last")]);
        for sizes in [&[][..], &[3], &[100_000], &[4096; 64]] {
            assert_eq!(frame_in_reads(&input, sizes).0, want, "reads {sizes:?}");
        }
    }

    #[test]
    fn an_old_partial_goes_out_continued_and_its_line_goes_on() {
        let mut framer = LineFramer::default();
        let mut lines = Vec::new();
        framer.feed(b"first\nsecond ha", Instant::now(), collect(&mut lines));
        let since = framer.waiting_since().expect("a partial waits");
        framer.take_partial(true, collect(&mut lines));
        assert_eq!(framer.waiting_since(), None);
        framer.feed(b"lf\n", Instant::now(), collect(&mut lines));
        assert_eq!(
            lines,
            vec![line(b"first"), (b"second ha".to_vec(), true), line(b"lf")]
        );
        assert!(since <= Instant::now());
    }

    #[test]
    fn the_wait_of_a_partial_starts_with_its_line() {
        // A writer that always leaves a partial line (reads end mid-line) must not have
        // its lines cut as if one partial had waited since the first read.
        let mut framer = LineFramer::default();
        let mut lines = Vec::new();
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        framer.feed(b"a\nb", t0, collect(&mut lines));
        assert_eq!(framer.waiting_since(), Some(t0));
        framer.feed(b"\nc", t1, collect(&mut lines));
        assert_eq!(framer.waiting_since(), Some(t1), "c waits since its read");
        // More of the same line does not restart its wait.
        framer.feed(b"cc", t2, collect(&mut lines));
        assert_eq!(framer.waiting_since(), Some(t1));
        assert_eq!(lines, vec![line(b"a"), line(b"b")]);
    }
}
