//! Data residency: where a tenant's data may be placed.
//!
//! * every environment's region is one of `regions.allowed`;
//! * `regions.preferred` is one of `regions.allowed`;
//! * every placement names a region the platform declares;
//! * `dataResidency: in-region-only` — exactly one allowed region;
//! * `dataResidency: in-region-only | in-zone` — every placement lies in the residency zone of
//!   the preferred region (zones come from `platform/regions.yaml`).
use tenancy_policy_sdk::*;

pub struct Residency;

impl Policy for Residency {
    const NAME: &'static str = "residency";
    const VERSION: &'static str = "1.0.0";
    const RULES: &'static [&'static str] = &[
        "residency.environment-region-not-allowed",
        "residency.preferred-not-allowed",
        "residency.unknown-region",
        "residency.single-region-required",
        "residency.outside-zone",
    ];

    fn evaluate(ctx: &Context) -> Vec<Violation> {
        let spec = &ctx.tenant.spec;
        let mut out = Vec::new();
        let allowed = &spec.regions.allowed;
        if !allowed.contains(&spec.regions.preferred) {
            out.push(deny(
                "residency.preferred-not-allowed",
                ptr!("spec", "regions", "preferred"),
                format!("preferred region `{}` is not in regions.allowed", spec.regions.preferred),
            ));
        }
        for (i, env) in spec.environments.iter().enumerate() {
            if let Some(r) = &env.region {
                if !allowed.contains(r) {
                    out.push(deny(
                        "residency.environment-region-not-allowed",
                        ptr!("spec", "environments", i, "region"),
                        format!("environment `{}` is placed in `{r}`, which is not in regions.allowed", env.name),
                    ));
                }
            }
        }
        let mode = spec.policies.data_residency.as_deref().unwrap_or("unrestricted");
        if mode == "in-region-only" && allowed.len() > 1 {
            out.push(deny(
                "residency.single-region-required",
                ptr!("spec", "regions", "allowed"),
                format!("dataResidency is in-region-only but {} regions are allowed; keep exactly one", allowed.len()),
            ));
        }
        let home_zone = ctx.region(&spec.regions.preferred).map(|r| r.spec.residency_zone.as_str());
        let mut reported_unknown: Vec<&str> = Vec::new();
        for (path, region) in ctx.placements() {
            match ctx.region(region) {
                None => {
                    if !reported_unknown.contains(&region) {
                        reported_unknown.push(region);
                        out.push(deny(
                            "residency.unknown-region",
                            path,
                            format!("region `{region}` is not declared by the platform"),
                        ));
                    }
                }
                Some(r) if mode != "unrestricted" => {
                    if let Some(zone) = home_zone {
                        if r.spec.residency_zone != zone {
                            out.push(deny(
                                "residency.outside-zone",
                                path,
                                format!(
                                    "region `{region}` is in residency zone `{}`, outside the tenant's zone `{zone}` ({mode})",
                                    r.spec.residency_zone
                                ),
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(target_arch = "wasm32")]
export_policy!(Residency);
