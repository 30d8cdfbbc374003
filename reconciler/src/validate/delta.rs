//! Judging a change by what it changed.
//!
//! An API write changes one tenant file of a repository that may declare 10,000 tenants.
//! Validating the whole candidate would parse nothing new but still rebuild and cross-check
//! every manifest. A [`Validated`] revision keeps what each file parsed to, the catalog, the
//! findings and two indexes (the files declaring each tenant id and each external id), so
//! [`Validated::judge`] checks the changed file and only the tenants whose cross-tenant
//! findings it can change: those sharing an id or an external id with it, transitively. Their
//! findings are, by construction, the ones full validation gives (a unit test compares the two
//! on random repositories and edits).
//!
//! A change that touches a platform or organization document can change what every tenant
//! resolves to: it is not judged here (`judge` says `None`) and the caller validates the
//! whole revision.

use super::cross::{Platform, check_tenants};
use super::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One file as the revision read it.
#[derive(Clone)]
struct Entry {
    id: Option<git2::Oid>,
    result: Arc<FileResult>,
    text: Arc<str>,
}

/// What a tenant shares with others that must be unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Id(String),
    External(String, String),
}

fn keys_of(t: &Tenant) -> impl Iterator<Item = Key> + '_ {
    std::iter::once(Key::Id(t.metadata.id.to_string())).chain(
        t.spec
            .external_ids
            .iter()
            .map(|(k, v)| Key::External(k.clone(), v.clone())),
    )
}

fn tenants_of(result: &FileResult) -> impl Iterator<Item = &Tenant> {
    result.0.iter().filter_map(|c| match &c.typed {
        Typed::Tenant(t) => Some(&**t),
        _ => None,
    })
}

fn located(c: &Checked) -> Option<Located<Arc<Tenant>>> {
    match &c.typed {
        Typed::Tenant(t) => Some(Located {
            file: c.file.clone(),
            doc: c.doc,
            pos: c.pos,
            value: t.clone(),
        }),
        _ => None,
    }
}

/// A revision, validated, with what it takes to judge a change to it by its delta.
pub struct Validated {
    files: HashMap<String, Entry>,
    /// The files declaring each key (before duplicates are dropped).
    declared: HashMap<Key, BTreeSet<String>>,
    pub report: Report,
}

impl std::fmt::Debug for Validated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validated")
            .field("files", &self.files.len())
            .field("summary", &self.report.summary)
            .finish()
    }
}

/// A change to one file, judged: what it replaces in the revision and with what.
pub struct Delta {
    pub path: String,
    entry: Entry,
    /// The files whose cross-tenant findings the change can alter (the changed one included).
    pub component: BTreeSet<String>,
    /// The changed file's own findings and the cross-tenant findings of the component's
    /// tenants; the caller adds its policy findings before [`Validated::apply`].
    pub findings: Vec<Finding>,
    /// The component's tenants as the candidate keeps them (duplicates dropped).
    pub tenants: Vec<Located<Arc<Tenant>>>,
}

impl Delta {
    /// The changed file's tenants that passed validation.
    pub fn written(&self) -> impl Iterator<Item = &Located<Arc<Tenant>>> {
        self.tenants.iter().filter(|t| t.file == self.path)
    }
}

impl Validated {
    /// `report`, validated with `cache` (which then holds exactly the revision's files).
    pub fn new(report: Report, cache: &ParseCache) -> Validated {
        let files: HashMap<String, Entry> = cache
            .files
            .iter()
            .map(|(path, (id, result, text))| {
                let entry = Entry {
                    id: Some(*id),
                    result: result.clone(),
                    text: text.clone(),
                };
                (path.clone(), entry)
            })
            .collect();
        let mut declared: HashMap<Key, BTreeSet<String>> = HashMap::new();
        for (path, entry) in &files {
            for t in tenants_of(&entry.result) {
                for key in keys_of(t) {
                    declared.entry(key).or_default().insert(path.clone());
                }
            }
        }
        Validated {
            files,
            declared,
            report,
        }
    }

    /// The text of `path` if its blob is `id`.
    pub fn text(&self, path: &str, id: git2::Oid) -> Option<&str> {
        self.files
            .get(path)
            .filter(|e| e.id == Some(id))
            .map(|e| &*e.text)
    }

