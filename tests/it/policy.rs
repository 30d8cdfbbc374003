//! The policy host with real WebAssembly components: the standard bundle and hostile modules.

use crate::support::workspace_root;
use std::path::PathBuf;
use std::sync::Arc;
use tenancy::policy::bundle::{Bundle, Limits};
use tenancy::policy::host::Failure;
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
    let host = Arc::new(crate::support::policy_host());
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

    let catalog = crate::support::example_catalog();
    let platform = tenancy::policy::platform_of(&catalog);
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
    let host = crate::support::policy_host();
    let catalog = crate::support::example_catalog();
    let platform = tenancy::policy::platform_of(&catalog);
    let tenant = &catalog.tenants[0].value;
    let input_change = change(tenant);
    let limits = Limits {
        fuel: 200_000_000,
        memory_mib: 32,
        timeout_ms: 2_000,
        max_output_bytes: 64 * 1024,
        max_violations: 100,
        ..Limits::default()
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
        Failure::OutputTooLarge { limit: 65536, .. }
            | Failure::OutputFlood { bytes: 65536, .. }
            | Failure::Memory(_)
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
    let host = crate::support::policy_host();
    let bytes = hostile("infinite-loop");
    let module = host.load_bytes(&bytes, &sha(&bytes)).expect("load");
    let limits = Limits {
        fuel: u64::MAX / 2,
        memory_mib: 16,
        timeout_ms: 100,
        max_output_bytes: 1024,
        max_violations: 100,
        ..Limits::default()
    };
    let input = tenancy::policy::host::Input {
        operation: tenancy::policy::host::Operation::Create,
        tenant: "{}".into(),
        previous: None,
        platform: Default::default(),
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
    let set = PolicySet::load(Arc::new(crate::support::policy_host()), &bundle);
    let catalog = crate::support::example_catalog();
    let platform = tenancy::policy::platform_of(&catalog);
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

fn bundle_arg() -> String {
    workspace_root()
        .join("policies/bundle.yaml")
        .display()
        .to_string()
}

#[test]
fn validate_runs_the_policies_and_the_example_repository_passes_them() {
    let repo = crate::support::TestRepo::with_examples();
    let (run, report) = crate::support::validate_json(repo.path(), &["--policies", &bundle_arg()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let policies = report["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), 4);
    for p in policies {
        assert!(p["error"].is_null(), "{p}");
        assert_eq!(p["digest"].as_str().map(str::len), Some(64));
    }
    assert_eq!(report["summary"]["errors"], 0);
}

#[test]
fn a_policy_denial_is_a_positioned_finding_with_the_module_digest() {
    let repo = crate::support::TestRepo::with_examples();
    let t = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("read");
    // kms-per-tenant in a region without per-tenant keys, and a plan ceiling broken.
    let bad = t
        .replace(
            "allowed: [ap-south-1], preferred: ap-south-1",
            "allowed: [us-east-1], preferred: us-east-1",
        )
        .replace("concurrentJobs: 10", "concurrentJobs: 99");
    repo.write("org_acme/t_5001.yaml", bad);
    repo.commit("move t_5001 to us-east-1");
    let (run, report) = crate::support::validate_json(repo.path(), &["--policies", &bundle_arg()]);
    assert_eq!(run.code, 1);
    let find = |rule: &str| {
        crate::support::findings(&report)
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} in {}", run.stdout))
            .clone()
    };
    let kms = find("encryption.kms-unavailable");
    assert_eq!(kms["file"], "org_acme/t_5001.yaml");
    assert_eq!(kms["line"], 17, "points at spec.policies.encryption");
    assert_eq!(kms["tenant"], "t_5001");
    assert_eq!(kms["severity"], "error");
    assert_eq!(kms["policy"]["name"], "encryption");
    assert_eq!(kms["policy"]["digest"].as_str().map(str::len), Some(64));
    let jobs = find("quotas.over-plan");
    assert_eq!(jobs["pointer"], "/spec/quotas/concurrentJobs");
    // Moving every placement to one region of one zone is not a residency problem.
    assert!(!crate::support::findings(&report).iter().any(|f| {
        f["rule"]
            .as_str()
            .is_some_and(|r| r.starts_with("residency."))
    }));

    // The same in text: file:line:col, the rule, and the policy with its digest.
    let run = crate::support::tenancy(&[
        "validate",
        "--repo",
        repo.path().to_str().expect("p"),
        "--policies",
        &bundle_arg(),
    ]);
    assert!(
        run.stdout.contains("error[encryption.kms-unavailable]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("--> org_acme/t_5001.yaml:17:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("reported by policy `encryption` (sha256:"),
        "{}",
        run.stdout
    );
}

#[test]
fn transitions_are_judged_against_the_previous_commit() {
    let repo = crate::support::TestRepo::with_examples();
    let path = repo.path().join("org_acme/t_5004.yaml"); // Archived
    let archived = std::fs::read_to_string(&path).expect("read");
    repo.write(
        "org_acme/t_5004.yaml",
        archived.replace("lifecycle: Archived", "lifecycle: Active"),
    );
    // Uncommitted: judged against HEAD.
    let (run, report) =
        crate::support::validate_json(repo.path(), &["--worktree", "--policies", &bundle_arg()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let f = crate::support::findings(&report)
        .iter()
        .find(|f| f["rule"] == "lifecycle.transition-not-allowed")
        .expect("transition refused")
        .clone();
    assert_eq!(f["tenant"], "t_5004");
    assert!(
        f["message"]
            .as_str()
            .expect("m")
            .contains("Archived to Active"),
        "{f}"
    );
    // Committed: judged against the parent; the parent itself is still fine.
    repo.commit("reactivate t_5004");
    let (run, _) = crate::support::validate_json(repo.path(), &["--policies", &bundle_arg()]);
    assert_eq!(run.code, 1);
    let (run, _) = crate::support::validate_json(
        repo.path(),
        &["--rev", "HEAD~1", "--policies", &bundle_arg()],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn enforcement_modes_and_tampered_modules() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = workspace_root();
    std::fs::create_dir_all(dir.path().join("encryption")).expect("mkdir");
    std::fs::copy(
        root.join("policies/encryption/encryption.wasm"),
        dir.path().join("encryption/encryption.wasm"),
    )
    .expect("copy");
    let digest = sha(&std::fs::read(dir.path().join("encryption/encryption.wasm")).expect("read"));
    let repo = crate::support::TestRepo::with_examples();
    let t = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("read");
    repo.write(
        "org_acme/t_5001.yaml",
        t.replace(
            "allowed: [ap-south-1], preferred: ap-south-1",
            "allowed: [us-east-1], preferred: us-east-1",
        )
        .replace("in-region-only", "unrestricted"),
    );
    repo.commit("kms where there is none");
    let bundle = dir.path().join("bundle.yaml");
    let run_with = |mode: &str, sha: &str| {
        std::fs::write(
            &bundle,
            format!("apiVersion: tenancy.dev/v1\nkind: PolicyBundle\npolicies:\n  - {{ name: encryption, module: encryption/encryption.wasm, sha256: \"{sha}\", mode: {mode} }}\n"),
        )
        .expect("bundle");
        crate::support::validate_json(repo.path(), &["--policies", bundle.to_str().expect("p")])
    };
    let severity_of = |report: &serde_json::Value, rule: &str| {
        crate::support::findings(report)
            .iter()
            .find(|f| f["rule"] == rule)
            .map(|f| f["severity"].as_str().unwrap_or_default().to_owned())
    };
    let (run, report) = run_with("enforce", &digest);
    assert_eq!(run.code, 1);
    assert_eq!(
        severity_of(&report, "encryption.kms-unavailable").as_deref(),
        Some("error")
    );
    let (run, report) = run_with("warn", &digest);
    assert_eq!(run.code, 0, "warn mode never blocks");
    assert_eq!(
        severity_of(&report, "encryption.kms-unavailable").as_deref(),
        Some("warning")
    );
    let (run, report) = run_with("audit", &digest);
    assert_eq!(run.code, 0, "audit mode records only");
    assert_eq!(
        severity_of(&report, "encryption.kms-unavailable").as_deref(),
        Some("info")
    );

    // A module whose bytes do not match the bundle is refused, and that refusal blocks.
    let (run, report) = run_with("enforce", &"0".repeat(64));
    assert_eq!(run.code, 1);
    assert!(
        report["policies"][0]["error"]
            .as_str()
            .expect("error")
            .contains("does not match"),
        "{report}"
    );
    let failed = crate::support::findings(&report)
        .iter()
        .filter(|f| f["rule"] == "policy.failed")
        .count();
    assert_eq!(
        failed, 13,
        "every tenant in scope is denied with the reason"
    );
}

/// `tenancy ARGS` (a `policy test`) passes all 36 cases of the 4 standard fixture files.
fn all_fixtures_pass(args: &[&str]) {
    let run = crate::support::tenancy(args);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("36 passed, 0 failed (4 fixture file(s))"),
        "{}",
        run.stdout
    );
}

#[test]
fn policy_test_runs_the_fixtures_and_shows_a_diff_on_mismatch() {
    all_fixtures_pass(&["policy", "test", "--bundle", &bundle_arg()]);

    // Every rule of every standard policy is exercised by at least one denying case.
    let root = workspace_root();
    for p in ["residency", "encryption", "quotas", "lifecycle"] {
        let info = crate::support::tenancy(&[
            "policy",
            "inspect",
            "-o",
            "json",
            root.join(format!("policies/{p}/{p}.wasm"))
                .to_str()
                .expect("p"),
        ]);
        let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("json");
        let fixtures =
            std::fs::read_to_string(root.join(format!("policies/{p}/fixtures/{p}.yaml")))
                .expect("fixtures");
        for rule in info["rules"].as_array().expect("rules") {
            let rule = rule.as_str().expect("rule");
            assert!(
                fixtures.contains(&format!("rule: {rule},")),
                "{p}: no fixture expects {rule}"
            );
        }
    }

    // The host still serves contract 0.1.0: the standard policies as built for it (frozen in
    // tests/data/policies/contract-0.1) pass the same fixtures, and each module is loaded
    // as the version it was built for.
    let old = root.join("tests/data/policies/contract-0.1");
    let mut args = vec![
        "policy".to_owned(),
        "test".to_owned(),
        "--bundle".to_owned(),
        old.join("bundle.yaml").display().to_string(),
    ];
    for p in ["residency", "encryption", "quotas", "lifecycle"] {
        args.push(
            root.join(format!("policies/{p}/fixtures/{p}.yaml"))
                .display()
                .to_string(),
        );
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    all_fixtures_pass(&args);
    for (module, contract) in [
        (old.join("quotas/quotas.wasm"), "0.1.0"),
        (root.join("policies/quotas/quotas.wasm"), "0.2.0"),
        (root.join("policies/lifecycle/lifecycle.wasm"), "0.2.0"),
    ] {
        let info = crate::support::tenancy(&[
            "policy",
            "inspect",
            "-o",
            "json",
            module.to_str().expect("utf-8"),
        ]);
        let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("json");
        assert_eq!(info["contract"], contract, "{}", module.display());
    }

    let dir = tempfile::tempdir().expect("tmp");
    let wrong = std::fs::read_to_string(root.join("policies/quotas/fixtures/quotas.yaml"))
        .expect("read")
        .replace("../../../", &format!("{}/", root.display()))
        .replace(
            "rule: quotas.over-plan, path: /spec/quotas/apiRateLimit",
            "rule: quotas.over-plan, path: /spec/quotas/storageGiB",
        );
    let file = dir.path().join("wrong.yaml");
    std::fs::write(&file, wrong).expect("write");
    let run = crate::support::tenancy(&[
        "policy",
        "test",
        "--bundle",
        &bundle_arg(),
        file.to_str().expect("p"),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("FAIL quotas › an API rate limit above the plan's ceiling is refused"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("missing:    deny quotas.over-plan at \"/spec/quotas/storageGiB\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("unexpected: deny quotas.over-plan at \"/spec/quotas/apiRateLimit\""),
        "{}",
        run.stdout
    );
}

/// The JavaScript example policy, built by scripts/build-js-policy.sh (scripts/test.sh does it
/// and sets TENANCY_JS_POLICY_BUNDLE), goes through the same host and the same fixture runner.
#[test]
fn a_javascript_policy_runs_in_the_same_sandbox() {
    if std::env::var_os("TENANCY_SKIP_JS").is_some_and(|v| v == "1") {
        eprintln!("TENANCY_SKIP_JS=1: JavaScript policy test skipped");
        return;
    }
    let bundle = std::env::var("TENANCY_JS_POLICY_BUNDLE").unwrap_or_else(|_| {
        panic!("TENANCY_JS_POLICY_BUNDLE is not set: run scripts/build-js-policy.sh (scripts/test.sh does), or set TENANCY_SKIP_JS=1")
    });
    let fixtures = workspace_root().join("policies/examples/contacts-js/fixtures/contacts.yaml");
    let run = crate::support::tenancy(&[
        "policy",
        "test",
        "--bundle",
        &bundle,
        fixtures.to_str().expect("p"),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("4 passed, 0 failed"), "{}", run.stdout);

    // And in `validate`, side by side with the Rust policies' findings format.
    let repo = crate::support::TestRepo::with_examples();
    let t = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("read");
    repo.write(
        "org_acme/t_5001.yaml",
        t.replace(", incident: oncall@acme.example", ""),
    );
    repo.commit("drop the incident contact");
    let (run, report) = crate::support::validate_json(repo.path(), &["--policies", &bundle]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let f = crate::support::findings(&report)
        .iter()
        .find(|f| f["rule"] == "contacts.incident-required")
        .expect("finding")
        .clone();
    assert_eq!(f["file"], "org_acme/t_5001.yaml");
    assert_eq!(f["line"], 19, "points at spec.contacts");
    assert_eq!(f["policy"]["name"], "contacts");
}

#[test]
fn policy_run_judges_one_manifest_with_exit_codes() {
    let root = workspace_root();
    let tenant = root.join("tenants/org_acme/t_5001.yaml");
    let platform = root.join("tenants/platform");
    let args = |module: PathBuf| -> Vec<String> {
        [
            "policy",
            "run",
            module.to_str().expect("p"),
            "--tenant",
            tenant.to_str().expect("p"),
            "--platform",
            platform.to_str().expect("p"),
            "-o",
            "json",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |module: PathBuf| {
        let a = args(module);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let r = crate::support::tenancy(&a);
        let json: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
        (r.code, json)
    };
    let (code, json) = run(root.join("policies/quotas/quotas.wasm"));
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["allowed"], true);
    // What the evaluation cost is reported, and a platform lookup is charged in fuel like the
    // module's own instructions (10,000 units and 4 per byte moved).
    let lookups = json["lookups"].as_u64().expect("lookups");
    let fuel = json["fuel"].as_u64().expect("fuel");
    assert!(lookups >= 1, "quotas looks up the tenant's plan: {json}");
    assert!(fuel >= lookups * 10_000, "{json}");
    assert!(
        fuel < json["fuel_limit"].as_u64().expect("limit") / 100,
        "{json}"
    );
    // Host work is metered, so a module that looks things up without end is stopped by its
    // fuel at the same lookup on every run, whatever the machine's speed or load.
    let looping = root.join("tests/data/policies/hostile/lookup-loop.wasm");
    let stops: Vec<(u64, u64)> = (0..3)
        .map(|_| {
            let (code, json) = run(looping.clone());
            assert_eq!(code, 1);
            let error = json["error"].as_str().expect("error");
            assert!(
                error.contains("exceeded its fuel limit (50000000 units)"),
                "{json}"
            );
            (
                json["lookups"].as_u64().expect("n"),
                json["fuel"].as_u64().expect("f"),
            )
        })
        .collect();
    assert!(stops[0].0 > 1_000, "{stops:?}");
    // Every lookup costs at least 10,000 of the 50,000,000 units: at most 5,000 of them fit
    // (unmetered, the loop's own instructions would allow many times that).
    assert!(stops[0].0 <= 5_000, "{stops:?}");
    assert_eq!(stops[0].1, 50_000_000, "{stops:?}");
    assert!(stops.iter().all(|s| *s == stops[0]), "{stops:?}");
    let (code, json) = run(root.join("tests/data/policies/hostile/infinite-loop.wasm"));
    assert_eq!(code, 1);
    assert!(
        json["error"]
            .as_str()
            .expect("error")
            .contains("fuel limit"),
        "{json}"
    );
    let (code, json) = run(root.join("tests/data/policies/hostile/wasi-filesystem.wasm"));
    assert_eq!(code, 1);
    assert!(
        json["error"]
            .as_str()
            .expect("error")
            .contains("(file system)"),
        "{json}"
    );
}

#[test]
fn tenants_that_fail_validation_are_not_also_judged_by_policies() {
    let repo = crate::support::TestRepo::with_examples();
    repo.write(
        "org_acme/bad.yaml",
        std::fs::read(workspace_root().join("tests/data/bad/bad-reference.yaml")).expect("read"),
    );
    repo.commit("an unknown plan");
    let (run, report) = crate::support::validate_json(repo.path(), &["--policies", &bundle_arg()]);
    assert_eq!(run.code, 1);
    let rules: Vec<&str> = crate::support::findings(&report)
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert!(rules.contains(&"ref.plan"), "{rules:?}");
    assert!(
        !rules
            .iter()
            .any(|r| r.starts_with("quotas.") || r.starts_with("residency.")),
        "{rules:?}"
    );
}
