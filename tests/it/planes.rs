//! The S3 and Kafka planes against the real services, through the plane interface only:
//! partitions only grow (a decrease is refused, as Strimzi does), tansu's missing
//! CreatePartitions is named, and — as a property over random tenant sets and lifecycle
//! transitions — every plane's `apply(plan(desired))` is followed by an empty plan.

use std::collections::{BTreeMap, HashMap};
use tenancy_plane::{Lifecycle, Op, Placement, Plane, PlaneError, Profile, TenantEnv};
use tenancy_plane_kafka::{KafkaConfig, KafkaPlane, KafkaTarget};
use tenancy_plane_postgres::{PostgresConfig, PostgresPlane};
use tenancy_plane_s3::{S3Config, S3Plane, S3Target};

fn env(
    tenant: &str,
    environment: &str,
    profile: Profile,
    lifecycle: Lifecycle,
    target: &str,
) -> TenantEnv {
    TenantEnv {
        tenant: tenant.into(),
        environment: environment.into(),
        organization: "org_acme".into(),
        profile,
        lifecycle,
        placement: Placement {
            region: "ap-south-1".into(),
            target: target.into(),
        },
        retention_days: Some(30),
        encryption_key: None,
        storage_gib: Some(10),
        // Three jobs at one partition each: a dedicated topic of 3 partitions.
        concurrent_jobs: Some(3),
        options: serde_json::json!({ "partitionsPerJob": 1, "retentionMs": 86_400_000 }),
    }
}

