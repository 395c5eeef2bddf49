//! The de-identification engine against Microsoft's FHIR Tools for Anonymization: its functional
//! and processor test cases rewritten as ours (fixtures in tests/fixtures/anonymize), its
//! configuration validator's cases, and properties of its R4 sample configuration on the Synthea
//! sample. No server, no database: the engine on JSON values.

mod config_errors;
mod crypto_hash;
mod date_shift;
mod encrypt;
mod generalize;
mod helpers;
mod perturb;
mod redact;
mod reference_cases;
mod rule_selection;
mod substitute;
mod synthea;
