//! Helpers: temporary Git repositories built with git2, and running the `tenancy` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

pub fn example_tenants() -> PathBuf {
    workspace_root().join("tenants")
}

/// The example repository (`tenants/` of this workspace, read from the work tree), validated.
pub fn example_catalog() -> tenancy::validate::Catalog {
    let opts = tenancy::source::ReadOptions {
        path: "tenants".into(),
        ..Default::default()
    };
    let snapshot = tenancy::source::read_worktree(&workspace_root(), &opts).expect("read tenants");
    let report = tenancy::validate::validate(&snapshot, &Default::default());
    assert!(!report.has_errors(), "{:?}", report.findings);
    report.catalog
}

pub fn bad_corpus() -> PathBuf {
    workspace_root().join("tests/data/bad")
}

/// A Git repository in a temporary directory.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: git2::Repository,
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").port()
}

impl TestRepo {
    /// Replace `from` with `to` in the work-tree file `file` (which must contain it).
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replace(from, to)).expect("write");
    }

    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(dir.path()).expect("git init");
        TestRepo { dir, repo }
    }

    /// A repository whose first commit holds a copy of the example `tenants/` directory.
    pub fn with_examples() -> TestRepo {
        let r = TestRepo::new();
        copy_dir(&example_tenants(), r.path());
        r.commit("import example tenants");
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).expect("remove");
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        std::os::unix::fs::symlink(target, self.path().join(rel)).expect("symlink");
    }

    /// Stage everything (including removals) and commit; returns the new commit's sha.
    /// The sha of HEAD.
    pub fn head(&self) -> String {
        let head = self.repo.head().expect("head");
        head.peel_to_commit().expect("commit").id().to_string()
    }

    pub fn commit(&self, message: &str) -> String {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        self.commit_index(&mut index, message)
    }

    /// Commit a gitlink (submodule entry) at `rel` pointing at an arbitrary commit id.
    pub fn commit_submodule_entry(&self, rel: &str, message: &str) -> String {
        let mut index = self.repo.index().expect("index");
        let entry = git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode: 0o160000,
            uid: 0,
            gid: 0,
            file_size: 0,
            id: git2::Oid::from_str("1234567890123456789012345678901234567890").expect("oid"),
            flags: 0,
            flags_extended: 0,
            path: rel.as_bytes().to_vec(),
        };
        index.add(&entry).expect("add gitlink");
        self.commit_index(&mut index, message)
    }

    fn commit_index(&self, index: &mut git2::Index, message: &str) -> String {
        index.write().expect("write index");
        let tree_id = index.write_tree().expect("write tree");
        let tree = self.repo.find_tree(tree_id).expect("tree");
        let sig = git2::Signature::now("Test Author", "author@tenancy.test").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
            .to_string()
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

pub fn tenancy(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("TENANCY_REPO")
        .output()
        .expect("run tenancy");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `tenancy validate --repo <repo> --output json <extra…>`
pub fn validate_json(repo: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let repo = repo.to_str().expect("utf-8 path");
    let mut args = vec!["validate", "--repo", repo, "--output", "json"];
    args.extend_from_slice(extra);
    let run = tenancy(&args);
    let json = run.json();
    (run, json)
}

pub fn findings(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["findings"].as_array().expect("findings array")
}

/// A short lowercase tag unique to this test process and call, so tests sharing one
/// PostgreSQL cluster, S3 endpoint and broker never touch each other's resources (roles,
/// bucket and topic names are global to their service).
pub fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("x{:x}{n}", (std::process::id() ^ nanos) % 0xfffff)
}

/// The example tenants with every tenant id `t_NNNN` renamed `t_NNNN<tag>` (ids, deletion
/// confirmations and file names), committed to a fresh repository.
pub fn tagged_examples(tag: &str) -> (TestRepo, Vec<String>) {
    let r = TestRepo::new();
    copy_dir(&example_tenants(), r.path());
    let mut ids = Vec::new();
    for org in std::fs::read_dir(r.path()).expect("read").flatten() {
        if !org.path().is_dir() || org.file_name() == ".git" {
            continue;
        }
        for f in std::fs::read_dir(org.path()).expect("read").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("t_")
                .and_then(|n| n.strip_suffix(".yaml"))
            {
                ids.push(format!("t_{id}"));
            }
        }
    }
    ids.sort();
    for org in std::fs::read_dir(r.path()).expect("read").flatten() {
        if !org.path().is_dir() || org.file_name() == ".git" {
            continue;
        }
        for f in std::fs::read_dir(org.path()).expect("read").flatten() {
            let mut text = std::fs::read_to_string(f.path()).expect("read");
            for id in &ids {
                text = text.replace(&format!("{id}\n"), &format!("{id}{tag}\n"));
                text = text.replace(&format!("{id} "), &format!("{id}{tag} "));
                text = text.replace(&format!("{id},"), &format!("{id}{tag},"));
            }
            let name = f.file_name().to_string_lossy().into_owned();
            std::fs::remove_file(f.path()).expect("rm");
            let name = match name
                .strip_suffix(".yaml")
                .filter(|n| ids.iter().any(|i| i == n))
            {
                Some(id) => format!("{id}{tag}.yaml"),
                None => name,
            };
            std::fs::write(org.path().join(name), text).expect("write");
        }
    }
    r.commit("import example tenants");
    let ids = ids.into_iter().map(|i| format!("{i}{tag}")).collect();
    (r, ids)
}

