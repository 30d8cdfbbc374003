//! The object-store plane, against any S3 endpoint (AWS, MinIO, Ceph, moto; path-style optional).
//!
//! * `st-dedicated` / `hybrid`: a bucket per tenant-environment (`<prefix>-<tenant>-<env>`,
//!   see [`tenancy_plane::bucket_name`]) with tags (tenant, environment, organization, profile),
//!   versioning, a lifecycle rule from `retentionDays`, default encryption (SSE-KMS with the
//!   tenant's key when its policy is `kms-per-tenant`, else SSE-S3) and, while the tenant is
//!   suspended or archived, a bucket policy that denies writes. Drift in any of these is found
//!   and corrected; rules, tags and policy statements are owned whole by Tenancy.
//! * `mt-standard`: a prefix `tenants/<tenant>/<env>/` in the target's shared bucket, recorded
//!   in the tenant's registry object `.tenancy/tenants/<tenant>.json` (prefix → the same
//!   configuration as a dedicated bucket's, as JSON; the labels as object tags). S3 allows
//!   1,000 lifecycle rules and one default
//!   encryption per bucket, so a shared bucket cannot hold a rule or key per prefix: retention
//!   and key id are recorded on the marker for the tenant's writers (and the shared bucket's
//!   own configuration is the platform's). The database role is what suspends an mt tenant.
//!
//! Observation is bulk: one `ListBuckets` per target; one `ListObjectsV2` page per 1,000 mt
//! tenants (a registry's ETag is compared with the MD5 of the desired document, so an
//! unchanged tenant costs no request of its own); five GETs per dedicated bucket, sixteen
//! buckets at a time; targets observed concurrently.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier, ServerSideEncryption,
    ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Tag, Tagging, VersioningConfiguration,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tenancy_plane::object::ObjectConfig;
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, Profile, TenantEnv,
    bucket_name,
};
use tokio::sync::Mutex;

/// The SDK, for callers (and tests) that need to speak to the same endpoints.
pub use aws_sdk_s3;

mod config;
mod errors;
mod registry;
pub use config::{Factory, S3Config, S3Target};
use errors::*;
use registry::*;

const PLANE: &str = "object-store";
/// Where a shared bucket keeps each tenant's registry of prefixes, away from tenant data, so
/// that observing never lists a tenant's objects.
const REGISTRY: &str = ".tenancy/tenants/";
const RETENTION_RULE: &str = "tenancy-retention";
const SUSPENDED_SID: &str = "TenancySuspended";
/// Dedicated buckets observed at once.
const OBSERVE_CONCURRENCY: usize = 16;

/// Up to this many tenant-environments in a target are observed resource by resource rather
/// than by listing the target (see `observe_targeted`).
const TARGETED_LIMIT: usize = 32;

struct Target {
    client: Client,
    config: S3Target,
}

pub struct S3Plane {
    config: S3Config,
    clients: Mutex<HashMap<String, std::sync::Arc<Target>>>,
    /// Shared buckets known to exist (created or seen) in this process.
    shared_ready: Mutex<HashSet<(String, String)>>,
    /// Target-level observations made ahead of a plan ([`Plane::prefetch`]), used once.
    prefetched: Mutex<HashMap<String, TargetListing>>,
}

/// What a target holds, independent of the desired state: its buckets, and the registries in
/// its shared bucket (key → ETag).
struct TargetListing {
    buckets: HashSet<String>,
    registries: HashMap<String, String>,
}

fn prefix_of(d: &TenantEnv) -> String {
    format!("tenants/{}/{}/", d.tenant, d.environment)
}

impl S3Plane {
    pub fn new(config: S3Config) -> Self {
        S3Plane {
            config,
            clients: Mutex::new(HashMap::new()),
            shared_ready: Mutex::new(HashSet::new()),
            prefetched: Mutex::new(HashMap::new()),
        }
    }

