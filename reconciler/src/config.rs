//! The reconciler's own configuration: `tenancy.toml` (+ `TENANCY_*` environment overrides).
//!
//! It maps the logical targets named in `platform/regions.yaml` to real endpoints and holds the
//! state-store URL and limits. It is the operator's file, never read from the tenant
//! repository. Secrets are not written into it: any string may be `${env:NAME}` (an environment
//! variable) or `${file:/path}` (a file's contents, trailing newline removed, as Kubernetes and
//! Docker mount secrets), expanded when the file is loaded; a missing variable or file is an
//! error naming the key.
//!
//! A plane with no target configured uses its embedded default under `[embedded] root`
//! (database: a SQLite file per tenant-environment; object store: a directory); the Kafka plane
//! has no embedded default and is skipped, which the plan says.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file looked for when `--config` is not given.
pub(crate) const DEFAULT_FILE: &str = "tenancy.toml";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(tenancy::config))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    #[diagnostic(
        code(tenancy::config),
        help("see the sample tenancy.toml in the README's \"Production backends\" section")
    )]
    Invalid { path: String, message: String },
    #[error("{path}: `{key}` refers to {what}, which {problem}")]
    #[diagnostic(
        code(tenancy::config_secret),
        help(
            "set the variable or mount the file; secrets are never read from the tenant repository"
        )
    )]
    Secret {
        path: String,
        key: String,
        what: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub policies: PoliciesConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Each registered plane's `[<kind>]` section as written (after `${…}` expansion),
    /// checked by the plane when the file is loaded; absent sections are not here.
    #[serde(skip)]
    pub planes: BTreeMap<&'static str, serde_json::Value>,
    /// Where the configuration came from (for messages); not a key of the file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateConfig {
    /// `sqlite://PATH` or `postgres://…`; default: `<embedded root>/state.db`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddedConfig {
    /// Directory of the embedded planes and the default state store.
    pub root: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            root: PathBuf::from(".tenancy"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplyConfig {
    /// Tenants applied at once.
    #[serde(default = "default_concurrency")]
    pub(crate) concurrency: usize,
    #[serde(default)]
    pub(crate) detect_only: DetectOnly,
    /// Write each applied commit's decisions and outcome as a git note (refs/notes/tenancy).
    #[serde(default = "yes")]
    pub notes: bool,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            concurrency: default_concurrency(),
            detect_only: DetectOnly::default(),
            notes: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_concurrency() -> usize {
    8
}

/// Where drift is reported but not corrected.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectOnly {
    /// Every tenant and plane.
    #[serde(default)]
    pub all: bool,
    /// These tenants, in every plane.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// These planes (by name: `postgres`, `object-store`, `kafka`, …), for every tenant.
    #[serde(default)]
    pub planes: Vec<String>,
}

impl DetectOnly {
    pub(crate) fn covers(&self, tenant: &str, plane: &str) -> bool {
        self.all
            || self.tenants.iter().any(|t| t == tenant)
            || self.planes.iter().any(|p| p == plane)
    }
}

/// The REST API `/api/tenancy/v1`, served by `tenancy run` on `--listen` when tokens exist.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiConfig {
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Requests per second each token may make (0 = unlimited), with bursts of `burst`.
    #[serde(default)]
    pub(crate) requests_per_second: f64,
    #[serde(default)]
    pub burst: f64,
    /// Requests per second addressed to any one tenant, whoever makes them (0 = unlimited).
    #[serde(default)]
    pub(crate) tenant_requests_per_second: f64,
    #[serde(default)]
    pub(crate) tenant_burst: f64,
    /// Push each API commit to this remote (a remote name of the watched repository, or a
    /// URL) before the local branch moves, so the remote stays the source of truth. A daemon
    /// that follows `[daemon] remote` always pushes there.
    #[serde(default)]
    pub push: Option<String>,
}

/// A bearer token, stored as the hex SHA-256 of the token (never the token itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiToken {
    /// Who holds it (logged, and the author of the commits it makes).
    pub name: String,
    /// `printf %s "$TOKEN" | sha256sum`.
    pub sha256: String,
    pub role: ApiRole,
    /// Confine the token to one tenant…
    pub tenant: Option<String>,
    /// …or to one organization's tenants.
    pub organization: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiRole {
    /// Read.
    Viewer,
    /// Read, lifecycle operations, usage reports.
    Operator,
    /// Everything, including webhooks and deletion.
    Admin,
}

/// `tenancy run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// What to do with a commit that does not descend from the last one reconciled.
    #[serde(default)]
    pub(crate) on_non_fast_forward: NonFastForward,
    /// Follow a remote repository (fetched into a mirror under the embedded root) instead of
    /// watching a local one.
    pub remote: Option<String>,
    /// The branch of `remote` to follow.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Fetch `remote` at least this often (a trigger from the Git host fetches at once).
    #[serde(default = "default_fetch_interval")]
    pub(crate) fetch_interval_seconds: u64,
    /// Shared secret of `POST /hooks/git` (Git-host push webhooks): the request's
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` must match. Without it the
    /// endpoint is not served.
    pub(crate) trigger_secret: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            on_non_fast_forward: NonFastForward::default(),
            remote: None,
            branch: default_branch(),
            fetch_interval_seconds: default_fetch_interval(),
            trigger_secret: None,
        }
    }
}

fn default_branch() -> String {
    "main".into()
}

fn default_fetch_interval() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum NonFastForward {
    /// Refuse it and alert (log, metric); nothing is applied until the branch moves forward
    /// again or the rule is changed. Old state is never silently re-applied.
    #[default]
    Refuse,
    /// Reconcile it like any commit (a full resync).
    Apply,
}

/// Which webhook targets are allowed (see `webhooks::guard`): https to public addresses by
/// default; internal receivers only on networks listed here.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhooksConfig {
    /// Allow plain `http://` targets (default: https only).
    #[serde(default)]
    pub(crate) allow_http: bool,
    /// Internal networks webhooks may reach (CIDR, e.g. `10.20.0.0/16`, `127.0.0.1`).
    #[serde(default)]
    pub(crate) allow_networks: Vec<crate::net::Network>,
}

