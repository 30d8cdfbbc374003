//! Govern: run the bundle's WebAssembly policies over tenant changes and turn their verdicts
//! into decisions (recorded with the module digest) and findings.
//!
//! [`host`] is the sandbox and the only code that touches wasmtime; [`bundle`] reads
//! `bundle.yaml`; [`fixtures`] is `tenancy policy test`.

pub mod bounds;
pub mod bundle;
pub mod compile;
pub(crate) mod contract;
pub mod fixtures;
pub mod history;
pub mod host;
pub mod inventory;
pub mod shape;

use crate::manifest::model::{Plan, Region, Tenant};
use bundle::{Bundle, Entry, Mode, OperationKind};
use host::{Failure, LoadedModule, Platform, PolicyHost};
use host::{OutputBudget, RUN_OUTPUT_BYTES};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The severity a policy gave, before the bundle's mode is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Deny,
    Warn,
    Info,
}

/// One violation reported by a policy (or the deny that stands for a failed module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub rule: String,
    pub message: String,
    /// JSON pointer into the tenant manifest.
    pub path: String,
    pub severity: Severity,
}

/// What one policy decided about one tenant change.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub policy: String,
    /// sha256 of the module that decided (from the bundle, verified before loading).
    pub digest: String,
    pub mode: Mode,
    pub verdicts: Vec<Verdict>,
    /// Set when the module could not decide; `verdicts` then holds one deny saying why.
    pub failure: Option<String>,
    /// The previous version the change was judged against ("commit <sha>", "last applied at
    /// <sha>", "nothing (a creation)"; several joined with " and " when they were the same).
    pub against: String,
    /// What the change was against that version (create, update, transition, delete).
    pub operation: OperationKind,
}

impl Decision {
    /// Does this decision refuse the change? Only denies in `enforce` mode do.
    pub fn blocks(&self) -> bool {
        self.mode == Mode::Enforce && self.verdicts.iter().any(|v| v.severity == Severity::Deny)
    }
}

/// A tenant change to judge.
pub struct Change<'a> {
    pub tenant: &'a Tenant,
    pub previous: Option<&'a Tenant>,
    pub commit_sha: &'a str,
    pub commit_author: &'a str,
}

impl Change<'_> {
    pub fn operation(&self) -> OperationKind {
        OperationKind::of(
            self.previous.map(|p| p.spec.lifecycle),
            self.tenant.spec.lifecycle,
        )
    }
}

/// The platform inventory of a catalog, built once for a pass's evaluations.
pub fn platform_of(catalog: &crate::validate::Catalog) -> Platform {
    let regions: Vec<&Region> = catalog.regions.iter().map(|r| &r.value).collect();
    let plans: Vec<&Plan> = catalog.plans.iter().map(|p| &p.value).collect();
    Platform::new(&regions, &plans)
}

/// A bundle's modules, loaded (or the reason each could not be).
pub struct PolicySet {
    host: Arc<PolicyHost>,
    pub policies: Vec<(Entry, Result<Arc<LoadedModule>, Failure>)>,
}

impl PolicySet {
    /// Load every module of a bundle. A module that fails to load does not stop the others;
    /// it denies every change in its scope with the reason.
    pub fn load(host: Arc<PolicyHost>, bundle: &Bundle) -> PolicySet {
        let policies = bundle
            .entries
            .iter()
            .map(|e| (e.clone(), host.load(e)))
            .collect();
        PolicySet { host, policies }
    }

    pub fn compile_time(&self) -> Duration {
        self.policies
            .iter()
            .filter_map(|(_, m)| m.as_ref().ok())
            .map(|m| m.compile_time)
            .sum()
    }

    /// Evaluate every applicable policy for one change.
    pub fn evaluate(&self, change: &Change<'_>, platform: &Platform) -> Vec<Decision> {
        self.evaluate_within(change, platform, &OutputBudget::new(RUN_OUTPUT_BYTES))
    }

