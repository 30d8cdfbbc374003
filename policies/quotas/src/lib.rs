//! Quotas against the plan (`platform/plans.yaml`).
//!
//! * the tenant's profile is one the plan offers;
//! * `storageGiB`, `concurrentJobs`, `apiRateLimit` within the plan's ceilings (warn at ≥ 90 %);
//! * environment storage quotas sum to at most the tenant's storage quota;
//! * retention within the plan's `maxRetentionDays`.
use tenancy_policy_sdk::*;

pub struct Quotas;

/// Percentage of a ceiling at which a warning is raised.
const NEAR_CEILING_PERCENT: u64 = 90;

impl Policy for Quotas {
    const NAME: &'static str = "quotas";
    const VERSION: &'static str = "1.0.0";
    const RULES: &'static [&'static str] = &[
        "quotas.unknown-plan",
        "quotas.profile-not-in-plan",
        "quotas.over-plan",
        "quotas.near-ceiling",
        "quotas.environments-exceed-tenant",
        "quotas.retention-over-plan",
    ];

    fn evaluate(ctx: &Context) -> Vec<Violation> {
        let spec = &ctx.tenant.spec;
        let mut out = Vec::new();
        let Some(plan) = ctx.plan(&spec.plan) else {
            out.push(deny("quotas.unknown-plan", ptr!("spec", "plan"), format!("plan `{}` is not declared by the platform", spec.plan)));
            return out;
        };
        if !plan.spec.profiles.contains(&spec.profile) {
            out.push(deny(
                "quotas.profile-not-in-plan",
                ptr!("spec", "profile"),
                format!("plan `{}` does not offer the `{}` profile (it offers: {})", spec.plan, spec.profile, plan.spec.profiles.join(", ")),
            ));
        }
        let c = &plan.spec.ceilings;
        let checks = [
            ("storageGiB", spec.quotas.storage_gib, c.storage_gib),
            ("concurrentJobs", spec.quotas.concurrent_jobs, c.concurrent_jobs),
            ("apiRateLimit", spec.quotas.api_rate_limit, c.api_rate_limit),
        ];
        for (field, value, ceiling) in checks {
            let Some(value) = value else { continue };
            let path = ptr!("spec", "quotas", field);
            if value > ceiling {
                out.push(deny("quotas.over-plan", path, format!("{field} {value} exceeds the `{}` plan's ceiling of {ceiling}", spec.plan)));
            } else if ceiling > 0 && value * 100 >= ceiling * NEAR_CEILING_PERCENT {
                out.push(warn("quotas.near-ceiling", path, format!("{field} {value} is at {}% of the `{}` plan's ceiling ({ceiling})", value * 100 / ceiling, spec.plan)));
            }
        }
        let env_storage: u64 = spec.environments.iter().filter_map(|e| e.quotas.storage_gib).sum();
        if let Some(total) = spec.quotas.storage_gib {
            if env_storage > total {
                out.push(deny(
                    "quotas.environments-exceed-tenant",
                    ptr!("spec", "environments"),
                    format!("environments request {env_storage} GiB of storage in total, more than the tenant's {total} GiB"),
                ));
            }
        } else if env_storage > c.storage_gib {
            out.push(deny(
                "quotas.environments-exceed-tenant",
                ptr!("spec", "environments"),
                format!("environments request {env_storage} GiB of storage, more than the plan's {} GiB", c.storage_gib),
            ));
        }
        if let Some(max) = plan.spec.max_retention_days {
            if let Some(days) = spec.policies.retention_days.filter(|d| *d > max) {
                out.push(deny("quotas.retention-over-plan", ptr!("spec", "policies", "retentionDays"), format!("retention of {days} days exceeds the `{}` plan's {max}", spec.plan)));
            }
            for (i, e) in spec.environments.iter().enumerate() {
                if let Some(days) = e.retention_days.filter(|d| *d > max) {
                    out.push(deny("quotas.retention-over-plan", ptr!("spec", "environments", i, "retentionDays"), format!("environment `{}` retains data {days} days, more than the `{}` plan's {max}", e.name, spec.plan)));
                }
            }
        }
        out
    }
}

#[cfg(target_arch = "wasm32")]
export_policy!(Quotas);
