//! Checks of R4 primitive values against the regular expressions of the spec
//! (datatypes.html; the `regex` extensions of the primitive StructureDefinitions). The frequent
//! ones are hand-written scanners, tested against the spec's expressions; the rare ones use them.

use std::sync::LazyLock;

use regex::Regex;

use crate::fhir::element_types::Primitive;

/// A JSON scalar as the parser gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i128),
    Float(f64),
}

/// Strings longer than this many characters are refused (the `maxLength` of R4 `string`).
const MAX_STRING_CHARS: usize = 1024 * 1024;

static OID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$").expect("regex"));
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$").expect("regex")
});

/// What is wrong with one primitive value, without the element's path (the walk adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PrimitiveError {
    #[error("{primitive} must be {expected}, found {found}")]
    WrongKind { primitive: &'static str, expected: &'static str, found: &'static str },
    #[error("{value} is not a valid {primitive}")]
    NotValid { value: String, primitive: &'static str },
}

/// Checks one value of type `p`.
pub(crate) fn check(p: Primitive, value: Scalar) -> Result<(), PrimitiveError> {
    use Primitive as P;
    let ok = match (p, value) {
        (P::Boolean, Scalar::Bool(_)) => true,
        (P::Decimal, Scalar::Int(_) | Scalar::Float(_)) => true,
        (P::Integer, Scalar::Int(i)) => (i32::MIN as i128..=i32::MAX as i128).contains(&i),
        (P::UnsignedInt, Scalar::Int(i)) => (0..=i32::MAX as i128).contains(&i),
        (P::PositiveInt, Scalar::Int(i)) => (1..=i32::MAX as i128).contains(&i),
        (P::Integer | P::UnsignedInt | P::PositiveInt, Scalar::Float(_)) => false,
        (P::Boolean | P::Decimal | P::Integer | P::UnsignedInt | P::PositiveInt, _) | (_, Scalar::Bool(_) | Scalar::Int(_) | Scalar::Float(_)) => {
            return Err(PrimitiveError::WrongKind { primitive: p.name(), expected: json_kind(p), found: describe(value) });
        }
        (_, Scalar::Str(s)) => check_str(p, s),
    };
    if ok {
        Ok(())
    } else {
        Err(PrimitiveError::NotValid { value: shown(value), primitive: p.name() })
    }
}

fn check_str(p: Primitive, s: &str) -> bool {
    use Primitive as P;
    match p {
        P::String | P::Markdown => is_string(s),
        P::Xhtml => !s.is_empty(),
        P::Code => is_code(s),
        P::Id => is_id(s),
        P::Uri | P::Url | P::Canonical => is_uri(s),
        P::Date => is_date(s),
        P::DateTime => is_date_time(s),
        P::Instant => is_instant(s),
        P::Time => is_time(s),
        P::Base64Binary => is_base64(s),
        P::Oid => OID.is_match(s),
        P::Uuid => UUID.is_match(s),
        P::Boolean | P::Decimal | P::Integer | P::UnsignedInt | P::PositiveInt => false,
    }
}

/// What JSON holds a value of `p`.
pub(crate) fn json_kind(p: Primitive) -> &'static str {
    match p {
        Primitive::Boolean => "a JSON boolean",
        Primitive::Decimal | Primitive::Integer | Primitive::UnsignedInt | Primitive::PositiveInt => "a JSON number",
        _ => "a JSON string",
    }
}

pub(crate) fn describe(value: Scalar) -> &'static str {
    match value {
        Scalar::Str(_) => "a string",
        Scalar::Bool(_) => "a boolean",
        Scalar::Int(_) | Scalar::Float(_) => "a number",
    }
}

/// The value quoted for a message: control characters escaped, long values cut.
fn shown(value: Scalar) -> String {
    match value {
        Scalar::Str(s) => {
            let mut out: String = s.chars().take(80).flat_map(|c| if c.is_control() { c.escape_debug().collect::<Vec<_>>() } else { vec![c] }).collect();
            if s.chars().nth(80).is_some() {
                out.push('…');
            }
            format!("'{out}'")
        }
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
    }
}

/// The whitespace of the spec's expressions (`\s` as XML Schema reads it).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Below space, only tab, line feed and carriage return (R4 string: "SHALL NOT contain Unicode
/// character points below 32, except for u0009, u000D and u000A").
fn bad_control(b: u8) -> bool {
    b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')
}

