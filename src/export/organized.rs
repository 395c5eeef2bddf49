//! The task of `organizeOutputBy=Patient`: one block per patient, a `Parameters` header naming
//! the patient followed by that patient's compartment resources of every exported type, read
//! through the same selections and pipelines as the per-type tasks. What belongs to no one
//! patient (a Group export's referenced types, Provenance under `includeAssociatedData`) ends the
//! output in files of its own without a header; `_since` deletions go to `deleted` files per type.

use std::sync::atomic::AtomicI64;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    block_roller::BlockRoller,
    deid::Deidentify,
    drain::{self, drain, Counted, Halt, Progress},
    pacer::Pacer,
    pipeline::{ndjson_lines, NotJson, Pipeline},
    roller::Roller,
    type_lines::{self, invalid, IdOnly, Lines},
};
use crate::{
    fhir::{compartment, search::Narrowing, types::ResourceId, ResourceType},
    model::job::{ClaimedTask, FileRecord},
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

    // One pacer for the task: a patient's few resources count toward its next yield too.
    let mut pacer = Pacer::default();
    let progress = Progress::from_now(written);
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
                drain(lines, stop, &mut pacer, Counted { roller: &mut roller, progress }).await?;
            }
        }
        roller.start_headerless_files().await?;
        for resource_type in &apart {
            let source = type_lines::output(stores, task, resource_type.clone(), deid, stop).await?;
            drain(source.lines, stop, &mut pacer, Counted { roller: &mut roller, progress }).await?;
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
        // The `deleted` files of each type, as its per-type task would write them.
        for resource_type in per_patient {
            let source = type_lines::deletion_bundles(stores, type_lines::deleted_selection(task, resource_type.clone()));
            let roller = Roller::for_deletions(output, resource_type.as_str(), key_dir.clone(), task.max_file_bytes);
            files.extend(drain::into_files(source, roller, stop, &mut pacer, Progress::from_now(written)).await?);
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
        scope: type_lines::scope(task),
        narrowing: Narrowing::default(),
    };
    let lines: Lines = Pipeline::default().apply_to(stores.resources.export_stream(selection));
    let mut ids = Vec::new();
    type_lines::read_all(lines, stop, |chunk| {
        for line in ndjson_lines(chunk) {
            let value: IdOnly = serde_json::from_slice(line).map_err(|e| NotJson::new("a stored Patient", e))?;
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
    let (mut pipeline, mut selection) = type_lines::type_selection(task, resource_type.clone(), Scope::Patient(patient.clone()))?;
    if let Some(deid) = deid {
        pipeline = Pipeline::for_output(&task.request, resource_type, Some(deid.stage(resource_type.as_str()))).map_err(invalid)?;
    }
    // A `_typeFilter` bound to other patients' compartments selects nothing in this block.
    let narrowing = &mut selection.narrowing;
    match &narrowing.patients {
        Some(allowed) if !allowed.contains(patient.as_str()) => return Ok(None),
        _ => narrowing.patients = Some([patient.to_string()].into()),
    }
    Ok(Some(pipeline.apply_to(stores.resources.export_stream(selection))))
}

