//! What happens to each exported resource between the store and the file. Most exports need
//! nothing here: the store's text goes out byte for byte. Parameters that look inside resources
//! (`_typeFilter`, `_elements`) add stages; a type with stages has each line parsed once, run
//! through the stages in order, and written back out only if a stage changed it.

mod elements;
mod id_in;
mod parallel;
mod type_filter;

pub use id_in::IdIn;

use std::error::Error;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use serde_json::Value;

use elements::ElementsStage;
use type_filter::TypeFilterStage;

use crate::{
    fhir::{elements::Subset, ResourceType},
    model::request::{ExportRequest, TypeFilterError},
    store::StoreError,
};

/// What a stage decided for one resource.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Kept, and the stage changed it: it must be written from the parsed value.
    Changed,
    Drop,
}

pub trait Stage: Send + Sync {
    /// Decides on one resource, possibly rewriting it. An error fails the task.
    fn apply(&self, resource: &mut Value) -> Result<Verdict, StageError>;

    /// Rewrites one resource's text straight into `out`, for a stage with a faster way than
    /// through the parsed value (de-identification); None where it has none. Used when the
    /// stage is a type's only one.
    fn rewrite(&self, _line: &[u8], _out: &mut Vec<u8>) -> Option<Result<(), StageError>> {
        None
    }

    /// Costs enough per resource that a type's lines are worth spreading over the cores
    /// (de-identification), rather than run inline.
    fn heavy(&self) -> bool {
        false
    }
}

/// Why a stage could not decide on a resource: the stage's name, and its own error as the
/// source (kept to the task's failure, so the log shows the whole chain).
#[derive(Debug, thiserror::Error)]
#[error("the {stage} stage failed")]
pub struct StageError {
    pub stage: &'static str,
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

impl StageError {
    pub fn new(stage: &'static str, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self { stage, source: source.into() }
    }
}

/// A stored line that does not parse: `what` names it in the client's terms.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not valid JSON")]
pub struct NotJson {
    pub what: String,
    #[source]
    pub source: serde_json::Error,
}

impl NotJson {
    pub fn new(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self { what: what.into(), source }
    }
}

/// The stages for one type of one export, in the order they run.
#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// The stages the request asks for on this type. Every parameter that looks inside
    /// resources adds its stage here, filters before rewrites.
    pub fn for_type(request: &ExportRequest, resource_type: &ResourceType) -> Result<Self, TypeFilterError> {
        // No de-identification: `None` of any stage type.
        Self::for_output(request, resource_type, None::<ElementsStage>)
    }

    /// The stages of what is written: those of [`Self::for_type`] with de-identification
    /// between the filter and `_elements` (the filter judges stored data; `_elements` picks
    /// from what is released). Reads that only select (referenced ids, Provenance targets)
    /// use `for_type`: they compare stored ids.
    pub fn for_output(request: &ExportRequest, resource_type: &ResourceType, deidentify: Option<impl Stage + 'static>) -> Result<Self, TypeFilterError> {
        let mut pipeline = Self::default();
        let filters = request.filters_for(resource_type)?;
        if !filters.is_empty() {
            pipeline = pipeline.with(TypeFilterStage { filters });
        }
        if let Some(deidentify) = deidentify {
            pipeline = pipeline.with(deidentify);
        }
        if let Some(subset) = request.elements.as_deref().and_then(|specs| Subset::for_type(specs, resource_type.as_str())) {
            pipeline = pipeline.with(ElementsStage(subset));
        }
        Ok(pipeline)
    }

    pub fn with(mut self, stage: impl Stage + 'static) -> Self {
        self.stages.push(Box::new(stage));
        self
    }

    /// Puts a stage before all the others (a selection that must run before any rewrite).
    pub fn first(mut self, stage: impl Stage + 'static) -> Self {
        self.stages.insert(0, Box::new(stage));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Runs one line (one resource's JSON, no newline) through the stages: None when a stage
    /// dropped it, otherwise the text to write.
    pub fn run_line<'a>(&self, line: &'a [u8]) -> Result<Option<std::borrow::Cow<'a, [u8]>>, PipelineError> {
        if self.stages.is_empty() {
            return Ok(Some(line.into()));
        }
        let mut resource: Value = serde_json::from_slice(line).map_err(|e| NotJson::new("stored resource", e))?;
        let mut changed = false;
        for stage in &self.stages {
            match stage.apply(&mut resource)? {
                Verdict::Keep => {}
                Verdict::Changed => changed = true,
                Verdict::Drop => return Ok(None),
            }
        }
        if changed {
            Ok(Some(serde_json::to_vec(&resource).map_err(PipelineError::Write)?.into()))
        } else {
            Ok(Some(line.into()))
        }
    }

