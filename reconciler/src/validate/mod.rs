//! Validate: from a [`Snapshot`] to a [`Catalog`] of typed manifests and the [`Finding`]s that
//! stop a change — YAML, JSON Schema, identifiers, and checks across manifests (unique ids,
//! references that resolve). Every file is checked even when others are broken.

pub mod schema;

use crate::diagnostics::{self, Finding, Position, quote};
use crate::manifest::model::{Organization, Plan, Region, Tenant};
use crate::manifest::yaml::{Node, YamlLimits};
use crate::manifest::{self, Document, Kind};
use crate::source::Snapshot;
use rayon::prelude::*;
use schema::Schemas;
use std::collections::{BTreeMap, HashMap};

/// A manifest and where it was declared.
///
/// The positioned YAML tree is not kept: for 10,000 tenants it would cost more memory than
/// everything else together. A [`Locator`] re-parses a document on the rare occasion a finding
/// needs the position of a value inside it.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub file: String,
    /// 0-based index of the document within its file.
    pub doc: usize,
    pub pos: Position,
    pub value: T,
}

/// Positions of values inside documents, found by re-parsing the document on demand.
///
/// Only the last document parsed is kept: findings about one manifest come together, and a
/// repository with errors everywhere must not hold every tree in memory at once.
pub struct Locator<'a> {
    texts: HashMap<&'a str, &'a str>,
    limits: YamlLimits,
    last: std::cell::RefCell<Option<(String, usize, Option<Node>)>>,
}

impl<'a> Locator<'a> {
    pub fn new(snapshot: &'a Snapshot, limits: YamlLimits) -> Self {
        let texts = snapshot
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.text.as_str()))
            .collect();
        Locator {
            texts,
            limits,
            last: Default::default(),
        }
    }

    /// Position of the value at JSON `pointer` in `item`'s document (or of the deepest value on
    /// the way there); the document's start when it cannot be found.
    pub fn at<T>(&self, item: &Located<T>, pointer: &str) -> Position {
        let mut last = self.last.borrow_mut();
        let hit = matches!(&*last, Some((file, doc, _)) if *file == item.file && *doc == item.doc);
        if !hit {
            let node = self.texts.get(item.file.as_str()).and_then(|text| {
                crate::manifest::yaml::parse_documents(text, &self.limits)
                    .ok()?
                    .into_iter()
                    .nth(item.doc)
            });
            *last = Some((item.file.clone(), item.doc, node));
        }
        match &*last {
            Some((_, _, Some(node))) => node.locate(pointer).pos,
            _ => item.pos,
        }
    }
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

#[derive(Clone)]
enum Typed {
    Tenant(Box<Tenant>),
    Organization(Organization),
    Region(Region),
    Plan(Plan),
}

/// A document that passed; its YAML tree is dropped here (see [`Located`]).
#[derive(Clone)]
struct Checked {
    file: String,
    doc: usize,
    pos: Position,
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
        Ok(typed) => Ok(Checked {
            file: doc.file,
            doc: doc.index,
            pos,
            typed,
        }),
        Err(e) => Err(vec![
            Finding::error(&doc.file, "manifest.invalid", e.to_string()).at(pos),
        ]),
    }
}

/// The worker pool for parsing. Its threads get large stacks: YAML parsing recurses once per
/// nesting level, and although depth is budgeted (64), an unoptimised build's frames are big.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(64 << 20)
            .thread_name(|i| format!("tenancy-parse-{i}"))
            .build()
            // Without threads (a constrained sandbox) parse on the calling thread.
            .or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .use_current_thread()
                    .build()
            })
            .expect("a single-threaded pool on the current thread can always be built")
    })
}

/// What one file yielded: its checked documents, its own findings, its document count.
type FileResult = (Vec<Checked>, Vec<Finding>, usize);

/// Per-file results of the previous validation, keyed by path and Git blob id.
///
/// A file whose blob is unchanged parses to the same documents and file-local findings, so a
/// long-running reconciler re-parses only the files a commit touched; the checks across files
/// (unique ids, references) still run over the whole catalog every time.
#[derive(Default)]
pub struct ParseCache {
    files: HashMap<String, (git2::Oid, std::sync::Arc<FileResult>, std::sync::Arc<str>)>,
    /// Files parsed (not taken from the cache) by the last validation.
    pub parsed: usize,
}

impl std::fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParseCache")
            .field("files", &self.files.len())
            .field("parsed", &self.parsed)
            .finish()
    }
}

impl ParseCache {
    /// The text of `path` if its blob is `id` (see [`crate::source::read_revision_reusing`]).
    pub fn text(&self, path: &str, id: git2::Oid) -> Option<String> {
        self.files
            .get(path)
            .filter(|(known, ..)| *known == id)
            .map(|(.., text)| text.to_string())
    }
}

