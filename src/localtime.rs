//! Local time from the C library (`localtime_r`): the one place it is called. Conflict-copy
//! names, the trash's deletion dates, the schedule of sync folders and what `sync list` shows
//! all read the clock the way the system's time zone says. Times stored or shown as seconds
//! since the epoch are read here too ([`unix_now`]).

/// Now, in whole seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The broken-down local time of `secs` (seconds since the epoch); `None` when the C library
/// cannot tell (a time out of its range).
pub fn local_tm(secs: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(secs).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (plain integers, and a null `tm_zone`);
    // localtime_r only writes into it and is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// `local_tm`, or UTC when the local time cannot be had.
pub fn local_or_utc(secs: i64) -> libc::tm {
    if let Some(tm) = local_tm(secs) {
        return tm;
    }
    let t = secs as libc::time_t;
    // SAFETY: as above, with gmtime_r.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::gmtime_r(&t, &mut tm) };
    tm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_instant_has_its_date_in_utc_and_a_plausible_one_locally() {
        let tm = local_or_utc(0);
        // Whatever the zone, the epoch is on 31 Dec 1969 or 1 Jan 1970.
        assert!(matches!((tm.tm_year, tm.tm_mon), (69, 11) | (70, 0)));
        assert!(local_tm(1_800_000_000).is_some());
    }
}
