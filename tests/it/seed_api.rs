//! Every example of seed 000 (the API's promised operations), replayed verbatim against a
//! running daemon converging real services: PostgreSQL, S3 (moto) and Kafka (noida-db, which
//! also carries the events). Each write is a commit in the watched repository; each job is
//! polled until the daemon has converged it, and the planes are checked for the result.

use crate::support::{EventSchema, TestRepo, free_port, read_topic, unique_tag};
use serde_json::Value;
use std::time::{Duration, Instant};

const BASE: &str = "/api/tenancy/v1";
const OPS: &str = "tok-seed-ops-0123456789";

fn call(port: u16, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let auth = format!("Bearer {OPS}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let r = crate::api::request(port, method, &format!("{BASE}{path}"), &headers, body);
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

/// Poll `/jobs/{id}` until it completes (60 s at most); the job.
fn converged(port: u16, job: &Value) -> Value {
    let id = job.as_str().expect("a job id");
    let started = Instant::now();
    loop {
        let (status, j) = call(port, "GET", &format!("/jobs/{id}"), "", &[]);
        assert_eq!(status, 200, "{j:#}");
        assert_ne!(j["state"], "Failed", "{j:#}");
        if j["state"] == "Completed" {
            return j;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not converged: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seed 000 §9's usage report, at `timestamp`.
fn usage_of(timestamp: &str) -> String {
    format!(
        r#"{{
  "tenantId": "t_5001",
  "env": "prod",
  "resource": "storageGiBHours",
  "amount": 100.2,
  "timestamp": "{timestamp}"
}}"#
    )
}

async fn pg_exists(url: &str, sql: &str, name: &str) -> bool {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg");
    sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(name)
        .fetch_one(&mut c)
        .await
        .expect("query")
}

#[test]
fn every_seed_000_example_works_against_a_running_daemon() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tag = unique_tag();
    // A repository with the platform and the organizations, and no tenant yet.
    let repo = TestRepo::new();
    crate::support::copy_dir(&crate::support::example_tenants(), repo.path());
    for org in std::fs::read_dir(repo.path()).expect("read").flatten() {
        for f in std::fs::read_dir(org.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().starts_with("t_") {
                std::fs::remove_file(f.path()).expect("rm");
            }
        }
    }
    repo.commit("platform and organizations");
    let admin_url = env["TENANCY_TEST_PG_URL"].clone();
    let db = format!("tenancy_seed_{tag}");
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin_url).await.expect("pg");
        // Role names are global to the cluster and the seed's id is t_5001: clear what an
        // interrupted earlier run of this test left (its databases, then the roles).
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tenancy\\_seed\\_%' OR datname IN ('t_5001_dev', 't_5001_prod')",
        )
        .fetch_all(&mut c)
        .await
        .expect("list");
        for name in &old {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                .execute(&mut c)
                .await
                .expect("drop an old database");
        }
        for role in ["t_5001_dev", "t_5001_prod"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                .execute(&mut c)
                .await
                .expect("drop an old role");
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut c)
            .await
            .expect("database");
    });
    let db_url = crate::support::pg_url(&admin_url, "postgres", &db);
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::apply::write_config(work.path(), &env, &tag, Some(&db_url), None);
    let broker = env["TENANCY_TEST_KAFKA_NOIDA"].clone();
    let topic = format!("events-seed-{tag}");
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!(
        "[events.kafka]\nbootstrap-servers = \"{broker}\"\ntopic = \"{topic}\"\n\n\
         [[api.tokens]]\nname = \"seed-ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        crate::api::sha256_hex(OPS)
    );
    std::fs::write(&config, toml).expect("config");
    let port = free_port();
    let _daemon = crate::api::ready_daemon(repo.path(), &config, port, 2);

    // §1 Creating a tenant: 201, Draft. The organization's defaults give it its region.
    let (status, created) = call(
        port,
        "POST",
        "/tenants",
        r#"{
  "tenantId": "t_5001",
  "organizationId": "org_acme",
  "profile": "mt-standard",
  "environments": ["dev", "prod"],
  "quotas": { "storageGiB": 200, "concurrentJobs": 10 },
  "policies": { "dataResidency": "in-region-only", "encryption": "kms-per-tenant" },
  "billing": { "plan": "starter" }
}"#,
        &[],
    );
    assert_eq!(status, 201, "{created:#}");
    assert_eq!(
        (created["id"].as_str(), created["state"].as_str()),
        (Some("t_5001"), Some("Draft"))
    );
    assert!(
        created["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(repo.head(), created["commitSha"].as_str().expect("sha"));
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    assert!(text.contains("  lifecycle: Draft\n"), "{text}");
    assert!(
        text.contains("  regions: { allowed: [ap-south-1], preferred: ap-south-1 }\n"),
        "{text}"
    );
    // Creating it again is a conflict, and nothing is committed.
    let head = repo.head();
    let (status, _) = call(
        port,
        "POST",
        "/tenants",
        r#"{"tenantId":"t_5001","organizationId":"org_acme","profile":"mt-standard","environments":["dev"]}"#,
        &[],
    );
    assert_eq!(status, 409);
    assert_eq!(repo.head(), head);

    // §2 Activating, right after §1 as the seed does it (the daemon may not have taken the
    // create commit yet: the API judges against what it committed): 202 with a job; polling
    // it shows it converge. The schema now exists.
    let (status, activated) = call(
        port,
        "POST",
        "/tenants/t_5001:activate",
        "",
        &[("X-Request-Id", "req-seed-activate")],
    );
    assert_eq!(status, 202, "{activated:#}");
    assert_eq!(
        activated["links"]["self"],
        format!("{BASE}/jobs/{}", activated["jobId"].as_str().expect("id"))
    );
    let job = converged(port, &activated["jobId"]);
    assert!(
        job["action"] == "activate" || job["action"] == "create",
        "created and activated in one pass, or activated after: {job:#}"
    );
    // The create job converged too (on its own, or by the activation's, which included it).
    converged(port, &created["jobId"]);
    let schema_exists = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";
    assert!(rt.block_on(pg_exists(&db_url, schema_exists, "t_5001_prod")));

    // §3 Listing with filters.
    let (status, list) = call(port, "GET", "/tenants?org=org_acme&state=Active", "", &[]);
    assert_eq!(status, 200);
    assert_eq!(list["nextCursor"], Value::Null);
    let item = &list["items"][0];
    assert_eq!(
        (
            item["tenantId"].as_str(),
            item["organizationId"].as_str(),
            item["profile"].as_str(),
            item["state"].as_str(),
            item["region"].as_str()
        ),
        (
            Some("t_5001"),
            Some("org_acme"),
            Some("mt-standard"),
            Some("Active"),
            Some("ap-south-1")
        )
    );

    // §4 Topology: where prod lives in each plane.
    let (status, topo) = call(port, "GET", "/tenants/t_5001/topology?env=prod", "", &[]);
    assert_eq!(status, 200, "{topo:#}");
    assert_eq!(topo["profile"], "mt-standard");
    assert_eq!(topo["db"]["type"], "postgres");
    assert_eq!(topo["db"]["database"], db.as_str());
    assert_eq!(topo["db"]["schema"], "t_5001_prod");
    assert_eq!(topo["objectStore"]["bucket"], format!("{tag}-ap-shared"));
    assert_eq!(topo["objectStore"]["prefix"], "tenants/t_5001/prod/");
    assert_eq!(topo["runtime"]["queue"], format!("{tag}ap-shared"));
    assert_eq!(topo["runtime"]["partitionKey"], "t_5001");
    let (status, _) = call(port, "GET", "/tenants/t_5001/topology?env=staging", "", &[]);
    assert_eq!(status, 404);

    // §6 Environments.
    let (status, envs) = call(port, "GET", "/tenants/t_5001/environments", "", &[]);
    assert_eq!(status, 200);
    let names: Vec<&str> = envs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["dev", "prod"]);
    assert!(
        envs["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["region"] == "ap-south-1")
    );
    // The effective quotas, derived from the tenant and its plan (seed 001), each with where
    // it came from: t_5001's environments declare none of their own here.
    for e in envs["items"].as_array().expect("items") {
        assert_eq!(e["quota"]["storageGiB"], 200, "{e:#}");
        assert_eq!(e["quotaSources"]["storageGiB"], "tenant", "{e:#}");
        assert_eq!(e["quota"]["apiRateLimit"], 500, "{e:#}");
        assert_eq!(e["quotaSources"]["apiRateLimit"], "plan starter", "{e:#}");
    }

    // §7 A webhook: 201, and the secret is never returned.
    let (status, hook) = call(
        port,
        "POST",
        "/webhooks",
        r#"{
  "url": "https://ops.example.com/hooks/tenancy",
  "events": ["TENANCY_ACTIVATED", "TENANCY_SUSPENDED"],
  "secret": "whsec_demo"
}"#,
        &[],
    );
    assert_eq!(status, 201, "{hook:#}");
    assert!(!hook.to_string().contains("whsec_demo"));

    // §8 Policies bound to the tenant.
    let (status, policies) = call(
        port,
        "GET",
        "/governance/policies?tenantId=t_5001&env=prod",
        "",
        &[],
    );
    assert_eq!(status, 200, "{policies:#}");
    let find = |name: &str| {
        policies["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {policies:#}"))
    };
    assert_eq!(
        (
            find("DataResidency")["rule"].as_str(),
            find("DataResidency")["enforced"].as_bool()
        ),
        (Some("in-region-only"), Some(true))
    );
    assert_eq!(
        (
            find("Encryption")["rule"].as_str(),
            find("Encryption")["enforced"].as_bool()
        ),
        (Some("kms-per-tenant"), Some(true))
    );

    // §9 Usage, as the seed sends it (no Idempotency-Key): 202; a retry is the same record.
    let (status, seeded) = call(
        port,
        "POST",
        "/billing/usage",
        &usage_of("2025-10-08T15:20:00Z"),
        &[],
    );
    assert_eq!(status, 202, "{seeded:#}");
    let (status, retried) = call(
        port,
        "POST",
        "/billing/usage",
        &usage_of("2025-10-08T15:20:00Z"),
        &[],
    );
    assert_eq!((status, &retried["recordId"]), (202, &seeded["recordId"]));
    assert_eq!(retried["replayed"], true);
    // With a client key, stored once per key.
    let usage = r#"{
  "tenantId": "t_5001",
  "env": "prod",
  "resource": "storageGiBHours",
  "amount": 100.2,
  "timestamp": "2025-10-08T16:20:00Z"
}"#;
    let (status, accepted) = call(
        port,
        "POST",
        "/billing/usage",
        usage,
        &[("Idempotency-Key", "seed-usage-1")],
    );
    assert_eq!(status, 202, "{accepted:#}");
    assert_eq!(accepted["accepted"], true);
    let (status, again) = call(
        port,
        "POST",
        "/billing/usage",
        usage,
        &[("Idempotency-Key", "seed-usage-1")],
    );
    assert_eq!((status, &again["recordId"]), (202, &accepted["recordId"]));

    // §13 MT → ST migration. The starter plan offers mt-standard only, so the quotas policy
    // refuses it first (422 with the finding, nothing committed); after a plan upgrade the
    // same request is a migration job.
    let head = repo.head();
    let migrate = r#"{
  "profile": "st-dedicated"
}"#;
    let (status, refused) = call(port, "PATCH", "/tenants/t_5001", migrate, &[]);
    assert_eq!(status, 422, "{refused:#}");
    assert!(
        refused.to_string().contains("quotas.profile-not-in-plan"),
        "{refused:#}"
    );
    assert_eq!(repo.head(), head, "a refused write commits nothing");
    let (status, upgraded) = call(
        port,
        "PATCH",
        "/tenants/t_5001",
        r#"{"plan":"enterprise","billing":{"plan":"enterprise"}}"#,
        &[],
    );
    assert_eq!(status, 200, "{upgraded:#}");
    assert_eq!(upgraded.get("jobId"), None, "a plan change needs no job");
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    assert!(text.contains("  billing: { plan: enterprise }\n"), "{text}");
    assert!(text.contains("  plan: enterprise\n"), "{text}");
    // Wait for the daemon to take the upgrade before the migration is judged against it.
    let started = Instant::now();
    while call(port, "GET", "/tenants/t_5001", "", &[]).1["plan"] != "enterprise" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "plan upgrade not applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, migration) = call(port, "PATCH", "/tenants/t_5001", migrate, &[]);
    assert_eq!(status, 200, "{migration:#}");
    assert!(
        migration["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Migration in progress"))
    );
    // §14 The job's status.
    let job = converged(port, &migration["jobId"]);
    assert_eq!(
        (
            job["id"].as_str(),
            job["action"].as_str(),
            job["progress"].as_f64()
        ),
        (
            migration["jobId"].as_str(),
            Some("change-profile"),
            Some(1.0)
        )
    );
    assert!(job["updatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let database_exists = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";
    assert!(
        rt.block_on(pg_exists(&admin_url, database_exists, "t_5001_prod")),
        "the dedicated database"
    );
    let (_, topo) = call(port, "GET", "/tenants/t_5001/topology?env=prod", "", &[]);
    assert_eq!(topo["db"]["database"], "t_5001_prod");
    assert_eq!(topo["runtime"]["partitionKey"], Value::Null);

    // §5 Updating the profile and a quota: 200 with the tenant.
    let (status, patched) = call(
        port,
        "PATCH",
        "/tenants/t_5001",
        r#"{
  "profile": "st-dedicated",
  "quotas": { "storageGiB": 500 }
}"#,
        &[],
    );
    assert_eq!(status, 200, "{patched:#}");
    assert_eq!(
        (
            patched["tenantId"].as_str(),
            patched["profile"].as_str(),
            patched["state"].as_str()
        ),
        (Some("t_5001"), Some("st-dedicated"), Some("Active"))
    );
    let text = std::fs::read_to_string(repo.path().join("org_acme/t_5001.yaml")).expect("file");
    assert!(
        text.contains("  quotas: { concurrentJobs: 10, storageGiB: 500 }\n"),
        "merged, in order: {text}"
    );

    // §10 Suspension with a reason: 202 with the job.
    let (status, suspended) = call(
        port,
        "POST",
        "/tenants/t_5001:suspend",
        r#"{ "reason": "billing" }"#,
        &[("X-Request-Id", "req-seed-suspend")],
    );
    assert_eq!(status, 202, "{suspended:#}");
    converged(port, &suspended["jobId"]);

    // §11 The event stream: TENANCY_SUSPENDED on Kafka with its reason, correlated with the
    // request that asked for it.
    let received = read_topic(&broker, &topic, 3, Duration::from_secs(30));
    let schema = EventSchema::load();
    for (_, e) in &received {
        schema.check(e);
    }
    let (key, event) = received
        .iter()
        .find(|(_, e)| e["type"] == "TENANCY_SUSPENDED")
        .unwrap_or_else(|| panic!("no TENANCY_SUSPENDED in {received:#?}"));
    assert_eq!(key, "t_5001");
    assert_eq!(event["tenantid"], "t_5001");
    assert_eq!(event["data"]["reason"], "billing");
    // Seed 000 §11's consumer, as written: `event = json.loads(msg.value)`, then the top-level
    // type and tenantId (binary content mode: the attributes are in headers).
    let values = crate::support::read_values(&broker, &topic, 3, Duration::from_secs(30));
    let suspended = values
        .iter()
        .find(|v| v["type"] == "TENANCY_SUSPENDED")
        .unwrap_or_else(|| panic!("the seed's consumer sees no TENANCY_SUSPENDED: {values:#?}"));
    assert_eq!(suspended["tenantId"], "t_5001");
    assert_eq!(suspended["reason"], "billing");
    assert!(
        suspended["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(
        event["correlationid"],
        tenancy::store::stable_id(&["request", "req-seed-suspend"])
    );
    assert!(
        received
            .iter()
            .any(|(_, e)| e["type"] == "TENANCY_ACTIVATED"
                && e["correlationid"]
                    == tenancy::store::stable_id(&["request", "req-seed-activate"]))
    );

    // §12 Deletion of the suspended tenant (force=false): 202, Queued; the job removes it.
    let (status, deleted) = call(port, "DELETE", "/tenants/t_5001?force=false", "", &[]);
    assert_eq!(status, 202, "{deleted:#}");
    assert_eq!(deleted["state"], "Queued");
    converged(port, &deleted["jobId"]);
    assert!(
        !rt.block_on(pg_exists(&admin_url, database_exists, "t_5001_prod")),
        "dropped"
    );
    let role_exists = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";
    assert!(
        !rt.block_on(pg_exists(&admin_url, role_exists, "t_5001_prod")),
        "role dropped"
    );
    let (_, t) = call(port, "GET", "/tenants/t_5001", "", &[]);
    assert_eq!(t["state"], "Deleted");
}
