//! The REST API's handlers, called in-process over one fixture (the example repository,
//! committed; its tenants in a SQLite state store; the embedded planes), one request per case
//! and the answer as an inline snapshot: a failing case shows its own diff and hides no other.
//! `UPDATE_EXPECT=1 cargo test -p tenancy --lib api::tests` rewrites the snapshots.
//!
//! The long scenarios over a running daemon (writes reaching the planes, events, webhooks)
//! stay in `tests/it/api.rs`.

use super::*;
use axum::body::Body;
use expect_test::{Expect, expect};
use tower::ServiceExt;

const ADMIN: &str = "tok-unit-admin-000000";
const VIEWER: &str = "tok-unit-viewer-00000";
const T5001_OP: &str = "tok-unit-t5001-op-000";

struct Fixture {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=unit",
            "-c",
            "user.email=unit@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let repo = dir.path().join("repo");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenants");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(&examples)
        .arg(&repo)
        .status()
        .expect("cp");
    assert!(copied.success(), "copy the examples");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "examples"]);
    let mut toml = format!(
        "[embedded]\nroot = \"{}\"\n",
        dir.path().join("data").display()
    );
    for (name, token, role, scope) in [
        ("root", ADMIN, "admin", ""),
        ("viewer", VIEWER, "viewer", ""),
        ("t5001-op", T5001_OP, "operator", "tenant = \"t_5001\"\n"),
    ] {
        toml += &format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n{scope}",
            sha256_hex(token)
        );
    }
    let config_path = dir.path().join("tenancy.toml");
    std::fs::write(&config_path, toml).expect("config");
    let config = crate::config::Config::load(Some(&config_path)).expect("config");
    std::fs::create_dir_all(&config.embedded.root).expect("root");
    let store = Store::open(&config.state_url()).await.expect("store");
    let snapshot = crate::source::read_revision(&repo, "HEAD", &Default::default()).expect("read");
    let report = crate::validate::validate(&snapshot, &Default::default());
    assert!(!report.has_errors(), "{:?}", report.findings);
    for t in &report.catalog.tenants {
        store
            .put_tenant(&TenantRecord::from_manifest(&t.value), None)
            .await
            .expect("put");
    }
    let platform = Arc::new(Platform::default());
    platform.update(&report.catalog);
    let planes = Arc::new(crate::reconcile::Planes::from_config(&config).expect("planes"));
    let guard = crate::webhooks::guard::Guard::new(&config.webhooks, None);
    let writes = writes::WriteTarget {
        repo,
        path: String::new(),
        bundle: None,
        max_file_bytes: crate::reconcile::DEFAULT_MAX_FILE_BYTES,
        push: None,
        cache: Default::default(),
    };
    let (app, _) = router(store, &config.api, writes, planes, platform, guard).expect("router");
    Fixture { app, _dir: dir }
}

/// Values that differ from run to run.
const VOLATILE: &[&str] = &[
    "requestId",
    "instance",
    "createdAt",
    "updatedAt",
    "commitSha",
    "jobId",
    "version",
];

fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if VOLATILE.contains(&k.as_str()) && !v.is_null() {
                    *v = "…".into();
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// One request's answer: status, the headers that matter, the body (JSON pretty-printed,
/// volatile values redacted).
async fn call(f: &Fixture, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("{BASE}{path}"));
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() && !body.starts_with("text:") {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.strip_prefix("text:").unwrap_or(body).to_owned();
    let resp = f
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("answer");
    let tmp = f._dir.path().display().to_string();
    let mut out = resp.status().as_u16().to_string();
    for h in [header::CONTENT_TYPE, header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&h) {
            out += &format!("\n{h}: {}", v.to_str().unwrap_or("?"));
        }
    }
    let status = resp.status();
    let problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    if problem {
        return hide_ids(&format!("{out}\n{}", problem_line(status, &bytes)).replace(&tmp, "$TMP"));
    }
    out += "\n";
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            redact(&mut v);
            out += &serde_json::to_string_pretty(&v).expect("json");
        }
        Err(_) => out += &String::from_utf8_lossy(&bytes),
    }
    hide_ids(&out.replace(&tmp, "$TMP"))
}

