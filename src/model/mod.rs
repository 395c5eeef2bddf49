//! The records every layer shares: export jobs, their tasks and files, the request they carry,
//! who asks (the requester) and registered clients. Imports only `fhir`; the store keeps these,
//! the export domain and the API work with them.

pub mod client;
pub mod job;
pub mod request;
pub mod requester;
