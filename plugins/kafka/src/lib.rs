//! The Kafka plane (rdkafka's admin client; any Kafka-protocol broker).
//!
//! * `st-dedicated`: a topic per tenant-environment, `<prefix>-<tenant>_<env>`, with
//!   `concurrentJobs` × the plan's `partitionsPerJob` partitions and the plan's `retention.ms`;
//! * `mt-standard` and `hybrid`: the target's shared topic (records keyed by tenant id), whose
//!   partitions and retention come from the reconciler's configuration.
//!
//! Partitions only grow. A plan that would shrink a topic carries a refused change (as Strimzi
//! does: the topic is left as it is and the tenant is reported blocked), and so does growing a
//! topic on a broker without CreatePartitions (Kafka API 37; tansu lacks it), by name.
//! `retention.ms` and `cleanup.policy` drift is corrected with AlterConfigs. Suspension leaves
//! topics in place (access to Kafka is a matter of ACLs, which 0.1 does not manage); a
//! confirmed deletion removes a dedicated topic.
//!
//! Observation is two requests per target whatever the tenant count: one metadata request for
//! every topic, one DescribeConfigs for the topics Tenancy owns.

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, Profile, TenantEnv,
};
use tokio::sync::Mutex;

/// The client library, for callers (and tests) that need to speak to the same brokers.
pub use rdkafka;

const PLANE: &str = "kafka";

/// One Kafka cluster, by logical target name (platform/regions.yaml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaTarget {
    pub bootstrap_servers: String,
    /// Extra librdkafka client properties (`security.protocol`, `sasl.*`, `ssl.*`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Start of every topic name Tenancy creates here.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    #[serde(default = "default_shared_partitions")]
    pub shared_partitions: u32,
    #[serde(default = "default_shared_retention")]
    pub shared_retention_ms: u64,
    /// Partitions of a dedicated topic whose tenant declares no `concurrentJobs`.
    #[serde(default = "default_partitions")]
    pub default_partitions: u32,
    /// `retention.ms` of a dedicated topic whose plan sets none.
    #[serde(default = "default_shared_retention")]
    pub default_retention_ms: u64,
}

fn default_replication() -> i32 {
    1
}
fn default_prefix() -> String {
    "tenancy".into()
}
fn default_shared_partitions() -> u32 {
    12
}
fn default_shared_retention() -> u64 {
    7 * 24 * 3600 * 1000
}
fn default_partitions() -> u32 {
    3
}

impl KafkaTarget {
    /// A target with defaults for everything but the brokers.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaTarget {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
            replication_factor: default_replication(),
            topic_prefix: default_prefix(),
            shared_partitions: default_shared_partitions(),
            shared_retention_ms: default_shared_retention(),
            default_partitions: default_partitions(),
            default_retention_ms: default_shared_retention(),
        }
    }

    pub fn shared_topic(&self) -> String {
        format!("{}-shared", self.topic_prefix)
    }

    pub fn dedicated_topic(&self, d: &TenantEnv) -> String {
        format!("{}-{}", self.topic_prefix, d.qualified_name())
    }
}

/// The `[kafka]` section of `tenancy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    #[serde(default)]
    targets: BTreeMap<String, KafkaTarget>,
    /// Seconds one admin request may take (default 10).
    timeout_seconds: Option<u64>,
}

/// Registers the Kafka plane (`[kafka]`, a region's `targets.kafka`, a plan's `spec.kafka`).
pub struct Factory;

impl tenancy_plane::PlaneFactory for Factory {
    fn about(&self) -> tenancy_plane::About {
        tenancy_plane::About::new(PLANE, "runtime", "Kafka", "topics").required()
    }
    fn build(&self, section: &serde_json::Value) -> Result<Box<dyn Plane>, String> {
        let s: Section = tenancy_plane::factory::section(section)?;
        Ok(Box::new(KafkaPlane::new(KafkaConfig {
            targets: s.targets,
            timeout: s.timeout_seconds.map(Duration::from_secs),
        })))
    }
}

/// A plan's `spec.kafka`: how a dedicated topic follows the tenant's quotas.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanOptions {
    /// Partitions per concurrent job (default 1).
    partitions_per_job: Option<u32>,
    retention_ms: Option<u64>,
}

impl PlanOptions {
    fn of(d: &TenantEnv) -> PlanOptions {
        PlanOptions::deserialize(&d.options).unwrap_or_default()
    }

