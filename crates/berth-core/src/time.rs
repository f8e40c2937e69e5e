//! Proleptic Gregorian calendar arithmetic in UTC (Howard Hinnant's `days_from_civil` /
//! `civil_from_days`) and the timestamp texts built on it, shared by every timestamp format
//! berth reads or writes: SigV4's `X-Amz-Date`, CloudWatch's ISO 8601 times, metering's days
//! and times, the task metadata endpoint's RFC 3339 times.

/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;

/// Days since 1970-01-01 of the date `y`-`m`-`d` (month 1..=12, day 1..=31).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month 1..=12, day 1..=31)` of day `z` since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `(year, month, day, hour, minute, second)` of `secs` seconds since the Unix epoch (UTC;
/// negative is before 1970).
pub fn civil_time(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(DAY_SECS));
    let rem = secs.rem_euclid(DAY_SECS);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// RFC 3339 UTC text with nanoseconds, `2024-01-02T03:04:05.123456789Z`, of `secs` seconds
/// since the Unix epoch plus `nanos` (0..1e9) nanoseconds.
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let (y, m, d, h, mi, s) = civil_time(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
}

/// ISO 8601 UTC text with milliseconds, `2024-01-02T03:04:05.123Z`, of epoch seconds `t`
/// (rounded to the millisecond), as the AWS query protocol writes timestamps.
pub fn format_iso8601(t: f64) -> String {
    let ms = (t * 1000.0).round() as i64;
    let (y, m, d, h, mi, s) = civil_time(ms.div_euclid(1000));
    let ms = ms.rem_euclid(1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Epoch seconds of an ISO 8601 / RFC 3339 time: `YYYY-MM-DD`, optionally followed by `T` (or
/// `t` or a space) and `hh:mm[:ss[.fraction]]`, optionally followed by `Z` or an offset
/// `+hh:mm` / `-hh:mm`; without a zone the time is UTC, a date alone is its midnight UTC.
/// `None` for any other text or an out-of-range field (month 1..=12, day 1..=31, hour 0..=23,
/// minute 0..=59, second 0..=60).
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| num_in(s, r);
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = (days_from_civil(y, mo, d) * DAY_SECS) as f64;
    if b.len() == 10 {
        return Some(secs);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let (se, mut rest) = if b.get(16) == Some(&b':') {
        (num(17..19)?, s.get(19..)?)
    } else {
        (0, &s[16..])
    };
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    secs += (h * 3600 + mi * 60 + se) as f64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        secs += format!("0.{}", &frac[..n]).parse::<f64>().ok()?;
        rest = &frac[n..];
    }
    match rest {
        "" | "Z" | "z" => Some(secs),
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let oh = num_in(rest, 1..3)?;
            let om = num_in(rest, 4..6)?;
            let off = (oh * 3600 + om * 60) as f64;
            Some(if rest.starts_with('+') {
                secs - off
            } else {
                secs + off
            })
        }
        _ => None,
    }
}

/// The decimal number written (digits only) at `r` of `s`.
fn num_in(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    s.get(r)
        .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 4, 5), 19818);
        assert_eq!(civil_from_days(19818), (2024, 4, 5));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(format_rfc3339(-1, 0), "1969-12-31T23:59:59.000000000Z");
        assert_eq!(format_iso8601(1_709_296_215.0), "2024-03-01T12:30:15.000Z");
        assert_eq!(format_iso8601(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(format_iso8601(0.9996), "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn parses() {
        assert_eq!(parse_iso8601("2024-03-01T12:30:15Z"), Some(1_709_296_215.0));
        assert_eq!(parse_iso8601("2024-04-05T19:34:38Z"), Some(1_712_345_678.0));
        assert_eq!(
            parse_iso8601("2024-04-05T21:34:38.5+02:00"),
            Some(1_712_345_678.5)
        );
        assert_eq!(
            parse_iso8601("2024-04-05T17:34:38-02:00"),
            Some(1_712_345_678.0)
        );
        assert_eq!(parse_iso8601("2024-04-05 19:34:38"), Some(1_712_345_678.0));
        assert_eq!(parse_iso8601("2024-04-05T19:34Z"), Some(1_712_345_640.0));
        assert_eq!(parse_iso8601("1970-01-02"), Some(86_400.0));
        assert_eq!(
            parse_iso8601(&format_iso8601(951_782_400.5)),
            Some(951_782_400.5)
        );
        for bad in [
            "yesterday",
            "2024-13-01",
            "2024-01-32",
            "2024-01-01T24:00:00Z",
            "2024-01-01T12:00:00.Z",
            "2024-01-01T12:00:00+0200",
            "2024-01-01T12:00:00+aa:00",
            "2024-01-01X12:00:00Z",
            "+024-01-01",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
