//! Strictness: every key of a config file and every `BULKFHIR_*` variable must name a setting.
//! Serde's `deny_unknown_fields` cannot do this (it does not work through `#[serde(flatten)]`),
//! so the known keys are those of the built-in defaults file, which lists every setting. Old
//! names of renamed settings pass, with a deprecation warning.

use std::{collections::BTreeSet, path::Path};

use figment::{
    providers::{Format, Toml},
    value::{Dict, Value},
    Provider,
};

use super::renamed;

/// Settings without a line in the defaults file (they have no default value).
const OPTIONAL_KEYS: &[&str] = &["auth.signing_key_file", "auth.clients"];
/// The keys of one `[[auth.clients]]` table.
const CLIENT_KEYS: &[&str] = &["client_id", "jwks", "jwks_url", "scopes"];
/// `BULKFHIR_` variables that are not settings: the scripts' path to the binary.
const NOT_SETTINGS: &[&str] = &["BULKFHIR_BIN"];
const ENV_PREFIX: &str = "BULKFHIR_";

/// The dotted keys of every setting (`max_file_bytes`, `auth.allow_open`).
pub struct KnownKeys(BTreeSet<String>);

/// What a check found: unknown keys stop start-up, deprecated ones are logged.
#[derive(Debug, Default)]
pub struct Findings {
    pub unknown: Vec<String>,
    pub deprecated: Vec<String>,
}

impl KnownKeys {
    pub fn from_defaults(defaults: &str) -> Self {
        let mut keys = BTreeSet::new();
        if let Some(dict) = Toml::string(defaults).data().ok().and_then(|mut d| d.remove(&figment::Profile::Default)) {
            collect(&dict, "", &mut keys);
        }
        keys.extend(OPTIONAL_KEYS.iter().map(|k| (*k).to_owned()));
        Self(keys)
    }

    #[cfg(test)]
    pub fn knows(&self, key: &str) -> bool {
        self.0.contains(key)
    }

    /// One message per unknown or deprecated key of the config file.
    pub fn check_file(&self, file: &Path) -> Findings {
        let Some(dict) = Toml::file(file).data().ok().and_then(|mut d| d.remove(&figment::Profile::Default)) else {
            return Findings::default(); // unreadable or invalid TOML: extraction reports it
        };
        let (mut unknown, mut old) = (Vec::new(), Vec::new());
        self.unknown_in(&dict, "", &mut unknown, &mut old);
        let file = file.display();
        Findings {
            unknown: unknown
                .into_iter()
                .map(|key| format!("unknown configuration key '{key}' in '{file}'{}", self.suggestion(&key, |k| format!("'{k}'"))))
                .collect(),
            deprecated: old
                .into_iter()
                .map(|(old, new)| format!("configuration key '{old}' in '{file}' is deprecated: it is now '{new}' ({})", renamed::UNTIL))
                .collect(),
        }
    }

    /// One message per `BULKFHIR_*` variable that names no setting, or an old name of one.
    pub fn check_env(&self, names: impl IntoIterator<Item = String>) -> Findings {
        let mut findings = Findings::default();
        let settings = names.into_iter().filter(|name| name.starts_with(ENV_PREFIX) && !NOT_SETTINGS.contains(&name.as_str()));
        for name in settings {
            let key = name[ENV_PREFIX.len()..].to_ascii_lowercase().replace("__", ".");
            if let Some(new) = renamed::new_name(&key) {
                findings.deprecated.push(format!("environment variable {name} is deprecated: it is now {} ({})", env_name(new), renamed::UNTIL));
            } else if !self.covers(&key) {
                findings.unknown.push(format!("unknown environment variable {name}{}", self.suggestion(&key, env_name)));
            }
        }
        findings
    }

