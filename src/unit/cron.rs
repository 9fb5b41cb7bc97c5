//! `cron_restart = "0 3 * * *"`: a schedule in cron's five fields — minute, hour, day of
//! month, month, day of week — each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or
//! a list of those (`1,15,30-40/5`). Day of week is 0–7, Sunday being 0 and 7. As in cron,
//! when both day fields are restricted a day matches if either does.
//!
//! The schedule is pure arithmetic on local calendar time: the daemon supplies "now" as local
//! date and time, and gets back how many seconds until the next matching minute.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    text: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bit 0 is Sunday (7 is folded into 0).
    days_of_week: u64,
    /// The day fields as written were `*` (cron's rule for combining them needs this).
    any_day_of_month: bool,
    any_day_of_week: bool,
}

/// A local date and time, to the second. The fields' order makes the derived order the
/// calendar's.
/// `Serialize`: the `daemon-reexec` state carries the minute a schedule is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct LocalTime {
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "cron schedule {text:?}: five fields are needed (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\""
            ));
        };
        let mut days_of_week = field(dow, 0, 7, "day of week")?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(CronSchedule {
            text: fields.join(" "),
            minutes: field(minute, 0, 59, "minute")?,
            hours: field(hour, 0, 23, "hour")?,
            days_of_month: field(dom, 1, 31, "day of month")?,
            months: field(month, 1, 12, "month")?,
            days_of_week,
            any_day_of_month: dom == "*",
            any_day_of_week: dow == "*",
        })
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// One field as a bit set of the values `low..=high` it allows.
fn field(text: &str, low: u32, high: u32, name: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("cron {name} {text:?}: {why}");
    let number = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| bad(&format!("{s:?} is not a number")))?;
        if n < low || n > high {
            return Err(bad(&format!("{n} is outside {low}–{high}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| bad("the step is not a number"))?;
                if step == 0 {
                    return Err(bad("a step of 0"));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (low, high)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(bad(&format!("the range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let n = number(range)?;
            // `5/15` means from 5 to the end, every 15, as in cron.
            (n, if step > 1 { high } else { n })
        };
        let mut value = from;
        while value <= to {
            bits |= 1 << value;
            value += step;
        }
    }
    Ok(bits)
}

impl CronSchedule {
    fn day_matches(&self, year: i64, month: u32, day: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday(year, month, day)) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The start of the next minute the schedule allows after `now`'s own minute (a run at
    /// 03:00:00 is not due again at 03:00:30). `None` if no minute in the next eight years
    /// matches (`0 0 31 2 *`: February 31st).
    pub fn next_after(&self, now: LocalTime) -> Option<LocalTime> {
        let (mut year, mut month, mut day) = (now.year, now.month, now.day);
        // Minutes of `now`'s day already passed count from the next one.
        let mut first_minute = now.hour * 60 + now.minute + 1;
        for _ in 0..366 * 8 {
            if self.months & (1 << month) != 0 && self.day_matches(year, month, day) {
                for minute_of_day in first_minute..24 * 60 {
                    let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours & (1 << hour) != 0 && self.minutes & (1 << minute) != 0 {
                        return Some(LocalTime {
                            year,
                            month,
                            day,
                            hour,
                            minute,
                            second: 0,
                        });
                    }
                }
            }
            first_minute = 0;
            day += 1;
            if day > days_in_month(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
        None
    }

    /// Seconds from `now` to the start of the next minute the schedule allows, counted on
    /// the calendar (see [`LocalTime::seconds_until`]).
    pub fn seconds_until_next(&self, now: LocalTime) -> Option<u64> {
        u64::try_from(now.seconds_until(self.next_after(now)?)).ok()
    }
}

impl LocalTime {
    /// Seconds from `self` to `then` on the calendar, as if no daylight-saving change came
    /// between (the daemon asks the C library for the real interval); negative if `then` is
    /// earlier.
    pub fn seconds_until(&self, then: LocalTime) -> i64 {
        let seconds = |t: &LocalTime| {
            days_from_civil(t.year, t.month, t.day) * 86_400
                + i64::from(t.hour * 3600 + t.minute * 60 + t.second)
        };
        seconds(&then) - seconds(self)
    }

    /// [`LocalTime::seconds_until`] as a duration: zero if `then` has passed.
    pub fn duration_until(&self, then: LocalTime) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.seconds_until(then)).unwrap_or(0))
    }

    /// The same minute, at its first second.
    pub fn minute(self) -> LocalTime {
        LocalTime { second: 0, ..self }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// 0 = Sunday (Sakamoto's method).
pub(super) fn weekday(year: i64, month: u32, day: u32) -> u32 {
    const OFFSETS: [i64; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    let offset = OFFSETS
        .get((month as usize).wrapping_sub(1))
        .copied()
        .unwrap_or(0);
    let w = (y + y / 4 - y / 100 + y / 400 + offset + i64::from(day)).rem_euclid(7);
    w as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> LocalTime {
        LocalTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    fn next(schedule: &str, now: LocalTime) -> Option<u64> {
        schedule
            .parse::<CronSchedule>()
            .expect("parses")
            .seconds_until_next(now)
    }

    fn next_after(schedule: &str, now: LocalTime) -> Option<LocalTime> {
        schedule
            .parse::<CronSchedule>()
            .expect("parses")
            .next_after(now)
    }

    #[test]
    fn the_next_minute_is_found_across_hours_days_months_and_years() {
        // 2026-11-29 is a Sunday.
        assert_eq!(weekday(2026, 11, 29), 0);
        let now = at(2026, 11, 29, 23, 50, 30);
        assert_eq!(next("0 3 * * *", now), Some(3 * 3600 + 9 * 60 + 30));
        assert_eq!(next("* * * * *", now), Some(30));
        assert_eq!(next("*/15 * * * *", now), Some(9 * 60 + 30));
        assert_eq!(
            next("0 0 1 1 *", now),
            Some((32 + 1) * 86_400 - (23 * 3600 + 50 * 60 + 30))
        );
        // Mondays at 04:30: tomorrow.
        assert_eq!(next("30 4 * * 1", now), Some(4 * 3600 + 39 * 60 + 30));
        // Sunday as 7, at 23:55 today.
        assert_eq!(next("55 23 * * 7", now), Some(4 * 60 + 30));
        // Not the minute it is in.
        assert_eq!(next("50 23 * * *", now), Some(86_400 - 30));
        // February 29th: in 2028.
        assert!(next("0 0 29 2 *", now).is_some_and(|s| s > 400 * 86_400));
        assert_eq!(next("0 0 31 2 *", now), None);
    }

    #[test]
    fn calendar_seconds_count_across_months_years_and_leap_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let before = at(2027, 12, 31, 23, 59, 59);
        assert_eq!(before.seconds_until(at(2028, 1, 1, 0, 0, 0)), 1);
        assert_eq!(
            at(2028, 2, 28, 0, 0, 0).seconds_until(at(2028, 3, 1, 0, 0, 0)),
            2 * 86_400
        );
        assert_eq!(
            at(2028, 3, 1, 0, 0, 0).seconds_until(before),
            -(60 * 86_400 + 1)
        );
        // Every minute: the next one; the first second of a minute is still that minute.
        let next = next_after("* * * * *", at(2026, 11, 29, 3, 0, 0));
        assert_eq!(next, Some(at(2026, 11, 29, 3, 1, 0)));
        assert_eq!(next_after("0 0 30 2 *", at(2026, 11, 29, 3, 0, 0)), None);
    }

    #[test]
    fn both_day_fields_restricted_match_either_as_in_cron() {
        // The 1st of the month or any Monday: Monday 2026-11-30 comes first.
        let now = at(2026, 11, 29, 12, 0, 0);
        assert_eq!(next("0 0 1 * 1", now), Some(12 * 3600));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("0 3 * *", "five fields"),
            ("60 3 * * *", "outside 0–59"),
            ("0 3 * * mon", "not a number"),
            ("*/0 * * * *", "step of 0"),
            ("0 5-1 * * *", "runs backwards"),
        ] {
            let err = text.parse::<CronSchedule>().expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
