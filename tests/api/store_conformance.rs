//! The store traits' contract, driven directly (no server, no workers, no janitor) on each
//! backend: what makes Postgres and SQLite the same product. Leases are short here so expiry
//! ends in real time (a heartbeat with a zero lease ends one now), not by a mock clock.

use std::time::Duration;

use bulkfhir::{
    export::params::RawParams,
    fhir::{search::Narrowing, types::ResourceId, Resource, ResourceType},
    model::{
        client::ClientRecord,
        job::{ClaimedTask, FileKind, FileRecord, JobId, JobStatus, NewJob, TaskKind, TaskSpec},
        request::{ExportLevel, ExportRequest, Handling},
    },
    store::{Created, Lease, Scope, Selection, Stores, Write},
};
use futures::TryStreamExt;
use serde_json::{json, Value};

use crate::helpers::{backend_tests, Backend, TestDb};

const OWNER: &str = "conformance";
const LONG: Duration = Duration::from_secs(60);

/// A fresh database of the backend and its stores (the database goes when the `TestDb` drops).
async fn stores(backend: Backend) -> (TestDb, Stores) {
    let db = TestDb::create(backend).await;
    let stores = Stores::connect(&db.url, 4).await.expect("the stores connect");
    (db, stores)
}

/// A queued system-level job with one export task per type.
async fn create_job(stores: &Stores, types: &[&str], retention: Duration) -> JobId {
    let job = new_job(stores, types, retention).await;
    let id = job.id;
    assert_eq!(stores.jobs.create_job(job, None).await.unwrap(), Created::Job);
    id
}

/// The owner's queued and running jobs, as the per-owner limit counts them (a limit of zero
/// records nothing).
async fn active_jobs(stores: &Stores) -> i64 {
    match stores.jobs.create_job(new_job(stores, &["Patient"], LONG).await, Some(0)).await.unwrap() {
        Created::OverLimit { active } => active,
        Created::Job => panic!("a limit of zero admits no job"),
    }
}

async fn new_job(stores: &Stores, types: &[&str], retention: Duration) -> NewJob {
    let id = JobId::new();
    let request = ExportRequest::parse(ExportLevel::System, "http://localhost/$export".into(), &RawParams(Vec::new()), Handling::Strict)
        .expect("no parameters is a valid request");
    NewJob {
        id,
        owner: OWNER.into(),
        request,
        transaction_time: stores.resources.snapshot_time().await.unwrap(),
        folder: format!("jobs/{id}"),
        tasks: types.iter().map(|t| TaskSpec { kind: TaskKind::Export, resource_type: (*t).into() }).collect(),
        patients: Vec::new(),
        retention,
        max_file_bytes: 1 << 20,
        anonymization: None,
    }
}

async fn claim(stores: &Stores, worker: &str, lease: Duration, max_attempts: i32) -> Option<ClaimedTask> {
    stores.queue.claim(worker, lease, max_attempts).await.unwrap()
}