    fn unknown_in(&self, dict: &Dict, prefix: &str, unknown: &mut Vec<String>, old: &mut Vec<(String, &'static str)>) {
        for (name, value) in dict {
            let key = format!("{prefix}{name}");
            if key == "auth.clients" {
                self.unknown_in_clients(value, unknown);
            } else if self.0.contains(&key) {
                // Known; a wrong type is extraction's to report.
            } else if let Some(new) = renamed::new_name(&key) {
                old.push((key, new));
            } else if let Value::Dict(_, inner) = value {
                self.unknown_in(inner, &format!("{key}."), unknown, old);
            } else {
                unknown.push(key);
            }
        }
    }

    fn unknown_in_clients(&self, value: &Value, unknown: &mut Vec<String>) {
        let Value::Array(_, clients) = value else { return };
        for (i, client) in clients.iter().enumerate() {
            let Value::Dict(_, fields) = client else { continue };
            let bad = fields.keys().filter(|k| !CLIENT_KEYS.contains(&k.as_str()));
            unknown.extend(bad.map(|k| format!("auth.clients[{i}].{k}")));
        }
    }

    /// A key is known, or lies under a known open table (one whose default is `{}`).
    fn covers(&self, key: &str) -> bool {
        self.0.contains(key) || self.0.iter().any(|known| key.strip_prefix(known.as_str()).is_some_and(|rest| rest.starts_with('.')))
    }

    /// "; did you mean X?" with the nearest known key, when one is near enough to be a typo.
    fn suggestion(&self, key: &str, show: impl Fn(&str) -> String) -> String {
        let nearest = self.0.iter().map(|known| (strsim::levenshtein(key, known), known)).min();
        match nearest {
            Some((distance, known)) if distance <= key.len().max(4) / 3 + 1 => format!("; did you mean {}?", show(known)),
            _ => "; config/default.toml lists every setting".to_owned(),
        }
    }
}

fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// Leaf keys of a table; an empty table or an array is a leaf (its contents are free).
fn collect(dict: &Dict, prefix: &str, keys: &mut BTreeSet<String>) {
    for (name, value) in dict {
        let key = format!("{prefix}{name}");
        match value {
            Value::Dict(_, inner) if !inner.is_empty() => collect(inner, &format!("{key}."), keys),
            _ => {
                keys.insert(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> KnownKeys {
        KnownKeys::from_defaults(super::super::DEFAULTS)
    }

    #[test]
    fn the_defaults_file_gives_every_key() {
        let keys = known();
        for key in ["listen", "max_file_bytes", "auth.allow_open", "azure_account", "auth.signing_key_file"] {
            assert!(keys.0.contains(key), "{key}");
        }
    }

    #[test]
    fn an_unknown_file_key_is_named_with_the_nearest_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_file_byte = 1\nworkers = 2\n[auth]\nalow_open = true\n[[auth.clients]]\nclient_id = \"a\"\nscope = []\n").unwrap();
        let errors = known().check_file(&file).unknown;
        assert_eq!(errors.len(), 3, "{errors:?}");
        let about = |key: &str| errors.iter().find(|e| e.contains(key)).unwrap_or_else(|| panic!("{key}: {errors:?}")).clone();
        assert!(about("'max_file_byte'").ends_with("did you mean 'max_file_bytes'?"), "{errors:?}");
        assert!(about("'auth.alow_open'").ends_with("did you mean 'auth.allow_open'?"), "{errors:?}");
        about("'auth.clients[0].scope'");
    }

    #[test]
    fn an_unknown_variable_is_named_with_the_nearest_known_one() {
        let names = ["BULKFHIR_MAX_FILE_BYTE", "BULKFHIR_WORKERS", "BULKFHIR_AUTH__ALLOW_OPEN", "BULKFHIR_BIN", "PATH", "BULKFHIR_ZZZZZZZZZZ"];
        let errors = known().check_env(names.iter().map(|n| (*n).to_owned())).unknown;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0], "unknown environment variable BULKFHIR_MAX_FILE_BYTE; did you mean BULKFHIR_MAX_FILE_BYTES?");
        assert!(errors[1].contains("BULKFHIR_ZZZZZZZZZZ; config/default.toml lists every setting"), "{errors:?}");
    }

    #[test]
    fn an_old_name_passes_with_a_warning_naming_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "retention = 60\n").unwrap();
        let found = known().check_file(&file);
        assert!(found.unknown.is_empty(), "{found:?}");
        assert_eq!(found.deprecated.len(), 1, "{found:?}");
        assert!(found.deprecated[0].starts_with("configuration key 'retention' in '") && found.deprecated[0].contains("it is now 'retention_seconds'"), "{found:?}");

        let found = known().check_env(["BULKFHIR_RETENTION".to_owned()]);
        assert!(found.unknown.is_empty(), "{found:?}");
        assert!(found.deprecated[0].starts_with("environment variable BULKFHIR_RETENTION is deprecated: it is now BULKFHIR_RETENTION_SECONDS"), "{found:?}");
    }
}