    /// [`PolicySet::evaluate`], keeping what the modules say within a run's `budget`.
    fn evaluate_within(
        &self,
        change: &Change<'_>,
        platform: &Platform,
        budget: &OutputBudget,
    ) -> Vec<Decision> {
        let op = change.operation();
        let in_scope: Vec<_> = self
            .policies
            .iter()
            .filter(|(e, _)| e.scope.applies(change.tenant.spec.profile, op))
            .collect();
        if in_scope.is_empty() {
            return Vec::new();
        }
        let previous_json = change.previous.map(tenant_json);
        let tenant_json = tenant_json(change.tenant);
        let input = host::Input {
            operation: op.into(),
            tenant: tenant_json,
            previous: previous_json,
            platform: platform.clone(),
            commit: host::Commit {
                sha: change.commit_sha.to_owned(),
                author: change.commit_author.to_owned(),
            },
        };
        in_scope
            .into_iter()
            .map(|(entry, module)| {
                let outcome = module
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|m| self.host.evaluate_within(m, &entry.limits, &input, budget));
                decision(entry, op, outcome)
            })
            .collect()
    }

    /// Evaluate many changes in parallel (the platform inventory is shared), keeping at most
    /// [`RUN_OUTPUT_BYTES`] of what the modules say, however many tenants and cores.
    pub fn evaluate_all(&self, changes: &[Change<'_>], platform: &Platform) -> Vec<Vec<Decision>> {
        let budget = OutputBudget::new(RUN_OUTPUT_BYTES);
        changes
            .par_iter()
            .map(|c| self.evaluate_within(c, platform, &budget))
            .collect()
    }
}

