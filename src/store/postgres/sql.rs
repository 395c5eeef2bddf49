//! SQL text for export selections. `COPY (query)` takes no bind parameters, so the values are
//! written as literals; each comes from a type that admits only safe characters (resource type
//! names, ids, UUIDs, timestamps we format ourselves), and `literal` refuses anything else.

use chrono::{DateTime, Utc};

use crate::{
    fhir::{instant, search::Narrowing},
    model::job::JobId,
    store::{Scope, Selection},
};

/// A SQL string literal for a value of a validated type. Panics on a quote or backslash,
/// which the types never admit: this is a guard, not an escaper.
fn literal(value: &str) -> String {
    assert!(
        value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:+ ".contains(&b)),
        "refusing to inline '{value}' into SQL"
    );
    format!("'{value}'")
}

fn timestamp(t: DateTime<Utc>) -> String {
    format!("{}::timestamptz", literal(&instant::format(t)))
}

/// The versions of one type current at `as_of`: `(id, version_id, last_updated, body)`.
pub fn versions_at(resource_type: &str, as_of: DateTime<Utc>) -> String {
    let (t, at) = (literal(resource_type), timestamp(as_of));
    format!(
        "SELECT id, version_id, last_updated, body FROM resources \
           WHERE resource_type = {t} AND last_updated <= {at} AND NOT deleted \
         UNION ALL \
         SELECT id, version_id, last_updated, body FROM resource_history \
           WHERE resource_type = {t} AND last_updated <= {at} AND superseded_at > {at} AND NOT deleted"
    )
}

/// `COPY` of the selected bodies as NDJSON. CSV format with quote and delimiter bytes that
/// compact JSON never contains passes the text through untouched (text format would double
/// backslashes).
pub fn export_copy(selection: &Selection) -> String {
    let t = selection.resource_type.as_str();
    let mut conditions = Vec::new();
    if let Some(since) = selection.since {
        conditions.push(format!("v.last_updated > {}", timestamp(since)));
    }
    if let Some(until) = selection.until {
        conditions.push(format!("v.last_updated < {}", timestamp(until)));
    }
    conditions.extend(narrowing(&selection.narrowing, t));
    let member = |patients: String| {
        format!(
            "EXISTS (SELECT 1 FROM compartment_members c WHERE c.resource_type = {} AND c.id = v.id \
             AND c.version_id = v.version_id AND c.patient_id IN ({patients}))",
            literal(t)
        )
    };
    match &selection.scope {
        Scope::All => {}
        Scope::AllPatients => {
            conditions.push(member(format!("SELECT id FROM ({}) p", versions_at("Patient", selection.as_of))));
        }
        // The rows come from the group's own list (`group_versions_at`): nothing to add.
        Scope::JobPatients(_) => {}
        // The rows come from the patient's compartment rows (`patient_versions_at`).
        Scope::Patient(_) => {}
    }
    let source = match &selection.scope {
        Scope::JobPatients(job) => group_versions_at(t, selection.as_of, job),
        Scope::Patient(id) => patient_versions_at(t, selection.as_of, id.as_str()),
        _ => versions_at(t, selection.as_of),
    };
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    format!("COPY (SELECT v.body FROM ({source}) v{filter}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')")
}

/// `versions_at` for a Group export: the versions in the compartments of the job's patients,
/// found from the patients (an index range of compartment rows each), then each version by key.
/// LATERAL makes those key probes: with a plain join, or a membership test on every version,
/// the planner hashed the list and scanned every resource of the type, so the cost followed the
/// database, not the group (figures: docs/performance.md). DISTINCT: a resource in several
/// listed patients' compartments comes once.
fn group_versions_at(resource_type: &str, as_of: DateTime<Utc>, job: &JobId) -> String {
    let t = literal(resource_type);
    let rows = format!(
        "FROM export_job_patients p JOIN compartment_members c ON c.patient_id = p.patient_id AND c.resource_type = {t} \
         WHERE p.job_id = {}::uuid",
        literal(&job.to_string())
    );
    versions_by_key(resource_type, as_of, &rows)
}

/// `group_versions_at` for one patient (a block of `organizeOutputBy=Patient`): that patient's
/// compartment rows, then each version by key.
fn patient_versions_at(resource_type: &str, as_of: DateTime<Utc>, patient: &str) -> String {
    let rows = format!("FROM compartment_members c WHERE c.patient_id = {} AND c.resource_type = {}", literal(patient), literal(resource_type));
    versions_by_key(resource_type, as_of, &rows)
}

