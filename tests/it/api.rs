//! The REST API's read side (issue 6) against a running daemon: bearer tokens (hashed in
//! the configuration), tenant- and organization-scoped tokens that cannot see other tenants,
//! filters and cursor pagination, ETags, jobs, X-Request-Id, and one problem+json error shape.

use crate::support::{TestRepo, embedded_config, free_port};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(port, "GET", path, headers, "")
}

pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if !body.is_empty() {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    // An oversized body may be refused before it is all sent: ignore a reset while writing.
    let _ = write!(s, "{req}\r\n{body}");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Poll a job until the daemon has completed it (30 s at most); the job.
fn completed_job(port: u16, path: &str, auth: &str) -> Value {
    let started = Instant::now();
    loop {
        let j = get(port, path, &[("Authorization", auth)]).json();
        if j["state"] == "Completed" {
            return j;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job not converged: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn problem(r: &Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    let p = r.json();
    assert_eq!(p["status"], status);
    assert!(
        p["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://"))
    );
    assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    p
}

#[test]
fn the_read_api_authenticates_scopes_filters_and_pages() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let mut toml = std::fs::read_to_string(&config).expect("config");
    let (admin, acme_one, globex) = (
        "tok-admin-0123456789",
        "tok-t5001-0123456789",
        "tok-globex-012345678",
    );
    toml += &format!(
        "[[api.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n\
         [[api.tokens]]\nname = \"acme-console\"\nsha256 = \"{}\"\nrole = \"viewer\"\ntenant = \"t_5001\"\n\
         [[api.tokens]]\nname = \"globex-crm\"\nsha256 = \"{}\"\nrole = \"viewer\"\norganization = \"org_globex\"\n\
         [[api.tokens]]\nname = \"acme-billing\"\nsha256 = \"{}\"\nrole = \"operator\"\norganization = \"org_acme\"\n\
         [[api.tokens]]\nname = \"acme-admin\"\nsha256 = \"{}\"\nrole = \"admin\"\norganization = \"org_acme\"\n",
        sha256_hex(admin),
        sha256_hex(acme_one),
        sha256_hex(globex),
        sha256_hex(BILLING),
        sha256_hex(ACME_ADMIN)
    );
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let daemon = ready_daemon(repo.path(), &config, port, 5);
    let bearer = |t: &str| format!("Bearer {t}");
    let base = "/api/tenancy/v1";

    // No token, a wrong one, a malformed header: 401, one problem shape, a challenge.
    let r = get(port, &format!("{base}/tenants"), &[]);
    problem(&r, 401);
    assert!(r.headers["www-authenticate"].starts_with("Bearer"));
    problem(
        &get(
            port,
            &format!("{base}/tenants"),
            &[("Authorization", &bearer("nope"))],
        ),
        401,
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants"),
            &[("Authorization", admin)],
        ),
        401,
    );

    // The admin lists everything applied; pages of 4 add up to the whole list, in order.
    let auth = bearer(admin);
    let all = get(
        port,
        &format!("{base}/tenants?limit=500"),
        &[("Authorization", &auth)],
    );
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    let ids: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["tenantId"].as_str().expect("id"))
        .collect();
    assert!(ids.len() >= 10, "{ids:?}");
    assert_eq!(all["nextCursor"], Value::Null);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}/tenants?limit=4&cursor={c}"),
            None => format!("{base}/tenants?limit=4"),
        };
        let page = get(port, &path, &[("Authorization", &auth)]).json();
        for t in page["items"].as_array().expect("items") {
            paged.push(t["tenantId"].as_str().expect("id").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, ids);
    // Filters.
    let active = get(
        port,
        &format!("{base}/tenants?org=org_acme&state=Active"),
        &[("Authorization", &auth)],
    )
    .json();
    let active = active["items"].as_array().expect("items");
    assert!(!active.is_empty());
    assert!(
        active
            .iter()
            .all(|t| t["organizationId"] == "org_acme" && t["state"] == "Active")
    );
    // Bad queries name the parameter.
    let p = problem(
        &get(
            port,
            &format!("{base}/tenants?bogus=1"),
            &[("Authorization", &auth)],
        ),
        400,
    );
    assert_eq!(p["errors"][0]["field"], "bogus", "{p:#}");
    let p = problem(
        &get(
            port,
            &format!("{base}/tenants?state=Sleeping"),
            &[("Authorization", &auth)],
        ),
        400,
    );
    assert_eq!(p["errors"][0]["field"], "state");
    let p = problem(
        &get(
            port,
            &format!("{base}/tenants?limit=0"),
            &[("Authorization", &auth)],
        ),
        400,
    );
    assert_eq!(p["errors"][0]["field"], "limit");
    problem(
        &get(
            port,
            &format!("{base}/tenants/Robert');DROP"),
            &[("Authorization", &auth)],
        ),
        400,
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants/t_nobody"),
            &[("Authorization", &auth)],
        ),
        404,
    );
    problem(
        &get(
            port,
            &format!("{base}/nothing-here"),
            &[("Authorization", &auth)],
        ),
        404,
    );

    // One tenant, with its version as ETag; its environments.
    let t = get(
        port,
        &format!("{base}/tenants/t_5001"),
        &[("Authorization", &auth)],
    );
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.headers["etag"], "\"1\"");
    let tj = t.json();
    assert_eq!(tj["organizationId"], "org_acme");
    assert_eq!(tj["environments"], serde_json::json!(["dev", "prod"]));
    assert_eq!(tj["externalIds"]["billing"], "cus_5001");
    // By external id (seed: "get by id and by external id"), within the caller's scope.
    let by = get(
        port,
        &format!("{base}/tenants/by-external-id/billing/cus_5001"),
        &[("Authorization", &auth)],
    );
    assert_eq!(by.status, 200, "{}", by.body);
    assert_eq!(by.json()["tenantId"], "t_5001");
    problem(
        &get(
            port,
            &format!("{base}/tenants/by-external-id/billing/cus_nobody"),
            &[("Authorization", &auth)],
        ),
        404,
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants/by-external-id/bil.ling/x"),
            &[("Authorization", &auth)],
        ),
        400,
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants/by-external-id/billing/cus_5001"),
            &[("Authorization", &format!("Bearer {globex}"))],
        ),
        404,
    );
    let envs = get(
        port,
        &format!("{base}/tenants/t_5001/environments"),
        &[("Authorization", &auth)],
    )
    .json();
    let envs = envs["items"].as_array().expect("items");
    assert_eq!(envs.len(), 2);
    assert_eq!(envs[1]["name"], "prod");
    assert_eq!(envs[1]["quota"]["storageGiB"], 150);
    assert!(envs[1]["region"].as_str().is_some_and(|r| !r.is_empty()));

    // A token confined to t_5001 sees t_5001 only; another tenant is "not found".
    let one = bearer(acme_one);
    let mine = get(port, &format!("{base}/tenants"), &[("Authorization", &one)]).json();
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(mine["items"][0]["tenantId"], "t_5001");
    assert_eq!(
        get(
            port,
            &format!("{base}/tenants/t_5001"),
            &[("Authorization", &one)]
        )
        .status,
        200
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants/t_5002"),
            &[("Authorization", &one)],
        ),
        404,
    );
    problem(
        &get(
            port,
            &format!("{base}/tenants/t_5002/environments"),
            &[("Authorization", &one)],
        ),
        404,
    );
    // An organization's token: its tenants only, whatever the filter says.
    let org = bearer(globex);
    let theirs = get(port, &format!("{base}/tenants"), &[("Authorization", &org)]).json();
    let theirs = theirs["items"].as_array().expect("items");
    assert!(!theirs.is_empty());
    assert!(theirs.iter().all(|t| t["organizationId"] == "org_globex"));
    let other = get(
        port,
        &format!("{base}/tenants?org=org_acme"),
        &[("Authorization", &org)],
    )
    .json();
    assert_eq!(other["items"].as_array().map(Vec::len), Some(0));
    problem(
        &get(
            port,
            &format!("{base}/tenants/t_5001"),
            &[("Authorization", &org)],
        ),
        404,
    );

    // Jobs: the import of t_5001, visible with its tenant.
    let jobs = crate::support::tenancy(&[
        "jobs",
        "t_5001",
        "--config",
        config.to_str().expect("utf-8"),
        "--output",
        "json",
    ])
    .json();
    let job_id = jobs["jobs"][0]["job_id"]
        .as_str()
        .expect("a job")
        .to_owned();
    let job = get(
        port,
        &format!("{base}/jobs/{job_id}"),
        &[("Authorization", &one)],
    );
    assert_eq!(job.status, 200, "{}", job.body);
    let job = job.json();
    assert_eq!(
        (job["action"].as_str(), job["state"].as_str()),
        (Some("create"), Some("Completed"))
    );
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["links"]["self"], format!("{base}/jobs/{job_id}"));
    problem(
        &get(
            port,
            &format!("{base}/jobs/{job_id}"),
            &[("Authorization", &org)],
        ),
        404,
    );

    // X-Request-Id: echoed when given, made when not.
    let r = get(
        port,
        &format!("{base}/tenants/t_5001"),
        &[("Authorization", &auth), ("X-Request-Id", "req-42")],
    );
    assert_eq!(r.headers["x-request-id"], "req-42");
    let r = get(
        port,
        &format!("{base}/tenants/t_5001"),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.headers["x-request-id"].len(), 32);

    // Governance bound to a tenant (seed 000 §8): its settings, enforced by the bundle's modules.
    let g = get(
        port,
        &format!("{base}/governance/policies?tenantId=t_5001&env=prod"),
        &[("Authorization", &one)],
    );
    assert_eq!(g.status, 200, "{}", g.body);
    let g = g.json();
    let by_name = |n: &str| {
        g["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .expect(n)
    };
    assert_eq!(by_name("DataResidency")["rule"], "in-region-only");
    assert_eq!(by_name("DataResidency")["enforced"], true);
    assert_eq!(by_name("Encryption")["rule"], "kms-per-tenant");
    assert_eq!(by_name("Isolation")["rule"], "strict");
    let p = problem(
        &get(
            port,
            &format!("{base}/governance/policies?tenantId=t_5001&env=qa"),
            &[("Authorization", &one)],
        ),
        404,
    );
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("`qa`")),
        "{p:#}"
    );
    problem(
        &get(
            port,
            &format!("{base}/governance/policies?tenantId=t_5002"),
            &[("Authorization", &one)],
        ),
        404,
    );
    problem(
        &get(
            port,
            &format!("{base}/governance/policies"),
            &[("Authorization", &one)],
        ),
        400,
    );

    usage_reports(port, &config);
    lifecycle_writes(port, &repo);
    event_stream(port);
    webhook_endpoints(port);
    create_and_patch_boundaries(port, &repo);
    concurrent_writers_lose_nothing(port, &repo);
    // Every request is counted and timed by its route template (never the ids in it).
    let metrics = get(port, "/metrics", &[]).body;
    for line in [
        "tenancy_api_requests_total{method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\",status=\"200\"}",
        "tenancy_api_requests_total{method=\"PATCH\",route=\"/api/tenancy/v1/tenants/{id}\",status=\"200\"}",
        "tenancy_api_requests_total{method=\"GET\",route=\"/api/tenancy/v1/tenants\",status=\"401\"}",
        "tenancy_api_request_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    assert!(!metrics.contains("t_5001"), "ids never become labels");
    drop(daemon);
}