    /// Dedicated topic partitions: `concurrentJobs` × `partitionsPerJob`, when jobs are set.
    fn partitions(&self, d: &TenantEnv) -> Option<u32> {
        d.concurrent_jobs.map(|j| {
            u32::try_from(j)
                .unwrap_or(u32::MAX)
                .saturating_mul(self.partitions_per_job.unwrap_or(1))
                .max(1)
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {
    pub targets: BTreeMap<String, KafkaTarget>,
    /// How long one admin request may take.
    pub timeout: Option<Duration>,
}

/// A topic as it should be, or as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicState {
    partitions: u32,
    retention_ms: Option<String>,
    cleanup_policy: Option<String>,
}

struct Target {
    admin: AdminClient<DefaultClientContext>,
    config: KafkaTarget,
}

pub struct KafkaPlane {
    config: KafkaConfig,
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

fn unavailable(target: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unavailable {
        plane: PLANE,
        message: format!("target `{target}`: {e}"),
    }
}

fn failed(resource: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Failed {
        plane: PLANE,
        resource: resource.to_owned(),
        message: e.to_string(),
    }
}

/// What a broker that lacks an admin API says, in words an operator can act on.
fn unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::InvalidRequest
    )
}

impl KafkaPlane {
    pub fn new(config: KafkaConfig) -> Self {
        KafkaPlane {
            config,
            targets: Mutex::new(HashMap::new()),
        }
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.unwrap_or(Duration::from_secs(10))
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout()))
            .operation_timeout(Some(self.timeout()))
    }

