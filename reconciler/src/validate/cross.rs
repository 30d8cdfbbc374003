//! The checks across manifests: unique ids and names, references that resolve, the platform
//! a tenant names. The tenant checks depend only on the tenants sharing an id or an external
//! id, which is what lets [`super::delta`] judge a write by what it changed.

use super::{Catalog, Incumbency, Located, Locator};
use crate::diagnostics::{Finding, quote};
use crate::manifest::{self, model::Tenant};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What must be unique, where it stands in a document, and the rule that reports it.
struct Unique {
    pointer: &'static str,
    what: &'static str,
    rule: &'static str,
}

/// Report the second and later declarations of the same key, naming the first, and drop them so
/// later stages see each name once. The declaration that already held the key (`incumbent`)
/// counts as the first, wherever it stands.
fn dedupe<T>(
    items: &mut Vec<Located<T>>,
    key: impl Fn(&T) -> &str,
    tenant_of: impl Fn(&T) -> Option<&str>,
    incumbent: impl Fn(&Located<T>) -> bool,
    unique: Unique,
    findings: &mut Vec<Finding>,
    loc: &Locator<'_>,
) {
    let Unique {
        pointer,
        what,
        rule,
    } = unique;
    let mut first: HashMap<&str, &Located<T>> = HashMap::with_capacity(items.len());
    // Keys declared more than once whose incumbent is among the declarations: it goes first.
    let mut count: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for item in items.iter() {
        *count.entry(key(&item.value)).or_default() += 1;
    }
    for item in items.iter() {
        let k = key(&item.value);
        if count[k] > 1 && !first.contains_key(k) && incumbent(item) {
            first.insert(k, item);
        }
    }
    let mut keep = Vec::with_capacity(items.len());
    for item in items.iter() {
        let k = key(&item.value);
        if first.get(k).is_some_and(|f| std::ptr::eq(*f, item)) {
            keep.push(true);
            continue;
        }
        if let Some(prev) = first.get(k) {
            let prev_line = loc.at(prev, pointer).line;
            findings.push(
                Finding::error(
                    &item.file,
                    rule,
                    format!(
                        "{what} `{k}` is already declared at {}:{prev_line}",
                        prev.file
                    ),
                )
                .at(loc.at(item, pointer))
                .pointer(pointer)
                .tenant(tenant_of(&item.value))
                .hint(format!("each {what} must be unique across the repository")),
            );
            keep.push(false);
        } else {
            first.insert(k, item);
            keep.push(true);
        }
    }
    let mut keep = keep.into_iter();
    items.retain(|_| keep.next().unwrap_or(true));
}

pub(super) fn cross_check(
    catalog: &mut Catalog,
    findings: &mut Vec<Finding>,
    loc: &Locator<'_>,
    incumbents: &dyn Incumbency,
) {
    // Deterministic "first declaration wins": sort by file then position.
    catalog
        .organizations
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    catalog
        .regions
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    catalog
        .plans
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    dedupe(
        &mut catalog.organizations,
        |o| o.metadata.id.as_str(),
        |_| None,
        |_| false,
        Unique {
            pointer: "/metadata/id",
            what: "organization id",
            rule: "unique.organization-id",
        },
        findings,
        loc,
    );
    dedupe(
        &mut catalog.regions,
        |r| r.metadata.name.as_str(),
        |_| None,
        |_| false,
        Unique {
            pointer: "/metadata/name",
            what: "region",
            rule: "unique.region",
        },
        findings,
        loc,
    );
    dedupe(
        &mut catalog.plans,
        |p| p.metadata.name.as_str(),
        |_| None,
        |_| false,
        Unique {
            pointer: "/metadata/name",
            what: "plan",
            rule: "unique.plan",
        },
        findings,
        loc,
    );

    check_region_targets(catalog, findings, loc);

    // Without any Region (or Plan) declared, one finding says so instead of one per tenant.
    if catalog.regions.is_empty() && !catalog.tenants.is_empty() {
        findings.push(
            Finding::error(
                "platform/regions.yaml",
                "platform.missing-regions",
                "no Region is declared, so no tenant region can resolve",
            )
            .hint("declare the platform's regions in platform/regions.yaml (kind: Region)"),
        );
    }
    if catalog.plans.is_empty() && !catalog.tenants.is_empty() {
        findings.push(
            Finding::error(
                "platform/plans.yaml",
                "platform.missing-plans",
                "no Plan is declared, so no tenant plan can resolve",
            )
            .hint("declare the platform's plans in platform/plans.yaml (kind: Plan)"),
        );
    }
    let mut tenants = std::mem::take(&mut catalog.tenants);
    check_tenants(
        &mut tenants,
        &Platform::of(catalog),
        findings,
        loc,
        incumbents,
    );
    catalog.tenants = tenants;
}

