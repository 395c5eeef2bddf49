//! The bulk loader: NDJSON files (one resource per line, optionally gzipped), Bundle JSON files
//! (batch, transaction or collection) and directories of them, written in large batches through
//! the store's fastest path. Parsing runs on a blocking thread, a batch ahead of the database;
//! a store that takes concurrent bulk writes (Postgres) gets two batches at once.
//! Every resource is checked against its R4 definition on the parsing thread. A bad line is
//! reported with its file, line and reason and does not stop the good ones.

pub mod synth;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{
    fhir::{bundle, types::ResourceId, Resource, ResourceType, Validation},
    store::{Applied, ResourceStore, StoreError, Write},
};

/// Resources per batch, and a byte bound so large resources do not make huge batches.
const BATCH_RESOURCES: usize = 5_000;
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How often a long load logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub file: PathBuf,
    /// 1-based line of an NDJSON file, or entry index in a Bundle (as `entry N`).
    pub location: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: BTreeMap<String, u64>,
    /// DELETE entries of Bundle files applied, by type.
    pub deleted: BTreeMap<String, u64>,
    pub failures: Vec<LoadFailure>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn total(&self) -> u64 {
        self.loaded.values().sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read '{path}': {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing to the database failed: {0}")]
    Store(#[from] StoreError),
}

/// What the reader thread sends: a batch to write atomically, or a failure to report.
enum Item {
    Batch(Vec<Write>),
    Failure(LoadFailure),
}

/// Loads with the default validation (strict).
pub async fn load(store: &dyn ResourceStore, paths: &[PathBuf]) -> Result<LoadReport, LoadError> {
    load_with(store, paths, Validation::default()).await
}

pub async fn load_with(store: &dyn ResourceStore, paths: &[PathBuf], validation: Validation) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let files = collect_files(paths)?;
    let (tx, mut rx) = mpsc::channel::<Item>(2);
    let reader = tokio::task::spawn_blocking(move || read_all(&files, &tx, validation));

    let mut report = LoadReport::default();
    let mut last_progress = Instant::now();
    // Batches being written, with their keys: a batch that shares a key with one in flight
    // waits for it, so the later version of a resource is always written last.
    let writers = store.bulk_writers().max(1);
    let mut in_flight = FuturesUnordered::new();
    let mut in_flight_keys: HashMap<u64, HashSet<(ResourceType, ResourceId)>> = HashMap::new();
    let mut next_batch = 0u64;
    while let Some(item) = rx.recv().await {
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let (total, seconds) = (report.total(), started.elapsed().as_secs_f64());
            tracing::info!(loaded = total, per_second = (total as f64 / seconds) as u64, failed = report.failures.len(), "loading");
        }
        match item {
            Item::Failure(failure) => report.failures.push(failure),
            Item::Batch(batch) => {
                let keys: HashSet<(ResourceType, ResourceId)> = batch.iter().map(key_of).collect();
                while in_flight.len() >= writers || in_flight_keys.values().any(|other| !other.is_disjoint(&keys)) {
                    let Some((done, deletes, applied)): Option<(u64, Vec<bool>, _)> = in_flight.next().await else { break };
                    in_flight_keys.remove(&done);
                    count(&mut report, &deletes, applied?);
                }
                let n = next_batch;
                next_batch += 1;
                in_flight_keys.insert(n, keys);
                let deletes: Vec<bool> = batch.iter().map(|w| matches!(w, Write::Delete { .. })).collect();
                in_flight.push(async move { (n, deletes, store.apply(batch).await) });
            }
        }
    }
    while let Some((_, deletes, applied)) = in_flight.next().await {
        count(&mut report, &deletes, applied?);
    }
    reader.await.expect("the reader thread does not panic")?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Counts a batch's results, in the order of its writes (`deletes` marks which deleted).
fn count(report: &mut LoadReport, deletes: &[bool], applied: Vec<Applied>) {
    for (applied, deleted) in applied.into_iter().zip(deletes) {
        let counts = if *deleted { &mut report.deleted } else { &mut report.loaded };
        *counts.entry(applied.resource_type.to_string()).or_default() += 1;
    }
}

fn key_of(write: &Write) -> (ResourceType, ResourceId) {
    match write {
        Write::Save(resource) => (resource.resource_type.clone(), resource.id.clone()),
        Write::Delete { resource_type, id } => (resource_type.clone(), id.clone()),
    }
}

/// Files named on the command line, and the `.ndjson`, `.ndjson.gz` and `.json` files in named
/// directories (recursively, in name order).
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let io = |source| LoadError::Io { path: path.clone(), source };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(path).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            let nested: Vec<PathBuf> =
                entries.into_iter().filter(|p| p.is_dir() || is_resource_file(p)).collect();
            files.extend(collect_files(&nested)?);
        } else {
            std::fs::metadata(path).map_err(io)?;
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_resource_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [".ndjson", ".ndjson.gz", ".jsonl", ".json"].iter().any(|ext| name.ends_with(ext))
}