/// `[ \r\n\t\S]+`, at most 1 MiB characters.
fn is_string(s: &str) -> bool {
    !s.is_empty() && !s.bytes().any(bad_control) && (s.len() <= MAX_STRING_CHARS || s.chars().count() <= MAX_STRING_CHARS)
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
fn is_code(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else { return false };
    !is_ws(first)
        && !is_ws(last)
        && !bytes.iter().copied().any(bad_control)
        && !bytes.windows(2).any(|w| is_ws(w[0]) && is_ws(w[1]))
}

/// `[A-Za-z0-9\-\.]{1,64}`
fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `\S*`, and not empty (FHIR JSON has no empty strings).
fn is_uri(s: &str) -> bool {
    !s.is_empty() && !s.bytes().any(|b| is_ws(b) || b < 0x20)
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: groups of four, whitespace only between groups.
fn is_base64(s: &str) -> bool {
    let mut in_group = 0usize;
    let mut groups = 0usize;
    for b in s.bytes() {
        if is_ws(b) {
            if in_group != 0 {
                return false;
            }
        } else if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
            in_group += 1;
            if in_group == 4 {
                in_group = 0;
                groups += 1;
            }
        } else {
            return false;
        }
    }
    groups > 0 && in_group == 0
}

/// A cursor over ASCII text for the date and time scanners.
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at == self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.at) == Some(&b);
        self.at += hit as usize;
        hit
    }

    /// `n` digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.s.get(self.at..self.at + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    /// `YYYY`, not 0000.
    fn year(&mut self) -> Option<u32> {
        self.digits(4).filter(|y| *y > 0)
    }

    fn month(&mut self) -> Option<u32> {
        self.digits(2).filter(|m| (1..=12).contains(m))
    }

    /// `DD` that exists in the month (the regex takes 01-31; the spec asks for valid dates).
    fn day(&mut self, year: u32, month: u32) -> Option<u32> {
        let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
        let last = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        self.digits(2).filter(|d| (1..=last).contains(d))
    }

    /// `hh:mm:ss(.f+)?`
    fn time(&mut self) -> Option<()> {
        self.digits(2).filter(|h| *h <= 23)?;
        self.eat(b':').then_some(())?;
        self.digits(2).filter(|m| *m <= 59)?;
        self.eat(b':').then_some(())?;
        self.digits(2).filter(|s| *s <= 60)?;
        if self.eat(b'.') {
            let start = self.at;
            while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
            (self.at > start).then_some(())?;
        }
        Some(())
    }

    /// `Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`
    fn zone(&mut self) -> Option<()> {
        if self.eat(b'Z') {
            return Some(());
        }
        (self.eat(b'+') || self.eat(b'-')).then_some(())?;
        let hours = self.digits(2).filter(|h| *h <= 14)?;
        self.eat(b':').then_some(())?;
        let minutes = self.digits(2).filter(|m| *m <= 59)?;
        (hours < 14 || minutes == 0).then_some(())
    }

    /// `YYYY(-MM(-DD)?)?`, returning whether the day was given.
    fn date(&mut self) -> Option<bool> {
        let year = self.year()?;
        if !self.eat(b'-') {
            return Some(false);
        }
        let month = self.month()?;
        if !self.eat(b'-') {
            return Some(false);
        }
        self.day(year, month)?;
        Some(true)
    }
}

fn scan(s: &str, f: impl FnOnce(&mut Cursor) -> Option<()>) -> bool {
    let mut cursor = Cursor { s: s.as_bytes(), at: 0 };
    f(&mut cursor).is_some() && cursor.done()
}

fn is_date(s: &str) -> bool {
    scan(s, |c| c.date().map(drop))
}

/// A date, or a full date with a time and zone.
fn is_date_time(s: &str) -> bool {
    scan(s, |c| {
        if c.date()? && c.eat(b'T') {
            c.time()?;
            c.zone()?;
        }
        Some(())
    })
}

fn is_instant(s: &str) -> bool {
    scan(s, |c| {
        c.date()?.then_some(())?;
        c.eat(b'T').then_some(())?;
        c.time()?;
        c.zone()
    })
}

