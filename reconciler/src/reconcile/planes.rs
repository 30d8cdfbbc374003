//! The planes in use: real targets from the configuration, embedded defaults otherwise.

use super::*;

/// One plane in use.
pub struct PlaneEntry {
    /// Its one name (`postgres`, `object-store`, …: see [`crate::planes`]).
    pub kind: &'static str,
    /// Its key in the topology answer.
    pub(crate) topology_key: &'static str,
    pub plane: Box<dyn Plane>,
    /// What serves it, for the plan's header (`PostgreSQL (4 target(s))`).
    pub backend: String,
    /// The configured targets (empty for embedded planes, which serve any target name).
    pub targets: Vec<String>,
}

/// The planes in use, in apply order (the order of [`crate::planes::REGISTERED`]).
pub struct Planes {
    pub planes: Vec<PlaneEntry>,
    /// Planes not in use, and why (shown in the plan).
    pub skipped: Vec<(String, String)>,
}

impl Planes {
    /// Every registered plane: built from its `[<kind>]` section where it configures targets,
    /// its embedded default otherwise, or skipped (and said) when it has none.
    pub fn from_config(config: &Config) -> Result<Planes, crate::config::ConfigError> {
        let mut planes = Vec::new();
        let mut skipped = Vec::new();
        for r in crate::planes::REGISTERED {
            let about = r.factory.about();
            let kind = about.kind;
            let section = config.plane_section(kind);
            let targets = tenancy_plane::target_names(&section);
            let (plane, backend) = match (targets.is_empty(), r.embedded) {
                (false, _) => {
                    let plane = r.factory.build(&section).map_err(|message| {
                        crate::config::ConfigError::Invalid {
                            path: config
                                .source
                                .as_ref()
                                .map_or("configuration".to_owned(), |p| p.display().to_string()),
                            message: format!("[{kind}]: {message}"),
                        }
                    })?;
                    (
                        plane,
                        format!("{} ({} target(s))", about.backend, targets.len()),
                    )
                }
                (true, Some(embedded)) => {
                    let built = embedded(&config.embedded.root);
                    (built.plane, built.backend)
                }
                (true, None) => {
                    skipped.push((
                        kind.to_owned(),
                        format!(
                            "no [{kind}.targets] configured; {} are not managed",
                            about.manages
                        ),
                    ));
                    continue;
                }
            };
            planes.push(PlaneEntry {
                kind,
                topology_key: about.topology_key,
                plane,
                backend,
                targets,
            });
        }
        Ok(Planes { planes, skipped })
    }

    /// Start every plane's desired-state-independent observation (run it concurrently with
    /// [`evaluate`]); errors are left for `plan` to meet and report.
    pub(crate) async fn prefetch(&self) {
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