/// The rules [`check_tenants`] reports: the findings about a tenant that depend on other
/// manifests (the rest of a tenant's findings come from its own file).
pub const TENANT_RULES: &[&str] = &[
    "unique.tenant-id",
    "ref.organization",
    "ref.plan",
    "ref.region",
    "unique.environment",
    "id.derived-name-too-long",
    "unique.external-id",
];

/// The names tenants refer to: what the platform and organization manifests declare.
pub(super) struct Platform<'c> {
    orgs: HashMap<&'c str, ()>,
    regions: HashMap<&'c str, ()>,
    plans: HashMap<&'c str, ()>,
}

impl<'c> Platform<'c> {
    pub(super) fn of(catalog: &'c Catalog) -> Self {
        Platform {
            orgs: catalog
                .organizations
                .iter()
                .map(|o| (o.value.metadata.id.as_str(), ()))
                .collect(),
            regions: catalog
                .regions
                .iter()
                .map(|r| (r.value.metadata.name.as_str(), ()))
                .collect(),
            plans: catalog
                .plans
                .iter()
                .map(|p| (p.value.metadata.name.as_str(), ()))
                .collect(),
        }
    }
}

/// The checks on tenants that look beyond their own document: unique ids and external ids
/// (dropping later declarations, so later stages see each id once), references to the
/// platform, environment names. A tenant's findings depend only on the tenants it shares an
/// id or an external id with, which is what lets a write be judged by its delta
/// ([`super::delta`]).
pub(super) fn check_tenants(
    tenants: &mut Vec<Located<Arc<Tenant>>>,
    platform: &Platform<'_>,
    findings: &mut Vec<Finding>,
    loc: &Locator<'_>,
    incumbents: &dyn Incumbency,
) {
    tenants.sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    dedupe(
        tenants,
        |t| t.metadata.id.as_str(),
        |t| Some(t.metadata.id.as_str()),
        |t| incumbents.holds_id(t.value.metadata.id.as_str(), &t.file),
        Unique {
            pointer: "/metadata/id",
            what: "tenant id",
            rule: "unique.tenant-id",
        },
        findings,
        loc,
    );
    let Platform {
        orgs,
        regions,
        plans,
    } = platform;
    let region_list = || sorted_keys(regions);
    let plan_list = || sorted_keys(plans);
    // (external-id key, value) → the tenant that holds it: the one that held it before the
    // change (the newcomer is the conflict), else the first to declare it.
    let mut external: HashMap<(&str, &str), &Located<Arc<Tenant>>> = HashMap::new();
    // Only a value declared twice has a holder to find (asking costs a previous version).
    let mut declared: HashMap<(&str, &str), usize> = HashMap::new();
    for t in tenants.iter() {
        for (key, value) in &t.value.spec.external_ids {
            *declared.entry((key.as_str(), value.as_str())).or_default() += 1;
        }
    }
    for t in tenants.iter() {
        let id = t.value.metadata.id.as_str();
        for (key, value) in &t.value.spec.external_ids {
            if declared[&(key.as_str(), value.as_str())] > 1
                && incumbents.holds_external_id(id, &t.file, key, value)
            {
                external.entry((key.as_str(), value.as_str())).or_insert(t);
            }
        }
    }

    for t in tenants.iter() {
        let id = t.value.metadata.id.as_str();
        let spec = &t.value.spec;
        let mut unresolved =
            |pointer: String, rule: &'static str, message: String, hint: String| {
                findings.push(
                    Finding::error(&t.file, rule, message)
                        .at(loc.at(t, &pointer))
                        .pointer(pointer)
                        .tenant(Some(id))
                        .hint(hint),
                );
            };
        let org = t.value.metadata.organization.as_str();
        if !orgs.contains_key(org) {
            unresolved(
                "/metadata/organization".into(),
                "ref.organization",
                format!("organization `{org}` is not declared"),
                format!(
                    "add an Organization manifest with `metadata.id: {org}` (e.g. {org}/organization.yaml)"
                ),
            );
        }
        if !plans.is_empty() {
            let mut check_plan = |pointer: &str, plan: &str| {
                if !plans.contains_key(plan) {
                    unresolved(
                        pointer.into(),
                        "ref.plan",
                        format!("plan `{plan}` is not declared in platform/plans.yaml"),
                        format!("known plans: {}", plan_list()),
                    );
                }
            };
            check_plan("/spec/plan", spec.plan.as_str());
            if let Some(bp) = spec.billing.as_ref().and_then(|b| b.plan.as_ref()) {
                check_plan("/spec/billing/plan", bp.as_str());
            }
        }
        if !regions.is_empty() {
            let mut check_region = |pointer: String, r: &str| {
                if !regions.contains_key(r) {
                    unresolved(
                        pointer,
                        "ref.region",
                        format!("region `{r}` is not declared in platform/regions.yaml"),
                        format!("known regions: {}", region_list()),
                    );
                }
            };
            for (i, r) in spec.regions.allowed.iter().enumerate() {
                check_region(format!("/spec/regions/allowed/{i}"), r.as_str());
            }
            check_region(
                "/spec/regions/preferred".into(),
                spec.regions.preferred.as_str(),
            );
            for (i, e) in spec.environments.iter().enumerate() {
                if let Some(r) = &e.region {
                    check_region(format!("/spec/environments/{i}/region"), r.as_str());
                }
            }
        }
        let mut seen_env: HashMap<&str, usize> = HashMap::new();
        for (i, e) in spec.environments.iter().enumerate() {
            let name = e.name.as_str();
            let pointer = format!("/spec/environments/{i}/name");
            if let Some(first) = seen_env.insert(name, i) {
                findings.push(
                    Finding::error(&t.file, "unique.environment", format!("environment `{name}` is declared twice (first as environments[{first}])"))
                        .at(loc.at(t, &pointer))
                        .pointer(pointer.clone())
                        .tenant(Some(id))
                        .hint("environment names must be unique within a tenant"),
                );
            }
            // `<tenant>_<env>` names the tenant-environment's schema, role and topic; PostgreSQL
            // would silently truncate a longer name and two tenants could collide.
            let derived = id.len() + 1 + name.len();
            if derived > manifest::ids::MAX_SQL_IDENT {
                findings.push(
                    Finding::error(&t.file, "id.derived-name-too-long", format!("resource name `{id}_{name}` would be {derived} characters; the limit is 63"))
                        .at(loc.at(t, &pointer))
                        .pointer(pointer)
                        .tenant(Some(id))
                        .hint("shorten the tenant id or the environment name"),
                );
            }
        }
        for (key, value) in &spec.external_ids {
            let pointer = format!("/spec/externalIds/{key}");
            if let Some(other) = external
                .get(&(key.as_str(), value.as_str()))
                .filter(|other| !std::ptr::eq(**other, t))
            {
                let other_line = loc.at(other, &pointer).line;
                findings.push(
                    Finding::error(
                        &t.file,
                        "unique.external-id",
                        format!(
                            "externalIds.{key} {} is already used by tenant `{}` ({}:{other_line})",
                            quote(value),
                            other.value.metadata.id,
                            other.file
                        ),
                    )
                    .at(loc.at(t, &pointer))
                    .pointer(pointer)
                    .tenant(Some(id))
                    .hint("an external id identifies one tenant; check for a copy-paste"),
                );
            } else {
                external.insert((key.as_str(), value.as_str()), t);
            }
        }
    }
}

