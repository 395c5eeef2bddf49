//! `bulkfhir jobs`: export jobs as operators see them, straight from the database, so a stuck
//! or heavy job can be found and stopped without SQL.

use std::process::ExitCode;

use bulkfhir::{
    config::Settings,
    model::job::{FileKind, FileRecord, JobId, JobRecord},
    store::Stores,
};
use chrono::Utc;

use crate::JobsCommand;

pub async fn run(settings: &Settings, command: JobsCommand) -> anyhow::Result<ExitCode> {
    // Two connections: Postgres keeps one for LISTEN.
    let stores = Stores::connect(&settings.database_url, 2).await?;
    match command {
        JobsCommand::List { limit } => {
            println!("{:<36}  {:<9}  {:<7}  {:<20}  {:>5}  {:>12}  {:>7}  progress", "id", "status", "level", "owner", "files", "bytes", "age");
            for id in stores.jobs.recent_jobs(limit).await? {
                let Some(job) = stores.jobs.job(id).await? else { continue }; // deleted meanwhile
                let files = stores.jobs.files(id).await?;
                let (count, bytes) = totals(&files);
                println!(
                    "{:<36}  {:<9}  {:<7}  {:<20}  {:>5}  {:>12}  {:>7}  {}",
                    job.id,
                    job.status.as_str(),
                    job.request.level.name(),
                    job.owner,
                    count,
                    bytes,
                    age(&job),
                    job.progress.describe(job.status)
                );
            }
        }
        JobsCommand::Show { id } => {
            let Some(job) = lookup(&stores, &id).await? else { return Ok(ExitCode::FAILURE) };
            let files = stores.jobs.files(job.id).await?;
            let (count, bytes) = totals(&files);
            println!("id:               {}", job.id);
            println!("status:           {}", job.status.as_str());
            println!("owner:            {}", job.owner);
            println!("level:            {}", job.request.level.name());
            println!("request:          {}", job.request.request_url);
            println!("created:          {} ({} ago)", job.created_at.to_rfc3339(), age(&job));
            println!("transaction time: {}", job.transaction_time.to_rfc3339());
            if let Some(expires) = job.expires_at {
                println!("expires:          {}", expires.to_rfc3339());
            }
            println!("progress:         {} (tasks {} of {} done)", job.progress.describe(job.status), job.progress.tasks_done, job.progress.tasks_total);
            println!("files:            {count} ({bytes} bytes)");
            if let Some(error) = &job.error {
                println!("error:            {error}");
            }
            for file in &files {
                println!("  {:<8} {:<40} {:>10} resources {:>14} bytes", kind(file), file.name, file.count, file.bytes);
            }
        }
        JobsCommand::Cancel { id } => {
            let Some(job) = lookup(&stores, &id).await? else { return Ok(ExitCode::FAILURE) };
            if !stores.jobs.cancel(job.id).await? {
                eprintln!("bulkfhir: job {} is already {}", job.id, job.status.as_str());
                return Ok(ExitCode::FAILURE);
            }
            println!("job {} cancelled; its workers stop and its files are deleted", job.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn lookup(stores: &Stores, id: &str) -> anyhow::Result<Option<JobRecord>> {
    let Ok(parsed) = id.parse::<JobId>() else {
        eprintln!("bulkfhir: '{id}' is not a job id (a UUID)");
        return Ok(None);
    };
    let job = stores.jobs.job(parsed).await?;
    if job.is_none() {
        eprintln!("bulkfhir: no job {id}");
    }
    Ok(job)
}

/// Output files and their bytes (error and deleted files are few and small).
fn totals(files: &[FileRecord]) -> (usize, i64) {
    let outputs = files.iter().filter(|f| f.kind == FileKind::Output);
    (outputs.clone().count(), outputs.map(|f| f.bytes).sum())
}

fn kind(file: &FileRecord) -> &'static str {
    file.kind.as_str()
}

/// Since the job was created: `45s`, `12m`, `3h`, `2d`.
fn age(job: &JobRecord) -> String {
    let seconds = (Utc::now() - job.created_at).num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