/// A tenancy.toml in `dir` that uses only the embedded planes, under `dir/data`.
pub fn embedded_config(dir: &Path) -> PathBuf {
    let config = dir.join("tenancy.toml");
    let root = dir.join("data");
    std::fs::write(
        &config,
        format!("[embedded]\nroot = \"{}\"\n", root.display()),
    )
    .expect("write config");
    config
}

/// `base` (a PostgreSQL URL of the test server) for another user and database.
pub fn pg_url(base: &str, user: &str, db: &str) -> String {
    let rest = base.split("://").nth(1).expect("url");
    let host = rest
        .rsplit('@')
        .next()
        .expect("host")
        .split('/')
        .next()
        .expect("host");
    format!("postgres://{user}@{host}/{db}")
}

/// A validator for `schemas/event.schema.json` (the CloudEvents envelope and each type's
/// payload); `check` panics naming every violation.
pub struct EventSchema(jsonschema::Validator);

impl EventSchema {
    pub fn load() -> EventSchema {
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(workspace_root().join("schemas/event.schema.json"))
                .expect("schema"),
        )
        .expect("json");
        EventSchema(jsonschema::draft202012::new(&schema).expect("schema compiles"))
    }

    pub fn check(&self, event: &serde_json::Value) {
        let errors: Vec<String> = self
            .0
            .iter_errors(event)
            .map(|x| format!("{x} at {}", x.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {event:#}");
    }
}

/// Every message of `topic` from the beginning, read with a real Kafka consumer (assigned
/// partitions, no group join), as (key, CloudEvent) in partition order; stops once `at_least`
/// messages were read and the topic is quiet, or at `timeout`.
pub fn read_topic(
    broker: &str,
    topic: &str,
    at_least: usize,
    timeout: std::time::Duration,
) -> Vec<(String, serde_json::Value)> {
    consume(broker, topic, at_least, timeout, |m| {
        use tenancy_plane_kafka::rdkafka::Message;
        let key = String::from_utf8_lossy(m.key().expect("key")).into_owned();
        let body: serde_json::Value =
            serde_json::from_slice(m.payload().expect("payload")).expect("json");
        (key, cloud_event_of(m, body))
    })
}

/// [`read_topic`], as the raw message values a consumer written from seed 000 §11 sees.
pub fn read_values(
    broker: &str,
    topic: &str,
    at_least: usize,
    timeout: std::time::Duration,
) -> Vec<serde_json::Value> {
    consume(broker, topic, at_least, timeout, |m| {
        use tenancy_plane_kafka::rdkafka::Message;
        serde_json::from_slice(m.payload().expect("payload")).expect("json")
    })
}

fn consume<T>(
    broker: &str,
    topic: &str,
    at_least: usize,
    timeout: std::time::Duration,
    mut each: impl FnMut(&tenancy_plane_kafka::rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    use tenancy_plane_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use tenancy_plane_kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "tenancy-it")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    let mut quiet = 0;
    while std::time::Instant::now() < deadline && (received.len() < at_least || quiet < 5) {
        match consumer.poll(std::time::Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet = 0;
                received.push(each(&m));
            }
            _ => quiet += 1,
        }
    }
    received
}

/// The CloudEvent a Kafka message carries: the message itself in structured content mode;
/// in binary mode (the default) its `ce_*` headers are the attributes and its value the data.
pub fn cloud_event_of(
    m: &impl tenancy_plane_kafka::rdkafka::Message,
    body: serde_json::Value,
) -> serde_json::Value {
    use tenancy_plane_kafka::rdkafka::message::Headers;
    let mut attrs = serde_json::Map::new();
    let mut content_type = None;
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
            if h.key == "content-type" {
                content_type = Some(v);
            } else if let Some(attr) = h.key.strip_prefix("ce_") {
                let value = match attr {
                    "tenantsequence" => serde_json::json!(v.parse::<i64>().expect("sequence")),
                    _ => v.into(),
                };
                attrs.insert(attr.to_owned(), value);
            }
        }
    }
    if content_type.as_deref() == Some("application/cloudevents+json") {
        return body;
    }
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "binary mode: the data's content type"
    );
    attrs.insert("datacontenttype".into(), "application/json".into());
    attrs.insert("data".into(), body);
    serde_json::Value::Object(attrs)
}

/// `tenancy run` on `repo` with `config`, serving on `port`, polling every `interval` seconds,
/// with the standard policy bundle; output discarded.
pub fn spawn_daemon(repo: &Path, config: &Path, port: u16, interval: u32) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["run", "--repo"])
        .arg(repo)
        .arg("--config")
        .arg(config)
        .arg("--policies")
        .arg(workspace_root().join("policies/bundle.yaml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--interval", &interval.to_string()])
        // The S3 credentials of the service tests' configurations.
        .env("IT_S3_KEY", "test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tenancy run")
}

/// A process started by a test (a daemon), killed if the test ends without stopping it.
pub struct Running(pub Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Let the daemon of `config` deliver webhooks to receivers the test runs on 127.0.0.1 (by
/// default webhooks go to public https targets only; see `webhooks::guard`).
pub fn allow_local_webhooks(config: &Path) {
    let mut toml = std::fs::read_to_string(config).expect("config");
    toml += "[webhooks]\nallow-http = true\nallow-networks = [\"127.0.0.1\"]\n";
    std::fs::write(config, toml).expect("config");
}