fn open(path: &Path) -> Result<Box<dyn Read + Send>, LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Reads every file into one stream of batches: batches run across file boundaries, so many
/// small files still make few large transactions.
fn read_all(files: &[PathBuf], tx: &mpsc::Sender<Item>, validation: Validation) -> Result<(), LoadError> {
    let mut batcher = Batcher::new(tx);
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let sent = if name.ends_with(".json") {
            read_bundle(path, &mut batcher, validation)?
        } else {
            read_ndjson(path, &mut batcher, validation)?
        };
        if !sent {
            return Ok(()); // the writer stopped (a database error); it reports why
        }
    }
    batcher.flush();
    Ok(())
}

/// Batches that flush before a resource would repeat a key (each batch writes a key once) or
/// pass the size bounds.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<Item>,
    batch: Vec<Write>,
    keys: HashSet<(String, String)>,
    bytes: usize,
}

impl<'a> Batcher<'a> {
    fn new(tx: &'a mpsc::Sender<Item>) -> Self {
        Self { tx, batch: Vec::new(), keys: HashSet::new(), bytes: 0 }
    }

    fn push(&mut self, write: Write) -> bool {
        let (resource_type, id) = key_of(&write);
        let key = (resource_type.to_string(), id.to_string());
        if self.keys.contains(&key) && !self.flush() {
            return false;
        }
        self.keys.insert(key);
        self.bytes += match &write {
            Write::Save(resource) => resource.text_len(),
            Write::Delete { .. } => 0,
        };
        self.batch.push(write);
        if self.batch.len() >= BATCH_RESOURCES || self.bytes >= BATCH_BYTES {
            return self.flush();
        }
        true
    }

    fn fail(&self, failure: LoadFailure) -> bool {
        self.tx.blocking_send(Item::Failure(failure)).is_ok()
    }

    fn flush(&mut self) -> bool {
        self.keys.clear();
        self.bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        batch.is_empty() || self.tx.blocking_send(Item::Batch(batch)).is_ok()
    }
}

fn read_ndjson(path: &Path, batcher: &mut Batcher, validation: Validation) -> Result<bool, LoadError> {
    let mut reader = BufReader::with_capacity(1 << 20, open(path)?);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ok = match Resource::parse(&line, validation) {
            Ok(resource) => batcher.push(Write::Save(resource)),
            Err(e) => batcher.fail(LoadFailure { file: path.to_owned(), location: format!("line {number}"), reason: e.to_string() }),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A Bundle file: a transaction is written atomically on its own, DELETE entries included; the
/// entries of a batch or collection are loaded like NDJSON lines. A single resource file is
/// loaded as it is.
fn read_bundle(path: &Path, batcher: &mut Batcher, validation: Validation) -> Result<bool, LoadError> {
    let mut text = Vec::new();
    open(path)?.read_to_end(&mut text).map_err(|source| LoadError::Io { path: path.to_owned(), source })?;
    let failure = |location: &str, reason: String| LoadFailure { file: path.to_owned(), location: location.to_owned(), reason };
    let value: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return Ok(batcher.fail(failure("file", format!("the file is not valid JSON: {e}")))),
    };
    if value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Ok(match Resource::from_value(value, validation) {
            Ok(r) => batcher.push(Write::Save(r)),
            Err(e) => batcher.fail(failure("file", e.to_string())),
        });
    }
    match value.get("type").and_then(Value::as_str) {
        Some("transaction") | Some("batch") => {
            let kind_is_transaction = value.get("type").and_then(Value::as_str) == Some("transaction");
            let request = match bundle::read(value, validation) {
                Ok(r) => r,
                Err(e) => return Ok(batcher.fail(failure("file", e.to_string()))),
            };
            let mut writes = Vec::new();
            for entry in request.entries {
                match entry {
                    Ok(bundle::EntryOp::Save { resource, .. }) => writes.push(Write::Save(resource)),
                    Ok(bundle::EntryOp::Delete { resource_type, id }) => writes.push(Write::Delete { resource_type, id }),
                    Err(reason) if kind_is_transaction => {
                        return Ok(batcher.fail(failure("file", format!("transaction not loaded: {reason}"))));
                    }
                    Err(reason) => {
                        batcher.fail(failure("entry", reason.to_string()));
                    }
                }
            }
            if kind_is_transaction {
                // All of the transaction in one batch of its own, so it is written atomically.
                if !batcher.flush() {
                    return Ok(false);
                }
                batcher.batch = writes;
                return Ok(batcher.flush());
            }
            for write in writes {
                if !batcher.push(write) {
                    return Ok(false);
                }
            }
        }
        _ => {
            let entries = value.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, entry) in entries.into_iter().enumerate() {
                let Some(resource) = entry.get("resource").cloned() else { continue };
                let ok = match Resource::from_value(resource, validation) {
                    Ok(r) => batcher.push(Write::Save(r)),
                    Err(e) => batcher.fail(failure(&format!("entry {i}"), e.to_string())),
                };
                if !ok {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}