/// A region's `targets` name registered planes only (a typo is not a plane nobody serves),
/// and every plane that says it is required.
fn check_region_targets(catalog: &Catalog, findings: &mut Vec<Finding>, loc: &Locator<'_>) {
    let known: Vec<(String, bool)> = crate::planes::REGISTERED
        .iter()
        .map(|r| {
            let about = r.factory.about();
            (tenancy_plane::manifest_key(about.kind), about.required)
        })
        .collect();
    let list = || {
        known
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in &catalog.regions {
        let name = r.value.metadata.name.as_str();
        let targets = &r.value.spec.targets;
        for key in targets.keys() {
            if known.iter().any(|(k, _)| k == key) {
                continue;
            }
            let pointer = format!("/spec/targets/{key}");
            let closest = known
                .iter()
                .map(|(k, _)| (strsim::jaro_winkler(k, key), k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match closest {
                Some((_, k)) => format!("did you mean `{k}`? planes: {}", list()),
                None => format!("planes: {}", list()),
            };
            findings.push(
                Finding::error(
                    &r.file,
                    "ref.plane",
                    format!("region `{name}` names a target for `{key}`, which is not a plane"),
                )
                .at(loc.at(r, &pointer))
                .pointer(pointer)
                .hint(hint),
            );
        }
        for (key, _) in known
            .iter()
            .filter(|(k, required)| *required && !targets.contains_key(k))
        {
            findings.push(
                Finding::error(
                    &r.file,
                    "ref.plane",
                    format!("region `{name}` names no `{key}` target"),
                )
                .at(loc.at(r, "/spec/targets"))
                .pointer("/spec/targets")
                .hint(format!(
                    "every region names a target of each of: {}",
                    known
                        .iter()
                        .filter(|(_, required)| *required)
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
    }
}

fn sorted_keys(map: &HashMap<&str, ()>) -> String {
    let sorted: BTreeMap<&str, ()> = map.iter().map(|(k, v)| (*k, *v)).collect();
    if sorted.is_empty() {
        "(none)".to_owned()
    } else {
        sorted.keys().copied().collect::<Vec<_>>().join(", ")
    }
}
