//! The task of `organizeOutputBy=Patient`: one block per patient, a `Parameters` header naming
//! the patient followed by that patient's compartment resources of every exported type, read
//! through the same selections and pipelines as the per-type tasks. What belongs to no one
//! patient (a Group export's referenced types, Provenance under `includeAssociatedData`) ends the
//! output in files of its own without a header; `_since` deletions go to `deleted` files per type.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    blocks::BlockRoller,
    deid::Deidentify,
    fairness::Pacer,
    pipeline::Pipeline,
    roller::Roller,
    sources::{self, invalid, Halt, IdOnly, Lines},
};
use crate::{
    fhir::{compartment, search::Narrowing, types::ResourceId, ResourceType},
    model::job::{ClaimedTask, FileKind, FileRecord},
    output::Output,
    store::{Scope, Selection, Stores},
};

/// The manifest's `outputOrganizedBy`, and the type the output files are recorded under.
pub const ORGANIZED_BY: &str = "Patient";

/// The block header naming the patient (Bulk Data v3).
pub fn header(patient: &ResourceId) -> String {
    json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "header", "valueReference": {"reference": format!("Patient/{patient}")}}],
    })
    .to_string()
}

/// Writes the job's organized output; the files, or why it stopped.
pub async fn write(
    stores: &Stores,
    output: &Output,
    task: &ClaimedTask,
    deid: Option<&Deidentify>,
    key_dir: String,
    stop: &CancellationToken,
    written: &AtomicI64,
) -> Result<Vec<FileRecord>, Halt> {
    let present = stores.resources.types_present().await?;
    let types = task.request.types_to_export(&present);
    let provenance_apart = task.request.associated.is_some();
    let (mut per_patient, apart): (Vec<ResourceType>, Vec<ResourceType>) = types
        .into_iter()
        .partition(|t| compartment::is_compartment_type(t) && !(provenance_apart && t.as_str() == "Provenance"));
    // Each block opens with the Patient itself, after its header.
    per_patient.sort_by_key(|t| t.as_str() != "Patient");
    let patients = patients(stores, task, stop).await?;

    let mut roller = BlockRoller::new(output, ORGANIZED_BY, "Patient-organized", key_dir.clone(), task.max_file_bytes);
    let blocks = async {
        for patient in &patients {
            // De-identified, the header's reference goes through the same rules as the resources'.
            let header = match deid {
                Some(deid) => deid.rewrite(&header(patient), ORGANIZED_BY).map_err(invalid)?,
                None => header(patient),
            };
            roller.start_block(Some(&header)).await?;
            for resource_type in &per_patient {
                let Some(lines) = patient_lines(stores, task, resource_type, patient, deid)? else { continue };
                pour(lines, &mut roller, stop, written).await?;
            }
        }
        roller.start_headerless_files().await?;
        for resource_type in &apart {
            let source = sources::output(stores, task, resource_type.clone(), deid, stop).await?;
            pour(source.lines, &mut roller, stop, written).await?;
        }
        Ok::<_, Halt>(())
    }
    .await;
    if let Err(halt) = blocks {
        roller.abort().await;
        return Err(halt);
    }
    let mut files = roller.finish().await?;
    if task.request.since.is_some() {
        for resource_type in per_patient {
            files.extend(deletions(stores, output, task, resource_type, &key_dir, stop).await?);
        }
    }
    Ok(files)
}

/// The patients to write blocks for, in id order: the job's recorded patients, or at Patient
/// level every patient at transactionTime.
async fn patients(stores: &Stores, task: &ClaimedTask, stop: &CancellationToken) -> Result<Vec<ResourceId>, Halt> {
    let patient = ResourceType::parse("Patient").expect("Patient is an R4 type");
    let selection = Selection {
        resource_type: patient,
        as_of: task.transaction_time,
        since: None,
        until: None,
        scope: sources::scope(task),
        narrowing: Narrowing::default(),
    };
    let lines: Lines = Pipeline::default().apply_to(stores.resources.export_stream(selection));
    let mut ids = Vec::new();
    sources::read_all(lines, stop, |chunk| {
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value: IdOnly = serde_json::from_slice(line).map_err(|e| format!("a stored Patient is not valid JSON: {e}"))?;
            ids.extend(ResourceId::parse(&value.id));
        }
        Ok(())
    })
    .await?;
    ids.sort();
    Ok(ids)
}

/// One patient's resources of one type, as the type's task would export them; None when the
/// type's `_typeFilter` cannot match in this patient's compartment.
fn patient_lines(
    stores: &Stores,
    task: &ClaimedTask,
    resource_type: &ResourceType,
    patient: &ResourceId,
    deid: Option<&Deidentify>,
) -> Result<Option<Lines>, Halt> {
    let pipeline = Pipeline::for_output(&task.request, resource_type, deid.map(|d| d.stage(resource_type.as_str()))).map_err(invalid)?;
    let mut narrowing = sources::narrowing(task, resource_type)?;
    // A `_typeFilter` bound to other patients' compartments selects nothing in this block.
    match &narrowing.patients {
        Some(allowed) if !allowed.contains(patient.as_str()) => return Ok(None),
        _ => narrowing.patients = Some([patient.to_string()].into()),
    }
    let selection = Selection {
        resource_type: resource_type.clone(),
        as_of: task.transaction_time,
        since: task.request.since,
        until: task.request.until,
        scope: Scope::Patient(patient.clone()),
        narrowing,
    };
    Ok(Some(pipeline.apply_to(stores.resources.export_stream(selection))))
}

/// Moves lines into the current block until they end or the task stops.
async fn pour(lines: Lines, roller: &mut BlockRoller<'_>, stop: &CancellationToken, written: &AtomicI64) -> Result<(), Halt> {
    use futures::StreamExt;
    let mut lines = lines;
    let mut pacer = Pacer::default();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Err(Halt::Stopped),
            next = lines.next() => next,
        };
        match next {
            None => return Ok(()),
            Some(Ok(chunk)) => {
                roller.write(&chunk).await?;
                written.store(roller.lines() as i64, Ordering::Relaxed);
                pacer.moved(chunk.len()).await;
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// The `deleted` files of one type (`_since`), as its per-type task would write them.
async fn deletions(
    stores: &Stores,
    output: &Output,
    task: &ClaimedTask,
    resource_type: ResourceType,
    key_dir: &str,
    stop: &CancellationToken,
) -> Result<Vec<FileRecord>, Halt> {
    use futures::StreamExt;
    let stem = format!("{resource_type}-deleted");
    let selection = Selection {
        resource_type,
        as_of: task.transaction_time,
        since: task.request.since,
        until: task.request.until,
        scope: sources::scope(task),
        narrowing: Narrowing::default(),
    };
    let mut source = sources::deletion_bundles(stores, selection);
    let mut roller = Roller::new(output, FileKind::Deleted, "Bundle", key_dir.to_owned(), task.max_file_bytes).with_stem(stem);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => None,
            next = source.next() => Some(next),
        };
        let result = match next {
            None => Err(Halt::Stopped),
            Some(None) => break,
            Some(Some(Ok(chunk))) => roller.write(chunk).await.map_err(Halt::from),
            Some(Some(Err(e))) => Err(e.into()),
        };
        if let Err(halt) = result {
            roller.abort().await;
            return Err(halt);
        }
    }
    Ok(roller.finish().await?)
}
