//! Where export files go: one `object_store` interface over a local directory, Azure Blob
//! Storage or an S3 bucket, chosen by configuration. Files are written as streamed multipart
//! uploads (Azure: blocks committed by a block list), so memory per open file is bounded by the
//! part size. Manifest URLs are either signed (SAS, presigned) or served by this server.

mod azure;
pub mod config_store;
mod direct;
mod error;
mod metered;
pub mod settings;

use std::{path::Path as FsPath, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use object_store::{
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    path::Path,
    signer::Signer,
    MultipartUpload, ObjectStore, ObjectStoreExt, WriteMultipart,
};

pub use config_store::ConfigStore;
pub use error::OutputError;
pub use settings::{Destination, OutputSettings, OutputSettingsError, Secret, UrlMode};

/// Uploads in flight per open file; with the part size this bounds an open file's memory.
const MAX_PARTS_IN_FLIGHT: usize = 2;

const S3_MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of a local file are positioned writes, with no cost per request to spread: small
/// parts keep what an open file holds small; larger ones made peak RSS grow with the database
/// (figures: docs/performance.md).
/// A multiple of the direct-I/O block, so that every part but a file's last goes direct.
const LOCAL_MAX_PART_SIZE: usize = 256 * direct::ALIGN;

const NDJSON: &str = "application/fhir+ndjson";

#[derive(Clone)]
pub struct Output {
    place: Place,
    part_size: usize,
    url_mode: UrlMode,
}

#[derive(Clone)]
enum Place {
    /// Reads, listings and deletes go through object_store; writes through [`direct`].
    Local { store: Arc<LocalFileSystem>, root: String },
    /// Keys are `{container}/{path}`: the first segment names the Azure container.
    Azure(Arc<azure::Azure>),
    /// Keys are used as they are: a container is a top-level prefix in the bucket.
    S3 { store: Arc<AmazonS3>, bucket: String },
}

impl Output {
    /// Files under a local directory (created if missing), served by this server.
    pub fn local(root: &FsPath, part_size: usize) -> Result<Self, OutputError> {
        let directory = |source| OutputError::Directory { path: root.display().to_string(), source };
        std::fs::create_dir_all(root).map_err(directory)?;
        let root = root.canonicalize().map_err(directory)?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| OutputError::Config(format!("output directory '{}': {e}", root.display())))?
            .with_automatic_cleanup(true);
        let place = Place::Local { store: Arc::new(store), root: root.display().to_string() };
        let part_size = (part_size.min(LOCAL_MAX_PART_SIZE) / direct::ALIGN).max(1) * direct::ALIGN;
        Ok(Self { place, part_size, url_mode: UrlMode::Proxy })
    }

    /// The destination the settings name (`output_dir` is used by the local one).
    pub fn from_settings(settings: &OutputSettings, output_dir: &FsPath, part_size: usize) -> Result<Self, OutputError> {
        settings.validate()?;
        let (place, part_size) = match settings.destination {
            Destination::Local => return Self::local(output_dir, part_size),
            Destination::Azure => (Place::Azure(Arc::new(azure::Azure::new(settings)?)), part_size),
            // S3 refuses parts under 5 MiB (all but the last of a multipart upload).
            Destination::S3 => {
                (Place::S3 { store: Arc::new(s3(settings)?), bucket: settings.s3_bucket.clone() }, part_size.max(S3_MIN_PART_SIZE))
            }
        };
        Ok(Self { place, part_size, url_mode: settings.url_mode() })
    }

    pub fn url_mode(&self) -> UrlMode {
        self.url_mode
    }

    /// The key of a folder: `{container}/{name}` in a container, else `{name}`. On Azure the
    /// latter is a container of its own, so it is lowercased to a valid container name.
    pub fn folder_key(&self, container: Option<&str>, name: &str) -> String {
        match (container, &self.place) {
            (Some(container), _) => format!("{container}/{name}"),
            (None, Place::Azure(_)) => name.to_lowercase(),
            (None, _) => name.to_owned(),
        }
    }

    /// Where `key` lives: the store, the path in it, and the destination in words.
    async fn locate(&self, key: &str, create_container: bool) -> Result<(Arc<dyn ObjectStore>, Path, String), OutputError> {
        match &self.place {
            Place::Local { store, .. } => Ok((store.clone() as _, Path::from(key), "the output directory".to_owned())),
            Place::S3 { store, bucket } => Ok((store.clone(), Path::from(key), format!("S3 bucket '{bucket}'"))),
            Place::Azure(azure) => {
                let (container, rest) = key.split_once('/').unwrap_or((key, ""));
                if create_container {
                    azure.ensure_container(container).await?;
                }
                Ok((azure.store(container)?, Path::from(rest), azure.describe(container)))
            }
        }
    }

    pub async fn create(&self, key: &str) -> Result<OutputFile, OutputError> {
        let (store, path, destination) = self.locate(key, true).await?;
        let action = format!("writing {key}");
        let error = |e| OutputError::store(&destination, &action, e);
        let upload: Box<dyn MultipartUpload> = match &self.place {
            Place::Local { store, .. } => {
                let file = store.path_to_filesystem(&path).map_err(error)?;
                Box::new(direct::DirectUpload::create(file).await.map_err(error)?)
            }
            _ => {
                // Signed URLs are fetched from the store directly: the blob carries the NDJSON type.
                let mut options = object_store::PutMultipartOptions::default();
                options.attributes.insert(object_store::Attribute::ContentType, NDJSON.into());
                store.put_multipart_opts(&path, options).await.map_err(error)?
            }
        };
        Ok(OutputFile { upload: WriteMultipart::new_with_chunk_size(upload, self.part_size), bytes: 0, destination, action })
    }

    /// The size and content of a file.
    pub async fn read(&self, key: &str) -> Result<(u64, BoxStream<'static, Result<Bytes, OutputError>>), OutputError> {
        let (store, path, destination) = self.locate(key, false).await?;
        let action = format!("reading {key}");
        let result = store.get(&path).await.map_err(|e| OutputError::store(&destination, &action, e))?;
        let size = result.meta.size;
        Ok((size, result.into_stream().map_err(move |e| OutputError::store(&destination, &action, e)).boxed()))
    }

    /// A signed URL for a file, valid for `valid_for`; None when files are served by proxy.
    pub async fn signed_url(&self, key: &str, valid_for: Duration) -> Result<Option<String>, OutputError> {
        if self.url_mode != UrlMode::Signed {
            return Ok(None);
        }
        let action = format!("signing a URL for {key}");
        let (signer, path, destination): (Arc<dyn Signer>, Path, String) = match &self.place {
            Place::Local { .. } => return Ok(None),
            Place::S3 { store, bucket } => (store.clone(), Path::from(key), format!("S3 bucket '{bucket}'")),
            Place::Azure(azure) => {
                let (container, rest) = key.split_once('/').unwrap_or((key, ""));
                (azure.store(container)?, Path::from(rest), azure.describe(container))
            }
        };
        let url = signer.signed_url(http::Method::GET, &path, valid_for).await.map_err(|e| OutputError::store(&destination, &action, e))?;
        Ok(Some(url.to_string()))
    }

    /// Writes and deletes a small object: the destination takes writes now (readiness).
    pub async fn probe_writable(&self) -> Result<(), OutputError> {
        let name = format!("probe-{}", uuid::Uuid::new_v4().simple());
        let key = match &self.place {
            Place::Local { root, .. } => {
                let directory = |source| OutputError::Directory { path: root.clone(), source };
                let path = FsPath::new(root).join(format!(".{name}"));
                tokio::fs::write(&path, b"").await.map_err(directory)?;
                return tokio::fs::remove_file(&path).await.map_err(directory);
            }
            // An Azure key starts with its container: the probes get one of their own.
            Place::Azure(_) => format!("bulkfhir-readiness/{name}"),
            Place::S3 { .. } => format!(".bulkfhir-readiness/{name}"),
        };
        let (store, path, destination) = self.locate(&key, true).await?;
        let error = |e| OutputError::store(&destination, "writing a readiness probe", e);
        store.put(&path, object_store::PutPayload::from_static(b"ready")).await.map_err(error)?;
        store.delete(&path).await.map_err(error)
    }

    /// Deletes every file under a job's folder (on Azure, a container made for the job goes
    /// too), and succeeds only when nothing is left. Several nodes' janitors may delete the same
    /// folder at once: a file already gone counts as deleted, and one failure does not stop the
    /// other deletes.
    pub async fn delete_folder(&self, folder: &str) -> Result<(), OutputError> {
        match &self.place {
            Place::Azure(azure) if !folder.contains('/') => return azure.delete_container(folder).await,
            // The local listing skips staging files (`Patient-1.ndjson#1`) that a killed attempt
            // left behind: the folder is removed from the file system instead.
            Place::Local { root, .. } => {
                let (root, folder_path) = (FsPath::new(root).to_owned(), FsPath::new(root).join(folder));
                let failed = |source| OutputError::Directory { path: folder.to_owned(), source };
                return crate::low_priority_runtime::spawn_blocking(move || remove_tree(&root, &folder_path))
                    .await
                    .map_err(|e| failed(std::io::Error::other(e)))?
                    .map_err(failed);
            }
            _ => {}
        }
        let (store, prefix, destination) = self.locate(folder, false).await?;
        let action = format!("deleting {folder}");
        let locations = store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let mut deletes = store.delete_stream(locations);
        let mut first_error = None;
        while let Some(deleted) = deletes.next().await {
            match deleted {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(OutputError::store(&destination, &action, e));
        }
        match store.list(Some(&prefix)).try_next().await {
            Ok(None) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Ok(Some(left)) => Err(OutputError::Storage { destination, action, reason: format!("{} is still there", left.location) }),
            Err(e) => Err(OutputError::store(&destination, &action, e)),
        }
    }
}

/// Removes `folder` and all it holds, then its parents up to `root` that are left empty. A file
/// or folder that is already gone counts as removed (another node may remove the same tree).
fn remove_tree(root: &FsPath, folder: &FsPath) -> std::io::Result<()> {
    use std::io::ErrorKind::NotFound;
    let gone = |result: std::io::Result<()>| match result {
        Err(e) if e.kind() == NotFound => Ok(()),
        other => other,
    };
    let entries = match std::fs::read_dir(folder) {
        Err(e) if e.kind() == NotFound => return Ok(()),
        entries => entries?,
    };
    for entry in entries {
        let entry = entry?;
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => remove_tree(folder, &entry.path())?,
            Ok(_) => gone(std::fs::remove_file(entry.path()))?,
            Err(e) if e.kind() == NotFound => {}
            Err(e) => return Err(e),
        }
    }
    gone(std::fs::remove_dir(folder))?;
    // Parents such as a `_container` folder go when empty; a parent still in use stays.
    let mut parent = folder.parent();
    while let Some(dir) = parent.filter(|dir| dir.starts_with(root) && *dir != root) {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        parent = dir.parent();
    }
    Ok(())
}

