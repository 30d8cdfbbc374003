//! The state store against both backends: a SQLite file and the real PostgreSQL from
//! scripts/services.sh (a fresh database per test).

use tenancy::store::{DecisionRecord, Status, Store, StoreError, TenantRecord};

fn example_tenants() -> Vec<tenancy::manifest::Tenant> {
    crate::support::example_catalog()
        .tenants
        .into_iter()
        .map(|t| std::sync::Arc::unwrap_or_clone(t.value))
        .collect()
}

/// A fresh PostgreSQL database on the test cluster, or None when services are skipped.
async fn postgres_url(name: &str) -> Option<String> {
    let env = crate::services::endpoints()?;
    let admin = env["TENANCY_TEST_PG_URL"].clone();
    let db = format!("tenancy_it_{name}_{}", std::process::id());
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut conn)
        .await
        .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .expect("create");
    Some(format!(
        "{}/{db}",
        admin.rsplit_once('/').expect("url has a database").0
    ))
}

async fn backends(name: &str) -> Vec<(Store, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("state.db").display()
    ))
    .await
    .expect("sqlite");
    let mut out = vec![(sqlite, dir)];
    if let Some(url) = postgres_url(name).await {
        out.push((
            Store::open(&url).await.expect("postgres"),
            tempfile::tempdir().expect("tmp"),
        ));
    }
    out
}

#[tokio::test]
async fn tenants_round_trip_with_optimistic_concurrency() {
    let tenants = example_tenants();
    for (store, _dir) in backends("tenants").await {
        let name = format!("{:?}", store.dialect());
        for t in &tenants {
            assert_eq!(
                store
                    .put_tenant(&TenantRecord::from_manifest(t), None)
                    .await
                    .expect("insert"),
                1,
                "{name}"
            );
        }
        let all = store.tenants().await.expect("list");
        assert_eq!(all.len(), tenants.len(), "{name}");
        assert!(
            all.windows(2).all(|w| w[0].tenant_id < w[1].tenant_id),
            "{name}: sorted by id"
        );

        let t5001 = store.tenant("t_5001").await.expect("get").expect("present");
        assert_eq!(t5001.state, "Active");
        assert_eq!(t5001.profile, "mt-standard");
        assert_eq!(t5001.region, "ap-south-1");
        assert_eq!(
            t5001.quotas["storageGiB"], 200,
            "{name}: JSON columns round-trip"
        );
        assert_eq!(t5001.manifest["spec"]["plan"], "starter");

        // Update with the version read: accepted, version 2.
        let mut changed = t5001.clone();
        changed.state = "Suspended".into();
        assert_eq!(
            store.put_tenant(&changed, Some(1)).await.expect("update"),
            2,
            "{name}"
        );
        // A writer that read version 1 before that update loses.
        match store.put_tenant(&t5001, Some(1)).await {
            Err(StoreError::Conflict {
                expected: Some(1),
                found: Some(2),
                ..
            }) => {}
            other => panic!("{name}: expected a conflict, got {other:?}"),
        }
        // Creating a tenant that exists is a conflict too.
        assert!(
            matches!(
                store.put_tenant(&t5001, None).await,
                Err(StoreError::Conflict { .. })
            ),
            "{name}"
        );
        assert_eq!(
            store
                .tenant("t_5001")
                .await
                .expect("get")
                .expect("present")
                .state,
            "Suspended",
            "{name}"
        );
        assert!(store.tenant("t_nope").await.expect("get").is_none());
    }
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    let tenant = example_tenants().remove(0);
    for (store, _dir) in backends("race").await {
        store
            .put_tenant(&TenantRecord::from_manifest(&tenant), None)
            .await
            .expect("insert");
        // Eight writers each retry until their increment lands.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            let id = tenant.metadata.id.to_string();
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut current = store.tenant(&id).await.expect("get").expect("present");
                    current.billing = serde_json::json!({ "writer": w });
                    match store.put_tenant(&current, Some(current.version)).await {
                        Ok(v) => return v,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.expect("task"));
        }
        versions.sort();
        assert_eq!(
            versions,
            (2..=9).collect::<Vec<i64>>(),
            "{:?}: every write got its own version",
            store.dialect()
        );
    }
}

