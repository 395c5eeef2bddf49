//! What a store can do ahead of the matcher: the `_id` and `_lastUpdated` conditions of a
//! type's filters as bounds on its indexed columns, and Patient references on compartment
//! paths (`Observation?patient=Patient/1`) as compartment membership. The bounds only ever
//! select a superset of the matches; the matcher still decides each resource.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    fhirpath::{Expr, Function},
    query::{CompiledFilter, Prefix, ReferenceValue, Test, TokenValue},
    ranges::DateRange,
};
use crate::fhir::{compartment, instant, types::is_valid_id, ResourceType};

/// Bounds on the id and last-updated columns; None where nothing narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    pub ids: Option<BTreeSet<String>>,
    /// Inclusive.
    pub updated_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub updated_before: Option<DateTime<Utc>>,
    /// Patients one of whose compartments holds each match.
    pub patients: Option<BTreeSet<String>>,
}

/// The column bounds are widened by this much: stored `meta.lastUpdated` and the column agree to
/// the microsecond, but a margin costs little and keeps the bound a superset.
const MARGIN: TimeDelta = TimeDelta::seconds(1);

impl Narrowing {
    /// The narrowing for several filters of one type (OR-ed): each must narrow for the union
    /// to; an empty list does not narrow.
    pub fn for_filters(filters: &[CompiledFilter]) -> Self {
        let each: Vec<Narrowing> = filters.iter().map(Self::for_filter).collect();
        if each.is_empty() {
            return Self::default();
        }
        let ids = each.iter().map(|n| n.ids.clone()).collect::<Option<Vec<_>>>().map(|sets| sets.into_iter().flatten().collect());
        let updated_from = each.iter().map(|n| n.updated_from).collect::<Option<Vec<_>>>().and_then(|v| v.into_iter().min());
        let updated_before = each.iter().map(|n| n.updated_before).collect::<Option<Vec<_>>>().and_then(|v| v.into_iter().max());
        let patients = each.iter().map(|n| n.patients.clone()).collect::<Option<Vec<_>>>().map(|sets| sets.into_iter().flatten().collect());
        Self { ids, updated_from, updated_before, patients }
    }

    /// One filter's conditions (AND-ed): each `_id` or `_lastUpdated` condition narrows.
    fn for_filter(filter: &CompiledFilter) -> Self {
        let mut narrowing = Self::default();
        for condition in &filter.conditions {
            match (condition.code.as_str(), &condition.test) {
                ("_id", Test::Token { values, negate: false }) => {
                    let ids: Option<BTreeSet<String>> = values
                        .iter()
                        .map(|v| match v {
                            TokenValue::Code(id) if is_valid_id(id) => Some(id.clone()),
                            _ => None,
                        })
                        .collect();
                    if let Some(ids) = ids {
                        narrowing.ids = Some(match narrowing.ids.take() {
                            Some(known) => known.intersection(&ids).cloned().collect(),
                            None => ids,
                        });
                    }
                }
                ("_lastUpdated", Test::Date(values)) => {
                    let bounds: Option<Vec<(i64, i64)>> = values.iter().map(|(prefix, p)| bounds(*prefix, p)).collect();
                    let Some(bounds) = bounds else { continue };
                    let low = bounds.iter().map(|b| b.0).min().unwrap_or(DateRange::UNBOUNDED_LOW);
                    let high = bounds.iter().map(|b| b.1).max().unwrap_or(DateRange::UNBOUNDED_HIGH);
                    let range = DateRange { low, high };
                    // A bound past year 0001 or 9999 narrows nothing (every stored time lies
                    // within them) and is left out: Postgres cannot read it as timestamp text.
                    if let Some(from) = range.low_instant().map(|t| t - MARGIN).filter(|t| instant::in_range(*t)) {
                        narrowing.updated_from = Some(narrowing.updated_from.map_or(from, |f| f.max(from)));
                    }
                    if let Some(before) = range.high_instant().map(|t| t + MARGIN).filter(|t| instant::in_range(*t)) {
                        narrowing.updated_before = Some(narrowing.updated_before.map_or(before, |b| b.min(before)));
                    }
                }
                (_, Test::Reference(values)) => {
                    if let Some(patients) = compartment_patients(&filter.resource_type, condition.expression, values) {
                        narrowing.patients = Some(match narrowing.patients.take() {
                            Some(known) => known.intersection(&patients).cloned().collect(),
                            None => patients,
                        });
                    }
                }
                _ => {}
            }
        }
        narrowing
    }
}

