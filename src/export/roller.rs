//! The NDJSON roller: takes chunks of whole or partial lines and writes them into
//! `{Type}-{n}.ndjson` files, starting a new file before a line would take the current one past
//! the size limit. A line is never split; a line larger than the limit gets a file of its own.

use bytes::Bytes;
use memchr::{memchr, memchr_iter, memrchr};

use super::job::{FileKind, FileRecord};
use crate::output::{Output, OutputError, OutputFile};

pub struct Roller<'a> {
    output: &'a Output,
    kind: FileKind,
    resource_type: String,
    /// File names are `{stem}-{n}.ndjson`; the stem is the resource type unless set.
    stem: String,
    /// The folder the object keys go under.
    key_dir: String,
    max_bytes: u64,
    open: Option<OpenFile>,
    done: Vec<FileRecord>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    lines: u64,
}

struct OpenFile {
    file: OutputFile,
    name: String,
    key: String,
    count: i64,
}

impl<'a> Roller<'a> {
    pub fn new(output: &'a Output, kind: FileKind, resource_type: &str, key_dir: String, max_bytes: u64) -> Self {
        Self {
            output,
            kind,
            resource_type: resource_type.to_owned(),
            stem: resource_type.to_owned(),
            key_dir,
            max_bytes,
            open: None,
            done: Vec::new(),
            partial: Vec::new(),
            lines: 0,
        }
    }

    /// Names the files `{stem}-{n}.ndjson` (deleted files of several types are all `Bundle`).
    pub fn with_stem(mut self, stem: String) -> Self {
        self.stem = stem;
        self
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Takes a chunk as it came from the store: its whole lines go to the file without a copy
    /// (slices of the same buffer), only a line split across chunks is joined.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), OutputError> {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            let Some(end) = memchr(b'\n', &rest) else {
                self.partial.extend_from_slice(&rest);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..=end]);
            self.write_lines(line.into()).await?;
            rest = rest.slice(end + 1..);
        }
        match memrchr(b'\n', &rest) {
            Some(last) => {
                self.write_lines(rest.slice(..=last)).await?;
                self.partial.extend_from_slice(&rest[last + 1..]);
            }
            None => self.partial.extend_from_slice(&rest),
        }
        Ok(())
    }

    /// Closes the last file. A final line without its newline gets one.
    pub async fn finish(mut self) -> Result<Vec<FileRecord>, OutputError> {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.write_lines(line.into()).await?;
        }
        self.close().await?;
        Ok(self.done)
    }

    /// Abandons the files: the open one is aborted, finished ones are left for the job's folder
    /// cleanup (they are never listed).
    pub async fn abort(mut self) {
        if let Some(open) = self.open.take()
            && let Err(e) = open.file.abort().await {
                tracing::warn!(error = %e, file = %open.key, "could not abort a partial file");
            }
    }

    /// Writes complete lines (`lines` ends with `\n`).
    async fn write_lines(&mut self, lines: Bytes) -> Result<(), OutputError> {
        // Fast path: the whole run fits in the open file.
        if let Some(open) = &mut self.open
            && open.file.bytes() + lines.len() as u64 <= self.max_bytes {
                let count = memchr_iter(b'\n', &lines).count();
                open.file.put(lines).await?;
                open.count += count as i64;
                self.lines += count as u64;
                return Ok(());
            }
        let mut start = 0;
        for end in memchr_iter(b'\n', &lines) {
            let line = lines.slice(start..=end);
            start = end + 1;
            let must_roll = self
                .open
                .as_ref()
                .is_none_or(|open| open.file.bytes() > 0 && open.file.bytes() + line.len() as u64 > self.max_bytes);
            if must_roll {
                self.close().await?;
                self.open_next().await?;
            }
            let open = self.open.as_mut().expect("a file is open");
            open.file.put(line).await?;
            open.count += 1;
            self.lines += 1;
        }
        Ok(())
    }

    async fn open_next(&mut self) -> Result<(), OutputError> {
        let n = self.done.len() + 1;
        let name = format!("{}-{n}.ndjson", self.stem);
        let key = format!("{}/{name}", self.key_dir);
        let file = self.output.create(&key).await?;
        self.open = Some(OpenFile { file, name, key, count: 0 });
        Ok(())
    }

    async fn close(&mut self) -> Result<(), OutputError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roll(chunks: &[&[u8]], max: u64) -> (Vec<FileRecord>, Vec<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let output = Output::local(dir.path(), 5 * 1024 * 1024).unwrap();
        let mut roller = Roller::new(&output, FileKind::Output, "Patient", "job".into(), max);
        for chunk in chunks {
            roller.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let files = roller.finish().await.unwrap();
        let contents = files.iter().map(|f| std::fs::read_to_string(dir.path().join(&f.key)).unwrap()).collect();
        (files, contents, dir)
    }

    #[tokio::test]
    async fn rolls_before_a_line_would_pass_the_limit_and_never_splits_lines() {
        // Lines of 10 bytes; limit 25: two lines per file.
        let (files, contents, _dir) = roll(&[b"123456789\n1234", b"56789\n123456789\n", b"123456789\n12345"], 25).await;
        assert_eq!(files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["Patient-1.ndjson", "Patient-2.ndjson", "Patient-3.ndjson"]);
        assert_eq!(files.iter().map(|f| f.count).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(contents[2], "12345\n");
        assert!(contents.iter().all(|c| c.len() <= 25 && c.ends_with('\n')));
    }

    #[tokio::test]
    async fn a_line_larger_than_the_limit_gets_a_file_of_its_own() {
        let (files, contents, _dir) = roll(&[b"ab\n", b"0123456789abcdef\n", b"cd\n"], 8).await;
        assert_eq!(files.iter().map(|f| f.count).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(contents[1], "0123456789abcdef\n");
    }

    #[tokio::test]
    async fn no_lines_no_files() {
        let (files, _, _dir) = roll(&[], 8).await;
        assert!(files.is_empty());
    }
}
