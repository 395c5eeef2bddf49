//! Settings renamed (to say their unit). An old name keeps working for one release: its value
//! is read as the new key's, and start-up logs a warning naming both.

use figment::{
    value::{Dict, Map},
    Error, Metadata, Profile, Provider,
};

/// (old, new) dotted keys. Drop an entry one release after it was added.
pub const RENAMED: &[(&str, &str)] = &[("retention", "retention_seconds")];

/// Said with every use of an old name.
pub const UNTIL: &str = "the old name stops working in the next release";

/// The new name of an old key.
pub fn new_name(old: &str) -> Option<&'static str> {
    RENAMED.iter().find(|(o, _)| *o == old).map(|(_, new)| *new)
}

/// A provider whose old keys read as the new ones; where both are given, the new one wins.
pub struct Renamed<P>(pub P);

impl<P: Provider> Provider for Renamed<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            for (old, new) in RENAMED {
                rename(dict, old, new);
            }
        }
        Ok(data)
    }

    fn profile(&self) -> Option<Profile> {
        self.0.profile()
    }
}

fn rename(dict: &mut Dict, old: &str, new: &str) {
    let Some(value) = take(dict, old) else { return };
    if lookup(dict, new) {
        return;
    }
    let (mut table, mut rest) = (dict, new);
    while let Some((head, tail)) = rest.split_once('.') {
        let entry = table.entry(head.to_owned()).or_insert_with(|| Dict::new().into());
        let figment::value::Value::Dict(_, inner) = entry else { return };
        (table, rest) = (inner, tail);
    }
    table.insert(rest.to_owned(), value);
}

fn take(dict: &mut Dict, key: &str) -> Option<figment::value::Value> {
    match key.split_once('.') {
        None => dict.remove(key),
        Some((head, tail)) => match dict.get_mut(head) {
            Some(figment::value::Value::Dict(_, inner)) => take(inner, tail),
            _ => None,
        },
    }
}

fn lookup(dict: &Dict, key: &str) -> bool {
    match key.split_once('.') {
        None => dict.contains_key(key),
        Some((head, tail)) => matches!(dict.get(head), Some(figment::value::Value::Dict(_, inner)) if lookup(inner, tail)),
    }
}

#[cfg(test)]
mod tests {
    use figment::{
        providers::{Format, Serialized, Toml},
        Figment,
    };

    use super::*;

    fn read(toml: &str, key: &str) -> Option<u64> {
        let provider = Toml::string(toml);
        Figment::from(Renamed(provider)).extract_inner(key).ok()
    }

    #[test]
    fn an_old_key_reads_as_the_new_one_and_the_new_one_wins() {
        assert_eq!(read("retention = 60", "retention_seconds"), Some(60));
        assert_eq!(read("retention = 60", "retention"), None);
        assert_eq!(read("retention = 60\nretention_seconds = 90", "retention_seconds"), Some(90));
        assert_eq!(read("retention_seconds = 90\nretention = 60", "retention_seconds"), Some(90));
    }

    #[test]
    fn nested_keys_are_renamed_in_their_table() {
        let mut dict = Dict::new();
        dict.insert("auth".into(), Figment::from(Serialized::defaults(serde_json::json!({ "token": 5 }))).extract::<Dict>().unwrap().into());
        rename(&mut dict, "auth.token", "auth.token_seconds");
        let auth = dict["auth"].as_dict().unwrap();
        assert!(auth.contains_key("token_seconds") && !auth.contains_key("token"), "{dict:?}");
    }
}
