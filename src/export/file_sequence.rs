//! The numbered files one roller writes, `{stem}-{n}.ndjson` under the job's folder: opens the
//! next, counts the lines written into it, closes it into a [`FileRecord`], aborts the open one.
//! When to start a new file is the roller's policy (by line in `roller.rs`, by block in
//! `block_roller.rs`); this type only keeps the sequence.

use crate::model::job::{FileKind, FileRecord};
use crate::output::{Output, OutputError, OutputFile};

pub struct FileSequence<'a> {
    output: &'a Output,
    kind: FileKind,
    resource_type: String,
    /// File names are `{stem}-{n}.ndjson`.
    stem: String,
    /// The folder the object keys go under.
    key_dir: String,
    open: Option<OpenFile>,
    done: Vec<FileRecord>,
}

struct OpenFile {
    file: OutputFile,
    name: String,
    key: String,
    count: i64,
}

impl<'a> FileSequence<'a> {
    /// Files are recorded as `kind` of `resource_type`.
    pub fn new(output: &'a Output, kind: FileKind, resource_type: &str, stem: &str, key_dir: String) -> Self {
        Self { output, kind, resource_type: resource_type.to_owned(), stem: stem.to_owned(), key_dir, open: None, done: Vec::new() }
    }

    pub fn set_stem(&mut self, stem: String) {
        self.stem = stem;
    }

    /// The size of the open file, or `None` when no file is open.
    pub fn open_bytes(&self) -> Option<u64> {
        self.open.as_ref().map(|open| open.file.bytes())
    }

    /// Writes `data`, which holds `lines` whole lines, into the open file.
    ///
    /// # Panics
    /// When no file is open: the policy opens one with [`Self::roll`] first.
    pub async fn write(&mut self, data: &[u8], lines: i64) -> Result<(), OutputError> {
        let open = self.open.as_mut().expect("a file is open");
        open.file.write(data).await?;
        open.count += lines;
        Ok(())
    }

    /// Like [`Self::write`], without copying: the part being filled keeps `data` as it is.
    ///
    /// # Panics
    /// When no file is open.
    pub async fn put(&mut self, data: bytes::Bytes, lines: i64) -> Result<(), OutputError> {
        let open = self.open.as_mut().expect("a file is open");
        open.file.put(data).await?;
        open.count += lines;
        Ok(())
    }

    /// Closes the open file, if any, and opens the next.
    pub async fn roll(&mut self) -> Result<(), OutputError> {
        self.close().await?;
        let n = self.done.len() + 1;
        let name = format!("{}-{n}.ndjson", self.stem);
        let key = format!("{}/{name}", self.key_dir);
        let file = self.output.create(&key).await?;
        self.open = Some(OpenFile { file, name, key, count: 0 });
        Ok(())
    }

    /// Closes the open file, if any, into a record.
    pub async fn close(&mut self) -> Result<(), OutputError> {
        if let Some(open) = self.open.take() {
            let bytes = open.file.bytes() as i64;
            open.file.finish().await?;
            self.done.push(FileRecord {
                kind: self.kind,
                resource_type: self.resource_type.clone(),
                name: open.name,
                key: open.key,
                count: open.count,
                bytes,
            });
        }
        Ok(())
    }

    /// Closes the last file and returns the records of all.
    pub async fn finish(mut self) -> Result<Vec<FileRecord>, OutputError> {
        self.close().await?;
        Ok(self.done)
    }

    /// Abandons the files: the open one is aborted (its partial upload deleted), finished ones
    /// are left for the job's folder cleanup (they are never listed).
    pub async fn abort(mut self) {
        if let Some(open) = self.open.take()
            && let Err(e) = open.file.abort().await {
                tracing::warn!(error = %e, file = %open.key, "could not abort a partial file");
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence of deleted Patients in `Bundle-{n}.ndjson` files: two lines in the first
    /// (closed), one in the second (left open).
    async fn two_files(output: &Output) -> FileSequence<'_> {
        let mut files = FileSequence::new(output, FileKind::Deleted, "Patient", "Bundle", "job".into());
        files.roll().await.unwrap();
        files.write(b"a\nb\n", 2).await.unwrap();
        files.roll().await.unwrap();
        files.write(b"c\n", 1).await.unwrap();
        files
    }

    #[tokio::test]
    async fn files_are_numbered_and_record_their_lines_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let output = Output::local(dir.path(), 5 * 1024 * 1024).unwrap();
        let done = two_files(&output).await.finish().await.unwrap();
        let summary: Vec<_> = done.iter().map(|f| (f.name.as_str(), f.key.as_str(), f.count, f.bytes, f.kind, f.resource_type.as_str())).collect();
        assert_eq!(
            summary,
            [
                ("Bundle-1.ndjson", "job/Bundle-1.ndjson", 2, 4, FileKind::Deleted, "Patient"),
                ("Bundle-2.ndjson", "job/Bundle-2.ndjson", 1, 2, FileKind::Deleted, "Patient")
            ]
        );
    }

    #[tokio::test]
    async fn abort_deletes_the_open_file_and_keeps_the_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let output = Output::local(dir.path(), 5 * 1024 * 1024).unwrap();
        two_files(&output).await.abort().await;
        // The finished file stays for the job's folder cleanup; the open one's staged part is gone.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("job")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["Bundle-1.ndjson"]);
    }
}
