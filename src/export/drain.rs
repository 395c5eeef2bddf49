//! The one loop that moves a store's stream into a sink (files, or a reader of ids): it ends
//! when the stream ends, the task is stopped (cancelled, lease lost, shutting down) or something
//! fails, and gives the runtime's threads back at the pacer's pace.

use std::{
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
};

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{block_roller::BlockRoller, failure::TaskFailure, pacer::Pacer, pipeline::PipelineError, roller::Roller};
use crate::{model::job::FileRecord, output::OutputError, store::StoreError};

/// Why a task's drain (or the reading before it) stopped short.
pub enum Halt {
    Stopped,
    Failed(TaskFailure),
}

impl From<TaskFailure> for Halt {
    fn from(failure: TaskFailure) -> Self {
        Self::Failed(failure)
    }
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<OutputError> for Halt {
    fn from(e: OutputError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<PipelineError> for Halt {
    fn from(e: PipelineError) -> Self {
        Self::Failed(e.into())
    }
}

/// Where a drain puts the chunks (of whole or partial NDJSON lines) it takes from the stream.
pub trait Sink: Send {
    fn take(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), Halt>> + Send;
}

/// A closure is a sink that needs no waiting (a reader of ids).
impl<F: FnMut(Bytes) -> Result<(), Halt> + Send> Sink for F {
    async fn take(&mut self, chunk: Bytes) -> Result<(), Halt> {
        self(chunk)
    }
}

/// Hands every chunk of `stream` to `sink` until the stream ends; stops at once when `stop` is
/// cancelled, and on the first error of the stream or the sink. What the sink holds is the
/// caller's to finish or abort.
pub async fn drain<E: Into<TaskFailure>>(
    mut stream: BoxStream<'_, Result<Bytes, E>>,
    stop: &CancellationToken,
    pacer: &mut Pacer,
    mut sink: impl Sink,
) -> Result<(), Halt> {
    loop {
        let next = tokio::select! {
            // A stop is seen before the next chunk, not after a coin toss among ready branches.
            biased;
            _ = stop.cancelled() => return Err(Halt::Stopped),
            next = stream.next() => next,
        };
        let Some(chunk) = next else { return Ok(()) };
        let chunk = chunk.map_err(|e| Halt::Failed(e.into()))?;
        let bytes = chunk.len();
        sink.take(chunk).await?;
        pacer.moved(bytes).await;
    }
}

/// A roller's files as a sink, its lines counted into the task's progress.
pub struct Counted<'s, R> {
    pub roller: &'s mut R,
    pub progress: Progress<'s>,
}

impl Sink for Counted<'_, Roller<'_>> {
    async fn take(&mut self, chunk: Bytes) -> Result<(), Halt> {
        self.roller.write(chunk).await?;
        self.progress.lines(self.roller.lines());
        Ok(())
    }
}

impl Sink for Counted<'_, BlockRoller<'_>> {
    async fn take(&mut self, chunk: Bytes) -> Result<(), Halt> {
        self.roller.write(&chunk).await?;
        self.progress.lines(self.roller.lines());
        Ok(())
    }
}

/// Drains `source` into `roller`'s files: the files, or why it stopped (then none are kept).
pub async fn into_files<E: Into<TaskFailure>>(
    source: BoxStream<'_, Result<Bytes, E>>,
    mut roller: Roller<'_>,
    stop: &CancellationToken,
    pacer: &mut Pacer,
    progress: Progress<'_>,
) -> Result<Vec<FileRecord>, Halt> {
    match drain(source, stop, pacer, Counted { roller: &mut roller, progress }).await {
        Ok(()) => Ok(roller.finish().await?),
        Err(halt) => {
            roller.abort().await;
            Err(halt)
        }
    }
}

/// The lines a task has written, for its heartbeat: a sink's own count on top of what the
/// task's earlier sinks wrote before it started.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    written: &'a AtomicI64,
    base: i64,
}

impl<'a> Progress<'a> {
    /// Counts from what `written` holds now.
    pub fn from_now(written: &'a AtomicI64) -> Self {
        Self { written, base: written.load(Ordering::Relaxed) }
    }

    /// The sink has written `lines` so far.
    pub fn lines(&self, lines: u64) {
        self.written.store(self.base + lines as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize) -> BoxStream<'static, Result<Bytes, StoreError>> {
        futures::stream::iter((0..n).map(|i| Ok(Bytes::from(format!("{i}\n"))))).boxed()
    }

    #[tokio::test]
    async fn every_chunk_reaches_the_sink_in_order() {
        let mut seen = Vec::new();
        let drained = drain(chunks(3), &CancellationToken::new(), &mut Pacer::default(), |chunk| {
            seen.push(chunk);
            Ok(())
        })
        .await;
        assert!(drained.is_ok());
        assert_eq!(seen, ["0\n", "1\n", "2\n"]);
    }

    #[tokio::test]
    async fn a_stopped_task_takes_no_more_chunks() {
        let stop = CancellationToken::new();
        let mut seen = 0;
        let drained = drain(chunks(10), &stop, &mut Pacer::default(), |_| {
            seen += 1;
            stop.cancel();
            Ok(())
        })
        .await;
        assert!(matches!(drained, Err(Halt::Stopped)));
        assert_eq!(seen, 1);
    }

    #[tokio::test]
    async fn the_first_error_of_the_stream_or_the_sink_ends_the_drain() {
        let failing = futures::stream::iter([Ok(Bytes::from("a\n")), Err(StoreError::Conflict("Patient/1".into())), Ok(Bytes::from("b\n"))]).boxed();
        let mut seen = 0;
        let drained = drain(failing, &CancellationToken::new(), &mut Pacer::default(), |_| {
            seen += 1;
            Ok(())
        })
        .await;
        assert!(matches!(drained, Err(Halt::Failed(_))));
        assert_eq!(seen, 1);

        let drained = drain(chunks(3), &CancellationToken::new(), &mut Pacer::default(), |_| Err(TaskFailure::data("bad").into())).await;
        assert!(matches!(drained, Err(Halt::Failed(f)) if f.client == "bad"));
    }

    #[test]
    fn progress_adds_to_what_earlier_sinks_wrote() {
        let written = AtomicI64::new(5);
        let progress = Progress::from_now(&written);
        progress.lines(3);
        assert_eq!(written.load(Ordering::Relaxed), 8);
    }
}
