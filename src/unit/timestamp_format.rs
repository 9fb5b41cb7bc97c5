//! `[log] timestamp_format`: a small strftime subset for the timestamps of log lines, in
//! local time (PM2's `log_date_format`). Parsed once, when the unit is loaded (an unknown
//! directive is an error that names it); formatted without a look-up per directive.
//!
//! Directives: `%Y` `%y` `%m` `%d` `%e` `%H` `%I` `%M` `%S` `%p` `%P` `%j` `%b` `%B` `%a`
//! `%A` `%z` (`+0100`) `%:z` (`+01:00`) `%Z` (the zone's abbreviation) `%s` (Unix seconds)
//! `%L` (milliseconds) `%f` (microseconds) `%F` (`%Y-%m-%d`) `%T` (`%H:%M:%S`) `%%`; `%-d`
//! (and `-` with any number) drops the padding, as glibc's.

use super::cron::LocalTime;

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A number: which, its width, and what pads it to that width (`None`: nothing).
    Number(Field, usize, Option<char>),
    AmPm {
        upper: bool,
    },
    MonthName {
        full: bool,
    },
    DayName {
        full: bool,
    },
    Offset {
        colon: bool,
    },
    Zone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Year,
    Year2,
    Month,
    Day,
    Hour,
    Hour12,
    Minute,
    Second,
    DayOfYear,
    Epoch,
    Millis,
    Micros,
}

/// A checked `timestamp_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampFormat {
    text: String,
    pieces: Vec<Piece>,
}

/// The moment to format: local calendar time and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStamp {
    pub local: LocalTime,
    pub micros: u32,
    /// Seconds east of UTC.
    pub offset: i64,
    /// `CET`, `UTC`…
    pub zone: String,
    pub epoch: i64,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

impl TimestampFormat {
    /// Checks `text`; the error names the directive that is not known.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let mut pad = Some('0');
            let mut next = chars.next();
            if next == Some('-') {
                pad = None;
                next = chars.next();
            }
            let number = |field, width| Piece::Number(field, width, pad);
            let piece = match next {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('Y') => number(Field::Year, 4),
                Some('y') => number(Field::Year2, 2),
                Some('m') => number(Field::Month, 2),
                Some('d') => number(Field::Day, 2),
                Some('e') => Piece::Number(Field::Day, 2, pad.map(|_| ' ')),
                Some('H') => number(Field::Hour, 2),
                Some('I') => number(Field::Hour12, 2),
                Some('M') => number(Field::Minute, 2),
                Some('S') => number(Field::Second, 2),
                Some('j') => number(Field::DayOfYear, 3),
                Some('s') => Piece::Number(Field::Epoch, 1, None),
                Some('L') => Piece::Number(Field::Millis, 3, Some('0')),
                Some('f') => Piece::Number(Field::Micros, 6, Some('0')),
                Some('p') => Piece::AmPm { upper: true },
                Some('P') => Piece::AmPm { upper: false },
                Some('b') => Piece::MonthName { full: false },
                Some('B') => Piece::MonthName { full: true },
                Some('a') => Piece::DayName { full: false },
                Some('A') => Piece::DayName { full: true },
                Some('z') => Piece::Offset { colon: false },
                Some(':') if chars.next() == Some('z') => Piece::Offset { colon: true },
                Some('Z') => Piece::Zone,
                Some('F') => {
                    flush(&mut pieces, &mut literal);
                    pieces.extend(Self::parse("%Y-%m-%d")?.pieces);
                    continue;
                }
                Some('T') => {
                    flush(&mut pieces, &mut literal);
                    pieces.extend(Self::parse("%H:%M:%S")?.pieces);
                    continue;
                }
                Some(other) => {
                    return Err(format!(
                        "%{other} is not a timestamp_format directive clusterd knows (it knows %Y %y %m %d %e %H %I %M %S %L %f %p %P %j %b %B %a %A %z %:z %Z %s %F %T %%)"
                    ))
                }
                None => return Err("a lone % at the end (write %% for a percent sign)".into()),
            };
            flush(&mut pieces, &mut literal);
            pieces.push(piece);
        }
        flush(&mut pieces, &mut literal);
        Ok(TimestampFormat {
            text: text.to_string(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Appends `at`, formatted, to `out`.
    pub fn format_into(&self, at: &LocalStamp, out: &mut Vec<u8>) {
        use std::io::Write;
        let t = &at.local;
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text.as_bytes()),
                Piece::Number(field, width, pad) => {
                    let value: i64 = match field {
                        Field::Year => t.year,
                        Field::Year2 => t.year.rem_euclid(100),
                        Field::Month => t.month.into(),
                        Field::Day => t.day.into(),
                        Field::Hour => t.hour.into(),
                        Field::Hour12 => ((t.hour + 11) % 12 + 1).into(),
                        Field::Minute => t.minute.into(),
                        Field::Second => t.second.into(),
                        Field::DayOfYear => day_of_year(t),
                        Field::Epoch => at.epoch,
                        Field::Millis => (at.micros / 1000).into(),
                        Field::Micros => at.micros.into(),
                    };
                    let _ = match pad {
                        Some('0') => write!(out, "{value:0width$}", width = *width),
                        Some(_) => write!(out, "{value:>width$}", width = *width),
                        None => write!(out, "{value}"),
                    };
                }
                Piece::AmPm { upper } => out.extend_from_slice(match (t.hour < 12, upper) {
                    (true, true) => b"AM",
                    (false, true) => b"PM",
                    (true, false) => b"am",
                    (false, false) => b"pm",
                }),
                Piece::MonthName { full } => {
                    let name = MONTHS
                        .get(t.month.saturating_sub(1) as usize)
                        .unwrap_or(&"?");
                    out.extend_from_slice(short(name, *full).as_bytes());
                }
                Piece::DayName { full } => {
                    let name = DAYS.get(weekday(t) as usize).unwrap_or(&"?");
                    out.extend_from_slice(short(name, *full).as_bytes());
                }
                Piece::Offset { colon } => {
                    let sign = if at.offset < 0 { '-' } else { '+' };
                    let minutes = at.offset.unsigned_abs() / 60;
                    let (h, m) = (minutes / 60, minutes % 60);
                    let _ = if *colon {
                        write!(out, "{sign}{h:02}:{m:02}")
                    } else {
                        write!(out, "{sign}{h:02}{m:02}")
                    };
                }
                Piece::Zone => out.extend_from_slice(at.zone.as_bytes()),
            }
        }
    }
}