/// A problem (RFC 9457) as one line, `<type slug>: <detail>`, and a line per field error —
/// after checking what every problem shares: its status is the answer's, its title the
/// status's reason, its type a URL under the problem namespace.
fn problem_line(status: StatusCode, body: &[u8]) -> String {
    let p: serde_json::Value = serde_json::from_slice(body).expect("a problem is JSON");
    assert_eq!(p["status"], status.as_u16(), "{p}");
    assert_eq!(
        p["title"],
        status.canonical_reason().unwrap_or_default(),
        "{p}"
    );
    let slug = p["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("https://tenancy.dev/problems/"))
        .unwrap_or_else(|| panic!("problem type: {p}"));
    let mut out = format!("{slug}: {}", p["detail"].as_str().unwrap_or_default());
    for e in p["errors"].as_array().into_iter().flatten() {
        out += &format!(
            "\n  {}: {}",
            e["field"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default()
        );
    }
    out
}

/// Job ids (32 hex digits) in links, like the redacted `jobId`.
fn hide_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out += if run.len() == 32 { "…" } else { &run };
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// Run each case of a table: a request line (`METHOD PATH [as TOKEN] [BODY]`, where TOKEN is
/// `admin`, `viewer`, `t5001-op` or any other string, sent as it is) and its answer.
async fn table(f: &Fixture, cases: Vec<(&str, Expect)>) {
    for (line, expect) in cases {
        let (method, rest) = line.split_once(' ').expect("METHOD PATH");
        let (path, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (token, body) = match rest.strip_prefix("as ") {
            Some(rest) => {
                let (name, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let token = match name {
                    "admin" => ADMIN,
                    "viewer" => VIEWER,
                    "t5001-op" => T5001_OP,
                    other => other,
                };
                (Some(token), body)
            }
            None => (None, rest),
        };
        expect.assert_eq(&call(f, method, path, token, body).await);
    }
}

#[tokio::test]
async fn authentication_and_scope() {
    let f = fixture().await;
    table(
        &f,
        vec![
            ("GET /tenants/t_5001", expect![[r#"
                401
                content-type: application/problem+json
                unauthorized: an Authorization: Bearer <token> header is required"#]]),
            ("GET /tenants/t_5001 as tok-nobody-000000000", expect![[r#"
                401
                content-type: application/problem+json
                unauthorized: unknown token"#]]),
            ("GET /tenants/t_6001 as t5001-op", expect![[r#"
                404
                content-type: application/problem+json
                not-found: tenant `t_6001` not found"#]]),
            ("POST /tenants/t_5001:suspend as viewer", expect![[r#"
                403
                content-type: application/problem+json
                forbidden: token `viewer` may not change a tenant's lifecycle: it needs operator or admin"#]]),
            ("GET /tenants?limit=1 as t5001-op", expect![[r#"
                200
                content-type: application/json
                {
                  "items": [
                    {
                      "organizationId": "org_acme",
                      "plan": "starter",
                      "profile": "mt-standard",
                      "region": "ap-south-1",
                      "state": "Active",
                      "tenantId": "t_5001"
                    }
                  ],
                  "nextCursor": null
                }"#]]),
        ],
    )
    .await;
}

/// Wrong tokens cost the peer: past the burst the answer is 429 with when to come back,
/// whatever the token, while a request without one is still told what it lacks and a right
/// token still passes.
#[tokio::test]
async fn guessing_tokens_is_throttled() {
    let f = fixture().await;
    for _ in 0..20 {
        call(&f, "GET", "/tenants", Some("tok-guess-0000000000"), "").await;
    }
    table(
        &f,
        vec![
            ("GET /tenants as tok-guess-0000000001", expect![[r#"
                429
                content-type: application/problem+json
                retry-after: 1
                rate-limited: too many failed logins from this address; wait before trying again"#]]),
            ("GET /tenants", expect![[r#"
                401
                content-type: application/problem+json
                unauthorized: an Authorization: Bearer <token> header is required"#]]),
            ("GET /tenants?limit=1&org=org_initech as viewer", expect![[r#"
                200
                content-type: application/json
                {
                  "items": [
                    {
                      "organizationId": "org_initech",
                      "plan": "business",
                      "profile": "hybrid",
                      "region": "us-east-1",
                      "state": "Active",
                      "tenantId": "t_7001"
                    }
                  ],
                  "nextCursor": "t_7001"
                }"#]]),
        ],
    )
    .await;
}

#[tokio::test]
async fn reads() {
    let f = fixture().await;
    table(
        &f,
        vec![
            (
                "GET /tenants/t_5001 as viewer",
                expect![[r#"
                200
                content-type: application/json
                {
                  "billing": {
                    "costCenter": "cc-12",
                    "plan": "starter"
                  },
                  "createdAt": "…",
                  "environments": [
                    "dev",
                    "prod"
                  ],
                  "externalIds": {
                    "billing": "cus_5001",
                    "crm": "0015g00000AcMe5001"
                  },
                  "organizationId": "org_acme",
                  "plan": "starter",
                  "policies": {
                    "dataResidency": "in-region-only",
                    "encryption": "kms-per-tenant",
                    "retentionDays": 365
                  },
                  "profile": "mt-standard",
                  "quotas": {
                    "apiRateLimit": 200,
                    "concurrentJobs": 10,
                    "storageGiB": 200
                  },
                  "region": "ap-south-1",
                  "state": "Active",
                  "tenantId": "t_5001",
                  "updatedAt": "…",
                  "version": "…"
                }"#]],
            ),
            (
                "GET /tenants?limit=2&state=Active&org=org_globex as viewer",
                expect![[r#"
                    200
                    content-type: application/json
                    {
                      "items": [
                        {
                          "organizationId": "org_globex",
                          "plan": "enterprise",
                          "profile": "st-dedicated",
                          "region": "eu-central-1",
                          "state": "Active",
                          "tenantId": "t_6001"
                        },
                        {
                          "organizationId": "org_globex",
                          "plan": "business",
                          "profile": "hybrid",
                          "region": "eu-central-1",
                          "state": "Active",
                          "tenantId": "t_6002"
                        }
                      ],
                      "nextCursor": null
                    }"#]],
            ),
            (
                "GET /tenants/t_5001/topology?env=prod as viewer",
                expect![[r#"
                200
                content-type: application/json
                {
                  "db": {
                    "database": "t_5001_prod.sqlite",
                    "path": "$TMP/data/databases/pg-ap-south-1-shared/t_5001_prod.sqlite",
                    "target": "pg-ap-south-1-shared",
                    "type": "sqlite"
                  },
                  "env": "prod",
                  "environments": [
                    {
                      "db": {
                        "database": "t_5001_prod.sqlite",
                        "path": "$TMP/data/databases/pg-ap-south-1-shared/t_5001_prod.sqlite",
                        "target": "pg-ap-south-1-shared",
                        "type": "sqlite"
                      },
                      "env": "prod",
                      "objectStore": {
                        "bucket": "s3-ap-south-1",
                        "path": "$TMP/data/objects/s3-ap-south-1/tenants/t_5001/prod",
                        "prefix": "tenants/t_5001/prod/",
                        "target": "s3-ap-south-1",
                        "type": "directory"
                      },
                      "region": "ap-south-1"
                    }
                  ],
                  "objectStore": {
                    "bucket": "s3-ap-south-1",
                    "path": "$TMP/data/objects/s3-ap-south-1/tenants/t_5001/prod",
                    "prefix": "tenants/t_5001/prod/",
                    "target": "s3-ap-south-1",
                    "type": "directory"
                  },
                  "profile": "mt-standard",
                  "region": "ap-south-1",
                  "state": "Active",
                  "tenantId": "t_5001"
                }"#]],
            ),
        ],
    )
    .await;
    // The lookup by external id answers the tenant itself.
    assert_eq!(
        call(
            &f,
            "GET",
            "/tenants/by-external-id/billing/cus_5001",
            Some(VIEWER),
            ""
        )
        .await,
        call(&f, "GET", "/tenants/t_5001", Some(VIEWER), "").await
    );
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let f = fixture().await;
    table(
        &f,
        vec![
            ("GET /tenants/T%21bad as viewer", expect![[r#"
                400
                content-type: application/problem+json
                invalid-id: not a tenant id
                  id: invalid tenant id "T!bad": uppercase letters are not allowed (ids are 3–63 characters: a lowercase ASCII letter, then lowercase letters, digits or `_`)"#]]),
            ("GET /tenants?limit=0 as viewer", expect![[r#"
                400
                content-type: application/problem+json
                invalid-query: limit is out of range
                  limit: between 1 and 500"#]]),
            ("GET /tenants?colour=blue as viewer", expect![[r#"
                400
                content-type: application/problem+json
                invalid-query: the query string is not valid
                  colour: Failed to deserialize query string: colour: unknown field `colour`, expected one of `org`, `state`, `region`, `plan`, `profile`, `cursor`, `limit`"#]]),
            ("GET /tenants/t_5001/topology?env=nope as viewer", expect![[r#"
                404
                content-type: application/problem+json
                not-found: environment `nope` of tenant `t_5001` not found"#]]),
            ("PUT /tenants/t_5001 as admin", expect![[r#"
                405
                content-type: application/problem+json
                allow: GET, PATCH, DELETE
                method: PUT is not allowed here (allowed: GET, PATCH, DELETE)"#]]),
            ("POST /tenants/t_5001:explode as admin", expect![[r#"
                404
                content-type: application/problem+json
                not-found: action `explode` (activate, suspend) not found"#]]),
            ("POST /tenants as admin text:tenantId=x", expect![[r#"
                415
                content-type: application/problem+json
                content-type: send the body as Content-Type: application/json"#]]),
            (r#"POST /tenants as admin {"tenantId":"#, expect![[r#"
                400
                content-type: application/problem+json
                malformed-json: Failed to parse the request body as JSON: tenantId: EOF while parsing a value at line 1 column 12"#]]),
            (r#"PATCH /tenants/t_5001 as admin {"colour":"blue"}"#, expect![[r#"
                422
                content-type: application/problem+json
                invalid-body: `colour` cannot be patched
                  colour: unknown field; expected one of profile, plan, regions, environments, quotas, policies, billing, contacts, externalIds, displayName, labels"#]]),
            ("GET /nothing-here as viewer", expect![[r#"
                404
                content-type: application/problem+json
                not-found: no such endpoint"#]]),
        ],
    )
    .await;
}

/// A write is a commit judged before the branch moves: a refusal names the rule, the field
/// and the position, and commits nothing.
#[tokio::test]
async fn writes_are_judged_commits() {
    let f = fixture().await;
    table(
        &f,
        vec![
            ("POST /tenants/t_5001:suspend as t5001-op", expect![[r#"
                202
                content-type: application/json
                {
                  "commitSha": "…",
                  "jobId": "…",
                  "links": {
                    "self": "/api/tenancy/v1/jobs/…",
                    "tenant": "/api/tenancy/v1/tenants/t_5001"
                  },
                  "state": "Queued"
                }"#]]),
            ("POST /tenants/t_5001:suspend as t5001-op", expect![[r#"
                409
                content-type: application/problem+json
                unchanged: tenant `t_5001` is already Suspended"#]]),
            (
                r#"PATCH /tenants/t_5001 as admin {"externalIds":{"crm":"0015g00000GlBx6001"}}"#,
                expect![[r#"
                    422
                    content-type: application/problem+json
                    refused: the change to `t_5001` was refused by validation or policy; nothing was committed
                      /spec/externalIds/crm: unique.external-id: externalIds.crm "0015g00000GlBx6001" is already used by tenant `t_6001` (org_globex/t_6001.yaml:20) (org_acme/t_5001.yaml:20:23)"#]],
            ),
            (
                r#"PATCH /tenants/t_5001 as admin {"quotas":{"storageGiB":-1}}"#,
                expect![[r#"
                    422
                    content-type: application/problem+json
                    refused: the change to `t_5001` was refused by validation or policy; nothing was committed
                      /spec/quotas/storageGiB: schema.range: `spec.quotas.storageGiB` is -1, below the minimum 0 (org_acme/t_5001.yaml:16:25)"#]],
            ),
            (
                r#"PATCH /tenants/t_5001 as admin {"displayName":"Acme (renamed)"}"#,
                expect![[r#"
                    200
                    content-type: application/json
                    {
                      "commitSha": "…",
                      "profile": "mt-standard",
                      "state": "Suspended",
                      "tenantId": "t_5001"
                    }"#]],
            ),
        ],
    )
    .await;
}
