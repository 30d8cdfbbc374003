//! `tenancy run` (issue 5): the daemon watches a repository and converges each new commit —
//! only the tenants it changed — within well under a second; serves /healthz, /readyz and
//! /metrics; refuses a force-push (before and after a restart, since it resumes from the last
//! reconciled commit in the state store); and stops cleanly on SIGTERM.

use crate::support::{Running, TestRepo, embedded_config, free_port};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
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

pub(crate) fn metric(port: u16, name: &str) -> u64 {
    http_get(port, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0, |v| v as u64)
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ok() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub(crate) fn start(repo: &TestRepo, config: &std::path::Path, port: u16) -> Running {
    Running(Some(crate::support::spawn_daemon(
        repo.path(),
        config,
        port,
        5,
    )))
}

pub(crate) fn stop(mut running: Running) -> std::process::ExitStatus {
    let mut child = running.0.take().expect("running");
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

pub(crate) fn events_of(config: &std::path::Path, tenant: &str) -> String {
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
    let port = free_port();
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
    repo.edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Active",
        "lifecycle: Suspended",
    );
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
    assert!(metric(port, "tenancy_policy_evaluations_total") > 0);
    assert_eq!(metric(port, "tenancy_queue_depth"), 0, "the pass is done");
    // One OpenMetrics exposition: the daemon's families, closed once.
    let (_, body) = http_get(port, "/metrics").expect("/metrics");
    assert_eq!(body.lines().last(), Some("# EOF"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1);
    assert!(body.contains("# TYPE tenancy_policy_evaluation_seconds histogram"));
    assert!(
        body.contains("tenancy_tenants{status=\"synced\"}"),
        "{body}"
    );
    // The import and the suspension ran as lifecycle jobs, their steps the plan's changes.
    let jobs = crate::support::tenancy(&[
        "jobs",
        "t_5001",
        "--config",
        config.to_str().expect("utf-8"),
        "--output",
        "json",
    ])
    .json();
    let jobs = jobs["jobs"].as_array().expect("jobs");
    let actions: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["action"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("suspend", "completed"), ("create", "completed")],
        "{jobs:#?}"
    );
    let suspend = &jobs[0];
    assert_eq!(suspend["progress"], 1.0);
    assert_eq!(suspend["commit_sha"], repo.head().as_str());
    let steps = suspend["steps"].as_array().expect("steps");
    assert!(!steps.is_empty(), "{suspend:#}");
    assert!(
        steps.iter().all(|s| s["state"] == "completed"),
        "{suspend:#}"
    );

    // An incremental pass still judges what the commit changed: a residency breach is denied.
    repo.edit(
        "org_globex/t_6001.yaml",
        "preferred: eu-central-1",
        "preferred: us-east-1",
    );
    repo.commit("move t_6001 out of its zone");
    wait_for("POLICY_DENIED for t_6001", Duration::from_secs(10), || {
        events_of(&config, "t_6001").contains("POLICY_DENIED")
    });

    // A one-file commit is judged by its delta, the checks across tenants included: taking
    // another tenant's external id blocks the newcomer and leaves the holder as it was; giving
    // it back unblocks it.
    let status = |tenant: &str| crate::integrity::status(&config, tenant);
    repo.edit("org_acme/t_5002.yaml", "cus_5002", "cus_6003");
    repo.commit("t_5002 takes t_6003's billing id");
    wait_for("t_5002 blocked", Duration::from_secs(10), || {
        status("t_5002")["status"] == "blocked"
    });
    let blocked = status("t_5002");
    let reason = blocked["blocked_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("unique.external-id"), "{blocked:#}");
    assert!(reason.contains("t_6003"), "names the holder: {blocked:#}");
    assert_eq!(status("t_6003")["status"], "synced");
    repo.edit("org_acme/t_5002.yaml", "cus_6003", "cus_5002");
    repo.commit("t_5002 gives the billing id back");
    wait_for("t_5002 synced again", Duration::from_secs(10), || {
        status("t_5002")["status"] == "synced"
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
    repo.edit(
        "org_acme/t_5002.yaml",
        "lifecycle: Active",
        "lifecycle: Suspended",
    );
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
    let s3_port = free_port();
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
    let port = free_port();
    let daemon = start(&repo, &config, port);
    wait_for(
        "failed tenants awaiting retry",
        Duration::from_secs(60),
        || metric(port, "tenancy_tenants_awaiting_retry") >= 1,
    );
    let status = |tenant: &str| crate::integrity::status(&config, tenant);
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
        || status("t_5001")["status"] == "synced",
    );
    wait_for("no tenant left to retry", Duration::from_secs(60), || {
        metric(port, "tenancy_tenants_awaiting_retry") == 0
    });
    assert!(metric(port, "tenancy_retry_passes_total") >= 1);
    assert!(
        http_get(port, "/metrics").is_some_and(|(_, m)| m.lines().any(|l| l
            .starts_with("tenancy_plane_errors_total{plane=\"object-store\"} ")
            && !l.ends_with(" 0"))),
        "failures counted against the object-store plane"
    );
    assert!(stop(daemon).success());
}

/// One request a webhook receiver got: its headers (lower-cased names) and body.
struct Received {
    headers: std::collections::HashMap<String, String>,
    body: String,
}

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `failures` requests and 200
/// after; every request is kept.
fn receiver(failures: usize) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream);
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            use std::io::BufRead;
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut g = seen.lock().expect("lock");
                g.push(Received {
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                g.len()
            };
            let status = if n <= failures {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, got)
}

/// Signed webhooks: a receiver that fails three times then succeeds gets the event exactly
/// once successfully, every attempt carrying the same delivery id and a valid HMAC-SHA256
/// signature; a receiver that never answers is dead-lettered after its attempts, and
/// `tenancy webhooks requeue` gives it another round.
#[test]
fn webhooks_are_signed_retried_and_dead_lettered() {
    use hmac::Mac;
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    crate::support::allow_local_webhooks(&config);
    let cfg = config.to_str().expect("utf-8");
    let secret = "whsec_0123456789abcdef";
    let (hook_port, got) = receiver(3);
    let closed = free_port();
    let add = |url: String, tenant: &str, attempts: &str| {
        let r = Command::new(env!("CARGO_BIN_EXE_tenancy"))
            .args([
                "webhooks",
                "add",
                "--config",
                cfg,
                "--url",
                &url,
                "--tenant",
                tenant,
                "--event",
                "TENANCY_SUSPENDED",
                "--secret-env",
                "HOOK_SECRET",
                "--max-attempts",
                attempts,
                "--initial-backoff-ms",
                "100",
                "--output",
                "json",
            ])
            .env("HOOK_SECRET", secret)
            .output()
            .expect("webhooks add");
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("json");
        assert!(v.get("secret").is_none(), "the secret is never shown: {v}");
        v["webhookId"].as_str().expect("id").to_owned()
    };
    let ok_hook = add(format!("http://127.0.0.1:{hook_port}/hooks"), "t_5001", "6");
    let dead_hook = add(format!("http://127.0.0.1:{closed}/hooks"), "*", "2");
    // Bad registrations are refused before anything is stored.
    let r = crate::support::tenancy(&[
        "webhooks",
        "add",
        "--config",
        cfg,
        "--url",
        "ftp://x/",
        "--secret-env",
        "HOME",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not http or https"), "{}", r.stderr);

    let port = free_port();
    let daemon = start(&repo, &config, port);
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    repo.edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Active",
        "lifecycle: Suspended",
    );
    repo.commit("suspend t_5001");
    wait_for("the fourth attempt", Duration::from_secs(30), || {
        got.lock().expect("lock").len() >= 4
    });
    wait_for("the dead letter", Duration::from_secs(30), || {
        metric(port, "tenancy_webhook_deliveries_pending") == 0
            && http_get(port, "/metrics").is_some_and(|(_, m)| {
                m.contains("tenancy_webhook_deliveries_total{outcome=\"dead\"} 1")
            })
    });
    // No further attempt after the success.
    std::thread::sleep(Duration::from_millis(800));
    assert!(stop(daemon).success());
    let got = got.lock().expect("lock");
    assert_eq!(got.len(), 4, "3 failures, then exactly one success");
    let delivery = &got[0].headers["tenancy-delivery"];
    for r in got.iter() {
        assert_eq!(&r.headers["tenancy-delivery"], delivery, "one delivery id");
        // CloudEvents HTTP binding, binary content mode (the default): the attributes in
        // ce-* headers, the body seed 000's `{ id, type, tenantId, reason, timestamp, data }`.
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["ce-specversion"], "1.0");
        assert_eq!(r.headers["ce-type"], "TENANCY_SUSPENDED");
        assert_eq!(r.headers["ce-subject"], "t_5001");
        assert_eq!(r.headers["ce-source"], "/tenancy/reconciler");
        let ts = &r.headers["tenancy-timestamp"];
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{ts}.{}", r.body).as_bytes());
        let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.headers["tenancy-signature"], want, "a valid signature");
        let event: serde_json::Value = serde_json::from_str(&r.body).expect("the body");
        assert_eq!(event["type"], "TENANCY_SUSPENDED");
        assert_eq!(event["tenantId"], "t_5001");
        assert!(event["timestamp"].is_string(), "{event}");
        assert_eq!(
            r.headers["tenancy-event-id"],
            event["id"].as_str().expect("id")
        );
        assert_eq!(r.headers["ce-id"], r.headers["tenancy-event-id"]);
    }

    let deliveries = |state: &str| {
        crate::support::tenancy(&[
            "webhooks",
            "deliveries",
            "--config",
            cfg,
            "--state",
            state,
            "--output",
            "json",
        ])
        .json()["deliveries"]
            .as_array()
            .expect("list")
            .clone()
    };
    let delivered = deliveries("delivered");
    assert_eq!(delivered.len(), 1, "{delivered:#?}");
    assert_eq!(delivered[0]["webhookId"], ok_hook.as_str());
    assert_eq!(delivered[0]["attempts"], 4);
    let dead = deliveries("dead");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["webhookId"], dead_hook.as_str());
    assert_eq!(dead[0]["attempts"], 2);
    assert!(
        dead[0]["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{dead:#?}"
    );
    // The operator requeues the dead letter: it is pending again, for a fresh round.
    let r = crate::support::tenancy(&["webhooks", "requeue", "--all", "--config", cfg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("requeued 1"), "{}", r.stdout);
    let pending = deliveries("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["attempts"], 0);
    let r = crate::support::tenancy(&["webhooks", "requeue", "dl_nope", "--config", cfg]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

pub(crate) fn http_post(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    write!(s, "{req}\r\n{body}").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A remote repository, followed through a mirror: a push is fetched when the Git host's
/// webhook arrives with a valid HMAC signature (a wrong one is refused with 401), and the
/// commit is converged.
#[test]
fn a_remote_repository_is_fetched_on_a_signed_trigger() {
    use hmac::Mac;
    let upstream = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let secret = "trigger-secret-0123456789";
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!(
        "[daemon]\nremote = \"file://{}\"\nbranch = \"{}\"\nfetch-interval-seconds = 3600\ntrigger-secret = \"{secret}\"\n",
        upstream.path().display(),
        upstream
            .repo
            .head()
            .expect("head")
            .shorthand()
            .expect("branch")
    );
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    // --repo is ignored when [daemon] remote is set: the mirror is the repository.
    let daemon = start(&upstream, &config, port);
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    assert!(events_of(&config, "t_5001").contains("TENANCY_CREATED"));

    upstream.edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Active",
        "lifecycle: Suspended",
    );
    upstream.commit("suspend t_5001 upstream");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let sign = |key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    assert_eq!(
        http_post(
            port,
            "/hooks/git",
            &[("X-Hub-Signature-256", &sign("wrong"))],
            body
        ),
        Some(401)
    );
    assert_eq!(http_post(port, "/hooks/git", &[], body), Some(401));
    assert!(metric(port, "tenancy_triggers_refused_total") >= 2);
    // Refused triggers fetched nothing (the hour-long interval has not passed).
    std::thread::sleep(Duration::from_millis(500));
    assert!(!events_of(&config, "t_5001").contains("TENANCY_SUSPENDED"));
    assert_eq!(
        http_post(
            port,
            "/hooks/git",
            &[("X-Hub-Signature-256", &sign(secret))],
            body
        ),
        Some(202)
    );
    wait_for(
        "the pushed commit converged",
        Duration::from_secs(15),
        || events_of(&config, "t_5001").contains("TENANCY_SUSPENDED"),
    );
    assert_eq!(metric(port, "tenancy_triggers_total"), 1);
    assert!(metric(port, "tenancy_fetches_total") >= 2);
    assert!(stop(daemon).success());
}