const BILLING: &str = "tok-acme-billing-0123";
/// An admin of organization org_acme: creation, deletion, commercial fields, webhooks.
const ACME_ADMIN: &str = "tok-acme-admin-012345";

/// `POST /billing/usage`: operators only, strict JSON, each failure a precise problem with
/// nothing stored, and idempotent on the client's key (a replay answers the first record).
fn usage_reports(port: u16, config: &std::path::Path) {
    let path = "/api/tenancy/v1/billing/usage";
    let op = format!("Bearer {BILLING}");
    let json = ("Content-Type", "application/json");
    let report = r#"{"tenantId":"t_5001","env":"prod","resource":"storageGiBHours","amount":100.2,"timestamp":"2025-10-08T15:20:00Z"}"#;
    let post = |headers: &[(&str, &str)], body: &str| request(port, "POST", path, headers, body);

    let viewer = "Bearer tok-t5001-0123456789".to_owned();
    problem(
        &post(
            &[("Authorization", &viewer), json, ("Idempotency-Key", "k0")],
            report,
        ),
        403,
    );
    // Without a key (seed 000 §9 sends none) the report's natural key deduplicates it.
    let unkeyed = post(&[("Authorization", &op), json], report);
    assert_eq!(unkeyed.status, 202, "{}", unkeyed.body);
    let unkeyed_id = unkeyed.json()["recordId"].as_str().expect("id").to_owned();
    let retried = post(&[("Authorization", &op), json], report).json();
    assert_eq!(retried["recordId"], unkeyed_id.as_str());
    assert_eq!(retried["replayed"], true);
    let p = problem(
        &post(
            &[("Authorization", &op), json],
            &report.replace("100.2", "7"),
        ),
        409,
    );
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key", "{p:#}");
    let p = problem(
        &post(
            &[("Authorization", &op), json, ("Idempotency-Key", "a key")],
            report,
        ),
        400,
    );
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key");
    let key = ("Idempotency-Key", "usage-2025-10-08-t5001-prod-1");
    let first = post(&[("Authorization", &op), json, key], report);
    assert_eq!(first.status, 202, "{}", first.body);
    let id = first.json()["recordId"].as_str().expect("id").to_owned();
    assert_ne!(id, unkeyed_id, "a key says it is a report of its own");
    let again = post(&[("Authorization", &op), json, key], report);
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["recordId"], id.as_str());
    assert_eq!(again.json()["replayed"], true);
    let changed = report.replace("100.2", "999");
    problem(&post(&[("Authorization", &op), json, key], &changed), 409);

    // Bad input: each a precise 4xx naming the field.
    let cases: Vec<(String, u16, &str)> = vec![
        (
            report.replace("\"amount\"", "\"extra\":1,\"amount\""),
            422,
            "extra",
        ),
        (report.replace("100.2", "\"lots\""), 422, "amount"),
        (report.replace("\"prod\"", "\"qa\""), 422, "/env"),
        (report.replace("100.2", "-1"), 422, "/amount"),
        (
            report.replace("2025-10-08T15:20:00Z", "yesterday"),
            422,
            "/timestamp",
        ),
        (
            report.replace("t_5001", "Robert'); DROP TABLE"),
            422,
            "/tenantId",
        ),
        ("{\"tenantId\": ".to_owned(), 400, ""),
    ];
    for (i, (body, status, field)) in cases.iter().enumerate() {
        let key = format!("bad-{i}");
        let p = problem(
            &post(
                &[("Authorization", &op), json, ("Idempotency-Key", &key)],
                body,
            ),
            *status,
        );
        if !field.is_empty() {
            assert_eq!(p["errors"][0]["field"], *field, "{body}: {p:#}");
        }
    }
    // Another organization's tenant is not found for this token; no content type is 415; an
    // oversized body is 413.
    let other = report.replace("t_5001", "t_6001");
    problem(
        &post(
            &[("Authorization", &op), json, ("Idempotency-Key", "o1")],
            &other,
        ),
        404,
    );
    problem(
        &post(&[("Authorization", &op), ("Idempotency-Key", "o2")], report),
        415,
    );
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024));
    assert_eq!(
        post(
            &[("Authorization", &op), json, ("Idempotency-Key", "o3")],
            &huge
        )
        .status,
        413
    );

    // Exactly one record stored for all of that.
    let text = std::fs::read_to_string(config).expect("config");
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("root = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("embedded root");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let n = rt.block_on(async {
        let store = tenancy::store::Store::open(&format!("sqlite://{root}/state.db"))
            .await
            .expect("store");
        store.usage_count("t_5001").await.expect("count")
    });
    assert_eq!(
        n, 2,
        "two records (unkeyed and keyed): replays and refused reports store nothing"
    );
}

