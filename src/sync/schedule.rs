//! When a scheduled folder runs next: daily or weekly at the settings' time, in local time; a
//! run missed while the machine was off runs at the next start.
//!
//! Pure functions of the schedule, the settings and a few instants (seconds since the epoch);
//! local time comes from the C library (`localtime_r`, `mktime`), so it follows the system's
//! time zone and its daylight-saving rules. A set time that does not exist on a given day (the
//! hour skipped when clocks go forward) runs at the time `mktime` normalises it to, usually an
//! hour later; a set time that happens twice runs once.

use std::fmt;

use super::folder::Schedule;

/// A day of the week, for weekly schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The full lowercase English name (`monday`).
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
            Weekday::Sun => "sunday",
        }
    }

    /// The full name or its first three letters, in any case (`mon`, `Monday`).
    pub fn parse(s: &str) -> Option<Weekday> {
        let s = s.trim().to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|d| s == d.as_str() || (s.len() == 3 && d.as_str().starts_with(&s)))
    }

    /// `struct tm`'s `tm_wday`: days since Sunday.
    pub fn tm_wday(self) -> i32 {
        match self {
            Weekday::Sun => 0,
            d => d as i32 + 1,
        }
    }

    /// The day of a `tm_wday` (taken modulo 7).
    pub fn from_tm_wday(w: i32) -> Weekday {
        match w.rem_euclid(7) {
            0 => Weekday::Sun,
            w => Weekday::ALL[(w - 1) as usize],
        }
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first scheduled instant of a folder strictly after it last ran (`last_run`), or after it
/// was added (`added_at`) if it never ran; `None` for [`Schedule::Immediate`] (or if the local
/// time cannot be computed). Daily: at `time` (hour, minute, local time); weekly: at `time` on
/// `day`. A reference later than `now` (the clock was set back) counts from `now`, so a wrong
/// clock once does not stop a folder for long.
pub fn next_run(
    schedule: Schedule,
    time: (u8, u8),
    day: Weekday,
    last_run: Option<i64>,
    added_at: i64,
    now: i64,
) -> Option<i64> {
    let after = last_run.unwrap_or(added_at).min(now);
    let weekday = match schedule {
        Schedule::Immediate => return None,
        Schedule::Daily => None,
        Schedule::Weekly => Some(day),
    };
    next_at(after, time, weekday)
}

/// Whether a scheduled folder should run now: its [`next_run`] is at or before `now` (a run
/// missed while the machine was off is due at once). Never for [`Schedule::Immediate`].
pub fn is_due(
    schedule: Schedule,
    time: (u8, u8),
    day: Weekday,
    last_run: Option<i64>,
    added_at: i64,
    now: i64,
) -> bool {
    next_run(schedule, time, day, last_run, added_at, now).is_some_and(|t| t <= now)
}

/// The first instant strictly after `after` that is at `time` local time (on `weekday`, if
/// given).
fn next_at(after: i64, (hour, minute): (u8, u8), weekday: Option<Weekday>) -> Option<i64> {
    let start = local_tm(after)?;
    let first = match weekday {
        None => 0,
        Some(d) => (d.tm_wday() - start.tm_wday).rem_euclid(7),
    };
    let step = if weekday.is_some() { 7 } else { 1 };
    // Counted from the start date each time (never from a normalised result), so a
    // daylight-saving shift cannot accumulate. Three tries are enough: the first may be
    // earlier in the day than `after`; the second is a day or a week later.
    (0..3)
        .map(|k| first + k * step)
        .filter_map(|days| {
            let mut tm = start;
            tm.tm_mday += days;
            tm.tm_hour = i32::from(hour);
            tm.tm_min = i32::from(minute);
            tm.tm_sec = 0;
            tm.tm_isdst = -1;
            make_time(tm)
        })
        .find(|&t| t > after)
}

fn local_tm(t: i64) -> Option<libc::tm> {
    crate::localtime::local_tm(t)
}

// `time_t` is `i64` here but narrower on some targets.
#[allow(clippy::useless_conversion)]
fn make_time(mut tm: libc::tm) -> Option<i64> {
    // SAFETY: `tm` is a valid, owned value; mktime normalises it in place.
    let t = unsafe { libc::mktime(&mut tm) };
    // -1 is also one second before the epoch: never a scheduled run.
    (t != -1).then_some(i64::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-01-14 10:00 UTC, a Wednesday; far from any daylight-saving change.
    const JAN: i64 = 1_768_384_800;
    /// 2026-07-15 10:00 UTC.
    const JUL: i64 = 1_784_109_600;

    fn hm(t: i64) -> (i32, i32, Weekday) {
        let tm = local_tm(t).unwrap();
        (tm.tm_hour, tm.tm_min, Weekday::from_tm_wday(tm.tm_wday))
    }

    #[test]
    fn weekday_parse_and_display() {
        assert_eq!(Weekday::parse("mon"), Some(Weekday::Mon));
        assert_eq!(Weekday::parse("Monday"), Some(Weekday::Mon));
        assert_eq!(Weekday::parse(" SUN "), Some(Weekday::Sun));
        assert_eq!(Weekday::parse("thu"), Some(Weekday::Thu));
        assert_eq!(Weekday::parse("mo"), None);
        assert_eq!(Weekday::parse("mond"), None);
        assert_eq!(Weekday::parse(""), None);
        for d in Weekday::ALL {
            assert_eq!(Weekday::parse(&d.to_string()), Some(d));
            assert_eq!(Weekday::from_tm_wday(d.tm_wday()), d);
        }
        assert_eq!(Weekday::Sun.tm_wday(), 0);
        assert_eq!(Weekday::Sat.tm_wday(), 6);
    }

    #[test]
    fn immediate_never_scheduled() {
        assert_eq!(
            next_run(Schedule::Immediate, (3, 0), Weekday::Sun, None, JAN, JAN),
            None
        );
        assert!(!is_due(
            Schedule::Immediate,
            (3, 0),
            Weekday::Sun,
            None,
            0,
            JAN
        ));
    }

    #[test]
    fn daily_is_the_next_set_time_within_a_day() {
        for base in [JAN, JUL] {
            for offset in [0, 3_600, 7 * 3_600, 13 * 3_600, 20 * 3_600] {
                let last = base + offset;
                for time in [(3, 0), (12, 34), (23, 59), (0, 0)] {
                    let t =
                        next_run(Schedule::Daily, time, Weekday::Sun, Some(last), 0, last).unwrap();
                    assert!(t > last && t <= last + DAY + 3_600, "{t} after {last}");
                    let (h, m, _) = hm(t);
                    assert_eq!((h, m), (i32::from(time.0), i32::from(time.1)));
                }
            }
        }
    }

    #[test]
    fn weekly_is_the_next_set_day_and_time_within_a_week() {
        for base in [JAN, JUL] {
            for offset in (0..8).map(|d| d * DAY + 5_000) {
                let last = base + offset;
                for day in Weekday::ALL {
                    let t = next_run(Schedule::Weekly, (12, 34), day, Some(last), 0, last).unwrap();
                    assert!(t > last && t <= last + 7 * DAY + 3_600, "{t} after {last}");
                    assert_eq!(hm(t), (12, 34, day));
                }
            }
        }
    }

    #[test]
    fn exactly_at_the_set_time_is_strictly_after() {
        let first = next_run(Schedule::Daily, (12, 34), Weekday::Sun, Some(JAN), 0, JAN).unwrap();
        let second = next_run(
            Schedule::Daily,
            (12, 34),
            Weekday::Sun,
            Some(first),
            0,
            first,
        )
        .unwrap();
        assert!(second > first);
        assert!((second - first - DAY).abs() <= 3_600);
        let w1 = next_run(Schedule::Weekly, (12, 34), Weekday::Fri, Some(JAN), 0, JAN).unwrap();
        let w2 = next_run(Schedule::Weekly, (12, 34), Weekday::Fri, Some(w1), 0, w1).unwrap();
        assert!((w2 - w1 - 7 * DAY).abs() <= 3_600);
    }

    #[test]
    fn never_run_counts_from_added() {
        let t = next_run(Schedule::Daily, (12, 34), Weekday::Sun, None, JAN, JAN + 10).unwrap();
        assert!(t > JAN && t <= JAN + DAY);
        assert!(!is_due(
            Schedule::Daily,
            (12, 34),
            Weekday::Sun,
            None,
            JAN,
            JAN + 10
        ));
        assert!(is_due(
            Schedule::Daily,
            (12, 34),
            Weekday::Sun,
            None,
            JAN,
            t
        ));
    }

    #[test]
    fn missed_run_is_due_at_once() {
        // Last ran a month ago: the machine was off at the set times since.
        let last = JAN - 30 * DAY;
        for s in [Schedule::Daily, Schedule::Weekly] {
            assert!(is_due(s, (3, 0), Weekday::Sun, Some(last), 0, JAN));
            let next = next_run(s, (3, 0), Weekday::Sun, Some(JAN), 0, JAN).unwrap();
            assert!(next > JAN);
            assert!(!is_due(s, (3, 0), Weekday::Sun, Some(JAN), 0, JAN));
            assert!(is_due(s, (3, 0), Weekday::Sun, Some(JAN), 0, next));
            assert!(!is_due(s, (3, 0), Weekday::Sun, Some(JAN), 0, next - 1));
        }
    }

    #[test]
    fn a_year_of_runs_advances_a_day_or_a_week_at_a_time() {
        // Whatever the time zone's daylight-saving days, each run is one day (or week) after
        // the previous one, give or take the shift, and never stalls.
        for (s, step, count) in [(Schedule::Daily, DAY, 366), (Schedule::Weekly, 7 * DAY, 53)] {
            let mut last = JAN;
            for _ in 0..count {
                let t = next_run(s, (2, 30), Weekday::Sun, Some(last), 0, last).unwrap();
                assert!(t > last);
                if last != JAN {
                    assert!((t - last - step).abs() <= 2 * 3_600, "{t} after {last}");
                }
                last = t;
            }
        }
    }

    #[test]
    fn a_clock_set_back_counts_from_now() {
        // Last run recorded a year ahead of the clock.
        let t = next_run(
            Schedule::Daily,
            (12, 34),
            Weekday::Sun,
            Some(JAN + 365 * DAY),
            0,
            JAN,
        )
        .unwrap();
        assert!(t > JAN && t <= JAN + DAY);
    }
}
