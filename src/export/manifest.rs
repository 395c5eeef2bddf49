//! The completion manifest of the Bulk Data status response.

use serde_json::{json, Value};

use crate::model::job::{FileKind, FileRecord, JobRecord};
use crate::fhir::instant;

/// Builds the manifest. File URLs are minted by the caller (the HTTP edge knows the base URL);
/// signed URLs need no token, files served by this server do.
pub fn manifest(job: &JobRecord, files: &[FileRecord], requires_access_token: bool, url_of: impl Fn(&FileRecord) -> String) -> Value {
    let entries = |kind: FileKind| -> Vec<Value> {
        files
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| match (kind, job.request.organize_by_patient) {
                // Organized files hold every type: no `type` (Bulk Data v3).
                (FileKind::Output, true) => json!({"url": url_of(f), "count": f.count}),
                _ => json!({"type": f.resource_type, "url": url_of(f), "count": f.count}),
            })
            .collect()
    };
    let mut manifest = json!({
        "transactionTime": instant::format(job.transaction_time),
        "request": job.request.request_url,
        "requiresAccessToken": requires_access_token,
        "output": entries(FileKind::Output),
        "deleted": entries(FileKind::Deleted),
        // Always present, even empty: some clients fail without it.
        "error": entries(FileKind::Error),
    });
    if job.request.organize_by_patient {
        manifest["outputOrganizedBy"] = json!(super::organized::ORGANIZED_BY);
    }
    // Bulk Data reserves `extension` for what the server adds: which configuration (never its
    // content) de-identified the files.
    if let Some(applied) = &job.request.anonymization {
        manifest["extension"] = json!({"anonymizationConfig": applied.config, "anonymizationConfigEtag": applied.etag});
    }
    manifest
}