    /// Runs a run of whole lines through the stages: the lines to write.
    pub fn run_lines(&self, lines: &[u8]) -> Result<Bytes, PipelineError> {
        let mut out = Vec::with_capacity(lines.len());
        self.run_lines_into(lines, &mut out)?;
        Ok(Bytes::from(out))
    }

    /// Runs a run of whole lines through the stages, appending the lines to write to `out`.
    pub fn run_lines_into(&self, lines: &[u8], out: &mut Vec<u8>) -> Result<(), PipelineError> {
        for line in ndjson_lines(lines) {
            if let [stage] = self.stages.as_slice()
                && let Some(result) = stage.rewrite(line, out)
            {
                result?;
                out.push(b'\n');
                continue;
            }
            if let Some(text) = self.run_line(line)? {
                out.extend_from_slice(&text);
                out.push(b'\n');
            }
        }
        Ok(())
    }

    /// Applies the stages to a stream of whole NDJSON lines; an empty pipeline passes it through.
    pub fn apply_to(self, source: BoxStream<'static, Result<Bytes, StoreError>>) -> BoxStream<'static, Result<Bytes, PipelineError>> {
        if self.is_empty() {
            return source.map(|chunk| chunk.map_err(PipelineError::Store)).boxed();
        }
        if self.stages.iter().any(|s| s.heavy()) {
            return parallel::apply(std::sync::Arc::new(self), source);
        }
        source
            .map(move |chunk| {
                let chunk = chunk.map_err(PipelineError::Store)?;
                self.run_lines(&chunk)
            })
            .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.is_empty())))
            .boxed()
    }
}

/// The non-empty lines of NDJSON text (memchr: a byte-by-byte split cost as much as a
/// de-identification stage's rule walks).
pub fn ndjson_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len())).filter_map(move |end| {
        let line = &text[start..end];
        start = end + 1;
        (!line.is_empty()).then_some(line)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    NotJson(#[from] NotJson),
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A changed resource could not be written back out (a bug: a `Value` always serializes).
    #[error("writing a resource back as JSON failed")]
    Write(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropMale;
    impl Stage for DropMale {
        fn apply(&self, r: &mut Value) -> Result<Verdict, StageError> {
            Ok(if r["gender"] == "male" { Verdict::Drop } else { Verdict::Keep })
        }
    }

    struct Stamp;
    impl Stage for Stamp {
        fn apply(&self, r: &mut Value) -> Result<Verdict, StageError> {
            r["stamped"] = true.into();
            Ok(Verdict::Changed)
        }
    }

    async fn run(pipeline: Pipeline, chunks: &[&str]) -> String {
        let chunks: Vec<_> = chunks.iter().map(|c| Ok(Bytes::from(c.to_string()))).collect();
        let source = futures::stream::iter(chunks).boxed();
        let out: Vec<_> = pipeline.apply_to(source).collect().await;
        out.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect()
    }

    #[tokio::test]
    async fn an_empty_pipeline_passes_bytes_through_untouched() {
        let text = "{\"id\":\"a\",  \"x\":1}\n";
        assert_eq!(run(Pipeline::default(), &[text]).await, text);
    }

    #[tokio::test]
    async fn filters_keep_original_bytes_and_rewrites_reserialize() {
        let chunks = ["{\"id\":\"a\", \"gender\":\"male\"}\n{\"id\":\"b\", \"gender\":\"female\"}\n", "{\"id\":\"c\",\"gender\":\"male\"}\n"];
        assert_eq!(run(Pipeline::default().with(DropMale), &chunks).await, "{\"id\":\"b\", \"gender\":\"female\"}\n");
        assert_eq!(
            run(Pipeline::default().with(DropMale).with(Stamp), &chunks).await,
            "{\"id\":\"b\",\"gender\":\"female\",\"stamped\":true}\n"
        );
    }
}
