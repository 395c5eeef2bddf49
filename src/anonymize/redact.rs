//! redact as the reference engine's RedactProcessor: a value goes, except dates, ages and postal
//! codes under the partial options (a date keeps its year, an age up to 89 stays, a zip code
//! keeps its first three digits, all of it zeroed in a restricted area).

use serde_json::Value;

use super::{
    config::Parameters,
    dates::{self, Kind},
    security::{ABSTRACT, REDACT},
};

const AGE_THRESHOLD: i64 = 89;

/// Whether redacting the node does more than drop its value (dates, ages, postal codes).
pub fn is_special(ty: &str, name: &str, parent_ty: &str) -> bool {
    Kind::of(ty).is_some() || (ty == "decimal" && parent_ty == "Age") || name.eq_ignore_ascii_case("postalCode")
}

/// Redacts one primitive node's value; returns the operations done.
pub fn redact(value: &mut Option<Value>, text: &str, ty: &str, name: &str, parent_ty: &str, parameters: &Parameters) -> Result<u8, String> {
    if let Some(kind) = Kind::of(ty) {
        return Ok(dates::redact(value, text, kind, parameters.partial_dates));
    }
    if ty == "decimal" && parent_ty == "Age" {
        if parameters.partial_ages {
            let age: i64 = text.parse().map_err(|_| format!("the age '{text}' is not a whole number"))?;
            if age > AGE_THRESHOLD {
                *value = None;
            }
        } else {
            *value = None;
        }
        return Ok(REDACT);
    }
    if name.eq_ignore_ascii_case("postalCode") {
        return Ok(postal_code(value, text, parameters));
    }
    *value = None;
    Ok(REDACT)
}

fn zero_digits(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect()
}

fn postal_code(value: &mut Option<Value>, text: &str, parameters: &Parameters) -> u8 {
    if !parameters.partial_zip_codes {
        *value = None;
        return REDACT;
    }
    if parameters.restricted_zip_codes.iter().any(|area| text.starts_with(area.as_str())) {
        *value = Some(Value::String(zero_digits(text)));
    } else if text.chars().count() >= 3 {
        let split = text.char_indices().nth(3).map_or(text.len(), |(i, _)| i);
        *value = Some(Value::String(format!("{}{}", &text[..split], zero_digits(&text[split..]))));
    }
    ABSTRACT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(partial: bool) -> Parameters {
        Parameters {
            date_shift_key: String::new(),
            date_shift_scope: super::super::config::DateShiftScope::Resource,
            date_shift_fixed_offset_in_days: None,
            crypto_hash_key: String::new(),
            encrypt_key: String::new(),
            partial_ages: partial,
            partial_dates: partial,
            partial_zip_codes: partial,
            restricted_zip_codes: vec!["203".into(), "556".into()],
        }
    }

    fn run(text: &str, ty: &str, name: &str, parent: &str, partial: bool) -> (Option<Value>, u8) {
        let mut value = Some(Value::String(text.into()));
        let ops = redact(&mut value, text, ty, name, parent, &parameters(partial)).unwrap();
        (value, ops)
    }

    #[test]
    fn postal_codes_as_the_reference_postal_code_tests() {
        for (zip, partial) in [("98052", "98000"), ("10104", "10100"), ("20301", "00000"), ("55602", "00000"), ("98028-1830", "98000-0000"), ("20301-1830", "00000-0000")] {
            assert_eq!(run(zip, "string", "postalCode", "Address", true), (Some(Value::String(partial.into())), ABSTRACT));
        }
        assert_eq!(run("98", "string", "postalCode", "Address", true).0, Some(Value::String("98".into())));
        assert_eq!(run("98052", "string", "postalCode", "Address", false), (None, REDACT));
    }

    #[test]
    fn ages_and_other_values() {
        let mut age = Some(Value::from(65));
        assert_eq!(redact(&mut age, "65", "decimal", "value", "Age", &parameters(true)), Ok(REDACT));
        assert_eq!(age, Some(Value::from(65)));
        let mut old = Some(Value::from(90));
        redact(&mut old, "90", "decimal", "value", "Age", &parameters(true)).unwrap();
        assert_eq!(old, None);
        let mut any = Some(Value::from(65));
        redact(&mut any, "65", "decimal", "value", "Age", &parameters(false)).unwrap();
        assert_eq!(any, None);
        assert_eq!(run("Seattle", "string", "city", "Address", true), (None, REDACT));
        assert_eq!(run("2015-02-07", "date", "birthDate", "Patient", true).0, Some(Value::String("2015".into())));
    }
}
