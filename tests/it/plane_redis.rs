//! The Redis plane against the real Redis 7 from scripts/services.sh: users appear with only
//! their own keys and channels, a second plan is empty, drift is found in bulk and corrected,
//! one tenant's user gets NOPERM on another's keys, lifecycle closes sessions, and the plane
//! runs through `tenancy apply` from a config section and the regions' `targets.redis` alone.

use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};
use tenancy_plane::{Lifecycle, Op, Placement, Plane, Profile, TenantEnv};
use tenancy_plane_redis::{RedisConfig, RedisPlane, RedisTarget};

const SHARED: &str = "redis-test-shared";
const DEDICATED: &str = "redis-test-dedicated";

fn tenant_env(tenant: &str, env: &str, profile: Profile, lifecycle: Lifecycle) -> TenantEnv {
    TenantEnv {
        tenant: tenant.into(),
        environment: env.into(),
        organization: "org_acme".into(),
        profile,
        lifecycle,
        placement: Placement {
            region: "ap-south-1".into(),
            target: SHARED.into(),
        },
        retention_days: None,
        encryption_key: None,
        storage_gib: None,
        concurrent_jobs: Some(2),
        options: serde_json::Value::Null,
    }
}

/// The plane with a shared target whose dedicated tenants go to a second target name (the same
/// server here: what differs is the routing, which `locate` shows).
fn plane(url: &str) -> RedisPlane {
    RedisPlane::new(RedisConfig {
        targets: BTreeMap::from([
            (
                SHARED.to_owned(),
                RedisTarget {
                    url: url.to_owned(),
                    dedicated_target: Some(DEDICATED.to_owned()),
                },
            ),
            (
                DEDICATED.to_owned(),
                RedisTarget {
                    url: url.to_owned(),
                    dedicated_target: None,
                },
            ),
        ]),
        timeout_seconds: None,
    })
}

async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

