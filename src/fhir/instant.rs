//! FHIR `instant` values: parsing client input and rendering server timestamps.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Renders a timestamp as a FHIR instant with microseconds, the database's precision, so that a
/// value read back compares equal to the one stored.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The first microsecond of year 0001 in UTC, the earliest instant accepted from a client.
/// FHIR's date grammar has the years 0001 to 9999 only, and both stores hold every one of them
/// (Postgres refuses year 0000 in timestamp text, which is how instants reach its SQL).
pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The first microsecond after year 9999 in UTC: every accepted instant is before it.
pub const END_MICROS: i64 = 253_402_300_800_000_000;

/// Whether an instant lies in the years 0001 to 9999 (UTC).
pub fn in_range(t: DateTime<Utc>) -> bool {
    (MIN_MICROS..END_MICROS).contains(&t.timestamp_micros())
}

/// A value that is not an instant this server takes; each names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstantError {
    #[error("'{0}' is not a FHIR instant (expected e.g. 2024-01-02T03:04:05Z, with a time zone)")]
    Malformed(String),
    #[error("'{0}' is outside the years 0001 to 9999 (UTC) that FHIR instants cover")]
    OutOfRange(String),
}

/// Parses a FHIR instant (`2024-01-02T03:04:05Z`, `...05.123+01:00`). A bare date
/// (`2024-01-02`) is accepted too and means its first moment in UTC, as Azure does; anything
/// without a time zone is ambiguous and refused, and so is anything outside years 0001-9999.
pub fn parse(value: &str) -> Result<DateTime<Utc>, InstantError> {
    let parsed = if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
    } else {
        return Err(InstantError::Malformed(value.to_owned()));
    };
    if !in_range(parsed) {
        return Err(InstantError::OutOfRange(value.to_owned()));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_instants_with_zones_and_bare_dates() {
        assert_eq!(format(parse("2024-01-02T03:04:05+01:00").unwrap()), "2024-01-02T02:04:05.000000Z");
        assert_eq!(format(parse("2024-01-02").unwrap()), "2024-01-02T00:00:00.000000Z");
        assert!(parse("2024-01-02T03:04:05").is_err());
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn refuses_instants_outside_years_0001_to_9999() {
        assert_eq!(DateTime::from_timestamp_micros(MIN_MICROS).map(format).unwrap(), "0001-01-01T00:00:00.000000Z");
        assert_eq!(DateTime::from_timestamp_micros(END_MICROS).map(format).unwrap(), "+10000-01-01T00:00:00.000000Z");
        assert!(parse("0001-01-01T00:00:00Z").is_ok());
        assert!(parse("9999-12-31T23:59:59.999999Z").is_ok());
        for bad in ["0000-01-01T00:00:00Z", "0000-12-31", "0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-05:00"] {
            assert!(parse(bad).unwrap_err().to_string().contains("0001 to 9999"), "{bad}");
        }
    }
}