/// Where the outbox's events are published (none: they stay readable with `tenancy events`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventsConfig {
    pub kafka: Option<EventsKafka>,
    /// How events travel to Kafka and webhooks: `binary` (the default — attributes in
    /// `ce_*`/`ce-*` headers, the body is seed 000's `{ id, type, tenantId, reason, timestamp,
    /// data }`) or `structured` (the body is the whole CloudEvent).
    #[serde(default)]
    pub(crate) content_mode: ContentMode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventsKafka {
    pub(crate) bootstrap_servers: String,
    #[serde(default = "default_events_topic")]
    pub topic: String,
    /// Extra librdkafka producer properties (`security.protocol`, `sasl.*`, …).
    #[serde(default)]
    pub(crate) properties: BTreeMap<String, String>,
}

fn default_events_topic() -> String {
    "tenancy.events".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoliciesConfig {
    /// The policy bundle (default: policies/bundle.yaml in the working directory, if any).
    pub bundle: Option<PathBuf>,
}

impl Config {
    /// Load `path`, or `tenancy.toml` if it exists, or the defaults; then apply `TENANCY_*`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    pub(crate) fn load_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => Some(p.to_owned()),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
        };
        let mut config = match &file {
            None => Config::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string(), &env)?
            }
        };
        config.source = file;
        let shown = config
            .source
            .as_ref()
            .map_or("environment".to_owned(), |p| p.display().to_string());
        if let Some(url) = env("TENANCY_STATE_URL") {
            config.state.url = Some(url);
        }
        if let Some(root) = env("TENANCY_EMBEDDED_ROOT") {
            config.embedded.root = PathBuf::from(root);
        }
        if let Some(n) = env("TENANCY_APPLY_CONCURRENCY") {
            config.apply.concurrency = n.parse().map_err(|_| ConfigError::Invalid {
                path: shown.clone(),
                message: format!("TENANCY_APPLY_CONCURRENCY=`{n}` is not a number"),
            })?;
        }
        if let Some(v) = env("TENANCY_DETECT_ONLY") {
            config.apply.detect_only.all = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if config.apply.concurrency == 0 {
            return Err(ConfigError::Invalid {
                path: shown,
                message: "apply.concurrency must be at least 1".into(),
            });
        }
        Ok(config)
    }

    /// Parse a configuration document, expanding `${env:…}` and `${file:…}` references.
    pub fn parse(
        text: &str,
        path: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        expand(&mut value, path, "", env)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        // Each plane's section is the plane's to read: take them out, let each check its own.
        let mut planes = BTreeMap::new();
        if let toml::Value::Table(table) = &mut value {
            for r in crate::planes::REGISTERED {
                let kind = r.factory.about().kind;
                let Some(section) = table.remove(kind) else {
                    continue;
                };
                let section =
                    serde_json::to_value(section).map_err(|e| invalid(format!("[{kind}]: {e}")))?;
                r.factory
                    .build(&section)
                    .map_err(|e| invalid(format!("[{kind}]: {e}")))?;
                planes.insert(kind, section);
            }
        }
        let mut config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.to_string()))?;
        config.planes = planes;
        for p in &config.apply.detect_only.planes {
            if crate::planes::find(p).is_none() {
                return Err(invalid(format!(
                    "apply.detect-only.planes: `{p}` is not a plane (planes: {})",
                    crate::planes::kinds()
                )));
            }
        }
        Ok(config)
    }

    /// The `[<kind>]` section of a plane (an empty table when absent).
    pub(crate) fn plane_section(&self, kind: &str) -> serde_json::Value {
        self.planes
            .get(kind)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}))
    }

    /// The state store's URL.
    pub fn state_url(&self) -> String {
        self.state.url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.embedded.root.join("state.db").display())
        })
    }
}

