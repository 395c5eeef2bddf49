//! Dates under redact and dateShift, as the reference engine's DateTimeUtility: its date and
//! dateTime patterns (matched anywhere in the value), the age threshold (a date more than 89
//! years ago is redacted, not shifted or kept as a year), the offset from the key, and a
//! shifted dateTime keeping its zone with the time set to zeros.

use std::{
    cell::Cell,
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use regex::{Captures, Regex};
use serde_json::Value;

use super::security::{PERTURB, REDACT};

const YEAR: usize = 1;
const MONTH: usize = 5;
const DAY: usize = 7;
const TIME: usize = 8;
const AGE_THRESHOLD: i32 = 89;
const SHIFT_SEED: u32 = 131;
const SHIFT_RANGE: u32 = 50;

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?").expect("date pattern")
});
static DATE_TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?")
        .expect("dateTime pattern")
});
static TIME_OF_DAY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?").expect("time pattern"));

/// Whether the node holds a date/dateTime/instant (`date`) or only a date (`false`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Date,
    DateTime,
}

impl Kind {
    pub fn of(ty: &str) -> Option<Self> {
        match ty {
            "date" => Some(Kind::Date),
            "dateTime" | "instant" => Some(Kind::DateTime),
            _ => None,
        }
    }

    fn pattern(self) -> &'static Regex {
        match self {
            Kind::Date => &DATE,
            Kind::DateTime => &DATE_TIME,
        }
    }
}

/// An instant's text as the reference engine reads it (through .NET's DateTimeOffset): UTC
/// written `+00:00`, trailing zeros of the fraction dropped.
pub fn instant_text(text: &str) -> String {
    let mut out = match text.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => text.to_owned(),
    };
    if let Some(dot) = out.find('.').filter(|&d| out[..d].contains('T')) {
        let digits = out[dot + 1..].chars().take_while(char::is_ascii_digit).count();
        let kept = out[dot + 1..dot + 1 + digits].trim_end_matches('0').len();
        let cut = if kept == 0 { dot..dot + 1 + digits } else { dot + 1 + kept..dot + 1 + digits };
        out.replace_range(cut, "");
    }
    out
}

/// The days a date moves for `prefix` + `key` (the reference engine's rolling hash), -50..=50.
#[cfg(test)]
pub fn shift_days(prefix: &str, key: &str) -> i32 {
    let mut offset: u32 = 0;
    for b in prefix.bytes().chain(key.bytes()) {
        offset = (offset * SHIFT_SEED + b as u32) % SHIFT_MODULUS;
    }
    offset as i32 - SHIFT_RANGE as i32
}

const SHIFT_MODULUS: u32 = 2 * SHIFT_RANGE + 1;

/// `shift_days` for one key, computed once per resource: where the key's part of the hash ends
/// depends only on where the scope's part left it, one of 101 states, so that is a table (no
/// `Debug`: it is derived from the key).
pub struct ShiftKey([u8; SHIFT_MODULUS as usize]);

impl ShiftKey {
    pub fn new(key: &str) -> Self {
        let mut table = [0; SHIFT_MODULUS as usize];
        for (start, end) in table.iter_mut().enumerate() {
            *end = roll(start as u64, key.as_bytes()) as u8;
        }
        ShiftKey(table)
    }

    /// The days a date moves for `scope` (the resource id, or the file or folder name).
    pub fn days(&self, scope: &str) -> i32 {
        i32::from(self.0[roll(0, scope.as_bytes()) as usize]) - SHIFT_RANGE as i32
    }
}

/// The rolling hash from `offset` over `bytes`, its remainder taken every four bytes rather
/// than every byte (the same remainder: four steps stay far inside a u64).
fn roll(offset: u64, bytes: &[u8]) -> u64 {
    let mut offset = offset;
    for four in bytes.chunks(4) {
        for &b in four {
            offset = offset * u64::from(SHIFT_SEED) + u64::from(b);
        }
        offset %= u64::from(SHIFT_MODULUS);
    }
    offset
}

