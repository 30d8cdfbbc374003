//! Reliability of the daemon (issue 5), against the real services: `kill -9` at random points
//! of a 100-tenant apply loses nothing and converges; a Kafka outage under a running daemon
//! keeps events in the outbox and delivers them after, in order per tenant. Events are read
//! back with a real Kafka consumer and validated against schemas/event.schema.json.

use crate::support::{EventSchema, TestRepo, free_port, read_topic, unique_tag, workspace_root};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Running as Daemon;

fn daemon(repo: &std::path::Path, config: &std::path::Path, port: u16) -> Daemon {
    Daemon(Some(crate::support::spawn_daemon(repo, config, port, 1)))
}

fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn metric(port: u16, line_start: &str) -> Option<f64> {
    metrics(port)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn terminate(mut daemon: Daemon) {
    let mut child = daemon.0.take().expect("running");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no clean stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// xorshift64*: reproducible "random" kill points; the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The tenant files of a generated repository: (path relative to the root, tenant id).
fn tenant_files(root: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for org in std::fs::read_dir(root).expect("read").flatten() {
        if !org.path().is_dir() || !org.file_name().to_string_lossy().starts_with("org_") {
            continue;
        }
        for f in std::fs::read_dir(org.path()).expect("read").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".yaml").filter(|n| n.starts_with("t_")) {
                out.push((
                    format!("{}/{name}", org.file_name().to_string_lossy()),
                    id.to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Check what Kafka holds against the outbox: every recorded event was published; an event
/// published more than once is byte-for-byte the same event (same id, same content); per
/// tenant the sequence never goes back; every event is valid against the schema.
fn check_published(recorded: &[Value], received: &[(String, Value)]) {
    let schema = EventSchema::load();
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (key, e) in received {
        schema.check(e);
        let id = e["id"].as_str().expect("id");
        assert_eq!(key, e["tenantid"].as_str().expect("tenant"), "key = tenant");
        if let Some(first) = by_id.insert(id, e) {
            assert_eq!(
                first, e,
                "an event published twice carries the same id and content"
            );
            continue;
        }
        let seq = e["tenantsequence"].as_i64().expect("sequence");
        let prev = last.insert(key, seq).unwrap_or(0);
        assert!(seq > prev, "{key}: sequence {seq} after {prev}");
    }
    for e in recorded {
        let id = e["id"].as_str().expect("id");
        assert!(
            by_id.contains_key(id),
            "event {id} ({}) recorded but never published",
            e["type"]
        );
    }
}

fn outbox(config: &std::path::Path) -> Vec<Value> {
    crate::support::tenancy(&[
        "events",
        "--config",
        config.to_str().expect("utf-8"),
        "--output",
        "json",
    ])
    .stdout
    .lines()
    .map(|l| serde_json::from_str(l).expect("event line"))
    .collect()
}

/// 20 trials: each commits lifecycle changes to a quarter of 100 tenants, starts the daemon on
/// the real PostgreSQL, S3 and Kafka, and kills it with SIGKILL at a random point. Then one
/// clean run: every tenant converges in every plane, no job is left running, and every event
/// recorded is on Kafka exactly as recorded (a re-publication carries the same id).
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_100_tenant_apply_loses_nothing_and_converges() {
    use sqlx::Connection;
    let Some(env) = crate::services::endpoints() else {
        return;
    };
    let tag = unique_tag();
    let seed = std::env::var("TENANCY_IT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    eprintln!("kill -9 trials: seed {seed} (TENANCY_IT_SEED={seed} repeats them)");
    let mut rng = Rng(seed | 1);

    let admin_url = env["TENANCY_TEST_PG_URL"].clone();
    let db = format!("tenancy_kill_{tag}");
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("pg admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .expect("database");
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::apply::write_config(
        work.path(),
        &env,
        &tag,
        Some(&crate::support::pg_url(&admin_url, "postgres", &db)),
        None,
    );
    let broker = env["TENANCY_TEST_KAFKA_NOIDA"].clone();
    let topic = format!("events-kill-{tag}");
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!("[events.kafka]\nbootstrap-servers = \"{broker}\"\ntopic = \"{topic}\"\n");
    std::fs::write(&config, toml).expect("config");

    // 100 varied tenants (every profile and lifecycle), ids unique to this run.
    let repo =
        crate::support::generated_repo(100, &["--seed", "11", "--id-prefix", &format!("{tag}_")]);
    let repo_dir = repo.path().to_owned();
    let files = tenant_files(&repo_dir);
    assert_eq!(files.len(), 100);

    let port = free_port();
    let mut killed_busy = 0;
    for trial in 0..20 {
        if trial > 0 {
            // Flip a quarter of the Active/Suspended tenants: more work for the next run.
            for (k, (file, _)) in files.iter().enumerate() {
                if (k + trial) % 4 != 0 {
                    continue;
                }
                let path = repo_dir.join(file);
                let text = std::fs::read_to_string(&path).expect("read");
                let flipped = if text.contains("lifecycle: Active") {
                    text.replace("lifecycle: Active", "lifecycle: Suspended")
                } else {
                    text.replace("lifecycle: Suspended", "lifecycle: Active")
                };
                std::fs::write(&path, flipped).expect("write");
            }
            repo.commit(&format!("trial {trial}: flip a quarter"));
        }
        let mut d = daemon(&repo_dir, &config, port);
        let delay = Duration::from_millis(150 + rng.next() % 1350);
        std::thread::sleep(delay);
        let busy = metric(port, "tenancy_last_success_timestamp_seconds").is_none_or(|t| t == 0.0);
        killed_busy += usize::from(busy);
        let mut child = d.0.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    eprintln!("{killed_busy} of 20 kills landed before the first pass finished");
    assert!(
        killed_busy >= 10,
        "most kills must land mid-apply: {killed_busy}"
    );

    // One clean run: everything converges and the outbox drains.
    let child = daemon(&repo_dir, &config, port);
    wait("the first full pass", Duration::from_secs(180), || {
        metric(port, "tenancy_last_success_timestamp_seconds").is_some_and(|t| t > 0.0)
    });
    wait("an empty outbox", Duration::from_secs(60), || {
        metric(port, "tenancy_outbox_pending ") == Some(0.0)
    });
    terminate(child);

    let head = repo.head();
    let cfg = config.to_str().expect("utf-8");
    let plan = crate::apply::run(&[
        "plan",
        "--repo",
        repo_dir.to_str().expect("utf-8"),
        "--config",
        cfg,
        "--policies",
        workspace_root()
            .join("policies/bundle.yaml")
            .to_str()
            .expect("utf-8"),
        "--output",
        "json",
    ]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json();
    for op in ["create", "update", "delete"] {
        assert_eq!(plan["summary"][op], 0, "every plane converged: {plan:#}");
    }

    let statuses = crate::apply::run(&["status", "--config", cfg, "--output", "json"]).json();
    let statuses = statuses["tenants"].as_array().expect("tenants");
    assert_eq!(statuses.len(), 100);
    for s in statuses {
        assert_eq!(s["status"], "synced", "{s:#}");
        assert_eq!(s["last_applied_commit"], head.as_str(), "{s:#}");
    }
    let jobs = crate::apply::run(&[
        "jobs", "--config", cfg, "--limit", "100000", "--output", "json",
    ])
    .json();
    let jobs = jobs["jobs"].as_array().expect("jobs");
    assert!(!jobs.is_empty());
    for j in jobs {
        assert!(
            j["state"] == "completed" || j["state"] == "failed",
            "no job left queued or running: {j:#}"
        );
        if j["state"] == "failed" {
            assert!(
                j["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("superseded")),
                "a job fails only when a newer commit supersedes it: {j:#}"
            );
        }
    }

    // Every recorded event is on Kafka, as recorded.
    let recorded = outbox(&config);
    assert!(recorded.len() >= 60, "{} events", recorded.len());
    let received = read_topic(&broker, &topic, recorded.len(), Duration::from_secs(60));
    check_published(&recorded, &received);
    let republished = received.len() - recorded.len();
    eprintln!(
        "{} events recorded, {} messages on Kafka ({republished} re-published after a kill, same ids)",
        recorded.len(),
        received.len()
    );

    // Each tenant's last lifecycle event agrees with its final manifest.
    let mut last_lifecycle: BTreeMap<String, String> = BTreeMap::new();
    for e in &recorded {
        let ty = e["type"].as_str().expect("type");
        if matches!(
            ty,
            "TENANCY_ACTIVATED" | "TENANCY_SUSPENDED" | "TENANCY_RESUMED"
        ) {
            last_lifecycle.insert(e["tenantid"].as_str().expect("t").to_owned(), ty.to_owned());
        }
    }
    for (file, id) in &files {
        let text = std::fs::read_to_string(repo_dir.join(file)).expect("read");
        let Some(ty) = last_lifecycle.get(id) else {
            continue;
        };
        if text.contains("lifecycle: Suspended") {
            assert_eq!(ty, "TENANCY_SUSPENDED", "{id}");
        } else if text.contains("lifecycle: Active") {
            assert!(
                ty == "TENANCY_ACTIVATED" || ty == "TENANCY_RESUMED",
                "{id}: {ty}"
            );
        }
    }
}

/// A Kafka broker of its own (noida-db, persistent data directory) that can be stopped and
/// started again on the same port.
struct Broker {
    port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    fn start(port: u16, data: tempfile::TempDir) -> Broker {
        use std::os::unix::process::CommandExt;
        let child = Command::new("noida-db")
            .args(["start", "--data-dir"])
            .arg(data.path())
            .args(["--only", "kafka", "--kafka-port", &port.to_string()])
            .args(["--host", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("noida-db (installed by scripts/services.sh)");
        wait("the broker", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Broker {
            port,
            data,
            child: Some(child),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The whole process group: noida-db's launcher and the broker it starts.
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
        wait("the broker to go", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many events the state store of `config` holds unpublished, read from the store itself.
fn pending_in_store(config: &std::path::Path) -> i64 {
    let cfg = tenancy::config::Config::load(Some(config)).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = tenancy::store::Store::open(&cfg.state_url())
            .await
            .expect("store");
        store.pending_count().await.expect("count")
    })
}

/// Kafka down for 45 s — longer than every timeout involved (message.timeout.ms, the relay's
/// wait for delivery reports, its 30 s backoff) — under a running daemon with the **default**
/// producer settings: commits still converge, their events wait in the outbox, nothing is
/// counted or marked published while the broker is away, the outbox gauge is true at every
/// scrape, and once Kafka is back every event is delivered, in order per tenant, without a new
/// commit.
#[test]
fn a_kafka_outage_keeps_events_in_the_outbox_until_it_returns() {
    if crate::services::endpoints().is_none() {
        return;
    }
    let port = free_port();
    let mut broker = Broker::start(port, tempfile::tempdir().expect("tmp"));
    let servers = format!("127.0.0.1:{port}");
    let topic = format!("events-outage-{}", unique_tag());
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = crate::support::embedded_config(work.path());
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml += &format!("[events.kafka]\nbootstrap-servers = \"{servers}\"\ntopic = \"{topic}\"\n");
    std::fs::write(&config, toml).expect("config");
    let http = free_port();
    let child = daemon(repo.path(), &config, http);
    wait("the import published", Duration::from_secs(60), || {
        metric(http, "tenancy_events_published_total").is_some_and(|n| n >= 13.0)
            && metric(http, "tenancy_outbox_pending ") == Some(0.0)
    });
    let published_before = metric(http, "tenancy_events_published_total");

    eprintln!("outage: import published; stopping the broker");
    broker.stop();
    let down = Instant::now();
    // Lifecycle changes spread over the outage: each pass's events meet a broker that is gone.
    let tenants = ["t_5001", "t_5002", "t_6001", "t_7001"];
    let mut changes = 0;
    for round in 0..2 {
        for t in tenants {
            let file = if t.starts_with("t_5") {
                format!("org_acme/{t}.yaml")
            } else if t.starts_with("t_6") {
                format!("org_globex/{t}.yaml")
            } else {
                format!("org_initech/{t}.yaml")
            };
            let (from, to) = if round == 0 {
                ("lifecycle: Active", "lifecycle: Suspended")
            } else {
                ("lifecycle: Suspended", "lifecycle: Active")
            };
            repo.edit(&file, from, to);
            repo.commit(&format!("{to} {t}"));
            changes += 1;
            std::thread::sleep(Duration::from_secs(3));
        }
    }
    wait("every change recorded", Duration::from_secs(20), || {
        pending_in_store(&config) >= changes
    });
    // The gauge is what the store holds, at once (not after the relay's next failure).
    for _ in 0..3 {
        let gauge = metric(http, "tenancy_outbox_pending ").expect("gauge");
        assert_eq!(gauge as i64, pending_in_store(&config), "the gauge is true");
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(
        crate::integrity::status(&config, "t_5002")["status"],
        "synced",
        "the planes converge while Kafka is down"
    );
    std::thread::sleep(Duration::from_secs(45).saturating_sub(down.elapsed()));
    assert_eq!(
        metric(http, "tenancy_events_published_total"),
        published_before,
        "nothing is published while the broker is down"
    );
    assert!(
        pending_in_store(&config) >= changes,
        "nothing was marked published"
    );

    eprintln!("outage: {:?} down; restarting the broker", down.elapsed());
    let data = std::mem::replace(&mut broker.data, tempfile::tempdir().expect("tmp"));
    drop(broker);
    let _broker = Broker::start(port, data);
    wait("the outbox to drain", Duration::from_secs(120), || {
        metric(http, "tenancy_outbox_pending ") == Some(0.0)
    });
    assert_eq!(pending_in_store(&config), 0);
    eprintln!(
        "outage: outbox drained {:?} after the outage began",
        down.elapsed()
    );
    terminate(child);

    let recorded = outbox(&config);
    let waited: Vec<&Value> = recorded
        .iter()
        .filter(|e| {
            matches!(
                e["type"].as_str(),
                Some("TENANCY_SUSPENDED" | "TENANCY_RESUMED")
            )
        })
        .collect();
    assert_eq!(waited.len() as i64, changes, "{waited:#?}");
    // (noida-db keeps no messages across a kill, so only what was sent after it is checked.)
    let waited: Vec<Value> = waited.into_iter().cloned().collect();
    let received = read_topic(&servers, &topic, waited.len(), Duration::from_secs(30));
    check_published(&waited, &received);
    let t5001: Vec<&str> = received
        .iter()
        .filter(|(k, _)| k == "t_5001")
        .map(|(_, e)| e["type"].as_str().expect("type"))
        .collect();
    let at = t5001
        .iter()
        .position(|t| *t == "TENANCY_SUSPENDED")
        .expect("suspended delivered");
    assert_eq!(t5001[at + 1], "TENANCY_RESUMED", "in order: {t5001:?}");
}
