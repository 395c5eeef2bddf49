//! What an export task of one type writes: the store's selection for the job's level and
//! parameters, run through the type's pipeline. Two parameters reach across types: a Group
//! export's referenced types (the resources its compartment references) and
//! `includeAssociatedData` (the Provenance of what is exported).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, StreamExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    deid::Deidentify,
    drain::{drain, Halt},
    failure::TaskFailure,
    pacer::Pacer,
    pipeline::{ndjson_lines, IdIn, NotJson, Pipeline, PipelineError},
};
use crate::{
    fhir::{compartment, instant, references, search::Narrowing, types::ResourceId, ResourceType},
    model::{
        job::ClaimedTask,
        request::{AssociatedData, ExportLevel},
    },
    store::{Scope, Selection, Stores},
};

/// A request or data problem: the client reads the error, the log keeps it.
pub(super) fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> Halt {
    Halt::Failed(TaskFailure::data_error(error))
}

pub type Lines = BoxStream<'static, Result<Bytes, PipelineError>>;

/// A type's output lines, and the selection whose deletions go to `deleted` files (`_since`).
pub struct OutputSource {
    pub lines: Lines,
    pub deletions: Option<Selection>,
}

fn provenance() -> ResourceType {
    ResourceType::parse("Provenance").expect("Provenance is an R4 type")
}

pub(super) fn scope(task: &ClaimedTask) -> Scope {
    match &task.request.level {
        ExportLevel::System => Scope::All,
        ExportLevel::Patient if task.request.patients.is_none() => Scope::AllPatients,
        // Group members, or the `patient` parameter's patients: recorded for the job.
        ExportLevel::Patient | ExportLevel::Group { .. } => Scope::JobPatients(task.job_id),
    }
}

/// A type's pipeline, and its selection in `scope` within the job's `_since`, `_until` and
/// `_typeFilter` bounds (those on indexed columns).
pub(super) fn type_selection(task: &ClaimedTask, resource_type: ResourceType, scope: Scope) -> Result<(Pipeline, Selection), Halt> {
    let pipeline = Pipeline::for_type(&task.request, &resource_type).map_err(invalid)?;
    let filters = task.request.filters_for(&resource_type).map_err(invalid)?;
    let selection = Selection {
        resource_type,
        as_of: task.transaction_time,
        since: task.request.since,
        until: task.request.until,
        scope,
        narrowing: Narrowing::for_filters(&filters),
    };
    Ok((pipeline, selection))
}

/// The deletions of a type that go to its `deleted` files (`_since`): every one in the job's
/// scope, as deleted resources have no body for a filter to judge.
pub(super) fn deleted_selection(task: &ClaimedTask, resource_type: ResourceType) -> Selection {
    Selection {
        resource_type,
        as_of: task.transaction_time,
        since: task.request.since,
        until: task.request.until,
        scope: scope(task),
        narrowing: Narrowing::default(),
    }
}

/// The lines the task for `resource_type` exports, de-identified with `deid` when given.
pub async fn output(
    stores: &Stores,
    task: &ClaimedTask,
    resource_type: ResourceType,
    deid: Option<&Deidentify>,
    stop: &CancellationToken,
) -> Result<OutputSource, Halt> {
    let (mut pipeline, mut selection) = type_selection(task, resource_type, scope(task))?;
    if let Some(deid) = deid {
        let stage = deid.stage(selection.resource_type.as_str());
        pipeline = Pipeline::for_output(&task.request, &selection.resource_type, Some(stage)).map_err(invalid)?;
    }
    let mut deletions = None;
    if let (Some(associated), true) = (task.request.associated, selection.resource_type == provenance()) {
        // The Provenance of the exported resources, whenever it was recorded.
        let ids = Box::pin(associated_provenance(stores, task, associated, stop)).await?;
        pipeline = pipeline.first(IdIn(ids));
        (selection.scope, selection.since) = (Scope::All, None);
    } else if task.request.level.is_compartment() && !compartment::is_compartment_type(&selection.resource_type) {
        // A Group export's referenced type: the resources its exported ones reference,
        // whenever they last changed.
        let ids = referenced_ids(stores, task, &selection.resource_type, stop).await?;
        pipeline = pipeline.first(IdIn(ids));
        (selection.scope, selection.since) = (Scope::All, None);
    } else if task.request.since.is_some() {
        deletions = Some(deleted_selection(task, selection.resource_type.clone()));
    }
    Ok(OutputSource { lines: pipeline.apply_to(stores.resources.export_stream(selection)), deletions })
}

/// Calls `each` on every chunk of whole lines, until the end or a stop.
pub(super) async fn read_all(lines: Lines, stop: &CancellationToken, mut each: impl FnMut(&[u8]) -> Result<(), NotJson> + Send) -> Result<(), Halt> {
    drain(lines, stop, &mut Pacer::default(), |chunk: Bytes| each(&chunk).map_err(invalid)).await
}