    /// Judge the file `path` changed to `text` (blob `id`), with uniqueness conflicts
    /// attributed by `incumbents`. `None` when the change cannot be judged by its delta: the
    /// file declares (or declared) anything but tenants, or the repository would go from some
    /// tenants to none.
    pub fn judge(
        &self,
        path: &str,
        id: git2::Oid,
        text: &str,
        opts: &ValidateOptions,
        incumbents: &dyn Incumbency,
    ) -> Option<Delta> {
        let only_tenants = |r: &FileResult| r.0.iter().all(|c| matches!(c.typed, Typed::Tenant(_)));
        let old = self.files.get(path);
        if old.is_some_and(|e| !only_tenants(&e.result)) {
            return None;
        }
        let new = check_file(path, text, opts, Schemas::get());
        if !only_tenants(&new) {
            return None;
        }
        let component = self.component(path, old, &new);
        let mut tenants: Vec<Located<Arc<Tenant>>> = new.0.iter().filter_map(located).collect();
        for file in component.iter().filter(|f| *f != path) {
            if let Some(e) = self.files.get(file) {
                tenants.extend(e.result.0.iter().filter_map(located));
            }
        }
        let outside = self
            .report
            .catalog
            .tenants
            .iter()
            .filter(|t| !component.contains(&t.file))
            .count();
        // "No Region is declared" is said once, when there are tenants: keep that as it was.
        if self.report.catalog.tenants.is_empty() != (outside == 0 && tenants.is_empty()) {
            return None;
        }
        let texts = component.iter().filter_map(|f| {
            if f == path {
                Some((f.as_str(), text))
            } else {
                self.files.get(f).map(|e| (f.as_str(), &*e.text))
            }
        });
        let locator = Locator::over(texts, opts.yaml);
        let mut findings = new.1.clone();
        check_tenants(
            &mut tenants,
            &Platform::of(&self.report.catalog),
            &mut findings,
            &locator,
            incumbents,
        );
        Some(Delta {
            path: path.to_owned(),
            entry: Entry {
                id: Some(id),
                result: Arc::new(new),
                text: Arc::from(text),
            },
            component,
            findings,
            tenants,
        })
    }

    /// The files sharing a key with `path`, as it was (`old`) or as it is now (`new`),
    /// transitively: outside them, no tenant's cross-tenant findings can change.
    fn component(&self, path: &str, old: Option<&Entry>, new: &FileResult) -> BTreeSet<String> {
        let mut component = BTreeSet::from([path.to_owned()]);
        let mut queue: Vec<Key> = old
            .into_iter()
            .flat_map(|e| tenants_of(&e.result).flat_map(keys_of).collect::<Vec<_>>())
            .chain(tenants_of(new).flat_map(keys_of))
            .collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = queue.pop() {
            if !seen.insert(key.clone()) {
                continue;
            }
            for file in self.declared.get(&key).into_iter().flatten() {
                if component.insert(file.clone())
                    && let Some(e) = self.files.get(file)
                {
                    queue.extend(tenants_of(&e.result).flat_map(keys_of));
                }
            }
        }
        component
    }

    /// The tenants whose findings [`judge`](Self::judge) can change when `path` changes to
    /// `text`: what its judgement needs to know about each (its last applied manifest, say).
    pub fn involved(&self, path: &str, text: &str, opts: &ValidateOptions) -> BTreeSet<String> {
        let new = check_file(path, text, opts, Schemas::get());
        let component = self.component(path, self.files.get(path), &new);
        let mut ids: BTreeSet<String> = tenants_of(&new)
            .map(|t| t.metadata.id.to_string())
            .collect();
        for e in component.iter().filter_map(|f| self.files.get(f)) {
            ids.extend(tenants_of(&e.result).map(|t| t.metadata.id.to_string()));
        }
        ids
    }