/// `tenancy run` on `repo` with `config`, serving on `port` (see `support::spawn_daemon`),
/// once it answers /readyz; killed when the guard is dropped.
pub(crate) fn ready_daemon(
    repo: &std::path::Path,
    config: &std::path::Path,
    port: u16,
    interval: u32,
) -> crate::support::Running {
    let daemon = crate::support::Running(Some(crate::support::spawn_daemon(
        repo, config, port, interval,
    )));
    let started = Instant::now();
    while get_status(port, "/readyz") != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon
}

pub(crate) fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `POST /tenants/{id}:suspend|:activate`: a commit authored by the caller, judged before the
/// branch moves (a refused transition is a 422 with the policy's finding and no commit), whose
/// job can be polled at once and is converged by the daemon.
fn lifecycle_writes(port: u16, repo: &TestRepo) {
    let base = "/api/tenancy/v1";
    let op = format!("Bearer {BILLING}");
    let json = ("Content-Type", "application/json");
    let viewer = "Bearer tok-t5001-0123456789".to_owned();
    let post = |path: &str, auth: &str, body: &str| {
        request(
            port,
            "POST",
            &format!("{base}{path}"),
            &[("Authorization", auth), json],
            body,
        )
    };
    problem(&post("/tenants/t_5001:suspend", &viewer, ""), 403);
    problem(&post("/tenants/t_6001:suspend", &op, ""), 404);
    problem(&post("/tenants/t_5002:frobnicate", &op, ""), 404);
    problem(&post("/tenants/t_5002", &op, ""), 405);
    let p = problem(&post("/tenants/t_5002:suspend", &op, r#"{"why":"x"}"#), 422);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("why")),
        "{p:#}"
    );

    // If-Match with a stale ETag: 412, nothing committed.
    let before = repo.head();
    let stale = request(
        port,
        "POST",
        &format!("{base}/tenants/t_5002:suspend"),
        &[("Authorization", &op), json, ("If-Match", "\"41\"")],
        "",
    );
    problem(&stale, 412);
    assert_eq!(repo.head(), before);
    let r = request(
        port,
        "POST",
        &format!("{base}/tenants/t_5002:suspend"),
        &[("Authorization", &op), json, ("If-Match", "\"1\"")],
        r#"{"reason":"billing"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    assert_eq!(accepted["state"], "Queued");
    let sha = accepted["commitSha"].as_str().expect("sha").to_owned();
    assert_eq!(repo.head(), sha, "the branch moved to the API's commit");
    let commit = repo
        .repo
        .find_commit(git2::Oid::from_str(&sha).expect("oid"))
        .expect("commit");
    assert_eq!(commit.author().name().ok(), Some("acme-billing"));
    assert_eq!(commit.parent_id(0).expect("parent").to_string(), before);
    assert!(
        commit
            .message()
            .is_ok_and(|m| m.starts_with("suspend t_5002 via the API (billing)"))
    );
    let text =
        std::fs::read_to_string(repo.path().join("org_acme/t_5002.yaml")).expect("work tree");
    assert!(
        text.contains("lifecycle: Suspended"),
        "the work tree follows"
    );
    // The job is there at once, and the daemon converges it.
    let job_path = accepted["links"]["self"].as_str().expect("link").to_owned();
    let job = get(port, &job_path, &[("Authorization", &op)]);
    assert_eq!(job.status, 200, "{}", job.body);
    let j = completed_job(port, &job_path, &op);
    assert_eq!(j["action"], "suspend");
    assert_eq!(j["commitSha"], sha.as_str());
    let t = get(
        port,
        &format!("{base}/tenants/t_5002"),
        &[("Authorization", &op)],
    );
    assert_eq!(t.json()["state"], "Suspended");
    assert_eq!(t.headers["etag"], "\"2\"");
    // Asking again changes nothing.
    problem(&post("/tenants/t_5002:suspend", &op, ""), 409);

    // Archived → Active is not a transition seed 001 allows: refused with the policy's
    // finding, and no commit.
    let head = repo.head();
    let p = problem(&post("/tenants/t_5004:activate", &op, ""), 422);
    assert!(
        p["errors"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("lifecycle.transition-not-allowed"))),
        "{p:#}"
    );
    assert_eq!(repo.head(), head, "nothing committed");

    // DELETE (seed 000 §12): an open tenant needs force (admin only); an archived one is
    // deleted by a commit carrying the confirmation, and the job converges it.
    let acme_admin = format!("Bearer {ACME_ADMIN}");
    let delete_as = |auth: &str, path: &str| {
        request(
            port,
            "DELETE",
            &format!("{base}{path}"),
            &[("Authorization", auth)],
            "",
        )
    };
    let delete = |path: &str| delete_as(&acme_admin, path);
    let p = problem(&delete("/tenants/t_5001"), 409);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("force=true")),
        "{p:#}"
    );
    // Deletion is the admin's, with or without force.
    problem(&delete_as(&op, "/tenants/t_5004"), 403);
    problem(&delete_as(&op, "/tenants/t_5001?force=true"), 403);
    problem(&delete("/tenants/t_5001?forse=true"), 400);
    // A refused id says why, not only what ids look like: `postgres` matches the pattern but is
    // reserved.
    let p = problem(&delete("/tenants/postgres"), 400);
    let why = p["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(why.contains("reserved"), "{p:#}");
    let r = delete("/tenants/t_5004?reason=contract%20ended");
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    let text =
        std::fs::read_to_string(repo.path().join("org_acme/t_5004.yaml")).expect("work tree");
    assert!(text.contains("lifecycle: Deleted"), "{text}");
    assert!(text.contains("deletion: { confirm: t_5004"), "{text}");
    let job_path = accepted["links"]["self"].as_str().expect("link").to_owned();
    assert_eq!(completed_job(port, &job_path, &op)["action"], "delete");
    let t = get(
        port,
        &format!("{base}/tenants/t_5004"),
        &[("Authorization", &op)],
    )
    .json();
    assert_eq!(t["state"], "Deleted");
}

/// `/webhooks` (seed 000 §7): register (201, the secret never returned), list and delete, each
/// within the token's scope.
fn webhook_endpoints(port: u16) {
    let path = "/api/tenancy/v1/webhooks";
    let admin = "Bearer tok-admin-0123456789".to_owned();
    // Webhooks are the admin's: an organization's admin manages its tenants' webhooks.
    let operator = format!("Bearer {BILLING}");
    let op = format!("Bearer {ACME_ADMIN}");
    let viewer = "Bearer tok-t5001-0123456789".to_owned();
    let json = ("Content-Type", "application/json");
    let post = |auth: &str, body: &str| {
        request(port, "POST", path, &[("Authorization", auth), json], body)
    };
    // The seed's example, as an admin: a webhook for every tenant.
    let seed = r#"{"url":"https://ops.example.com/hooks/tenancy","events":["TENANCY_ACTIVATED","TENANCY_SUSPENDED"],"secret":"whsec_demo"}"#;
    let r = post(&admin, seed);
    assert_eq!(r.status, 201, "{}", r.body);
    let hook = r.json();
    assert_eq!(hook["tenantId"], "*");
    assert!(
        hook.get("secret").is_none() && !r.body.contains("whsec_demo"),
        "{}",
        r.body
    );
    let admin_hook = hook["webhookId"].as_str().expect("id").to_owned();

    problem(&post(&viewer, seed), 403);
    let mine_as_operator = seed.replace("\"secret\"", "\"tenantId\":\"t_5001\",\"secret\"");
    problem(&post(&operator, &mine_as_operator), 403);
    problem(&post(&op, seed), 403); // an organization's token cannot subscribe to every tenant
    let mine = seed.replace("\"secret\"", "\"tenantId\":\"t_5001\",\"secret\"");
    let r = post(&op, &mine);
    assert_eq!(r.status, 201, "{}", r.body);
    let my_hook = r.json()["webhookId"].as_str().expect("id").to_owned();
    problem(
        &post(
            &op,
            &seed.replace("\"secret\"", "\"tenantId\":\"t_6001\",\"secret\""),
        ),
        404,
    );
    // Each invalid field is named; the documented bounds (maxItems, maxLength) are the
    // server's: found by schemathesis's fuzzing.
    let many = vec!["\"TENANCY_UPDATED\""; 17].join(",");
    let long = format!("https://ops.example.com/{}", "a".repeat(2048));
    for (from, to, field) in [
        ("https://ops", "ftp://ops", "/url"),
        ("TENANCY_SUSPENDED", "TENANCY_EXPLODED", "/events/1"),
        (
            "\"TENANCY_ACTIVATED\",\"TENANCY_SUSPENDED\"",
            many.as_str(),
            "/events",
        ),
        (
            "https://ops.example.com/hooks/tenancy",
            long.as_str(),
            "/url",
        ),
        ("whsec_demo", "short", "/secret"),
    ] {
        assert!(seed.contains(from), "{from}");
        let p = problem(&post(&admin, &seed.replace(from, to)), 422);
        assert_eq!(p["errors"][0]["field"], field, "{from} → {to}: {p:#}");
    }

    let ids = |auth: &str| -> Vec<String> {
        get(port, path, &[("Authorization", auth)]).json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|h| h["webhookId"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(&op), vec![my_hook.clone()]);
    let all = ids(&admin);
    assert!(all.contains(&admin_hook) && all.contains(&my_hook));
    problem(
        &request(
            port,
            "DELETE",
            &format!("{path}/{admin_hook}"),
            &[("Authorization", &op)],
            "",
        ),
        404,
    );
    let r = request(
        port,
        "DELETE",
        &format!("{path}/{my_hook}"),
        &[("Authorization", &op)],
        "",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(ids(&op).is_empty());
}

/// Per-token and per-tenant rate limits: 429 with `Retry-After`, one token's excess never
/// throttles another's requests to other tenants.
#[test]
fn rate_limits_answer_429_with_retry_after() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!(
        "[api]\nrequests-per-second = 0.5\nburst = 5\ntenant-requests-per-second = 0.5\ntenant-burst = 3\n\
         [[api.tokens]]\nname = \"a\"\nsha256 = \"{}\"\nrole = \"viewer\"\n\
         [[api.tokens]]\nname = \"b\"\nsha256 = \"{}\"\nrole = \"viewer\"\n",
        sha256_hex("token-a-0123456789"),
        sha256_hex("token-b-0123456789")
    );
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let daemon = ready_daemon(repo.path(), &config, port, 5);
    let (a, b) = ("Bearer token-a-0123456789", "Bearer token-b-0123456789");
    let one = "/api/tenancy/v1/tenants/t_5001";
    let list = "/api/tenancy/v1/tenants";
    for _ in 0..3 {
        assert_eq!(get(port, one, &[("Authorization", a)]).status, 200);
    }
    // t_5001's bucket is empty: token b is throttled on it, not elsewhere.
    let r = get(port, one, &[("Authorization", b)]);
    let p = problem(&r, 429);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("t_5001")),
        "{p:#}"
    );
    assert!(
        r.headers["retry-after"]
            .parse::<u64>()
            .is_ok_and(|s| s >= 1)
    );
    assert_eq!(get(port, list, &[("Authorization", b)]).status, 200);
    // Token a has used 3 of its 5, and the 429 above was b's: 2 more, then 429.
    assert_eq!(get(port, list, &[("Authorization", a)]).status, 200);
    assert_eq!(get(port, list, &[("Authorization", a)]).status, 200);
    let r = get(port, list, &[("Authorization", a)]);
    let p = problem(&r, 429);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("token `a`")),
        "{p:#}"
    );
    assert_eq!(get(port, list, &[("Authorization", b)]).status, 200);
    drop(daemon);
}