/// Ends a claim's lease now, as if its worker had stopped heartbeating long ago.
async fn expire(stores: &Stores, task: &ClaimedTask) {
    assert_eq!(stores.queue.heartbeat(task, Duration::ZERO, 0).await.unwrap(), Lease::Held);
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn status(stores: &Stores, id: JobId) -> JobStatus {
    stores.jobs.job(id).await.unwrap().expect("the job exists").status
}

fn file(resource_type: &str, name: &str, count: i64) -> FileRecord {
    FileRecord { kind: FileKind::Output, resource_type: resource_type.into(), name: name.into(), key: format!("k/{name}"), count, bytes: count * 10 }
}

async fn to_release(stores: &Stores) -> Vec<JobId> {
    stores.queue.jobs_to_release().await.unwrap().into_iter().map(|(id, _)| id).collect()
}

fn resource(value: Value) -> Resource {
    Resource::from_value(value, bulkfhir::fhir::Validation::Strict).expect("a valid resource")
}

fn patient_type() -> ResourceType {
    ResourceType::parse("Patient").unwrap()
}

fn rid(id: &str) -> ResourceId {
    ResourceId::parse(id).unwrap()
}

/// A stream of NDJSON or id lines, collected into its lines.
async fn lines(stream: futures::stream::BoxStream<'static, Result<bytes::Bytes, bulkfhir::store::StoreError>>) -> Vec<String> {
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks.iter().map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    text.lines().map(str::to_owned).collect()
}

fn family(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap();
    value["name"][0]["family"].as_str().unwrap_or_default().to_owned()
}

fn version(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap();
    value["meta"]["versionId"].as_str().unwrap_or_default().to_owned()
}

backend_tests! {
    async fn a_claim_takes_a_queued_task_runs_its_job_and_raises_the_fence_on_each_claim(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        assert!(claim(&stores, "w1", LONG, 3).await.is_none(), "an empty queue has nothing to claim");
        let job = create_job(&stores, &["Patient", "Observation"], LONG).await;
        assert_eq!(status(&stores, job).await, JobStatus::Queued);
        assert_eq!(active_jobs(&stores).await, 1);

        let first = claim(&stores, "w1", LONG, 3).await.expect("a queued task");
        assert_eq!((first.job_id, first.fence, first.kind), (job, 1, TaskKind::Export));
        assert_eq!(first.folder, format!("jobs/{job}"));
        assert_eq!(status(&stores, job).await, JobStatus::Running);
        let second = claim(&stores, "w2", LONG, 3).await.expect("the other task");
        assert_ne!(second.task_id, first.task_id);
        let mut types = vec![first.resource_type.clone(), second.resource_type.clone()];
        types.sort();
        assert_eq!(types, ["Observation", "Patient"]);
        assert!(claim(&stores, "w3", LONG, 3).await.is_none(), "a task under a live lease is not claimed again");
        let progress = stores.jobs.job(job).await.unwrap().unwrap().progress;
        assert_eq!((progress.tasks_total, progress.tasks_done, progress.running.len()), (2, 0, 2));

        // The first lease runs out: the next claim takes that task over, under a higher fence.
        expire(&stores, &first).await;
        let taken_over = claim(&stores, "w3", LONG, 3).await.expect("the task whose lease expired");
        assert_eq!(taken_over.task_id, first.task_id);
        assert_eq!(taken_over.fence, first.fence + 1);
        assert_eq!(stores.queue.heartbeat(&taken_over, LONG, 0).await.unwrap(), Lease::Held);
    }

    async fn a_stale_fence_is_refused_on_heartbeat_complete_fail_retry_and_release(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let job = create_job(&stores, &["Patient"], LONG).await;
        let stale = claim(&stores, "presumed-dead", LONG, 5).await.unwrap();
        expire(&stores, &stale).await;
        let current = claim(&stores, "successor", LONG, 5).await.expect("the expired lease is taken over");
        assert_eq!((current.task_id, current.fence), (stale.task_id, stale.fence + 1));

        assert_eq!(stores.queue.heartbeat(&stale, LONG, 7).await.unwrap(), Lease::Lost);
        assert!(!stores.queue.complete(&stale, vec![file("Patient", "Patient-1.ndjson", 7)]).await.unwrap());
        assert_eq!(status(&stores, job).await, JobStatus::Running, "a stale completion does not complete the job");
        assert!(stores.jobs.files(job).await.unwrap().is_empty(), "a stale completion lists no files");
        stores.queue.fail(&stale, "stale failure".into()).await.unwrap();
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!((record.status, record.error), (JobStatus::Running, None), "a stale failure does not fail the job");
        assert!(!stores.queue.retry(&stale, Duration::ZERO, 5).await.unwrap(), "a stale retry is refused");
        stores.queue.release(&stale).await.unwrap();
        assert!(claim(&stores, "third", LONG, 5).await.is_none(), "a stale release does not hand the task back");
        assert_eq!(record.progress.resources_written, 0, "a stale heartbeat records no progress");

        // The current claim is untouched by all of that.
        assert_eq!(stores.queue.heartbeat(&current, LONG, 3).await.unwrap(), Lease::Held);
        assert!(stores.queue.complete(&current, vec![file("Patient", "Patient-1.ndjson", 3)]).await.unwrap());
        assert_eq!(status(&stores, job).await, JobStatus::Completed);
        assert_eq!(stores.jobs.files(job).await.unwrap(), vec![file("Patient", "Patient-1.ndjson", 3)]);
    }

    async fn release_gives_the_attempt_back_and_queues_the_task_again(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let job = create_job(&stores, &["Patient"], LONG).await;
        // One attempt allowed: only a release that gives it back lets the task be claimed again.
        let first = claim(&stores, "stopping", LONG, 1).await.unwrap();
        stores.queue.release(&first).await.unwrap();
        assert_eq!(status(&stores, job).await, JobStatus::Running);
        let again = claim(&stores, "next", LONG, 1).await.expect("a released task is queued again with its attempt back");
        assert_eq!((again.task_id, again.fence), (first.task_id, first.fence + 1));
        assert_eq!(stores.queue.heartbeat(&first, LONG, 0).await.unwrap(), Lease::Lost);

        // A retry counts the attempt: with none left it is refused, and the caller fails the task.
        assert!(!stores.queue.retry(&again, Duration::ZERO, 1).await.unwrap());
        assert!(stores.queue.retry(&again, LONG, 2).await.unwrap());
        assert!(claim(&stores, "early", LONG, 2).await.is_none(), "a retried task waits out its backoff");
        expire(&stores, &again).await; // the backoff is a lease the claim waits out
        let retried = claim(&stores, "later", LONG, 3).await.expect("claimed again after the backoff");
        assert_eq!((retried.task_id, retried.fence), (first.task_id, again.fence + 1));
    }

    async fn a_task_that_keeps_losing_its_lease_fails_its_job_when_its_attempts_run_out(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let job = create_job(&stores, &["Patient", "Observation"], LONG).await;
        let first = claim(&stores, "dies-1", LONG, 2).await.unwrap();
        let other = claim(&stores, "holds", LONG, 2).await.unwrap();
        stores.queue.release(&other).await.unwrap(); // queued again, to see it cancelled with the job
        expire(&stores, &first).await;
        let second = claim(&stores, "dies-2", LONG, 2).await.unwrap();
        assert_eq!(second.task_id, first.task_id, "the expired task comes first");
        assert_eq!(stores.queue.fail_exhausted(2).await.unwrap(), 0, "a live lease is not exhausted");
        expire(&stores, &second).await;
        assert_eq!(stores.queue.fail_exhausted(3).await.unwrap(), 0, "an attempt is left under 3");
        assert_eq!(status(&stores, job).await, JobStatus::Running);

        assert_eq!(stores.queue.fail_exhausted(2).await.unwrap(), 1);
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!(record.status, JobStatus::Failed);
        let error = record.error.expect("the job says why it failed");
        assert!(error.contains("OperationOutcome") && error.contains("stopped 2 times"), "{error}");
        assert!(claim(&stores, "late", LONG, 5).await.is_none(), "a failed job's queued tasks are cancelled");
        assert_eq!(stores.queue.heartbeat(&second, LONG, 0).await.unwrap(), Lease::Lost);
        assert_eq!(to_release(&stores).await, vec![job], "a failed job's files are to be deleted");
        assert_eq!(active_jobs(&stores).await, 0);
    }

    async fn fail_fails_the_job_with_its_outcome_and_cancels_its_queued_tasks(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let job = create_job(&stores, &["Patient", "Observation"], LONG).await;
        let task = claim(&stores, "w", LONG, 3).await.unwrap();
        stores.queue.fail(&task, r#"{"resourceType":"OperationOutcome","why":"broken"}"#.into()).await.unwrap();
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!(record.status, JobStatus::Failed);
        assert_eq!(record.error.as_deref(), Some(r#"{"resourceType":"OperationOutcome","why":"broken"}"#));
        assert!(claim(&stores, "w", LONG, 3).await.is_none(), "the job's other task is cancelled");
        assert_eq!(stores.queue.heartbeat(&task, LONG, 0).await.unwrap(), Lease::Lost);
        assert!(!stores.queue.complete(&task, vec![file("Patient", "Patient-1.ndjson", 1)]).await.unwrap());
        assert!(stores.jobs.files(job).await.unwrap().is_empty());
        assert_eq!(to_release(&stores).await, vec![job]);
    }

    async fn cancel_stops_claims_tells_the_running_worker_and_waits_for_it_before_release(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        assert!(!stores.jobs.cancel(JobId::new()).await.unwrap(), "an unknown job cannot be cancelled");
        let job = create_job(&stores, &["Patient", "Observation"], LONG).await;
        let running = claim(&stores, "w", LONG, 3).await.unwrap();

        assert!(stores.jobs.cancel(job).await.unwrap());
        assert_eq!(status(&stores, job).await, JobStatus::Cancelled);
        assert_eq!(active_jobs(&stores).await, 0);
        assert!(claim(&stores, "w", LONG, 3).await.is_none(), "a cancelled job's queued task is not claimed");
        assert_eq!(stores.queue.heartbeat(&running, LONG, 0).await.unwrap(), Lease::Cancelled);
        assert!(to_release(&stores).await.is_empty(), "files are not deleted while a task may still write them");

        // The worker stops: its completion is refused, and that hands the task back at once.
        assert!(!stores.queue.complete(&running, vec![file("Patient", "Patient-1.ndjson", 1)]).await.unwrap());
        assert!(stores.jobs.files(job).await.unwrap().is_empty());
        assert_eq!(stores.queue.heartbeat(&running, LONG, 0).await.unwrap(), Lease::Lost);
        let released = stores.queue.jobs_to_release().await.unwrap();
        assert_eq!(released, vec![(job, format!("jobs/{job}"))]);
        stores.queue.mark_released(job).await.unwrap();
        assert!(to_release(&stores).await.is_empty(), "a job's files are released once");
        assert!(!stores.jobs.cancel(job).await.unwrap(), "a cancelled job is gone");

        // A completed job is released by a cancel.
        let done = create_job(&stores, &["Patient"], LONG).await;
        let task = claim(&stores, "w", LONG, 3).await.unwrap();
        assert!(stores.queue.complete(&task, vec![file("Patient", "Patient-1.ndjson", 1)]).await.unwrap());
        assert!(stores.jobs.cancel(done).await.unwrap());
        assert_eq!(status(&stores, done).await, JobStatus::Cancelled);
        assert_eq!(to_release(&stores).await, vec![done]);
        stores.queue.mark_released(done).await.unwrap();
        assert!(stores.jobs.files(done).await.unwrap().is_empty(), "a released job lists no files");
    }

    async fn a_job_completes_with_its_last_task_and_lists_its_files_in_manifest_order(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let job = create_job(&stores, &["Patient", "Observation"], LONG).await;
        let a = claim(&stores, "w", LONG, 3).await.unwrap();
        let b = claim(&stores, "w", LONG, 3).await.unwrap();
        let (patients, observations) = if a.resource_type == "Patient" { (a, b) } else { (b, a) };

        assert_eq!(stores.queue.heartbeat(&observations, LONG, 42).await.unwrap(), Lease::Held);
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!(record.progress.resources_written, 42, "a heartbeat records progress");
        assert_eq!(record.progress.running, ["Observation", "Patient"]);

        let patient_files =
            vec![file("Patient", "Patient-10.ndjson", 1), file("Patient", "Patient-2.ndjson", 1), file("Patient", "Patient-1.ndjson", 1)];
        assert!(stores.queue.complete(&patients, patient_files).await.unwrap());
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!((record.status, record.progress.tasks_done, record.expires_at), (JobStatus::Running, 1, None));
        assert_eq!(record.progress.running, ["Observation"]);

        assert!(stores.queue.complete(&observations, vec![file("Observation", "Observation-1.ndjson", 5)]).await.unwrap());
        let record = stores.jobs.job(job).await.unwrap().unwrap();
        assert_eq!((record.status, record.progress.tasks_done, record.progress.resources_written), (JobStatus::Completed, 2, 8));
        let expires = record.expires_at.expect("a completed job has an expiry");
        let retention = (expires - chrono::Utc::now()).num_seconds();
        assert!((30..=60).contains(&retention), "expires after the job's retention: {retention} s");
        let names: Vec<String> = stores.jobs.files(job).await.unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["Observation-1.ndjson", "Patient-1.ndjson", "Patient-2.ndjson", "Patient-10.ndjson"]);
        assert!(!stores.queue.complete(&patients, Vec::new()).await.unwrap(), "a task completes once");

        // A job with nothing to export is complete at once.
        let empty = create_job(&stores, &[], LONG).await;
        assert_eq!(status(&stores, empty).await, JobStatus::Completed);
    }

    async fn completed_jobs_expire_after_their_retention_and_then_release_their_files(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let brief = create_job(&stores, &["Patient"], Duration::ZERO).await;
        let kept = create_job(&stores, &["Patient"], Duration::from_secs(3600)).await;
        for _ in 0..2 {
            let task = claim(&stores, "w", LONG, 3).await.unwrap();
            assert!(stores.queue.complete(&task, vec![file("Patient", "Patient-1.ndjson", 1)]).await.unwrap());
        }
        assert_eq!(stores.queue.expire_jobs().await.unwrap(), 1);
        assert_eq!(status(&stores, brief).await, JobStatus::Expired);
        assert_eq!(status(&stores, kept).await, JobStatus::Completed, "a job within its retention stays");
        assert_eq!(stores.queue.expire_jobs().await.unwrap(), 0, "a job expires once");
        assert!(!stores.jobs.cancel(brief).await.unwrap(), "an expired job is gone");

        assert_eq!(to_release(&stores).await, vec![brief]);
        stores.queue.mark_released(brief).await.unwrap();
        assert!(stores.jobs.files(brief).await.unwrap().is_empty());
        assert_eq!(stores.jobs.files(kept).await.unwrap().len(), 1);
        assert!(to_release(&stores).await.is_empty());
    }

    async fn resources_keep_their_versions_and_answer_as_of_any_instant(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let store = stores.resources.as_ref();
        let (patient, p1) = (patient_type(), rid("p1"));
        let t0 = store.snapshot_time().await.unwrap();
        assert!(store.types_present().await.unwrap().is_empty());

        let applied = store.apply(vec![Write::Save(resource(json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]})))]).await.unwrap();
        assert_eq!((applied[0].version_id, applied[0].created, applied[0].existed), (1, true, false));
        let t1 = store.snapshot_time().await.unwrap();
        assert!(t1 >= applied[0].last_updated && applied[0].last_updated > t0, "a write falls between the snapshots around it");
        let applied = store.apply(vec![Write::Save(resource(json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Two"}]})))]).await.unwrap();
        assert_eq!((applied[0].version_id, applied[0].created, applied[0].existed), (2, false, true));
        let t2 = store.snapshot_time().await.unwrap();

        let current = store.read(&patient, &p1).await.unwrap().expect("p1 is stored");
        assert_eq!((current.version_id, current.deleted), (2, false));
        let body = current.body.expect("a stored body");
        assert_eq!((family(&body), version(&body)), ("Two".to_owned(), "2".to_owned()));
        assert!(store.read_as_of(&patient, &p1, t0).await.unwrap().is_none(), "absent before its first write");
        let then = store.read_as_of(&patient, &p1, t1).await.unwrap().expect("version 1 at t1");
        assert_eq!((family(&then), version(&then)), ("One".to_owned(), "1".to_owned()));

        let deleted = store.apply(vec![Write::Delete { resource_type: patient.clone(), id: p1.clone() }]).await.unwrap();
        assert_eq!((deleted[0].version_id, deleted[0].existed), (3, true));
        let t3 = store.snapshot_time().await.unwrap();
        assert!(store.read(&patient, &p1).await.unwrap().expect("the deletion is a version").deleted);
        assert!(store.read_as_of(&patient, &p1, t3).await.unwrap().is_none(), "deleted at t3");
        assert_eq!(family(&store.read_as_of(&patient, &p1, t2).await.unwrap().expect("version 2 at t2")), "Two");
        let again = store.apply(vec![Write::Delete { resource_type: patient.clone(), id: p1.clone() }]).await.unwrap();
        assert!(!again[0].existed, "deleting what is deleted changes nothing");
        assert_eq!(store.read(&patient, &p1).await.unwrap().unwrap().version_id, 3);

        // Exports read each resource as of the snapshot, and report the deletions.
        let selection = |as_of, since| Selection { resource_type: patient.clone(), as_of, since, until: None, scope: Scope::All, narrowing: Narrowing::default() };
        let at_t1 = lines(store.export_stream(selection(t1, None))).await;
        assert_eq!(at_t1.len(), 1);
        assert_eq!(family(&at_t1[0]), "One");
        assert!(lines(store.export_stream(selection(t3, None))).await.is_empty());
        assert_eq!(lines(store.deleted_stream(selection(t3, Some(t2)))).await, ["p1"]);
        assert!(lines(store.deleted_stream(selection(t2, None))).await.is_empty());

        let recreated = store.apply(vec![Write::Save(resource(json!({"resourceType": "Patient", "id": "p1"})))]).await.unwrap();
        assert_eq!((recreated[0].version_id, recreated[0].created, recreated[0].existed), (4, true, false));
        assert_eq!(store.types_present().await.unwrap(), [patient]);
    }

    async fn large_batches_take_the_bulk_path_with_the_same_versions(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let store = stores.resources.as_ref();
        let batch = |family: &str| -> Vec<Write> {
            (0..100).map(|n| Write::Save(resource(json!({"resourceType": "Observation", "id": format!("o{n}"), "status": "final",
                "code": {"text": family}, "subject": {"reference": format!("Patient/p{}", n % 3)}})))).collect()
        };
        let first = store.apply(batch("first")).await.unwrap();
        assert_eq!(first.len(), 100);
        assert!(first.iter().all(|a| a.version_id == 1 && a.created && !a.existed));
        let t1 = store.snapshot_time().await.unwrap();
        let second = store.apply(batch("second")).await.unwrap();
        assert!(second.iter().all(|a| a.version_id == 2 && !a.created && a.existed));

        let observation = ResourceType::parse("Observation").unwrap();
        let stored = store.read(&observation, &rid("o42")).await.unwrap().unwrap();
        assert_eq!(stored.version_id, 2);
        let text = store.read_as_of(&observation, &rid("o42"), t1).await.unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["code"]["text"], "first");
        let selection = Selection { resource_type: observation.clone(), as_of: t1, since: None, until: None, scope: Scope::Patient(rid("p1")), narrowing: Narrowing::default() };
        let in_compartment = lines(store.export_stream(selection)).await;
        assert_eq!(in_compartment.len(), 33, "the bulk path records compartments too");
        assert!(in_compartment.iter().all(|l| serde_json::from_str::<Value>(l).unwrap()["code"]["text"] == "first"));
    }

    async fn clients_are_registered_looked_up_replaced_and_removed(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let auth = stores.auth.as_ref();
        assert!(!auth.has_clients().await.unwrap());
        assert!(auth.client("a").await.unwrap().is_none());
        let a = ClientRecord { client_id: "a".into(), jwks: Some(r#"{"keys":[]}"#.into()), jwks_url: None, scopes: "system/*.read".into() };
        let b = ClientRecord { client_id: "b".into(), jwks: None, jwks_url: Some("https://b.example/jwks".into()), scopes: "system/Patient.rs".into() };
        auth.put_client(&b).await.unwrap();
        auth.put_client(&a).await.unwrap();
        assert!(auth.has_clients().await.unwrap());
        assert_eq!(auth.client("a").await.unwrap(), Some(a.clone()));
        assert_eq!(auth.clients().await.unwrap(), [a.clone(), b.clone()]);

        let replaced = ClientRecord { jwks: None, jwks_url: Some("https://a.example/jwks".into()), scopes: "system/Observation.read".into(), ..a };
        auth.put_client(&replaced).await.unwrap();
        assert_eq!(auth.client("a").await.unwrap(), Some(replaced.clone()));
        assert_eq!(auth.clients().await.unwrap().len(), 2, "a registration of the same id replaces it");

        assert!(auth.remove_client("a").await.unwrap());
        assert!(!auth.remove_client("a").await.unwrap());
        assert!(auth.client("a").await.unwrap().is_none());
        assert_eq!(auth.clients().await.unwrap(), [b]);
        assert!(auth.remove_client("b").await.unwrap());
        assert!(!auth.has_clients().await.unwrap());
    }

    async fn an_assertion_id_is_accepted_once_and_the_first_signing_key_stays(backend: Backend) {
        let (_db, stores) = stores(backend).await;
        let auth = stores.auth.as_ref();
        let later = chrono::Utc::now() + chrono::TimeDelta::minutes(5);
        assert!(auth.remember_jti("a", "j1", later).await.unwrap());
        assert!(!auth.remember_jti("a", "j1", later).await.unwrap(), "a replay is refused");
        assert!(auth.remember_jti("a", "j2", later).await.unwrap());
        assert!(auth.remember_jti("b", "j1", later).await.unwrap(), "assertion ids are per client");
        assert_eq!(auth.signing_key("first").await.unwrap(), "first");
        assert_eq!(auth.signing_key("second").await.unwrap(), "first", "every node agrees on the first key stored");
    }
}