fn check_file(path: &str, text: &str, opts: &ValidateOptions, schemas: &Schemas) -> FileResult {
    let (docs, mut file_findings) = manifest::parse_file(path, text, &opts.yaml);
    let count = docs.len();
    let mut checked = Vec::with_capacity(docs.len());
    for doc in docs {
        match check_document(doc, schemas) {
            Ok(c) => checked.push(c),
            Err(fs) => file_findings.extend(fs),
        }
    }
    (checked, file_findings, count)
}

/// Validate every file of a snapshot.
pub fn validate(snapshot: &Snapshot, opts: &ValidateOptions) -> Report {
    validate_cached(snapshot, opts, None, &NoIncumbents)
}

/// Who held a unique name before the change under review, so a conflict is attributed to the
/// change that introduced it: the newcomer gets the finding, never the tenant that already
/// held the name (whatever the file order).
pub trait Incumbency {
    /// Did the tenant `id`, declared in `file`, hold that id there before?
    fn holds_id(&self, id: &str, file: &str) -> bool;
    /// Did the tenant `id` (in `file`) declare `externalIds.<key> = value` before?
    fn holds_external_id(&self, id: &str, file: &str, key: &str, value: &str) -> bool;
}

/// Nothing is known of before: the first declaration (by file, then line) wins.
pub struct NoIncumbents;

impl Incumbency for NoIncumbents {
    fn holds_id(&self, _: &str, _: &str) -> bool {
        false
    }
    fn holds_external_id(&self, _: &str, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

/// [`validate`], reusing (and refreshing) the per-file results in `cache` for files whose blob
/// is unchanged, and attributing uniqueness conflicts with `incumbents`.
pub fn validate_cached(
    snapshot: &Snapshot,
    opts: &ValidateOptions,
    cache: Option<&mut ParseCache>,
    incumbents: &dyn Incumbency,
) -> Report {
    let schemas = Schemas::get();
    let mut findings = snapshot.findings.clone();
    let cached = |file: &crate::source::SourceFile| {
        let (id, result, _) = cache.as_deref()?.files.get(&file.path)?;
        (Some(*id) == file.id).then(|| result.clone())
    };
    // Parse and schema-check files in parallel; each file is independent until cross-checks.
    let per_file: Vec<(std::sync::Arc<FileResult>, bool)> = pool().install(|| {
        snapshot
            .files
            .par_iter()
            .map(|file| match cached(file) {
                Some(hit) => (hit, false),
                None => (
                    std::sync::Arc::new(check_file(&file.path, &file.text, opts, schemas)),
                    true,
                ),
            })
            .collect()
    });
    if let Some(cache) = cache {
        cache.parsed = per_file.iter().filter(|(_, parsed)| *parsed).count();
        cache.files = snapshot
            .files
            .iter()
            .zip(&per_file)
            .filter_map(|(f, (r, _))| {
                Some((
                    f.path.clone(),
                    (f.id?, r.clone(), std::sync::Arc::from(f.text.as_str())),
                ))
            })
            .collect();
    }
    let per_file = per_file
        .into_iter()
        .map(|(r, _)| std::sync::Arc::try_unwrap(r).unwrap_or_else(|shared| (*shared).clone()));

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
        let (file, doc, pos) = (c.file, c.doc, c.pos);
        match c.typed {
            Typed::Tenant(value) => catalog.tenants.push(Located {
                file,
                doc,
                pos,
                value: *value,
            }),
            Typed::Organization(value) => catalog.organizations.push(Located {
                file,
                doc,
                pos,
                value,
            }),
            Typed::Region(value) => catalog.regions.push(Located {
                file,
                doc,
                pos,
                value,
            }),
            Typed::Plan(value) => catalog.plans.push(Located {
                file,
                doc,
                pos,
                value,
            }),
        }
    }
    let locator = Locator::new(snapshot, opts.yaml);
    cross_check(&mut catalog, &mut findings, &locator, incumbents);

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

fn cross_check(
    catalog: &mut Catalog,
    findings: &mut Vec<Finding>,
    loc: &Locator<'_>,
    incumbents: &dyn Incumbency,
) {
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

    dedupe(
        &mut catalog.tenants,
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
    // (external-id key, value) → the tenant that holds it: the one that held it before the
    // change (the newcomer is the conflict), else the first to declare it.
    let mut external: HashMap<(&str, &str), &Located<Tenant>> = HashMap::new();
    // Only a value declared twice has a holder to find (asking costs a previous version).
    let mut declared: HashMap<(&str, &str), usize> = HashMap::new();
    for t in &catalog.tenants {
        for (key, value) in &t.value.spec.external_ids {
            *declared.entry((key.as_str(), value.as_str())).or_default() += 1;
        }
    }
    for t in &catalog.tenants {
        let id = t.value.metadata.id.as_str();
        for (key, value) in &t.value.spec.external_ids {
            if declared[&(key.as_str(), value.as_str())] > 1
                && incumbents.holds_external_id(id, &t.file, key, value)
            {
                external.entry((key.as_str(), value.as_str())).or_insert(t);
            }
        }
    }

    for t in &catalog.tenants {
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
