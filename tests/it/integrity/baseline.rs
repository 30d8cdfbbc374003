//! A. A change is judged against what is applied (apply, the daemon, API writes) or against the
//! pull request's base (plan and validate with --base) — never against the first parent of the
//! head, which a second commit, a resync or a rewritten history would make the refused state.

use super::{apply, bundle, event_types, history, json_run, outcome, status};
use crate::support::{TestRepo, embedded_config, validate_json};

const T: &str = "org_acme/t_5004.yaml"; // Archived in the examples

fn reopen(repo: &TestRepo) -> String {
    repo.edit(T, "lifecycle: Archived", "lifecycle: Active");
    repo.commit("reopen t_5004")
}

fn rename(repo: &TestRepo, name: &str) -> String {
    let text = std::fs::read_to_string(repo.path().join(T)).expect("read");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("displayName:"))
        .expect("displayName")
        .to_owned();
    repo.edit(T, &line, &format!("  displayName: {name}"));
    repo.commit(&format!("rename t_5004 to {name}"))
}

fn plan(repo: &TestRepo, config: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let run = json_run("plan", repo, config, extra);
    let json = run.json();
    assert_eq!(run.code, 1, "the plan refuses: {}", run.stdout);
    json
}

fn blocked_in_plan(plan: &serde_json::Value, tenant: &str) -> Vec<String> {
    plan["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == tenant)
        .map(|t| {
            t["blocked"]
                .as_array()
                .expect("blocked")
                .iter()
                .map(|b| b.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_refused_change_stays_refused_across_commits_passes_and_rules() {
    let repo = TestRepo::with_examples();
    let c0 = repo.head();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let (run, _) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // C1 is refused on its own; C2 only renames the tenant.
    reopen(&repo);
    let (run, report) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "blocked");
    let c2 = rename(&repo, "Acme Legacy Portal (reopened)");

    // validate: against the base, and against what is applied when a store is configured.
    let (run, report) = validate_json(
        repo.path(),
        &["--rev", &c2, "--base", &c0, "--policies", &bundle()],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let rules: Vec<&str> = crate::support::findings(&report)
        .iter()
        .filter(|f| f["tenant"] == "t_5004")
        .filter_map(|f| f["rule"].as_str())
        .collect();
    assert_eq!(rules, ["lifecycle.transition-not-allowed"], "{report:#}");
    let (run, _) = validate_json(
        repo.path(),
        &[
            "--rev",
            &c2,
            "--config",
            config.to_str().expect("utf-8"),
            "--policies",
            &bundle(),
        ],
    );
    assert_eq!(
        run.code, 1,
        "judged against the last applied manifest: {}",
        run.stdout
    );
    // Without either, C2 is judged as its own change (its parent already said Active).
    let (run, _) = validate_json(repo.path(), &["--rev", &c2, "--policies", &bundle()]);
    assert_eq!(run.code, 0, "{}", run.stdout);

    // plan --base C0 --head C2: the pull request as a whole.
    let p = plan(&repo, &config, &["--base", &c0, "--head", &c2]);
    let why = blocked_in_plan(&p, "t_5004").join("\n");
    assert!(why.contains("lifecycle.transition-not-allowed"), "{p:#}");
    // plan --rev C2 judges exactly as apply will: against what is applied.
    let p = plan(&repo, &config, &["--rev", &c2]);
    assert!(!blocked_in_plan(&p, "t_5004").is_empty(), "{p:#}");

    // apply at C2, and every later full pass: still refused, never activated.
    for pass in 0..2 {
        let (run, report) = apply(&repo, &config, &[]);
        assert_eq!(run.code, 1, "pass {pass}: {}", run.stdout);
        let o = outcome(&report, "t_5004");
        assert_eq!(o["outcome"], "blocked", "pass {pass}: {o:#}");
        assert!(
            o["reason"]
                .as_str()
                .expect("reason")
                .contains("lifecycle may not change from Archived to Active"),
            "{o:#}"
        );
    }
    let st = status(&config, "t_5004");
    assert_eq!(st["status"], "blocked", "{st:#}");
    assert_eq!(st["last_applied_commit"], c0.as_str(), "{st:#}");
    let types = event_types(&config, "t_5004");
    assert!(!types.iter().any(|t| t == "TENANCY_ACTIVATED"), "{types:?}");
    assert!(types.iter().any(|t| t == "POLICY_DENIED"), "{types:?}");

    // The decision names the version it was judged against, in the store and in the note.
    let history = history(&config, "t_5004");
    let against = format!("last applied at {c0}");
    let commits = history["commits"].as_array().expect("commits");
    let at_c2 = commits
        .iter()
        .find(|c| c["commit"] == c2.as_str())
        .expect("C2 in the history");
    let lifecycle = at_c2["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["policy"] == "lifecycle")
        .expect("the lifecycle decision");
    assert_eq!(lifecycle["against"], against.as_str(), "{lifecycle:#}");
    assert_eq!(lifecycle["blocks"], true);
    let note = tenancy::source::read_note(repo.path(), &c2)
        .expect("note")
        .expect("C2 is annotated");
    assert!(
        note.contains(&format!("judged against {against}")),
        "{note}"
    );

    // Other rules that compare with the previous version: encryption weakened over two
    // commits (the second only touches a label) is refused too.
    repo.edit(
        "org_acme/t_5001.yaml",
        "encryption: kms-per-tenant",
        "encryption: platform-managed",
    );
    repo.commit("weaken t_5001");
    repo.edit("org_acme/t_5001.yaml", "team: cc-12", "team: cc-13");
    repo.commit("relabel t_5001");
    let (_, report) = apply(&repo, &config, &[]);
    let o = outcome(&report, "t_5001");
    assert_eq!(o["outcome"], "blocked", "{o:#}");
    assert!(
        o["reason"]
            .as_str()
            .expect("reason")
            .contains("encryption.weakened")
    );

    // A change that passes replaces the refused one: back to Archived (and kms) applies.
    repo.edit(T, "lifecycle: Active", "lifecycle: Archived");
    repo.edit(
        "org_acme/t_5001.yaml",
        "encryption: platform-managed",
        "encryption: kms-per-tenant",
    );
    let c3 = repo.commit("restore t_5004 and t_5001");
    let (run, report) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "applied");
    let st = status(&config, "t_5004");
    assert_eq!(st["status"], "synced");
    assert_eq!(st["last_applied_commit"], c3.as_str());
}

#[test]
fn moved_recreated_and_reverted_tenants_keep_their_previous_version() {
    let repo = TestRepo::with_examples();
    let c0 = repo.head();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let (run, _) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let archived = std::fs::read_to_string(repo.path().join(T)).expect("read");
    let active = archived.replace("lifecycle: Archived", "lifecycle: Active");

    // Moved to another file and reopened in the same commit.
    repo.remove(T);
    repo.write("org_acme/legacy-portal.yaml", &active);
    let moved = repo.commit("move t_5004 and reopen it");
    let p = plan(&repo, &config, &["--base", &c0, "--head", &moved]);
    assert!(!blocked_in_plan(&p, "t_5004").is_empty(), "{p:#}");
    let (_, report) = apply(&repo, &config, &[]);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "blocked");

    // Deleted (no confirmation: the tenant is kept), then re-created as Active.
    repo.remove("org_acme/legacy-portal.yaml");
    let deleted = repo.commit("drop t_5004's file");
    let (_, report) = apply(&repo, &config, &[]);
    assert!(
        report["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .all(|t| t["tenant"] != "t_5004"),
        "{report:#}"
    );
    repo.write(T, &active);
    let recreated = repo.commit("re-create t_5004 as Active");
    let (_, report) = apply(&repo, &config, &[]);
    assert_eq!(
        outcome(&report, "t_5004")["outcome"],
        "blocked",
        "{report:#}"
    );
    // The pull request's base lacks the tenant; what is applied does not.
    let p = plan(&repo, &config, &["--base", &deleted, "--head", &recreated]);
    assert!(!blocked_in_plan(&p, "t_5004").is_empty(), "{p:#}");

    // A revert of the refused change passes; reverting the revert is refused again.
    repo.write(T, &archived);
    repo.commit("Revert \"re-create t_5004 as Active\"");
    let (run, report) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "applied");
    repo.write(T, &active);
    repo.commit("Reapply \"re-create t_5004 as Active\"");
    let (_, report) = apply(&repo, &config, &[]);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "blocked");
    assert!(
        !event_types(&config, "t_5004")
            .iter()
            .any(|t| t == "TENANCY_ACTIVATED")
    );
}

#[test]
fn a_tenant_never_applied_is_a_creation_whatever_older_commits_said() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    // Never applied while Archived: the first apply sees an Active tenant being created.
    reopen(&repo);
    let (run, report) = apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(outcome(&report, "t_5004")["outcome"], "applied");
    let history = history(&config, "t_5004");
    let decisions = history["commits"][0]["decisions"]
        .as_array()
        .expect("decisions");
    assert!(
        decisions
            .iter()
            .all(|d| d["against"] == "nothing (a creation)" && d["operation"] == "create"),
        "{decisions:#?}"
    );
}

/// The daemon following a remote: two commits arriving in one fetch (the first refused on its
/// own), a restart, and a rewritten history whose new parent already says Active (a force-push
/// the configuration allows) — every pass judges against what is applied, so the archived
/// tenant is never reopened.
#[test]
fn the_daemon_judges_pushes_restarts_and_force_pushes_against_what_is_applied() {
    use crate::daemon::{http_get, http_post, start, stop, wait_for};
    use hmac::Mac;
    use std::time::Duration;
    let upstream = TestRepo::with_examples();
    let c0 = upstream.head();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let secret = "trigger-secret-0123456789";
    let branch = upstream
        .repo
        .head()
        .expect("head")
        .shorthand()
        .expect("branch")
        .to_owned();
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!(
        "[daemon]\nremote = \"file://{}\"\nbranch = \"{branch}\"\nfetch-interval-seconds = 3600\ntrigger-secret = \"{secret}\"\non-non-fast-forward = \"apply\"\n",
        upstream.path().display(),
    );
    std::fs::write(&config, toml).expect("config");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let trigger = |port| {
        assert_eq!(
            http_post(
                port,
                "/hooks/git",
                &[("X-Hub-Signature-256", &signature)],
                body
            ),
            Some(202)
        );
    };
    let attempted = |sha: &str| {
        let st = status(&config, "t_5004");
        st["last_attempted_commit"] == sha
    };

    let port = crate::support::free_port();
    let daemon = start(&upstream, &config, port);
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(status(&config, "t_5004")["status"], "synced");

    // Two commits, one fetch.
    reopen(&upstream);
    let c2 = rename(&upstream, "Acme Legacy Portal (reopened)");
    trigger(port);
    wait_for("the push reconciled", Duration::from_secs(20), || {
        attempted(&c2)
    });
    let st = status(&config, "t_5004");
    assert_eq!(st["status"], "blocked", "{st:#}");
    assert_eq!(st["last_applied_commit"], c0.as_str());

    // A restart runs a full pass over the same head: still refused.
    assert!(stop(daemon).success());
    let daemon = start(&upstream, &config, port);
    wait_for("/readyz after the restart", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(status(&config, "t_5004")["status"], "blocked");

    // History rewritten so that the head's parent already declares Active.
    let import = upstream
        .repo
        .find_commit(git2::Oid::from_str(&c0).expect("oid"))
        .expect("commit");
    upstream
        .repo
        .reset(import.as_object(), git2::ResetType::Hard, None)
        .expect("reset");
    reopen(&upstream);
    let rewritten = rename(&upstream, "Acme Legacy Portal (rewritten)");
    trigger(port);
    wait_for(
        "the rewritten head reconciled",
        Duration::from_secs(20),
        || attempted(&rewritten),
    );
    let st = status(&config, "t_5004");
    assert_eq!(st["status"], "blocked", "{st:#}");
    assert_eq!(st["last_applied_commit"], c0.as_str());
    let types = event_types(&config, "t_5004");
    assert!(!types.iter().any(|t| t == "TENANCY_ACTIVATED"), "{types:?}");
    assert!(stop(daemon).success());
}
