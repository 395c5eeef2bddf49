//! Local export files written around the page cache (`O_DIRECT` on Linux).
//!
//! An export writes each byte once and a client reads it later, perhaps much later. Through the
//! page cache, a large export fills memory with its own files and pushes out the database's
//! pages (SQLite keeps its data only there), and every new page must be allocated first, slow
//! on a VM whose host reclaims freed guest memory (figures: docs/performance.md). So whole
//! blocks go straight to the disk; a part's unaligned remainder (the file's last bytes) goes
//! through the cache.
//!
//! Same protocol as object_store's local uploads: parts are positioned writes into a staging
//! file `{dest}#{n}`, which `complete` renames into place, so a reader never sees half a file.

use std::{
    fs::{File, OpenOptions},
    io::{self, ErrorKind},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures::FutureExt;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// Direct I/O wants offsets, lengths and buffers aligned to the device's logical block size:
/// 4096 covers both 512- and 4096-byte devices.
pub const ALIGN: usize = 4096;

#[derive(Debug)]
pub struct DirectUpload {
    state: Arc<State>,
    /// The staging file, until it is renamed into place or removed.
    staging: Option<PathBuf>,
    /// Where the next part goes.
    offset: u64,
}

#[derive(Debug)]
struct State {
    dest: PathBuf,
    /// The staging file opened for buffered writes: unaligned remainders, and everything when
    /// the file system refuses direct I/O (tmpfs before Linux 6.6, some network file systems).
    buffered: File,
    direct: Option<File>,
    /// Aligned copies of parts, reused: at most one per part in flight.
    spare: Mutex<Vec<AlignedBuffer>>,
}

impl DirectUpload {
    /// Creates the staging file for `dest` (and `dest`'s folders).
    pub async fn create(dest: PathBuf) -> object_store::Result<Self> {
        blocking(move || {
            let (buffered, staging) = create_staging(&dest)?;
            let direct = open_direct(&staging);
            let state = State { dest, buffered, direct, spare: Mutex::new(Vec::new()) };
            Ok(Self { state: Arc::new(state), staging: Some(staging), offset: 0 })
        })
        .await
    }

    /// Whether whole blocks bypass the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.state.direct.is_some()
    }
}

#[async_trait]
impl MultipartUpload for DirectUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let state = self.state.clone();
        blocking(move || state.write_part(offset, &data)).boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let staging = self.staging.take().ok_or_else(|| io_error(ErrorKind::NotFound.into()))?;
        let state = self.state.clone();
        blocking(move || {
            // Durable before the manifest lists it: the direct writes are on the device; this
            // flushes the remainder, the length and the device's write cache, then the rename.
            state.buffered.sync_data()?;
            std::fs::rename(&staging, &state.dest)?;
            if let Some(folder) = state.dest.parent() {
                File::open(folder)?.sync_all()?;
            }
            Ok(PutResult { e_tag: None, version: None, extensions: Default::default() })
        })
        .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        match self.staging.take() {
            Some(staging) => blocking(move || std::fs::remove_file(staging)).await,
            None => Ok(()),
        }
    }
}

impl Drop for DirectUpload {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            let _ = std::fs::remove_file(staging);
        }
    }
}

impl State {
    fn write_part(&self, offset: u64, data: &PutPayload) -> io::Result<()> {
        let length = data.content_length();
        // Whole blocks go direct when the part starts on a block boundary (every part but a
        // file's last is a multiple of the part size, itself a multiple of ALIGN).
        let whole = match &self.direct {
            Some(_) if offset.is_multiple_of(ALIGN as u64) => length / ALIGN * ALIGN,
            _ => 0,
        };
        if let (Some(direct), true) = (&self.direct, whole > 0) {
            let mut buffer = self.spare.lock().expect("not poisoned").pop().unwrap_or_default();
            let block = buffer.filled_from(data, whole);
            let written = match direct.write_all_at(block, offset) {
                // Some file systems take O_DIRECT at open and refuse the write (a block size
                // above ALIGN, say): the same bytes go through the cache instead.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.buffered.write_all_at(block, offset),
                written => written,
            };
            self.spare.lock().expect("not poisoned").push(buffer);
            written?;
        }
        let mut at = offset + whole as u64;
        for chunk in skip(data, whole) {
            self.buffered.write_all_at(chunk, at)?;
            at += chunk.len() as u64;
        }
        Ok(())
    }
}

/// The payload's slices after its first `n` bytes.
fn skip(data: &PutPayload, mut n: usize) -> impl Iterator<Item = &[u8]> {
    data.iter().filter_map(move |chunk| {
        let from = n.min(chunk.len());
        n -= from;
        (from < chunk.len()).then(|| &chunk[from..])
    })
}

/// A byte buffer whose contents start on an ALIGN boundary, without unsafe code: the vector is
/// over-allocated by ALIGN and the aligned window is taken inside it.
#[derive(Debug, Default)]
struct AlignedBuffer(Vec<u8>);

