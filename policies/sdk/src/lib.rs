//! Guest SDK for Tenancy governance policies.
//!
//! A policy is a type implementing [`Policy`]; [`export_policy!`] turns it into the exports of
//! the `tenancy:policy/policy` world (see `policies/wit/policy.wit`). The SDK parses the JSON
//! input into typed values once, so a policy reads `ctx.tenant.spec.regions.allowed` rather than
//! JSON, and builds violations with [`deny`], [`warn`] and [`info`] and a JSON pointer.
//!
//! ```ignore
//! use tenancy_policy_sdk::*;
//! struct NoFreeProd;
//! impl Policy for NoFreeProd {
//!     const NAME: &'static str = "no-free-prod";
//!     const VERSION: &'static str = "1.0.0";
//!     const RULES: &'static [&'static str] = &["plan.free-prod"];
//!     fn evaluate(ctx: &Context) -> Vec<Violation> {
//!         ctx.tenant.spec.environments.iter().enumerate()
//!             .filter(|(_, e)| ctx.tenant.spec.plan == "free" && e.name == "prod")
//!             .map(|(i, _)| deny("plan.free-prod", ptr!("spec", "environments", i, "name"), "free plans have no prod"))
//!             .collect()
//!     }
//! }
//! export_policy!(NoFreeProd);
//! ```

pub mod alloc;
pub mod model;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::BumpAllocator = alloc::BumpAllocator::new();

pub use model::*;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        default_bindings_module: "tenancy_policy_sdk::bindings",
    });
}

pub use bindings::tenancy::policy::types::{Operation, Severity};
use bindings::tenancy::policy::types as wit;

/// A violation found by a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: String,
    pub message: String,
    /// JSON pointer into the tenant manifest ("" = the whole manifest).
    pub path: String,
    pub severity: Severity,
}

fn violation(severity: Severity, rule: &str, path: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation { rule: rule.into(), message: message.into(), path: path.into(), severity }
}

/// A violation that refuses the change.
pub fn deny(rule: &str, path: impl Into<String>, message: impl Into<String>) -> Violation {
    violation(Severity::Deny, rule, path, message)
}

/// A violation that is reported but never refuses the change.
pub fn warn(rule: &str, path: impl Into<String>, message: impl Into<String>) -> Violation {
    violation(Severity::Warn, rule, path, message)
}

/// An informational note.
pub fn info(rule: &str, path: impl Into<String>, message: impl Into<String>) -> Violation {
    violation(Severity::Info, rule, path, message)
}

/// Build a JSON pointer from segments, escaping `~` and `/` (RFC 6901):
/// `ptr!("spec", "environments", 1, "region")` → `/spec/environments/1/region`.
#[macro_export]
macro_rules! ptr {
    ($($seg:expr),* $(,)?) => {{
        let mut p = ::std::string::String::new();
        $( p.push('/'); p.push_str(&$crate::escape_pointer_segment(&::std::format!("{}", $seg))); )*
        p
    }};
}

#[doc(hidden)]
pub fn escape_pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Everything a policy sees for one evaluation.
#[derive(Debug, Clone)]
pub struct Context {
    pub operation: Operation,
    pub tenant: Tenant,
    pub previous: Option<Tenant>,
    pub platform: Platform,
    pub commit_sha: String,
    pub commit_author: String,
}

impl Context {
    /// Parse the host's input. Malformed input is a host defect; it becomes a deny.
    pub fn from_input(input: &wit::Input) -> Result<Context, Violation> {
        let bad = |what: &str, e: serde_json::Error| {
            deny("policy.input", "", format!("the policy could not read the {what} it was given: {e}"))
        };
        let tenant: Tenant = serde_json::from_str(&input.tenant).map_err(|e| bad("tenant", e))?;
        let previous = match &input.previous {
            Some(p) => Some(serde_json::from_str(p).map_err(|e| bad("previous tenant", e))?),
            None => None,
        };
        let platform: Platform = serde_json::from_str(&input.platform).map_err(|e| bad("platform", e))?;
        Ok(Context {
            operation: input.operation,
            tenant,
            previous,
            platform,
            commit_sha: input.commit.sha.clone(),
            commit_author: input.commit.author.clone(),
        })
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.platform.regions.iter().find(|r| r.metadata.name == name)
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.platform.plans.iter().find(|p| p.metadata.name == name)
    }

    /// Every region the tenant's data may be placed in, with the pointer that declares it:
    /// the allowed regions, the preferred one, and each environment's explicit region.
    pub fn placements(&self) -> Vec<(String, &str)> {
        let spec = &self.tenant.spec;
        let mut out: Vec<(String, &str)> = spec
            .regions
            .allowed
            .iter()
            .enumerate()
            .map(|(i, r)| (ptr!("spec", "regions", "allowed", i), r.as_str()))
            .collect();
        out.push((ptr!("spec", "regions", "preferred"), spec.regions.preferred.as_str()));
        for (i, e) in spec.environments.iter().enumerate() {
            if let Some(r) = &e.region {
                out.push((ptr!("spec", "environments", i, "region"), r.as_str()));
            }
        }
        out
    }
}

/// What a policy implements.
pub trait Policy {
    const NAME: &'static str;
    const VERSION: &'static str;
    /// Every rule id [`Policy::evaluate`] may report.
    const RULES: &'static [&'static str];
    fn evaluate(ctx: &Context) -> Vec<Violation>;
}

#[doc(hidden)]
pub fn info_of<P: Policy>() -> wit::PolicyInfo {
    wit::PolicyInfo {
        name: P::NAME.into(),
        version: P::VERSION.into(),
        rules: P::RULES.iter().map(|r| (*r).into()).collect(),
    }
}

#[doc(hidden)]
pub fn evaluate_with<P: Policy>(input: wit::Input) -> Vec<wit::Violation> {
    let found = match Context::from_input(&input) {
        Ok(ctx) => P::evaluate(&ctx),
        Err(v) => vec![v],
    };
    found
        .into_iter()
        .map(|v| wit::Violation { rule: v.rule, message: v.message, path: v.path, severity: v.severity })
        .collect()
}

/// Export a [`Policy`] implementation as the component's `info` and `evaluate`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        struct __TenancyPolicyExport;
        impl $crate::bindings::Guest for __TenancyPolicyExport {
            fn info() -> $crate::bindings::tenancy::policy::types::PolicyInfo {
                $crate::info_of::<$policy>()
            }
            fn evaluate(
                input: $crate::bindings::tenancy::policy::types::Input,
            ) -> ::std::vec::Vec<$crate::bindings::tenancy::policy::types::Violation> {
                $crate::evaluate_with::<$policy>(input)
            }
        }
        $crate::bindings::export!(__TenancyPolicyExport with_types_in $crate::bindings);
    };
}
