//! `tenancy run` (issue 5): the daemon watches a repository and converges each new commit —
//! only the tenants it changed — within well under a second; serves /healthz, /readyz and
//! /metrics; refuses a force-push (before and after a restart, since it resumes from the last
//! reconciled commit in the state store); and stops cleanly on SIGTERM.

use crate::support::{TestRepo, embedded_config, workspace_root};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

fn metric(port: u16, name: &str) -> u64 {
    http_get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ok() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn start(repo: &TestRepo, config: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args([
            "run",
            "--repo",
            repo.path().to_str().expect("utf-8"),
            "--config",
            config.to_str().expect("utf-8"),
            "--policies",
            workspace_root()
                .join("policies/bundle.yaml")
                .to_str()
                .expect("utf-8"),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tenancy run")
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events_of(config: &std::path::Path, tenant: &str) -> String {
    let r = crate::support::tenancy(&[
        "events",
        "--config",
        config.to_str().expect("utf-8"),
        "--tenant",
        tenant,
        "--output",
        "json",
    ]);
    r.stdout
}

#[test]
fn the_daemon_converges_each_new_commit_and_refuses_a_force_push() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let daemon = start(&repo, &config, port);
    wait_for("/healthz", Duration::from_secs(30), || {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    wait_for(
        "/readyz after the first full reconcile",
        Duration::from_secs(30),
        || http_get(port, "/readyz").is_some_and(|(c, _)| c == 200),
    );
    assert!(events_of(&config, "t_5001").contains("TENANCY_CREATED"));

    // A new commit is converged (event recorded) without waiting for the 5 s poll.
    let path = repo.path().join("org_acme/t_5001.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("lifecycle: Active", "lifecycle: Suspended"),
    )
    .expect("write");
    repo.commit("suspend t_5001");
    let latency = wait_for("TENANCY_SUSPENDED", Duration::from_secs(10), || {
        events_of(&config, "t_5001").contains("TENANCY_SUSPENDED")
    });
    eprintln!("commit to event: {latency:?}");
    assert!(
        latency < Duration::from_secs(4),
        "the watcher, not the 5 s poll, reacted: {latency:?}"
    );
    // The pass finishes (note, cursor, metrics) just after the event is recorded.
    wait_for(
        "the second pass to be counted",
        Duration::from_secs(10),
        || metric(port, "tenancy_reconciles_total") >= 2,
    );
    assert_eq!(metric(port, "tenancy_reconcile_errors_total"), 0);

    // An incremental pass still judges what the commit changed: a residency breach is denied.
    let p6 = repo.path().join("org_globex/t_6001.yaml");
    let text = std::fs::read_to_string(&p6).expect("read");
    std::fs::write(
        &p6,
        text.replace("preferred: eu-central-1", "preferred: us-east-1"),
    )
    .expect("write");
    repo.commit("move t_6001 out of its zone");
    wait_for("POLICY_DENIED for t_6001", Duration::from_secs(10), || {
        events_of(&config, "t_6001").contains("POLICY_DENIED")
    });

    // A force-push (history rewritten behind the last reconciled commit) is refused.
    let last = repo.head();
    let parent = repo
        .repo
        .find_commit(git2::Oid::from_str(&last).expect("oid"))
        .expect("commit")
        .parent(0)
        .expect("parent");
    repo.repo
        .reset(parent.as_object(), git2::ResetType::Hard, None)
        .expect("reset");
    let p2 = repo.path().join("org_acme/t_5002.yaml");
    let text = std::fs::read_to_string(&p2).expect("read");
    std::fs::write(
        &p2,
        text.replace("lifecycle: Active", "lifecycle: Suspended"),
    )
    .expect("write");
    repo.commit("rewritten: suspend t_5002 instead");
    wait_for(
        "the force-push to be refused",
        Duration::from_secs(10),
        || metric(port, "tenancy_non_fast_forward_total") >= 1,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !events_of(&config, "t_5002").contains("TENANCY_SUSPENDED"),
        "nothing applied"
    );
    assert!(stop(daemon).success(), "SIGTERM: a clean exit");

    // After a restart it resumes from the last reconciled commit: still refused.
    let daemon = start(&repo, &config, port);
    wait_for("the refusal after restart", Duration::from_secs(30), || {
        metric(port, "tenancy_non_fast_forward_total") >= 1
    });
    assert!(!events_of(&config, "t_5002").contains("TENANCY_SUSPENDED"));
    assert!(stop(daemon).success());
}

/// Forward connections on `port` to `upstream`, from now on (a service coming back).
fn forward(port: u16, upstream: &str) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy port");
    let upstream = upstream.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut to_server, mut to_client) = (
                server.try_clone().expect("clone"),
                client.try_clone().expect("clone"),
            );
            let (mut from_client, mut from_server) = (client, server);
            std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
            std::thread::spawn(move || std::io::copy(&mut from_server, &mut to_client));
        }
    });
}

/// A plane target down: its tenants fail with the reason recorded and are retried with
/// backoff — no new commit needed — and converge once the service is back.
#[test]
fn failed_tenants_are_retried_with_backoff_until_the_service_returns() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let tag = crate::support::unique_tag();
    let s3_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut toml = format!(
        "[embedded]\nroot = \"{}\"\n",
        work.path().join("data").display()
    );
    for region in ["ap-south-1", "eu-west-1", "eu-central-1", "us-east-1"] {
        toml += &format!(
            "[object-store.targets.s3-{region}]\nendpoint = \"http://127.0.0.1:{s3_port}\"\nregion = \"{region}\"\n\
             path-style = true\naccess-key-id = \"k\"\nsecret-access-key = \"s\"\nbucket-prefix = \"{tag}-{}\"\n",
            region.replace('-', "")
        );
    }
    let config = work.path().join("tenancy.toml");
    std::fs::write(&config, toml).expect("config");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let daemon = start(&repo, &config, port);
    wait_for(
        "failed tenants awaiting retry",
        Duration::from_secs(60),
        || metric(port, "tenancy_tenants_awaiting_retry") >= 1,
    );
    let status = |tenant: &str| {
        let r = crate::support::tenancy(&[
            "status",
            "--config",
            config.to_str().expect("utf-8"),
            "--output",
            "json",
            tenant,
        ]);
        r.json()["tenants"][0].clone()
    };
    let s = status("t_5001");
    assert_eq!(s["status"], "failed", "{s:#}");
    assert!(
        s["error"].as_str().expect("error").contains("object-store"),
        "{s:#}"
    );

    // The service comes back: the retries converge every tenant without a new commit.
    forward(s3_port, &env["TENANCY_TEST_S3_URL"]);
    wait_for(
        "t_5001 applied after a retry",
        Duration::from_secs(60),
        || status("t_5001")["status"] == "applied",
    );
    wait_for("no tenant left to retry", Duration::from_secs(60), || {
        metric(port, "tenancy_tenants_awaiting_retry") == 0
    });
    assert!(metric(port, "tenancy_retry_passes_total") >= 1);
    assert!(stop(daemon).success());
}