/// Open `GET /events` and send its lines (`event: …`, `id: …`, `data: …`) to a channel.
fn sse(port: u16, auth: &str, last_id: Option<&str>) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!(
        "GET /api/tenancy/v1/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nAuthorization: {auth}\r\n"
    );
    if let Some(id) = last_id {
        req += &format!("Last-Event-ID: {id}\r\n");
    }
    write!(s, "{req}\r\n").expect("send");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Read (event type, id, data) triples until `until` says stop, or panic after `timeout`.
fn read_events(
    rx: &std::sync::mpsc::Receiver<String>,
    timeout: Duration,
    mut until: impl FnMut(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let (mut ty, mut id) = (String::new(), String::new());
    while !until(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("stream stalled; got {out:#?}"));
        if let Some(v) = line.strip_prefix("event: ") {
            ty = v.to_owned();
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            out.push((
                ty.clone(),
                id.clone(),
                serde_json::from_str(v).expect("CloudEvent"),
            ));
        }
    }
    out
}

/// `GET /events` (SSE): an organization's token gets its tenants' events — the history, then
/// live ones as they are recorded — and `Last-Event-ID` resumes after a given event.
fn event_stream(port: u16) {
    let op = format!("Bearer {BILLING}");
    let rx = sse(port, &op, None);
    let seen = read_events(&rx, Duration::from_secs(20), |e| {
        e.iter()
            .any(|(t, _, d)| t == "TENANCY_SUSPENDED" && d["subject"] == "t_5002")
    });
    assert!(
        seen.iter()
            .all(|(_, _, d)| d["subject"].as_str().is_some_and(|t| t.starts_with("t_50"))),
        "only org_acme's tenants: {seen:#?}"
    );
    // Live: a new event arrives on the open stream.
    let r = request(
        port,
        "POST",
        "/api/tenancy/v1/tenants/t_5002:activate",
        &[("Authorization", &op), ("Content-Type", "application/json")],
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    read_events(&rx, Duration::from_secs(30), |e| {
        e.iter()
            .any(|(t, _, d)| t == "TENANCY_RESUMED" && d["subject"] == "t_5002")
    });
    // Resume after the first event: the stream starts at the second.
    let rx = sse(port, &op, Some(&seen[0].1));
    let resumed = read_events(&rx, Duration::from_secs(10), |e| !e.is_empty());
    assert_eq!(resumed[0].1, seen[1].1);
    let r = get(
        port,
        "/api/tenancy/v1/events",
        &[("Authorization", &op), ("Last-Event-ID", "nonsense")],
    );
    problem(&r, 400);
}

/// `POST /tenants` and `PATCH /tenants/{id}` refuse what they must, each with a precise 4xx
/// and no commit: hostile ids, unknown fields, wrong types, other organizations, other
/// tenants, lifecycle changes through PATCH, stale ETags, manifests in flow style.
fn create_and_patch_boundaries(port: u16, repo: &TestRepo) {
    let base = "/api/tenancy/v1";
    let op = format!("Bearer {BILLING}"); // operator, organization org_acme
    let acme_admin = format!("Bearer {ACME_ADMIN}"); // admin, organization org_acme
    let viewer = "Bearer tok-t5001-0123456789".to_owned();
    let admin = "Bearer tok-admin-0123456789".to_owned();
    let send = |method: &str, path: &str, auth: &str, body: &str, extra: &[(&str, &str)]| {
        let mut h = vec![
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ];
        h.extend_from_slice(extra);
        request(port, method, &format!("{base}{path}"), &h, body)
    };
    let head = repo.head();
    let create = |auth: &str, body: &str| send("POST", "/tenants", auth, body, &[]);
    problem(
        &create(
            &viewer,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
        ),
        403,
    );
    // Creating is the admin's; an organization's admin creates only in its organization.
    problem(
        &create(
            &op,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
        ),
        403,
    );
    problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_9101","organizationId":"org_globex","profile":"mt-standard","environments":["dev"]}"#,
        ),
        403,
    );
    let p = problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"../../etc/passwd","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
        ),
        422,
    );
    assert_eq!(p["errors"][0]["field"], "tenantId", "{p:#}");
    let p = problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"mt-standard","environments":["dev"],"colour":"red"}"#,
        ),
        422,
    );
    assert!(p.to_string().contains("colour"), "{p:#}");
    problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"mt-standard","environments":"dev"}"#,
        ),
        422,
    );
    problem(&create(&acme_admin, r#"{"tenantId":"t_9101","#), 400);
    let p = problem(
        &create(
            &admin,
            r#"{"tenantId":"t_9101","organizationId":"org_nowhere","profile":"mt-standard","environments":["dev"]}"#,
        ),
        422,
    );
    assert_eq!(p["errors"][0]["field"], "organizationId", "{p:#}");
    // The schema and the policies judge the manifest: a quota over the plan's ceiling.
    let p = problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"mt-standard","environments":["dev"],"quotas":{"storageGiB":99999}}"#,
        ),
        422,
    );
    assert!(p.to_string().contains("quotas"), "{p:#}");
    let p = problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_9101","organizationId":"org_acme","profile":"gigantic","environments":["dev"]}"#,
        ),
        422,
    );
    assert!(
        p["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["field"] == "/spec/profile")),
        "{p:#}"
    );
    problem(
        &create(
            &acme_admin,
            r#"{"tenantId":"t_5001","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
        ),
        409,
    );
    assert_eq!(repo.head(), head, "no refused request committed anything");

    let patch = |auth: &str, id: &str, body: &str, extra: &[(&str, &str)]| {
        send("PATCH", &format!("/tenants/{id}"), auth, body, extra)
    };
    problem(
        &patch(&viewer, "t_5001", r#"{"quotas":{"storageGiB":1}}"#, &[]),
        403,
    );
    // Quotas are commercial: the admin's, not the operator's.
    problem(
        &patch(&op, "t_5001", r#"{"quotas":{"storageGiB":1}}"#, &[]),
        403,
    );
    problem(
        &patch(&acme_admin, "t_6001", r#"{"quotas":{"storageGiB":1}}"#, &[]),
        404,
    );
    problem(
        &patch(&acme_admin, "T;DROP", r#"{"quotas":{"storageGiB":1}}"#, &[]),
        400,
    );
    let p = problem(
        &patch(&op, "t_5001", r#"{"lifecycle":"Archived"}"#, &[]),
        422,
    );
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(":suspend")),
        "{p:#}"
    );
    problem(&patch(&op, "t_5001", r#"{"tenantId":"t_9"}"#, &[]), 422);
    problem(&patch(&op, "t_5001", r#"{}"#, &[]), 409);
    problem(&patch(&op, "t_5001", r#"["profile"]"#, &[]), 422);
    let p = problem(
        &patch(
            &acme_admin,
            "t_5001",
            r#"{"quotas":{"storageGiB":"lots"}}"#,
            &[],
        ),
        422,
    );
    assert!(p.to_string().contains("/spec/quotas/storageGiB"), "{p:#}");
    problem(
        &patch(
            &acme_admin,
            "t_5001",
            r#"{"quotas":{"storageGiB":300}}"#,
            &[("If-Match", "\"999\"")],
        ),
        412,
    );
    // An invalid change is refused as invalid, whatever its precondition says (RFC 9110
    // §13.2.1: preconditions are judged on a request that would otherwise succeed).
    for body in [r#"{"quotas":{"storageGiB":-5}}"#, r#"{"plan":"f3*"}"#] {
        problem(
            &patch(&acme_admin, "t_5001", body, &[("If-Match", "\"999\"")]),
            422,
        );
    }
    assert_eq!(repo.head(), head, "no refused request committed anything");
    // Values are data, never structure: a label crafted to close the flow map and add a
    // lifecycle is stored as that string, and the tenant is still a Draft.
    let hostile = "x }, lifecycle: Active, y: { z";
    let r = create(
        &acme_admin,
        &format!(
            r#"{{"tenantId":"t_9102","organizationId":"org_acme","profile":"mt-standard","environments":["dev"],"labels":{{"team":"{hostile}"}}}}"#
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_9102.yaml")).expect("file");
    assert!(text.contains(&format!("team: \"{hostile}\"")), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("lifecycle:"))
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("  lifecycle: Draft\n"), "{text}");
    // A quota change: one line of the file changes, the rest (comments, order) stays.
    let before = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    let r = patch(
        &acme_admin,
        "t_5001",
        r#"{"quotas":{"apiRateLimit":300}}"#,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().get("jobId"), None);
    let after = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [(
            "  quotas: { storageGiB: 200, concurrentJobs: 10, apiRateLimit: 200 }",
            "  quotas: { storageGiB: 200, concurrentJobs: 10, apiRateLimit: 300 }"
        )]
    );
    assert_eq!(before.lines().count(), after.lines().count());
}

/// Eight writers patch the same tenant at once, each adding its own label: every request
/// succeeds and every label is in the manifest afterwards — writes queue, none is lost.
fn concurrent_writers_lose_nothing(port: u16, repo: &TestRepo) {
    let before = repo.head();
    let op = format!("Bearer {BILLING}");
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let op = op.clone();
            std::thread::spawn(move || {
                request(
                    port,
                    "PATCH",
                    "/api/tenancy/v1/tenants/t_5001",
                    &[("Authorization", &op), ("Content-Type", "application/json")],
                    &format!(r#"{{"labels":{{"writer{i}":"yes"}}}}"#),
                )
            })
        })
        .collect();
    for w in writers {
        let r = w.join().expect("writer");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    for i in 0..8 {
        assert!(
            text.contains(&format!("writer{i}: \"yes\"")),
            "writer{i} lost: {text}"
        );
    }
    // Eight commits on top of the one before, in one line of history.
    let mut walk = repo.repo.revwalk().expect("walk");
    walk.push_head().expect("head");
    let mut api_commits = 0;
    for oid in walk {
        let oid = oid.expect("oid");
        if oid.to_string() == before {
            break;
        }
        api_commits += 1;
    }
    assert_eq!(api_commits, 8);
}

/// A bare clone of `repo` (a remote to push to) and the branch `repo` is on.
fn bare_clone(repo: &TestRepo) -> (tempfile::TempDir, git2::Repository, String) {
    let branch = repo
        .repo
        .head()
        .expect("head")
        .shorthand()
        .expect("branch")
        .to_owned();
    let dir = tempfile::tempdir().expect("tmp");
    let bare = git2::build::RepoBuilder::new()
        .bare(true)
        .clone(&format!("file://{}", repo.path().display()), dir.path())
        .expect("a bare clone");
    (dir, bare, branch)
}

/// A daemon on `repo` with `extra` added to an embedded configuration and an operator token
/// named `console`; waits until it is ready. Its port, guard, `Authorization` value and work
/// directory (kept alive with the daemon).
fn console_daemon(
    repo: &TestRepo,
    extra: &str,
) -> (u16, crate::support::Running, String, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let token = "tok-console-writer-0123";
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!(
        "{extra}\n[[api.tokens]]\nname = \"console\"\nsha256 = \"{}\"\nrole = \"operator\"\n",
        sha256_hex(token)
    );
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let daemon = ready_daemon(repo.path(), &config, port, 1);
    (port, daemon, format!("Bearer {token}"), work)
}

/// A daemon that follows a remote repository writes there: each API commit is pushed to the
/// remote first (a fast-forward), and the mirror follows. Another writer pushing meanwhile
/// makes the first push fail; the write fetches, rebuilds on the new head and pushes again,
/// so both commits are in the remote's history.
#[test]
fn api_writes_are_pushed_to_the_followed_remote() {
    let upstream = TestRepo::with_examples();
    let (remote_dir, remote, branch) = bare_clone(&upstream);
    let (port, _daemon, auth, _work) = console_daemon(
        &upstream,
        &format!(
            "[daemon]\nremote = \"file://{}\"\nbranch = \"{branch}\"\nfetch-interval-seconds = 3600\n",
            remote_dir.path().display()
        ),
    );
    let started = Instant::now();
    while get(
        port,
        "/api/tenancy/v1/tenants/t_5002",
        &[("Authorization", &auth)],
    )
    .status
        != 200
    {
        assert!(started.elapsed() < Duration::from_secs(30), "first pass");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Someone else pushes to the remote; the daemon's mirror does not know yet (hourly fetch).
    upstream.edit(
        "org_acme/t_5003.yaml",
        "displayName: ",
        "displayName: Renamed ",
    );
    let theirs = upstream.commit("rename t_5003 upstream");
    let mut to_remote = upstream
        .repo
        .remote_anonymous(&format!("file://{}", remote_dir.path().display()))
        .expect("remote");
    to_remote
        .push(
            &[format!("refs/heads/{branch}:refs/heads/{branch}").as_str()],
            None,
        )
        .expect("their push");

    let r = request(
        port,
        "POST",
        "/api/tenancy/v1/tenants/t_5002:suspend",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"reason":"billing"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    let sha = accepted["commitSha"].as_str().expect("sha");
    let head = remote
        .find_reference(&format!("refs/heads/{branch}"))
        .expect("branch")
        .peel_to_commit()
        .expect("commit");
    assert_eq!(
        head.id().to_string(),
        sha,
        "the remote has the API's commit"
    );
    assert_eq!(head.author().name().ok(), Some("console"));
    assert_eq!(
        head.parent_id(0).expect("parent").to_string(),
        theirs,
        "built on the other writer's commit: nothing lost"
    );
    let job = completed_job(
        port,
        accepted["links"]["self"].as_str().expect("link"),
        &auth,
    );
    assert_eq!(job["commitSha"], sha);
    let t = get(
        port,
        "/api/tenancy/v1/tenants/t_5002",
        &[("Authorization", &auth)],
    )
    .json();
    assert_eq!(t["state"], "Suspended");
}

/// `[api] push = "origin"`: a daemon watching a local repository pushes each API commit to
/// that remote before its own branch moves.
#[test]
fn api_writes_are_pushed_to_a_named_remote_of_a_local_repository() {
    let repo = TestRepo::with_examples();
    let (origin_dir, origin, branch) = bare_clone(&repo);
    repo.repo
        .remote("origin", &format!("file://{}", origin_dir.path().display()))
        .expect("origin");
    let (port, _daemon, auth, _work) = console_daemon(&repo, "[api]\npush = \"origin\"\n");
    let r = request(
        port,
        "POST",
        "/api/tenancy/v1/tenants/t_5002:suspend",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        "",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let sha = r.json()["commitSha"].as_str().expect("sha").to_owned();
    let pushed = origin
        .find_reference(&format!("refs/heads/{branch}"))
        .expect("branch")
        .peel_to_commit()
        .expect("commit")
        .id()
        .to_string();
    assert_eq!(pushed, sha, "origin has the commit");
    assert_eq!(repo.head(), sha, "and the local branch");

    // Someone is editing t_5003 in the work tree: the API's commit does not touch their copy.
    let path = repo.path().join("org_acme/t_5003.yaml");
    let edited = std::fs::read_to_string(&path).expect("file") + "# being edited\n";
    std::fs::write(&path, &edited).expect("edit");
    let patch = |body: &str| {
        request(
            port,
            "PATCH",
            "/api/tenancy/v1/tenants/t_5003",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let r = patch(r#"{"labels":{"owner":"api"}}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(std::fs::read_to_string(&path).expect("file"), edited);
    std::fs::write(&path, edited.replace("# being edited\n", "")).expect("restore");
    repo.repo
        .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .expect("checkout");

    // The local branch and origin diverge (a local commit origin lacks, and one of origin's
    // the local branch lacks): the write is refused with 409 and neither side changes.
    let other = tempfile::tempdir().expect("tmp");
    let clone = git2::Repository::clone(
        &format!("file://{}", origin_dir.path().display()),
        other.path(),
    )
    .expect("clone");
    std::fs::write(other.path().join("org_acme/NOTES.md"), "theirs\n").expect("write");
    let mut index = clone.index().expect("index");
    index
        .add_path(std::path::Path::new("org_acme/NOTES.md"))
        .expect("add");
    let tree = clone
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("them", "them@example.invalid").expect("sig");
    let parent = clone
        .head()
        .expect("head")
        .peel_to_commit()
        .expect("commit");
    clone
        .commit(Some("HEAD"), &sig, &sig, "theirs", &tree, &[&parent])
        .expect("commit");
    clone
        .find_remote("origin")
        .expect("origin")
        .push(
            &[format!("refs/heads/{branch}:refs/heads/{branch}").as_str()],
            None,
        )
        .expect("their push");
    std::fs::write(repo.path().join("org_acme/LOCAL.md"), "ours\n").expect("write");
    let ours = repo.commit("a local commit origin does not have");
    let theirs = origin
        .refname_to_id(&format!("refs/heads/{branch}"))
        .expect("id");
    let r = patch(r#"{"labels":{"owner":"someone-else"}}"#);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("diverged"), "{}", r.body);
    assert_eq!(repo.head(), ours, "the local commit stays");
    assert_eq!(
        origin
            .refname_to_id(&format!("refs/heads/{branch}"))
            .expect("id"),
        theirs,
        "origin unchanged"
    );
}
