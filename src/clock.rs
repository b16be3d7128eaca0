//! Time: the one `Clock` the simulator (and later the registry and planner) read, plus the
//! calendar arithmetic cachet needs — RFC 3339 timestamps and `"300s"` durations as Google's
//! JSON writes them, and UTC dates for the price table. No date crate is needed for UTC-only
//! arithmetic.
//!
//! The clock is either the system clock plus a skew that tests advance (TTL expiry is testable
//! without sleeping), or a manual clock that `cachet replay` sets to each request's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Clock {
    mode: Mode,
    micros: AtomicU64,
}

enum Mode {
    /// The system clock plus `micros` of skew (tests advance it to expire caches).
    System,
    /// A virtual clock at `micros` since the Unix epoch, set by `cachet replay` before each
    /// request, so hours of traffic replay in seconds and deterministically.
    Manual,
}

impl Clock {
    pub fn system() -> Self {
        Clock {
            mode: Mode::System,
            micros: AtomicU64::new(0),
        }
    }

    pub fn manual(at: SystemTime) -> Self {
        let clock = Clock {
            mode: Mode::Manual,
            micros: AtomicU64::new(0),
        };
        clock.set(at);
        clock
    }

    pub fn now(&self) -> SystemTime {
        let micros = Duration::from_micros(self.micros.load(Ordering::Relaxed));
        match self.mode {
            Mode::System => SystemTime::now() + micros,
            Mode::Manual => UNIX_EPOCH + micros,
        }
    }

    /// Whether this is a manual (virtual) clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.mode, Mode::Manual)
    }

    /// Moves a manual clock to `at` (a system clock ignores it: real time cannot be set).
    pub fn set(&self, at: SystemTime) {
        if let Mode::Manual = self.mode {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            let micros = u64::try_from(since.as_micros()).unwrap_or(u64::MAX);
            self.micros.store(micros, Ordering::Relaxed);
        }
    }

    /// Moves the clock forward: skew for a system clock, time itself for a manual one.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2025-01-02T03:04:05.123456Z`: UTC with microseconds, the precision Google's API returns and
/// one that every SDK's date parser (pydantic, JavaScript `Date`) accepts.
pub fn format_rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `None` for anything else or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = s.get(from..from + len)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let sep = |at: usize, want: &[u8]| b.get(at).is_some_and(|c| want.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        nanos = fraction_nanos(frac.get(..digits)?)?;
        rest = frac.get(digits..)?;
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let (hh, mm) = rest.get(1..)?.split_once(':')?;
            if hh.len() != 2 || mm.len() != 2 {
                return None;
            }
            sign * (hh.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Parses a protobuf Duration string: seconds with up to nine fractional digits, then `s`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let number = s.strip_suffix('s')?;
    let (whole, nanos) = match number.split_once('.') {
        Some((whole, frac)) => (whole, fraction_nanos(frac)?),
        None => (number, 0),
    };
    if whole.is_empty() || !whole.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(Duration::new(whole.parse().ok()?, nanos))
}

/// `"5"` → 500 ms in nanoseconds; at most nine digits, as protobuf allows.
fn fraction_nanos(digits: &str) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<9}");
    padded.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of `t` in UTC.
pub fn utc_date(t: SystemTime) -> String {
    let days = i64::try_from(unix_secs(t) / 86_400).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_789);
        assert_eq!(format_rfc3339(t), "2024-02-29T12:34:56.123456Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 123_456_000);
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        assert_eq!(
            parse_rfc3339("2024-02-29T14:34:56+02:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_210_096))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.5Z"),
            Some(UNIX_EPOCH + Duration::new(1_709_210_096, 500_000_000))
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_protobuf_durations() {
        assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(
            parse_duration("0.000000001s"),
            Some(Duration::from_nanos(1))
        );
        for bad in ["", "s", "300", "-1s", "1.s", "1.0000000001s", "1m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn advancing_the_clock_moves_now() {
        let clock = Clock::system();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() >= before + Duration::from_secs(3600));
    }
}