fn expand(
    value: &mut toml::Value,
    path: &str,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            if let Some(expanded) = expand_str(s, path, key, env)? {
                *s = expanded;
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, path, &format!("{key}[{i}]"), env)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let key = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                expand(v, path, &key, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Some(expanded)` when `s` holds at least one `${env:…}`/`${file:…}` reference.
fn expand_str(
    s: &str,
    path: &str,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    if !s.contains("${") {
        return Ok(None);
    }
    let secret = |what: String, problem: String| ConfigError::Secret {
        path: path.to_owned(),
        key: key.to_owned(),
        what,
        problem,
    };
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| secret(format!("`{rest}`"), "is not closed with `}`".into()))?;
        let reference = &after[..end];
        let resolved = if let Some(name) = reference.strip_prefix("env:") {
            env(name).ok_or_else(|| {
                secret(
                    format!("environment variable `{name}`"),
                    "is not set".into(),
                )
            })?
        } else if let Some(file) = reference.strip_prefix("file:") {
            let text = std::fs::read_to_string(file)
                .map_err(|e| secret(format!("file `{file}`"), format!("cannot be read: {e}")))?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_owned()
        } else {
            return Err(secret(
                format!("`${{{reference}}}`"),
                "is neither ${env:NAME} nor ${file:PATH}".into(),
            ));
        };
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// How events travel (`[events] content-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentMode {
    /// Attributes in headers, the body is the data (seed 000's shape).
    #[default]
    Binary,
    /// The body is the whole CloudEvent.
    Structured,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[state]
url = "postgres://tenancy:${env:PG_PASSWORD}@db/tenancy"

[postgres.targets.pg-ap-south-1-shared]
url = "postgres://tenancy:${env:PG_PASSWORD}@db-ap/tenants"

[object-store.targets.s3-ap-south-1]
endpoint = "http://127.0.0.1:9000"
region = "ap-south-1"
path-style = true
access-key-id = "${env:S3_KEY}"
secret-access-key = "${file:SECRET_FILE}"

[kafka.targets.kafka-ap-south-1]
bootstrap-servers = "127.0.0.1:9092"
properties = { "security.protocol" = "plaintext" }

[apply]
concurrency = 4
detect-only = { planes = ["kafka"], tenants = ["t_5001"] }
"#;

    #[test]
    fn secrets_expand_from_env_and_files_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let secret = dir.path().join("s3-secret");
        std::fs::write(&secret, "s3cr3t\n").expect("write");
        let text = SAMPLE.replace("SECRET_FILE", &secret.display().to_string());
        let env = |k: &str| match k {
            "PG_PASSWORD" => Some("pw".to_owned()),
            "S3_KEY" => Some("AKIA".to_owned()),
            _ => None,
        };
        let c = Config::parse(&text, "tenancy.toml", &env).expect("parse");
        assert_eq!(c.state_url(), "postgres://tenancy:pw@db/tenancy");
        // Plane sections are kept for their planes, expanded.
        let s3 = &c.plane_section("object-store")["targets"]["s3-ap-south-1"];
        assert_eq!(
            (&s3["access-key-id"], &s3["secret-access-key"]),
            (&serde_json::json!("AKIA"), &serde_json::json!("s3cr3t"))
        );
        assert_eq!(s3["path-style"], true);
        assert!(c.planes.contains_key("kafka") && c.planes.contains_key("postgres"));
        assert!(c.apply.detect_only.covers("t_9", "kafka"));
        assert!(c.apply.detect_only.covers("t_5001", "postgres"));
        assert!(!c.apply.detect_only.covers("t_9", "postgres"));

        let only_pg = |k: &str| (k == "PG_PASSWORD").then(|| "pw".to_owned());
        let err = Config::parse(&text, "tenancy.toml", &only_pg).expect_err("unset");
        assert_eq!(
            err.to_string(),
            "tenancy.toml: `object-store.targets.s3-ap-south-1.access-key-id` refers to environment variable `S3_KEY`, which is not set"
        );
        let err = Config::parse("[postgres]\nbogus = 1\n", "t.toml", &env).expect_err("unknown");
        assert!(
            err.to_string()
                .starts_with("t.toml: [postgres]: unknown field `bogus`"),
            "{err}"
        );
        let err = Config::parse("[kafka.targets.k]\nbootstrap-servers = 9\n", "t.toml", &env)
            .expect_err("type");
        assert!(
            err.to_string().starts_with("t.toml: [kafka]: invalid type"),
            "{err}"
        );
        // One name per plane: an unknown one is an error, not a rule that silently never matches.
        let err = Config::parse(
            "[apply.detect-only]\nplanes = [\"database\"]\n",
            "t.toml",
            &env,
        )
        .expect_err("plane");
        assert_eq!(
            err.to_string(),
            format!(
                "t.toml: apply.detect-only.planes: `database` is not a plane (planes: {})",
                crate::planes::kinds()
            )
        );
        let err = Config::parse("[redis-typo]\n", "t.toml", &env).expect_err("section");
        assert!(
            err.to_string().contains("unknown field `redis-typo`"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_embedded_and_env_overrides_apply() {
        let c = Config::load_with_env(Some(Path::new("/nonexistent/tenancy.toml")), |_| None);
        assert!(matches!(c, Err(ConfigError::Read { .. })));
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("tenancy.toml");
        std::fs::write(&file, "").expect("write");
        let c = Config::load_with_env(Some(&file), |k| match k {
            "TENANCY_EMBEDDED_ROOT" => Some("/var/lib/tenancy".into()),
            "TENANCY_DETECT_ONLY" => Some("true".into()),
            _ => None,
        })
        .expect("load");
        assert_eq!(c.state_url(), "sqlite:///var/lib/tenancy/state.db");
        assert!(c.apply.detect_only.all);
        assert!(c.planes.is_empty());
    }

    #[test]
    fn the_documented_sample_is_a_valid_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tenancy.example.toml");
        let text = std::fs::read_to_string(&path).expect("sample");
        // Its secrets are references to files that exist only in a deployment: resolve every
        // reference to a placeholder, keep everything else as written.
        let mut plain = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            plain.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closed") + start;
            plain.push_str("secret");
            rest = &rest[end + 1..];
        }
        plain.push_str(rest);
        let c = Config::parse(&plain, "docs/tenancy.example.toml", &|_| None).expect("valid");
        let targets = |kind: &str| tenancy_plane::target_names(&c.plane_section(kind)).len();
        assert_eq!((targets("postgres"), targets("object-store")), (4, 4));
        assert_eq!(
            c.plane_section("kafka")["targets"]["kafka-ap-south-1"]["replication-factor"],
            3
        );
        assert_eq!(
            c.plane_section("object-store")["targets"]["s3-eu-central-1"]["path-style"],
            true
        );
        assert_eq!(c.api.tokens.len(), 2);
        assert_eq!(
            (c.api.requests_per_second, c.api.tenant_burst),
            (50.0, 40.0)
        );
        assert_eq!(c.api.tokens[1].organization.as_deref(), Some("org_acme"));
        assert_eq!(c.api.push.as_deref(), Some("origin"));
        assert_eq!(c.daemon.branch, "main");
        assert_eq!(c.daemon.fetch_interval_seconds, 30);
        assert_eq!(c.daemon.trigger_secret.as_deref(), Some("secret"));
        assert!(
            c.daemon
                .remote
                .as_deref()
                .is_some_and(|r| r.contains("@git.example.com"))
        );
        // Without a [daemon] table the defaults hold.
        let d = Config::parse("", "empty.toml", &|_| None)
            .expect("empty")
            .daemon;
        assert_eq!((d.branch.as_str(), d.fetch_interval_seconds), ("main", 30));
        assert!(c.apply.detect_only.covers("t_5001", "postgres"));
        // And every reference in it has the documented form.
        let err = Config::parse(&text, "sample", &|_| Some("x".into())).expect_err("files");
        assert!(matches!(err, ConfigError::Secret { .. }), "{err}");
    }
}
