//! Session time: local (New York) time of day and the CME session date of a UTC timestamp.
//!
//! Time-zone conversion is the most expensive thing a bar needs, yet the UTC offset changes only
//! at DST transitions, which fall on quarter-hour boundaries of UTC in every zone we trade. So the
//! offset is cached per 15-minute block of UTC time and looked up in the tz database once per block.

use chrono::{Offset, TimeZone};
use chrono_tz::Tz;

use crate::params::NS_PER_SEC;

const BLOCK_SECS: i64 = 900;
const DAY_SECS: i64 = 86_400;

/// Converts UTC nanoseconds to local seconds-of-day and session day numbers.
#[derive(Clone, Debug)]
pub struct SessionClock {
    tz: Tz,
    session_end: i32,
    cached_block: i64,
    cached_offset: i64,
}

/// Where a timestamp falls: session day (days since 1970-01-01 of the session's local date) and
/// local seconds after midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub session_day: i32,
    pub seconds_of_day: i32,
}

impl SessionClock {
    pub fn new(timezone: &str, session_end: i32) -> Result<Self, String> {
        let tz: Tz = timezone.parse().map_err(|_| format!("unknown time zone {timezone:?}"))?;
        Ok(SessionClock { tz, session_end, cached_block: i64::MIN, cached_offset: 0 })
    }

    /// Local time of `ts_ns`; a time at or after `session_end` belongs to the next day's session
    /// (CME Globex convention, SPEC §2).
    #[inline(always)]
    pub fn local(&mut self, ts_ns: i64) -> LocalTime {
        let secs = ts_ns.div_euclid(NS_PER_SEC);
        let block = secs.div_euclid(BLOCK_SECS);
        if block != self.cached_block {
            self.cached_block = block;
            self.cached_offset = self.offset_at(block * BLOCK_SECS);
        }
        let local = secs + self.cached_offset;
        let day = local.div_euclid(DAY_SECS);
        let seconds_of_day = (local - day * DAY_SECS) as i32;
        let session_day = day as i32 + i32::from(seconds_of_day >= self.session_end);
        LocalTime { session_day, seconds_of_day }
    }

    fn offset_at(&self, utc_secs: i64) -> i64 {
        let utc = chrono::DateTime::from_timestamp(utc_secs, 0).expect("timestamp in range");
        i64::from(self.tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc())
    }
}

/// `t` in the half-open window `[start, end)` of local seconds (configuration guarantees
/// `start < end`: windows do not wrap past midnight).
#[inline(always)]
pub fn in_window(t: i32, start: i32, end: i32) -> bool {
    start <= t && t < end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
            .and_utc()
            .timestamp()
            * NS_PER_SEC
    }

    #[test]
    fn new_york_dst_and_session_roll() {
        let mut clock = SessionClock::new("America/New_York", 18 * 3600).unwrap();
        // 2024-03-08 (EST, UTC-5): 13:30 UTC is 08:30 local.
        assert_eq!(clock.local(ns(2024, 3, 8, 13, 30)).seconds_of_day, 8 * 3600 + 1800);
        // 2024-03-11 (EDT, UTC-4): 13:30 UTC is 09:30 local.
        assert_eq!(clock.local(ns(2024, 3, 11, 13, 30)).seconds_of_day, 9 * 3600 + 1800);
        // 22:00 UTC on a June Sunday is 18:00 EDT: Monday's session.
        let sunday = clock.local(ns(2024, 6, 9, 21, 59)).session_day;
        let monday = clock.local(ns(2024, 6, 9, 22, 0)).session_day;
        assert_eq!(monday, sunday + 1);
    }

    #[test]
    fn windows_are_half_open() {
        assert!(in_window(10, 0, 20));
        assert!(in_window(0, 0, 20));
        assert!(!in_window(20, 0, 20));
    }
}
