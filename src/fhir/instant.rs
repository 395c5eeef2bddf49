//! FHIR `instant` values: parsing client input and rendering server timestamps.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Renders a timestamp as a FHIR instant with microseconds, the database's precision, so that a
/// value read back compares equal to the one stored.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a FHIR instant (`2024-01-02T03:04:05Z`, `...05.123+01:00`). A bare date
/// (`2024-01-02`) is accepted too and means its first moment in UTC, as Azure does; anything
/// without a time zone is ambiguous and refused.
pub fn parse(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "'{value}' is not a FHIR instant (expected e.g. 2024-01-02T03:04:05Z, with a time zone)"
    ))
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
}
