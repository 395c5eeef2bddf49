//! FHIR R4 search for `_typeFilter`: the R4 search-parameter table (its expressions run on
//! `fhir::fhirpath`), the query parser, the matcher, and the part of a filter a store can apply
//! on its indexed columns.

pub use crate::fhir::fhirpath;
mod matcher;
pub mod pushdown;
pub mod query;
pub mod ranges;
pub mod table;

pub use pushdown::Narrowing;
pub use query::{CompiledFilter, FilterError, TypeFilter};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
