//! C. Tenant and organization boundaries in the API, and E2: the API reads its own writes.

use crate::api::{Reply, ready_daemon, request, sha256_hex};
use crate::support::{TestRepo, embedded_config, free_port};
use serde_json::Value;
use std::time::{Duration, Instant};

const BASE: &str = "/api/tenancy/v1";
const ADMIN: &str = "tok-root-admin-000000";
const VIEWER: &str = "tok-viewer-0000000000";
const T5001_OP: &str = "tok-t5001-op-0000000";
const T5001_ADMIN: &str = "tok-t5001-adm-000000";
const T6001_OP: &str = "tok-t6001-op-0000000";
const ACME_ADMIN: &str = "tok-acme-adm-0000000";
const GLOBEX_ADMIN: &str = "tok-globex-adm-00000";

struct Api {
    port: u16,
    _daemon: crate::support::Running,
    _work: tempfile::TempDir,
}

/// A daemon on `repo` with one token of each kind the tests need; `extra` goes first in the
/// configuration (e.g. `[api]` limits).
fn api(repo: &TestRepo, extra: &str) -> Api {
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += extra;
    for (name, token, role, scope) in [
        ("root", ADMIN, "admin", ""),
        ("viewer", VIEWER, "viewer", ""),
        ("t5001-op", T5001_OP, "operator", "tenant = \"t_5001\"\n"),
        ("t5001-admin", T5001_ADMIN, "admin", "tenant = \"t_5001\"\n"),
        ("t6001-op", T6001_OP, "operator", "tenant = \"t_6001\"\n"),
        (
            "acme-admin",
            ACME_ADMIN,
            "admin",
            "organization = \"org_acme\"\n",
        ),
        (
            "globex-admin",
            GLOBEX_ADMIN,
            "admin",
            "organization = \"org_globex\"\n",
        ),
    ] {
        toml += &format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n{scope}",
            sha256_hex(token)
        );
    }
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let daemon = ready_daemon(repo.path(), &config, port, 1);
    Api {
        port,
        _daemon: daemon,
        _work: work,
    }
}

impl Api {
    fn call(&self, method: &str, path: &str, token: &str, body: &str) -> Reply {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        request(self.port, method, &format!("{BASE}{path}"), &headers, body)
    }
}

/// An RFC 9457 problem with `status`.
fn problem(r: &Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let p = r.json();
    assert_eq!(p["status"], status, "{p:#}");
    assert!(
        p["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://"))
    );
    p
}

fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// C1, C3: a confined token claiming another tenant's external id is refused, the other
/// tenant is untouched (its writes still pass, validation still clean), and the refusal names
/// neither the other tenant nor its file; creating an id that exists in another organization
/// says only that it is taken.
#[test]
fn claiming_another_tenants_external_id_breaks_nobody_and_leaks_nothing() {
    let repo = TestRepo::with_examples();
    let a = api(&repo, "");
    let head = repo.head();
    let theirs = "0015g00000GlBx6001"; // t_6001's crm id
    let leaks = |body: &str| {
        ["t_6001", "org_globex", "globex", "t_6001.yaml"]
            .iter()
            .any(|s| body.contains(s))
    };
    let r = a.call(
        "PATCH",
        "/tenants/t_5001",
        T5001_ADMIN,
        &format!(r#"{{"externalIds":{{"crm":"{theirs}"}}}}"#),
    );
    let p = problem(&r, 422);
    assert!(
        p.to_string().contains("unique.external-id"),
        "the conflict is the writer's: {p:#}"
    );
    assert!(!leaks(&r.body), "{}", r.body);
    let r = a.call(
        "POST",
        "/tenants",
        ACME_ADMIN,
        &format!(
            r#"{{"tenantId":"t_9201","organizationId":"org_acme","profile":"mt-standard","environments":["dev"],"externalIds":{{"crm":"{theirs}"}}}}"#
        ),
    );
    problem(&r, 422);
    assert!(!leaks(&r.body), "{}", r.body);
    assert_eq!(repo.head(), head, "nothing committed");
    // An unconfined admin is told which tenant holds it.
    let r = a.call(
        "PATCH",
        "/tenants/t_5001",
        ADMIN,
        &format!(r#"{{"externalIds":{{"crm":"{theirs}"}}}}"#),
    );
    assert!(
        problem(&r, 422).to_string().contains("t_6001"),
        "{}",
        r.body
    );

    // The other tenant is fine: its own writes pass, the lookup finds it, validation is clean.
    let r = a.call(
        "PATCH",
        "/tenants/t_6001",
        GLOBEX_ADMIN,
        r#"{"displayName":"Globex Prod (renamed)"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let found = a.call(
        "GET",
        &format!("/tenants/by-external-id/crm/{theirs}"),
        ADMIN,
        "",
    );
    assert_eq!(found.json()["tenantId"], "t_6001");
    let (run, report) = crate::support::validate_json(repo.path(), &["--no-policies"]);
    assert_eq!(run.code, 0, "{report:#}");

    // An id taken in another organization: 409, without where.
    let r = a.call(
        "POST",
        "/tenants",
        GLOBEX_ADMIN,
        r#"{"tenantId":"t_5001","organizationId":"org_globex","profile":"mt-standard","environments":["dev"]}"#,
    );
    problem(&r, 409);
    for s in ["org_acme", "t_5001.yaml", "acme"] {
        assert!(!r.body.contains(s), "{s} leaked: {}", r.body);
    }
    // Within the caller's own scope the answer may say where.
    let r = a.call(
        "POST",
        "/tenants",
        ACME_ADMIN,
        r#"{"tenantId":"t_5002","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
    );
    assert!(problem(&r, 409).to_string().contains("t_5002.yaml"));
}

/// C2: a webhook may not point inside the platform, in any spelling.
#[test]
fn webhook_registration_refuses_internal_targets() {
    let repo = TestRepo::with_examples();
    let a = api(&repo, "");
    let body = |url: &str| {
        format!(r#"{{"url":"{url}","events":["TENANCY_SUSPENDED"],"secret":"whsec_0123456789"}}"#)
    };
    for url in [
        format!("http://127.0.0.1:{}/hooks/git", a.port),
        format!("https://127.0.0.1:{}/hooks/git", a.port),
        "https://localhost/x".into(),
        "https://127.1/x".into(),
        "https://2130706433/x".into(),
        "https://0x7f000001/x".into(),
        "https://0.0.0.0/x".into(),
        "https://[::1]/x".into(),
        "https://[::ffff:127.0.0.1]/x".into(),
        "https://169.254.169.254/latest/meta-data/".into(),
        "https://metadata.google.internal/computeMetadata/v1/".into(),
        "https://10.0.0.8/x".into(),
        "https://192.168.0.1/x".into(),
        "https://172.20.0.1/x".into(),
        "https://[fd00::1]/x".into(),
        "https://[fe80::1]/x".into(),
        "https://user:pw@ops.example.com/x".into(),
        "http://ops.example.com/x".into(),
    ] {
        let r = a.call("POST", "/webhooks", ADMIN, &body(&url));
        let p = problem(&r, 422);
        assert_eq!(p["errors"][0]["field"], "/url", "{url}: {p:#}");
    }
    let r = a.call(
        "POST",
        "/webhooks",
        ADMIN,
        &body("https://ops.example.com/hooks/tenancy"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

/// C4, C5: idempotency keys are the caller's own, and asking about another tenant costs that
/// tenant nothing.
#[test]
fn keys_and_rate_limits_are_scoped_to_the_caller() {
    let repo = TestRepo::with_examples();
    let a = api(
        &repo,
        "[api]\ntenant-requests-per-second = 0.2\ntenant-burst = 3\n",
    );
    let report = |tenant: &str, amount: &str| {
        format!(
            r#"{{"tenantId":"{tenant}","env":"prod","resource":"storageGiBHours","amount":{amount},"timestamp":"2025-10-08T15:20:00Z"}}"#
        )
    };
    let post = |token: &str, key: &str, body: &str| {
        let auth = format!("Bearer {token}");
        request(
            a.port,
            "POST",
            &format!("{BASE}/billing/usage"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            body,
        )
    };
    let mine = post(T5001_OP, "invoice-1", &report("t_5001", "1.5"));
    assert_eq!(mine.status, 202, "{}", mine.body);
    // Another tenant's use of the same key is its own report: no 409 oracle, no squatting.
    let theirs = post(T6001_OP, "invoice-1", &report("t_6001", "9"));
    assert_eq!(theirs.status, 202, "{}", theirs.body);
    assert_ne!(theirs.json()["replayed"], true);
    assert_ne!(theirs.json()["recordId"], mine.json()["recordId"]);

    // t_6001's token hammering t_5001 gets 404s, never drains t_5001's bucket.
    for _ in 0..10 {
        problem(&a.call("GET", "/tenants/t_5001", T6001_OP, ""), 404);
    }
    let r = a.call("GET", "/tenants/t_5001", T5001_OP, "");
    assert_eq!(r.status, 200, "{}", r.body);
    // The limit is on: t_5001's own excess is 429 with Retry-After.
    let mut limited = None;
    for _ in 0..5 {
        let r = a.call("GET", "/tenants/t_5001", T5001_OP, "");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("t_5001's own requests are limited");
    problem(&r, 429);
    assert!(r.headers.contains_key("retry-after"));
}

/// C6: every cell of the role table (README, "API roles").
#[test]
fn the_role_table_is_enforced_cell_by_cell() {
    let repo = TestRepo::with_examples();
    let a = api(&repo, "");
    let hook = r#"{"url":"https://ops.example.com/hooks/t5001","events":[],"secret":"whsec_0123456789","tenantId":"t_5001"}"#;
    let create = r#"{"tenantId":"t_9401","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#;
    let usage = r#"{"tenantId":"t_5001","env":"prod","resource":"cpuHours","amount":1,"timestamp":"2025-10-08T15:20:00Z"}"#;
    // (method, path, body, least role: 0 viewer, 1 operator, 2 admin)
    let cells: Vec<(&str, String, String, u8)> = vec![
        ("GET", "/tenants/t_5001".into(), String::new(), 0),
        (
            "GET",
            "/tenants/t_5001/environments".into(),
            String::new(),
            0,
        ),
        (
            "GET",
            "/governance/policies?tenantId=t_5001".into(),
            String::new(),
            0,
        ),
        ("POST", "/billing/usage".into(), usage.into(), 1),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"displayName":"Acme P"}"#.into(),
            1,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"labels":{"x":"y"}}"#.into(),
            1,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"contacts":{"technical":"a@b.example"}}"#.into(),
            1,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"plan":"enterprise"}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"billing":{"plan":"enterprise"}}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"quotas":{"storageGiB":100}}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"profile":"st-dedicated"}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"regions":{"allowed":["ap-south-1"],"preferred":"ap-south-1"}}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"environments":["dev","prod"]}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"policies":{"retentionDays":30}}"#.into(),
            2,
        ),
        (
            "PATCH",
            "/tenants/t_5001".into(),
            r#"{"externalIds":{"crm":"X-1"}}"#.into(),
            2,
        ),
        ("POST", "/tenants".into(), create.into(), 2),
        ("DELETE", "/tenants/t_5001".into(), String::new(), 2),
        (
            "DELETE",
            "/tenants/t_5003?force=true".into(),
            String::new(),
            2,
        ),
        ("POST", "/webhooks".into(), hook.into(), 2),
        ("GET", "/webhooks".into(), String::new(), 2),
    ];
    for (method, path, body, least) in &cells {
        for (role, token) in [(0u8, VIEWER), (1, T5001_OP), (2, ADMIN)] {
            let r = a.call(method, path, token, body);
            if role < *least {
                problem(&r, 403);
            } else {
                assert_ne!(r.status, 403, "{method} {path} as role {role}: {}", r.body);
                assert_ne!(r.status, 401, "{method} {path}: {}", r.body);
            }
        }
    }
    // Lifecycle operations are the operator's (a suspension, then back).
    for (role, token) in [(0u8, VIEWER), (1, T5001_OP)] {
        let r = a.call("POST", "/tenants/t_5002:suspend", token, "");
        if role == 0 {
            problem(&r, 403);
        }
    }
    let r = a.call("POST", "/tenants/t_5001:suspend", T5001_OP, "");
    assert_eq!(r.status, 202, "{}", r.body);
}

