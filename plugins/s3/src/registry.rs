//! What a shared bucket records of its mt-standard tenants (one registry object per tenant,
//! compared by ETag), and the encodings the requests need.

use super::{REGISTRY, prefix_of};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tenancy_plane::object::ObjectConfig;
use tenancy_plane::{Lifecycle, TenantEnv};

/// One tenant's mt-standard prefixes in a shared bucket, as recorded there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Registry {
    pub(super) prefixes: BTreeMap<String, ObjectConfig>,
}

impl Registry {
    /// What the registry must say: every environment that is not being deleted.
    pub(super) fn desired<'a>(envs: impl IntoIterator<Item = &'a TenantEnv>) -> Registry {
        Registry {
            prefixes: envs
                .into_iter()
                .filter(|d| d.lifecycle != Lifecycle::Deleted)
                .map(|d| (prefix_of(d), ObjectConfig::desired(d)))
                .collect(),
        }
    }

    pub(super) fn document(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub(super) fn registry_key(tenant: &str) -> String {
    format!("{REGISTRY}{tenant}.json")
}

pub(super) fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Percent-encoding for the `x-amz-tagging` header (RFC 3986 unreserved characters kept).
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_plane::FieldChange;

    #[test]
    fn registry_documents_are_canonical_and_tags_are_encoded() {
        let mut a = ObjectConfig {
            tags: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            versioning: false,
            retention_days: Some(30),
            encryption_key: None,
            writable: true,
        };
        let doc = |c: &ObjectConfig| {
            Registry {
                prefixes: BTreeMap::from([("tenants/t/dev/".to_owned(), c.clone())]),
            }
            .document()
        };
        let first = doc(&a);
        a.tags = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(first, doc(&a), "same configuration, same bytes, same MD5");
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(urlencode("tenancy.dev/tenant"), "tenancy.dev%2Ftenant");
        assert_eq!(
            ObjectConfig {
                writable: false,
                ..a.clone()
            }
            .diff_from(Some(&a)),
            vec![FieldChange::new(
                "writable",
                Some("true".into()),
                Some("false".into())
            )]
        );
    }
}