    async fn target(&self, name: &str) -> Result<Arc<Target>, PlaneError> {
        let mut targets = self.targets.lock().await;
        if let Some(t) = targets.get(name) {
            return Ok(t.clone());
        }
        let cfg = self
            .config
            .targets
            .get(name)
            .ok_or_else(|| PlaneError::UnknownTarget {
                plane: PLANE,
                target: name.to_owned(),
            })?;
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("client.id", "tenancy")
            .set("socket.timeout.ms", self.timeout().as_millis().to_string())
            .set("log_level", "3");
        for (k, v) in &cfg.properties {
            client.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> = client
            .create()
            .map_err(|e| unavailable(name, format!("client configuration: {e}")))?;
        let t = Arc::new(Target {
            admin,
            config: cfg.clone(),
        });
        targets.insert(name.to_owned(), t.clone());
        Ok(t)
    }

    /// Every topic and its partition count: one metadata request.
    async fn topics(
        &self,
        name: &str,
        t: &Arc<Target>,
    ) -> Result<HashMap<String, u32>, PlaneError> {
        let t = t.clone();
        let timeout = self.timeout();
        let metadata =
            tokio::task::spawn_blocking(move || t.admin.inner().fetch_metadata(None, timeout))
                .await
                .map_err(|e| unavailable(name, e))?
                .map_err(|e| unavailable(name, format!("metadata: {e}")))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|topic| topic.error().is_none())
            .map(|topic| (topic.name().to_owned(), topic.partitions().len() as u32))
            .collect())
    }

    /// `retention.ms` and `cleanup.policy` of `topics`: one DescribeConfigs request.
    async fn configs(
        &self,
        name: &str,
        t: &Target,
        topics: &[String],
    ) -> Result<HashMap<String, (Option<String>, Option<String>)>, PlaneError> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        let specifiers: Vec<ResourceSpecifier> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let results = t
            .admin
            .describe_configs(&specifiers, &self.options())
            .await
            .map_err(|e| unavailable(name, format!("DescribeConfigs: {e}")))?;
        let mut out = HashMap::new();
        for r in results {
            let resource =
                r.map_err(|code| unavailable(name, format!("DescribeConfigs: {code}")))?;
            if let OwnedResourceSpecifier::Topic(topic) = &resource.specifier {
                let get = |k: &str| resource.get(k).and_then(|e| e.value.clone());
                out.insert(topic.clone(), (get("retention.ms"), get("cleanup.policy")));
            }
        }
        Ok(out)
    }

    fn desired_state(t: &KafkaTarget, d: &TenantEnv) -> (String, TopicState) {
        if d.profile == Profile::StDedicated {
            let options = PlanOptions::of(d);
            (
                t.dedicated_topic(d),
                TopicState {
                    partitions: options.partitions(d).unwrap_or(t.default_partitions).max(1),
                    retention_ms: Some(
                        options
                            .retention_ms
                            .unwrap_or(t.default_retention_ms)
                            .to_string(),
                    ),
                    cleanup_policy: Some("delete".into()),
                },
            )
        } else {
            (
                t.shared_topic(),
                TopicState {
                    partitions: t.shared_partitions.max(1),
                    retention_ms: Some(t.shared_retention_ms.to_string()),
                    cleanup_policy: Some("delete".into()),
                },
            )
        }
    }

    async fn plan_async(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let mut by_target: BTreeMap<&str, Vec<&TenantEnv>> = BTreeMap::new();
        for d in desired.iter().filter(|d| d.lifecycle != Lifecycle::Draft) {
            by_target
                .entry(d.placement.target.as_str())
                .or_default()
                .push(d);
        }
        let mut changes = Vec::new();
        for (name, envs) in by_target {
            let t = self.target(name).await?;
            let existing = self.topics(name, &t).await?;
            let mut wanted: Vec<String> = envs
                .iter()
                .map(|d| Self::desired_state(&t.config, d).0)
                .filter(|topic| existing.contains_key(topic))
                .collect();
            wanted.sort();
            wanted.dedup();
            let configs = self.configs(name, &t, &wanted).await?;
            let mut seen = HashSet::new();
            for d in envs {
                let (topic, want) = Self::desired_state(&t.config, d);
                let shared = d.profile != Profile::StDedicated;
                if !seen.insert(topic.clone()) {
                    continue;
                }
                let resource = format!("topic {topic}");
                let change = |op, fields| Change::new(PLANE, d, resource.clone(), op, fields);
                let f = FieldChange::new;
                let have = existing.get(&topic).map(|&partitions| {
                    let (retention_ms, cleanup_policy) =
                        configs.get(&topic).cloned().unwrap_or_default();
                    TopicState {
                        partitions,
                        retention_ms,
                        cleanup_policy,
                    }
                });
                match (d.lifecycle, have) {
                    // The shared topic outlives any one tenant.
                    (Lifecycle::Deleted, Some(_)) if !shared => {
                        changes.push(change(Op::Delete, Vec::new()))
                    }
                    (Lifecycle::Deleted, _) => {}
                    (_, None) => changes.push(change(
                        Op::Create,
                        vec![
                            f("partitions", None, Some(want.partitions.to_string())),
                            f("retention.ms", None, want.retention_ms.clone()),
                            f("cleanup.policy", None, want.cleanup_policy.clone()),
                        ],
                    )),
                    (_, Some(have)) => {
                        let mut fields = Vec::new();
                        if have.partitions != want.partitions {
                            fields.push(f(
                                "partitions",
                                Some(have.partitions.to_string()),
                                Some(want.partitions.to_string()),
                            ));
                        }
                        if have.retention_ms != want.retention_ms {
                            fields.push(f(
                                "retention.ms",
                                have.retention_ms.clone(),
                                want.retention_ms.clone(),
                            ));
                        }
                        if have.cleanup_policy != want.cleanup_policy {
                            fields.push(f(
                                "cleanup.policy",
                                have.cleanup_policy.clone(),
                                want.cleanup_policy.clone(),
                            ));
                        }
                        if fields.is_empty() {
                            continue;
                        }
                        let mut c = change(Op::Update, fields);
                        if want.partitions < have.partitions {
                            c = c.refuse(format!(
                                "Kafka cannot reduce a topic's partitions ({} → {}); the topic is \
                                 left as it is — keep the count, or recreate the topic by hand",
                                have.partitions, want.partitions
                            ));
                        }
                        changes.push(c);
                    }
                }
            }
        }
        Ok(changes)
    }

    async fn apply_async(&self, change: &Change) -> Result<(), PlaneError> {
        let resource = change.resource.as_str();
        if let Some(reason) = &change.refused {
            return Err(PlaneError::Refused {
                plane: PLANE,
                resource: resource.to_owned(),
                message: reason.clone(),
            });
        }
        let d = change
            .desired
            .as_ref()
            .ok_or_else(|| failed(resource, "change carries no desired state"))?;
        let name = d.placement.target.as_str();
        let t = self.target(name).await?;
        let (topic, want) = Self::desired_state(&t.config, d);
        let opts = self.options();
        let admin_error = |api: &str, e: KafkaError| match e {
            KafkaError::AdminOp(code) if unsupported(code) => PlaneError::Refused {
                plane: PLANE,
                resource: resource.to_owned(),
                message: format!("broker of target `{name}` does not support {api}: {code}"),
            },
            other => unavailable(name, format!("{api}: {other}")),
        };
        match change.op {
            Op::Delete => {
                let results = t
                    .admin
                    .delete_topics(&[topic.as_str()], &opts)
                    .await
                    .map_err(|e| admin_error("DeleteTopics", e))?;
                for r in results {
                    match r {
                        Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) | Ok(_) => {}
                        Err((_, code)) => {
                            return Err(failed(resource, format!("DeleteTopics: {code}")));
                        }
                    }
                }
            }
            Op::Create => {
                let retention = want.retention_ms.clone().unwrap_or_default();
                let cleanup = want.cleanup_policy.clone().unwrap_or_default();
                let new = NewTopic::new(
                    &topic,
                    i32::try_from(want.partitions).unwrap_or(i32::MAX),
                    TopicReplication::Fixed(t.config.replication_factor),
                )
                .set("retention.ms", &retention)
                .set("cleanup.policy", &cleanup);
                let results = t
                    .admin
                    .create_topics([&new], &opts)
                    .await
                    .map_err(|e| admin_error("CreateTopics", e))?;
                for r in results {
                    match r {
                        // A crash after creation: the next plan reconciles the rest.
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) | Ok(_) => {}
                        Err((_, code)) => {
                            return Err(failed(resource, format!("CreateTopics: {code}")));
                        }
                    }
                }
            }
            Op::Update => {
                let existing = self.topics(name, &t).await?;
                let have = existing.get(&topic).copied().unwrap_or(0);
                if want.partitions > have {
                    let grow = NewPartitions::new(&topic, want.partitions as usize);
                    let results = t
                        .admin
                        .create_partitions([&grow], &opts)
                        .await
                        .map_err(|e| admin_error("CreatePartitions", e))?;
                    for r in results {
                        match r {
                            Ok(_) => {}
                            Err((_, code)) if unsupported(code) => {
                                return Err(PlaneError::Refused {
                                    plane: PLANE,
                                    resource: resource.to_owned(),
                                    message: format!(
                                        "broker of target `{name}` does not support CreatePartitions \
                                         (Kafka API 37): {code}; grow the topic to {} partitions by \
                                         hand or use a broker that supports it",
                                        want.partitions
                                    ),
                                });
                            }
                            Err((_, code)) => {
                                return Err(failed(resource, format!("CreatePartitions: {code}")));
                            }
                        }
                    }
                }
                let retention = want.retention_ms.clone().unwrap_or_default();
                let cleanup = want.cleanup_policy.clone().unwrap_or_default();
                let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic))
                    .set("retention.ms", &retention)
                    .set("cleanup.policy", &cleanup);
                let results = t
                    .admin
                    .alter_configs([&alter], &opts)
                    .await
                    .map_err(|e| admin_error("AlterConfigs", e))?;
                for r in results {
                    if let Err((_, code)) = r {
                        return Err(failed(resource, format!("AlterConfigs: {code}")));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Plane for KafkaPlane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        let t = self
            .config
            .targets
            .get(&d.placement.target)
            .ok_or_else(|| PlaneError::unknown_target(PLANE, &d.placement.target))?;
        let (topic, state) = Self::desired_state(t, d);
        // A shared topic carries many tenants, keyed by tenant id; a dedicated one is theirs.
        let key = (d.profile != Profile::StDedicated).then(|| d.tenant.clone());
        Ok(serde_json::json!({
            "type": "kafka", "target": d.placement.target,
            "queue": topic, "partitionKey": key, "partitions": state.partitions,
        }))
    }

    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>> {
        Box::pin(self.plan_async(desired))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()> {
        Box::pin(self.apply_async(change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_plane::Placement;

    #[test]
    fn dedicated_and_shared_topics_follow_the_plan() {
        let target = KafkaTarget::new("127.0.0.1:9092");
        let mut d = TenantEnv {
            tenant: "t_5002".into(),
            environment: "prod".into(),
            organization: "org_acme".into(),
            profile: Profile::StDedicated,
            lifecycle: Lifecycle::Active,
            placement: Placement {
                region: "ap-south-1".into(),
                target: "kafka-ap-south-1".into(),
            },
            retention_days: None,
            encryption_key: None,
            storage_gib: None,
            concurrent_jobs: Some(4),
            options: serde_json::json!({ "partitionsPerJob": 2, "retentionMs": 86_400_000 }),
        };
        let (topic, state) = KafkaPlane::desired_state(&target, &d);
        assert_eq!(topic, "tenancy-t_5002_prod");
        assert_eq!(state.partitions, 8);
        assert_eq!(state.retention_ms.as_deref(), Some("86400000"));
        // Without jobs the target's default; without plan settings one partition per job.
        d.concurrent_jobs = None;
        assert_eq!(KafkaPlane::desired_state(&target, &d).1.partitions, 3);
        d.concurrent_jobs = Some(5);
        d.options = serde_json::Value::Null;
        assert_eq!(KafkaPlane::desired_state(&target, &d).1.partitions, 5);
        d.profile = Profile::Hybrid;
        let (topic, state) = KafkaPlane::desired_state(&target, &d);
        assert_eq!(topic, "tenancy-shared");
        assert_eq!(state.partitions, 12);
    }
}