fn kafka(env: &HashMap<String, String>, prefix: &str) -> KafkaPlane {
    let target = |servers: &str| KafkaTarget {
        topic_prefix: prefix.to_owned(),
        shared_partitions: 4,
        ..KafkaTarget::new(servers)
    };
    KafkaPlane::new(KafkaConfig {
        targets: BTreeMap::from([
            ("noida".to_owned(), target(&env["TENANCY_TEST_KAFKA_NOIDA"])),
            ("tansu".to_owned(), target(&env["TENANCY_TEST_KAFKA_TANSU"])),
        ]),
        timeout: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_partitions_only_grow_and_a_broker_without_create_partitions_is_named() {
    let Some(services) = crate::services::endpoints() else {
        return;
    };
    let tag = crate::support::unique_tag();
    let plane = kafka(&services, &tag);
    for broker in ["noida", "tansu"] {
        let mut d = vec![env(
            &format!("t_{tag}"),
            "prod",
            Profile::StDedicated,
            Lifecycle::Active,
            broker,
        )];
        let created = tenancy_plane::converge(&plane, &d).await.expect("create");
        assert_eq!(created.len(), 1, "{broker}: {created:#?}");
        assert!(
            plane.plan(&d).await.expect("plan").is_empty(),
            "{broker}: converged"
        );

        // Fewer partitions: a refused change in the plan, never applied.
        d[0].concurrent_jobs = Some(2);
        let plan = plane.plan(&d).await.expect("plan");
        assert_eq!(plan.len(), 1);
        let reason = plan[0].refused.as_deref().expect("refused");
        assert!(
            reason.contains("cannot reduce a topic's partitions (3 → 2)"),
            "{reason}"
        );
        let err = plane.apply(&plan[0]).await.expect_err("refused");
        assert!(matches!(err, PlaneError::Refused { .. }), "{err}");

        // More partitions: noida-db grows the topic; tansu lacks CreatePartitions and says so.
        d[0].concurrent_jobs = Some(5);
        let plan = plane.plan(&d).await.expect("plan");
        assert_eq!(
            (plan.len(), plan[0].op, plan[0].refused.is_none()),
            (1, Op::Update, true)
        );
        match (broker, plane.apply(&plan[0]).await) {
            ("noida", Ok(())) => assert!(plane.plan(&d).await.expect("plan").is_empty()),
            ("tansu", Err(PlaneError::Refused { message, .. })) => {
                assert!(
                    message.contains("does not support CreatePartitions"),
                    "{message}"
                );
                assert!(message.contains("tansu"), "names the target: {message}");
            }
            (b, other) => panic!("{b}: unexpected {other:?}"),
        }

        // A confirmed deletion removes the dedicated topic.
        d[0].lifecycle = Lifecycle::Deleted;
        let deleted = tenancy_plane::converge(&plane, &d).await.expect("delete");
        assert_eq!(deleted[0].op, Op::Delete, "{broker}");
    }
}

/// A tiny deterministic generator: the property's cases are reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn random_set(rng: &mut Rng, tag: &str, case: u64) -> Vec<TenantEnv> {
    let profiles = [Profile::MtStandard, Profile::StDedicated, Profile::Hybrid];
    let lifecycles = [
        Lifecycle::Draft,
        Lifecycle::Active,
        Lifecycle::Active,
        Lifecycle::Suspended,
        Lifecycle::Archived,
    ];
    let mut out = Vec::new();
    for t in 0..(2 + rng.next() % 4) {
        let tenant = format!("t_{tag}c{case}n{t}");
        let profile = rng.pick(&profiles);
        let lifecycle = rng.pick(&lifecycles);
        for e in ["dev", "prod"].iter().take(1 + (rng.next() % 2) as usize) {
            let mut d = env(&tenant, e, profile, lifecycle, "t");
            d.retention_days = rng.pick(&[None, Some(7), Some(30)]);
            d.concurrent_jobs = Some(1 + rng.next() % 3);
            out.push(d);
        }
    }
    out
}

/// Change each tenant's lifecycle the way a manifest edit would (never back to Draft).
fn transition(rng: &mut Rng, set: &mut [TenantEnv]) {
    let next = [
        Lifecycle::Active,
        Lifecycle::Suspended,
        Lifecycle::Archived,
        Lifecycle::Deleted,
    ];
    let mut chosen: HashMap<String, Lifecycle> = HashMap::new();
    for d in set.iter_mut() {
        let l = *chosen
            .entry(d.tenant.clone())
            .or_insert_with(|| rng.pick(&next));
        d.lifecycle = l;
        // Partitions only grow: a transition never asks for fewer.
        d.concurrent_jobs = d.concurrent_jobs.map(|j| j + rng.next() % 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn property_apply_then_plan_is_empty_for_random_tenant_sets() {
    let Some(services) = crate::services::endpoints() else {
        return;
    };
    let tag = crate::support::unique_tag();
    let pg = PostgresPlane::new(PostgresConfig {
        targets: BTreeMap::from([("t".to_owned(), services["TENANCY_TEST_PG_URL"].clone())]),
        default_connection_limit: 5,
    });
    let s3 = S3Plane::new(S3Config {
        targets: BTreeMap::from([(
            "t".to_owned(),
            S3Target {
                endpoint: Some(services["TENANCY_TEST_S3_URL"].clone()),
                region: "us-east-1".into(),
                path_style: true,
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
                session_token: None,
                bucket_prefix: format!("p{tag}"),
                shared_bucket: None,
            },
        )]),
    });
    let mut kafka_target = KafkaTarget::new(&services["TENANCY_TEST_KAFKA_NOIDA"]);
    kafka_target.topic_prefix = format!("p{tag}");
    let kafka = KafkaPlane::new(KafkaConfig {
        targets: BTreeMap::from([("t".to_owned(), kafka_target)]),
        timeout: None,
    });
    let redis = tenancy_plane_redis::RedisPlane::new(tenancy_plane_redis::RedisConfig {
        targets: BTreeMap::from([(
            "t".to_owned(),
            tenancy_plane_redis::RedisTarget {
                url: services["TENANCY_TEST_REDIS_URL"].clone(),
                dedicated_target: None,
            },
        )]),
        timeout_seconds: None,
    });
    let planes: [&dyn Plane; 4] = [&pg, &s3, &kafka, &redis];
    for case in 0..10u64 {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (case + 1);
        let mut rng = Rng(seed);
        let mut set = random_set(&mut rng, &tag, case);
        for round in 0..2 {
            for plane in planes {
                tenancy_plane::converge(plane, &set)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("seed {seed:#x} round {round} {}: {e}", plane.name())
                    });
                let left = plane.plan(&set).await.expect("plan");
                assert!(
                    left.is_empty(),
                    "seed {seed:#x} round {round}: {} not converged for {set:#?}: {left:#?}",
                    plane.name()
                );
            }
            transition(&mut rng, &mut set);
        }
    }
}