fn over_threshold(caps: &Captures, today: NaiveDate) -> bool {
    let number = |i: usize, default: i32| caps.get(i).and_then(|m| m.as_str().parse().ok()).unwrap_or(default);
    past_threshold(number(YEAR, 0), number(MONTH, 1) as u32, number(DAY, 1) as u32, today)
}

fn past_threshold(year: i32, month: u32, day: u32, today: NaiveDate) -> bool {
    let before_birthday = today.month() < month || (today.month() == month && today.day() < day);
    today.year() - year - i32::from(before_birthday) > AGE_THRESHOLD
}

/// Today (UTC), asked for by every date: turning the clock into a date is kept per day.
fn today() -> NaiveDate {
    thread_local!(static TODAY: Cell<Option<(u64, NaiveDate)>> = const { Cell::new(None) });
    let day = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    TODAY.with(|today| match today.get() {
        Some((of, date)) if of == day => date,
        _ => {
            let date = Utc.timestamp_opt(day as i64 * 86_400, 0).single().map_or_else(|| Utc::now().date_naive(), |t| t.date_naive());
            today.set(Some((day, date)));
            date
        }
    })
}

/// Redacts a date: to nothing, or with partial dates to its year (nothing past the threshold).
pub fn redact(value: &mut Option<Value>, text: &str, kind: Kind, partial: bool) -> u8 {
    if partial {
        if let Some(date) = well_formed(text, kind) {
            let over = past_threshold(date.year, date.month, date.day, today());
            *value = (!over).then(|| Value::String(text[..4].to_owned()));
        } else if let Some(caps) = kind.pattern().captures(text)
            && let Some(year) = caps.get(YEAR)
        {
            *value = (!over_threshold(&caps, today())).then(|| Value::String(year.as_str().to_owned()));
        }
    } else {
        *value = None;
    }
    REDACT
}

/// The date moved by `days`, as `yyyy-MM-dd`.
fn shift_date(text: &str, (year, month, day): (i32, u32, u32), days: i32) -> Result<String, String> {
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| format!("'{text}' is not a date that can be shifted"))?;
    let shifted = date.checked_add_signed(chrono::Duration::days(days.into())).ok_or_else(|| format!("'{text}' shifted leaves the calendar"))?;
    let (year, month, day) = (shifted.year(), shifted.month(), shifted.day());
    if !(0..=9999).contains(&year) {
        return Ok(format!("{year:04}-{month:02}-{day:02}"));
    }
    // The common case without the formatting machinery: four, two and two digits.
    let mut text = String::with_capacity(30);
    for (n, width) in [(year as u32, 4), (month, 2), (day, 2)] {
        if width == 2 {
            text.push('-');
        }
        for place in (0..width).rev() {
            text.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
        }
    }
    Ok(text)
}

/// A value the date pattern matches whole, read without the regex (most stored dates): what
/// the pattern's groups would capture. None for anything else, which goes to the regex.
struct WellFormed<'t> {
    year: i32,
    month: u32,
    day: u32,
    /// `T` and the rest (a dateTime with a zone).
    time: Option<&'t str>,
    /// The end of the clock's digits in `time` (`T12:00:00.000`).
    clock_end: usize,
}

fn well_formed(text: &str, kind: Kind) -> Option<WellFormed<'_>> {
    let b = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        let digits = b.get(from..to)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    if year == 0 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let date = WellFormed { year: year as i32, month, day, time: None, clock_end: 0 };
    if b.len() == 10 {
        return Some(date);
    }
    if kind == Kind::Date || b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if number(11, 13)? > 23 || number(14, 16)? > 59 || number(17, 19)? > 60 {
        return None;
    }
    let mut at = 19;
    if b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        at += 1 + digits;
    }
    let clock_end = at - 10;
    match b.get(at) {
        Some(b'Z') => at += 1,
        Some(b'+' | b'-') if b.get(at + 3) == Some(&b':') => {
            let (hours, minutes) = (number(at + 1, at + 3)?, number(at + 4, at + 6)?);
            if !((hours <= 13 && minutes <= 59) || (hours == 14 && minutes == 0)) {
                return None;
            }
            at += 6;
        }
        _ => return None,
    }
    (at == b.len()).then_some(WellFormed { time: Some(&text[10..]), clock_end, ..date })
}