async fn acl(c: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> redis::Value {
    redis::cmd("ACL")
        .arg(args)
        .query_async(c)
        .await
        .unwrap_or_else(|e| panic!("ACL {args:?}: {e}"))
}

async fn user_line(c: &mut redis::aio::MultiplexedConnection, user: &str) -> Option<String> {
    let lines: Vec<String> = redis::cmd("ACL")
        .arg("LIST")
        .query_async(c)
        .await
        .expect("ACL LIST");
    lines
        .into_iter()
        .find(|l| l.starts_with(&format!("user {user} ")))
}

/// A connection logged in as `user`, or the error Redis gave.
async fn login(
    url: &str,
    user: &str,
    password: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let addr = url.rsplit('@').next().expect("host");
    redis::Client::open(format!("redis://{user}:{password}@{addr}"))?
        .get_multiplexed_async_connection()
        .await
}

fn nopermission(r: redis::RedisResult<redis::Value>) -> bool {
    match r {
        Err(e) => e.code() == Some("NOPERM") || e.to_string().contains("NOPERM"),
        Ok(v) => {
            eprintln!("allowed, answered {v:?}");
            false
        }
    }
}

#[tokio::test]
async fn users_converge_and_one_tenant_cannot_touch_another() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let url = env["TENANCY_TEST_REDIS_URL"].clone();
    let plane = plane(&url);
    let tag = crate::support::unique_tag();
    let (a, b, c) = (format!("ta{tag}"), format!("tb{tag}"), format!("tc{tag}"));
    let mut desired = vec![
        tenant_env(&a, "dev", Profile::MtStandard, Lifecycle::Active),
        tenant_env(&b, "dev", Profile::MtStandard, Lifecycle::Active),
        tenant_env(&c, "prod", Profile::StDedicated, Lifecycle::Active),
        tenant_env(&c, "dev", Profile::StDedicated, Lifecycle::Draft),
    ];
    let first = tenancy_plane::converge(&plane, &desired)
        .await
        .expect("converge");
    assert_eq!(first.len(), 3, "Draft gets nothing: {first:#?}");
    assert!(first.iter().all(|c| c.op == Op::Create));
    let dedicated = format!("user {c}_prod on {DEDICATED}");
    assert!(
        first.iter().any(|ch| ch.resource == dedicated),
        "{first:#?}"
    );
    assert!(
        plane.plan(&desired).await.expect("plan").is_empty(),
        "a second plan is empty"
    );
    let located = plane.locate(&desired[2]).expect("locate");
    assert_eq!(
        (located["target"].as_str(), located["keys"].as_str()),
        (Some(DEDICATED), Some(format!("{c}:prod:*").as_str()))
    );

    // Passwords are the credential flow's: set by hand, they survive every later apply.
    let mut root = admin(&url).await;
    let (a_user, b_user) = (format!("{a}_dev"), format!("{b}_dev"));
    acl(&mut root, &["SETUSER", &a_user, ">pw-a"]).await;
    acl(&mut root, &["SETUSER", &b_user, ">pw-b"]).await;
    assert!(
        plane.plan(&desired).await.expect("plan").is_empty(),
        "a password is not drift"
    );

    // The boundary: A works in its own keys and channels and nowhere else.
    let mut ca = login(&url, &a_user, "pw-a").await.expect("A logs in");
    let mut cb = login(&url, &b_user, "pw-b").await.expect("B logs in");
    let own = format!("{a}:dev:k");
    let theirs = format!("{b}:dev:k");
    let _: () = ca.set(&own, "a").await.expect("A writes its own key");
    let _: () = cb.set(&theirs, "b").await.expect("B writes its own key");
    let get = |key: &str| redis::cmd("GET").arg(key).to_owned();
    assert!(
        nopermission(get(&theirs).query_async(&mut ca).await),
        "A reads B's key"
    );
    assert!(nopermission(
        redis::cmd("SET")
            .arg(&theirs)
            .arg("x")
            .query_async(&mut ca)
            .await
    ));
    assert!(nopermission(
        redis::cmd("DEL").arg(&theirs).query_async(&mut ca).await
    ));
    assert!(nopermission(
        redis::cmd("PUBLISH")
            .arg(format!("{b}:dev:events"))
            .arg("x")
            .query_async(&mut ca)
            .await
    ));
    // Nothing that sees or wipes beyond its keys: not even by listing or flushing.
    for args in [
        vec!["FLUSHALL"],
        vec!["FLUSHDB"],
        vec!["KEYS", "*"],
        vec!["SCAN", "0"],
        vec!["RANDOMKEY"],
        vec!["PUBSUB", "CHANNELS"],
        vec!["ACL", "LIST"],
        vec!["CONFIG", "GET", "*"],
    ] {
        let r = redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut ca)
            .await;
        assert!(nopermission(r), "A may run {args:?}");
    }
    let theirs_value: String = get(&theirs).query_async(&mut cb).await.expect("B reads");
    assert_eq!(theirs_value, "b", "B's data is untouched");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{a}:dev:events"))
        .arg("x")
        .query_async(&mut ca)
        .await
        .expect("A publishes on its own channel");

    // Drift, found in bulk and corrected: wider keys, nopass, an extra command, a selector,
    // and a user switched off by hand.
    let c_user = format!("{c}_prod");
    acl(&mut root, &["SETUSER", &a_user, "allkeys"]).await;
    acl(&mut root, &["SETUSER", &b_user, "nopass", "+flushall"]).await;
    acl(&mut root, &["SETUSER", &c_user, "off", "(~other:* +get)"]).await;
    let drift = plane.plan(&desired).await.expect("plan");
    let fields = |user: &str| -> Vec<String> {
        drift
            .iter()
            .filter(|ch| ch.resource.starts_with(&format!("user {user} ")))
            .flat_map(|ch| ch.fields.iter().map(|f| f.field.clone()))
            .collect()
    };
    assert_eq!(fields(&a_user), ["keys"], "{drift:#?}");
    assert_eq!(fields(&b_user), ["password", "commands"], "{drift:#?}");
    assert_eq!(fields(&c_user), ["state", "selectors"], "{drift:#?}");
    let commands = drift
        .iter()
        .flat_map(|ch| &ch.fields)
        .find(|f| f.field == "commands")
        .expect("commands");
    assert!(
        commands
            .before
            .as_deref()
            .is_some_and(|b| b.contains("flushall")),
        "{commands:?}"
    );
    for change in &drift {
        plane.apply(change).await.expect("apply");
    }
    assert!(
        plane.plan(&desired).await.expect("plan").is_empty(),
        "drift corrected"
    );
    assert!(
        login(&url, &b_user, "anything").await.is_err(),
        "nopass is gone, and with it every password"
    );
    assert!(
        login(&url, &a_user, "pw-a").await.is_ok(),
        "A's password was kept"
    );

    // Suspension: the user is off, no new login, and the open session is closed.
    desired[0].lifecycle = Lifecycle::Suspended;
    tenancy_plane::converge(&plane, &desired)
        .await
        .expect("suspend");
    assert!(
        user_line(&mut root, &a_user)
            .await
            .expect("kept")
            .contains(" off ")
    );
    assert!(
        login(&url, &a_user, "pw-a").await.is_err(),
        "no login while suspended"
    );
    let closed: redis::RedisResult<String> = get(&own).query_async(&mut ca).await;
    assert!(
        closed.is_err(),
        "the session open before suspension is closed"
    );
    let kept: String = get(&own).query_async(&mut root).await.expect("data kept");
    assert_eq!(kept, "a");

    // A confirmed deletion removes the user; a second plan is empty.
    for d in &mut desired {
        d.lifecycle = Lifecycle::Deleted;
    }
    let removed = tenancy_plane::converge(&plane, &desired)
        .await
        .expect("delete");
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(|c| c.op == Op::Delete));
    for user in [&a_user, &b_user, &c_user] {
        assert!(user_line(&mut root, user).await.is_none(), "{user} removed");
    }
    assert!(plane.plan(&desired).await.expect("plan").is_empty());
}