/// The ids of the `target` resources that the job's exported compartment resources reference:
/// each compartment type's export read once, as it is written (`_typeFilter` and `_elements`
/// included), and searched for references without parsing. Provenance counts as the
/// compartment type it is, even under `includeAssociatedData`.
async fn referenced_ids(stores: &Stores, task: &ClaimedTask, target: &ResourceType, stop: &CancellationToken) -> Result<BTreeSet<ResourceId>, Halt> {
    let present = stores.resources.types_present().await?;
    let mut found = BTreeSet::new();
    for resource_type in task.request.types_to_export(&present).into_iter().filter(compartment::is_compartment_type) {
        let (pipeline, selection) = type_selection(task, resource_type, Scope::JobPatients(task.job_id))?;
        let lines = pipeline.apply_to(stores.resources.export_stream(selection));
        read_all(lines, stop, |chunk| {
            references::collect_ids(chunk, target, &mut found);
            Ok(())
        })
        .await?;
    }
    Ok(found)
}

/// One Provenance as `includeAssociatedData` needs it.
struct ProvenanceTargets {
    id: ResourceId,
    recorded: DateTime<Utc>,
    targets: Vec<(ResourceType, ResourceId)>,
}

/// The ids of the Provenance resources to export with `includeAssociatedData`: every one
/// whose target is an exported resource (Relevant), or for each exported resource the one that
/// targets it most recently recorded (Latest). Reads the Provenance at transactionTime, then
/// the exports of the targeted types, as they are written.
async fn associated_provenance(stores: &Stores, task: &ClaimedTask, associated: AssociatedData, stop: &CancellationToken) -> Result<BTreeSet<ResourceId>, Halt> {
    let all = Selection {
        resource_type: provenance(),
        as_of: task.transaction_time,
        since: None,
        until: task.request.until,
        scope: Scope::All,
        narrowing: Narrowing::default(),
    };
    let mut records = Vec::new();
    let lines = Pipeline::default().apply_to(stores.resources.export_stream(all));
    read_all(lines, stop, |chunk| {
        for line in ndjson_lines(chunk) {
            let value: Value = serde_json::from_slice(line).map_err(|e| NotJson::new("stored Provenance", e))?;
            let Some(id) = value["id"].as_str().and_then(ResourceId::parse) else { continue };
            let recorded = value["recorded"].as_str().and_then(|r| instant::parse(r).ok()).unwrap_or(DateTime::<Utc>::MIN_UTC);
            let targets = value["target"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["reference"].as_str().and_then(references::split_reference))
                .collect();
            records.push(ProvenanceTargets { id, recorded, targets });
        }
        Ok(())
    })
    .await?;

    let mut wanted: BTreeMap<ResourceType, BTreeSet<ResourceId>> = BTreeMap::new();
    for (t, id) in records.iter().flat_map(|r| r.targets.iter()) {
        wanted.entry(t.clone()).or_default().insert(id.clone());
    }
    let present = stores.resources.types_present().await?;
    let exported_types = task.request.types_to_export(&present);
    let mut exported: BTreeSet<(ResourceType, ResourceId)> = BTreeSet::new();
    for (t, ids) in wanted {
        if t == provenance() || !exported_types.contains(&t) {
            continue;
        }
        // Which targets are exported is a question about stored ids: not de-identified.
        let source = output(stores, task, t.clone(), None, stop).await?;
        read_all(source.lines, stop, |chunk| {
            for line in ndjson_lines(chunk) {
                let value: IdOnly = serde_json::from_slice(line).map_err(|e| NotJson::new(format!("exported {t}"), e))?;
                if let Some(id) = ResourceId::parse(&value.id).filter(|id| ids.contains(id)) {
                    exported.insert((t.clone(), id));
                }
            }
            Ok(())
        })
        .await?;
    }

    let targets_exported = |r: &ProvenanceTargets| r.targets.iter().filter(|t| exported.contains(*t)).cloned().collect::<Vec<_>>();
    Ok(match associated {
        AssociatedData::RelevantProvenanceResources => {
            records.iter().filter(|r| !targets_exported(r).is_empty()).map(|r| r.id.clone()).collect()
        }
        AssociatedData::LatestProvenanceResources => {
            let mut latest: BTreeMap<(ResourceType, ResourceId), (DateTime<Utc>, &ResourceId)> = BTreeMap::new();
            for r in &records {
                for target in targets_exported(r) {
                    let best = latest.entry(target).or_insert((r.recorded, &r.id));
                    if (r.recorded, &r.id) > *best {
                        *best = (r.recorded, &r.id);
                    }
                }
            }
            latest.into_values().map(|(_, id)| id.clone()).collect()
        }
    })
}

#[derive(serde::Deserialize)]
pub(super) struct IdOnly {
    pub id: String,
}

/// The `deleted` lines of a selection: one transaction Bundle of a DELETE entry per deletion.
pub fn deletion_bundles(stores: &Stores, selection: Selection) -> BoxStream<'static, Result<Bytes, crate::store::StoreError>> {
    let resource_type = selection.resource_type.to_string();
    stores
        .resources
        .deleted_stream(selection)
        .map(move |ids| {
            let ids = ids?;
            let mut lines = Vec::with_capacity(ids.len() * 4);
            for id in ndjson_lines(&ids) {
                lines.extend_from_slice(crate::fhir::bundle::deletion(&resource_type, &String::from_utf8_lossy(id)).as_bytes());
                lines.push(b'\n');
            }
            Ok(Bytes::from(lines))
        })
        .boxed()
}
