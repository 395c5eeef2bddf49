//! The block roller of `organizeOutputBy=Patient`: writes blocks (a header line, then that
//! patient's resource lines) into `{stem}-{n}.ndjson` files. A block that fits the size limit is
//! never split: it is buffered (at most `max_bytes`) and goes whole into the open file or the
//! next one. A block that alone passes the limit starts a fresh file and is streamed across
//! files, its header repeated at the top of each; lines are never split.

use memchr::memchr_iter;

use super::file_sequence::FileSequence;
use crate::{
    model::job::{FileKind, FileRecord},
    output::{Output, OutputError},
};

pub struct BlockRoller<'a> {
    files: FileSequence<'a>,
    max_bytes: u64,
    /// The current block's header line (with its newline), if the block has one.
    header: Option<Vec<u8>>,
    /// The current block while it still fits the limit: header and lines.
    buffer: Vec<u8>,
    buffered: i64,
    /// The current block passed the limit: its lines go straight to files.
    streaming: bool,
    /// Resource lines of the current (streamed) block in the open file, its header not counted.
    block_lines: i64,
    partial: Vec<u8>,
    lines: u64,
}

impl<'a> BlockRoller<'a> {
    /// Files are recorded as `FileKind::Output` of `resource_type`, named `{stem}-{n}.ndjson`.
    pub fn new(output: &'a Output, resource_type: &str, stem: &str, key_dir: String, max_bytes: u64) -> Self {
        Self {
            files: FileSequence::new(output, FileKind::Output, resource_type, stem, key_dir),
            max_bytes,
            header: None,
            buffer: Vec::new(),
            buffered: 0,
            streaming: false,
            block_lines: 0,
            partial: Vec::new(),
            lines: 0,
        }
    }

    /// Lines written or buffered so far, headers included.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Starts a block behind `header` (one JSON line, no newline), or a block without one. A
    /// block that gets no line writes nothing, not even its header.
    pub async fn start_block(&mut self, header: Option<&str>) -> Result<(), OutputError> {
        self.end_block().await?;
        self.header = header.map(|h| {
            let mut line = h.as_bytes().to_vec();
            line.push(b'\n');
            line
        });
        Ok(())
    }

    /// Starts the block without a header that ends the output, in files of its own: a reader
    /// can tell where the last patient's block ends.
    pub async fn start_headerless_files(&mut self) -> Result<(), OutputError> {
        self.end_block().await?;
        self.files.close().await
    }

