//! SMART system scopes, v1 (`system/Patient.read`) and v2 (`system/Observation.rs`): parsing,
//! granting the part of a request a client is allowed, and what a grant lets a client export.

use std::{collections::BTreeSet, fmt};

use crate::{model::requester::TypeAccess, fhir::ResourceType};

/// A registered scope that is not a SMART system scope.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a SMART system scope (system/Type.read, system/*.rs, ...)")]
pub struct NotASystemScope(pub String);

/// Permission letters of SMART v2, in their canonical order; v1 names map onto them.
const LETTERS: [char; 5] = ['c', 'r', 'u', 'd', 's'];
const READ: u8 = 0b00010 | 0b10000; // r + s
const WRITE: u8 = 0b00001 | 0b00100 | 0b01000; // c + u + d
const ALL: u8 = READ | WRITE;

/// One `system/...` scope. Patient and user scopes, `openid` and the like are not for backend
/// services and never parse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scope {
    /// None is `*`.
    pub resource: Option<String>,
    /// Bit i is `LETTERS[i]`.
    perms: u8,
    /// Written in v1 form (`read`, `write`, `*`); the grant answers in the form asked.
    v1: bool,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("system/")?;
        let (resource, perms) = rest.rsplit_once('.')?;
        let resource = match resource {
            "*" => None,
            name if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()) => Some(name.to_owned()),
            _ => return None,
        };
        let (perms, v1) = match perms {
            "read" => (READ, true),
            "write" => (WRITE, true),
            "*" => (ALL, true),
            letters => (v2_perms(letters)?, false),
        };
        Some(Self { resource, perms, v1 })
    }

    /// The part of `self` (requested) that `allowed` covers, in the form of the request.
    fn within(&self, allowed: &Self) -> Option<Self> {
        let resource = match (&self.resource, &allowed.resource) {
            (None, other) | (other, None) => other.clone(),
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            _ => return None,
        };
        let perms = self.perms & allowed.perms;
        let perms = if self.v1 {
            // v1 can only say read, write or both: keep what it can say.
            match (perms & READ == READ, perms & WRITE == WRITE) {
                (true, true) => ALL,
                (true, false) => READ,
                (false, true) => WRITE,
                (false, false) => 0,
            }
        } else {
            perms
        };
        (perms != 0).then_some(Self { resource, perms, v1: self.v1 })
    }

    fn covers(&self, other: &Self) -> bool {
        self.resource.is_none() || self.resource == other.resource
    }

    /// Export reads and searches: v1 `read` or v2 `rs`.
    pub fn allows_export(&self) -> bool {
        self.perms & READ == READ
    }

    /// Whether this scope grants the permission letter (`c`, `r`, `u`, `d`, `s`) on the type.
    pub fn allows(&self, resource_type: &str, letter: char) -> bool {
        let bit = LETTERS.iter().position(|l| *l == letter).map_or(0, |i| 1 << i);
        self.resource.as_deref().is_none_or(|r| r == resource_type) && self.perms & bit != 0
    }
}

fn v2_perms(letters: &str) -> Option<u8> {
    // Letters appear at most once each, in the order c r u d s.
    let mut perms = 0u8;
    let mut next = 0;
    for c in letters.chars() {
        let i = LETTERS[next..].iter().position(|l| *l == c)? + next;
        perms |= 1 << i;
        next = i + 1;
    }
    (perms != 0).then_some(perms)
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource.as_deref().unwrap_or("*");
        let perms: String = if self.v1 {
            match self.perms {
                ALL => "*".into(),
                READ => "read".into(),
                _ => "write".into(),
            }
        } else {
            LETTERS.iter().enumerate().filter(|(i, _)| self.perms & (1 << i) != 0).map(|(_, c)| *c).collect()
        };
        write!(f, "system/{resource}.{perms}")
    }
}

