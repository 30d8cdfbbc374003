//! Validate: from a [`Snapshot`] to a [`Catalog`] of typed manifests and the [`Finding`]s that
//! stop a change — YAML, JSON Schema, identifiers, and checks across manifests (unique ids,
//! references that resolve). Every file is checked even when others are broken.

mod cross;
pub mod delta;
pub mod schema;

pub use cross::TENANT_RULES;
use cross::cross_check;

use crate::diagnostics::{self, Finding, Position};
use crate::manifest::model::{Organization, Plan, Region, Tenant};
use crate::manifest::yaml::{Node, YamlLimits};
use crate::manifest::{self, Document, Kind};
use crate::source::Snapshot;
use rayon::prelude::*;
use schema::Schemas;
use std::collections::HashMap;
use std::sync::Arc;

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
    pub(crate) pos: Position,
    pub value: T,
}

/// Positions of values inside documents, found by re-parsing the document on demand.
///
/// Only the last document parsed is kept: findings about one manifest come together, and a
/// repository with errors everywhere must not hold every tree in memory at once.
pub(crate) struct Locator<'a> {
    texts: HashMap<&'a str, &'a str>,
    limits: YamlLimits,
    last: std::cell::RefCell<Option<(String, usize, Option<Node>)>>,
}

impl<'a> Locator<'a> {
    pub fn new(snapshot: &'a Snapshot, limits: YamlLimits) -> Self {
        Self::over(
            snapshot
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.text.as_str())),
            limits,
        )
    }

    /// Over some files' texts, by path.
    pub fn over(files: impl IntoIterator<Item = (&'a str, &'a str)>, limits: YamlLimits) -> Self {
        let texts = files.into_iter().collect();
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
    pub tenants: Vec<Located<Arc<Tenant>>>,
    pub organizations: Vec<Located<Organization>>,
    pub regions: Vec<Located<Region>>,
    pub plans: Vec<Located<Plan>>,
}

