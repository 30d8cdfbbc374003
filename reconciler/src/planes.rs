//! The planes Tenancy knows, one line each, in apply order.
//!
//! Everything else reaches a plane through this list: `tenancy.toml`'s `[<kind>]` sections,
//! a region's `targets.<kind>`, a plan's `spec.<kind>` settings, `[apply] detect-only`, the
//! plan's header and the topology answer. Adding a plane is a crate that exports a
//! [`PlaneFactory`], its dependency line in `reconciler/Cargo.toml` and one line here (see
//! ARCHITECTURE.md, "How to add a plane").

use tenancy_plane::{Embedded, PlaneFactory};

/// A plane as registered: its factory, and what stands in when no target is configured.
pub struct Registered {
    pub factory: &'static dyn PlaneFactory,
    /// The embedded default; `None`: without targets the plane is not managed (the plan says).
    pub embedded: Option<Embedded>,
}

/// Every plane, in apply order (a tenant's database before its buckets before its topics).
#[rustfmt::skip]
pub static REGISTERED: &[Registered] = &[
    Registered { factory: &tenancy_plane_postgres::Factory, embedded: Some(tenancy_plane_sqlite::embedded) },
    Registered { factory: &tenancy_plane_s3::Factory, embedded: Some(tenancy_plane_local::embedded) },
    Registered { factory: &tenancy_plane_kafka::Factory, embedded: None },
    Registered { factory: &tenancy_plane_redis::Factory, embedded: None },
];

/// The registered plane of this kind.
pub fn find(kind: &str) -> Option<&'static Registered> {
    REGISTERED.iter().find(|r| r.factory.about().kind == kind)
}

/// The kinds, in apply order (`postgres, object-store, kafka`), for messages.
pub fn kinds() -> String {
    REGISTERED
        .iter()
        .map(|r| r.factory.about().kind)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plane_has_one_name_and_keys_of_its_own() {
        let mut seen = std::collections::HashSet::new();
        let empty = serde_json::json!({});
        for r in REGISTERED {
            let about = r.factory.about();
            assert!(seen.insert(about.kind), "{} registered twice", about.kind);
            assert!(seen.insert(about.topology_key) || about.topology_key == about.kind);
            // What a factory builds, and its embedded stand-in, plan under the plane's name.
            let built = r.factory.build(&empty).expect("an empty section is valid");
            assert_eq!(built.name(), about.kind);
            if let Some(embedded) = r.embedded {
                let dir = tempfile::tempdir().expect("tempdir");
                assert_eq!(embedded(dir.path()).plane.name(), about.kind);
            }
        }
        // The first planes keep their order: a tenant's database before its buckets and topics.
        assert!(
            kinds().starts_with("postgres, object-store, kafka"),
            "{}",
            kinds()
        );
    }
}