    async fn target(&self, name: &str) -> Result<std::sync::Arc<Target>, PlaneError> {
        let mut clients = self.clients.lock().await;
        if let Some(t) = clients.get(name) {
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
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(Credentials::new(
                cfg.access_key_id.clone(),
                cfg.secret_access_key.clone(),
                cfg.session_token.clone(),
                None,
                "tenancy.toml",
            ))
            .force_path_style(cfg.path_style)
            // Checksums only where S3 requires them: works with every S3 implementation.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let target = std::sync::Arc::new(Target {
            client: Client::from_conf(builder.build()),
            config: cfg.clone(),
        });
        clients.insert(name.to_owned(), target.clone());
        Ok(target)
    }

    async fn list_buckets(name: &str, t: &Target) -> Result<HashSet<String>, PlaneError> {
        let mut out = HashSet::new();
        let mut token = None;
        loop {
            let page = t
                .client
                .list_buckets()
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| match sdk_error("ListBuckets", e) {
                    PlaneError::Failed { message, .. } => unavailable(name, message),
                    other => other,
                })?;
            out.extend(
                page.buckets()
                    .iter()
                    .filter_map(|b| b.name().map(str::to_owned)),
            );
            token = page.continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Registries in a shared bucket: key → ETag (quotes stripped).
    async fn list_registries(
        t: &Target,
        bucket: &str,
    ) -> Result<HashMap<String, String>, PlaneError> {
        let mut out = HashMap::new();
        let mut token = None;
        loop {
            let page = t
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(REGISTRY)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("bucket {bucket}"), e))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    out.insert(
                        key.to_owned(),
                        o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    );
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// A tenant's registry; `Ok(None)` when it does not exist, `Err` when it is unreadable.
    /// A tenant's registry: `Ok(Ok(None))` when it does not exist, `Ok(Err(why))` when it
    /// exists but is not a valid registry (drift, to be rewritten), `Err` when S3 could not be
    /// read (the service's failure, never mistaken for an empty registry).
    async fn read_registry(
        t: &Target,
        bucket: &str,
        key: &str,
    ) -> Result<Result<Option<Registry>, String>, PlaneError> {
        let resource = format!("prefix registry {bucket}/{key}");
        let object = match t.client.get_object().bucket(bucket).key(key).send().await {
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket")) => {
                return Ok(Ok(None));
            }
            other => other.map_err(|e| sdk_error(&resource, e))?,
        };
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| unavailable(&resource, e))?
            .into_bytes();
        Ok(serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("invalid: {e}")))
    }

    /// The configuration of a dedicated bucket, read with five GETs.
    async fn observe_bucket(client: Client, bucket: String) -> Result<ObjectConfig, PlaneError> {
        let resource = format!("bucket {bucket}");
        let (tags, versioning, lifecycle, encryption, policy) = tokio::join!(
            client.get_bucket_tagging().bucket(&bucket).send(),
            client.get_bucket_versioning().bucket(&bucket).send(),
            client
                .get_bucket_lifecycle_configuration()
                .bucket(&bucket)
                .send(),
            client.get_bucket_encryption().bucket(&bucket).send(),
            client.get_bucket_policy().bucket(&bucket).send(),
        );
        let tags = absent_ok(&resource, tags, &["NoSuchTagSet", "NoSuchTagSetError"])?
            .map(|t| {
                t.tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let versioning = match versioning {
            Ok(v) => v
                .status()
                .is_some_and(|s| *s == BucketVersioningStatus::Enabled),
            Err(e) => match versioning_from_misnamed_reply(&e) {
                Some(enabled) => enabled,
                None => return Err(sdk_error(&resource, e)),
            },
        };
        let retention_days = absent_ok(&resource, lifecycle, &["NoSuchLifecycleConfiguration"])?
            .and_then(|l| {
                l.rules()
                    .iter()
                    .find(|r| {
                        r.id() == Some(RETENTION_RULE) && r.status() == &ExpirationStatus::Enabled
                    })
                    .and_then(|r| r.expiration().and_then(|e| e.days()))
                    .and_then(|d| u32::try_from(d).ok())
            });
        let encryption = absent_ok(
            &resource,
            encryption,
            &["ServerSideEncryptionConfigurationNotFoundError"],
        )?;
        let encryption_key = encryption.and_then(|e| {
            let rule = e.server_side_encryption_configuration()?.rules().first()?;
            let default = rule.apply_server_side_encryption_by_default()?;
            (default.sse_algorithm() == &ServerSideEncryption::AwsKms)
                .then(|| default.kms_master_key_id().unwrap_or("aws/s3").to_owned())
        });
        let writable = !absent_ok(&resource, policy, &["NoSuchBucketPolicy"])?
            .and_then(|p| p.policy().map(|p| p.contains(SUSPENDED_SID)))
            .unwrap_or(false);
        Ok(ObjectConfig {
            tags,
            versioning,
            retention_days,
            encryption_key,
            writable,
        })
    }

    async fn plan_async(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let mut by_target: BTreeMap<&str, Vec<&TenantEnv>> = BTreeMap::new();
        for d in desired.iter().filter(|d| d.lifecycle != Lifecycle::Draft) {
            by_target
                .entry(d.placement.target.as_str())
                .or_default()
                .push(d);
        }
        // Targets are independent: observe them concurrently.
        let mut set = tokio::task::JoinSet::new();
        for (name, envs) in by_target {
            let t = self.target(name).await?;
            let envs: Vec<TenantEnv> = envs.into_iter().cloned().collect();
            let listing = self.prefetched.lock().await.remove(name);
            let name = name.to_owned();
            set.spawn(async move { Self::plan_target(&name, &t, &envs, listing).await });
        }
        let mut changes = Vec::new();
        while let Some(joined) = set.join_next().await {
            changes.extend(joined.map_err(|e| unavailable("(task)", e))??);
        }
        // A stable order: by tenant, environment, resource.
        changes.sort_by(|a, b| {
            (&a.tenant, &a.environment, &a.resource).cmp(&(&b.tenant, &b.environment, &b.resource))
        });
        Ok(changes)
    }

    /// List a target's buckets and its shared bucket's registries.
    async fn list_target(name: &str, t: &Target) -> Result<TargetListing, PlaneError> {
        let buckets = Self::list_buckets(name, t).await?;
        let shared = t.config.shared_bucket();
        let registries = if buckets.contains(&shared) {
            Self::list_registries(t, &shared).await?
        } else {
            HashMap::new()
        };
        Ok(TargetListing {
            buckets,
            registries,
        })
    }

    /// What a listing would say about just these tenant-environments, asked resource by
    /// resource (HeadBucket, HeadObject): a few requests instead of listing every registry, for
    /// a pass over the handful of tenants one commit changed.
    async fn observe_targeted(
        name: &str,
        t: &Target,
        envs: &[TenantEnv],
    ) -> Result<TargetListing, PlaneError> {
        let shared = t.config.shared_bucket();
        let mut buckets: BTreeSet<String> = envs
            .iter()
            .filter(|d| d.profile != Profile::MtStandard)
            .map(|d| bucket_name(&t.config.bucket_prefix, &d.tenant, &d.environment))
            .collect();
        let keys: BTreeSet<String> = envs
            .iter()
            .filter(|d| d.profile == Profile::MtStandard)
            .map(|d| registry_key(&d.tenant))
            .collect();
        if !keys.is_empty() {
            buckets.insert(shared.clone());
        }
        let is_404 = |status: Option<u16>| status == Some(404);
        let heads = futures_util::future::join_all(buckets.iter().map(|b| async move {
            match t.client.head_bucket().bucket(b).send().await {
                Ok(_) => Ok(Some(b.clone())),
                Err(e) if is_404(e.raw_response().map(|r| r.status().as_u16())) => Ok(None),
                Err(e) => Err(match sdk_error(&format!("bucket {b}"), e) {
                    PlaneError::Failed { message, .. } => unavailable(name, message),
                    other => other,
                }),
            }
        }))
        .await;
        let mut listing = TargetListing {
            buckets: HashSet::new(),
            registries: HashMap::new(),
        };
        for h in heads {
            listing.buckets.extend(h?);
        }
        if listing.buckets.contains(&shared) {
            let shared = &shared;
            let tags = futures_util::future::join_all(keys.iter().map(|k| async move {
                match t.client.head_object().bucket(shared).key(k).send().await {
                    Ok(o) => Ok(Some((
                        k.clone(),
                        o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    ))),
                    Err(e) if is_404(e.raw_response().map(|r| r.status().as_u16())) => Ok(None),
                    Err(e) => Err(sdk_error(&format!("prefix registry {shared}/{k}"), e)),
                }
            }))
            .await;
            for tag in tags {
                listing.registries.extend(tag?);
            }
        }
        Ok(listing)
    }

    async fn prefetch_async(&self, targets: &[String]) {
        let mut set = tokio::task::JoinSet::new();
        for name in targets {
            let Ok(t) = self.target(name).await else {
                continue;
            };
            let name = name.clone();
            set.spawn(async move { (name.clone(), Self::list_target(&name, &t).await) });
        }
        while let Some(Ok((name, listing))) = set.join_next().await {
            if let Ok(listing) = listing {
                self.prefetched.lock().await.insert(name, listing);
            }
        }
    }

    async fn plan_target(
        name: &str,
        t: &Target,
        envs: &[TenantEnv],
        listing: Option<TargetListing>,
    ) -> Result<Vec<Change>, PlaneError> {
        let TargetListing {
            buckets,
            registries,
        } = match listing {
            Some(l) => l,
            None if envs.len() <= TARGETED_LIMIT => Self::observe_targeted(name, t, envs).await?,
            None => Self::list_target(name, t).await?,
        };
        let shared = t.config.shared_bucket();
        // Dedicated buckets that exist, observed concurrently.
        let dedicated: BTreeSet<String> = envs
            .iter()
            .filter(|d| d.profile != Profile::MtStandard)
            .map(|d| bucket_name(&t.config.bucket_prefix, &d.tenant, &d.environment))
            .filter(|b| buckets.contains(b))
            .collect();
        let mut observed: HashMap<String, ObjectConfig> = HashMap::new();
        let dedicated: Vec<String> = dedicated.into_iter().collect();
        for chunk in dedicated.chunks(OBSERVE_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for b in chunk {
                let client = t.client.clone();
                let b = b.clone();
                set.spawn(async move { (b.clone(), Self::observe_bucket(client, b).await) });
            }
            while let Some(joined) = set.join_next().await {
                let (bucket, result) = joined.map_err(|e| unavailable(name, e))?;
                observed.insert(bucket, result?);
            }
        }
        // mt-standard tenants: one registry each; unchanged ones need no request.
        let mut current_mt: HashMap<&str, Result<Registry, String>> = HashMap::new();
        let mut mt: BTreeMap<&str, Vec<&TenantEnv>> = BTreeMap::new();
        for d in envs.iter().filter(|d| d.profile == Profile::MtStandard) {
            mt.entry(d.tenant.as_str()).or_default().push(d);
        }
        for (tenant, tenant_envs) in &mt {
            let key = registry_key(tenant);
            let current = match registries.get(&key) {
                None => Ok(Registry::default()),
                Some(etag) => {
                    let want = Registry::desired(tenant_envs.iter().copied());
                    if *etag == md5_hex(&want.document()) {
                        Ok(want)
                    } else {
                        Self::read_registry(t, &shared, &key)
                            .await?
                            .map(Option::unwrap_or_default)
                    }
                }
            };
            current_mt.insert(tenant, current);
        }
        let mut changes = Vec::new();
        let mut seen = HashSet::new();
        for d in envs {
            let want = ObjectConfig::desired(d);
            let (resource, current): (String, Option<Result<ObjectConfig, String>>) =
                if d.profile == Profile::MtStandard {
                    let current = match &current_mt[d.tenant.as_str()] {
                        Ok(registry) => registry.prefixes.get(&prefix_of(d)).cloned().map(Ok),
                        Err(why) => Some(Err(why.clone())),
                    };
                    (format!("prefix {shared}/{}", prefix_of(d)), current)
                } else {
                    let b = bucket_name(&t.config.bucket_prefix, &d.tenant, &d.environment);
                    let current = observed.remove(&b).map(Ok);
                    (format!("bucket {b}"), current)
                };
            if !seen.insert(resource.clone()) {
                continue;
            }
            let change = |op, fields| Change::new(PLANE, d, resource.clone(), op, fields);
            match (d.lifecycle, current) {
                (Lifecycle::Deleted, None) => {}
                (Lifecycle::Deleted, Some(_)) => changes.push(change(Op::Delete, Vec::new())),
                (_, None) => changes.push(change(Op::Create, want.diff_from(None))),
                (_, Some(Ok(cur))) => {
                    let fields = want.diff_from(Some(&cur));
                    if !fields.is_empty() {
                        changes.push(change(Op::Update, fields));
                    }
                }
                (_, Some(Err(why))) => changes.push(change(
                    Op::Update,
                    vec![FieldChange::new(
                        "configuration",
                        Some(why),
                        Some("rewritten".into()),
                    )],
                )),
            }
        }
        Ok(changes)
    }

    /// Create a bucket unless it exists (idempotent: "already owned by you" is success).
    async fn ensure_bucket(&self, t: &Target, bucket: &str) -> Result<(), PlaneError> {
        let mut create = t.client.create_bucket().bucket(bucket);
        if t.config.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(t.config.region.as_str()))
                    .build(),
            );
        }
        absent_ok(
            &format!("bucket {bucket}"),
            create.send().await,
            &["BucketAlreadyOwnedByYou"],
        )
        .map(|_| ())
    }

    async fn apply_dedicated(
        &self,
        t: &Target,
        bucket: &str,
        d: &TenantEnv,
        resource: &str,
    ) -> Result<(), PlaneError> {
        let c = &t.client;
        let want = ObjectConfig::desired(d);
        self.ensure_bucket(t, bucket).await?;
        let tags = want
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| build_error(resource, e))?;
        c.put_bucket_tagging()
            .bucket(bucket)
            .tagging(
                Tagging::builder()
                    .set_tag_set(Some(tags))
                    .build()
                    .map_err(|e| build_error(resource, e))?,
            )
            .send()
            .await
            .map_err(|e| sdk_error(resource, e))?;
        // Versioning is only ever enabled: suspending it is never what a tenant bucket wants.
        c.put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(resource, e))?;
        match want.retention_days {
            Some(days) => {
                let days = i32::try_from(days).unwrap_or(i32::MAX);
                let rule = LifecycleRule::builder()
                    .id(RETENTION_RULE)
                    .status(ExpirationStatus::Enabled)
                    .filter(LifecycleRuleFilter::builder().prefix("").build())
                    .expiration(LifecycleExpiration::builder().days(days).build())
                    .noncurrent_version_expiration(
                        NoncurrentVersionExpiration::builder()
                            .noncurrent_days(days)
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_error(resource, e))?;
                c.put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .lifecycle_configuration(
                        BucketLifecycleConfiguration::builder()
                            .rules(rule)
                            .build()
                            .map_err(|e| build_error(resource, e))?,
                    )
                    .send()
                    .await
                    .map_err(|e| sdk_error(resource, e))?;
            }
            None => {
                c.delete_bucket_lifecycle()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|e| sdk_error(resource, e))?;
            }
        }
        let by_default = match &want.encryption_key {
            Some(key) => ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .kms_master_key_id(key),
            None => {
                ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256)
            }
        }
        .build()
        .map_err(|e| build_error(resource, e))?;
        c.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(
                        ServerSideEncryptionRule::builder()
                            .apply_server_side_encryption_by_default(by_default)
                            .build(),
                    )
                    .build()
                    .map_err(|e| build_error(resource, e))?,
            )
            .send()
            .await
            .map_err(|e| sdk_error(resource, e))?;
        if want.writable {
            absent_ok(
                resource,
                c.delete_bucket_policy().bucket(bucket).send().await,
                &["NoSuchBucketPolicy"],
            )?;
        } else {
            let policy = serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": SUSPENDED_SID,
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                    "Resource": [format!("arn:aws:s3:::{bucket}/*")]
                }]
            });
            c.put_bucket_policy()
                .bucket(bucket)
                .policy(policy.to_string())
                .send()
                .await
                .map_err(|e| sdk_error(resource, e))?;
        }
        Ok(())
    }

    /// Delete every object version and delete marker under `prefix` (`""` = whole bucket).
    async fn empty(
        &self,
        t: &Target,
        bucket: &str,
        prefix: &str,
        resource: &str,
    ) -> Result<(), PlaneError> {
        loop {
            let page = match t
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
            {
                Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
                other => other.map_err(|e| sdk_error(resource, e))?,
            };
            let mut ids = Vec::new();
            for (key, version) in page
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    page.delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                )
            {
                if let Some(key) = key {
                    ids.push(
                        ObjectIdentifier::builder()
                            .key(key)
                            .set_version_id(version.map(str::to_owned))
                            .build()
                            .map_err(|e| build_error(resource, e))?,
                    );
                }
            }
            if ids.is_empty() {
                return Ok(());
            }
            t.client
                .delete_objects()
                .bucket(bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(ids))
                        .quiet(true)
                        .build()
                        .map_err(|e| build_error(resource, e))?,
                )
                .send()
                .await
                .map_err(|e| sdk_error(resource, e))?;
        }
    }

    async fn apply_async(&self, change: &Change) -> Result<(), PlaneError> {
        let resource = change.resource.as_str();
        let d = change
            .desired
            .as_ref()
            .ok_or_else(|| build_error(resource, "change carries no desired state"))?;
        let t = self.target(&d.placement.target).await?;
        if d.profile == Profile::MtStandard {
            let shared = t.config.shared_bucket();
            let prefix = prefix_of(d);
            if change.op == Op::Delete {
                self.empty(&t, &shared, &prefix, resource).await?;
            } else {
                let key = (d.placement.target.clone(), shared.clone());
                if !self.shared_ready.lock().await.contains(&key) {
                    self.ensure_bucket(&t, &shared).await?;
                    self.shared_ready.lock().await.insert(key);
                }
            }
            // Read-modify-write of the tenant's registry: a tenant's changes are applied one
            // at a time, so no other writer races this one. An invalid registry is rebuilt; one
            // that cannot be read fails the change.
            let key = registry_key(&d.tenant);
            let mut registry = Self::read_registry(&t, &shared, &key)
                .await?
                .unwrap_or_default()
                .unwrap_or_default();
            match change.op {
                Op::Delete => registry.prefixes.remove(&prefix),
                Op::Create | Op::Update => {
                    registry.prefixes.insert(prefix, ObjectConfig::desired(d))
                }
            };
            if registry.prefixes.is_empty() {
                absent_ok(
                    resource,
                    t.client
                        .delete_object()
                        .bucket(&shared)
                        .key(&key)
                        .send()
                        .await,
                    &["NoSuchKey", "NoSuchBucket"],
                )?;
                return Ok(());
            }
            let mut labels = d.labels();
            labels.retain(|(k, _)| k != "tenancy.dev/environment");
            let tagging: String = labels
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            t.client
                .put_object()
                .bucket(&shared)
                .key(&key)
                .content_type("application/json")
                .tagging(tagging)
                .body(ByteStream::from(registry.document()))
                .send()
                .await
                .map_err(|e| sdk_error(resource, e))?;
            return Ok(());
        }
        let bucket = bucket_name(&t.config.bucket_prefix, &d.tenant, &d.environment);
        if change.op == Op::Delete {
            // Lift a suspension's write block first: it would deny the deletes.
            absent_ok(
                resource,
                t.client.delete_bucket_policy().bucket(&bucket).send().await,
                &["NoSuchBucketPolicy", "NoSuchBucket"],
            )?;
            self.empty(&t, &bucket, "", resource).await?;
            absent_ok(
                resource,
                t.client.delete_bucket().bucket(&bucket).send().await,
                &["NoSuchBucket"],
            )?;
            return Ok(());
        }
        self.apply_dedicated(&t, &bucket, d, resource).await
    }
}

impl Plane for S3Plane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        let cfg = self
            .config
            .targets
            .get(&d.placement.target)
            .ok_or_else(|| PlaneError::unknown_target(PLANE, &d.placement.target))?;
        // mt-standard: a prefix of the target's shared bucket; otherwise a bucket of its own.
        let (bucket, prefix) = if d.profile == Profile::MtStandard {
            (cfg.shared_bucket(), Some(prefix_of(d)))
        } else {
            (
                bucket_name(&cfg.bucket_prefix, &d.tenant, &d.environment),
                None,
            )
        };
        Ok(serde_json::json!({
            "type": "s3", "target": d.placement.target, "region": cfg.region,
            "bucket": bucket, "prefix": prefix,
        }))
    }

    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>> {
        Box::pin(self.plan_async(desired))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()> {
        Box::pin(self.apply_async(change))
    }

    fn prefetch<'a>(&'a self, targets: &'a [String]) -> PlaneFuture<'a, ()> {
        Box::pin(async move {
            self.prefetch_async(targets).await;
            Ok(())
        })
    }
}