    /// Make `delta` part of the revision: afterwards this is the candidate, validated.
    pub fn apply(&mut self, delta: Delta) {
        let Delta {
            path,
            entry,
            component,
            findings,
            tenants,
        } = delta;
        let report = &mut self.report;
        report.findings.retain(|f| {
            f.file != path
                && !(f.tenant.is_some()
                    && TENANT_RULES.contains(&f.rule.as_ref())
                    && component.contains(&f.file))
        });
        report.add_findings(findings);
        let tenants_of_catalog = &mut report.catalog.tenants;
        tenants_of_catalog.retain(|t| !component.contains(&t.file));
        tenants_of_catalog.extend(tenants);
        tenants_of_catalog.sort_by(|a, b| (&a.file, a.pos.line).cmp(&(&b.file, b.pos.line)));

        let old = self.files.insert(path.clone(), entry);
        if let Some(old) = &old {
            for key in tenants_of(&old.result).flat_map(keys_of) {
                if let Some(files) = self.declared.get_mut(&key) {
                    files.remove(&path);
                    if files.is_empty() {
                        self.declared.remove(&key);
                    }
                }
            }
        }
        for key in tenants_of(&self.files[&path].result).flat_map(keys_of) {
            self.declared.entry(key).or_default().insert(path.clone());
        }
        let summary = &mut report.summary;
        summary.files += usize::from(old.is_none());
        summary.documents =
            summary.documents - old.map_or(0, |e| e.result.2) + self.files[&path].result.2;
        summary.tenants = report.catalog.tenants.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;
    use std::collections::BTreeMap;

    /// A small deterministic generator (the property needs no crate).
    struct Rng(u64);
    impl Rng {
        fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            of[(self.0 >> 33) as usize % of.len()]
        }
    }

    /// A tenant document drawn from small pools, so ids, external ids, references and
    /// environment names collide or dangle often; sometimes not a valid tenant at all.
    fn tenant(r: &mut Rng) -> String {
        let id = r.pick(&["t_1", "t_2", "t_3", "t_4", "t_5", "t_6"]);
        let org = r.pick(&["org_acme", "org_acme", "org_globex", "org_nope"]);
        let plan = r.pick(&["starter", "starter", "golden"]);
        let region = r.pick(&["ap-south-1", "ap-south-1", "mars-1"]);
        let envs = r.pick(&[
            "dev, prod",
            "dev",
            "dev, dev",
            "prod, averyveryverylongname",
        ]);
        let envs: Vec<String> = envs
            .split(", ")
            .map(|e| format!("    - {{ name: {e} }}\n"))
            .collect();
        let external = r.pick(&["", "crm: A", "crm: B", "crm: A, billing: X", "billing: X"]);
        let profile = r.pick(&["mt-standard", "mt-standard", "mt-standard", "bogus"]);
        format!(
            "apiVersion: tenancy.dev/v1\nkind: Tenant\nmetadata:\n  id: {id}\n  organization: {org}\n  displayName: T\nspec:\n  profile: {profile}\n  lifecycle: Active\n  plan: {plan}\n  regions: {{ allowed: [{region}], preferred: {region} }}\n  environments:\n{}  quotas: {{ storageGiB: 10, concurrentJobs: 1, apiRateLimit: 10 }}\n  contacts: {{ technical: a@b.example, billing: a@b.example, incident: a@b.example }}\n  externalIds: {{ {external} }}\n",
            envs.concat()
        )
    }

    fn file(r: &mut Rng) -> String {
        match r.pick(&["one", "one", "one", "two", "broken"]) {
            "one" => tenant(r),
            "two" => format!("{}---\n{}", tenant(r), tenant(r)),
            _ => "kind: Tenant\nmetadata: [unclosed\n".to_owned(),
        }
    }

