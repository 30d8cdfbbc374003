//! Guest SDK for Tenancy governance policies.
//!
//! A policy is a type implementing [`Policy`]; [`export_policy!`] turns it into the exports of
//! the `tenancy:policy/policy` world (see `policies/wit/policy.wit`). The SDK reads the JSON
//! input into typed values once (with its own reader, [`json`]), so a policy reads
//! `ctx.tenant.spec.regions.allowed` rather than JSON, and builds violations with [`deny`], [`warn`] and [`info`] and a JSON pointer.
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
pub mod json;
pub mod model;

use std::cell::RefCell;

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
///
/// A segment is anything that implements `Display`. Strings and integers, which are almost all
/// segments, are written directly rather than through `core::fmt`: policies build a pointer
/// for every placement and quota they look at, violation or not, so this is on the hot path.
#[macro_export]
macro_rules! ptr {
    ($($seg:expr),* $(,)?) => {{
        #[allow(unused_imports)]
        use $crate::pointer::{Direct as _, Formatted as _};
        #[allow(unused_mut)]
        let mut p = ::std::string::String::with_capacity(48);
        $( (&$crate::pointer::Segment(&$seg)).push_to(&mut p); )*
        p
    }};
}

/// How [`ptr!`] writes a segment: [`pointer::Direct`] for strings and integers, chosen over
/// [`pointer::Formatted`] (any `Display`) by method resolution at the call site.
#[doc(hidden)]
pub mod pointer {
    use core::fmt::Display;

    pub struct Segment<'a, T: ?Sized>(pub &'a T);

    pub trait Direct {
        fn push_to(&self, p: &mut String);
    }

    pub trait Formatted {
        fn push_to(&self, p: &mut String);
    }

    impl<T: Display + ?Sized> Formatted for &Segment<'_, T> {
        fn push_to(&self, p: &mut String) {
            super::push_pointer_segment(p, &self.0);
        }
    }

    /// `/` then `s`, with `~` → `~0` and `/` → `~1`.
    pub fn push_str(p: &mut String, s: &str) {
        p.push('/');
        let mut rest = s;
        while let Some(at) = rest.find(['~', '/']) {
            p.push_str(&rest[..at]);
            p.push_str(if rest.as_bytes()[at] == b'~' { "~0" } else { "~1" });
            rest = &rest[at + 1..];
        }
        p.push_str(rest);
    }

    /// `/` then the decimal digits of `n`.
    pub fn push_u64(p: &mut String, n: u64) {
        p.push('/');
        push_digits(p, n);
    }

    fn push_i64(p: &mut String, n: i64) {
        p.push('/');
        if n < 0 {
            p.push('-');
        }
        push_digits(p, n.unsigned_abs());
    }

    fn push_digits(p: &mut String, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        p.push_str(core::str::from_utf8(&digits[at..]).unwrap_or_default());
    }

    macro_rules! direct_str {
        ($($t:ty),*) => {$(
            impl Direct for Segment<'_, $t> {
                fn push_to(&self, p: &mut String) {
                    push_str(p, self.0);
                }
            }
        )*};
    }
    direct_str!(str, &str, String, &String);

    macro_rules! direct_int {
        ($push:ident as $wide:ty: $($t:ty),*) => {$(
            impl Direct for Segment<'_, $t> {
                fn push_to(&self, p: &mut String) {
                    $push(p, *self.0 as $wide);
                }
            }
            impl Direct for Segment<'_, &$t> {
                fn push_to(&self, p: &mut String) {
                    $push(p, **self.0 as $wide);
                }
            }
        )*};
    }
    direct_int!(push_u64 as u64: usize, u64, u32, u16, u8);
    // Signed too: an unsuffixed literal (`ptr!("spec", 1)`) is an `i32`.
    direct_int!(push_i64 as i64: isize, i64, i32, i16, i8);

}

/// Append `/segment` to a JSON pointer, escaping `~` and `/`, for a segment of any `Display`
/// type (see [`ptr!`]).
#[doc(hidden)]
pub fn push_pointer_segment(p: &mut String, seg: &dyn core::fmt::Display) {
    use core::fmt::Write;
    let mut text = String::new();
    let _ = write!(text, "{seg}");
    pointer::push_str(p, &text);
}

