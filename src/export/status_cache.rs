//! A per-node cache of what the status URL reports. A running job's progress changes only at a
//! worker's heartbeat, so an answer at most one heartbeat old tells a poller nothing less, and
//! polls stop costing a database round trip each. That matters while an export runs: the
//! database's CPU is busy streaming, and every status query waited behind it (issue 7; figures:
//! docs/performance.md). What this node does is seen at once (its workers forget a job when one
//! of its tasks ends, its API when the job is cancelled); what other nodes do, at most one
//! heartbeat late.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::model::job::{FileRecord, JobId, JobRecord};

/// Past this many entries, expired ones are swept on insert (and all, if none had expired):
/// memory stays bounded however many jobs are polled.
const MAX_ENTRIES: usize = 4096;

pub struct StatusCache {
    ttl: Duration,
    entries: Mutex<HashMap<JobId, Entry>>,
}

struct Entry {
    read_at: Instant,
    job: JobRecord,
    files: Vec<FileRecord>,
}

impl StatusCache {
    /// Answers stay fresh for `ttl`; zero turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The job and its listed files as read less than `ttl` ago, if they were.
    pub fn get(&self, id: JobId) -> Option<(JobRecord, Vec<FileRecord>)> {
        let entries = self.entries.lock().expect("the status cache lock is never poisoned");
        entries.get(&id).filter(|e| e.read_at.elapsed() < self.ttl).map(|e| (e.job.clone(), e.files.clone()))
    }

    pub fn put(&self, job: JobRecord, files: Vec<FileRecord>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("the status cache lock is never poisoned");
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.read_at) < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(job.id, Entry { read_at: now, job, files });
    }

    /// Drops what is known of a job this node just changed (cancelled or released).
    pub fn forget(&self, id: JobId) {
        self.entries.lock().expect("the status cache lock is never poisoned").remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::params::RawParams,
        model::{
            job::{JobStatus, Progress},
            request::{ExportLevel, ExportRequest, Handling},
        },
    };

    fn job() -> JobRecord {
        JobRecord {
            id: JobId::new(),
            owner: "anonymous".into(),
            request: ExportRequest::parse(ExportLevel::System, "http://localhost/fhir/$export".into(), &RawParams(Vec::new()), Handling::Strict)
                .expect("no parameters is a valid request"),
            status: JobStatus::Running,
            transaction_time: chrono::Utc::now(),
            created_at: chrono::Utc::now(),
            expires_at: None,
            error: None,
            progress: Progress::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_served_until_it_is_one_ttl_old() {
        let cache = StatusCache::new(Duration::from_secs(1));
        let job = job();
        cache.put(job.clone(), Vec::new());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(cache.get(job.id).map(|(j, _)| j.id), Some(job.id));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get(job.id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn forget_and_a_zero_ttl_serve_nothing() {
        let cache = StatusCache::new(Duration::from_secs(1));
        let job = job();
        cache.put(job.clone(), Vec::new());
        cache.forget(job.id);
        assert!(cache.get(job.id).is_none());

        let off = StatusCache::new(Duration::ZERO);
        off.put(job.clone(), Vec::new());
        assert!(off.get(job.id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_stay_bounded() {
        let cache = StatusCache::new(Duration::from_secs(1));
        for _ in 0..MAX_ENTRIES + 10 {
            cache.put(job(), Vec::new());
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
