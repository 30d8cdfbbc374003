//! Encryption at rest.
//!
//! * `encryption: kms-per-tenant` needs every placement region to offer per-tenant keys;
//! * `st-dedicated` and `hybrid` tenants must declare an encryption mode;
//! * encryption is never weakened on update (kms-per-tenant → platform-managed or unset).
use tenancy_policy_sdk::*;

pub struct Encryption;

fn strength(mode: Option<&str>) -> u8 {
    match mode {
        Some("kms-per-tenant") => 2,
        Some("platform-managed") => 1,
        _ => 0,
    }
}

impl Policy for Encryption {
    const NAME: &'static str = "encryption";
    const VERSION: &'static str = "1.0.0";
    const RULES: &'static [&'static str] =
        &["encryption.kms-unavailable", "encryption.required", "encryption.weakened"];

    fn evaluate(ctx: &Context) -> Vec<Violation> {
        let spec = &ctx.tenant.spec;
        let mode = spec.policies.encryption.as_deref();
        let path = ptr!("spec", "policies", "encryption");
        let mut out = Vec::new();
        if mode == Some("kms-per-tenant") {
            let mut seen: Vec<&str> = Vec::new();
            for (_, region) in ctx.placements() {
                if seen.contains(&region) {
                    continue;
                }
                seen.push(region);
                if let Some(r) = ctx.region(region) {
                    if !r.spec.encryption.per_tenant_keys {
                        out.push(deny(
                            "encryption.kms-unavailable",
                            path.clone(),
                            format!("kms-per-tenant needs per-tenant keys, which region `{region}` does not offer"),
                        ));
                    }
                }
            }
        }
        if matches!(spec.profile.as_str(), "st-dedicated" | "hybrid") && mode.is_none() {
            out.push(deny(
                "encryption.required",
                ptr!("spec", "policies"),
                format!("{} tenants have dedicated data planes and must declare policies.encryption", spec.profile),
            ));
        }
        if let Some(prev) = &ctx.previous {
            let before = prev.spec.policies.encryption.as_deref();
            if strength(mode) < strength(before) {
                out.push(deny(
                    "encryption.weakened",
                    path,
                    format!(
                        "encryption may not be weakened: it was `{}` and would become `{}`",
                        before.unwrap_or("unset"),
                        mode.unwrap_or("unset")
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(target_arch = "wasm32")]
export_policy!(Encryption);