impl AlignedBuffer {
    /// The payload's first `n` bytes, copied into the aligned window.
    fn filled_from(&mut self, data: &PutPayload, n: usize) -> &[u8] {
        if self.0.len() < n + ALIGN {
            self.0 = vec![0; n + ALIGN];
        }
        let start = self.0.as_ptr().align_offset(ALIGN);
        let window = &mut self.0[start..start + n];
        let mut filled = 0;
        for chunk in data.iter() {
            let take = chunk.len().min(n - filled);
            window[filled..filled + take].copy_from_slice(&chunk[..take]);
            filled += take;
            if filled == n {
                break;
            }
        }
        window
    }
}

/// A new staging file `{dest}#{n}` (the first free n), creating `dest`'s folders if missing.
fn create_staging(dest: &Path) -> io::Result<(File, PathBuf)> {
    for n in 1.. {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match OpenOptions::new().write(true).create_new(true).open(&staging) {
            Ok(file) => return Ok((file, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::create_dir_all(dest.parent().unwrap_or(Path::new(".")))?;
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("an unbounded range")
}

/// The staging file opened a second time for direct I/O; None where that is refused.
fn open_direct(staging: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(staging) {
        Ok(file) => return Some(file),
        Err(e) => tracing::debug!(error = %e, "direct I/O refused; writing through the page cache"),
    }
    None
}

/// File work runs on the background threads, below the priority of request handling.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> object_store::Result<T> {
    crate::low_priority_runtime::spawn_blocking(f).await.map_err(|e| io_error(io::Error::other(e)))?.map_err(io_error)
}

fn io_error(source: io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(parts: &[&[u8]]) -> PutPayload {
        parts.iter().map(|p| bytes::Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn skip_drops_the_first_bytes_across_slices() {
        let data = payload(&[b"abc", b"defg", b"h"]);
        let rest: Vec<u8> = skip(&data, 5).flatten().copied().collect();
        assert_eq!(rest, b"fgh");
        assert_eq!(skip(&data, 8).count(), 0);
    }

    #[test]
    fn an_aligned_buffer_starts_on_a_block_boundary_and_holds_the_payload() {
        let data = payload(&[&[1; 3000], &[2; 3000]]);
        let mut buffer = AlignedBuffer::default();
        let block = buffer.filled_from(&data, ALIGN);
        assert_eq!(block.as_ptr() as usize % ALIGN, 0);
        assert_eq!(block.len(), ALIGN);
        assert!(block[..3000].iter().all(|&b| b == 1) && block[3000..].iter().all(|&b| b == 2));
    }

    /// Parts of whole blocks, written out of order, then a short last part: the file holds
    /// every byte in place, and only after `complete`.
    #[tokio::test]
    async fn parts_land_at_their_offsets_and_the_file_appears_on_complete() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("job/Patient-1.ndjson");
        let mut upload = DirectUpload::create(dest.clone()).await.unwrap();
        // Checks that the direct path is taken at all. It fails where the temporary directory
        // refuses direct I/O (tmpfs before Linux 6.6): run with TMPDIR on a disk there.
        assert!(upload.is_direct(), "direct I/O refused in {}", dir.path().display());
        let first = upload.put_part(payload(&[&[b'a'; ALIGN], &[b'b'; ALIGN]]));
        let second = upload.put_part(payload(&[&[b'c'; ALIGN * 2]]));
        let last = upload.put_part(payload(&[b"tail\n"]));
        last.await.unwrap();
        second.await.unwrap();
        first.await.unwrap();
        assert!(!dest.exists());
        upload.complete().await.unwrap();
        let written = std::fs::read(&dest).unwrap();
        let expected = [vec![b'a'; ALIGN], vec![b'b'; ALIGN], vec![b'c'; ALIGN * 2], b"tail\n".to_vec()].concat();
        assert_eq!(written, expected);
        let left: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["Patient-1.ndjson"]);
    }

    /// A part that does not start on a block boundary is written through the cache.
    #[tokio::test]
    async fn unaligned_parts_are_written_too() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("odd.ndjson");
        let mut upload = DirectUpload::create(dest.clone()).await.unwrap();
        upload.put_part(payload(&[b"12345"])).await.unwrap();
        upload.put_part(payload(&[&[b'x'; ALIGN + 7]])).await.unwrap();
        upload.complete().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), [b"12345".to_vec(), vec![b'x'; ALIGN + 7]].concat());
    }

    #[tokio::test]
    async fn abort_and_drop_remove_the_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut aborted = DirectUpload::create(dir.path().join("a.ndjson")).await.unwrap();
        aborted.put_part(payload(&[b"a"])).await.unwrap();
        aborted.abort().await.unwrap();
        drop(DirectUpload::create(dir.path().join("b.ndjson")).await.unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
