//! The anonymization configuration store beside the export destination: on Azure the container
//! `anonymization` of the export storage account, on S3 the prefix `anonymization/` of the
//! bucket, locally the folder `anonymization_dir`. A read gives the file and its ETag: the
//! object's ETag (quotes removed), or locally the SHA-256 of the content in hex.

use std::path::PathBuf;

use bytes::Bytes;
use object_store::ObjectStoreExt;

use super::{Output, OutputError, Place};

/// The Azure container, and the S3 prefix, of the configurations.
pub const CONFIG_FOLDER: &str = "anonymization";

/// A configuration file is a few kilobytes; anything past this is not one.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Clone)]
pub struct ConfigStore {
    output: Output,
    local_dir: PathBuf,
}

pub struct StoredConfig {
    pub bytes: Bytes,
    pub etag: String,
}

/// Why a configuration could not be read, in words for the client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReadError {
    #[error("there is no configuration '{name}' in {store}")]
    Missing { name: String, store: String },
    #[error("configuration '{name}' in {store} is {bytes} bytes; a configuration may have at most {MAX_CONFIG_BYTES}")]
    TooLarge { name: String, store: String, bytes: u64 },
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl ConfigStore {
    /// The store beside `output`; `local_dir` is used when the destination is local.
    pub fn new(output: Output, local_dir: PathBuf) -> Self {
        Self { output, local_dir }
    }

    /// Where configurations are looked for, in words for messages (no server path).
    pub fn describe(&self) -> String {
        match &self.output.place {
            Place::Local { .. } => "the server's anonymization folder (anonymization_dir)".to_owned(),
            Place::Azure(azure) => azure.describe(CONFIG_FOLDER),
            Place::S3 { bucket, .. } => format!("S3 bucket '{bucket}' under {CONFIG_FOLDER}/"),
        }
    }

    /// Reads one configuration. `name` must be a plain file name (the request checked it).
    pub async fn read(&self, name: &str) -> Result<StoredConfig, ConfigReadError> {
        assert!(!name.contains(['/', '\\']) && !name.starts_with('.'), "configuration names are checked at parse");
        let missing = || ConfigReadError::Missing { name: name.to_owned(), store: self.describe() };
        let too_large = |bytes| ConfigReadError::TooLarge { name: name.to_owned(), store: self.describe(), bytes };
        if let Place::Local { .. } = self.output.place {
            let path = self.local_dir.join(name);
            let read = async {
                let size = tokio::fs::metadata(&path).await?.len();
                if size > MAX_CONFIG_BYTES {
                    return Ok(Err(too_large(size)));
                }
                tokio::fs::read(&path).await.map(Ok)
            };
            return match read.await {
                Ok(Ok(bytes)) => {
                    let etag = content_hash(&bytes);
                    Ok(StoredConfig { bytes: bytes.into(), etag })
                }
                Ok(Err(e)) => Err(e),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory) => Err(missing()),
                Err(source) => Err(OutputError::Directory { path: self.local_dir.display().to_string(), source }.into()),
            };
        }
        let key = format!("{CONFIG_FOLDER}/{name}");
        let (store, path, destination) = self.output.locate(&key, false).await?;
        let action = format!("reading configuration '{name}'");
        let result = match store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(missing()),
            Err(e) => return Err(OutputError::store(&destination, &action, e).into()),
        };
        if result.meta.size > MAX_CONFIG_BYTES {
            return Err(too_large(result.meta.size));
        }
        let etag = result.meta.e_tag.as_deref().map(unquoted).unwrap_or_default().to_owned();
        let bytes = result.bytes().await.map_err(|e| OutputError::store(&destination, &action, e))?;
        Ok(StoredConfig { bytes, etag })
    }
}

/// The local ETag: SHA-256 of the content, in hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex::encode(digest.as_ref())
}

/// Whether an ETag a client gave names the stored one: weak marks and quotes do not count
/// (clients copy ETags with or without the quotes HTTP puts around them).
pub fn etag_matches(given: &str, stored: &str) -> bool {
    unquoted(given) == unquoted(stored)
}

fn unquoted(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.strip_prefix('"').and_then(|e| e.strip_suffix('"')).unwrap_or(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_with_or_without_quotes() {
        assert!(etag_matches("\"0x8DC1\"", "0x8DC1"));
        assert!(etag_matches("0x8DC1", "\"0x8DC1\""));
        assert!(etag_matches("W/\"abc\"", "abc"));
        assert!(!etag_matches("abc", "abd"));
    }

    #[tokio::test]
    async fn local_reads_give_the_content_hash_and_name_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let output = Output::local(&dir.path().join("out"), 1024 * 1024).unwrap();
        let store = ConfigStore::new(output, dir.path().join("anonymization"));
        std::fs::create_dir_all(dir.path().join("anonymization")).unwrap();
        std::fs::write(dir.path().join("anonymization/c.json"), b"{}").unwrap();
        let read = store.read("c.json").await.unwrap();
        assert_eq!(read.etag, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert!(matches!(store.read("d.json").await, Err(ConfigReadError::Missing { name, .. }) if name == "d.json"));
        std::fs::write(dir.path().join("anonymization/big.json"), vec![b' '; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(store.read("big.json").await, Err(ConfigReadError::TooLarge { .. })));
    }
}
