//! `tenancy plan` and `tenancy apply` end to end: the example tenants applied into the real
//! PostgreSQL, S3 (moto) and both Kafka-protocol brokers (noida-db, tansu) from
//! scripts/services.sh; the resources checked with each service's own client; a second plan
//! empty; manual drift reported by `--detect-only` and corrected by `apply`; a service down
//! failing only its tenants, with a rerun completing; and the embedded loop with no services.

use crate::support::{TestRepo, tagged_examples, tenancy, unique_tag, workspace_root};
use sqlx::{Connection, PgConnection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tenancy_plane_kafka::rdkafka;
use tenancy_plane_s3::aws_sdk_s3;

const REGIONS: [(&str, &str); 4] = [
    ("ap-south-1", "ap"),
    ("eu-west-1", "euw"),
    ("eu-central-1", "euc"),
    ("us-east-1", "us"),
];

fn bundle() -> String {
    workspace_root()
        .join("policies/bundle.yaml")
        .display()
        .to_string()
}

/// A tenancy.toml for `tag`: every region's PostgreSQL target is `pg_url` (one database per
/// test), S3 targets on moto (or `s3_override` for one region), Kafka on noida-db (ap, eu-west)
/// and tansu (eu-central, us).
pub(crate) fn write_config(
    dir: &Path,
    env: &HashMap<String, String>,
    tag: &str,
    pg_url: Option<&str>,
    s3_override: Option<(&str, &str)>,
) -> PathBuf {
    let mut toml = format!(
        "[state]\nurl = \"sqlite://{}\"\n\n[embedded]\nroot = \"{}\"\n\n",
        dir.join("state.db").display(),
        dir.join("embedded").display()
    );
    for (region, short) in REGIONS {
        if let Some(url) = pg_url {
            toml += &format!("[postgres.targets.pg-{region}-shared]\nurl = \"{url}\"\n");
        }
        let endpoint = match s3_override {
            Some((r, url)) if r == region => url.to_owned(),
            _ => env["TENANCY_TEST_S3_URL"].clone(),
        };
        toml += &format!(
            "[object-store.targets.s3-{region}]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\npath-style = true\n\
             access-key-id = \"${{env:IT_S3_KEY}}\"\nsecret-access-key = \"${{env:IT_S3_KEY}}\"\nbucket-prefix = \"{tag}-{short}\"\n"
        );
        if pg_url.is_some() {
            let broker = if short == "ap" || short == "euw" {
                &env["TENANCY_TEST_KAFKA_NOIDA"]
            } else {
                &env["TENANCY_TEST_KAFKA_TANSU"]
            };
            toml += &format!(
                "[kafka.targets.kafka-{region}]\nbootstrap-servers = \"{broker}\"\ntopic-prefix = \"{tag}{short}\"\n"
            );
        }
    }
    let path = dir.join("tenancy.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

pub(crate) fn run(args: &[&str]) -> crate::support::Run {
    // The S3 credentials come from the environment, as a deployment's secrets would.
    // SAFETY: every test sets the same value; tests never read or remove it.
    unsafe { std::env::set_var("IT_S3_KEY", "test") };
    tenancy(args)
}

pub(crate) fn plan_json(repo: &Path, config: &Path) -> (crate::support::Run, serde_json::Value) {
    let r = run(&[
        "plan",
        "--repo",
        repo.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        &bundle(),
        "--output",
        "json",
    ]);
    let json = r.json();
    (r, json)
}

pub(crate) fn apply_json(
    repo: &Path,
    config: &Path,
    extra: &[&str],
) -> (crate::support::Run, serde_json::Value) {
    let bundle = bundle();
    let mut args = vec![
        "apply",
        "--repo",
        repo.to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        &bundle,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    let json = r.json();
    (r, json)
}

pub(crate) fn pending(plan: &serde_json::Value) -> u64 {
    let s = &plan["summary"];
    s["create"].as_u64().unwrap_or(99)
        + s["update"].as_u64().unwrap_or(99)
        + s["delete"].as_u64().unwrap_or(99)
}

fn outcome<'a>(report: &'a serde_json::Value, tenant: &str) -> &'a serde_json::Value {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} not in {report:#}"))
}

fn s3_client(env: &HashMap<String, String>, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_owned()))
        .endpoint_url(&env["TENANCY_TEST_S3_URL"])
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "it",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn kafka_admin(
    bootstrap: &str,
) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// (partitions, retention.ms) of a topic, read with the broker's own metadata and
/// DescribeConfigs replies.
async fn topic(bootstrap: &str, name: &str) -> Option<(usize, Option<String>)> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let admin = kafka_admin(bootstrap);
    let md = admin
        .inner()
        .fetch_metadata(Some(name), Duration::from_secs(10))
        .expect("metadata");
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none())?;
    let partitions = t.partitions().len();
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(name)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let retention = configs
        .into_iter()
        .next()
        .and_then(|r| r.ok())
        .and_then(|r| r.get("retention.ms").and_then(|e| e.value.clone()));
    Some((partitions, retention))
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_converges_every_plane_then_drift_is_detected_and_corrected() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let tag = unique_tag();
    let (repo, ids) = tagged_examples(&tag);
    let id = |n: &str| ids.iter().find(|i| i.starts_with(n)).expect("id").clone();
    let admin_url = env["TENANCY_TEST_PG_URL"].clone();
    let shared_db = format!("tenancy_it_{tag}");
    let mut admin = PgConnection::connect(&admin_url).await.expect("pg admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {shared_db}")))
        .execute(&mut admin)
        .await
        .expect("shared database");
    let shared_url = crate::support::pg_url(&admin_url, "postgres", &shared_db);
    let work = tempfile::tempdir().expect("tmp");
    let config = write_config(work.path(), &env, &tag, Some(&shared_url), None);

    // The plan shows every plane's creations; apply makes them.
    let (r, plan) = plan_json(repo.path(), &config);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(pending(&plan) > 40, "{plan:#}");
    let (r, applied) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(r.code, 0, "stderr: {}\n{applied:#}", r.stderr);
    assert_eq!(applied["summary"]["applied"], 13, "{applied:#}");
    let (r, again) = plan_json(repo.path(), &config);
    assert_eq!(
        (r.code, pending(&again)),
        (0, 0),
        "a second plan is empty: {again:#}"
    );

    // PostgreSQL: schema (mt), database (st), roles with login matching the lifecycle.
    let (t5001, t5002, t6003, t7002, t7003) = (
        id("t_5001"),
        id("t_5002"),
        id("t_6003"),
        id("t_7002"),
        id("t_7003"),
    );
    let shared = PgConnection::connect(&shared_url).await;
    let mut shared = shared.expect("shared db");
    let schema: (String,) = sqlx::query_as(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
    )
    .bind(format!("{t5001}_dev"))
    .fetch_one(&mut shared)
    .await
    .expect("mt schema exists");
    assert_eq!(schema.0, format!("{t5001}_dev"), "owned by its own role");
    let db: (String,) =
        sqlx::query_as("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1")
            .bind(format!("{t5002}_prod"))
            .fetch_one(&mut shared)
            .await
            .expect("st database exists");
    assert_eq!(db.0, format!("{t5002}_prod"));
    let roles: Vec<(String, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname LIKE $1 ORDER BY 1",
    )
    .bind(format!("t\\_%{tag}\\_%"))
    .fetch_all(&mut shared)
    .await
    .expect("roles");
    let login: HashMap<String, bool> = roles.into_iter().collect();
    assert_eq!(login.get(&format!("{t5001}_dev")), Some(&true));
    assert_eq!(
        login.get(&format!("{t6003}_dev")),
        Some(&false),
        "Suspended: NOLOGIN"
    );
    assert!(
        !login.keys().any(|r| r.starts_with(&id("t_6004"))),
        "confirmed Deleted: nothing"
    );

    // Lifecycle has its real effect: the suspended tenant's role cannot log in.
    let denied = PgConnection::connect(&crate::support::pg_url(
        &admin_url,
        &format!("{t6003}_dev"),
        &shared_db,
    ))
    .await
    .expect_err("a suspended role cannot log in");
    assert!(
        denied.to_string().contains("not permitted to log in"),
        "{denied}"
    );

    // Isolation boundary: tenant A's role cannot read tenant B's schema.
    let a = format!("{t5001}_dev");
    let mut as_a = PgConnection::connect(&crate::support::pg_url(&admin_url, &a, &shared_db))
        .await
        .expect("tenant A logs in");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{a}\".secrets (v text)"
    )))
    .execute(&mut as_a)
    .await
    .expect("A writes its own schema");
    let b = format!("{t7002}_prod");
    let mut as_b = PgConnection::connect(&crate::support::pg_url(&admin_url, &b, &shared_db))
        .await
        .expect("tenant B logs in");
    let err = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM \"{a}\".secrets"
    )))
    .fetch_all(&mut as_b)
    .await
    .expect_err("B cannot read A");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // S3: dedicated buckets with tags, lifecycle and versioning; mt prefixes in the shared bucket.
    let s3 = s3_client(&env, "ap-south-1");
    let buckets: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .expect("ListBuckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    let bucket = format!("{tag}-ap-{}-prod", t5002.replace('_', "-"));
    assert!(buckets.contains(&bucket), "{bucket} in {buckets:?}");
    assert!(buckets.contains(&format!("{tag}-ap-shared")));
    let tags = s3
        .get_bucket_tagging()
        .bucket(&bucket)
        .send()
        .await
        .expect("tagging");
    let tags: HashMap<&str, &str> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags.get("tenancy.dev/tenant"), Some(&t5002.as_str()));
    assert_eq!(tags.get("tenancy.dev/profile"), Some(&"st-dedicated"));
    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&bucket)
        .send()
        .await
        .expect("lifecycle");
    assert_eq!(
        lifecycle.rules()[0].expiration().and_then(|e| e.days()),
        Some(1825)
    );
    let registry = s3
        .get_object()
        .bucket(format!("{tag}-ap-shared"))
        .key(format!(".tenancy/tenants/{t5001}.json"))
        .send()
        .await
        .expect("the mt tenant's registry of prefixes");
    let registry: serde_json::Value =
        serde_json::from_slice(&registry.body.collect().await.expect("body").into_bytes())
            .expect("json");
    let dev = &registry["prefixes"][format!("tenants/{t5001}/dev/")];
    assert_eq!(dev["retentionDays"], 30, "{registry:#}");
    assert_eq!(dev["tags"]["tenancy.dev/tenant"], t5001.as_str());

    // Kafka, both brokers: the st topic on noida-db (ap) and on tansu (us), the shared topic.
    let noida = &env["TENANCY_TEST_KAFKA_NOIDA"];
    let tansu = &env["TENANCY_TEST_KAFKA_TANSU"];
    let t5002_topic = format!("{tag}ap-{t5002}_prod");
    let (partitions, retention) = topic(noida, &t5002_topic)
        .await
        .expect("st topic on noida-db");
    let planned = plan["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .flat_map(|t| t["changes"].as_array().cloned().unwrap_or_default())
        .find(|c| c["resource"] == format!("topic {t5002_topic}"))
        .expect("topic in the plan");
    let field = |name: &str| {
        planned["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["field"] == name)
            .and_then(|f| f["after"].as_str())
            .expect("field")
            .to_owned()
    };
    assert_eq!(partitions.to_string(), field("partitions"));
    assert_eq!(retention.as_deref(), Some(field("retention.ms").as_str()));
    assert_eq!(
        topic(noida, &format!("{tag}ap-shared")).await.map(|t| t.0),
        Some(12)
    );
    let (partitions, retention) = topic(tansu, &format!("{tag}us-{t7003}_prod"))
        .await
        .expect("st topic on tansu");
    assert!(partitions >= 1);
    assert_eq!(
        retention.as_deref(),
        Some("2592000000"),
        "enterprise plan retention on tansu"
    );

    // Manual drift in every plane: a role dropped, a tag deleted, a topic's retention altered.
    let dropped = format!("{t5001}_prod");
    for sql in [
        format!("REASSIGN OWNED BY \"{dropped}\" TO postgres"),
        format!("DROP OWNED BY \"{dropped}\""),
        format!("DROP ROLE \"{dropped}\""),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut shared)
            .await
            .expect("drift sql");
    }
    let mut kept = s3
        .get_bucket_tagging()
        .bucket(&bucket)
        .send()
        .await
        .expect("tags")
        .tag_set()
        .to_vec();
    kept.retain(|t| t.key() != "tenancy.dev/organization");
    s3.put_bucket_tagging()
        .bucket(&bucket)
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .set_tag_set(Some(kept))
                .build()
                .expect("tagging"),
        )
        .send()
        .await
        .expect("delete a tag");
    {
        use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
        let alter =
            AlterConfig::new(ResourceSpecifier::Topic(&t5002_topic)).set("retention.ms", "1000");
        kafka_admin(noida)
            .alter_configs([&alter], &AdminOptions::new())
            .await
            .expect("alter retention");
    }

    // --detect-only reports all three and corrects none (exit 4).
    let (r, detected) = apply_json(repo.path(), &config, &["--detect-only"]);
    assert_eq!(r.code, 4, "stderr: {}\n{detected:#}", r.stderr);
    for t in [&t5001, &t5002] {
        assert_eq!(outcome(&detected, t)["outcome"], "drifted", "{detected:#}");
    }
    let still_gone: Option<(String,)> =
        sqlx::query_as("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
            .bind(&dropped)
            .fetch_optional(&mut shared)
            .await
            .expect("roles");
    assert!(still_gone.is_none(), "detect-only changed nothing");
    assert_eq!(
        topic(noida, &t5002_topic)
            .await
            .and_then(|t| t.1)
            .as_deref(),
        Some("1000")
    );

    // apply corrects it, and the next plan is empty again.
    let (r, fixed) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(r.code, 0, "stderr: {}\n{fixed:#}", r.stderr);
    assert!(
        outcome(&fixed, &t5001)["applied"].as_u64() >= Some(2),
        "{fixed:#}"
    );
    let (_, after) = plan_json(repo.path(), &config);
    assert_eq!(pending(&after), 0, "{after:#}");
    let tags = s3
        .get_bucket_tagging()
        .bucket(&bucket)
        .send()
        .await
        .expect("tagging");
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == "tenancy.dev/organization")
    );
    assert_eq!(
        topic(noida, &t5002_topic).await.and_then(|t| t.1),
        Some(field("retention.ms"))
    );

    // The state store holds each tenant's last applied commit and its policy decisions.
    let store = tenancy::store::Store::open(&format!(
        "sqlite://{}",
        work.path().join("state.db").display()
    ))
    .await
    .expect("store");
    let head = repo.head();
    let status = store
        .status(&t5001)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(
        (
            status.status.as_str(),
            status.last_applied_commit.as_deref()
        ),
        ("synced", Some(head.as_str()))
    );
    let decisions = store.decisions(&t5001).await.expect("decisions");
    assert!(
        decisions
            .iter()
            .any(|d| d.policy == "residency" && d.commit_sha == head),
        "{decisions:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_down_fails_only_its_tenants_and_a_rerun_completes() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let tag = unique_tag();
    let (repo, ids) = tagged_examples(&tag);
    let id = |n: &str| ids.iter().find(|i| i.starts_with(n)).expect("id").clone();
    let work = tempfile::tempdir().expect("tmp");
    // eu-central-1's S3 endpoint is a closed port: its tenants (t_6001, t_6002) cannot be served.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let config = write_config(work.path(), &env, &tag, None, Some(("eu-central-1", &dead)));
    let (r, report) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(
        r.code, 3,
        "partial: some tenants failed\nstderr: {}\n{report:#}",
        r.stderr
    );
    for t in [id("t_6001"), id("t_6002")] {
        let o = outcome(&report, &t);
        assert_eq!(o["outcome"], "failed", "{o:#}");
        let reason = o["reason"].as_str().expect("reason");
        assert!(
            reason.contains("s3-eu-central-1") || reason.contains("dispatch failure"),
            "{reason}"
        );
        assert_eq!(
            o["applied"], 0,
            "nothing half-applied: no plane was touched for {t}"
        );
    }
    assert_eq!(outcome(&report, &id("t_5001"))["outcome"], "applied");
    assert_eq!(report["summary"]["failed"], 2);
    // Nothing of the failed tenants was created in the embedded database plane either.
    let db_dir = work
        .path()
        .join("embedded/databases/pg-eu-central-1-shared");
    assert!(!db_dir.exists() || std::fs::read_dir(&db_dir).expect("dir").next().is_none());

    let store = tenancy::store::Store::open(&format!(
        "sqlite://{}",
        work.path().join("state.db").display()
    ))
    .await
    .expect("store");
    let s = store
        .status(&id("t_6001"))
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(s.status.as_str(), "failed");
    assert!(
        s.last_applied_commit.is_none() && s.error.is_some(),
        "{s:?}"
    );

    // The service is back: a rerun completes and records the commit.
    let config = write_config(work.path(), &env, &tag, None, None);
    let (r, report) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(r.code, 0, "stderr: {}\n{report:#}", r.stderr);
    assert_eq!(outcome(&report, &id("t_6001"))["outcome"], "applied");
    let s = store
        .status(&id("t_6001"))
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(s.status.as_str(), "synced");
    assert!(
        s.last_applied_commit.is_some() && s.error.is_none(),
        "{s:?}"
    );
    let (_, plan) = plan_json(repo.path(), &config);
    assert_eq!(pending(&plan), 0, "{plan:#}");
}

