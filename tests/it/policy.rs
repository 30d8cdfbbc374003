//! The policy host with real WebAssembly components: the standard bundle and hostile modules.

use crate::support::workspace_root;
use std::path::PathBuf;
use std::sync::Arc;
use tenancy::policy::bundle::{Bundle, Limits};
use tenancy::policy::host::{Failure, PolicyHost};
use tenancy::policy::{Change, PolicySet, Severity};

fn hostile(name: &str) -> Vec<u8> {
    let path: PathBuf = workspace_root().join(format!("tests/data/policies/hostile/{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-policies.sh)", path.display()))
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn example_catalog() -> tenancy::validate::Catalog {
    let snapshot = tenancy::source::read_worktree(
        &workspace_root(),
        &tenancy::source::ReadOptions {
            path: "tenants".into(),
            ..Default::default()
        },
    )
    .expect("read tenants");
    let report = tenancy::validate::validate(&snapshot, &Default::default());
    assert!(!report.has_errors(), "{:?}", report.findings);
    report.catalog
}

fn platform(catalog: &tenancy::validate::Catalog) -> String {
    let regions: Vec<_> = catalog.regions.iter().map(|r| &r.value).collect();
    let plans: Vec<_> = catalog.plans.iter().map(|p| &p.value).collect();
    tenancy::policy::platform_json(&regions, &plans)
}

fn change(t: &tenancy::manifest::Tenant) -> Change<'_> {
    Change {
        tenant: t,
        previous: None,
        commit_sha: "0".repeat(40).leak(),
        commit_author: "Test <t@test>",
    }
}

#[test]
fn the_standard_bundle_loads_and_allows_the_example_tenants() {
    let host = Arc::new(PolicyHost::new().expect("host"));
    let bundle = Bundle::load(&workspace_root().join("policies/bundle.yaml")).expect("bundle");
    let set = PolicySet::load(host, &bundle);
    let names: Vec<_> = set
        .policies
        .iter()
        .map(|(e, m)| {
            let m = m.as_ref().unwrap_or_else(|f| panic!("{}: {f}", e.name));
            assert_eq!(m.digest, e.sha256);
            assert!(!m.info.rules.is_empty());
            m.info.name.clone()
        })
        .collect();
    assert_eq!(names, ["residency", "encryption", "quotas", "lifecycle"]);

    let catalog = example_catalog();
    let platform = platform(&catalog);
    for t in &catalog.tenants {
        let decisions = set.evaluate(&change(&t.value), &platform);
        assert!(!decisions.is_empty());
        for d in &decisions {
            assert!(
                !d.blocks(),
                "{}: {} denied: {:?}",
                t.value.metadata.id,
                d.policy,
                d.verdicts
            );
            assert_eq!(d.digest.len(), 64);
        }
    }
}

#[test]
fn hostile_modules_become_clear_denies_within_their_limits() {
    let host = PolicyHost::new().expect("host");
    let catalog = example_catalog();
    let platform = platform(&catalog);
    let tenant = &catalog.tenants[0].value;
    let input_change = change(tenant);
    let limits = Limits {
        fuel: 200_000_000,
        memory_mib: 32,
        timeout_ms: 2_000,
        max_output_bytes: 64 * 1024,
    };

    let evaluate = |name: &str| -> Failure {
        let bytes = hostile(name);
        let module = match host.load_bytes(&bytes, &sha(&bytes)) {
            Ok(m) => m,
            Err(f) => return f,
        };
        let set_input = tenancy::policy::host::Input {
            operation: tenancy::policy::host::Operation::Create,
            tenant: serde_json::to_string(input_change.tenant).expect("json"),
            previous: None,
            platform: platform.clone(),
            commit: tenancy::policy::host::Commit {
                sha: "0".repeat(40),
                author: "t".into(),
            },
        };
        host.evaluate(&module, &limits, &set_input).expect_err(name)
    };

    assert_eq!(evaluate("infinite-loop"), Failure::Fuel(limits.fuel));
    assert_eq!(evaluate("memory-bomb"), Failure::Memory(32));
    assert_eq!(evaluate("deep-recursion"), Failure::StackOverflow);
    assert!(matches!(
        evaluate("huge-output"),
        Failure::OutputTooLarge { limit: 65536, .. } | Failure::Memory(_)
    ));
    assert!(
        matches!(evaluate("trap"), Failure::Trap(ref t) if t.contains("unreachable")),
        "{:?}",
        evaluate("trap")
    );
    assert!(matches!(
        evaluate("malformed-output"),
        Failure::Malformed(_)
    ));
    for name in ["missing-export", "mistyped-export"] {
        assert!(
            matches!(evaluate(name), Failure::Contract(_)),
            "{name}: {:?}",
            evaluate(name)
        );
    }
    let fs = evaluate("wasi-filesystem");
    assert!(
        matches!(&fs, Failure::Contract(m) if m.contains("wasi:")),
        "{fs:?}"
    );
    let net = evaluate("wasi-sockets");
    assert!(
        matches!(&net, Failure::Contract(m) if m.contains("wasi:")),
        "{net:?}"
    );
    assert!(matches!(evaluate("truncated"), Failure::Compile(_)));

    // A digest mismatch is refused before the bytes are compiled.
    let bytes = hostile("trap");
    let err = host
        .load_bytes(&bytes, &"0".repeat(64))
        .err()
        .expect("refused");
    assert!(matches!(err, Failure::DigestMismatch { .. }), "{err:?}");
}

