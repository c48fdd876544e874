//! Numbers for people: sizes with binary units (`indicatif::HumanBytes`)
//! and Unix times as UTC dates. `--json` keeps exact numbers instead.

use indicatif::HumanBytes;

/// `n` bytes for a person, e.g. `1.50 MiB` (`HumanBytes`); `--json` has
/// the exact count.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// `secs` (Unix time) as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date of day `z` since 1970-01-01: the era
/// arithmetic of 400-year cycles (146097 days), with March as the first
/// month so that the leap day falls at the end of the year.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(1_796_106_077), "2026-12-01 06:21:17 UTC");
        assert_eq!(utc_date(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(utc_date(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 19), "1.50 MiB");
    }
}
