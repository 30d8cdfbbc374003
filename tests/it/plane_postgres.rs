//! The PostgreSQL plane against the real PostgreSQL from scripts/services.sh: resources appear
//! in the catalogs, a second plan is empty, drift is found and corrected, one tenant's role
//! cannot read another's data, and lifecycle has real effects.

use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;
use tenancy_plane::{Lifecycle, Op, Placement, Plane, Profile, TenantEnv};
use tenancy_plane_postgres::{PostgresConfig, PostgresPlane};

const TARGET: &str = "pg-test-shared";

fn tenant_env(tenant: &str, env: &str, profile: Profile) -> TenantEnv {
    TenantEnv {
        tenant: tenant.into(),
        environment: env.into(),
        organization: "org_acme".into(),
        profile,
        lifecycle: Lifecycle::Active,
        placement: Placement {
            region: "ap-south-1".into(),
            target: TARGET.into(),
        },
        retention_days: None,
        encryption_key: None,
        storage_gib: Some(10),
        concurrent_jobs: Some(3),
        options: serde_json::Value::Null,
    }
}

async fn converge(plane: &PostgresPlane, desired: &[TenantEnv]) -> Vec<tenancy_plane::Change> {
    tenancy_plane::converge(plane, desired)
        .await
        .unwrap_or_else(|e| panic!("converge: {e}"))
}

#[tokio::test]
async fn schemas_databases_and_roles_converge_and_isolate_tenants() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let admin_url = env["TENANCY_TEST_PG_URL"].clone();
    let pid = std::process::id();
    let shared = format!("tenancy_plane_{pid}");
    let mut admin = PgConnection::connect(&admin_url).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {shared}")))
        .execute(&mut admin)
        .await
        .expect("shared db");
    let shared_url = crate::support::pg_url(&admin_url, "postgres", &shared);
    let plane = PostgresPlane::new(PostgresConfig {
        targets: BTreeMap::from([(TARGET.to_owned(), shared_url.clone())]),
        default_connection_limit: 5,
    });

    let (a, b, c) = (format!("ta{pid}"), format!("tb{pid}"), format!("tc{pid}"));
    let mut desired = vec![
        tenant_env(&a, "dev", Profile::MtStandard),
        tenant_env(&b, "dev", Profile::MtStandard),
        tenant_env(&c, "prod", Profile::StDedicated),
    ];
    let first = converge(&plane, &desired).await;
    assert_eq!(first.len(), 6, "{first:#?}");
    assert!(first.iter().all(|c| c.op == Op::Create));
    assert!(
        plane.plan(&desired).await.expect("plan").is_empty(),
        "a second plan is empty"
    );

    // The catalogs say so.
    let mut shared_conn = PgConnection::connect(&shared_url).await.expect("shared");
    let (a_dev, b_dev, c_prod) = (format!("{a}_dev"), format!("{b}_dev"), format!("{c}_prod"));
    let owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1")
            .bind(&a_dev)
            .fetch_one(&mut shared_conn)
            .await
            .expect("schema exists");
    assert_eq!(owner, a_dev);
    let (login, limit): (bool, i32) =
        sqlx::query_as("SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1")
            .bind(&a_dev)
            .fetch_one(&mut admin)
            .await
            .expect("role exists");
    assert!(login);
    assert_eq!(limit, 6, "2 connections per concurrent job");
    let db_owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1")
            .bind(&c_prod)
            .fetch_one(&mut admin)
            .await
            .expect("database exists");
    assert_eq!(db_owner, c_prod);

    // Isolation: tenant A's role works in its schema and is refused everywhere else.
    let mut as_a = PgConnection::connect(&crate::support::pg_url(&admin_url, &a_dev, &shared))
        .await
        .expect("A logs in");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{a_dev}\".secrets (v text)"
    )))
    .execute(&mut as_a)
    .await
    .expect("own schema");
    let mut as_b = PgConnection::connect(&crate::support::pg_url(&admin_url, &b_dev, &shared))
        .await
        .expect("B logs in");
    let denied = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM \"{a_dev}\".secrets"
    )))
    .execute(&mut as_b)
    .await
    .expect_err("B reads A");
    assert_eq!(
        denied.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{denied}"
    );
    let denied = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{a_dev}\".planted (v text)"
    )))
    .execute(&mut as_b)
    .await
    .expect_err("B writes A");
    assert_eq!(
        denied.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{denied}"
    );
    let err = PgConnection::connect(&crate::support::pg_url(&admin_url, &a_dev, &c_prod))
        .await
        .expect_err("A connects to C's database");
    assert!(
        err.to_string().contains("permission denied for database"),
        "{err}"
    );

    // Drift: a connection limit changed by hand and PUBLIC granted usage are found and corrected.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE \"{b_dev}\" CONNECTION LIMIT 99"
    )))
    .execute(&mut admin)
    .await
    .expect("drift");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT USAGE ON SCHEMA \"{b_dev}\" TO PUBLIC"
    )))
    .execute(&mut shared_conn)
    .await
    .expect("drift");
    let drift = plane.plan(&desired).await.expect("plan");
    let fields: Vec<(String, String)> = drift
        .iter()
        .flat_map(|c| {
            c.fields
                .iter()
                .map(move |f| (c.resource.clone(), f.field.clone()))
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            (format!("role {b_dev}"), "connectionLimit".into()),
            (format!("schema {b_dev}"), "publicAccess".into())
        ]
    );
    converge(&plane, &desired).await;
    assert!(plane.plan(&desired).await.expect("plan").is_empty());

    // Suspension: the role can no longer log in and its open session is terminated.
    desired[0].lifecycle = Lifecycle::Suspended;
    let suspend = converge(&plane, &desired).await;
    assert_eq!(suspend.len(), 1);
    assert_eq!(suspend[0].fields[0].field, "login");
    assert!(
        sqlx::query("SELECT 1").execute(&mut as_a).await.is_err(),
        "the open session was terminated"
    );
    let err = PgConnection::connect(&crate::support::pg_url(&admin_url, &a_dev, &shared))
        .await
        .expect_err("suspended login");
    assert!(err.to_string().contains("not permitted to log in"), "{err}");
    desired[0].lifecycle = Lifecycle::Active;
    converge(&plane, &desired).await;
    PgConnection::connect(&crate::support::pg_url(&admin_url, &a_dev, &shared))
        .await
        .expect("resumed tenant logs in again");

    // Confirmed deletion drops the database and the role; deleting again is a no-op.
    drop(as_b);
    for d in &mut desired {
        d.lifecycle = Lifecycle::Deleted;
    }
    let deleted = converge(&plane, &desired).await;
    assert!(deleted.iter().all(|c| c.op == Op::Delete));
    assert_eq!(deleted.len(), 6);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
        .bind(vec![a_dev, b_dev, c_prod])
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(left, 0);
    assert!(plane.plan(&desired).await.expect("plan").is_empty());
    drop(shared_conn);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {shared} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("cleanup");
}

#[tokio::test]
async fn an_unreachable_target_is_a_clear_error() {
    let plane = PostgresPlane::new(PostgresConfig {
        targets: BTreeMap::from([(
            TARGET.to_owned(),
            "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
        )]),
        default_connection_limit: 5,
    });
    let err = plane
        .plan(&[tenant_env("t_down", "dev", Profile::MtStandard)])
        .await
        .expect_err("down");
    assert!(err.to_string().contains("target `pg-test-shared`"), "{err}");
    let unknown = PostgresPlane::new(PostgresConfig::default());
    let err = unknown
        .plan(&[tenant_env("t_down", "dev", Profile::MtStandard)])
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("not configured"), "{err}");
}