/// Shifts a date (a day-precise one not past the age threshold) by `days`; anything else is
/// redacted as `redact` does.
pub fn shift(value: &mut Option<Value>, text: &str, kind: Kind, days: impl FnOnce() -> i32, partial: bool) -> Result<u8, String> {
    if let Some(date) = well_formed(text, kind) {
        if past_threshold(date.year, date.month, date.day, today()) {
            return Ok(redact(value, text, kind, partial));
        }
        let mut new = shift_date(text, (date.year, date.month, date.day), days())?;
        if let Some(time) = date.time {
            // The clock set to zeros, its zone kept.
            new.extend(time[..date.clock_end].chars().map(|c| if c.is_ascii_digit() { '0' } else { c }));
            new.push_str(&time[date.clock_end..]);
        }
        *value = Some(Value::String(new));
        return Ok(PERTURB);
    }
    let Some(caps) = kind.pattern().captures(text) else {
        return Ok(redact(value, text, kind, partial));
    };
    if caps.get(DAY).is_none() || over_threshold(&caps, today()) {
        return Ok(redact(value, text, kind, partial));
    }
    let days = days();
    let shifted = text
        .get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .ok_or_else(|| format!("'{text}' is not a date that can be shifted"))
        .and_then(|d| shift_date(text, (d.year(), d.month(), d.day()), days))?;
    let new = match caps.get(TIME).filter(|_| kind == Kind::DateTime) {
        Some(time) => {
            let mut stamp = time.as_str().to_owned();
            if let Some(clock) = TIME_OF_DAY.find(&stamp) {
                let zeros: String = clock.as_str().chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect();
                stamp = stamp.replace(clock.as_str(), &zeros);
            }
            format!("{shifted}{stamp}")
        }
        None => shifted,
    };
    *value = Some(Value::String(new));
    Ok(PERTURB)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shifted(text: &str, kind: Kind, days: i32) -> Option<Value> {
        let mut value = Some(Value::String(text.into()));
        shift(&mut value, text, kind, || days, false).unwrap();
        value
    }

    #[test]
    fn the_offset_is_the_reference_engines_rolling_hash() {
        // The reference's DateShiftProcessorTests: key "dummy", no resource id: 2015-02-07 -> 2015-01-17.
        assert_eq!(shift_days("", "dummy"), -21);
        assert!((-50..=50).contains(&shift_days("anything", "key")));
        assert_eq!(shift_days("a", ""), 97 - 50);
    }

    #[test]
    fn a_keys_table_gives_the_rolling_hash_of_scope_then_key() {
        for key in ["", "dummy", "bench-date-shift-key", "ключ with unicode and a longer tail 0123456789"] {
            let table = ShiftKey::new(key);
            for scope in ["", "a", "abc", "abcd", "abcde", "Patient-1", &"f".repeat(64), "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"] {
                assert_eq!(table.days(scope), shift_days(scope, key), "scope {scope:?}, key {key:?}");
            }
        }
    }

    #[test]
    fn dates_shift_to_day_precision_and_times_to_midnight_in_their_zone() {
        assert_eq!(shifted("2015-02-07", Kind::Date, -10), Some(Value::String("2015-01-28".into())));
        assert_eq!(shifted("2015-02-07T13:28:17-05:00", Kind::DateTime, 3), Some(Value::String("2015-02-10T00:00:00-05:00".into())));
        assert_eq!(shifted("2015-02-07T13:28:17.239+02:00", Kind::DateTime, 1), Some(Value::String("2015-02-08T00:00:00.000+02:00".into())));
        assert_eq!(shifted("2015-02-07T13:28:17Z", Kind::DateTime, 0), Some(Value::String("2015-02-07T00:00:00Z".into())));
        assert_eq!(shifted("2015-02-07T01:01:01+00:00", Kind::DateTime, -21), Some(Value::String("2015-01-17T00:00:00+00:00".into())));
        assert_eq!(instant_text("2015-02-07T01:01:01Z"), "2015-02-07T01:01:01+00:00");
        assert_eq!(instant_text("2015-02-07T01:01:01.250-05:00"), "2015-02-07T01:01:01.25-05:00");
        assert_eq!(instant_text("2015-02-07T01:01:01.000Z"), "2015-02-07T01:01:01+00:00");
        // Without day precision a date is redacted; with partial dates it keeps its year.
        assert_eq!(shifted("2015-02", Kind::Date, 5), None);
        let mut value = Some(Value::String("2015-02".into()));
        shift(&mut value, "2015-02", Kind::Date, || 5, true).unwrap();
        assert_eq!(value, Some(Value::String("2015".into())));
    }

    /// The regex's answer for a text, for comparing with the fast path.
    fn by_regex(text: &str, kind: Kind) -> Option<(i32, u32, u32, Option<String>)> {
        let caps = kind.pattern().captures(text)?;
        let n = |i| caps.get(i).map(|m| m.as_str().parse::<i32>().unwrap());
        let time = caps.get(TIME).filter(|_| kind == Kind::DateTime).map(|t| t.as_str().to_owned());
        Some((n(YEAR)?, n(MONTH)? as u32, n(DAY)? as u32, time))
    }

    /// Dates built from pieces that are each in or just out of range.
    fn candidates() -> Vec<String> {
        let years = ["0000", "0001", "1000", "1925", "2015", "9999"];
        let days = ["00-00", "01-01", "02-30", "12-31", "13-01", "02-32"];
        let times = ["", "T13:28:17", "T13:28:17Z", "T24:00:00Z", "T23:59:60+14:00", "T10:00:00.1234-13:59", "T10:00:00.+01:00", "T10:00:00.5+14:01", "T10:00:00Zx", "T1:00:00Z"];
        let mut out = Vec::new();
        for y in years {
            for d in days {
                for t in times {
                    out.push(format!("{y}-{d}{t}"));
                }
            }
        }
        out
    }

    #[test]
    fn the_fast_path_reads_dates_as_the_pattern_does() {
        let mut fast_taken = 0;
        for text in candidates() {
            for kind in [Kind::Date, Kind::DateTime] {
                let Some(fast) = well_formed(&text, kind) else { continue };
                fast_taken += 1;
                assert_eq!(Some((fast.year, fast.month, fast.day, fast.time.map(str::to_owned))), by_regex(&text, kind), "{text}");
                // The same shift as the regex path gives (a trailing space keeps the fast path out).
                let (mut a, mut b) = (Some(Value::String(text.clone())), Some(Value::String(text.clone())));
                let fast_result = shift(&mut a, &text, kind, || 7, false);
                let slow_result = shift(&mut b, &format!("{text} "), kind, || 7, false);
                assert_eq!((fast_result.is_ok(), a), (slow_result.is_ok(), b), "{text}");
                let (mut a, mut b) = (Some(Value::String(text.clone())), Some(Value::String(text.clone())));
                redact(&mut a, &text, kind, true);
                redact(&mut b, &format!("{text} "), kind, true);
                assert_eq!(a, b, "{text}");
            }
        }
        assert!(fast_taken > 50, "the fast path took {fast_taken}");
    }

    #[test]
    fn partial_redaction_keeps_the_year_unless_past_the_age_threshold() {
        let mut value = Some(Value::String("2015-02-07T13:28:17-05:00".into()));
        assert_eq!(redact(&mut value, "2015-02-07T13:28:17-05:00", Kind::DateTime, true), REDACT);
        assert_eq!(value, Some(Value::String("2015".into())));
        let mut old = Some(Value::String("1900-01-01".into()));
        redact(&mut old, "1900-01-01", Kind::Date, true);
        assert_eq!(old, None);
        let mut full = Some(Value::String("2015-02-07".into()));
        redact(&mut full, "2015-02-07", Kind::Date, false);
        assert_eq!(full, None);
        // Past the threshold a date is redacted even by dateShift.
        assert_eq!(shifted("1920-05-01", Kind::Date, 5), None);
    }
}
