//! The server's anonymization key: seals a job's configuration (which holds the engine's keys)
//! for its row, with AES-256-GCM (aws-lc-rs, already the server's crypto library), bound to
//! the job's id so a sealed configuration opens for its own job only.
//!
//! The key is 32 random bytes, kept hex-encoded in `anonymization_key_file`: made on the first
//! start (mode 0600) when missing. Every node of a deployment must use the same file; a node
//! with another key cannot open a job's configuration, and says so.

use std::{io::Write, path::{Path, PathBuf}};

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};

use crate::model::job::JobId;

/// A sealed configuration starts with this byte: the format of what follows (nonce, then
/// ciphertext and tag), so another format can come later.
const FORMAT: u8 = 1;
const KEY_BYTES: usize = 32;

pub struct ConfigKey {
    key: RandomizedNonceKey,
    /// The file the key came from, for messages (never the key).
    file: PathBuf,
}

impl std::fmt::Debug for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigKey").field("file", &self.file).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl ConfigKey {
    /// Reads the key file, or makes one (0600, its folder too) when there is none yet.
    pub fn load_or_create(file: &Path) -> Result<Self, KeyError> {
        let failed = |what: &str, e: std::io::Error| KeyError(format!("anonymization_key_file {}: cannot {what}: {e}", file.display()));
        let hex = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_BYTES];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError("no random bytes for the anonymization key".into()))?;
                let hex = hex::encode(bytes);
                if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| failed("create its folder", e))?;
                }
                match create_private(file) {
                    Ok(mut out) => {
                        out.write_all(format!("{hex}\n").as_bytes()).map_err(|e| failed("write it", e))?;
                        tracing::info!(file = %file.display(), "made a new anonymization key; every node of this deployment must use this file");
                        hex
                    }
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(file).map_err(|e| failed("read it", e))?,
                    Err(e) => return Err(failed("create it", e)),
                }
            }
            Err(e) => return Err(failed("read it", e)),
        };
        let bytes = hex::decode(hex.trim())
            .ok()
            .filter(|b| b.len() == KEY_BYTES)
            .ok_or_else(|| KeyError(format!("anonymization_key_file {}: must hold {KEY_BYTES} bytes as {} hex digits", file.display(), KEY_BYTES * 2)))?;
        Self::from_bytes(&bytes, file)
    }

    fn from_bytes(bytes: &[u8], file: &Path) -> Result<Self, KeyError> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError("the anonymization key is not an AES-256 key".into()))?;
        Ok(Self { key, file: file.to_owned() })
    }

    /// Seals a configuration for one job.
    pub fn seal(&self, job: JobId, plain: &[u8]) -> Vec<u8> {
        let mut in_out = plain.to_vec();
        let nonce = self.key.seal_in_place_append_tag(Aad::from(job.0.as_bytes()), &mut in_out).expect("AES-GCM seals any input");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Opens a configuration sealed for `job`; the error says why in words for the job's
    /// OperationOutcome.
    pub fn open(&self, job: JobId, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let unreadable = || {
            format!(
                "its de-identification configuration cannot be decrypted with this node's anonymization key ({}); every node must use the same anonymization_key_file",
                self.file.display()
            )
        };
        let (format, rest) = sealed.split_first().ok_or_else(unreadable)?;
        if *format != FORMAT || rest.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(job.0.as_bytes()), &mut in_out).map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

#[cfg(unix)]
fn create_private(file: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file)
}

#[cfg(not(unix))]
fn create_private(file: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(file)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_file_is_private_and_the_same_key_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data/anonymization.key");
        let key = ConfigKey::load_or_create(&file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let job = JobId::new();
        let sealed = key.seal(job, b"{\"parameters\":{\"cryptoHashKey\":\"secret\"}}");
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"));
        let again = ConfigKey::load_or_create(&file).unwrap();
        assert_eq!(again.open(job, &sealed).unwrap(), b"{\"parameters\":{\"cryptoHashKey\":\"secret\"}}");
    }

    #[test]
    fn another_key_or_another_job_cannot_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = ConfigKey::load_or_create(&dir.path().join("a.key")).unwrap();
        let other = ConfigKey::load_or_create(&dir.path().join("b.key")).unwrap();
        let job = JobId::new();
        let sealed = key.seal(job, b"config");
        assert!(other.open(job, &sealed).unwrap_err().contains("anonymization_key_file"));
        assert!(key.open(JobId::new(), &sealed).is_err());
        assert!(key.open(job, &sealed[..5]).is_err());
    }

    #[test]
    fn a_key_file_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("short.key");
        std::fs::write(&file, "abcd\n").unwrap();
        assert!(ConfigKey::load_or_create(&file).unwrap_err().0.contains("64 hex digits"));
    }
}
