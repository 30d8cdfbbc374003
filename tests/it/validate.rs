//! `tenancy validate` end to end: the example repository, the bad-input corpus, exit codes,
//! output formats, and reading exactly what was committed.

use crate::support::{TestRepo, bad_corpus, findings, tenancy, validate_json, workspace_root};
use serde_json::Value;

/// (corpus file, rule, line) — every case in tests/data/bad must produce this finding.
const CORPUS: &[(&str, &str, Option<u64>)] = &[
    ("alias-bomb.yaml", "yaml.budget", Some(5)),
    ("bad-reference.yaml", "ref.organization", Some(3)),
    ("bad-reference.yaml", "ref.plan", Some(7)),
    ("bad-reference.yaml", "ref.region", Some(8)),
    ("bad-reference.yaml", "unique.environment", Some(11)),
    ("broken-yaml.yaml", "yaml.syntax", Some(6)),
    ("comments-only.yaml", "file.empty", None),
    ("duplicate-key.yaml", "yaml.duplicate-key", Some(8)),
    ("empty.yaml", "file.empty", None),
    ("hostile-id-dotdot.yaml", "id.invalid", Some(4)),
    ("hostile-id-escape.yaml", "id.invalid", Some(4)),
    ("hostile-id-lookalike.yaml", "id.invalid", Some(4)),
    ("hostile-id-overlong.yaml", "id.invalid", Some(4)),
    ("hostile-id-quote.yaml", "id.invalid", Some(4)),
    ("hostile-id-reserved.yaml", "id.invalid", Some(4)),
    ("hostile-id-semicolon.yaml", "id.invalid", Some(4)),
    ("hostile-id-uppercase.yaml", "id.invalid", Some(4)),
    ("missing-field.yaml", "schema.missing-field", Some(4)),
    ("multi-doc.yaml", "schema.range", Some(15)),
    ("unknown-field.yaml", "schema.unknown-field", Some(11)),
    ("unknown-kind.yaml", "manifest.unknown-kind", Some(2)),
    ("wrong-type.yaml", "schema.type", Some(11)),
    // Schema-valid, over the plan: the quotas policy's finding, at the value.
    ("quota-over-plan.yaml", "quotas.over-plan", Some(13)),
    ("deep-nesting.yaml", "yaml.budget", Some(3)),
    ("tabs.yaml", "yaml.syntax", Some(4)),
    ("not-a-mapping.yaml", "manifest.not-a-mapping", Some(1)),
    ("wrong-api-version.yaml", "schema.const", Some(1)),
    ("language-tag.yaml", "yaml.syntax", Some(2)),
    ("region-targets.yaml", "ref.plane", Some(10)),
    ("region-targets.yaml", "ref.plane", Some(9)),
    (
        "derived-name-too-long.yaml",
        "id.derived-name-too-long",
        Some(12),
    ),
];

const EXAMPLE_TENANTS: u64 = 13;

/// The standard policies: the corpus is judged by them too, as a pull request would be.
fn standard_bundle() -> String {
    crate::support::workspace_root()
        .join("policies/bundle.yaml")
        .display()
        .to_string()
}

fn has_finding(report: &Value, file: &str, rule: &str, line: Option<u64>) -> bool {
    findings(report).iter().any(|f| {
        f["file"] == file
            && f["rule"] == rule
            && f["line"].as_u64() == line
            && f["severity"] == "error"
    })
}