fn flush(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Text(std::mem::take(literal)));
    }
}

fn short(name: &str, full: bool) -> &str {
    if full {
        name
    } else {
        name.get(..3).unwrap_or(name)
    }
}

fn day_of_year(t: &LocalTime) -> i64 {
    super::cron::days_from_civil(t.year, t.month, 1) - super::cron::days_from_civil(t.year, 1, 1)
        + i64::from(t.day)
}

/// 0 = Sunday.
fn weekday(t: &LocalTime) -> u32 {
    super::cron::weekday(t.year, t.month, t.day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> LocalStamp {
        LocalStamp {
            local: LocalTime {
                year: 2026,
                month: 3,
                day: 7,
                hour: 14,
                minute: 5,
                second: 9,
            },
            micros: 42_123,
            offset: 5 * 3600 + 30 * 60,
            zone: "IST".into(),
            epoch: 1_772_872_509,
        }
    }

    fn format(text: &str) -> String {
        let mut out = Vec::new();
        TimestampFormat::parse(text)
            .unwrap()
            .format_into(&stamp(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn directives_format_as_strftime_does() {
        assert_eq!(format("%Y-%m-%d %H:%M:%S %z"), "2026-03-07 14:05:09 +0530");
        assert_eq!(
            format("%F %T.%L %:z %Z"),
            "2026-03-07 14:05:09.042 +05:30 IST"
        );
        assert_eq!(
            format("%d/%b/%Y:%I%p %a %A %B"),
            "07/Mar/2026:02PM Sat Saturday March"
        );
        assert_eq!(
            format("%-d.%-m.%y %e %j %P %f %s 100%%"),
            "7.3.26  7 066 pm 042123 1772872509 100%"
        );
        let west = LocalStamp {
            offset: -(3 * 3600 + 30 * 60),
            ..stamp()
        };
        let mut out = Vec::new();
        TimestampFormat::parse("%z %:z")
            .unwrap()
            .format_into(&west, &mut out);
        assert_eq!(out, b"-0330 -03:30");
    }

    #[test]
    fn an_unknown_directive_is_named() {
        let error = TimestampFormat::parse("%Y %Q").unwrap_err();
        assert!(error.contains("%Q"), "{error}");
        assert!(TimestampFormat::parse("%").is_err());
        assert!(TimestampFormat::parse("%:x").is_err());
    }
}