/// With no targets configured the whole loop runs on embedded planes; `plan --base --head`
/// plans only the tenants a commit changed, as a pull-request comment.
#[test]
fn embedded_loop_and_pull_request_plans() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let (r, report) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(report["summary"]["applied"], 13);
    assert!(
        work.path().join("data/state.db").is_file(),
        "default state store"
    );
    assert!(
        work.path()
            .join("data/databases/pg-ap-south-1-shared/t_5001_dev.sqlite")
            .is_file()
    );
    let (r, plan) = plan_json(repo.path(), &config);
    assert_eq!((r.code, pending(&plan)), (0, 0), "{plan:#}");
    let planes: Vec<&str> = plan["planes"]
        .as_array()
        .expect("planes")
        .iter()
        .filter_map(|p| {
            p["skipped"]
                .as_str()
                .map(|_| p["plane"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        planes,
        ["kafka", "redis"],
        "the plan says Kafka and Redis are not managed (no embedded default)"
    );

    // A pull request suspends t_5001: only t_5001 is planned, and the markdown says what changes.
    let base = repo.head();
    let path = repo.path().join("org_acme/t_5001.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("lifecycle: Active", "lifecycle: Suspended"),
    )
    .expect("write");
    repo.commit("suspend t_5001");
    let r = run(&[
        "plan",
        "--repo",
        repo.path().to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
        "--policies",
        &bundle(),
        "--base",
        &base,
        "--head",
        "HEAD",
        "--output",
        "markdown",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("✅ can be applied"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("<code>t_5001</code> (Suspended) — 4 change(s)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("writable: true → false"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("t_5002"),
        "unchanged tenants are not planned:\n{}",
        r.stdout
    );

    // A policy denial blocks the tenant: the plan says why and exits 1; apply keeps its state.
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        text.replace("preferred: ap-south-1", "preferred: us-east-1")
            .replace("allowed: [ap-south-1]", "allowed: [ap-south-1, us-east-1]"),
    )
    .expect("write");
    repo.commit("move t_5001 out of its residency zone");
    let (r, plan) = plan_json(repo.path(), &config);
    assert_eq!(r.code, 1, "{plan:#}");
    let t = plan["tenants"]
        .as_array()
        .expect("t")
        .iter()
        .find(|t| t["tenant"] == "t_5001")
        .expect("t_5001");
    assert!(
        !t["blocked"].as_array().expect("blocked").is_empty(),
        "{t:#}"
    );
    let (r, report) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(r.code, 1, "{report:#}");
    assert_eq!(outcome(&report, "t_5001")["outcome"], "blocked");
    assert!(
        work.path()
            .join("data/databases/pg-ap-south-1-shared/t_5001_dev.sqlite")
            .is_file(),
        "kept"
    );

    // `tenancy status` reads the outcomes back.
    let cfg = config.to_str().expect("utf-8");
    let r = run(&[
        "status", "--config", cfg, "--output", "json", "t_5001", "t_5002", "t_nobody",
    ]);
    assert_eq!(r.code, 1, "t_nobody was never reconciled: {}", r.stdout);
    let status = r.json();
    let rows = status["tenants"].as_array().expect("tenants");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["status"], "blocked");
    assert!(
        rows[0]["blocked_reason"]
            .as_str()
            .expect("reason")
            .contains("residency")
    );
    assert_eq!(rows[1]["status"], "synced");
    assert_eq!(status["unknown"][0], "t_nobody");
    let r = run(&["status", "--config", cfg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("t_5002") && l.contains("synced")),
        "{}",
        r.stdout
    );

    // apply without --yes and without a terminal refuses to act.
    let r = run(&[
        "apply",
        "--repo",
        repo.path().to_str().expect("utf-8"),
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
}

/// A TCP proxy in front of a service, which the test can take down: established connections
/// are cut and new ones refused, as when a service dies in the middle of an apply.
struct Proxy {
    addr: std::net::SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream: std::net::SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (down, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut stop = watch.clone();
            loop {
                let (mut client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => return },
                    _ = stop.changed() => return, // the listener is dropped: connections refused
                };
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {} // both streams dropped: the connection is cut
                    }
                });
            }
        });
        Proxy { addr, down }
    }

    fn take_down(&self) {
        let _ = self.down.send(true);
    }
}