fn describe(report: &Value) -> String {
    findings(report)
        .iter()
        .map(|f| {
            format!(
                "{}:{}: {} {}",
                f["file"], f["line"], f["rule"], f["message"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_repository_is_valid() {
    let repo = TestRepo::with_examples();
    let (run, report) = validate_json(repo.path(), &[]);
    assert_eq!(run.code, 0, "{}", describe(&report));
    assert_eq!(findings(&report).len(), 0, "{}", describe(&report));
    assert_eq!(report["summary"]["tenants"], EXAMPLE_TENANTS);
    assert_eq!(
        report["summary"]["documents"], 24,
        "3 orgs + 13 tenants + 4 regions + 4 plans"
    );

    // And the copy in this workspace, read with --path from the work tree.
    let root = workspace_root();
    let (run, report) = validate_json(&root, &["--worktree", "--path", "tenants"]);
    assert_eq!(run.code, 0, "{}", describe(&report));
    assert_eq!(report["summary"]["tenants"], EXAMPLE_TENANTS);
}

#[test]
fn the_example_repository_covers_every_profile_and_lifecycle() {
    let repo = TestRepo::with_examples();
    let snapshot =
        tenancy::source::read_revision(repo.path(), "HEAD", &Default::default()).expect("read");
    let report = tenancy::validate::validate(&snapshot, &Default::default());
    let tenants = &report.catalog.tenants;
    use tenancy::manifest::{Lifecycle::*, Profile::*};
    for profile in [MtStandard, StDedicated, Hybrid] {
        assert!(
            tenants.iter().any(|t| t.value.spec.profile == profile),
            "{profile:?}"
        );
    }
    for state in [Draft, Active, Suspended, Archived, Deleted] {
        assert!(
            tenants.iter().any(|t| t.value.spec.lifecycle == state),
            "{state:?}"
        );
    }
    let orgs: std::collections::BTreeSet<_> = tenants
        .iter()
        .map(|t| t.value.metadata.organization.as_str())
        .collect();
    assert!(orgs.len() >= 3);
    let regions: std::collections::BTreeSet<_> = tenants
        .iter()
        .map(|t| t.value.spec.regions.preferred.as_str())
        .collect();
    assert!(regions.len() >= 3, "{regions:?}");
}

#[test]
fn each_bad_input_is_a_finding_with_file_and_line_and_others_are_still_checked() {
    for case in std::fs::read_dir(bad_corpus()).expect("corpus") {
        let name = case
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let expected: Vec<_> = CORPUS.iter().filter(|(f, _, _)| *f == name).collect();
        assert!(
            !expected.is_empty(),
            "corpus file {name} has no expectation in CORPUS"
        );

        let repo = TestRepo::with_examples();
        repo.write(
            &format!("org_acme/{name}"),
            std::fs::read(bad_corpus().join(&name)).expect("read"),
        );
        repo.commit(&format!("add {name}"));
        let (run, report) = validate_json(repo.path(), &["--policies", &standard_bundle()]);
        assert_eq!(
            run.code,
            1,
            "{name}: expected exit 1\n{}\n{}",
            describe(&report),
            run.stderr
        );
        for (_, rule, line) in expected {
            assert!(
                has_finding(&report, &format!("org_acme/{name}"), rule, *line),
                "{name}: expected {rule} at line {line:?}, got:\n{}",
                describe(&report)
            );
        }
        // The bad file did not stop the others: every example tenant is still in the catalog,
        // and no finding blames a file that is not the bad one.
        assert!(
            report["summary"]["tenants"].as_u64().expect("count") >= EXAMPLE_TENANTS,
            "{name}"
        );
        for f in findings(&report) {
            assert_eq!(
                f["file"],
                format!("org_acme/{name}"),
                "{name}: unexpected finding elsewhere\n{}",
                describe(&report)
            );
            assert!(!f["message"].as_str().expect("message").is_empty());
        }
    }
}

#[test]
fn all_bad_inputs_together_are_all_reported() {
    let repo = TestRepo::with_examples();
    for case in std::fs::read_dir(bad_corpus()).expect("corpus") {
        let case = case.expect("entry");
        let name = case.file_name().into_string().expect("utf-8");
        repo.write(
            &format!("bad/{name}"),
            std::fs::read(case.path()).expect("read"),
        );
    }
    repo.commit("many bad files");
    let (run, report) = validate_json(repo.path(), &["--policies", &standard_bundle()]);
    assert_eq!(run.code, 1);
    for (file, rule, line) in CORPUS {
        assert!(
            has_finding(&report, &format!("bad/{file}"), rule, *line),
            "{file} {rule}\n{}",
            describe(&report)
        );
    }
}

#[test]
fn hostile_files_are_findings_not_crashes() {
    let repo = TestRepo::with_examples();
    // Oversized: 2 MiB of valid YAML comments.
    repo.write("org_acme/huge.yaml", "# padding\n".repeat(210_000));
    // Not UTF-8: a Latin-1 byte in a value on line 3.
    repo.write(
        "org_acme/latin1.yaml",
        b"apiVersion: tenancy.dev/v1\nkind: Tenant\nmetadata: { id: t_caf\xe9 }\n",
    );
    // A symlink that points outside the repository.
    repo.symlink("/etc/passwd", "org_acme/passwd.yaml");
    repo.commit("hostile files");
    repo.commit_submodule_entry("vendor/other-tenants", "add a submodule");

    let (run, report) = validate_json(repo.path(), &[]);
    assert_eq!(run.code, 1, "{}", describe(&report));
    assert!(
        has_finding(&report, "org_acme/huge.yaml", "file.too-large", None),
        "{}",
        describe(&report)
    );
    assert!(
        has_finding(&report, "org_acme/latin1.yaml", "file.encoding", Some(3)),
        "{}",
        describe(&report)
    );
    assert!(
        has_finding(&report, "org_acme/passwd.yaml", "file.symlink", None),
        "{}",
        describe(&report)
    );
    assert!(
        has_finding(&report, "vendor/other-tenants", "file.submodule", None),
        "{}",
        describe(&report)
    );
    assert_eq!(report["summary"]["tenants"], EXAMPLE_TENANTS);
    assert!(
        !run.stdout.contains("root:"),
        "the symlink target must never be read"
    );

    // The size limit is configurable.
    let (_, report) = validate_json(repo.path(), &["--max-file-size", "4MiB"]);
    assert!(
        has_finding(&report, "org_acme/huge.yaml", "file.empty", None),
        "{}",
        describe(&report)
    );

    // The work tree is held to the same rules.
    let (run, report) = validate_json(repo.path(), &["--worktree"]);
    assert_eq!(run.code, 1);
    assert!(
        has_finding(&report, "org_acme/passwd.yaml", "file.symlink", None),
        "{}",
        describe(&report)
    );
    assert!(
        has_finding(&report, "org_acme/latin1.yaml", "file.encoding", Some(3)),
        "{}",
        describe(&report)
    );
}

#[test]
fn duplicate_ids_across_files_name_the_first_declaration() {
    let repo = TestRepo::with_examples();
    let original = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("read");
    let copy = original
        .replace("0015g00000AcMe5001", "0015g00000AcMe9999")
        .replace("cus_5001", "cus_9999");
    repo.write("org_globex/t_5001_again.yaml", copy);
    let ext = std::fs::read_to_string(repo.path().join("org_acme/t_5002.yaml"))
        .expect("read")
        .replace("id: t_5002", "id: t_5099");
    repo.write("org_acme/t_5099.yaml", ext);
    repo.commit("copy-paste mistakes");
    let (run, report) = validate_json(repo.path(), &[]);
    assert_eq!(run.code, 1);
    let dup = findings(&report)
        .iter()
        .find(|f| f["rule"] == "unique.tenant-id")
        .expect("duplicate id finding");
    assert_eq!(dup["file"], "org_globex/t_5001_again.yaml");
    assert_eq!(dup["line"], 4);
    assert_eq!(dup["tenant"], "t_5001");
    assert!(
        dup["message"]
            .as_str()
            .expect("msg")
            .contains("org_acme/t_5001.yaml:4"),
        "{dup}"
    );
    let ext = findings(&report)
        .iter()
        .find(|f| f["rule"] == "unique.external-id")
        .expect("external id finding");
    assert_eq!(ext["tenant"], "t_5099");
    assert!(
        ext["message"].as_str().expect("msg").contains("t_5002"),
        "{ext}"
    );
}

#[test]
fn reads_the_commit_not_the_work_tree() {
    let repo = TestRepo::with_examples();
    let good = repo
        .repo
        .head()
        .expect("head")
        .target()
        .expect("oid")
        .to_string();
    repo.write("org_acme/t_5001.yaml", "apiVersion: [broken\n");
    // Uncommitted: HEAD is still valid, the work tree is not.
    assert_eq!(
        tenancy(&["validate", "--repo", repo.path().to_str().expect("path")]).code,
        0
    );
    let (run, report) = validate_json(repo.path(), &["--worktree"]);
    assert_eq!(run.code, 1);
    assert!(has_finding(
        &report,
        "org_acme/t_5001.yaml",
        "yaml.syntax",
        Some(1)
    ));
    assert_eq!(report["source"]["worktree"], true);

    let bad = repo.commit("break t_5001");
    let (run, report) = validate_json(repo.path(), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(report["source"]["commit"], bad.as_str());
    let (run, report) = validate_json(repo.path(), &["--rev", "HEAD~1"]);
    assert_eq!(run.code, 0, "{}", describe(&report));
    assert_eq!(report["source"]["commit"], good.as_str());
}

#[test]
fn could_not_run_is_exit_2_with_a_clear_message() {
    let not_a_repo = tempfile::tempdir().expect("tmp");
    let run = tenancy(&[
        "validate",
        "--repo",
        not_a_repo.path().to_str().expect("path"),
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not a Git repository"),
        "{}",
        run.stderr
    );

    let empty = TestRepo::new();
    let run = tenancy(&["validate", "--repo", empty.path().to_str().expect("path")]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no commits yet"), "{}", run.stderr);

    let repo = TestRepo::with_examples();
    let path = repo.path().to_str().expect("path");
    let run = tenancy(&["validate", "--repo", path, "--rev", "no-such-branch"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no-such-branch"), "{}", run.stderr);
    let run = tenancy(&["validate", "--repo", path, "--path", "nowhere"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nowhere"), "{}", run.stderr);
    let run = tenancy(&["validate", "--repo", path, "--max-file-size", "lots"]);
    assert_eq!(run.code, 2, "clap usage errors exit 2");
}

#[test]
fn text_output_reads_like_a_compiler_diagnostic() {
    let repo = TestRepo::with_examples();
    repo.write(
        "org_acme/wrong-type.yaml",
        std::fs::read(bad_corpus().join("wrong-type.yaml")).expect("read"),
    );
    repo.write(
        "org_acme/unknown-field.yaml",
        std::fs::read(bad_corpus().join("unknown-field.yaml")).expect("read"),
    );
    repo.commit("two mistakes");
    let run = tenancy(&["validate", "--repo", repo.path().to_str().expect("path")]);
    assert_eq!(run.code, 1);
    let expected = std::fs::read_to_string(
        crate::support::workspace_root().join("tests/data/expected/validate-text.txt"),
    )
    .expect("expected output");
    // The last line carries the commit sha and timing; compare everything before it.
    let body: Vec<&str> = run.stdout.lines().collect();
    let (summary, diagnostics) = body.split_last().expect("output");
    assert_eq!(diagnostics.join("\n").trim_end(), expected.trim_end());
    assert!(
        summary.starts_with("refused: 2 error(s), 0 warning(s) in 20 file(s)"),
        "{summary}"
    );
}

#[test]
fn json_output_matches_its_published_schema() {
    let repo = TestRepo::with_examples();
    repo.write(
        "org_acme/wrong-type.yaml",
        std::fs::read(bad_corpus().join("wrong-type.yaml")).expect("read"),
    );
    repo.commit("one mistake");
    let (_, report) = validate_json(repo.path(), &[]);
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("schemas/validate-report.schema.json"))
            .expect("schema"),
    )
    .expect("schema json");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let f = &findings(&report)[0];
    assert_eq!(f["file"], "org_acme/wrong-type.yaml");
    assert_eq!(
        (f["line"].as_u64(), f["column"].as_u64()),
        (Some(11), Some(25))
    );
    assert_eq!(f["tenant"], "t_9002");
    assert_eq!(f["rule"], "schema.type");
    assert_eq!(f["pointer"], "/spec/quotas/storageGiB");
    assert_eq!(report["summary"]["errors"], 1);
}
