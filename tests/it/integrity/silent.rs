//! D. Nothing fails silently: unreadable files, orphaned tenants, refused force-pushes, bad
//! arguments and missing remotes are each said — in logs, metrics, `tenancy status`, events
//! and exit codes.

use super::{event_types, status};
use crate::daemon::{http_get, metric, stop, wait_for};
use crate::support::{Running, TestRepo, embedded_config, free_port, tenancy, workspace_root};
use std::process::{Command, Stdio};
use std::time::Duration;

fn daemon(repo: &TestRepo, config: &std::path::Path, port: u16, extra: &[&str]) -> Running {
    Running(Some(
        Command::new(env!("CARGO_BIN_EXE_tenancy"))
            .args(["run", "--repo"])
            .arg(repo.path())
            .arg("--config")
            .arg(config)
            .arg("--policies")
            .arg(workspace_root().join("policies/bundle.yaml"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--interval", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tenancy run"),
    ))
}

fn ready(port: u16) {
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
}

fn status_text(config: &std::path::Path) -> String {
    tenancy(&["status", "--config", config.to_str().expect("utf-8")]).stdout
}

/// D1: a file over the size limit is never silent — the daemon logs, counts and shows it, and
/// the tenant it declared is blocked (kept, not deleted, not "synced"); `--max-file-size` is
/// honoured by `tenancy run`.
#[test]
fn an_unreadable_manifest_is_said_and_its_tenant_kept() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let port = free_port();
    let d = daemon(&repo, &config, port, &[]);
    ready(port);
    assert_eq!(status(&config, "t_5001")["status"], "synced");
    let applied_at = status(&config, "t_5001")["last_applied_commit"].clone();

    // 1.5 MiB: over the default 1 MiB limit.
    let path = repo.path().join("org_acme/t_5001.yaml");
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.push_str(&format!("# {}\n", "x".repeat(1536 * 1024)));
    std::fs::write(&path, &text).expect("write");
    let big = repo.commit("t_5001 grows past the size limit");
    wait_for("t_5001 blocked", Duration::from_secs(30), || {
        status(&config, "t_5001")["last_attempted_commit"] == big.as_str()
    });
    let st = status(&config, "t_5001");
    assert_eq!(st["status"], "blocked", "{st:#}");
    let why = st["blocked_reason"].as_str().expect("reason");
    assert!(why.contains("org_acme/t_5001.yaml cannot be read"), "{why}");
    assert_eq!(
        st["last_applied_commit"], applied_at,
        "the applied state is kept"
    );
    assert_eq!(metric(port, "tenancy_unreadable_files"), 1);
    let text_status = status_text(&config);
    assert!(
        text_status.contains("1 file(s) could not be read")
            && text_status.contains("file.too-large"),
        "{text_status}"
    );
    assert!(
        event_types(&config, "t_5001")
            .iter()
            .any(|t| t == "RECONCILE_FAILED")
    );
    assert!(stop(d).success());

    // The same daemon with a larger limit reads it: the tenant is synced again.
    let d = daemon(&repo, &config, port, &["--max-file-size", "4MiB"]);
    ready(port);
    wait_for(
        "t_5001 synced at the big commit",
        Duration::from_secs(30),
        || {
            let st = status(&config, "t_5001");
            st["status"] == "synced" && st["last_applied_commit"] == big.as_str()
        },
    );
    assert_eq!(metric(port, "tenancy_unreadable_files"), 0);
    assert!(stop(d).success());

    // `tenancy apply` says it too (default limit), and refuses (exit 1).
    let run = super::json_run("apply", &repo, &config, &["--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("1 file(s) could not be read"),
        "{}",
        run.stderr
    );
    assert_eq!(status(&config, "t_5001")["status"], "blocked");
}

/// D2: argument errors are usage errors (exit 2, naming the argument).
#[test]
fn bad_daemon_arguments_are_usage_errors() {
    for (flag, value) in [
        ("--interval", "0"),
        ("--resync", "-5"),
        ("--interval", "soon"),
    ] {
        let run = tenancy(&["run", &format!("{flag}={value}")]);
        assert_eq!(run.code, 2, "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{}", run.stderr);
        assert!(
            !run.stderr.contains("cannot write output"),
            "{}",
            run.stderr
        );
    }
}

/// D3: a refused force-push is in `tenancy status` (since when, why) and in /readyz — which
/// tells it from a start-up — before and after a restart.
#[test]
fn a_refused_force_push_is_shown_and_readiness_says_why() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let port = free_port();
    let d = daemon(&repo, &config, port, &[]);
    ready(port);
    repo.edit("org_acme/t_5001.yaml", "team: cc-12", "team: cc-13");
    let last = repo.commit("relabel t_5001");
    wait_for("the relabel reconciled", Duration::from_secs(20), || {
        status(&config, "t_5001")["last_attempted_commit"] == last.as_str()
    });
    // Rewrite history behind the daemon.
    let parent = repo
        .repo
        .find_commit(git2::Oid::from_str(&last).expect("oid"))
        .expect("commit")
        .parent(0)
        .expect("parent");
    repo.repo
        .reset(parent.as_object(), git2::ResetType::Hard, None)
        .expect("reset");
    repo.edit("org_acme/t_5002.yaml", "team: cc-12", "team: cc-99");
    let rewritten = repo.commit("rewritten");
    let short = &rewritten[..12];
    let refused_head = || {
        tenancy(&[
            "status",
            "--config",
            config.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .json()["repository"]["refused"]["head"]
            .as_str()
            .map(str::to_owned)
    };
    // (The reset itself is refused first; then the rewritten commit.)
    wait_for("the refusal", Duration::from_secs(20), || {
        refused_head().as_deref() == Some(rewritten.as_str())
    });
    let check = |port: u16| {
        let text = status_text(&config);
        assert!(
            text.contains("repository refused since") && text.contains(short),
            "{text}"
        );
        let json = tenancy(&[
            "status",
            "--config",
            config.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .json();
        assert_eq!(
            json["repository"]["refused"]["head"],
            rewritten.as_str(),
            "{json:#}"
        );
        let (code, body) = http_get(port, "/readyz").expect("readyz");
        assert_eq!(code, 503);
        assert!(body.contains("refusing") && body.contains(short), "{body}");
        assert!(!body.contains("first reconcile"), "{body}");
    };
    check(port);
    assert!(stop(d).success());
    let d = daemon(&repo, &config, port, &[]);
    wait_for(
        "the refusal after the restart",
        Duration::from_secs(30),
        || metric(port, "tenancy_non_fast_forward_total") >= 1,
    );
    check(port);
    assert!(stop(d).success());
}

/// D4: a tenant whose manifest is removed without a deletion confirmation is kept — and
/// shown as orphaned, warned about, and told as an event, once.
#[test]
fn a_removed_manifest_leaves_an_orphan_that_is_said() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let (run, _) = super::apply(&repo, &config, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    repo.remove("org_acme/t_5002.yaml");
    let removed = repo.commit("drop t_5002's manifest");
    let (run, report) = super::apply(&repo, &config, &[]);
    assert!(run.stderr.contains("t_5002 is orphaned"), "{}", run.stderr);
    let absent = report["absent"].as_array().expect("absent");
    assert_eq!(absent.len(), 1, "{report:#}");
    assert_eq!(absent[0]["status"], "orphaned");
    let st = status(&config, "t_5002");
    assert_eq!(st["status"], "orphaned", "{st:#}");
    let why = st["blocked_reason"].as_str().expect("reason");
    assert!(
        why.contains(&format!("manifest removed at {}", &removed[..12]))
            && why.contains("org_acme/t_5002.yaml"),
        "{why}"
    );
    // Once: a second pass records no second event.
    super::apply(&repo, &config, &[]);
    let orphaned = event_types(&config, "t_5002")
        .iter()
        .filter(|t| *t == "TENANCY_ORPHANED")
        .count();
    assert_eq!(orphaned, 1);
    // Its resources are kept: the embedded database file is still there.
    let db = work.path().join("data/databases");
    let kept = std::fs::read_dir(&db)
        .expect("databases")
        .flatten()
        .filter_map(|target| std::fs::read_dir(target.path()).ok())
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("t_5002_"));
    assert!(kept, "t_5002's database is kept");
}

/// D5: following a remote that is a missing path says so.
#[test]
fn a_missing_remote_path_is_named() {
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += "[daemon]\nremote = \"/nonexistent/tenants.git\"\n";
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenancy run");
    wait_for("the fetch to fail", Duration::from_secs(20), || {
        metric(port, "tenancy_fetch_errors_total") >= 1
    });
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("there is no repository at `/nonexistent/tenants.git`"),
        "{stderr}"
    );
    assert!(!stderr.contains("unsupported URL protocol"), "{stderr}");
}

/// A file system error names what was being done and where, for every command that creates the
/// embedded root; it is never "cannot write output" (which means stdout) and never a panic.
#[test]
fn a_directory_that_cannot_be_created_is_named() {
    let work = tempfile::tempdir().expect("tmp");
    let blocker = work.path().join("not-a-directory");
    std::fs::write(&blocker, "a file where the embedded root would go").expect("write");
    let root = blocker.join("embedded");
    let config = work.path().join("tenancy.toml");
    std::fs::write(
        &config,
        format!("[embedded]\nroot = \"{}\"\n", root.display()),
    )
    .expect("config");
    let repo = TestRepo::with_examples();
    let config_arg = config.to_str().expect("utf-8");
    let repo_arg = repo.path().to_str().expect("utf-8");
    for args in [
        vec!["apply", "--repo", repo_arg, "--config", config_arg, "--yes"],
        vec!["run", "--repo", repo_arg, "--config", config_arg],
    ] {
        let run = tenancy(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("cannot create {}", root.display())),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("cannot write output"),
            "{}",
            run.stderr
        );
    }
}
