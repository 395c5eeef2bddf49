//! De-identification: the rules of Microsoft's FHIR Tools for Anonymization (R4 configuration
//! format, the same methods and algorithms), applied to one resource at a time. It imports only
//! `fhir`; the export pipeline and the `anonymize` command are its two users.

pub mod command;
mod config;
mod crypto;
mod dates;
mod document;
mod generalize;
mod perturb;
mod process;
mod redact;
mod security;
mod state;
mod substitute;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use rustc_hash::FxHashMap;
use serde_json::Value;

pub use config::DateShiftScope;
use config::{Config, Parameters, ProcessingErrors, Rule, Selector};
pub use crypto::decrypt;
use document::Document;
use process::Run;

/// A configuration that parsed and validated: every rule's FHIRPath compiled, every method and
/// parameter known. Cheap to share across threads (`Arc<Engine>`).
pub struct Engine {
    rules: Vec<Rule>,
    parameters: Parameters,
    processing_errors: ProcessingErrors,
    hmac: crypto::HashKey,
    encrypt_key: Vec<u8>,
    shift_key: dates::ShiftKey,
    /// Rule indexes that apply to each resource type, in file order.
    by_type: FxHashMap<&'static str, Vec<u16>>,
    /// The lookup buckets of `nodesByType`/`nodesByName` rules: type or name -> bucket.
    type_keys: FxHashMap<String, usize>,
    name_keys: FxHashMap<String, usize>,
    lookup_keys: usize,
    /// Each rule's bucket (meaningful for lookup rules only).
    rule_bucket: Vec<usize>,
    description: Value,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("rules", &self.rules.len()).field("parameters", &self.parameters).finish_non_exhaustive()
    }
}

/// Why a configuration was refused: the message names the rule, method or parameter at fault,
/// and never contains a key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why one resource could not be de-identified (`processingErrors: raise`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProcessingError(pub String);

/// What `dateShiftScope: file | folder` hash beside the key; `resource` scope uses the resource id.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub file: String,
    pub folder: String,
}

/// The last path segment, as the reference engine takes a file's or folder's name.
fn last_segment(path: &str) -> &str {
    let trimmed = path.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed)
}

impl Engine {
    /// Parses and validates a configuration file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let Config { processing_errors, rules, parameters } = config::parse(bytes)?;
        if rules.len() > u16::MAX as usize {
            return Err(ConfigError(format!("{} rules are more than this server takes ({})", rules.len(), u16::MAX)));
        }
        let mut by_type: FxHashMap<&'static str, Vec<u16>> = FxHashMap::default();
        for t in crate::fhir::ResourceType::all() {
            let applies = |r: &Rule| r.resource_type == t.as_str() || matches!(r.resource_type.as_str(), "" | "Resource" | "DomainResource");
            by_type.insert(t.as_str(), (0..rules.len()).filter(|&i| applies(&rules[i])).map(|i| i as u16).collect());
        }
        let (mut type_keys, mut name_keys) = (FxHashMap::default(), FxHashMap::default());
        let mut lookup_keys = 0;
        let mut rule_bucket = Vec::with_capacity(rules.len());
        for rule in &rules {
            let keys = match &rule.selector {
                Selector::ByType(ty, _) => Some((&mut type_keys, ty)),
                Selector::ByName(name, _) => Some((&mut name_keys, name)),
                _ => None,
            };
            rule_bucket.push(match keys {
                Some((keys, key)) => *keys.entry(key.clone()).or_insert_with(|| {
                    lookup_keys += 1;
                    lookup_keys - 1
                }),
                None => 0,
            });
        }
        let description = config::without_keys(bytes);
        Ok(Engine {
            hmac: crypto::HashKey::new(&parameters.crypto_hash_key),
            encrypt_key: parameters.encrypt_key.as_bytes().to_vec(),
            shift_key: dates::ShiftKey::new(&parameters.date_shift_key),
            rules,
            parameters,
            processing_errors,
            by_type,
            type_keys,
            name_keys,
            lookup_keys,
            rule_bucket,
            description,
        })
    }

    /// The configuration as given, its keys replaced by whether they were set: safe to show in
    /// a manifest or a log.
    pub fn describe(&self) -> &Value {
        &self.description
    }

    /// The number of rules, for messages.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn rules_for(&self, resource_type: &str) -> &[u16] {
        self.by_type.get(resource_type).map_or(&[], Vec::as_slice)
    }

    /// De-identifies one resource's JSON text, appending the result to `out`. Under
    /// `processingErrors: skip` a failure gives the empty resource the reference engine writes,
    /// not an error; under `raise` the error names the resource (by its id before
    /// de-identification) and the empty resource is written likewise.
    pub fn apply_line(&self, line: &[u8], scope: &Scope, out: &mut Vec<u8>) -> Result<(), ProcessingError> {
        let doc = Document::from_slice(line).map_err(|e| ProcessingError(e.to_string()))?;
        let resource_type = doc.nodes[0].ty;
        // Taken before the rules run: the id may be hashed.
        let id = doc.root_id().into_owned();
        let prefix = match self.parameters.date_shift_scope {
            DateShiftScope::Resource => "",
            DateShiftScope::File => last_segment(&scope.file),
            DateShiftScope::Folder => last_segment(&scope.folder),
        };
        let mut run = Run::new(self, doc, prefix);
        match run.visit(0) {
            Ok(_) => {
                let tags = &run.tags;
                let tag_of = |id: u32| tags.get(id as usize).copied().unwrap_or(0);
                run.state.doc.write(0, &tag_of, out);
                Ok(())
            }
            Err(failure) => {
                // A `Value` always writes.
                let _ = serde_json::to_writer(&mut *out, &security::empty_resource(resource_type));
                match (failure, self.processing_errors) {
                    (state::Failure::Processing(_), ProcessingErrors::Skip) => Ok(()),
                    (state::Failure::Processing(problem) | state::Failure::NotApplicable(problem), _) => {
                        Err(ProcessingError(format!("{resource_type}/{id}: {problem}")))
                    }
                }
            }
        }
    }

    /// De-identifies one parsed resource in place, as [`Self::apply_line`] does its text (on
    /// an error that is not a processing error, the resource is left as it was).
    pub fn apply(&self, resource: &mut Value, scope: &Scope) -> Result<(), ProcessingError> {
        let line = serde_json::to_vec(resource).map_err(|e| ProcessingError(e.to_string()))?;
        let mut out = Vec::with_capacity(line.len());
        let result = self.apply_line(&line, scope, &mut out);
        if !out.is_empty() {
            *resource = serde_json::from_slice(&out).map_err(|e| ProcessingError(e.to_string()))?;
        }
        result
    }
}