    fn snapshot(files: &BTreeMap<String, String>) -> Snapshot {
        Snapshot {
            files: files
                .iter()
                .map(|(path, text)| SourceFile {
                    path: path.clone(),
                    text: text.clone(),
                    id: git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).ok(),
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    /// The candidate judged against the head revision, as an API write judges it: a file the
    /// change did not touch held its names; the changed file held what it declared before.
    struct AgainstHead<'a> {
        path: &'a str,
        before: Vec<Tenant>,
    }

    impl Incumbency for AgainstHead<'_> {
        fn holds_id(&self, id: &str, file: &str) -> bool {
            file != self.path || self.before.iter().any(|t| t.metadata.id.as_str() == id)
        }
        fn holds_external_id(&self, id: &str, file: &str, key: &str, value: &str) -> bool {
            file != self.path
                || self.before.iter().any(|t| {
                    t.metadata.id.as_str() == id
                        && t.spec.external_ids.get(key).map(String::as_str) == Some(value)
                })
        }
    }

    fn platform() -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "platform/regions.yaml".to_owned(),
                include_str!("../../../tenants/platform/regions.yaml").to_owned(),
            ),
            (
                "platform/plans.yaml".to_owned(),
                include_str!("../../../tenants/platform/plans.yaml").to_owned(),
            ),
            (
                "org_acme/organization.yaml".to_owned(),
                include_str!("../../../tenants/org_acme/organization.yaml").to_owned(),
            ),
            (
                "org_globex/organization.yaml".to_owned(),
                include_str!("../../../tenants/org_globex/organization.yaml").to_owned(),
            ),
        ])
    }

    fn tenants_by_place(c: &Catalog) -> Vec<(String, usize, String)> {
        c.tenants
            .iter()
            .map(|t| (t.file.clone(), t.doc, t.value.metadata.id.to_string()))
            .collect()
    }

    #[test]
    fn a_judged_delta_is_what_validating_the_whole_candidate_gives() {
        let opts = ValidateOptions::default();
        let mut r = Rng(7);
        let mut judged = 0;
        for case in 0..150 {
            let mut files = platform();
            for i in 0..r.pick(&["2", "5", "8"]).parse().unwrap() {
                files.insert(format!("org_acme/f{i}.yaml"), file(&mut r));
            }
            let mut cache = ParseCache::default();
            let head = validate_cached(&snapshot(&files), &opts, Some(&mut cache), &NoIncumbents);
            let mut validated = Validated::new(head, &cache);
            // A chain of writes, each judged against the last; the last one as an API write
            // judges it, against its head. (Earlier ones attribute conflicts by order: a
            // chain judged against each head keeps attributions a whole validation against
            // the last head alone could not know.)
            for step in 0..4 {
                let path = format!("org_acme/f{}.yaml", r.pick(&["0", "1", "2", "9"]));
                let text = file(&mut r);
                let before = validated
                    .report
                    .catalog
                    .tenants
                    .iter()
                    .filter(|t| t.file == path)
                    .map(|t| (*t.value).clone())
                    .collect();
                let against_head = AgainstHead {
                    path: &path,
                    before,
                };
                let incumbents: &dyn Incumbency = if step == 3 {
                    &against_head
                } else {
                    &NoIncumbents
                };
                files.insert(path.clone(), text.clone());
                let full = validate_cached(&snapshot(&files), &opts, None, incumbents);
                let id = git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).unwrap();
                match validated.judge(&path, id, &text, &opts, incumbents) {
                    Some(delta) => {
                        validated.apply(delta);
                        judged += 1;
                    }
                    None => {
                        // Only from some tenants to none (or back) is a tenant file judged whole.
                        assert!(
                            validated.report.catalog.tenants.is_empty()
                                || full.catalog.tenants.is_empty(),
                            "case {case} step {step}: a tenant file's change is judged by its delta"
                        );
                        let mut cache = ParseCache::default();
                        let whole =
                            validate_cached(&snapshot(&files), &opts, Some(&mut cache), incumbents);
                        validated = Validated::new(whole, &cache);
                    }
                }
                assert_eq!(
                    validated.report.findings, full.findings,
                    "case {case} step {step}: {path}\n{text}"
                );
                assert_eq!(
                    tenants_by_place(&validated.report.catalog),
                    tenants_by_place(&full.catalog),
                    "case {case} step {step}"
                );
                assert_eq!(
                    format!("{:?}", validated.report.summary),
                    format!("{:?}", full.summary)
                );
            }
        }
        assert!(
            judged > 550,
            "{judged} of 600 changes judged by their delta"
        );
    }

    #[test]
    fn a_platform_or_organization_change_is_judged_whole() {
        let opts = ValidateOptions::default();
        let mut files = platform();
        files.insert("org_acme/t.yaml".into(), tenant(&mut Rng(1)));
        let mut cache = ParseCache::default();
        let head = validate_cached(&snapshot(&files), &opts, Some(&mut cache), &NoIncumbents);
        let validated = Validated::new(head, &cache);
        let id = git2::Oid::ZERO_SHA1;
        let org = &files["org_acme/organization.yaml"];
        // An edit of a platform file, a tenant file turned into an organization, and a
        // tenant file that gains an organization document.
        assert!(
            validated
                .judge(
                    "platform/plans.yaml",
                    id,
                    "kind: Plan\n",
                    &opts,
                    &NoIncumbents
                )
                .is_none()
        );
        assert!(
            validated
                .judge("org_acme/t.yaml", id, org, &opts, &NoIncumbents)
                .is_none()
        );
        let both = format!("{}---\n{org}", files["org_acme/t.yaml"]);
        assert!(
            validated
                .judge("org_acme/t.yaml", id, &both, &opts, &NoIncumbents)
                .is_none()
        );
        // A broken platform file (no documents parsed) is still not a tenant file.
        assert!(
            validated
                .judge("platform/regions.yaml", id, "][", &opts, &NoIncumbents)
                .is_none()
        );
    }
}