#[test]
fn the_wall_clock_limit_interrupts_a_module_with_unlimited_fuel() {
    let host = PolicyHost::new().expect("host");
    let bytes = hostile("infinite-loop");
    let module = host.load_bytes(&bytes, &sha(&bytes)).expect("load");
    let limits = Limits {
        fuel: u64::MAX / 2,
        memory_mib: 16,
        timeout_ms: 100,
        max_output_bytes: 1024,
    };
    let input = tenancy::policy::host::Input {
        operation: tenancy::policy::host::Operation::Create,
        tenant: "{}".into(),
        previous: None,
        platform: "{}".into(),
        commit: tenancy::policy::host::Commit {
            sha: String::new(),
            author: String::new(),
        },
    };
    assert_eq!(
        host.evaluate(&module, &limits, &input).err(),
        Some(Failure::Timeout(100))
    );
}

#[test]
fn a_hostile_module_in_a_bundle_denies_while_the_others_keep_deciding() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = workspace_root();
    std::fs::copy(
        root.join("policies/residency/residency.wasm"),
        dir.path().join("residency.wasm"),
    )
    .expect("copy");
    let loop_bytes = hostile("infinite-loop");
    std::fs::write(dir.path().join("loop.wasm"), &loop_bytes).expect("write");
    let residency_sha = sha(&std::fs::read(dir.path().join("residency.wasm")).expect("read"));
    std::fs::write(
        dir.path().join("bundle.yaml"),
        format!(
            "apiVersion: tenancy.dev/v1\nkind: PolicyBundle\npolicies:\n  - {{ name: spin, module: loop.wasm, sha256: {}, limits: {{ fuel: 1000000 }} }}\n  - {{ name: residency, module: residency.wasm, sha256: {residency_sha} }}\n  - {{ name: tampered, module: residency.wasm, sha256: {} }}\n",
            sha(&loop_bytes),
            "ab".repeat(32)
        ),
    )
    .expect("bundle");
    let bundle = Bundle::load(&dir.path().join("bundle.yaml")).expect("bundle loads");
    let set = PolicySet::load(Arc::new(PolicyHost::new().expect("host")), &bundle);
    let catalog = example_catalog();
    let platform = platform(&catalog);
    let changes: Vec<_> = catalog.tenants.iter().map(|t| change(&t.value)).collect();
    let all = set.evaluate_all(&changes, &platform);
    assert_eq!(all.len(), catalog.tenants.len());
    for decisions in &all {
        let by = |n: &str| decisions.iter().find(|d| d.policy == n).expect(n);
        let spin = by("spin");
        assert!(spin.blocks());
        assert!(
            spin.failure.as_deref().unwrap_or_default().contains("fuel"),
            "{spin:?}"
        );
        assert!(
            spin.verdicts[0]
                .message
                .contains("policy `spin` (loop.wasm)"),
            "{spin:?}"
        );
        assert!(by("residency").failure.is_none());
        assert!(!by("residency").blocks());
        let tampered = by("tampered");
        assert!(
            tampered
                .failure
                .as_deref()
                .unwrap_or_default()
                .contains("does not match"),
            "{tampered:?}"
        );
        assert_eq!(tampered.verdicts[0].severity, Severity::Deny);
    }
}
