//! perturb as the reference engine's PerturbProcessor: uniform noise within the span (fixed, or
//! a proportion of the value) added to a number or a quantity's value, rounded half to even to
//! `roundTo` places (0 for integers), positiveInt kept above 0 and unsignedInt at 0 or more.

use serde_json::{Number, Value};

use super::{config::Perturb, document::NodeId, state::{Failure, State}, security::PERTURB};

const NUMBERS: [&str; 4] = ["decimal", "integer", "positiveInt", "unsignedInt"];
const QUANTITIES: [&str; 8] = ["Age", "Count", "Duration", "Distance", "Money", "MoneyQuantity", "Quantity", "SimpleQuantity"];

pub fn apply(run: &mut State, id: NodeId, settings: &Perturb) -> Result<u8, Failure> {
    let node = &run.doc.nodes[id as usize];
    let value_node = if NUMBERS.iter().any(|t| t.eq_ignore_ascii_case(node.ty)) {
        Some(id)
    } else if QUANTITIES.iter().any(|t| t.eq_ignore_ascii_case(node.ty)) {
        node.children.iter().copied().find(|&c| run.doc.nodes[c as usize].name() == "value")
    } else {
        None
    };
    let Some(value_node) = value_node else { return Ok(0) };
    if run.is_visited(value_node) {
        return Ok(0);
    }
    let target = &mut run.doc.nodes[value_node as usize];
    let Some(value) = &target.value else { return Ok(0) };
    let original = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| Failure::from(format!("perturb needs a number, found {value}")))?;
    let integer = ["integer", "positiveInt", "unsignedInt"].iter().any(|t| t.eq_ignore_ascii_case(target.ty));
    let round_to = if integer { 0 } else { settings.round_to };
    let span = if settings.proportional { original * settings.span } else { settings.span };
    let noise = (uniform() - 0.5) * span;
    let mut perturbed = round_half_even(original + noise, round_to);
    if target.ty.eq_ignore_ascii_case("positiveInt") && perturbed <= 0.0 {
        perturbed = 1.0;
    }
    if target.ty.eq_ignore_ascii_case("unsignedInt") && perturbed < 0.0 {
        perturbed = 0.0;
    }
    target.value = Some(number(perturbed, round_to));
    run.mark_descendants(id);
    Ok(PERTURB)
}

/// A uniform sample in [0, 1).
fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    // The system generator does not fail on supported platforms; 0.5 (no noise) if it does.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// .NET's `decimal.Round(value, places)`: to nearest, ties to even.
pub fn round_half_even(value: f64, places: u32) -> f64 {
    let scale = 10f64.powi(places.min(28) as i32);
    let scaled = value * scale;
    if !scaled.is_finite() {
        return value;
    }
    scaled.round_ties_even() / scale
}

fn number(value: f64, places: u32) -> Value {
    if places == 0 && value.abs() < 9.0e15 {
        return Value::from(value as i64);
    }
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even_as_dotnet_decimal_round() {
        assert_eq!(round_half_even(2.5, 0), 2.0);
        assert_eq!(round_half_even(3.5, 0), 4.0);
        assert_eq!(round_half_even(1.234, 2), 1.23);
        assert_eq!(number(66.0, 0), Value::from(66));
        assert!((0.0..1.0).contains(&uniform()));
    }
}
