//! The export read path on SQLite: a blocking thread steps the query on a read-only connection
//! of its own and copies each value straight into chunks of lines, handed over a bounded
//! channel. Through sqlx every row crossed from the connection's thread as an owned value (a
//! thread wake-up, a copy into SQLite's malloc, a UTF-8 check and a `String` per row): a
//! profile of a system export put most of its time there, and in the kernel's context switches.
//! One statement is one read transaction, so in WAL mode it reads one consistent snapshot.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use rusqlite::{types::Value, types::ValueRef, OpenFlags};
use tokio::sync::mpsc;

use super::chunks::{ChunkPool, CHUNK_BYTES};
use crate::store::StoreError;

/// Chunks queued between the reader and the export. With the one being filled and the one being
/// written, what an export holds in flight is about six chunks (1.5 MiB), whatever the table size.
const CHUNKS_IN_FLIGHT: usize = 4;

/// SQLite virtual-machine steps between checks that the export still wants rows, so a query
/// that scans long without a match also stops soon after the export is dropped.
const STEPS_PER_CHECK: i32 = 100_000;

/// Page cache of a reader's connection. A sequential read needs little more than the pages on
/// its path down the two b-trees, and the cache fills up to its size only on large types, so a
/// larger one raised peak RSS with the database's size (figures: docs/performance.md).
const CACHE_SIZE_KIB: i64 = 1024;

/// Where readers open their connections (the pool's database), and their chunk buffers.
#[derive(Debug, Clone)]
pub(super) struct ReadSource {
    filename: PathBuf,
    chunks: Arc<ChunkPool>,
}

impl ReadSource {
    /// `filename` as sqlx has it (`SqliteConnectOptions::get_filename`).
    pub fn new(filename: PathBuf) -> Self {
        Self { filename, chunks: Arc::default() }
    }

    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // sqlx names an in-memory database `file:sqlx-in-memory-N` and shares one cache between
        // its connections; a reader must join that cache to see the same database.
        if self.filename.to_str().is_some_and(|f| f.starts_with("file:sqlx-in-memory-")) {
            flags |= OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let conn = rusqlite::Connection::open_with_flags(&self.filename, flags)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "cache_size", -CACHE_SIZE_KIB)?;
        Ok(conn)
    }
}

/// Runs `sql` (one text column) with `params` bound as `?1`, `?2`, ... and streams the values as
/// lines, in chunks. Nothing runs until the stream is first polled; dropping the stream stops
/// the query. An error or a panic of the reader ends the stream with an error, never silently.
pub(super) fn lines(source: ReadSource, sql: String, params: Vec<Value>) -> BoxStream<'static, Result<Bytes, StoreError>> {
    async_stream::try_stream! {
        let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        // On a background thread: an export's reading yields to request handling.
        let reader = crate::low_priority_runtime::spawn_blocking(move || read(&source, &sql, params, tx));
        while let Some(chunk) = rx.recv().await {
            yield chunk;
        }
        // The channel closes when the reader returns: its result says whether that was the end.
        reader.await.map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))??;
    }
    .boxed()
}

/// Steps the query and sends chunks until the rows end or the receiver is dropped.
fn read(source: &ReadSource, sql: &str, params: Vec<Value>, tx: mpsc::Sender<Bytes>) -> rusqlite::Result<()> {
    let conn = source.open()?;
    let watch = tx.clone();
    // Returning true interrupts the statement (SQLITE_INTERRUPT): nobody reads its rows any more.
    conn.progress_handler(STEPS_PER_CHECK, Some(move || watch.is_closed()))?;
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let pool = &source.chunks;
    let mut chunk = pool.take();
    while let Some(row) = rows.next()? {
        let text = match row.get_ref(0)? {
            ValueRef::Text(text) => text,
            other => return Err(rusqlite::Error::InvalidColumnType(0, "text".into(), other.data_type())),
        };
        if !chunk.is_empty() && chunk.len() + text.len() + 1 > CHUNK_BYTES {
            let full = std::mem::replace(&mut chunk, pool.take());
            if tx.blocking_send(pool.bytes(full)).is_err() {
                return Ok(()); // the export was dropped: nobody to tell
            }
        }
        chunk.extend_from_slice(text);
        chunk.push(b'\n');
    }
    if !chunk.is_empty() {
        // Fails only when the export was dropped: nobody to tell.
        tx.blocking_send(pool.bytes(chunk)).ok();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `x` from 1, without end.
    const COUNT_FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)";

    /// A database in rollback-journal mode, where a running read holds a shared lock that keeps
    /// a writer from committing: a write goes through only once no query is left running.
    fn database() -> (tempfile::TempDir, ReadSource, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (body TEXT); INSERT INTO t VALUES ('{\"a\":1}'), ('{\"b\":2}');").unwrap();
        conn.busy_timeout(Duration::from_secs(3)).unwrap();
        (dir, ReadSource::new(path), conn)
    }

    #[tokio::test]
    async fn streams_each_value_as_a_line() {
        let (_dir, source, _) = database();
        let chunks: Vec<_> = lines(source, "SELECT body FROM t WHERE body LIKE ?1".into(), vec![Value::Text("{%".into())]).collect().await;
        let text: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(text, b"{\"a\":1}\n{\"b\":2}\n");
    }

    /// Polls the stream of `sql` as `poll` does, drops it, then writes: whether the write got
    /// through. A reader left running fails the write, and is left behind (not waited for).
    fn write_after_dropping(sql: String, poll: impl AsyncFnOnce(&mut BoxStream<'static, Result<Bytes, StoreError>>)) -> rusqlite::Result<usize> {
        let (_dir, source, writer) = database();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let written = runtime.block_on(async move {
            let mut stream = lines(source, sql, vec![]);
            poll(&mut stream).await;
            drop(stream);
            tokio::task::spawn_blocking(move || writer.execute("INSERT INTO t VALUES ('{}')", [])).await.unwrap()
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        written
    }

    #[test]
    fn dropping_the_stream_stops_a_reader_that_is_sending_rows() {
        let sql = format!("{COUNT_FOREVER} SELECT printf('%080d', x) FROM c, t");
        let written = write_after_dropping(sql, async |stream| {
            assert!(stream.next().await.unwrap().unwrap().len() >= CHUNK_BYTES / 2);
        });
        written.expect("the reader let go of the database");
    }

    #[test]
    fn dropping_the_stream_stops_a_reader_that_scans_without_a_match() {
        let sql = format!("{COUNT_FOREVER} SELECT body FROM c, t WHERE x < 0");
        let written = write_after_dropping(sql, async |stream| {
            assert!(tokio::time::timeout(Duration::from_millis(200), stream.next()).await.is_err(), "no row, ever");
        });
        written.expect("the reader let go of the database");
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_an_error() {
        let (_dir, source, _) = database();
        let chunks: Vec<_> = lines(source, "SELECT 1 FROM t".into(), vec![]).collect().await;
        assert!(matches!(chunks.last(), Some(Err(StoreError::Reader(_)))), "an integer is not a line of text");
    }
}
