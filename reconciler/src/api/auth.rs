//! Who is calling and what they may do.
//!
//! [`Caller`] is an extractor: a handler that takes one runs only for a known bearer token
//! (`Authorization: Bearer <token>`, the scheme case-insensitive as RFC 9110 says), within the
//! token's rate limit. Tokens are compared as SHA-256 digests in constant time. Failed logins
//! (a token that is wrong or malformed) are throttled per peer address, so tokens cannot be
//! guessed at speed; a request without credentials is simply 401.
//!
//! What a role may do is one table, [`Action`] × [`ApiRole`] (README, "API roles"):
//!
//! | action | viewer | operator | admin |
//! | --- | --- | --- | --- |
//! | read (tenants, environments, topology, jobs, governance, events) | ✓ | ✓ | ✓ |
//! | `:suspend`, `:activate` | | ✓ | ✓ |
//! | report usage | | ✓ | ✓ |
//! | PATCH `displayName`, `labels`, `contacts` | | ✓ | ✓ |
//! | PATCH commercial and structural fields (`plan`, `billing`, `quotas`, `profile`, `regions`, `environments`, `policies`, `externalIds`) | | | ✓ |
//! | create a tenant | | | ✓ |
//! | delete a tenant (with or without `force`) | | | ✓ |
//! | webhooks (register, list, remove) | | | ✓ |
//!
//! A token confined to a tenant or an organization does all of it only within its scope;
//! outside, a tenant is "not found", never "forbidden", so ids do not leak.

use super::{Api, Problem};
use crate::config::ApiRole;
use crate::store::TenantRecord;
use axum::http::{StatusCode, header};
use std::sync::Arc;

/// What a request does, as the role table knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Lifecycle,
    ReportUsage,
    /// A PATCH of fields that describe the tenant (display name, labels, contacts).
    PatchDescriptive,
    /// A PATCH of what the tenant pays for or how it is built.
    PatchCommercial,
    Create,
    Delete,
    ManageWebhooks,
}

impl Action {
    /// The least role that may do it.
    pub fn role(self) -> ApiRole {
        match self {
            Action::Lifecycle | Action::ReportUsage | Action::PatchDescriptive => ApiRole::Operator,
            Action::PatchCommercial | Action::Create | Action::Delete | Action::ManageWebhooks => {
                ApiRole::Admin
            }
        }
    }

    fn what(self) -> &'static str {
        match self {
            Action::Lifecycle => "change a tenant's lifecycle",
            Action::ReportUsage => "report usage",
            Action::PatchDescriptive => "change tenants",
            Action::PatchCommercial => {
                "change a tenant's plan, billing, quotas, profile, regions, environments, policies or external ids"
            }
            Action::Create => "create tenants",
            Action::Delete => "delete tenants",
            Action::ManageWebhooks => "manage webhooks",
        }
    }
}

/// PATCH fields by the action that changes them.
pub fn patch_action(field: &str) -> Action {
    match field {
        "displayName" | "labels" | "contacts" => Action::PatchDescriptive,
        _ => Action::PatchCommercial,
    }
}

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: ApiRole,
    pub tenant: Option<String>,
    pub organization: Option<String>,
}

