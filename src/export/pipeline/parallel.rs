//! Runs a heavy pipeline (de-identification parses and rewrites every resource) on all cores:
//! the store's chunks are gathered (small ones) or cut at line ends (big ones) into batches,
//! each batch runs on a background thread, and the results are taken in order. At most a few
//! batches are in flight per task, so memory stays bounded whatever the size of the type.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{stream::BoxStream, Stream, StreamExt};

use super::{Pipeline, PipelineError};
use crate::store::StoreError;

/// Lines per batch are cut at about this many bytes: small enough that two cores share even
/// a small type, large enough that a batch's thread hand-off costs nothing beside its work.
const BATCH_BYTES: usize = 128 * 1024;

/// Applies `pipeline` to a stream of whole-line chunks, batches in flight on every core.
pub fn apply(pipeline: Arc<Pipeline>, source: BoxStream<'static, Result<Bytes, StoreError>>) -> BoxStream<'static, Result<Bytes, PipelineError>> {
    // One more than the compute threads, so a thread never waits for the next batch to be
    // handed over.
    let in_flight = crate::low_priority_runtime::compute_threads() + 1;
    Gather { source, parts: Vec::new(), size: 0, ended: false }
        .flat_map(|gathered| {
            let batches: Vec<Result<Vec<Bytes>, PipelineError>> = match gathered {
                Ok(parts) => regroup(parts).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(PipelineError::Store(e))],
            };
            futures::stream::iter(batches)
        })
        .map(move |batch| {
            let pipeline = pipeline.clone();
            async move {
                let batch = batch?;
                let work = move || -> Result<Bytes, PipelineError> {
                    let mut out = Vec::with_capacity(batch.iter().map(Bytes::len).sum());
                    for lines in &batch {
                        pipeline.run_lines_into(lines, &mut out)?;
                    }
                    Ok(Bytes::from(out))
                };
                match crate::low_priority_runtime::spawn_compute(work).await {
                    Ok(result) => result,
                    // A panic in a stage is the task's panic: the worker reports it as one.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        })
        .buffered(in_flight)
        .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.is_empty())))
        .boxed()
}

/// Gathers the chunks the source has ready, up to about `BATCH_BYTES`: Postgres's COPY gives a
/// chunk per row, and a thread hand-off per row cost more than de-identifying it. It never waits
/// for more than the source has ready.
struct Gather {
    source: BoxStream<'static, Result<Bytes, StoreError>>,
    parts: Vec<Bytes>,
    size: usize,
    ended: bool,
}

impl Stream for Gather {
    type Item = Result<Vec<Bytes>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.ended && this.size < BATCH_BYTES {
            match this.source.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.size += chunk.len();
                    this.parts.push(chunk);
                }
                // The task fails on it: what was gathered is not wanted any more.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.parts.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if this.parts.is_empty() {
            return Poll::Ready(None);
        }
        this.size = 0;
        Poll::Ready(Some(Ok(std::mem::take(&mut this.parts))))
    }
}

/// Regroups gathered chunks into batches of about `BATCH_BYTES`, big chunks cut at line ends
/// (no copy).
fn regroup(parts: Vec<Bytes>) -> Vec<Vec<Bytes>> {
    let mut out = Vec::new();
    let (mut batch, mut size) = (Vec::new(), 0);
    for part in parts.into_iter().flat_map(batches) {
        size += part.len();
        batch.push(part);
        if size >= BATCH_BYTES {
            out.push(std::mem::take(&mut batch));
            size = 0;
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Cuts a chunk of whole lines into runs of whole lines of about `BATCH_BYTES` (no copy).
fn batches(chunk: Bytes) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(chunk.len() / BATCH_BYTES + 1);
    let mut start = 0;
    while start < chunk.len() {
        let target = (start + BATCH_BYTES).min(chunk.len());
        let end = match memchr::memchr(b'\n', &chunk[target - 1..]) {
            Some(at) => target + at,
            None => chunk.len(),
        };
        out.push(chunk.slice(start..end));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::pipeline::{Stage, Verdict};
    use serde_json::Value;

    struct Renumber;
    impl Stage for Renumber {
        fn apply(&self, r: &mut Value) -> Result<Verdict, crate::export::pipeline::StageError> {
            let n = r["n"].as_u64().unwrap();
            if n.is_multiple_of(7) {
                return Ok(Verdict::Drop);
            }
            r["n"] = (n * 2).into();
            Ok(Verdict::Changed)
        }
        fn heavy(&self) -> bool {
            true
        }
    }

    #[test]
    fn batches_end_at_line_ends_and_cover_the_chunk() {
        let text: String = (0..20_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
        let parts = batches(Bytes::from(text.clone()));
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.ends_with(b"\n")));
        assert_eq!(parts.concat(), text.as_bytes());
    }

    #[tokio::test]
    async fn a_chunk_per_row_is_gathered_into_batches_without_waiting_for_more() {
        let rows: Vec<Result<Bytes, StoreError>> = (0..5000).map(|n| Ok(Bytes::from(format!("{{\"n\":{n}}}\n")))).collect();
        let gathered: Vec<Vec<Bytes>> = Gather { source: futures::stream::iter(rows).boxed(), parts: Vec::new(), size: 0, ended: false }
            .map(Result::unwrap)
            .collect()
            .await;
        assert!(gathered.len() < 5000 / 100, "{} batches of 5000 rows", gathered.len());
        assert_eq!(gathered.iter().map(Vec::len).sum::<usize>(), 5000);
        // A source with nothing more ready: what it has goes out at once.
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, StoreError>>();
        tx.unbounded_send(Ok(Bytes::from_static(b"{}\n"))).unwrap();
        let mut gather = Gather { source: rx.boxed(), parts: Vec::new(), size: 0, ended: false };
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), gather.next()).await.expect("no waiting for more");
        assert_eq!(first.unwrap().unwrap().len(), 1);
        drop(tx);
        assert!(gather.next().await.is_none());
    }

    #[tokio::test]
    async fn order_is_kept_across_batches_and_chunks() {
        let chunks: Vec<Result<Bytes, StoreError>> = (0..4)
            .map(|c| Ok(Bytes::from((c * 10_000..(c + 1) * 10_000).map(|n| format!("{{\"n\":{n}}}\n")).collect::<String>())))
            .collect();
        let out: Vec<_> = Pipeline::default().with(Renumber).apply_to(futures::stream::iter(chunks).boxed()).collect().await;
        let text: String = out.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect();
        let expected: String = (0..40_000u64).filter(|n| !n.is_multiple_of(7)).map(|n| format!("{{\"n\":{}}}\n", n * 2)).collect();
        assert_eq!(text, expected);
    }
}