impl Catalog {
    pub fn tenant(&self, id: &str) -> Option<&Located<Arc<Tenant>>> {
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
    pub(crate) warnings: usize,
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

    /// Add `findings`, keep them in order, and count errors and warnings again.
    pub(crate) fn add_findings(&mut self, mut findings: Vec<Finding>) {
        self.findings.append(&mut findings);
        diagnostics::sort(&mut self.findings);
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count();
        self.summary.errors = count(diagnostics::Severity::Error);
        self.summary.warnings = count(diagnostics::Severity::Warning);
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    pub yaml: YamlLimits,
}

#[derive(Clone)]
enum Typed {
    Tenant(Arc<Tenant>),
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

/// A valid document's JSON as its typed manifest. The schema and the typed model agree by
/// construction; a failure here is still reported as a finding rather than trusted away.
fn typed(kind: Kind, json: serde_json::Value) -> Result<Typed, serde_json::Error> {
    match kind {
        Kind::Tenant => serde_json::from_value(json).map(|t| Typed::Tenant(Arc::new(t))),
        Kind::Organization => serde_json::from_value(json).map(Typed::Organization),
        Kind::Region => serde_json::from_value(json).map(Typed::Region),
        Kind::Plan => serde_json::from_value(json).map(Typed::Plan),
    }
}

fn check_document(doc: Document, schemas: &Schemas) -> Result<Checked, Vec<Finding>> {
    let json = schemas.check(&doc)?;
    let pos = doc.node.pos;
    match typed(doc.kind, json) {
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
    pub(crate) parsed: usize,
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
    check_clean_file(path, text, opts, schemas)
        .unwrap_or_else(|| check_positioned(path, text, opts, schemas))
}

/// [`check_file`] with positioned trees: what every finding needs.
fn check_positioned(
    path: &str,
    text: &str,
    opts: &ValidateOptions,
    schemas: &Schemas,
) -> FileResult {
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

/// A file whose every document is a valid manifest, checked without building positioned
/// trees: positions matter only to findings, and most files have none. `None` when anything
/// would be a finding; [`check_file`] then parses with positions and says what and where. The
/// two agree on every clean file (a unit test compares them on hostile and generated input).
fn check_clean_file(
    path: &str,
    text: &str,
    opts: &ValidateOptions,
    schemas: &Schemas,
) -> Option<FileResult> {
    if text.trim().is_empty() {
        return None;
    }
    let docs = manifest::yaml::parse_json_documents(text, &opts.yaml)?;
    let count = docs.len();
    let mut checked = Vec::with_capacity(count);
    for (doc, (json, pos)) in docs.into_iter().enumerate() {
        // (Only a mapping has a `kind`.)
        let kind = Kind::from_name(json.get("kind")?.as_str()?)?;
        if !schemas.is_valid(kind, &json) {
            return None;
        }
        let typed = typed(kind, json).ok()?;
        let file = path.to_owned();
        checked.push(Checked {
            file,
            doc,
            pos,
            typed,
        });
    }
    (count > 0).then_some((checked, Vec::new(), count))
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
pub(crate) struct NoIncumbents;

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
pub(crate) fn validate_cached(
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
                value,
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

    summary.tenants = catalog.tenants.len();
    let mut report = Report {
        findings: Vec::new(),
        catalog,
        summary,
    };
    report.add_findings(findings);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed_json(t: &Typed) -> serde_json::Value {
        match t {
            Typed::Tenant(t) => serde_json::to_value(&**t),
            Typed::Organization(o) => serde_json::to_value(o),
            Typed::Region(r) => serde_json::to_value(r),
            Typed::Plan(p) => serde_json::to_value(p),
        }
        .expect("serializable")
    }

    /// Says whether the fast path took `text`, after checking that it agrees with the
    /// positioned one: the same documents, positions and typed values, and no finding.
    fn agree(path: &str, text: &str) -> bool {
        let opts = ValidateOptions::default();
        let slow = check_positioned(path, text, &opts, Schemas::get());
        let Some(fast) = check_clean_file(path, text, &opts, Schemas::get()) else {
            return false;
        };
        assert!(
            slow.1.is_empty(),
            "{path}: the fast path took a file with findings: {:?}\n{text}",
            slow.1
        );
        assert_eq!(fast.2, slow.2, "{path}: document count");
        let shape = |r: &FileResult| -> Vec<(usize, Position, serde_json::Value)> {
            r.0.iter()
                .map(|c| (c.doc, c.pos, typed_json(&c.typed)))
                .collect()
        };
        assert_eq!(shape(&fast), shape(&slow), "{path}\n{text}");
        true
    }

    #[test]
    fn the_fast_path_agrees_with_the_positioned_one() {
        // On a stack like the parsing pool's: an unoptimised build recurses in big frames.
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(fast_and_positioned_agree)
            .expect("thread")
            .join()
            .expect("the paths agree");
    }

    fn fast_and_positioned_agree() {
        // Every example manifest: each is clean, so each takes the fast path.
        for (name, text) in crate::testing::example_manifests() {
            assert!(
                agree(&name, &text),
                "{name}: a clean example missed the fast path"
            );
        }

        // Variations of a clean tenant: YAML features, hostile values, broken documents.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenants");
        let base = std::fs::read_to_string(root.join("org_acme/t_5002.yaml")).expect("t_5002");
        let swap = |from: &str, to: &str| {
            assert!(base.contains(from), "{from}");
            base.replacen(from, to, 1)
        };
        let clean = [
            format!("\u{feff}{base}"),
            base.replace('\n', "\r\n"),
            format!("# a comment\n---\n{base}...\n"),
            format!("{base}---\n"),
            format!("{base}---\n{}", base.replace("t_5002", "t_5003")),
            swap(
                "labels: { team: cc-12 }",
                "labels: &l { team: cc-12 }\n  alias: *l",
            ),
            swap("storageGiB: 500,", "storageGiB: !!int \"500\","),
            swap("displayName: Acme Analytics", "displayName: !!str 12"),
            swap("displayName: Acme Analytics", "displayName: 'yes'"),
            swap("storageGiB: 500,", "storageGiB: 0x1F4,"),
            swap("storageGiB: 500,", "storageGiB: 5e2,"),
            swap("storageGiB: 500,", "storageGiB: 1_000,"),
            swap("labels: { team: cc-12 }", "labels: { <<: { team: x } }"),
        ];
        let findings = [
            String::new(),
            "# only a comment\n".to_owned(),
            "---\n---\n".to_owned(),
            format!("{base}---\n- a list\n"),
            "just a scalar\n".to_owned(),
            swap("kind: Tenant", "kind: Widget"),
            swap("kind: Tenant", "kind: [Tenant]"),
            swap("kind: Tenant\n", ""),
            swap("storageGiB: 500,", "storageGiB: .inf,"),
            swap("storageGiB: 500,", "storageGiB: .nan,"),
            swap("storageGiB: 500,", "storageGiB: 99999999999999999999999,"),
            swap("storageGiB: 500,", "storageGiB: !!binary aGVsbG8=,"),
            swap("storageGiB: 500,", "storageGiB: !custom 5,"),
            swap("storageGiB: 500,", "storageGiB: yes,"),
            swap(
                "labels: { team: cc-12 }",
                "labels: { team: cc-12, team: cc-13 }",
            ),
            swap("labels: { team: cc-12 }", "labels: { ~: cc-12 }"),
            swap("labels: { team: cc-12 }", "labels: { ? [a] : cc-12 }"),
            swap(
                "  displayName: Acme Analytics\n",
                "  displayName: Acme Analytics\n  surprise: 1\n",
            ),
            swap("profile: st-dedicated", "profile:\tst-dedicated"),
            swap("metadata:", "metadata: [unclosed"),
            // Nested deeper than the parsing budget.
            swap(
                "displayName: Acme Analytics",
                &format!("displayName: {}{}", "[".repeat(70), "]".repeat(70)),
            ),
        ];
        // The fast path takes a file exactly when it has no finding.
        let (mut fast, mut slow) = (0, 0);
        for (i, text) in clean.iter().chain(&findings).enumerate() {
            let name = format!("case-{i}.yaml");
            let positioned =
                check_positioned(&name, text, &ValidateOptions::default(), Schemas::get());
            let took = agree(&name, text);
            assert_eq!(took, positioned.1.is_empty(), "{name}\n{text}");
            if took { fast += 1 } else { slow += 1 }
        }
        assert!(
            fast >= 12 && slow >= 22,
            "{fast} clean, {slow} with findings"
        );
    }
}
