//! The NDJSON roller: takes chunks of whole or partial lines and writes them into
//! `{Type}-{n}.ndjson` files, starting a new file before a line would take the current one past
//! the size limit. A line is never split; a line larger than the limit gets a file of its own.

use bytes::Bytes;
use memchr::{memchr, memchr_iter, memrchr};

use super::file_sequence::FileSequence;
use crate::{
    model::job::{FileKind, FileRecord},
    output::{Output, OutputError},
};

pub struct Roller<'a> {
    files: FileSequence<'a>,
    max_bytes: u64,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    lines: u64,
}

impl<'a> Roller<'a> {
    /// Files are named `{resource_type}-{n}.ndjson` unless [`Self::with_stem`] says otherwise.
    pub fn new(output: &'a Output, kind: FileKind, resource_type: &str, key_dir: String, max_bytes: u64) -> Self {
        let files = FileSequence::new(output, kind, resource_type, resource_type, key_dir);
        Self { files, max_bytes, partial: Vec::new(), lines: 0 }
    }

    /// Names the files `{stem}-{n}.ndjson` (deleted files of several types are all `Bundle`).
    pub fn with_stem(mut self, stem: String) -> Self {
        self.files.set_stem(stem);
        self
    }

    /// The `deleted` files of one type (`_since`): transaction Bundles, recorded as `Bundle` and
    /// named `{resource_type}-deleted-{n}.ndjson`.
    pub fn for_deletions(output: &'a Output, resource_type: &str, key_dir: String, max_bytes: u64) -> Self {
        Self::new(output, FileKind::Deleted, "Bundle", key_dir, max_bytes).with_stem(format!("{resource_type}-deleted"))
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
        self.files.finish().await
    }

    /// Abandons the files: the open one is aborted, finished ones are left for the job's folder
    /// cleanup (they are never listed).
    pub async fn abort(self) {
        self.files.abort().await
    }

    /// Writes complete lines (`lines` ends with `\n`).
    async fn write_lines(&mut self, lines: Bytes) -> Result<(), OutputError> {
        // Fast path: the whole run fits in the open file.
        if self.files.open_bytes().is_some_and(|bytes| bytes + lines.len() as u64 <= self.max_bytes) {
            let count = memchr_iter(b'\n', &lines).count();
            self.files.put(lines, count as i64).await?;
            self.lines += count as u64;
            return Ok(());
        }
        let mut start = 0;
        for end in memchr_iter(b'\n', &lines) {
            let line = lines.slice(start..=end);
            start = end + 1;
            let must_roll = self.files.open_bytes().is_none_or(|bytes| bytes > 0 && bytes + line.len() as u64 > self.max_bytes);
            if must_roll {
                self.files.roll().await?;
            }
            self.files.put(line, 1).await?;
            self.lines += 1;
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