#[tokio::test]
async fn status_and_decisions_are_recorded() {
    for (store, _dir) in backends("status").await {
        let name = format!("{:?}", store.dialect());
        let applied = Status {
            tenant_id: "t_5001".into(),
            status: tenancy::store::ReconcileStatus::Synced,
            last_applied_commit: Some("a".repeat(40)),
            last_attempted_commit: Some("a".repeat(40)),
            blocked_reason: None,
            error: None,
            updated_at: 1,
            manifest_file: Some("org_acme/t_5001.yaml".into()),
        };
        store.set_status(&applied).await.expect("status");
        // A later refused commit keeps the last applied one and says why.
        let blocked = Status {
            status: tenancy::store::ReconcileStatus::Blocked,
            last_applied_commit: None,
            last_attempted_commit: Some("b".repeat(40)),
            blocked_reason: Some("encryption.kms-unavailable".into()),
            updated_at: 2,
            manifest_file: None,
            ..applied.clone()
        };
        store.set_status(&blocked).await.expect("status");
        let s = store
            .status("t_5001")
            .await
            .expect("read")
            .expect("present");
        assert_eq!(s.status, tenancy::store::ReconcileStatus::Blocked, "{name}");
        assert_eq!(
            s.manifest_file.as_deref(),
            Some("org_acme/t_5001.yaml"),
            "the file is kept when a write does not say: {name}"
        );
        assert_eq!(
            s.last_applied_commit.as_deref(),
            Some("a".repeat(40).as_str()),
            "{name}"
        );
        assert_eq!(
            s.last_attempted_commit.as_deref(),
            Some("b".repeat(40).as_str())
        );
        assert_eq!(
            s.blocked_reason.as_deref(),
            Some("encryption.kms-unavailable")
        );

        let decision = DecisionRecord {
            tenant_id: "t_5001".into(),
            commit_sha: "b".repeat(40),
            operation: "update".into(),
            policy: "encryption".into(),
            digest: "c".repeat(64),
            mode: "enforce".into(),
            blocks: true,
            verdicts: serde_json::json!([{ "rule": "encryption.kms-unavailable", "path": "/spec/policies/encryption" }]),
            failure: None,
            decided_at: 3,
            against: format!("last applied at {}", "a".repeat(40)),
        };
        store
            .record_decisions(std::slice::from_ref(&decision))
            .await
            .expect("record");
        store
            .record_decisions(std::slice::from_ref(&decision))
            .await
            .expect("record again is idempotent");
        let got = store.decisions("t_5001").await.expect("read");
        assert_eq!(got, vec![decision], "{name}");
    }
}

#[tokio::test]
async fn opening_is_idempotent_and_bad_urls_are_clear() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    Store::open(&url).await.expect("first open migrates");
    Store::open(&url)
        .await
        .expect("second open finds the migrations applied");
    let err = Store::open("mysql://x").await.err().expect("refused");
    assert!(
        err.to_string().contains("unsupported state store URL"),
        "{err}"
    );
}

/// Several openers of a fresh store at once (an apply and `tenancy events`, replicas of the
/// daemon) all migrate it: on SQLite they take turns under a lock file, on PostgreSQL under
/// sqlx's advisory lock. Without the lock file, a SQLite opener failed in one of the migrations
/// ("table outbox already exists") nearly every time.
#[tokio::test]
async fn openers_racing_on_a_fresh_store_all_succeed() {
    let dir = tempfile::tempdir().expect("tmp");
    for round in 0..3 {
        let mut urls = vec![format!(
            "sqlite://{}",
            dir.path().join(format!("state-{round}.db")).display()
        )];
        urls.extend(postgres_url(&format!("race{round}")).await);
        for url in urls {
            let opens = (0..8).map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::open(&url).await })
            });
            for open in futures_util::future::join_all(opens).await {
                let store = open
                    .expect("task")
                    .unwrap_or_else(|e| panic!("{url}, round {round}: {e}"));
                assert_eq!(store.pending_count().await.expect("query"), 0, "{url}");
            }
        }
    }
}

