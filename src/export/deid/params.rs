//! The kick-off parameters of a de-identified export, as the seed system names them:
//! `_anonymizationConfig` (a file in the configuration store), `_anonymizationConfigEtag`
//! (the version it must be), and `_anonymizationConfigCollectionReference` (not supported).

use crate::{
    export::{
        params::RawParams,
        request::{invalid, single},
        ExportError,
    },
    model::request::Anonymization,
};

pub const CONFIG: &str = "_anonymizationConfig";
pub const ETAG: &str = "_anonymizationConfigEtag";
pub const COLLECTION_REFERENCE: &str = "_anonymizationConfigCollectionReference";

/// Every parameter name this module reads.
pub const NAMES: [&str; 3] = [CONFIG, ETAG, COLLECTION_REFERENCE];

/// Longest configuration name accepted (object names and file names allow about this).
const MAX_NAME: usize = 255;

/// Reads the parameters; None when no configuration is asked for. `refuse` is the request's
/// strict/lenient handling, for the parameter this server does not support.
pub fn parse(
    raw: &RawParams,
    refuse: &mut impl FnMut(ExportError) -> Result<(), ExportError>,
) -> Result<Option<Anonymization>, ExportError> {
    if raw.values(COLLECTION_REFERENCE).next().is_some() {
        refuse(ExportError::InvalidParameter {
            name: COLLECTION_REFERENCE.into(),
            reason: format!("is not supported; name one configuration file of the anonymization store with {CONFIG}"),
        })?;
    }
    let config = single(raw, CONFIG)?.map(str::trim).filter(|c| !c.is_empty());
    let etag = single(raw, ETAG)?.map(str::trim).filter(|e| !e.is_empty());
    match (config, etag) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(invalid(ETAG, format!("applies only with {CONFIG}"))),
        (Some(config), etag) => {
            check_name(config).map_err(|reason| invalid(CONFIG, reason))?;
            Ok(Some(Anonymization { config: config.to_owned(), etag: etag.map(str::to_owned) }))
        }
    }
}

/// A configuration name is one file name: no folder, nothing that could leave the store.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.len() > MAX_NAME || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(format!(
            "'{name}' is not a configuration name: use up to {MAX_NAME} letters, digits, '.', '-' and '_', not starting with '.' (a file of the anonymization store, no folder)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(query: &str, lenient: bool) -> (Result<Option<Anonymization>, ExportError>, Vec<String>) {
        let raw = RawParams::from_query(query).unwrap();
        let mut warnings = Vec::new();
        let mut refuse = |e: ExportError| {
            if lenient {
                warnings.push(e.to_string());
                Ok(())
            } else {
                Err(e)
            }
        };
        let result = parse(&raw, &mut refuse);
        (result, warnings)
    }

    #[test]
    fn names_and_etags_parse() {
        let (r, _) = run("_anonymizationConfig=safe-harbor.json&_anonymizationConfigEtag=%220x8D%22", false);
        assert_eq!(r.unwrap(), Some(Anonymization { config: "safe-harbor.json".into(), etag: Some("\"0x8D\"".into()) }));
        assert_eq!(run("", false).0.unwrap(), None);
    }

    #[test]
    fn names_that_leave_the_store_are_refused() {
        for name in ["../x.json", "a/b.json", ".hidden", "a%5Cb", &"n".repeat(256)] {
            let (r, _) = run(&format!("_anonymizationConfig={name}"), true);
            assert!(matches!(r, Err(ExportError::InvalidParameter { name, .. }) if name == CONFIG), "{name}");
        }
        assert!(matches!(run("_anonymizationConfigEtag=x", false).0, Err(ExportError::InvalidParameter { name, .. }) if name == ETAG));
    }

    #[test]
    fn collection_references_are_refused_strict_and_reported_lenient() {
        let query = "_anonymizationConfigCollectionReference=acr.io/x&_anonymizationConfig=c.json";
        assert!(matches!(run(query, false).0, Err(ExportError::InvalidParameter { name, reason }) if name == COLLECTION_REFERENCE && reason.contains("not supported")));
        let (r, warnings) = run(query, true);
        assert_eq!(r.unwrap().unwrap().config, "c.json");
        assert!(warnings[0].contains(COLLECTION_REFERENCE), "{warnings:?}");
    }
}