fn is_time(s: &str) -> bool {
    scan(s, |c| c.time())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's expressions (R4 primitive StructureDefinitions), anchored.
    fn spec(p: Primitive) -> Regex {
        let year = "([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)";
        let time = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?";
        let zone = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))";
        let expr = match p {
            Primitive::Date => format!("{year}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"),
            Primitive::DateTime => format!("{year}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{time}{zone})?)?)?"),
            Primitive::Instant => format!("{year}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{time}{zone}"),
            Primitive::Time => time.to_owned(),
            Primitive::Code => r"[^\s]+(\s[^\s]+)*".to_owned(),
            Primitive::Id => r"[A-Za-z0-9\-\.]{1,64}".to_owned(),
            Primitive::Uri => r"\S+".to_owned(),
            Primitive::String => r"[ \r\n\t\S]+".to_owned(),
            Primitive::Base64Binary => r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+".to_owned(),
            _ => unreachable!(),
        };
        // `\s` as XML Schema reads it; Rust's regex would take Unicode spaces too.
        let expr = expr.replace(r"[^\s]", r"[^ \t\n\r]").replace(r"\S", r"[^ \t\n\r]").replace(r"\s", r"[ \t\n\r]");
        Regex::new(&format!("^(?:{expr})$")).unwrap()
    }

    /// The spec allows these calendar-less days; the scanners refuse them.
    fn impossible_day(s: &str) -> bool {
        let bytes = s.as_bytes();
        if s.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' || !s[..10].bytes().filter(|b| *b != b'-').all(|b| b.is_ascii_digit()) {
            return false;
        }
        let (y, m, d): (u32, u32, u32) = (s[..4].parse().unwrap(), s[5..7].parse().unwrap(), s[8..10].parse().unwrap());
        chrono::NaiveDate::from_ymd_opt(y as i32, m, d).is_none()
    }

    #[test]
    fn the_scanners_agree_with_the_spec_expressions_on_random_text() {
        let cases: [(Primitive, &[u8], &str); 9] = [
            (Primitive::Date, b"0123456789-", "2020-02-29"),
            (Primitive::DateTime, b"0123456789-T:.Z+", "2020-01-01T10:20:30.5+14:00"),
            (Primitive::Instant, b"0123456789-T:.Z+", "2020-01-01T23:59:60Z"),
            (Primitive::Time, b"0123456789:.", "23:59:59.125"),
            (Primitive::Code, b"ab \t\n", "a b"),
            (Primitive::Id, b"aZ9-._ ", "a-b.c"),
            (Primitive::Uri, b"a:/ \t", "a:b"),
            (Primitive::String, b"a \t\r\n\x01\x0b", "a"),
            (Primitive::Base64Binary, b"aZ+/= \n*", "aGk= \nAAAA"),
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (p, alphabet, example) in cases {
            let re = spec(p);
            assert!(re.is_match(example) && check_str(p, example), "{p:?} {example}");
            for _ in 0..40_000 {
                // Mutate the valid example (most hits near the valid shapes), or draw fresh text.
                let mut text: Vec<u8> = example.as_bytes().to_vec();
                if next() % 4 == 0 {
                    text = (0..next() % 12).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
                }
                for _ in 0..1 + next() % 3 {
                    let at = (next() % (text.len() as u64 + 1)) as usize;
                    let b = alphabet[(next() % alphabet.len() as u64) as usize];
                    match next() % 3 {
                        0 if at < text.len() => text[at] = b,
                        1 if at < text.len() => drop(text.remove(at)),
                        _ => text.insert(at, b),
                    }
                }
                let text = String::from_utf8(text).unwrap();
                let want = re.is_match(&text) && !bad_control_str(p, &text) && !impossible_day(&text);
                assert_eq!(check_str(p, &text), want, "{p:?} {text:?}");
            }
        }
    }

    /// Control characters, refused beyond the expressions (R4 string rules).
    fn bad_control_str(_: Primitive, s: &str) -> bool {
        s.bytes().any(bad_control)
    }

    #[test]
    fn messages_name_the_value_and_the_type() {
        assert_eq!(check(Primitive::DateTime, Scalar::Str("2020-01-01Té12345")).unwrap_err().to_string(), "'2020-01-01Té12345' is not a valid dateTime");
        assert_eq!(check(Primitive::String, Scalar::Str("a\u{1}")).unwrap_err().to_string(), r"'a\u{1}' is not a valid string");
        assert_eq!(check(Primitive::Integer, Scalar::Float(1.5)).unwrap_err().to_string(), "1.5 is not a valid integer");
        assert_eq!(check(Primitive::Integer, Scalar::Int(1 << 31)).unwrap_err().to_string(), "2147483648 is not a valid integer");
        assert_eq!(check(Primitive::Boolean, Scalar::Str("true")).unwrap_err().to_string(), "boolean must be a JSON boolean, found a string");
        assert_eq!(check(Primitive::Decimal, Scalar::Str("1.0")).unwrap_err().to_string(), "decimal must be a JSON number, found a string");
        assert_eq!(check(Primitive::Code, Scalar::Int(1)).unwrap_err().to_string(), "code must be a JSON string, found a number");
        assert!(check(Primitive::String, Scalar::Str("")).is_err());
        assert!(check(Primitive::Uri, Scalar::Str("")).is_err());
        assert!(check(Primitive::PositiveInt, Scalar::Int(0)).is_err());
        assert!(check(Primitive::UnsignedInt, Scalar::Int(0)).is_ok());
        assert!(check(Primitive::Decimal, Scalar::Float(-1e300)).is_ok());
        assert!(check(Primitive::Oid, Scalar::Str("urn:oid:1.2.840")).is_ok());
        assert!(check(Primitive::Oid, Scalar::Str("urn:oid:1.02")).is_err());
        assert!(check(Primitive::Uuid, Scalar::Str("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")).is_ok());
        assert!(check(Primitive::Uuid, Scalar::Str("urn:uuid:C757873D-ec9a-4326-a141-556f43239520")).is_err());
        assert!(check(Primitive::Date, Scalar::Str("2021-02-29")).is_err());
        assert!(check(Primitive::Date, Scalar::Str("2024-02-29")).is_ok());
        assert!(check(Primitive::DateTime, Scalar::Str("2024-02-29T10:00:00")).is_err(), "a time needs its zone");
        let long = "x".repeat(100);
        assert_eq!(check(Primitive::Id, Scalar::Str(&long)).unwrap_err().to_string(), format!("'{}…' is not a valid id", "x".repeat(80)));
    }
}