/// `s` as one JSON pointer segment (RFC 6901): `~` → `~0`, `/` → `~1`.
pub fn escape_pointer_segment(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 1);
    pointer::push_str(&mut p, s);
    p.split_off(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pointers_escape_tilde_and_slash() {
        assert_eq!(crate::ptr!("spec", "environments", 1, "region"), "/spec/environments/1/region");
        assert_eq!(crate::ptr!("a/b", "c~d", "~/", ""), "/a~1b/c~0d/~0~1/");
        assert_eq!(crate::escape_pointer_segment("x/~y"), "x~1~0y");
    }

    #[test]
    fn every_kind_of_segment_is_written_as_display_would() {
        struct Odd;
        impl core::fmt::Display for Odd {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("o/d~d")
            }
        }
        let (s, owned, n): (&str, String, usize) = ("a/b", "c~d".to_owned(), 7);
        let i: i64 = -3;
        assert_eq!(
            crate::ptr!(s, &s, owned, &owned, n, &n, 0u64, u64::MAX, 255u8, i, i64::MIN, 1, Odd, 'x', ""),
            format!("/a~1b/a~1b/c~0d/c~0d/7/7/0/{}/255/-3/{}/1/o~1d~0d/x/", u64::MAX, i64::MIN)
        );
        assert_eq!(crate::ptr!(), "");
    }
}

/// Everything a policy sees for one evaluation.
///
/// The tenant arrives as JSON and is parsed once. The platform inventory stays with the host:
/// [`Context::region`] and [`Context::plan`] ask it for one entry and parse only that, once per
/// name and evaluation.
#[derive(Debug)]
pub struct Context {
    pub operation: Operation,
    pub tenant: Tenant,
    pub previous: Option<Tenant>,
    pub commit_sha: String,
    pub commit_author: String,
    regions: Lookups<Region>,
    plans: Lookups<Plan>,
}

/// Platform entries asked for so far, by name (`None`: the platform has no such entry).
///
/// An entry is leaked on purpose, so a policy may hold `&Region` while asking for others: a
/// sandbox lives for one evaluation and the host discards all of its memory afterwards.
#[derive(Debug)]
struct Lookups<T: 'static> {
    seen: RefCell<Vec<(String, Option<&'static T>)>>,
}

impl<T: json::FromJson> Lookups<T> {
    fn new() -> Self {
        Lookups { seen: RefCell::new(Vec::new()) }
    }

    fn get(&self, name: &str, fetch: impl FnOnce(&str) -> Option<String>) -> Option<&'static T> {
        if let Some((_, found)) = self.seen.borrow().iter().find(|(n, _)| n == name) {
            return *found;
        }
        // The host serialised the entry from a validated manifest; an entry it cannot give in
        // the SDK's shape is treated as absent rather than trapping the evaluation.
        let found = fetch(name)
            .and_then(|found| json::from_str::<T>(&found).ok())
            .map(|v| &*Box::leak(Box::new(v)));
        self.seen.borrow_mut().push((name.to_owned(), found));
        found
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    pub use crate::bindings::tenancy::policy::platform::{plan, plan_names, region, region_names};
}

/// Off wasm32 (the SDK's own tests) there is no host: the platform is empty.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub fn region(_: &str) -> Option<String> {
        None
    }
    pub fn plan(_: &str) -> Option<String> {
        None
    }
    pub fn region_names() -> Vec<String> {
        Vec::new()
    }
    pub fn plan_names() -> Vec<String> {
        Vec::new()
    }
}

impl Context {
    /// Parse the host's input. Malformed input is a host defect; it becomes a deny.
    pub fn from_input(input: &wit::Input) -> Result<Context, Violation> {
        let bad = |what: &str, e: json::Error| {
            deny("policy.input", "", format!("the policy could not read the {what} it was given: {e}"))
        };
        let tenant: Tenant = json::from_str(&input.tenant).map_err(|e| bad("tenant", e))?;
        let previous = match &input.previous {
            Some(p) => Some(json::from_str(p).map_err(|e| bad("previous tenant", e))?),
            None => None,
        };
        Ok(Context {
            operation: input.operation,
            tenant,
            previous,
            commit_sha: input.commit.sha.clone(),
            commit_author: input.commit.author.clone(),
            regions: Lookups::new(),
            plans: Lookups::new(),
        })
    }

    /// The region the platform declares under `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.get(name, host::region)
    }

    /// The plan the platform declares under `name`.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name, host::plan)
    }

    /// Every region the platform declares, in its order.
    pub fn regions(&self) -> Vec<&Region> {
        host::region_names().iter().filter_map(|n| self.region(n)).collect()
    }

    /// Every plan the platform declares, in its order.
    pub fn plans(&self) -> Vec<&Plan> {
        host::plan_names().iter().filter_map(|n| self.plan(n)).collect()
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
        Ok(ctx) => {
            let found = P::evaluate(&ctx);
            // The host discards the whole sandbox after the call: freeing the parsed input
            // first would only walk it.
            core::mem::forget(ctx);
            found
        }
        Err(v) => vec![v],
    };
    core::mem::forget(input);
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
