//! Dates and numbers as the ranges FHIR search compares: a partial date stands for all of its
//! period (`2020` is the year 2020), a number for the interval its significant digits imply
//! (`100` is [99.5, 100.5)). Dates without a time zone are read as UTC.

use chrono::{DateTime, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};

/// A half-open range of instants, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

impl DateRange {
    pub const UNBOUNDED_LOW: i64 = i64::MIN;
    pub const UNBOUNDED_HIGH: i64 = i64::MAX;

    pub fn low_instant(&self) -> Option<DateTime<Utc>> {
        (self.low != Self::UNBOUNDED_LOW).then(|| DateTime::from_timestamp_micros(self.low)).flatten()
    }

    pub fn high_instant(&self) -> Option<DateTime<Utc>> {
        (self.high != Self::UNBOUNDED_HIGH).then(|| DateTime::from_timestamp_micros(self.high)).flatten()
    }
}

fn micros(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

/// Parses a FHIR date, dateTime or instant at whatever precision it has.
pub fn parse_date(text: &str) -> Option<DateRange> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let year = digits(0..4)? as i32;
    let start_of = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d).map(|d| d.and_time(NaiveTime::MIN));
    match bytes.len() {
        4 => {
            let low = start_of(year, 1, 1)?;
            Some(DateRange { low: micros(low), high: micros(start_of(year + 1, 1, 1)?) })
        }
        7 if bytes[4] == b'-' => {
            let low = start_of(year, digits(5..7)?, 1)?;
            Some(DateRange { low: micros(low), high: micros(low.checked_add_months(Months::new(1))?) })
        }
        10 if bytes[4] == b'-' && bytes[7] == b'-' => {
            let low = start_of(year, digits(5..7)?, digits(8..10)?)?;
            Some(DateRange { low: micros(low), high: micros(low + TimeDelta::days(1)) })
        }
        n if n > 10 && bytes[10] == b'T' => parse_date_time(text),
        _ => None,
    }
}

/// `YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm]`; the range spans the last unit given.
fn parse_date_time(text: &str) -> Option<DateRange> {
    let (local, offset_secs) = split_zone(text)?;
    let (naive, unit) = if local.len() == 16 {
        (NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M").ok()?, TimeDelta::minutes(1))
    } else if local.len() == 19 {
        (NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S").ok()?, TimeDelta::seconds(1))
    } else {
        let fraction = local.get(20..)?;
        if local.as_bytes()[19] != b'.' || fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        let unit = TimeDelta::nanoseconds(10i64.pow(9 - fraction.len() as u32)).max(TimeDelta::microseconds(1));
        (naive, unit)
    };
    let low = micros(naive) - offset_secs * 1_000_000;
    Some(DateRange { low, high: low + unit.num_microseconds()? })
}

/// Splits off the zone: `Z` or `±hh:mm` gives its offset in seconds; none means UTC. Stored
/// values are whatever was written (`2020-01-01Té12345`), so nothing here may slice blindly.
fn split_zone(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix('Z') {
        return Some((local, 0));
    }
    let tail = text.len().checked_sub(6)?;
    let (Some(local), Some(zone)) = (text.get(..tail), text.get(tail..)) else { return None };
    match zone.as_bytes() {
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'));
            let (hours, minutes) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if hours > 14 || minutes > 59 {
                return None;
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            Some((local, sign * (hours * 3600 + minutes * 60)))
        }
        _ => Some((text, 0)),
    }
}

/// The midpoint of "now" for `ap` on dates: the gap to it sets the tolerance.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// A decimal search value: its value and the interval its precision implies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decimal {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Parses a FHIR decimal (`100`, `-0.25`, `1e3`). Precision comes from the digits after the
/// point (or the exponent): `100` is [99.5, 100.5), `100.00` is [99.995, 100.005).
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() || text.contains(['i', 'n', 'I', 'N']) {
        return None;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
        None => (text, 0),
    };
    // Checked: an exponent near i32::MIN would overflow the subtraction.
    let fraction = i32::try_from(mantissa.split_once('.').map_or(0, |(_, f)| f.len())).ok()?;
    let decimals = fraction.checked_sub(exponent)?;
    let half = 0.5 * 10f64.powi(decimals.checked_neg()?);
    if !half.is_finite() {
        return None;
    }
    Some(Decimal { value, low: value - half, high: value + half })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc).timestamp_micros()
    }

    #[test]
    fn partial_dates_are_ranges() {
        assert_eq!(parse_date("2020"), Some(DateRange { low: at("2020-01-01T00:00:00Z"), high: at("2021-01-01T00:00:00Z") }));
        assert_eq!(parse_date("2020-02"), Some(DateRange { low: at("2020-02-01T00:00:00Z"), high: at("2020-03-01T00:00:00Z") }));
        assert_eq!(parse_date("2020-12-31"), Some(DateRange { low: at("2020-12-31T00:00:00Z"), high: at("2021-01-01T00:00:00Z") }));
        assert_eq!(
            parse_date("2011-02-02T16:30:49-05:00"),
            Some(DateRange { low: at("2011-02-02T21:30:49Z"), high: at("2011-02-02T21:30:50Z") })
        );
        assert_eq!(parse_date("2011-02-02T16:30:49.825Z").map(|r| r.high - r.low), Some(1000));
        assert_eq!(parse_date("2011-02-02T16:30").map(|r| r.high - r.low), Some(60_000_000));
        for bad in ["20", "2020-13", "2020-02-30", "2020-01-01T25:00", "2020-01-01T10:00:00.", "yesterday"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn decimals_carry_their_precision() {
        let d = parse_decimal("100").unwrap();
        assert_eq!((d.low, d.high), (99.5, 100.5));
        let d = parse_decimal("5.40").unwrap();
        assert!((d.low - 5.395).abs() < 1e-9 && (d.high - 5.405).abs() < 1e-9);
        let d = parse_decimal("1e2").unwrap();
        assert_eq!((d.low, d.high), (50.0, 150.0));
        assert!(parse_decimal("abc").is_none());
        assert!(parse_decimal("NaN").is_none());
    }
}