/// C7, C8: every error answer is RFC 9457 — rejections of the framework and of the HTTP
/// parser included; slow clients are cut off, failed logins throttled, the bearer scheme is
/// case-insensitive, and an action body must be JSON.
#[test]
fn every_error_is_a_problem_and_hostile_clients_are_bounded() {
    use std::io::{Read, Write};
    let repo = TestRepo::with_examples();
    let a = api(&repo, "");
    let raw = |req: &[u8]| -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let _ = s.write_all(req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_ascii_lowercase(), body.to_owned())
    };
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    let long_uri = format!(
        "GET {BASE}/tenants?x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n",
        "a".repeat(9000)
    );
    let huge_uri = format!(
        "GET {BASE}/tenants?x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let big_header = format!(
        "GET {BASE}/tenants HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let huge_header = format!(
        "GET {BASE}/tenants HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(300_000)
    );
    let many_headers = format!(
        "GET {BASE}/tenants HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect::<String>()
    );
    let big_body = format!(
        "POST {BASE}/tenants/t_5001:suspend HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: 70000\r\n\r\n{{\"reason\":\"{}\"}}",
        "a".repeat(69_986)
    );
    let cases: Vec<(String, u16)> = vec![
        (
            format!(
                "GET {BASE}/tenants/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET {BASE}/tenants/t_5001%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
            ),
            400,
        ),
        (
            format!(
                "PUT {BASE}/tenants HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
            405,
        ),
        (
            format!(
                "POST {BASE}/jobs/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
            405,
        ),
        (
            format!(
                "PATCH {BASE}/webhooks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
            405,
        ),
        (
            format!("GET {BASE}/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"),
            404,
        ),
        (big_body, 413),
        (long_uri, 414),
        (huge_uri, 414),
        (big_header, 431),
        (huge_header, 431),
        (many_headers, 431),
        ("NOT HTTP AT ALL\r\n\r\n".into(), 400),
    ];
    for (req, want) in cases {
        let (status, head, body) = raw(req.as_bytes());
        assert_eq!(status, want, "{}…: {head}{body}", &req[..req.len().min(60)]);
        assert!(
            head.contains("content-type: application/problem+json"),
            "{want}: {head}"
        );
        let p: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{want} {e}: {body}"));
        assert_eq!(p["status"], want, "{p:#}");
    }

    // The bearer scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let h = format!("{scheme} {ADMIN}");
        let r = request(
            a.port,
            "GET",
            &format!("{BASE}/tenants"),
            &[("Authorization", &h)],
            "",
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    // An action body is JSON, said so.
    let r = request(
        a.port,
        "POST",
        &format!("{BASE}/tenants/t_5002:suspend"),
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("Content-Type", "text/plain"),
        ],
        r#"{"reason":"billing"}"#,
    );
    problem(&r, 415);

    // A client that never finishes its head is cut off (after 10 s; generous guard here).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(40)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server closed the half-open connection");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // Guessing tokens: past a burst of failures, the address waits (429, Retry-After).
    let mut throttled = None;
    for i in 0..60 {
        let r = request(
            a.port,
            "GET",
            &format!("{BASE}/tenants"),
            &[("Authorization", &format!("Bearer guess-{i:04}-0000000000"))],
            "",
        );
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        problem(&r, 401);
    }
    let r = throttled.expect("failed logins are throttled");
    problem(&r, 429);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
}

/// C9: a manifest holding multi-byte text is edited like any other.
#[test]
fn patches_work_on_manifests_with_multi_byte_text() {
    let repo = TestRepo::with_examples();
    repo.edit(
        "org_acme/t_5001.yaml",
        "displayName: Acme Production",
        "displayName: Café Ünïon — 株式会社",
    );
    repo.edit("org_acme/t_5001.yaml", "team: cc-12", "team: équipe-ünï");
    repo.commit("multi-byte text");
    let a = api(&repo, "");
    for body in [
        r#"{"labels":{"team":"ñandú","x":"東京"}}"#,
        r#"{"displayName":"Ünïon Café 2 🚀"}"#,
        r#"{"contacts":{"technical":"ops@exämple.com"}}"#,
    ] {
        let r = a.call("PATCH", "/tenants/t_5001", T5001_OP, body);
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    }
    let r = a.call(
        "PATCH",
        "/tenants/t_5001",
        ADMIN,
        r#"{"quotas":{"apiRateLimit":250}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    assert!(text.contains("displayName: \"Ünïon Café 2 🚀\""), "{text}");
    assert!(text.contains("ñandú") && text.contains("東京"), "{text}");
    assert!(text.contains("apiRateLimit: 250"), "{text}");
    let (run, report) = crate::support::validate_json(repo.path(), &["--no-policies"]);
    assert_eq!(run.code, 0, "{report:#}");
}

/// E2: right after a create, the tenant can be activated; right after a suspension, deleted —
/// the API judges against what it committed, not what the daemon has applied so far.
#[test]
fn the_api_reads_its_own_writes() {
    let repo = TestRepo::with_examples();
    let a = api(&repo, "");
    let r = a.call(
        "POST",
        "/tenants",
        ADMIN,
        r#"{"tenantId":"t_9501","organizationId":"org_acme","profile":"mt-standard","environments":["dev","prod"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = a.call("POST", "/tenants/t_9501:activate", ADMIN, "");
    assert_eq!(r.status, 202, "activate right after create: {}", r.body);
    let job = r.json()["links"]["self"].as_str().expect("job").to_owned();
    wait("the activation converged", || {
        let j = request(
            a.port,
            "GET",
            &job,
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            "",
        )
        .json();
        j["state"] == "Completed"
    });
    let t = a.call("GET", "/tenants/t_9501", ADMIN, "").json();
    assert_eq!(t["state"], "Active", "{t:#}");

    let r = a.call(
        "POST",
        "/tenants/t_5002:suspend",
        ADMIN,
        r#"{"reason":"billing"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let r = a.call("DELETE", "/tenants/t_5002", ADMIN, "");
    assert_eq!(r.status, 202, "delete right after suspend: {}", r.body);
    // Preconditions still hold against what is committed: an Active tenant needs force.
    let p = problem(&a.call("DELETE", "/tenants/t_5001", ADMIN, ""), 409);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("force=true")),
        "{p:#}"
    );
}