impl Caller {
    /// 403 unless the caller's role may do `action`.
    pub fn may(&self, action: Action) -> Result<(), Problem> {
        let needed = action.role();
        if self.role >= needed {
            return Ok(());
        }
        let needed = match needed {
            ApiRole::Admin => "admin",
            _ => "operator or admin",
        };
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` may not {}: it needs {needed}",
                self.name,
                action.what()
            ),
        ))
    }

    pub fn sees(&self, t: &TenantRecord) -> bool {
        self.sees_ids(&t.tenant_id, &t.organization_id)
    }

    /// Is the tenant `tenant` of organization `organization` in the caller's scope?
    pub fn sees_ids(&self, tenant: &str, organization: &str) -> bool {
        self.tenant.as_deref().is_none_or(|id| id == tenant)
            && self
                .organization
                .as_deref()
                .is_none_or(|o| o == organization)
    }

    /// Neither confined to a tenant nor to an organization.
    pub fn unconfined(&self) -> bool {
        self.tenant.is_none() && self.organization.is_none()
    }
}

/// Failed logins a peer may make at once, and how fast it earns new ones (per second).
const FAILURE_BURST: f64 = 20.0;
const FAILURE_RATE: f64 = 1.0;

impl axum::extract::FromRequestParts<Arc<Api>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Caller, Problem> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        match authenticate(api, &parts.headers) {
            Ok(caller) => {
                api.limiter
                    .take(
                        &format!("token:{}", caller.name),
                        api.limits.requests_per_second,
                        api.limits.burst,
                    )
                    .map_err(|secs| {
                        too_many(
                            format!("token `{}` is over its rate limit", caller.name),
                            secs,
                        )
                    })?;
                Ok(caller)
            }
            // A request with no credentials is not a guess: 401, never throttled here.
            Err(refused) if parts.headers.get(header::AUTHORIZATION).is_none() => Err(refused),
            Err(refused) => {
                // Each wrong token costs the peer; past the burst it waits, whatever it sends.
                if let Err(secs) =
                    api.failures
                        .take(&format!("peer:{peer}"), FAILURE_RATE, FAILURE_BURST)
                {
                    return Err(too_many(
                        "too many failed logins from this address; wait before trying again".into(),
                        secs,
                    ));
                }
                Err(refused)
            }
        }
    }
}

fn authenticate(api: &Api, headers: &axum::http::HeaderMap) -> Result<Caller, Problem> {
    let unauthorized =
        |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an Authorization: Bearer <token> header is required"))?
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    // Compare every stored digest in full, whatever matches, so timing says nothing.
    let mut found = None;
    for (d, t) in &api.tokens {
        let same = d
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same {
            found = Some(t);
        }
    }
    let t = found.ok_or_else(|| unauthorized("unknown token"))?;
    Ok(Caller {
        name: t.name.clone(),
        role: t.role,
        tenant: t.tenant.clone(),
        organization: t.organization.clone(),
    })
}

/// Token buckets by key: `rate` per second, up to `burst` at once. At most [`MAX_KEYS`]
/// buckets are kept: a full bucket says nothing a new one would not, so full ones are
/// forgotten first — the map cannot grow with the keys a client makes up.
#[derive(Default)]
pub struct Limiter {
    buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: std::time::Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn level(&self, now: std::time::Instant) -> f64 {
        (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst)
    }
}

/// Buckets kept at most.
pub const MAX_KEYS: usize = 10_000;

impl Limiter {
    /// Take one request from `key`'s bucket, or say how many seconds until one is free.
    pub fn take(&self, key: &str, rate: f64, burst: f64) -> Result<(), u64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = burst.max(1.0);
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.level(now) < b.burst);
            if buckets.len() >= MAX_KEYS {
                // Every bucket is in use: forget the fullest half rather than grow.
                let mut levels: Vec<f64> = buckets.values().map(|b| b.level(now)).collect();
                levels.sort_by(|a, b| a.total_cmp(b));
                let cut = levels[levels.len() / 2];
                buckets.retain(|_, b| b.level(now) < cut);
            }
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        });
        b.tokens = b.level(now);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

pub fn too_many(what: String, secs: u64) -> Problem {
    let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", what);
    p.retry_after = Some(secs);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_map_is_bounded_and_forgets_full_buckets_first() {
        let l = Limiter::default();
        assert!(l.take("busy", 0.001, 1.0).is_ok());
        assert!(l.take("busy", 0.001, 1.0).is_err(), "empty");
        for i in 0..(MAX_KEYS * 3) {
            let _ = l.take(&format!("made-up-{i}"), 1000.0, 5.0);
        }
        assert!(l.len() <= MAX_KEYS, "{}", l.len());
        assert!(
            l.take("busy", 0.001, 1.0).is_err(),
            "an empty bucket is not forgotten"
        );
    }

    #[test]
    fn roles_allow_what_the_table_says() {
        let caller = |role| Caller {
            name: "t".into(),
            role,
            tenant: None,
            organization: None,
        };
        let all = [
            Action::Lifecycle,
            Action::ReportUsage,
            Action::PatchDescriptive,
            Action::PatchCommercial,
            Action::Create,
            Action::Delete,
            Action::ManageWebhooks,
        ];
        for a in all {
            assert!(caller(ApiRole::Viewer).may(a).is_err(), "{a:?}");
            assert!(caller(ApiRole::Admin).may(a).is_ok(), "{a:?}");
        }
        let op = caller(ApiRole::Operator);
        for a in [
            Action::Lifecycle,
            Action::ReportUsage,
            Action::PatchDescriptive,
        ] {
            assert!(op.may(a).is_ok(), "{a:?}");
        }
        for a in [
            Action::PatchCommercial,
            Action::Create,
            Action::Delete,
            Action::ManageWebhooks,
        ] {
            assert!(op.may(a).is_err(), "{a:?}");
        }
        for f in [
            "plan",
            "billing",
            "quotas",
            "profile",
            "regions",
            "environments",
            "policies",
            "externalIds",
        ] {
            assert_eq!(patch_action(f), Action::PatchCommercial, "{f}");
        }
        for f in ["displayName", "labels", "contacts"] {
            assert_eq!(patch_action(f), Action::PatchDescriptive, "{f}");
        }
    }
}
