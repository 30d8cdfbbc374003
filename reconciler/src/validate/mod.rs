//! Validate: from a [`Snapshot`] to a [`Catalog`] of typed manifests and the [`Finding`]s that
//! stop a change — YAML, JSON Schema, identifiers, and checks across manifests (unique ids,
//! references that resolve). Every file is checked even when others are broken.

pub mod schema;

use crate::diagnostics::{self, Finding, Position, quote};
use crate::manifest::model::{Organization, Plan, Region, Tenant};
use crate::manifest::yaml::{Node, YamlLimits};
use crate::manifest::{self, Document, Kind, Lifecycle};
use crate::source::Snapshot;
use rayon::prelude::*;
use schema::Schemas;
use std::collections::{BTreeMap, HashMap};

/// A manifest and where it was declared.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub file: String,
    pub pos: Position,
    pub value: T,
    /// The document's tree, for positioning later findings (policy violations, plan notes).
    pub node: Node,
}

/// Everything a repository declares, typed. Only manifests that passed validation are here.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tenants: Vec<Located<Tenant>>,
    pub organizations: Vec<Located<Organization>>,
    pub regions: Vec<Located<Region>>,
    pub plans: Vec<Located<Plan>>,
}

impl Catalog {
    pub fn tenant(&self, id: &str) -> Option<&Located<Tenant>> {
        self.tenants
            .iter()
            .find(|t| t.value.metadata.id.as_str() == id)
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Summary {
    pub files: usize,
    pub documents: usize,
    pub tenants: usize,
    pub errors: usize,
    pub warnings: usize,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub catalog: Catalog,
    pub summary: Summary,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    pub yaml: YamlLimits,
}

enum Typed {
    Tenant(Box<Tenant>),
    Organization(Organization),
    Region(Region),
    Plan(Plan),
}

struct Checked {
    doc: Document,
    typed: Typed,
}

fn check_document(doc: Document, schemas: &Schemas) -> Result<Checked, Vec<Finding>> {
    let json = schemas.check(&doc)?;
    let pos = doc.node.pos;
    // The schema and the typed model agree by construction; a failure here is still reported
    // as a finding rather than trusted away.
    let typed = match doc.kind {
        Kind::Tenant => serde_json::from_value(json).map(|t| Typed::Tenant(Box::new(t))),
        Kind::Organization => serde_json::from_value(json).map(Typed::Organization),
        Kind::Region => serde_json::from_value(json).map(Typed::Region),
        Kind::Plan => serde_json::from_value(json).map(Typed::Plan),
    };
    match typed {
        Ok(typed) => Ok(Checked { doc, typed }),
        Err(e) => Err(vec![
            Finding::error(&doc.file, "manifest.invalid", e.to_string()).at(pos),
        ]),
    }
}

/// Validate every file of a snapshot.
pub fn validate(snapshot: &Snapshot, opts: &ValidateOptions) -> Report {
    let schemas = Schemas::get();
    let mut findings = snapshot.findings.clone();
    // Parse and schema-check files in parallel; each file is independent until cross-checks.
    let per_file: Vec<(Vec<Checked>, Vec<Finding>, usize)> = snapshot
        .files
        .par_iter()
        .map(|file| {
            let (docs, mut file_findings) =
                manifest::parse_file(&file.path, &file.text, &opts.yaml);
            let count = docs.len();
            let mut checked = Vec::with_capacity(docs.len());
            for doc in docs {
                match check_document(doc, schemas) {
                    Ok(c) => checked.push(c),
                    Err(fs) => file_findings.extend(fs),
                }
            }
            (checked, file_findings, count)
        })
        .collect();

    let mut summary = Summary {
        files: snapshot.files.len(),
        ..Summary::default()
    };
    let mut all = Vec::new();
    for (checked, file_findings, count) in per_file {
        summary.documents += count;
        findings.extend(file_findings);
        all.extend(checked);
    }

    let mut catalog = Catalog::default();
    for c in all {
        let (file, pos, node) = (c.doc.file, c.doc.node.pos, c.doc.node);
        match c.typed {
            Typed::Tenant(value) => catalog.tenants.push(Located {
                file,
                pos,
                value: *value,
                node,
            }),
            Typed::Organization(value) => catalog.organizations.push(Located {
                file,
                pos,
                value,
                node,
            }),
            Typed::Region(value) => catalog.regions.push(Located {
                file,
                pos,
                value,
                node,
            }),
            Typed::Plan(value) => catalog.plans.push(Located {
                file,
                pos,
                value,
                node,
            }),
        }
    }
    cross_check(&mut catalog, &mut findings);

    diagnostics::sort(&mut findings);
    summary.tenants = catalog.tenants.len();
    summary.errors = findings
        .iter()
        .filter(|f| f.severity == diagnostics::Severity::Error)
        .count();
    summary.warnings = findings
        .iter()
        .filter(|f| f.severity == diagnostics::Severity::Warning)
        .count();
    Report {
        findings,
        catalog,
        summary,
    }
}

fn at(node: &Node, pointer: &str) -> Position {
    node.locate(pointer).pos
}

/// Report the second and later declarations of the same key, naming the first; return the set
/// of indices to drop so later stages see each name once.
fn duplicates<T>(
    items: &[Located<T>],
    key: impl Fn(&T) -> &str,
    pointer: &str,
    what: &str,
    rule: &'static str,
    tenant_of: impl Fn(&T) -> Option<&str>,
    findings: &mut Vec<Finding>,
) -> Vec<usize> {
    let mut first: HashMap<&str, &Located<T>> = HashMap::with_capacity(items.len());
    let mut drop = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let k = key(&item.value);
        if let Some(prev) = first.get(k) {
            let prev_pos = at(&prev.node, pointer);
            findings.push(
                Finding::error(
                    &item.file,
                    rule,
                    format!(
                        "{what} `{k}` is already declared at {}:{}",
                        prev.file, prev_pos.line
                    ),
                )
                .at(at(&item.node, pointer))
                .pointer(pointer)
                .tenant(tenant_of(&item.value))
                .hint(format!("each {what} must be unique across the repository")),
            );
            drop.push(i);
        } else {
            first.insert(k, item);
        }
    }
    drop
}

fn remove_indices<T>(items: &mut Vec<Located<T>>, mut drop: Vec<usize>) {
    drop.sort_unstable();
    for i in drop.into_iter().rev() {
        items.remove(i);
    }
}

fn cross_check(catalog: &mut Catalog, findings: &mut Vec<Finding>) {
    // Deterministic "first declaration wins": sort by file then position.
    catalog
        .tenants
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    catalog
        .organizations
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    catalog
        .regions
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));
    catalog
        .plans
        .sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));

    let d = duplicates(
        &catalog.tenants,
        |t| t.metadata.id.as_str(),
        "/metadata/id",
        "tenant id",
        "unique.tenant-id",
        |t| Some(t.metadata.id.as_str()),
        findings,
    );
    remove_indices(&mut catalog.tenants, d);
    let d = duplicates(
        &catalog.organizations,
        |o| o.metadata.id.as_str(),
        "/metadata/id",
        "organization id",
        "unique.organization-id",
        |_| None,
        findings,
    );
    remove_indices(&mut catalog.organizations, d);
    let d = duplicates(
        &catalog.regions,
        |r| r.metadata.name.as_str(),
        "/metadata/name",
        "region",
        "unique.region",
        |_| None,
        findings,
    );
    remove_indices(&mut catalog.regions, d);
    let d = duplicates(
        &catalog.plans,
        |p| p.metadata.name.as_str(),
        "/metadata/name",
        "plan",
        "unique.plan",
        |_| None,
        findings,
    );
    remove_indices(&mut catalog.plans, d);

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

    let orgs: HashMap<&str, ()> = catalog
        .organizations
        .iter()
        .map(|o| (o.value.metadata.id.as_str(), ()))
        .collect();
    let regions: HashMap<&str, ()> = catalog
        .regions
        .iter()
        .map(|r| (r.value.metadata.name.as_str(), ()))
        .collect();
    let plans: HashMap<&str, ()> = catalog
        .plans
        .iter()
        .map(|p| (p.value.metadata.name.as_str(), ()))
        .collect();
    let region_list = || sorted_keys(&regions);
    let plan_list = || sorted_keys(&plans);
    // (external-id key, value) → first tenant that used it
    let mut external: HashMap<(&str, &str), (&str, &str, u32)> = HashMap::new();

    for t in &catalog.tenants {
        let id = t.value.metadata.id.as_str();
        let spec = &t.value.spec;
        let mut unresolved =
            |pointer: String, rule: &'static str, message: String, hint: String| {
                findings.push(
                    Finding::error(&t.file, rule, message)
                        .at(at(&t.node, &pointer))
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
                        .at(at(&t.node, &pointer))
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
                        .at(at(&t.node, &pointer))
                        .pointer(pointer)
                        .tenant(Some(id))
                        .hint("shorten the tenant id or the environment name"),
                );
            }
        }
        for (key, value) in &spec.external_ids {
            let pointer = format!("/spec/externalIds/{key}");
            let line = at(&t.node, &pointer).line;
            if let Some((other, other_file, other_line)) =
                external.get(&(key.as_str(), value.as_str()))
            {
                findings.push(
                    Finding::error(&t.file, "unique.external-id", format!("externalIds.{key} {} is already used by tenant `{other}` ({other_file}:{other_line})", quote(value)))
                        .at(at(&t.node, &pointer))
                        .pointer(pointer)
                        .tenant(Some(id))
                        .hint("an external id identifies one tenant; check for a copy-paste"),
                );
            } else {
                external.insert((key.as_str(), value.as_str()), (id, t.file.as_str(), line));
            }
        }
        if spec.lifecycle == Lifecycle::Deleted && spec.deletion.is_none() {
            findings.push(
                Finding::warning(&t.file, "lifecycle.delete-unconfirmed", "lifecycle is Deleted but `spec.deletion.confirm` is not set; nothing will be removed")
                    .at(at(&t.node, "/spec/lifecycle"))
                    .pointer("/spec/lifecycle")
                    .tenant(Some(id))
                    .hint(format!("add `deletion: {{ confirm: {id} }}` under spec to confirm the deletion")),
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