    /// Adds NDJSON to the current block: chunks of whole or partial lines.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), OutputError> {
        let mut start = 0;
        for end in memchr_iter(b'\n', chunk) {
            if self.partial.is_empty() {
                self.push_line(&chunk[start..=end]).await?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[start..=end]);
                self.push_line(&line).await?;
            }
            start = end + 1;
        }
        self.partial.extend_from_slice(&chunk[start..]);
        Ok(())
    }

    /// Writes out the current block (a final line without its newline gets one).
    pub async fn end_block(&mut self) -> Result<(), OutputError> {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.push_line(&line).await?;
        }
        if !self.streaming && !self.buffer.is_empty() {
            let buffer = std::mem::take(&mut self.buffer);
            let fits = self.files.open_bytes().is_some_and(|bytes| bytes + buffer.len() as u64 <= self.max_bytes);
            if !fits {
                self.files.roll().await?;
            }
            self.files.write(&buffer, self.buffered).await?;
        }
        self.buffered = 0;
        self.streaming = false;
        self.header = None;
        Ok(())
    }

    /// Closes the last file.
    pub async fn finish(mut self) -> Result<Vec<FileRecord>, OutputError> {
        self.end_block().await?;
        self.files.finish().await
    }

    /// Abandons the files: the open one is aborted, finished ones are never listed.
    pub async fn abort(self) {
        self.files.abort().await
    }

    /// One resource line (ending with `\n`) of the current block.
    async fn push_line(&mut self, line: &[u8]) -> Result<(), OutputError> {
        self.lines += 1;
        if self.streaming {
            return self.stream_line(line).await;
        }
        if self.buffer.is_empty()
            && let Some(header) = &self.header {
                self.buffer.extend_from_slice(header);
                self.buffered += 1;
                self.lines += 1;
            }
        if self.buffer.len() as u64 + line.len() as u64 <= self.max_bytes {
            self.buffer.extend_from_slice(line);
            self.buffered += 1;
            return Ok(());
        }
        // The block alone passes the limit: it starts a fresh file with what is buffered (which
        // fits), then rolls line by line.
        self.streaming = true;
        self.files.roll().await?;
        let buffer = std::mem::take(&mut self.buffer);
        self.files.write(&buffer, self.buffered).await?;
        self.block_lines = self.buffered - i64::from(self.header.is_some());
        self.buffered = 0;
        self.stream_line(line).await
    }

    /// A line of a block too large for one file: a new file, headed again, when the line would
    /// pass the limit and the open file already holds a line of the block.
    async fn stream_line(&mut self, line: &[u8]) -> Result<(), OutputError> {
        let must_roll =
            self.files.open_bytes().is_none_or(|bytes| self.block_lines > 0 && bytes + line.len() as u64 > self.max_bytes);
        if must_roll {
            self.files.roll().await?;
            self.block_lines = 0;
            if let Some(header) = &self.header {
                self.files.write(header, 1).await?;
                self.lines += 1;
            }
        }
        self.files.write(line, 1).await?;
        self.block_lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the blocks (header, lines; no header: the headerless files) and returns each
    /// file's lines.
    async fn roll(blocks: &[(Option<&str>, &[&str])], max: u64) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let output = Output::local(dir.path(), 5 * 1024 * 1024).unwrap();
        let mut roller = BlockRoller::new(&output, "Patient", "Patient-organized", "job".into(), max);
        for (header, lines) in blocks {
            match header {
                Some(_) => roller.start_block(*header).await.unwrap(),
                None => roller.start_headerless_files().await.unwrap(),
            }
            for line in *lines {
                roller.write(format!("{line}\n").as_bytes()).await.unwrap();
            }
        }
        let files = roller.finish().await.unwrap();
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(dir.path().join(&f.key)).unwrap();
                assert_eq!(f.count as usize, text.lines().count());
                text.lines().map(str::to_owned).collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn blocks_that_fit_are_never_split() {
        // Each line 5 bytes with its newline; blocks of 15 and 10 bytes; limit 20.
        let files = roll(&[(Some("H1xx"), &["a1xx", "a2xx"]), (Some("H2xx"), &["b1xx"]), (Some("H3xx"), &[])], 20).await;
        assert_eq!(files, [vec!["H1xx", "a1xx", "a2xx"], vec!["H2xx", "b1xx"]]);
    }

    #[tokio::test]
    async fn a_block_alone_too_big_is_split_with_its_header_repeated() {
        let files = roll(&[(Some("H1xx"), &["a1xx"]), (Some("H2xx"), &["b1xx", "b2xx", "b3xx", "b4xx"]), (Some("H3xx"), &["c1xx"])], 15).await;
        assert_eq!(
            files,
            [vec!["H1xx", "a1xx"], vec!["H2xx", "b1xx", "b2xx"], vec!["H2xx", "b3xx", "b4xx"], vec!["H3xx", "c1xx"]]
        );
    }

    #[tokio::test]
    async fn the_headerless_block_gets_files_of_its_own() {
        let files = roll(&[(Some("H1xx"), &["a1xx"]), (None, &["r1xx", "r2xx", "r3xx", "r4xx"])], 15).await;
        assert_eq!(files, [vec!["H1xx", "a1xx"], vec!["r1xx", "r2xx", "r3xx"], vec!["r4xx"]]);
    }

    #[tokio::test]
    async fn a_line_larger_than_the_limit_goes_with_its_header() {
        let files = roll(&[(Some("H1"), &["0123456789", "ab"])], 8).await;
        assert_eq!(files, [vec!["H1", "0123456789"], vec!["H1", "ab"]]);
    }
}
