//! Local time for the units' `timestamp_format` (PM2's `log_date_format`): the C library's
//! `localtime_r`, as cron schedules use it, so `TZ` in clusterd's environment, else
//! `/etc/localtime`, decides the zone. Asked once per second at most: the log thread
//! formats a timestamp once per read, and a second's fields are kept.

use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::unit::cron::LocalTime;
use crate::unit::timestamp_format::{LocalStamp, TimestampFormat};

/// The last second asked for, as the C library gave it.
#[derive(Default)]
pub(crate) struct LocalClock {
    last: Option<LocalStamp>,
}

impl LocalClock {
    /// Appends `at`, in local time, formatted as `format`, to `out`.
    pub(crate) fn format_into(
        &mut self,
        format: &TimestampFormat,
        at: SystemTime,
        out: &mut Vec<u8>,
    ) {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let epoch = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        let stale = self.last.as_ref().is_none_or(|last| last.epoch != epoch);
        if stale {
            self.last = Some(local_stamp(epoch));
        }
        if let Some(stamp) = &mut self.last {
            stamp.micros = since.subsec_micros();
            format.format_into(stamp, out);
        }
    }
}

/// `epoch` in local time, with its offset and zone (UTC if the C library cannot say).
fn local_stamp(epoch: i64) -> LocalStamp {
    let seconds = libc::time_t::try_from(epoch).unwrap_or(0);
    // SAFETY: an all-zero `tm` is a valid value; localtime_r writes only into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to valid locals; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&seconds, &mut tm) }.is_null() {
        // SAFETY: as above.
        unsafe { libc::gmtime_r(&seconds, &mut tm) };
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: localtime_r set tm_zone to a NUL-terminated string that lives as long as
        // the C library's zone data (it is copied at once).
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    LocalStamp {
        local: local_time_of(&tm),
        micros: 0,
        offset: tm.tm_gmtoff,
        zone,
        epoch,
    }
}

/// The calendar fields of a `tm` from `localtime_r` (a leap second reads as :59): shared by
/// the log's timestamps and cron_restart's schedule.
pub(crate) fn local_time_of(tm: &libc::tm) -> LocalTime {
    LocalTime {
        year: i64::from(tm.tm_year) + 1900,
        month: u32::try_from(tm.tm_mon + 1).unwrap_or(1),
        day: u32::try_from(tm.tm_mday).unwrap_or(1),
        hour: u32::try_from(tm.tm_hour).unwrap_or(0),
        minute: u32::try_from(tm.tm_min).unwrap_or(0),
        second: u32::try_from(tm.tm_sec).unwrap_or(0).min(59),
    }
}