/// The versions current at `as_of` of the compartment rows `rows` selects (`c`), each by key.
fn versions_by_key(resource_type: &str, as_of: DateTime<Utc>, rows: &str) -> String {
    let (t, at) = (literal(resource_type), timestamp(as_of));
    format!(
        "SELECT g.id, g.version_id, g.last_updated, g.body FROM (SELECT DISTINCT c.id, c.version_id {rows}) m \
         CROSS JOIN LATERAL ( \
           SELECT id, version_id, last_updated, body FROM resources \
             WHERE resource_type = {t} AND id = m.id AND version_id = m.version_id AND last_updated <= {at} AND NOT deleted \
           UNION ALL \
           SELECT id, version_id, last_updated, body FROM resource_history \
             WHERE resource_type = {t} AND id = m.id AND version_id = m.version_id AND last_updated <= {at} \
               AND superseded_at > {at} AND NOT deleted) g"
    )
}

/// `_typeFilter` bounds on the id and last_updated columns and on compartment membership, all
/// indexed (ids are FHIR ids, which `literal` admits).
fn narrowing(n: &Narrowing, t: &str) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(patients) = &n.patients {
        let list: Vec<String> = patients.iter().map(|id| literal(id)).collect();
        conditions.push(if list.is_empty() {
            "FALSE".to_owned()
        } else {
            // Ids that were ever in these compartments: a superset (the matcher checks the
            // exported version). As an array the planner probes the primary key with it; as a
            // join, with stale statistics after a load, it scanned the type once per member.
            format!(
                "v.id = ANY(ARRAY(SELECT c.id FROM compartment_members c \
                 WHERE c.patient_id IN ({}) AND c.resource_type = {}))",
                list.join(", "),
                literal(t)
            )
        });
    }
    if let Some(ids) = &n.ids {
        let list: Vec<String> = ids.iter().map(|id| literal(id)).collect();
        conditions.push(if list.is_empty() { "FALSE".to_owned() } else { format!("v.id IN ({})", list.join(", ")) });
    }
    if let Some(from) = n.updated_from {
        conditions.push(format!("v.last_updated >= {}", timestamp(from)));
    }
    if let Some(before) = n.updated_before {
        conditions.push(format!("v.last_updated < {}", timestamp(before)));
    }
    conditions
}

/// The deletions of one type that stand at `as_of`: `(id, version_id, last_updated)`, where
/// `version_id - 1` is the live version the deletion ended.
fn deletions_at(resource_type: &str, as_of: DateTime<Utc>) -> String {
    let (t, at) = (literal(resource_type), timestamp(as_of));
    format!(
        "SELECT id, version_id, last_updated FROM resources \
           WHERE resource_type = {t} AND last_updated <= {at} AND deleted \
         UNION ALL \
         SELECT id, version_id, last_updated FROM resource_history \
           WHERE resource_type = {t} AND last_updated <= {at} AND superseded_at > {at} AND deleted"
    )
}

/// `COPY` of the ids of the selected deletions, one per line (ids admit no character that CSV
/// would quote).
pub fn deleted_copy(selection: &Selection) -> String {
    let t = selection.resource_type.as_str();
    let mut conditions = Vec::new();
    if let Some(since) = selection.since {
        conditions.push(format!("v.last_updated > {}", timestamp(since)));
    }
    if let Some(until) = selection.until {
        conditions.push(format!("v.last_updated < {}", timestamp(until)));
    }
    let member = |patients: &str| {
        format!(
            "EXISTS (SELECT 1 FROM compartment_members c WHERE c.resource_type = {} AND c.id = v.id \
             AND c.version_id = v.version_id - 1{patients})",
            literal(t)
        )
    };
    match &selection.scope {
        Scope::All => {}
        Scope::AllPatients => conditions.push(member("")),
        Scope::JobPatients(job) => conditions.push(member(&format!(
            " AND c.patient_id IN (SELECT patient_id FROM export_job_patients WHERE job_id = {}::uuid)",
            literal(&job.to_string())
        ))),
        Scope::Patient(id) => conditions.push(member(&format!(" AND c.patient_id = {}", literal(id.as_str())))),
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    format!(
        "COPY (SELECT v.id FROM ({}) v{filter}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')",
        deletions_at(t, selection.as_of)
    )
}

/// The `COPY FROM` options matching `export_copy`, for loading JSON text untouched.
pub const COPY_IN_OPTIONS: &str = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "refusing")]
    fn refuses_to_inline_quotes() {
        literal("x' OR '1'='1");
    }
}