/// The patients a reference condition names, when every match must be in one of their
/// compartments: each branch of the expression is a compartment path of `t`, and each value
/// names a Patient (as `Patient/id`, or as an id where every branch keeps Patients only).
fn compartment_patients(t: &ResourceType, expression: &Expr, values: &[ReferenceValue]) -> Option<BTreeSet<String>> {
    let mut branches = Vec::new();
    reference_paths(expression, t, &mut branches)?;
    if branches.is_empty() || !branches.iter().all(|(path, _)| compartment::is_compartment_path(t, path)) {
        return None;
    }
    let patients_only = branches.iter().all(|(_, patients_only)| *patients_only);
    values
        .iter()
        .map(|v| match v {
            ReferenceValue::Typed(ty, id) if ty == "Patient" && is_valid_id(id) => Some(id.clone()),
            ReferenceValue::Id(id) if patients_only && is_valid_id(id) => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// The element paths of `t` an expression reads references from, each with whether it keeps
/// Patient references only (`where(resolve() is Patient)`). Branches for other types add
/// nothing; None when a branch is anything but such a path.
fn reference_paths(expr: &Expr, t: &ResourceType, out: &mut Vec<(Vec<String>, bool)>) -> Option<()> {
    if let Expr::Union(a, b) = expr {
        reference_paths(a, t, out)?;
        return reference_paths(b, t, out);
    }
    if let Some(branch) = path_of(expr, t)? {
        out.push(branch);
    }
    Some(())
}

/// Some(None): a branch for another type.
fn path_of(expr: &Expr, t: &ResourceType) -> Option<Option<(Vec<String>, bool)>> {
    match expr {
        Expr::Name(root) if root == t.as_str() => Some(Some((Vec::new(), false))),
        Expr::Name(root) if ResourceType::parse(root).is_some() => Some(None),
        Expr::Member(inner, name) => Some(path_of(inner, t)?.map(|(mut path, only)| {
            path.push(name.clone());
            (path, only)
        })),
        Expr::Call(inner, Function::Where(criteria)) => {
            let is_patient = matches!(criteria.as_ref(), Expr::Is(target, ty)
                if ty == "Patient" && matches!(target.as_ref(), Expr::Call(this, Function::Resolve) if **this == Expr::This));
            if !is_patient {
                return None;
            }
            Some(path_of(inner, t)?.map(|(path, _)| (path, true)))
        }
        // A choice element taken as one type: its JSON name carries the type.
        Expr::Call(inner, Function::OfType(ty)) | Expr::As(inner, ty) => Some(path_of(inner, t)?.and_then(|(mut path, only)| {
            let last = path.pop()?;
            path.push(format!("{last}{ty}"));
            Some((path, only))
        })),
        _ => None,
    }
}

/// The instants a value's resources can lie in, from the prefix rules in the matcher; None
/// where the prefix does not bound (`ne`, `ap`).
fn bounds(prefix: Prefix, p: &DateRange) -> Option<(i64, i64)> {
    let (min, max) = (DateRange::UNBOUNDED_LOW, DateRange::UNBOUNDED_HIGH);
    match prefix {
        Prefix::Eq => Some((p.low, p.high)),
        // A stored lastUpdated spans one microsecond (within MARGIN), so "ends after the
        // parameter's range" is "starts at or after its end", and so on.
        Prefix::Gt | Prefix::Sa => Some((p.high, max)),
        Prefix::Ge => Some((p.low, max)),
        Prefix::Lt | Prefix::Eb => Some((min, p.low)),
        Prefix::Le => Some((min, p.high)),
        Prefix::Ne | Prefix::Ap => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::search::TypeFilter;

    fn narrowing(queries: &[&str]) -> Narrowing {
        let filters: Vec<_> = queries.iter().map(|q| TypeFilter::parse(q).unwrap().compile().unwrap()).collect();
        Narrowing::for_filters(&filters)
    }

    #[test]
    fn ids_and_last_updated_narrow_only_when_every_query_does() {
        let n = narrowing(&["Patient?_id=a,b&_lastUpdated=ge2024-01-01&_lastUpdated=lt2024-02"]);
        assert_eq!(n.ids.unwrap().into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(n.updated_from.unwrap().to_rfc3339(), "2023-12-31T23:59:59+00:00");
        assert_eq!(n.updated_before.unwrap().to_rfc3339(), "2024-02-01T00:00:01+00:00");
        let n = narrowing(&["Patient?_id=a", "Patient?gender=male"]);
        assert_eq!(n, Narrowing::default());
        let n = narrowing(&["Patient?_id=a", "Patient?_id=b"]);
        assert_eq!(n.ids.unwrap().len(), 2);
        assert_eq!(narrowing(&["Patient?_id:not=a&_lastUpdated=ne2024"]), Narrowing::default());
        let n = narrowing(&["Patient?_lastUpdated=ge0001-01-01&_lastUpdated=le9999-12-31"]);
        assert_eq!((n.updated_from, n.updated_before), (None, None), "bounds past the stored years narrow nothing");
    }

    #[test]
    fn patient_references_on_compartment_paths_narrow_to_compartments() {
        let patients = |queries: &[&str]| narrowing(queries).patients.map(|p| p.into_iter().collect::<Vec<_>>());
        assert_eq!(patients(&["Observation?subject=Patient/a"]), Some(vec!["a".into()]));
        assert_eq!(patients(&["Observation?patient=a,Patient/b"]), Some(vec!["a".into(), "b".into()]));
        // `subject=a` may name a Group; `encounter` is no compartment path; `:missing` is no value.
        assert_eq!(patients(&["Observation?subject=a"]), None);
        assert_eq!(patients(&["Observation?encounter=Encounter/e"]), None);
        assert_eq!(patients(&["Observation?subject:missing=true"]), None);
        assert_eq!(patients(&["Observation?patient=a", "Observation?status=final"]), None);
        assert_eq!(patients(&["Observation?patient=a", "Observation?performer=Patient/b"]), Some(vec!["a".into(), "b".into()]));
    }
}