/// A set of scopes, as a token or a client registration holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    /// Parses a space-separated list, keeping the system scopes and dropping the rest.
    pub fn parse_lenient(text: &str) -> Self {
        Self(text.split_whitespace().filter_map(Scope::parse).collect())
    }

    /// Parses a client's registered scopes: each must be a valid system scope.
    pub fn parse_strict<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, NotASystemScope> {
        items
            .into_iter()
            .flat_map(str::split_whitespace)
            .map(|s| Scope::parse(s).ok_or_else(|| NotASystemScope(s.to_owned())))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The subset of `requested` these (allowed) scopes cover. Wildcards narrow to what is
    /// allowed; types the server does not hold are granted like any other (SMART: do not refuse
    /// a request for naming them).
    pub fn grant(&self, requested: &Self) -> Self {
        let mut granted: Vec<Scope> = Vec::new();
        for want in &requested.0 {
            for scope in self.0.iter().filter_map(|allowed| want.within(allowed)) {
                let redundant = granted.iter().any(|g| g.covers(&scope) && g.perms & scope.perms == scope.perms && g.v1 == scope.v1);
                if !redundant {
                    granted.retain(|g| !(scope.covers(g) && scope.perms & g.perms == g.perms && g.v1 == scope.v1));
                    granted.push(scope);
                }
            }
        }
        Self(granted)
    }

    /// The resource types these scopes let a client export.
    pub fn export_access(&self) -> TypeAccess {
        let readable = self.0.iter().filter(|s| s.allows_export());
        let mut types = BTreeSet::new();
        for scope in readable {
            match &scope.resource {
                None => return TypeAccess::All,
                Some(name) => types.extend(ResourceType::parse(name)),
            }
        }
        TypeAccess::Only(types)
    }

    pub fn allows(&self, resource_type: &str, letter: char) -> bool {
        self.0.iter().any(|s| s.allows(resource_type, letter))
    }

    /// The first scope's type that is not an R4 resource type (`system/UnknownResource.read`):
    /// such a request is `invalid_scope`, unlike one naming a type the server merely holds none of.
    pub fn unknown_type(&self) -> Option<&str> {
        self.0.iter().filter_map(|s| s.resource.as_deref()).find(|name| ResourceType::parse(name).is_none())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.0.iter().map(Scope::to_string).collect();
        f.write_str(&texts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(allowed: &str, requested: &str) -> String {
        Scopes::parse_lenient(allowed).grant(&Scopes::parse_lenient(requested)).to_string()
    }

    #[test]
    fn parses_v1_and_v2_and_refuses_the_rest() {
        for ok in ["system/*.read", "system/Patient.read", "system/*.*", "system/Observation.rs", "system/*.cruds", "system/Patient.write"] {
            assert_eq!(Scope::parse(ok).unwrap().to_string(), ok);
        }
        for bad in ["patient/*.read", "openid", "system/Patient", "system/*.sr", "system/*.rr", "system/Pat-ient.read", "system/*.x", "system/Observation.rs?code=1"] {
            assert!(Scope::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn grants_the_allowed_subset_in_the_form_asked() {
        assert_eq!(grant("system/*.read", "system/Patient.read system/Observation.rs"), "system/Patient.read system/Observation.rs");
        assert_eq!(grant("system/Patient.read", "system/*.read"), "system/Patient.read");
        assert_eq!(grant("system/Patient.rs", "system/*.cruds"), "system/Patient.rs");
        assert_eq!(grant("system/*.read", "system/*.*"), "system/*.read");
        assert_eq!(grant("system/Patient.read", "system/Observation.read"), "");
        assert_eq!(grant("system/*.read", "system/*.write patient/*.read"), "");
        // Types the server does not hold are still granted.
        assert_eq!(grant("system/*.rs", "system/Medication.rs"), "system/Medication.rs");
        // v1 cannot say "r without s": nothing to grant.
        assert_eq!(grant("system/*.r", "system/Patient.read"), "");
    }

    #[test]
    fn unknown_types_are_found_and_known_ones_are_not() {
        assert_eq!(Scopes::parse_lenient("system/Patient.read system/UnknownResource.r").unknown_type(), Some("UnknownResource"));
        assert_eq!(Scopes::parse_lenient("system/*.read system/Medication.rs system/Patient.cruds").unknown_type(), None);
    }

    #[test]
    fn export_access_follows_read_scopes() {
        assert_eq!(Scopes::parse_lenient("system/*.rs").export_access(), TypeAccess::All);
        let only = Scopes::parse_lenient("system/Patient.read system/Observation.rs system/Condition.write").export_access();
        let TypeAccess::Only(types) = only else { panic!("not all types") };
        let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["Observation", "Patient"]);
    }
}
