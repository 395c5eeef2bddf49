//! `_typeFilter` over HTTP: filtered exports of the Synthea sample hold exactly the resources
//! that match, as worked out here from the raw fixture JSON (not by the server's evaluator);
//! GET and POST forms; what is refused, and what lenient handling reports.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use bulkfhir::{
    fhir::{search::Narrowing, ResourceType},
    store::{Scope, Selection},
};
use futures::TryStreamExt;

use crate::helpers::{assert_outcome, backend_tests, fixture_resources, multiset, spawn_app, without_server_meta, TestApp};

/// The exported resources of a manifest per type, as multisets without the server's meta.
async fn exported(app: &TestApp, manifest: &Value) -> BTreeMap<String, Vec<String>> {
    assert_eq!(manifest["error"], json!([]));
    app.download_all(manifest)
        .await
        .into_iter()
        .map(|(t, resources)| (t, multiset(&resources.into_iter().map(without_server_meta).collect::<Vec<_>>())))
        .collect()
}

fn selected(loaded: &BTreeMap<String, Vec<Value>>, t: &str, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    multiset(loaded[t].iter().filter(|r| keep(r)))
}

fn has_coding(concepts: &Value, system: Option<&str>, codes: &[&str]) -> bool {
    let concepts: Vec<&Value> = match concepts {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    concepts.iter().filter_map(|c| c["coding"].as_array()).flatten().any(|coding| {
        system.is_none_or(|s| coding["system"] == s) && coding["code"].as_str().is_some_and(|c| codes.contains(&c))
    })
}

backend_tests! {
    async fn filtered_exports_of_the_synthea_sample_hold_exactly_the_matching_resources(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        // Every Synthea Observation has an effectiveDateTime at second precision, so "ge
        // 2020-01-01" is "at or after its first instant in UTC" for all of them.
        assert!(loaded["Observation"].iter().all(|o| o["effectiveDateTime"].is_string()));
        let since_2020 = |o: &Value| {
            DateTime::parse_from_rfc3339(o["effectiveDateTime"].as_str().unwrap()).unwrap().with_timezone(&Utc)
                >= "2020-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        };
        let vital_signs = |o: &Value| has_coding(&o["category"], None, &["vital-signs"]);
        let male = loaded["Patient"].iter().find(|p| p["gender"] == "male").unwrap()["id"].as_str().unwrap().to_owned();

        // GET: the list splits on literal commas; the `%2C` inside the gender value stays in it.
        let query = format!(
            "/$export?_type=Observation,Patient,Condition&_typeFilter={},{},{}",
            "Observation%3Fcategory%3Dvital-signs%26date%3Dge2020-01-01",
            "Patient%3Fgender%3Dfemale%2Cother",
            format_args!("Patient%3F_id%3D{male}"),
        );
        let manifest = app.wait_for_manifest(&app.kick_off(&query).await).await;
        let got = exported(&app, &manifest).await;
        let expected = BTreeMap::from([
            ("Condition".to_owned(), multiset(&loaded["Condition"])),
            ("Observation".to_owned(), selected(&loaded, "Observation", |o| vital_signs(o) && since_2020(o))),
            ("Patient".to_owned(), selected(&loaded, "Patient", |p| p["gender"] == "female" || p["gender"] == "other" || p["id"] == male.as_str())),
        ]);
        assert!(expected["Observation"].len() > 100 && expected["Observation"].len() < loaded["Observation"].len());
        for (t, lines) in &expected {
            assert!(got.get(t) == Some(lines), "{t}: exported {:?} of {}", got.get(t).map(Vec::len), lines.len());
        }
        assert_eq!(got.len(), expected.len());

        // POST: one query per entry, a comma inside a value as it is; _id and _lastUpdated go to
        // the store's indexes as well.
        let heights_and_weights = "Observation?code=http://loinc.org|8302-2,http://loinc.org|29463-7&_lastUpdated=ge2000-01-01";
        let some_patients: Vec<&str> = loaded["Patient"].iter().take(3).map(|p| p["id"].as_str().unwrap()).collect();
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Observation,Patient"},
            {"name": "_typeFilter", "valueString": heights_and_weights},
            {"name": "_typeFilter", "valueString": format!("Patient?_id={}", some_patients.join(","))}]});
        let manifest = app.wait_for_manifest(&app.kick_off_post("/$export", &parameters, "respond-async").await).await;
        let got = exported(&app, &manifest).await;
        let observations = selected(&loaded, "Observation", |o| has_coding(&o["code"], Some("http://loinc.org"), &["8302-2", "29463-7"]));
        assert!(!observations.is_empty());
        assert!(got["Observation"] == observations, "exported {} of {}", got["Observation"].len(), observations.len());
        assert_eq!(got["Patient"], selected(&loaded, "Patient", |p| some_patients.contains(&p["id"].as_str().unwrap())));

        // Patient references on compartment paths narrow through the compartment table.
        let patient = some_patients[0];
        let query = format!("/$export?_type=Observation,Condition&_typeFilter=Observation%3Fpatient%3D{patient},Condition%3Fsubject%3DPatient%2F{patient}");
        let manifest = app.wait_for_manifest(&app.kick_off(&query).await).await;
        let got = exported(&app, &manifest).await;
        let reference = format!("Patient/{patient}");
        for t in ["Observation", "Condition"] {
            let expected = selected(&loaded, t, |r| r["subject"]["reference"] == reference.as_str());
            assert!(!expected.is_empty() && got[t] == expected, "{t}: exported {} of {}", got[t].len(), expected.len());
        }

        // A filter no resource meets: the type is absent from the output, nothing fails.
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Patient&_typeFilter=Patient%3F_lastUpdated%3Dlt2000-01-01").await).await;
        assert_eq!(manifest["output"], json!([]));
        assert_eq!(manifest["error"], json!([]));
    }

    async fn type_filters_are_refused_by_name_or_reported_under_lenient_handling(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p1", "gender": "male"})).await.status(), 201);
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p2", "gender": "female"})).await.status(), 201);
        let cases: &[(&str, &str)] = &[
            ("/$export?_typeFilter=Observation%3Fcode-value-quantity%3Dx", "code-value-quantity"),
            ("/$export?_typeFilter=Observation%3Fpatient.name%3Dx", "chained"),
            ("/$export?_typeFilter=Patient%3F_has%3AObservation%3Apatient%3Acode%3Dx", "_has"),
            ("/$export?_typeFilter=Observation%3F_include%3DObservation%3Apatient", "_include"),
            ("/$export?_typeFilter=Observation%3F_sort%3Ddate", "_sort"),
            ("/$export?_typeFilter=Observation%3F_count%3D10", "_count"),
            ("/$export?_typeFilter=Observation%3F_elements%3Did", "_elements"),
            ("/$export?_typeFilter=Observation%3Fcode%3Ain%3Dhttp%3A%2F%2Fvs", ":in"),
            ("/$export?_typeFilter=Observation%3Fbogus%3D1", "bogus"),
            ("/$export?_typeFilter=Observation%3Fdate%3Dyesterday", "yesterday"),
            ("/$export?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal", "_type does not export"),
            ("/Patient/$export?_typeFilter=Organization%3Fname%3Dx", "Patient compartment"),
            ("/$export?_typeFilter=Bogus%3Fx%3D1", "Bogus"),
        ];
        for (path, needle) in cases {
            assert_outcome(app.kick_off_raw(path).await, StatusCode::BAD_REQUEST, needle).await;
        }

        // Lenient: the unsupported condition is dropped and reported; the rest still filters.
        let manifest = app.export_lenient("/$export?_typeFilter=Patient%3Fgender%3Dfemale%26organization.name%3Dx").await;
        let outcomes = serde_json::to_string(&app.download(&manifest["error"][0]).await).unwrap();
        assert!(outcomes.contains("organization.name") && outcomes.contains("chained"), "{outcomes}");
        let patients = app.download(&manifest["output"][0]).await;
        assert_eq!(patients.iter().map(|p| p["id"].as_str().unwrap()).collect::<Vec<_>>(), vec!["p2"]);
    }

    async fn the_stores_apply_the_pushed_down_bounds_themselves(backend: Backend) {
        let app = spawn_app(backend).await;
        for resource in [
            json!({"resourceType": "Patient", "id": "p1"}),
            json!({"resourceType": "Patient", "id": "p2"}),
            json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
            json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}}),
        ] {
            assert_eq!(app.put(&resource).await.status(), 201);
        }
        let as_of = app.stores.resources.snapshot_time().await.unwrap();
        let ids = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect());
        let read = |t: &str, narrowing: Narrowing| {
            let selection = Selection { resource_type: ResourceType::parse(t).unwrap(), as_of, since: None, until: None, scope: Scope::All, narrowing };
            let stream = app.stores.resources.export_stream(selection);
            async move {
                let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
                let text: String = chunks.iter().map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
                text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
            }
        };
        assert_eq!(read("Patient", Narrowing { ids: ids(&["p2", "nope"]), ..Default::default() }).await, vec!["p2"]);
        assert_eq!(read("Patient", Narrowing { ids: ids(&[]), ..Default::default() }).await, Vec::<String>::new());
        assert_eq!(read("Observation", Narrowing { patients: ids(&["p1"]), ..Default::default() }).await, vec!["o1"]);
        let later = as_of + chrono::TimeDelta::seconds(5);
        assert_eq!(read("Patient", Narrowing { updated_from: Some(later), ..Default::default() }).await, Vec::<String>::new());
        let mut both = read("Patient", Narrowing { updated_before: Some(later), ..Default::default() }).await;
        both.sort();
        assert_eq!(both, vec!["p1", "p2"]);
    }
}
