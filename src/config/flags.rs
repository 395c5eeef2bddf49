//! Command-line flags. Each is declared once, as an `#[arg]` on its field of `Settings`; this
//! layer keeps only the flags actually given (clap's own defaults would hide the config file
//! and the environment), read as text the way a `BULKFHIR_*` variable is.

use clap::{parser::ValueSource, Arg, ArgMatches, Args, Command, FromArgMatches};
use figment::{
    value::{Dict, Map, Value},
    Error, Metadata, Profile, Provider,
};

use super::{renamed, Settings};

/// The settings given on the command line: the top layer, over the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    given: Dict,
    deprecated: Vec<String>,
}

impl Flags {
    /// The flags of an argument list such as `["--workers", "2"]` (tests, embedding).
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, clap::Error> {
        let command = Self::augment_args(Command::new("bulkfhir").no_binary_name(true));
        Self::from_arg_matches(&command.try_get_matches_from(args)?)
    }

    /// Warnings for old flag names used.
    pub fn deprecated(&self) -> &[String] {
        &self.deprecated
    }
}

/// The flags `Settings` declares, and a hidden one for each old name of a top-level setting.
pub(super) fn flag_args() -> Vec<Arg> {
    let settings: Vec<Arg> = Settings::augment_args(Command::new("settings")).get_arguments().cloned().collect();
    let old = renamed::RENAMED
        .iter()
        .filter(|(_, new)| settings.iter().any(|a| a.get_id() == new))
        .map(|(old, _)| Arg::new(*old).long(flag_name(old)).value_name("VALUE").hide(true));
    settings.iter().cloned().chain(old).map(|arg| arg.global(true).required(false)).collect()
}

fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

impl Args for Flags {
    fn augment_args(command: Command) -> Command {
        command.args(flag_args())
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for Flags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        let mut old = Vec::new();
        for arg in flag_args() {
            let id = arg.get_id().as_str();
            if matches.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let Some(text) = matches.get_raw(id).and_then(|mut values| values.next_back()) else { continue };
            let value: Value = text.to_string_lossy().parse().unwrap_or_else(|never| match never {});
            match renamed::new_name(id) {
                Some(new) => old.push((id.to_owned(), new, value)),
                None => {
                    self.given.insert(id.to_owned(), value);
                }
            }
        }
        for (old, new, value) in old {
            self.deprecated.push(format!("flag --{} is deprecated: it is now --{} ({})", flag_name(&old), flag_name(new), renamed::UNTIL));
            self.given.entry(new.to_owned()).or_insert(value);
        }
        Ok(())
    }
}

impl Provider for Flags {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flags")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        Ok(Profile::Default.collect(self.given.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_flags_are_kept() {
        let flags = Flags::parse(["--workers", "7", "--listen", "0.0.0.0:9"]).unwrap();
        assert_eq!(flags.given.len(), 2, "{flags:?}");
        assert_eq!(flags.given["workers"].to_u128(), Some(7));
        assert_eq!(flags.given["listen"].as_str(), Some("0.0.0.0:9"));
        assert!(flags.deprecated.is_empty());
    }

    #[test]
    fn a_flag_is_checked_against_its_type() {
        let error = Flags::parse(["--workers", "many"]).unwrap_err();
        assert!(error.to_string().contains("--workers"), "{error}");
    }

    #[test]
    fn an_old_flag_works_with_a_warning_and_the_new_one_wins() {
        let flags = Flags::parse(["--retention", "60"]).unwrap();
        assert_eq!(flags.given["retention_seconds"].to_u128(), Some(60));
        assert_eq!(flags.deprecated, ["flag --retention is deprecated: it is now --retention-seconds (the old name stops working in the next release)"]);
        let both = Flags::parse(["--retention", "60", "--retention-seconds", "90"]).unwrap();
        assert_eq!(both.given["retention_seconds"].to_u128(), Some(90));
    }
}