#[tokio::test]
async fn an_unreachable_redis_is_named_and_blocks_only_its_target() {
    let plane = RedisPlane::new(RedisConfig {
        targets: BTreeMap::from([(
            SHARED.to_owned(),
            RedisTarget {
                url: format!("redis://127.0.0.1:{}", crate::support::free_port()),
                dedicated_target: None,
            },
        )]),
        timeout_seconds: None, // the default: a closed port is refused at once
    });
    let d = tenant_env("t_x", "dev", Profile::MtStandard, Lifecycle::Active);
    let err = plane.plan(&[d]).await.expect_err("unreachable");
    assert!(
        err.to_string()
            .starts_with(&format!("redis: target `{SHARED}`")),
        "{err}"
    );
}

/// Every registered plane is reached from configuration alone: a `[redis]` section and the
/// example regions' `targets.redis` put every example tenant's users in Redis through
/// `tenancy apply`, as their lifecycle says, and a second plan has nothing to do.
#[test]
fn apply_manages_redis_users_from_the_config_section_alone() {
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let url = env["TENANCY_TEST_REDIS_URL"].clone();
    let tag = crate::support::unique_tag();
    let (repo, _) = crate::support::tagged_examples(&tag);
    let work = tempfile::tempdir().expect("tmp");
    let mut toml = format!(
        "[state]\nurl = \"sqlite://{}\"\n\n[embedded]\nroot = \"{}\"\n\n",
        work.path().join("state.db").display(),
        work.path().join("embedded").display()
    );
    for region in ["ap-south-1", "eu-west-1", "eu-central-1", "us-east-1"] {
        toml += &format!("[redis.targets.redis-{region}]\nurl = \"{url}\"\n");
    }
    let config = work.path().join("tenancy.toml");
    std::fs::write(&config, toml).expect("config");

    let (run, report) = crate::apply::apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (_, plan) = crate::apply::plan_json(repo.path(), &config);
    assert_eq!(crate::apply::pending(&plan), 0, "{plan:#}");
    let planes: Vec<&str> = plan["planes"]
        .as_array()
        .expect("planes")
        .iter()
        .filter_map(|p| p["plane"].as_str())
        .collect();
    assert!(planes.contains(&"redis"), "{planes:?}");

    // Each example tenant-environment's user is there as its lifecycle says.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lines: Vec<String> = rt.block_on(async {
        let mut root = admin(&url).await;
        redis::cmd("ACL")
            .arg("LIST")
            .query_async(&mut root)
            .await
            .expect("ACL LIST")
    });
    let users: HashMap<&str, &str> = lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split(' ').skip(1);
            Some((w.next()?, l.as_str()))
        })
        .collect();
    let catalog = crate::support::example_catalog();
    let mut checked = 0;
    for t in &catalog.tenants {
        let spec = &t.value.spec;
        for e in &spec.environments {
            let user = format!("{}{tag}_{}", t.value.metadata.id, e.name);
            let line = users.get(user.as_str()).copied();
            use tenancy::manifest::Lifecycle as L;
            match spec.lifecycle {
                L::Active => assert!(line.is_some_and(|l| l.contains(" on ")), "{user}: {line:?}"),
                L::Suspended | L::Archived => {
                    assert!(
                        line.is_some_and(|l| l.contains(" off ")),
                        "{user}: {line:?}"
                    )
                }
                L::Draft | L::Deleted => assert!(line.is_none(), "{user}: {line:?}"),
            }
            if let Some(l) = line {
                let pattern = format!("~{}{tag}:{}:*", t.value.metadata.id, e.name);
                assert!(l.contains(&pattern), "{user}: {l}");
            }
            checked += 1;
        }
    }
    assert!(
        checked > catalog.tenants.len(),
        "{checked} environments checked"
    );
    assert!(report["tenants"].as_array().is_some_and(|t| !t.is_empty()));

    // Drift made by hand is reported by `--detect-only` (exit 4) and corrected by `apply`.
    let user = format!("t_5001{tag}_prod");
    rt.block_on(async {
        let mut root = admin(&url).await;
        acl(&mut root, &["SETUSER", &user, "allkeys", "+flushall"]).await;
    });
    let (run, _) = crate::apply::apply_json(repo.path(), &config, &["--detect-only"]);
    assert_eq!(run.code, 4, "drift: {}\n{}", run.stdout, run.stderr);
    let (run, _) = crate::apply::apply_json(repo.path(), &config, &["--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (_, plan) = crate::apply::plan_json(repo.path(), &config);
    assert_eq!(crate::apply::pending(&plan), 0, "{plan:#}");
}
