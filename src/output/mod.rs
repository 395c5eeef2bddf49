//! Where export files go: one `object_store` handle (a local directory now; Azure Blob and S3
//! are the same interface). Files are written as streamed multipart uploads, so memory per open
//! file is bounded by the part size.

use std::{path::Path as FsPath, sync::Arc};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use object_store::{local::LocalFileSystem, path::Path, ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::export::JobId;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output storage error: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot use output directory '{path}': {source}")]
    Directory { path: String, source: std::io::Error },
}

/// Uploads in flight per open file; with the part size this bounds an open file's memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Output {
    store: Arc<dyn ObjectStore>,
    part_size: usize,
}

impl Output {
    /// Files under a local directory (created if missing).
    pub fn local(root: &FsPath, part_size: usize) -> Result<Self, OutputError> {
        let directory = |source| OutputError::Directory { path: root.display().to_string(), source };
        std::fs::create_dir_all(root).map_err(directory)?;
        let root = root.canonicalize().map_err(directory)?;
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Self { store: Arc::new(store), part_size })
    }

    /// The folder of one job: `[container/]{yyyyMMddTHHmmss}-{jobId}`, as in the seed system.
    pub fn job_folder(container: Option<&str>, transaction_time: DateTime<Utc>, job: JobId) -> String {
        let folder = format!("{}-{job}", transaction_time.format("%Y%m%dT%H%M%S"));
        match container {
            Some(container) => format!("{container}/{folder}"),
            None => folder,
        }
    }

    pub async fn create(&self, key: &str) -> Result<OutputFile, OutputError> {
        let upload = self.store.put_multipart(&Path::from(key)).await?;
        Ok(OutputFile { upload: WriteMultipart::new_with_chunk_size(upload, self.part_size), bytes: 0 })
    }

    /// The size and content of a file.
    pub async fn read(&self, key: &str) -> Result<(u64, BoxStream<'static, Result<Bytes, OutputError>>), OutputError> {
        let result = self.store.get(&Path::from(key)).await?;
        let size = result.meta.size;
        Ok((size, result.into_stream().map_err(OutputError::from).boxed()))
    }

    /// Deletes every file under a folder.
    pub async fn delete_folder(&self, folder: &str) -> Result<(), OutputError> {
        let prefix = Path::from(folder);
        let locations = self.store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        self.store
            .delete_stream(locations)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(e.into()),
            })
    }
}

/// A file being written. Nothing is visible under its key until `finish`.
pub struct OutputFile {
    upload: WriteMultipart,
    bytes: u64,
}

impl OutputFile {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), OutputError> {
        self.upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
        self.upload.write(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub async fn finish(self) -> Result<(), OutputError> {
        self.upload.finish().await?;
        Ok(())
    }

    pub async fn abort(self) -> Result<(), OutputError> {
        self.upload.abort().await?;
        Ok(())
    }
}
