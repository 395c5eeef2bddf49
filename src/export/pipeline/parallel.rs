//! Runs a heavy pipeline (de-identification parses and rewrites every resource) on all cores:
//! the store's chunks are cut at line ends into batches, each batch runs on a background thread,
//! and the results are taken in order. At most a few batches are in flight per task, so memory
//! stays bounded whatever the size of the type.

use std::sync::Arc;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};

use super::{Pipeline, PipelineError};
use crate::store::StoreError;

/// Lines per batch are cut at about this many bytes: small enough that two cores share even
/// a small type, large enough that a batch's thread hand-off costs nothing beside its work.
const BATCH_BYTES: usize = 128 * 1024;

/// Applies `pipeline` to a stream of whole-line chunks, batches in flight on every core.
pub fn apply(pipeline: Arc<Pipeline>, source: BoxStream<'static, Result<Bytes, StoreError>>) -> BoxStream<'static, Result<Bytes, PipelineError>> {
    // One more than the cores, so a core never waits for the next batch to be handed over.
    let in_flight = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
    source
        .flat_map(|chunk| {
            let batches: Vec<Result<Bytes, PipelineError>> = match chunk {
                Ok(chunk) => batches(chunk).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(PipelineError::Store(e))],
            };
            futures::stream::iter(batches)
        })
        .map(move |batch| {
            let pipeline = pipeline.clone();
            async move {
                let batch = batch?;
                match crate::low_priority_runtime::spawn_blocking(move || pipeline.run_lines(&batch)).await {
                    Ok(result) => result,
                    // A panic in a stage is the task's panic: the worker reports it as one.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(PipelineError::Stage(super::StageError::new("batch", e))),
                }
            }
        })
        .buffered(in_flight)
        .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.is_empty())))
        .boxed()
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