/// The object store dies between plan and apply: tenants whose database changes were already
/// made stop at their first object-store change, each with its reason recorded; tenants with
/// nothing to do there complete; nothing is lost, and a rerun against the service finishes
/// exactly the remaining work.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_dying_mid_apply_is_recorded_per_tenant_and_a_rerun_finishes() {
    use tenancy::reconcile::{self, Inputs, Outcome, Planes};
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let tag = unique_tag();
    let (repo, ids) = tagged_examples(&tag);
    let work = tempfile::tempdir().expect("tmp");
    let proxy = Proxy::start(&env["TENANCY_TEST_S3_URL"]).await;
    let mut via_proxy = env.clone();
    via_proxy.insert(
        "TENANCY_TEST_S3_URL".into(),
        format!("http://{}", proxy.addr),
    );
    let config_file = write_config(work.path(), &via_proxy, &tag, None, None);
    unsafe { std::env::set_var("IT_S3_KEY", "test") };
    let config = tenancy::config::Config::load(Some(&config_file)).expect("config");
    let store = tenancy::store::Store::open(&config.state_url())
        .await
        .expect("store");
    let inputs = Inputs {
        bundle: Some(PathBuf::from(bundle())),
        previous: vec![reconcile::applied_baseline(&store).await.expect("baseline")],
        ..Inputs::new(repo.path(), Some("HEAD"))
    };
    crate::support::use_tenancy_compiler();
    let evaluation = reconcile::evaluate(&inputs).expect("evaluate");
    let planes = Planes::from_config(&config).expect("planes");
    let plan = reconcile::plan(&planes, &evaluation, None).await;
    assert_eq!(plan.errors(), 0, "planned through the proxy");

    proxy.take_down();
    let report = reconcile::apply(
        &planes,
        &evaluation,
        &plan,
        &store,
        &Default::default(),
        4,
        &|_| {},
    )
    .await
    .expect("apply records outcomes");
    let t5002 = ids.iter().find(|i| i.starts_with("t_5002")).expect("id");
    let failed = report
        .tenants
        .iter()
        .find(|t| &t.tenant == t5002)
        .expect("t_5002");
    assert_eq!(failed.outcome, Outcome::Failed, "{failed:?}");
    assert!(
        failed.applied >= 2,
        "its database changes were made first: {failed:?}"
    );
    let reason = failed.reason.as_deref().expect("reason");
    assert!(reason.contains("object-store"), "{reason}");
    let status = store
        .status(t5002)
        .await
        .expect("status")
        .expect("recorded");
    assert_eq!(status.status.as_str(), "failed");
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("object-store")),
        "{status:?}"
    );
    assert!(status.last_applied_commit.is_none(), "{status:?}");
    let draft = ids
        .iter()
        .find(|i| i.starts_with("t_7004"))
        .expect("Draft tenant");
    let untouched = report
        .tenants
        .iter()
        .find(|t| &t.tenant == draft)
        .expect("t_7004");
    assert_eq!(
        untouched.outcome,
        Outcome::Applied,
        "nothing to do is done: {untouched:?}"
    );

    // The service is back (the proxy is bypassed): the rerun plans only the remaining work.
    let config_file = write_config(work.path(), &env, &tag, None, None);
    let config = tenancy::config::Config::load(Some(&config_file)).expect("config");
    let planes = Planes::from_config(&config).expect("planes");
    let rest = reconcile::plan(&planes, &evaluation, None).await;
    let t = rest
        .tenants
        .iter()
        .find(|t| &t.tenant == t5002)
        .expect("t_5002");
    assert!(
        !t.changes.is_empty() && t.changes.iter().all(|c| c.plane == "object-store"),
        "{t:#?}"
    );
    let report = reconcile::apply(
        &planes,
        &evaluation,
        &rest,
        &store,
        &Default::default(),
        4,
        &|_| {},
    )
    .await
    .expect("apply");
    assert_eq!(report.count(Outcome::Failed), 0, "{report:#?}");
    assert_eq!(
        store.status(t5002).await.expect("s").expect("s").status,
        tenancy::store::ReconcileStatus::Synced
    );
    assert_eq!(
        reconcile::plan(&planes, &evaluation, None).await.changes(),
        0
    );
}

