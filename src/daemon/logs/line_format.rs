//! How a captured line looks in a unit's log file:
//!
//! ```text
//! 2026-11-29T21:05:03.123456Z web[3] out | Server listening on :3000
//! 2026-11-29T21:05:03.123456Z web[3] err + the first 64 KiB of a longer line...
//! 2026-11-29T21:05:04.000001Z web[3] clusterd | exited with code 1
//! ```
//!
//! An RFC 3339 UTC timestamp with microseconds (unless `timestamps = false`; or local time in
//! the unit's `timestamp_format`, which may hold spaces), the instance,
//! the stream (`out`, `err`, or `clusterd` for clusterd's own events about the unit), then `|`
//! before a whole line or `+` before a piece that the next line continues, then the bytes
//! exactly as the program wrote them.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-29T21:05:03.123456Z`.
pub(crate) const TIMESTAMP_LEN: usize = 27;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Out,
    Err,
    /// clusterd's own event about the unit.
    Clusterd,
}

impl Stream {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
            Stream::Clusterd => "clusterd",
        }
    }
}

/// Formats `time` as RFC 3339 UTC with microseconds, without allocating.
pub(crate) fn timestamp(time: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let micros = since.subsec_micros();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put(&mut out[0..4], year.max(0) as u64);
    put(&mut out[5..7], month as u64);
    put(&mut out[8..10], day as u64);
    put(&mut out[11..13], of_day / 3600);
    put(&mut out[14..16], of_day / 60 % 60);
    put(&mut out[17..19], of_day % 60);
    put(&mut out[20..26], micros as u64);
    out
}

/// Writes `value` in decimal into `digits`, zero-padded on the left.
fn put(digits: &mut [u8], mut value: u64) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The moment lines were read, taken once per read: the UTC timestamp made then, and the
/// time itself for a unit's own `timestamp_format`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    pub(crate) at: SystemTime,
    pub(crate) utc: [u8; TIMESTAMP_LEN],
}

impl Stamp {
    pub(crate) fn now() -> Stamp {
        let at = SystemTime::now();
        Stamp {
            at,
            utc: timestamp(at),
        }
    }
}

/// Appends the prefix of a line to `out`: `[timestamp ]label stream sep `.
pub(crate) fn push_prefix(
    out: &mut Vec<u8>,
    timestamp: Option<&[u8]>,
    label: &str,
    stream: Stream,
    continued: bool,
) {
    if let Some(stamp) = timestamp {
        out.extend_from_slice(stamp);
        out.push(b' ');
    }
    out.extend_from_slice(label.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if continued { b" + " } else { b" | " });
}

/// What a stored line says about itself, for `clusterctl logs --instance/--stream`: its
/// label and stream, whatever timestamp (if any) comes first.
pub(crate) fn label_and_stream(line: &[u8]) -> Option<(&[u8], &[u8])> {
    split_line(line).map(|(_, label, stream)| (label, stream))
}

/// A stored line's timestamp (empty without one), label and stream: the first
/// `name[n] out|err|clusterd |/+ ` in it, so that a timestamp of any format is skipped.
pub(crate) fn split_line(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let mut start = 0;
    loop {
        let rest = line.get(start..)?;
        let mut fields = rest.splitn(4, |&b| b == b' ');
        let (label, stream, sep) = (fields.next()?, fields.next()?, fields.next()?);
        let is_label = label.ends_with(b"]") && label.contains(&b'[');
        let is_stream = matches!(stream, b"out" | b"err" | b"clusterd");
        if is_label && is_stream && matches!(sep, b"|" | b"+") {
            let stamp = line.get(..start.saturating_sub(1)).unwrap_or_default();
            return Some((stamp, label, stream));
        }
        start += memchr::memchr(b' ', rest)? + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, micros: u64| {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            String::from_utf8(timestamp(t).to_vec()).unwrap()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_795_986_303, 123_456), "2026-11-29T21:05:03.123456Z");
        // Agrees with humantime, day after day, over leap years.
        for day in (0..20_000u64).step_by(7) {
            let t =
                UNIX_EPOCH + Duration::from_secs(day * 86_400 + 45_296) + Duration::from_micros(7);
            assert_eq!(
                String::from_utf8(timestamp(t).to_vec()).unwrap(),
                humantime::format_rfc3339_micros(t).to_string()
            );
        }
    }

    #[test]
    fn stored_lines_tell_their_instance_and_stream() {
        let mut line = Vec::new();
        push_prefix(
            &mut line,
            Some(&timestamp(UNIX_EPOCH)[..]),
            "web[3]",
            Stream::Err,
            false,
        );
        line.extend_from_slice(b"boom bang");
        assert_eq!(label_and_stream(&line), Some((&b"web[3]"[..], &b"err"[..])));
        let mut bare = Vec::new();
        push_prefix(&mut bare, None, "web[0]", Stream::Out, true);
        bare.extend_from_slice(b"x");
        assert_eq!(label_and_stream(&bare), Some((&b"web[0]"[..], &b"out"[..])));
        assert!(bare.starts_with(b"web[0] out + x"));
        let mut local = Vec::new();
        push_prefix(
            &mut local,
            Some(b"07/12/2026 04:05 +01:00"),
            "web[1]",
            Stream::Out,
            false,
        );
        local.extend_from_slice(b"a b[2] err | c");
        assert_eq!(
            split_line(&local),
            Some((&b"07/12/2026 04:05 +01:00"[..], &b"web[1]"[..], &b"out"[..]))
        );
    }
}
