//! Events and audit (issue 5, first part): every apply records, in the same transaction as the
//! state change, CloudEvents in the outbox and entries in `tenant_audit` — lifecycle
//! transitions, updates, failures and policy denials — with stable ids (a rerun of the same
//! commit adds nothing), gap-free per-tenant sequences, and payloads valid against
//! schemas/event.schema.json. `tenancy events` reads them back.

use crate::support::{TestRepo, tenancy, workspace_root};
use serde_json::Value;
use std::path::Path;

fn run(args: &[&str]) -> crate::support::Run {
    tenancy(args)
}

fn apply(repo: &Path, config: &Path) -> crate::support::Run {
    let bundle = workspace_root().join("policies/bundle.yaml");
    run(&[
        "apply",
        "--yes",
        "--repo",
        repo.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        bundle.to_str().expect("utf-8"),
        "--output",
        "json",
    ])
}

fn events(config: &Path, tenant: Option<&str>) -> Vec<Value> {
    let mut args = vec![
        "events",
        "--config",
        config.to_str().expect("utf-8"),
        "--output",
        "json",
    ];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn apply_records_events_and_audit_for_every_transition_once() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let first = repo.head();
    assert_eq!(apply(repo.path(), &config).code, 0);

    let all = events(&config, None);
    let schema = crate::support::EventSchema::load();
    for e in &all {
        schema.check(e);
    }
    // A new Active tenant: created, then activated; a new Draft one: created only.
    assert_eq!(
        types(&events(&config, Some("t_5001"))),
        ["TENANCY_CREATED", "TENANCY_ACTIVATED"]
    );
    assert_eq!(types(&events(&config, Some("t_7004"))), ["TENANCY_CREATED"]);
    let t5001 = events(&config, Some("t_5001"));
    assert_eq!(
        (
            t5001[0]["tenantsequence"].as_i64(),
            t5001[1]["tenantsequence"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(t5001[0]["commitsha"], first.as_str());
    assert_eq!(t5001[0]["data"]["data"]["lifecycle"]["from"], Value::Null);
    // The body (`data`) is seed 000's shape: what a consumer written from the seed reads.
    let body = &t5001[0]["data"];
    assert_eq!(body["type"], t5001[0]["type"]);
    assert_eq!(body["tenantId"], "t_5001");
    assert_eq!(body["id"], t5001[0]["id"]);
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        t5001[0]["correlationid"], t5001[1]["correlationid"],
        "one run, one correlation id"
    );

    // Applying the same commit again records nothing new.
    assert_eq!(apply(repo.path(), &config).code, 0);
    assert_eq!(
        events(&config, None).len(),
        all.len(),
        "no duplicate events"
    );

    // Suspend t_5001, edit t_5002's contacts, and break t_6001's residency in one commit.
    let edit = |rel: &str, from: &str, to: &str| {
        let p = repo.path().join(rel);
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(text.contains(from), "{rel} has {from}");
        std::fs::write(&p, text.replace(from, to)).expect("write");
    };
    edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Active",
        "lifecycle: Suspended",
    );
    edit(
        "org_acme/t_5002.yaml",
        "displayName:",
        "displayName: Renamed",
    );
    edit(
        "org_globex/t_6001.yaml",
        "preferred: eu-central-1",
        "preferred: us-east-1",
    );
    let second = repo.commit("suspend t_5001, rename t_5002, move t_6001");
    assert_eq!(apply(repo.path(), &config).code, 1, "t_6001 is refused");
    let t5001 = events(&config, Some("t_5001"));
    assert_eq!(
        types(&t5001),
        ["TENANCY_CREATED", "TENANCY_ACTIVATED", "TENANCY_SUSPENDED"]
    );
    assert_eq!(t5001[2]["tenantsequence"], 3);
    assert_eq!(
        t5001[2]["data"]["data"]["lifecycle"],
        serde_json::json!({ "from": "Active", "to": "Suspended" })
    );
    assert_eq!(t5001[2]["commitsha"], second.as_str());
    assert_eq!(
        types(&events(&config, Some("t_5002")))[2..],
        ["TENANCY_UPDATED"]
    );
    let t6001 = events(&config, Some("t_6001"));
    let denied = t6001.last().expect("event");
    assert_eq!(denied["type"], "POLICY_DENIED");
    assert_eq!(denied["data"]["data"]["policies"][0]["policy"], "residency");
    assert!(
        denied["data"]["reason"]
            .as_str()
            .expect("reason")
            .contains("residency")
    );
    for e in events(&config, None) {
        schema.check(&e);
    }

    // Resuming emits TENANCY_RESUMED; the audit trail names the commit author and outcome.
    edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Suspended",
        "lifecycle: Active",
    );
    repo.commit("resume t_5001");
    apply(repo.path(), &config);
    assert_eq!(
        types(&events(&config, Some("t_5001"))).last(),
        Some(&"TENANCY_RESUMED")
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let audit = rt.block_on(async {
        let store = tenancy::store::Store::open(&format!(
            "sqlite://{}",
            work.path().join("data/state.db").display()
        ))
        .await
        .expect("store");
        store.audit("t_5001").await.expect("audit")
    });
    let trail: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.event_type.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("TENANCY_CREATED", "applied"),
            ("TENANCY_ACTIVATED", "applied"),
            ("TENANCY_SUSPENDED", "applied"),
            ("TENANCY_RESUMED", "applied")
        ]
    );
    assert!(
        audit[2].actor.contains('<') && audit[2].commit_sha.as_deref() == Some(second.as_str()),
        "{:?}",
        audit[2]
    );

    // The text view, for people.
    let r = run(&[
        "events",
        "--config",
        config.to_str().expect("utf-8"),
        "--tenant",
        "t_6001",
    ]);
    assert!(r.stdout.contains("POLICY_DENIED"), "{}", r.stdout);
}

