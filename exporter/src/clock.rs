//! The kernel events' clock (CLOCK_MONOTONIC) and wall-clock time.
//!
//! Kernel timestamps come from `bpf_ktime_get_ns`, CLOCK_MONOTONIC. Spans need wall-clock
//! time. The offset between the two clocks is measured, not assumed, and measured again for
//! every journey: when the wall clock steps (NTP, an operator's `date`), the next journey's
//! spans are placed by the new offset, while the durations inside a journey, taken on the
//! monotonic clock, stay exact.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in nanoseconds: comparable with kernel event timestamps.
pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC) as u64
}

/// Wall-clock nanoseconds minus monotonic nanoseconds, right now.
///
/// The wall clock is read between two monotonic reads, a few times; the tightest bracket
/// wins, and its midpoint stands for the moment of the wall-clock read. The error is half that
/// bracket: tens of nanoseconds through the vDSO.
pub fn wall_offset_ns() -> i128 {
    let mut best: Option<(i128, i128)> = None;
    for _ in 0..5 {
        let m1 = read(libc::CLOCK_MONOTONIC);
        let wall = read(libc::CLOCK_REALTIME);
        let m2 = read(libc::CLOCK_MONOTONIC);
        let width = m2 - m1;
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, wall - (m1 + width / 2)));
        }
    }
    best.map(|(_, off)| off).unwrap_or(0)
}

/// Converts monotonic nanoseconds to wall-clock time with an offset from [`wall_offset_ns`].
pub fn to_wall(mono_ns: u64, offset_ns: i128) -> SystemTime {
    let wall = i128::from(mono_ns) + offset_ns;
    if wall <= 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_now_maps_to_wall_now() {
        let off = wall_offset_ns();
        let mapped = to_wall(monotonic_ns(), off);
        let now = SystemTime::now();
        let diff = match now.duration_since(mapped) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_millis(50), "mapped {mapped:?} vs now {now:?}");
    }

    #[test]
    fn a_later_monotonic_time_maps_later_by_the_same_amount() {
        let off = wall_offset_ns();
        let a = to_wall(1_000_000_000_000, off);
        let b = to_wall(1_000_000_250_000, off);
        assert_eq!(b.duration_since(a).unwrap(), Duration::from_nanos(250_000));
    }
}
