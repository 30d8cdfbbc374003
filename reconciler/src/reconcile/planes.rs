//! The planes in use: real targets from the configuration, embedded defaults otherwise.

use super::*;

/// One plane in use.
pub struct PlaneEntry {
    pub kind: PlaneKind,
    pub plane: Box<dyn Plane>,
    /// What serves it, for the plan's header (`PostgreSQL (4 target(s))`).
    pub backend: String,
    /// The configured targets (empty for embedded planes, which serve any target name).
    pub targets: Vec<String>,
}

/// The planes in use, in apply order (database, object store, queue).
pub struct Planes {
    pub planes: Vec<PlaneEntry>,
    /// Planes not in use, and why (shown in the plan).
    pub skipped: Vec<(String, String)>,
}

impl Planes {
    /// Real targets where configured, embedded defaults otherwise.
    pub fn from_config(config: &Config) -> Planes {
        let root = &config.embedded.root;
        let mut planes = Vec::new();
        let mut skipped = Vec::new();
        let entry =
            |kind, plane: Box<dyn Plane>, backend: String, targets: Vec<String>| PlaneEntry {
                kind,
                plane,
                backend,
                targets,
            };
        if config.postgres.targets.is_empty() {
            planes.push(entry(
                PlaneKind::Database,
                Box::new(tenancy_plane_sqlite::SqlitePlane::new(
                    root.join("databases"),
                )),
                format!("embedded SQLite under {}", root.join("databases").display()),
                Vec::new(),
            ));
        } else {
            let targets = config
                .postgres
                .targets
                .iter()
                .map(|(k, v)| (k.clone(), v.url.clone()))
                .collect();
            planes.push(entry(
                PlaneKind::Database,
                Box::new(tenancy_plane_postgres::PostgresPlane::new(
                    tenancy_plane_postgres::PostgresConfig {
                        targets,
                        default_connection_limit: config.postgres.default_connection_limit,
                    },
                )),
                format!("PostgreSQL ({} target(s))", config.postgres.targets.len()),
                config.postgres.targets.keys().cloned().collect(),
            ));
        }
        if config.object_store.targets.is_empty() {
            planes.push(entry(
                PlaneKind::ObjectStore,
                Box::new(tenancy_plane_local::LocalObjectPlane::new(
                    root.join("objects"),
                )),
                format!("embedded directory {}", root.join("objects").display()),
                Vec::new(),
            ));
        } else {
            planes.push(entry(
                PlaneKind::ObjectStore,
                Box::new(tenancy_plane_s3::S3Plane::new(tenancy_plane_s3::S3Config {
                    targets: config.object_store.targets.clone(),
                })),
                format!("S3 ({} target(s))", config.object_store.targets.len()),
                config.object_store.targets.keys().cloned().collect(),
            ));
        }
        if config.kafka.targets.is_empty() {
            skipped.push((
                "kafka".to_owned(),
                "no [kafka.targets] configured; topics are not managed".to_owned(),
            ));
        } else {
            planes.push(entry(
                PlaneKind::Queue,
                Box::new(tenancy_plane_kafka::KafkaPlane::new(
                    tenancy_plane_kafka::KafkaConfig {
                        targets: config.kafka.targets.clone(),
                        timeout: config
                            .kafka
                            .timeout_seconds
                            .map(std::time::Duration::from_secs),
                    },
                )),
                format!("Kafka ({} target(s))", config.kafka.targets.len()),
                config.kafka.targets.keys().cloned().collect(),
            ));
        }
        Planes { planes, skipped }
    }

    /// Start every plane's desired-state-independent observation (run it concurrently with
    /// [`evaluate`]); errors are left for `plan` to meet and report.
    pub async fn prefetch(&self) {
        futures_util::future::join_all(
            self.planes
                .iter()
                .map(|p| async move { p.plane.prefetch(&p.targets).await }),
        )
        .await;
    }

    /// The names of the planes in use (as in their changes and errors).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.planes.iter().map(|p| p.plane.name())
    }

    pub(super) fn find(&self, name: &str) -> Option<&dyn Plane> {
        self.planes
            .iter()
            .find(|p| p.plane.name() == name)
            .map(|p| p.plane.as_ref())
    }
}