/// A manifest as the JSON a policy receives, written into a buffer sized for a typical tenant
/// (growing it from empty: 4.6 against 3.3–4.0 µs per tenant in `bench-policies.sh`).
pub fn tenant_json(tenant: &Tenant) -> String {
    let mut out = Vec::with_capacity(2048);
    match serde_json::to_writer(&mut out, tenant) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The rule of the note that stands for violations a run did not keep.
pub const OUTPUT_CUT: &str = "policy.output-cut";

fn decision(
    entry: &Entry,
    operation: OperationKind,
    outcome: Result<(Vec<host::Violation>, usize), Failure>,
) -> Decision {
    match outcome {
        Ok((violations, cut)) => Decision {
            against: String::new(),
            operation,
            policy: entry.name.clone(),
            digest: entry.sha256.clone(),
            mode: entry.mode,
            verdicts: violations
                .into_iter()
                .map(|v| Verdict {
                    rule: v.rule,
                    message: v.message,
                    path: v.path,
                    severity: match v.severity {
                        host::Severity::Deny => Severity::Deny,
                        host::Severity::Warn => Severity::Warn,
                        host::Severity::Info => Severity::Info,
                    },
                })
                .chain((cut > 0).then(|| Verdict {
                    rule: OUTPUT_CUT.into(),
                    message: format!(
                        "policy `{}` reported {cut} more violation(s) here that this run did not keep: its modules' output passed the run's {} MiB budget (the first of each severity is kept, so a deny still denies)",
                        entry.name,
                        RUN_OUTPUT_BYTES >> 20
                    ),
                    path: String::new(),
                    severity: Severity::Info,
                }))
                .collect(),
            failure: None,
        },
        Err(failure) => Decision {
            against: String::new(),
            operation,
            policy: entry.name.clone(),
            digest: entry.sha256.clone(),
            mode: entry.mode,
            verdicts: vec![Verdict {
                rule: "policy.failed".into(),
                message: format!(
                    "policy `{}` ({}) could not decide: {failure}",
                    entry.name, entry.module_ref
                ),
                path: String::new(),
                severity: Severity::Deny,
            }],
            failure: Some(failure.to_string()),
        },
    }
}

/// Every tenant's decisions, and the findings they produce.
#[derive(Debug, Default)]
pub struct Governance {
    pub tenants: Vec<TenantDecisions>,
    pub findings: Vec<crate::diagnostics::Finding>,
    pub evaluations: usize,
    /// Wall time spent judging (all modules, all tenants), for the daemon's metrics.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantDecisions {
    pub tenant: String,
    pub file: String,
    pub operation: OperationKind,
    pub decisions: Vec<Decision>,
}

impl Governance {
    pub fn blocked(&self) -> impl Iterator<Item = &TenantDecisions> {
        self.tenants
            .iter()
            .filter(|t| t.decisions.iter().any(Decision::blocks))
    }
}

/// The rule of the deny that stands for a baseline that cannot say what a tenant was.
pub(crate) const PREVIOUS_UNREADABLE: &str = "policy.previous-unreadable";

/// Run the policies over every tenant of a catalog and turn verdicts into findings positioned in
/// the manifests (deny in enforce mode = error, in warn mode = warning, in audit mode = info).
///
/// Each tenant is judged against its previous version in every baseline of `history` (the
/// same previous version once); a change passes only if it passes against all of them. Every
/// decision names the version it was judged against.
pub(crate) fn govern(
    set: &PolicySet,
    catalog: &crate::validate::Catalog,
    history: &history::History,
    commit: Option<&crate::source::CommitInfo>,
    locator: &crate::validate::Locator<'_>,
    judge: impl Fn(&crate::validate::Located<Arc<Tenant>>) -> bool,
) -> Governance {
    use crate::diagnostics::{Finding, PolicyRef, Severity as Sev};
    use history::Prior;
    let platform = platform_of(catalog);
    let (sha, author) = match commit {
        Some(c) => (
            c.sha.clone(),
            format!("{} <{}>", c.author_name, c.author_email),
        ),
        None => (String::new(), String::new()),
    };
    let judged: Vec<&crate::validate::Located<Arc<Tenant>>> =
        catalog.tenants.iter().filter(|t| judge(t)).collect();
    // Per tenant: the distinct previous versions (with what each stands for), or why one of
    // its baselines cannot say.
    struct Judging<'a> {
        tenant: &'a crate::validate::Located<Arc<Tenant>>,
        /// Indexes into `changes`.
        changes: std::ops::Range<usize>,
        unreadable: Option<String>,
    }
    let mut changes: Vec<Change<'_>> = Vec::new();
    let mut against: Vec<Vec<history::Against>> = Vec::new();
    let mut judging = Vec::with_capacity(judged.len());
    for t in judged {
        let start = changes.len();
        let mut unreadable = None;
        let mut priors = history.priors(t);
        if priors.is_empty() {
            priors.push(Prior::Found(None, history::Against::Nothing));
        }
        for p in priors {
            match p {
                Prior::Unreadable(why) => unreadable = Some(why.to_owned()),
                Prior::Found(previous, what) => {
                    let same = (start..changes.len()).find(|&i| changes[i].previous == previous);
                    match same {
                        Some(i) => {
                            if !against[i].contains(&what) {
                                against[i].push(what);
                            }
                        }
                        None => {
                            changes.push(Change {
                                tenant: &t.value,
                                previous,
                                commit_sha: &sha,
                                commit_author: &author,
                            });
                            against.push(vec![what]);
                        }
                    }
                }
            }
        }
        judging.push(Judging {
            tenant: t,
            changes: start..changes.len(),
            unreadable,
        });
    }
    let mut all = set.evaluate_all(&changes, &platform);
    let mut out = Governance::default();
    let mut shown = Capped::new(MAX_FINDINGS);
    for j in judging {
        let t = j.tenant;
        let id = t.value.metadata.id.as_str();
        let mut decisions: Vec<Decision> = Vec::new();
        for i in j.changes.clone() {
            let what = against[i]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ");
            out.evaluations += all[i].len();
            for mut d in std::mem::take(&mut all[i]) {
                d.against = what.clone();
                decisions.push(d);
            }
        }
        if let Some(why) = &j.unreadable {
            decisions.push(Decision {
                policy: "baseline".into(),
                digest: String::new(),
                mode: Mode::Enforce,
                verdicts: vec![Verdict {
                    rule: PREVIOUS_UNREADABLE.into(),
                    message: format!(
                        "tenant `{id}` cannot be judged: {why}; it keeps its last applied state"
                    ),
                    path: String::new(),
                    severity: Severity::Deny,
                }],
                failure: Some(why.clone()),
                against: "last applied".into(),
                operation: OperationKind::Update,
            });
        }
        // The same verdict against two baselines is one finding.
        let mut seen: std::collections::HashSet<(String, String, String, String)> =
            Default::default();
        for d in &decisions {
            for v in &d.verdicts {
                if !seen.insert((
                    d.policy.clone(),
                    v.rule.clone(),
                    v.path.clone(),
                    v.message.clone(),
                )) {
                    continue;
                }
                let severity = match (v.severity, d.mode) {
                    (Severity::Deny, Mode::Enforce) => Sev::Error,
                    (Severity::Deny, Mode::Warn) | (Severity::Warn, _) => Sev::Warning,
                    (Severity::Deny, Mode::Audit) | (Severity::Info, _) => Sev::Info,
                };
                let hint = if d.digest.is_empty() {
                    format!("judged against {}", d.against)
                } else {
                    format!(
                        "reported by policy `{}` (sha256:{}, {} mode), judged against {}",
                        d.policy,
                        &d.digest[..d.digest.len().min(12)],
                        d.mode.as_str(),
                        d.against
                    )
                };
                let mut f = Finding::error(&t.file, v.rule.clone(), v.message.clone())
                    .at(locator.at(t, &v.path))
                    .tenant(Some(id))
                    .hint(hint);
                f.severity = severity;
                if !v.path.is_empty() {
                    f.pointer = Some(v.path.clone());
                }
                if !d.digest.is_empty() {
                    f.policy = Some(PolicyRef {
                        name: d.policy.clone(),
                        digest: d.digest.clone(),
                    });
                }
                shown.push(f);
            }
        }
        let operation = j
            .changes
            .clone()
            .next()
            .map_or(OperationKind::Update, |i| changes[i].operation());
        out.tenants.push(TenantDecisions {
            tenant: id.to_owned(),
            file: t.file.clone(),
            operation,
            decisions,
        });
    }
    out.findings = shown.finish();
    out
}

