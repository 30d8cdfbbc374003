//! Identifier newtypes: the one place where untrusted names from the repository are checked.
//!
//! A tenant id becomes a PostgreSQL schema and role name, a topic name and an object-store
//! prefix or bucket name. Once a value is a [`TenantId`] (or [`EnvName`], …) every plane may
//! rely on it being plain lowercase ASCII that fits those namespaces; the planes still quote
//! identifiers when they build SQL, but they never have to re-validate.

use serde::Serialize;
use std::fmt;

/// Why an identifier was refused. The message is written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IdError {
    pub message: String,
    pub(crate) hint: &'static str,
}

impl IdError {
    /// Why, and what an id looks like: one line for an API field or a CLI argument.
    pub(crate) fn explained(&self) -> String {
        format!("{} ({})", self.message, self.hint)
    }
}

/// Names that PostgreSQL or the platform keep for themselves.
const RESERVED: &[&str] = &[
    "public",
    "information_schema",
    "postgres",
    "template0",
    "template1",
    "tenancy",
];

/// Longest identifier PostgreSQL keeps without truncating (NAMEDATALEN - 1).
pub(crate) const MAX_SQL_IDENT: usize = 63;

/// What [`TenantId::parse`] and [`OrgId::parse`] accept, as a regular expression: the pattern
/// of `identifier` in schemas/common.schema.json and of every tenant or organization id in the
/// OpenAPI document (the parse also refuses reserved names and the `pg_` prefix).
pub(crate) const ID_PATTERN: &str = "^[a-z][a-z0-9_]{2,62}$";

/// What [`EnvName::parse`] accepts: `envName` in schemas/common.schema.json, and every
/// environment name in the OpenAPI document.
pub(crate) const ENV_NAME_PATTERN: &str = "^[a-z][a-z0-9]{1,15}$";

fn check_snake_id(kind: &str, s: &str) -> Result<(), IdError> {
    let hint =
        "ids are 3–63 characters: a lowercase ASCII letter, then lowercase letters, digits or `_`";
    let bad = |what: String| {
        Err(IdError {
            message: format!("invalid {kind} {}: {what}", crate::diagnostics::quote(s)),
            hint,
        })
    };
    if s.len() < 3 {
        return bad("shorter than 3 characters".into());
    }
    if s.len() > MAX_SQL_IDENT {
        return bad(format!("longer than {MAX_SQL_IDENT} characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_'))
    {
        let what = if c.is_ascii_uppercase() {
            "uppercase letters are not allowed".to_string()
        } else if !c.is_ascii() {
            format!("non-ASCII character U+{:04X} is not allowed", c as u32)
        } else {
            format!("character {:?} is not allowed", c)
        };
        return bad(what);
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a lowercase letter".into());
    }
    if s.starts_with("pg_") {
        return Err(IdError {
            message: format!(
                "invalid {kind} {}: the `pg_` prefix is reserved by PostgreSQL",
                crate::diagnostics::quote(s)
            ),
            hint: "choose an id that does not start with `pg_`",
        });
    }
    if RESERVED.contains(&s) {
        return Err(IdError {
            message: format!(
                "invalid {kind} {}: the name is reserved",
                crate::diagnostics::quote(s)
            ),
            hint: "reserved names: public, information_schema, postgres, template0, template1, tenancy",
        });
    }
    Ok(())
}

fn check_kebab_name(kind: &str, s: &str) -> Result<(), IdError> {
    let ok = (2..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'));
    if ok {
        Ok(())
    } else {
        Err(IdError {
            message: format!("invalid {kind} {}", crate::diagnostics::quote(s)),
            hint: "names are 2–32 characters: lowercase letters, digits and single `-`, starting with a letter",
        })
    }
}

fn check_env(s: &str) -> Result<(), IdError> {
    let ok = (2..=16).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9'));
    if ok {
        Ok(())
    } else {
        Err(IdError {
            message: format!("invalid environment name {}", crate::diagnostics::quote(s)),
            hint: "environment names are 2–16 lowercase letters or digits, starting with a letter (no `_` or `-`: they join tenant ids in resource names)",
        })
    }
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                #[allow(clippy::redundant_closure_call)] // the macro takes the check as a closure
                ($check)(s)?;
                Ok($name(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// `metadata.id` of a Tenant: `^[a-z][a-z0-9_]{2,62}$`, not reserved, no `pg_` prefix.
    TenantId,
    |s| check_snake_id("tenant id", s)
);
id_newtype!(
    /// `metadata.id` of an Organization; same alphabet as tenant ids.
    OrgId,
    |s| check_snake_id("organization id", s)
);
id_newtype!(
    /// An environment name inside a tenant: `^[a-z][a-z0-9]{1,15}$`.
    EnvName,
    check_env
);
id_newtype!(
    /// A region name such as `ap-south-1`.
    RegionName,
    |s| check_kebab_name("region name", s)
);
id_newtype!(
    /// A plan name such as `starter`.
    PlanName,
    |s| check_kebab_name("plan name", s)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["t_5001", "org_acme", "abc", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        assert!(EnvName::parse("prod").is_ok());
        assert!(RegionName::parse("ap-south-1").is_ok());
        assert!(PlanName::parse("enterprise").is_ok());
    }

    #[test]
    fn refuses_hostile_ids() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "ab",
            "T_5001",
            "t-5001",
            "t_5001;",
            "t'5001",
            "t\"x",
            "../etc",
            "t_50 01",
            "tеnant", // Cyrillic е
            "1abc",
            "_abc",
            "pg_tenant",
            "public",
            "postgres",
            &long,
            "t_5001\n",
            "t\u{0}x",
        ] {
            let err = TenantId::parse(bad).expect_err(bad);
            assert!(!err.message.is_empty());
        }
        assert!(
            TenantId::parse("tеnant")
                .unwrap_err()
                .message
                .contains("U+0435")
        );
        for bad in ["dev_1", "Prod", "d", "a-b", "prod\u{200b}", &"x".repeat(17)] {
            assert!(EnvName::parse(bad).is_err(), "{bad}");
        }
        for bad in ["AP-south", "ap--south", "ap-south-", "ap_south", "a"] {
            assert!(RegionName::parse(bad).is_err(), "{bad}");
        }
    }
}