/// The outbox is relayed to a real Kafka-protocol broker after apply: every event once
/// acknowledged is marked published, keyed by tenant, in per-tenant order; with the broker
/// unreachable the events wait in the outbox and the next run delivers them.
#[tokio::test(flavor = "multi_thread")]
async fn events_are_relayed_to_kafka_and_wait_in_the_outbox_while_it_is_down() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let broker = env["TENANCY_TEST_KAFKA_NOIDA"].clone();
    let topic = format!("events-{}", crate::support::unique_tag());
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let base = std::fs::read_to_string(&config).expect("config");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let with_broker = |servers: &str| {
        format!(
            "{base}[events.kafka]\nbootstrap-servers = \"{servers}\"\ntopic = \"{topic}\"\nproperties = {{ \"message.timeout.ms\" = \"2000\" }}\n"
        )
    };

    // Kafka unreachable: apply still converges; the events wait.
    std::fs::write(&config, with_broker(&dead)).expect("config");
    let r = apply(repo.path(), &config);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("waiting in the outbox"), "{}", r.stderr);
    let recorded = events(&config, None);
    assert!(
        recorded.len() >= 13,
        "a CREATED event per tenant at least: {}",
        recorded.len()
    );

    // Kafka back: the next run publishes every waiting event, once.
    std::fs::write(&config, with_broker(&broker)).expect("config");
    let r = apply(repo.path(), &config);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("events: {} published", recorded.len())),
        "{}",
        r.stderr
    );
    let r = apply(repo.path(), &config);
    assert!(
        r.stderr.contains("events: 0 published"),
        "nothing twice: {}",
        r.stderr
    );

    // Read them back with a real consumer: same ids, keyed by tenant, in sequence per tenant.
    let received = crate::support::read_topic(
        &broker,
        &topic,
        recorded.len(),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(received.len(), recorded.len(), "every event delivered");
    let mut ids: Vec<&str> = received
        .iter()
        .map(|(_, e)| e["id"].as_str().expect("id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), recorded.len(), "no event twice");
    let mut last: std::collections::HashMap<&str, i64> = Default::default();
    for (key, e) in &received {
        assert_eq!(
            key,
            e["tenantid"].as_str().expect("tenant"),
            "key = tenant id"
        );
        let seq = e["tenantsequence"].as_i64().expect("seq");
        let prev = last.insert(key, seq).unwrap_or(0);
        assert!(seq > prev, "{key}: sequence {seq} after {prev}");
    }
}

/// Every applied commit carries a git note with the policies that judged it and each tenant's
/// outcome and verdicts (read back with git itself), a rerun that finds nothing new adds
/// nothing to it, and `tenancy history` tells a tenant's story from the state store.
#[test]
fn applied_commits_carry_notes_and_history_tells_each_tenants_story() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let first = repo.head();
    assert_eq!(apply(repo.path(), &config).code, 0);
    let p = repo.path().join("org_globex/t_6001.yaml");
    let text = std::fs::read_to_string(&p).expect("read");
    std::fs::write(
        &p,
        text.replace("preferred: eu-central-1", "preferred: us-east-1"),
    )
    .expect("write");
    let second = repo.commit("move t_6001 out of its residency zone");
    assert_eq!(apply(repo.path(), &config).code, 1);
    assert_eq!(
        apply(repo.path(), &config).code,
        1,
        "a rerun of the same commit"
    );

    let git_log = |rev: &str| {
        let out = std::process::Command::new("git")
            .args([
                "-C",
                repo.path().to_str().expect("utf-8"),
                "log",
                "-1",
                "--notes=tenancy",
                rev,
            ])
            .output()
            .expect("git log");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log = git_log(&first);
    assert!(
        log.contains("Tenancy apply at") && log.contains("13 applied, 0 blocked"),
        "{log}"
    );
    assert!(log.contains("policy residency sha256:"), "{log}");
    assert!(
        log.contains("t_5001 applied: 4 of 4 change(s) made"),
        "{log}"
    );
    let log = git_log(&second);
    assert!(
        log.contains("t_6001 blocked: 0 of 0 change(s) made — residency."),
        "{log}"
    );
    assert!(
        log.contains("residency sha256:") && log.contains("deny residency.preferred-not-allowed"),
        "{log}"
    );
    assert_eq!(
        log.matches("Tenancy apply at").count(),
        1,
        "a rerun with the same outcome adds nothing: {log}"
    );
    assert!(log.contains("(judged against last applied at"), "{log}");

    let cfg = config.to_str().expect("utf-8");
    let r = run(&["history", "t_6001", "--config", cfg, "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let h = r.json();
    assert_eq!(h["status"]["status"], "blocked");
    let commits: Vec<&str> = h["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| c["commit"].as_str().expect("sha"))
        .collect();
    assert_eq!(commits, [first.as_str(), second.as_str()]);
    let denied = h["commits"][1]["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["policy"] == "residency")
        .expect("residency");
    assert_eq!(denied["blocks"], true);
    assert_eq!(h["commits"][1]["audit"][0]["event_type"], "POLICY_DENIED");
    let r = run(&["history", "t_6001", "--config", cfg]);
    assert!(
        r.stdout.contains("policy residency sha256:") && r.stdout.contains("denied"),
        "{}",
        r.stdout
    );
    assert_eq!(run(&["history", "t_nobody", "--config", cfg]).code, 1);
}

/// `tenancy demo` on a fresh checkout: four commits reconciled on embedded defaults, and the
/// result is real — a Git repository whose commits carry notes, a state store with statuses
/// and events.
#[test]
fn the_demo_runs_the_whole_loop_with_nothing_running() {
    let work = tempfile::tempdir().expect("tmp");
    let dir = work.path().join("demo");
    let root = workspace_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .current_dir(&root)
        .args(["demo", "--dir", dir.to_str().expect("utf-8")])
        .env("NO_COLOR", "1")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "[4/4]",
        "t_5010 applied: 4 change(s)",
        "t_5002   #3   TENANCY_SUSPENDED",
        "t_6002   #3   POLICY_DENIED",
        "t_6002   blocked  residency.",
        "policy residency sha256:",
        "docs/tenancy.example.toml",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    let config = dir.join("tenancy.toml");
    let r = run(&[
        "status",
        "--config",
        config.to_str().expect("utf-8"),
        "--output",
        "json",
        "t_5010",
    ]);
    assert_eq!(r.json()["tenants"][0]["status"], "synced");
    let repo = git2::Repository::open(dir.join("tenants-repo")).expect("repo");
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    assert_eq!(head.parent_count(), 1);
    let note = repo
        .find_note(Some("refs/notes/tenancy"), head.id())
        .expect("note on HEAD");
    assert!(note.message().expect("utf-8").contains("t_6002 blocked"));
    // A second demo into the same, now non-empty, directory is refused rather than mixed in.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .current_dir(&root)
        .args(["demo", "--dir", dir.to_str().expect("utf-8")])
        .output()
        .expect("run demo");
    assert_eq!(again.status.code(), Some(2));
}

/// `--log-format json`: every log line on stderr is JSON, and each tenant's outcome carries
/// the tenant, commit and correlation id for a log pipeline to join on.
#[test]
fn json_logs_carry_tenant_commit_and_correlation_id() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let bundle = workspace_root().join("policies/bundle.yaml");
    let r = run(&[
        "--log-format",
        "json",
        "-v",
        "apply",
        "--yes",
        "--repo",
        repo.path().to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        bundle.to_str().expect("utf-8"),
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<Value> = r
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let tenant = lines
        .iter()
        .find(|l| l["message"] == "tenant reconciled" && l["tenant"] == "t_5001")
        .unwrap_or_else(|| panic!("no tenant line in {lines:#?}"));
    assert_eq!(tenant["commit"], repo.head().as_str());
    assert_eq!(tenant["correlation_id"].as_str().map(str::len), Some(32));
    assert_eq!(tenant["environments"], "dev,prod", "{tenant:#}");
    assert_eq!(tenant["level"], "INFO");
}