fn s3(settings: &OutputSettings) -> Result<AmazonS3, OutputError> {
    let options = crate::https::object_store_trust(object_store::ClientOptions::new()).with_timeout(settings.request_timeout());
    // from_env picks up the AWS default chain (AWS_* variables, web identity, instance metadata).
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&settings.s3_bucket)
        .with_client_options(options)
        .with_retry(settings.retry())
        .with_http_connector(metered::Metered::new("s3"));
    if !settings.s3_region.is_empty() {
        builder = builder.with_region(&settings.s3_region);
    }
    if !settings.s3_endpoint.is_empty() {
        builder = builder
            .with_endpoint(&settings.s3_endpoint)
            .with_allow_http(settings.s3_endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    if !settings.s3_access_key_id.is_empty() {
        builder = builder
            .with_access_key_id(&settings.s3_access_key_id)
            .with_secret_access_key(settings.s3_secret_access_key.expose());
    }
    builder
        .build()
        .map_err(|e| OutputError::Config(format!("S3 bucket '{}': {}", settings.s3_bucket, error::plain_reason(&e))))
}

/// A file being written. Nothing is visible under its key until `finish`.
pub struct OutputFile {
    upload: WriteMultipart,
    bytes: u64,
    destination: String,
    action: String,
}

impl OutputFile {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), OutputError> {
        self.upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await.map_err(|e| self.error(e))?;
        self.upload.write(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Like `write`, without copying: the part being filled keeps `data` as it is.
    pub async fn put(&mut self, data: Bytes) -> Result<(), OutputError> {
        self.upload.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await.map_err(|e| self.error(e))?;
        self.bytes += data.len() as u64;
        self.upload.put(data);
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub async fn finish(self) -> Result<(), OutputError> {
        let (destination, action) = (self.destination, self.action);
        self.upload.finish().await.map_err(|e| OutputError::store(&destination, &action, e))?;
        Ok(())
    }

    pub async fn abort(self) -> Result<(), OutputError> {
        let (destination, action) = (self.destination, self.action);
        self.upload.abort().await.map_err(|e| OutputError::store(&destination, &action, e))?;
        Ok(())
    }

    fn error(&self, e: object_store::Error) -> OutputError {
        OutputError::store(&self.destination, &self.action, e)
    }
}