/// The outbox write is atomic with the state change, dedups by event id, numbers events per
/// tenant without gaps, and reads back in order — on both backends. A failing write (a
/// version conflict) leaves neither the status nor the events behind.
#[tokio::test]
async fn reconcile_records_are_atomic_with_their_events() {
    use tenancy::store::{AuditRecord, NewEvent, ReconcileRecord, TenantRecord};
    for (store, _dir) in backends("outbox").await {
        let name = format!("{:?}", store.dialect());
        let event = |id: &str, ty: &str| NewEvent {
            event_id: id.into(),
            tenant_id: "t_5001".into(),
            event_type: ty.into(),
            event: serde_json::json!({ "id": id, "type": ty, "tenantid": "t_5001" }),
        };
        let tenant = TenantRecord {
            tenant_id: "t_5001".into(),
            organization_id: "org_acme".into(),
            profile: "mt-standard".into(),
            state: "Active".into(),
            region: "ap-south-1".into(),
            plan: "starter".into(),
            quotas: serde_json::json!({}),
            policies: serde_json::json!({}),
            billing: serde_json::json!({}),
            manifest: serde_json::json!({ "v": 1 }),
            created_at: 0,
            updated_at: 0,
            version: 0,
        };
        let audit = AuditRecord {
            tenant_id: "t_5001".into(),
            event_type: "TENANCY_CREATED".into(),
            actor: "Dev <dev@example.com>".into(),
            target: "tenant/t_5001".into(),
            outcome: "applied".into(),
            commit_sha: Some("a".repeat(40)),
            payload: serde_json::json!({}),
            correlation_id: "c1".into(),
        };
        let first = ReconcileRecord {
            tenant: Some((tenant.clone(), None)),
            audit: vec![audit.clone()],
            events: vec![
                event("e1", "TENANCY_CREATED"),
                event("e2", "TENANCY_ACTIVATED"),
            ],
            ..Default::default()
        };
        let added = store.record_reconcile(&first).await.expect(&name);
        assert_eq!(
            added.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2],
            "{name}"
        );
        // The same record again (a retried run): no duplicate event, no duplicate audit entry.
        let again = ReconcileRecord {
            tenant: None,
            ..first.clone()
        };
        assert!(
            store
                .record_reconcile(&again)
                .await
                .expect(&name)
                .is_empty(),
            "{name}"
        );
        // A conflicting write rolls back everything in it, events included.
        let conflicting = ReconcileRecord {
            tenant: Some((tenant.clone(), Some(41))),
            events: vec![event("e3", "TENANCY_UPDATED")],
            ..Default::default()
        };
        assert!(
            store.record_reconcile(&conflicting).await.is_err(),
            "{name}"
        );
        let all = store.events(None, None, 100).await.expect(&name);
        assert_eq!(
            all.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"],
            "{name}"
        );
        assert_eq!(all[1].event["tenantsequence"], 2, "{name}");
        let next = ReconcileRecord {
            tenant: Some((tenant, Some(1))),
            events: vec![event("e3", "TENANCY_UPDATED")],
            ..Default::default()
        };
        assert_eq!(
            store.record_reconcile(&next).await.expect(&name)[0].sequence,
            3,
            "{name}"
        );
        let after = (all[1].created_at, all[1].tenant_id.clone(), all[1].sequence);
        let newer = store
            .events(Some("t_5001"), Some(after), 100)
            .await
            .expect(&name);
        assert_eq!(newer.len(), 1, "{name}: the cursor skips what was seen");
        assert_eq!(
            store.audit("t_5001").await.expect(&name),
            vec![audit],
            "{name}"
        );
    }
}