/// `plan --output json` and `apply --output json` are published formats: every output, with
/// changes, placements, a blocked tenant and findings, matches schemas/plan-report.schema.json
/// and schemas/apply-report.schema.json (which share validate's finding).
#[test]
fn plan_and_apply_json_match_their_published_schemas() {
    let repo = TestRepo::with_examples();
    repo.edit(
        "org_globex/t_6002.yaml",
        "preferred: eu-central-1",
        "preferred: us-east-1",
    );
    repo.commit("t_6002 leaves its residency zone");
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let schema = |name: &str| -> serde_json::Value {
        let path = workspace_root().join("schemas").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("json")
    };
    let findings = schema("validate-report.schema.json");
    let registry = jsonschema::Registry::new()
        .add(
            findings["$id"].as_str().expect("$id"),
            jsonschema::Resource::from_contents(findings.clone()),
        )
        .and_then(|r| r.prepare())
        .expect("registry");
    let errors = |name: &str, output: &serde_json::Value| -> Vec<String> {
        jsonschema::draft202012::options()
            .with_registry(&registry)
            .build(&schema(name))
            .expect("schema compiles")
            .iter_errors(output)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    };
    let check = |name: &str, output: &serde_json::Value| {
        let found = errors(name, output);
        assert!(found.is_empty(), "{name}: {found:#?}");
    };

    let (run, plan) = plan_json(repo.path(), &config);
    assert_eq!(run.code, 1, "t_6002 is refused: {}", run.stderr);
    check("plan-report.schema.json", &plan);
    let t6002 = plan["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == "t_6002")
        .expect("t_6002");
    assert!(t6002["blocked"].as_array().is_some_and(|b| !b.is_empty()));
    assert!(plan["summary"]["create"].as_u64().is_some_and(|n| n > 0));
    assert!(plan["findings"].as_array().is_some_and(|f| !f.is_empty()));
    // The schema says something: an unknown op, or a field it does not document, fails it.
    let mut wrong = plan.clone();
    wrong["tenants"][0]["changes"][0]["op"] = "explode".into();
    wrong["tenants"][0]["changes"][0]["desired"] = serde_json::json!({});
    assert_eq!(errors("plan-report.schema.json", &wrong).len(), 2);

    let (run, report) = apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    check("apply-report.schema.json", &report);
    assert_eq!(outcome(&report, "t_6002")["outcome"], "blocked");
    assert_eq!(report["summary"]["blocked"], 1);
    // After apply, a plan with nothing to do still matches.
    let (_, again) = plan_json(repo.path(), &config);
    check("plan-report.schema.json", &again);
    assert_eq!(pending(&again), 0);
}