/// Most policy findings one run reports; the decisions (and so what is blocked) are complete
/// whatever the number.
pub(crate) const MAX_FINDINGS: usize = 10_000;

/// The rule of the finding that says how many findings a run did not show.
pub(crate) const FINDINGS_CUT: &str = "policy.findings-cut";

/// The first `most` findings, and a count of the rest (which are never held): `finish` adds
/// one finding saying what was cut — an error if any cut one was an error, so that cutting
/// never turns a refusal into a pass.
struct Capped {
    most: usize,
    findings: Vec<crate::diagnostics::Finding>,
    cut: [usize; 3],
    file: Option<String>,
    tenants: std::collections::HashSet<String>,
}

impl Capped {
    fn new(most: usize) -> Capped {
        Capped {
            most,
            findings: Vec::new(),
            cut: [0; 3],
            file: None,
            tenants: Default::default(),
        }
    }

    fn push(&mut self, f: crate::diagnostics::Finding) {
        use crate::diagnostics::Severity as Sev;
        if self.findings.len() < self.most {
            self.findings.push(f);
            return;
        }
        self.cut[match f.severity {
            Sev::Error => 0,
            Sev::Warning => 1,
            Sev::Info => 2,
        }] += 1;
        self.file.get_or_insert(f.file);
        if let Some(t) = f.tenant {
            self.tenants.insert(t);
        }
    }

    fn finish(mut self) -> Vec<crate::diagnostics::Finding> {
        use crate::diagnostics::Severity as Sev;
        let Some(file) = self.file.take() else {
            return self.findings;
        };
        let [errors, warnings, infos] = self.cut;
        let mut f = crate::diagnostics::Finding::error(
            &file,
            FINDINGS_CUT,
            format!(
                "{} more policy finding(s) not shown ({errors} error(s), {warnings} warning(s), {infos} info) for {} tenant(s): a run shows at most {}",
                errors + warnings + infos,
                self.tenants.len(),
                self.most
            ),
        )
        .hint("every tenant is still judged in full; fix the findings shown, or run `tenancy validate` on fewer tenants to see the rest");
        f.severity = if errors > 0 {
            Sev::Error
        } else if warnings > 0 {
            Sev::Warning
        } else {
            Sev::Info
        };
        self.findings.push(f);
        self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::{Finding, Severity as Sev};

    #[test]
    fn a_run_reports_at_most_its_cap_and_a_cut_error_stays_an_error() {
        let mut findings: Vec<Finding> = (0..25)
            .map(|i| {
                let mut f = Finding::error("org/t.yaml", "p.rule", format!("finding {i}"))
                    .tenant(Some(&format!("t_{}", i % 7)));
                f.severity = if i < 20 { Sev::Warning } else { Sev::Error };
                f
            })
            .collect();
        let mut capped = Capped::new(10);
        for f in findings.drain(..) {
            capped.push(f);
        }
        let findings = capped.finish();
        assert_eq!(findings.len(), 11);
        let last = findings.last().expect("cut note");
        assert_eq!(last.rule, FINDINGS_CUT);
        assert_eq!(last.severity, Sev::Error, "five errors were cut");
        assert!(
            last.message.starts_with("15 more policy finding(s) not shown (5 error(s), 10 warning(s), 0 info) for 7 tenant(s)"),
            "{}",
            last.message
        );
        let mut few = Capped::new(10);
        few.push(Finding::error("a.yaml", "p.rule", "one"));
        assert_eq!(few.finish().len(), 1);
    }
}