/// The API's list and lookup queries behave the same on both backends: filters, cursor pages,
/// usage idempotency, and the external-id lookup (dialect-specific JSON access).
#[tokio::test]
async fn api_queries_agree_on_both_backends() {
    let tenants = example_tenants();
    for (store, _dir) in backends("apiq").await {
        let name = format!("{:?}", store.dialect());
        for t in &tenants {
            store
                .put_tenant(&TenantRecord::from_manifest(t), None)
                .await
                .expect("insert");
        }
        let filter = tenancy::store::TenantFilter {
            organization: Some("org_acme".into()),
            ..Default::default()
        };
        let first = store.list_tenants(&filter, None, 2).await.expect("page");
        assert_eq!(first.len(), 2, "{name}");
        let rest = store
            .list_tenants(&filter, Some(&first[1].tenant_id), 100)
            .await
            .expect("page");
        assert!(
            rest.iter()
                .all(|t| t.organization_id == "org_acme" && t.tenant_id > first[1].tenant_id),
            "{name}"
        );
        let by = store
            .tenant_by_external_id("billing", "cus_5001")
            .await
            .expect("lookup");
        assert_eq!(by.map(|t| t.tenant_id).as_deref(), Some("t_5001"), "{name}");
        assert!(
            store
                .tenant_by_external_id("billing", "nope")
                .await
                .expect("lookup")
                .is_none()
        );
        let report = tenancy::store::UsageReport {
            idempotency_key: Some("k1".into()),
            tenant_id: "t_5001".into(),
            env: "prod".into(),
            resource: "storageGiBHours".into(),
            amount: 1.5,
            occurred_at: "2025-10-08T15:20:00Z".into(),
            reported_by: "it".into(),
            request_id: "r1".into(),
        };
        let id = match store.record_usage(&report).await.expect("usage") {
            tenancy::store::Recorded::New(id) => id,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            store.record_usage(&report).await.expect("again"),
            tenancy::store::Recorded::Replayed(id.clone()),
            "{name}"
        );
        let changed = tenancy::store::UsageReport {
            amount: 2.0,
            ..report.clone()
        };
        assert_eq!(
            store.record_usage(&changed).await.expect("changed"),
            tenancy::store::Recorded::Conflict(id.clone()),
            "{name}"
        );
        assert_eq!(
            store.usage_count("t_5001").await.expect("count"),
            1,
            "{name}"
        );
        // Keys are scoped to the tenant and the caller: another tenant's or another caller's
        // use of the same key is a report of its own, never a conflict.
        for other in [
            tenancy::store::UsageReport {
                tenant_id: "t_6001".into(),
                amount: 9.0,
                ..report.clone()
            },
            tenancy::store::UsageReport {
                reported_by: "someone-else".into(),
                amount: 9.0,
                ..report.clone()
            },
        ] {
            assert!(
                matches!(
                    store.record_usage(&other).await.expect("scoped"),
                    tenancy::store::Recorded::New(other_id) if other_id != id
                ),
                "{name}"
            );
        }
        // No key: the report's natural key (tenant, env, resource, time) deduplicates.
        let unkeyed = tenancy::store::UsageReport {
            idempotency_key: None,
            occurred_at: "2025-10-08T16:20:00Z".into(),
            ..report.clone()
        };
        let first = match store.record_usage(&unkeyed).await.expect("unkeyed") {
            tenancy::store::Recorded::New(id) => id,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(
            store.record_usage(&unkeyed).await.expect("unkeyed again"),
            tenancy::store::Recorded::Replayed(first.clone())
        );
        assert_eq!(
            store
                .record_usage(&tenancy::store::UsageReport {
                    amount: 3.0,
                    ..unkeyed
                })
                .await
                .expect("unkeyed, another amount"),
            tenancy::store::Recorded::Conflict(first)
        );
    }
}
