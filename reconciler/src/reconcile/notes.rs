//! Git notes: every commit that any tenant's recorded outcome names carries the compliance
//! record of what was decided and done at it (`git log --notes=tenancy`).
//!
//! A note is rendered from the state store alone — the commit's outcomes (`commit_outcomes`)
//! and decisions — never from a pass's memory, so it is idempotent: writing it again says the
//! same thing, and a pass killed between recording tenants and writing the note leaves nothing
//! unannotated. [`write_notes`] runs after every pass (and when the daemon starts) over every
//! commit with outcomes recorded since the last time it ran for that repository.

// Text from the store may hold anything (a policy's message, a plane's error); `git notes show`
// prints it raw, so every value goes on one line, escaped.
use crate::diagnostics::one_line;
use crate::store::{CommitOutcome, DecisionRecord, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The first line of the note's section that Tenancy owns; anything above it is kept.
pub const NOTE_MARK: &str = "Tenancy record of this commit (from the state store):";

/// The note of one commit: one block per pass that recorded something new there, each with the
/// policy modules that judged the commit and, per tenant, the outcome, the changes made and
/// every verdict with the version it was judged against.
pub(crate) fn render(outcomes: &[CommitOutcome], decisions: &[DecisionRecord]) -> String {
    let mut out = format!("{NOTE_MARK}\n");
    let mut modules: Vec<(&str, &str, &str)> = decisions
        .iter()
        .filter(|d| !d.digest.is_empty())
        .map(|d| (d.policy.as_str(), d.digest.as_str(), d.mode.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    modules.sort();
    // Passes in the order they first recorded something here.
    let mut passes: Vec<&str> = Vec::new();
    for o in outcomes {
        if !passes.contains(&o.pass_id.as_str()) {
            passes.push(&o.pass_id);
        }
    }
    for pass in passes {
        let rows: Vec<&CommitOutcome> = outcomes.iter().filter(|o| o.pass_id == pass).collect();
        let count = |what: &str| rows.iter().filter(|o| o.outcome == what).count();
        let at = rows.iter().map(|o| o.recorded_at).min().unwrap_or(0);
        let time = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.max(0) as u64),
        );
        out.push_str(&format!(
            "\nTenancy apply at {time}: {} applied, {} blocked, {} failed, {} drifted\n",
            count("applied"),
            count("blocked"),
            count("failed"),
            count("drifted")
        ));
        for (name, digest, mode) in &modules {
            out.push_str(&format!("policy {name} sha256:{digest} ({mode})\n"));
        }
        for o in rows {
            out.push_str(&format!(
                "\n{} {}: {} of {} change(s) made",
                o.tenant_id, o.outcome, o.changes_made, o.changes_planned
            ));
            if let Some(reason) = &o.reason {
                out.push_str(&format!(" — {}", one_line(reason)));
            }
            out.push('\n');
            for d in decisions.iter().filter(|d| d.tenant_id == o.tenant_id) {
                let verdicts = d
                    .verdicts
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .map(|v| {
                                format!(
                                    "{} {}",
                                    v["severity"].as_str().unwrap_or("deny"),
                                    v["rule"].as_str().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let verdict = if verdicts.is_empty() {
                    "allow".to_owned()
                } else {
                    verdicts.join(", ")
                };
                out.push_str(&format!(
                    "  {} sha256:{}: {} (judged against {})\n",
                    d.policy,
                    &d.digest[..d.digest.len().min(12)],
                    one_line(&verdict),
                    if d.against.is_empty() {
                        "its previous version"
                    } else {
                        &d.against
                    }
                ));
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NotesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("git note on {commit}: {source}")]
    Git {
        commit: String,
        source: crate::source::SourceError,
    },
}

/// Write (or bring up to date) the note of every commit of `repo` with outcomes recorded since
/// this last ran for `repo`; returns how many notes changed. A commit the repository does not
/// have (another repository shares the store) is skipped.
pub(crate) async fn write_notes(store: &Store, repo: &Path) -> Result<usize, NotesError> {
    let key = format!(
        "notes.synced-at:{}",
        std::fs::canonicalize(repo)
            .unwrap_or_else(|_| repo.to_owned())
            .display()
    );
    let synced = Synced::parse(store.state_value(&key).await?.as_deref());
    let mut next = Synced {
        at: synced.at,
        held: BTreeMap::new(),
    };
    let mut written = 0;
    for (sha, at, rows) in store.commits_recorded_since(synced.at).await? {
        // Nothing new since its note was written (a 10,000-tenant pass's commit is not
        // rendered again by the next pass).
        if at == synced.at && synced.held.get(&sha) == Some(&rows) {
            next.note(sha, at, rows);
            continue;
        }
        let known = git2::Repository::open(repo)
            .ok()
            .is_some_and(|r| git2::Oid::from_str(&sha).is_ok_and(|oid| r.find_commit(oid).is_ok()));
        if !known {
            next.note(sha, at, rows);
            continue;
        }
        let outcomes = store.commit_outcomes(&sha).await?;
        let text = render(&outcomes, &store.decisions_at(&sha).await?);
        match crate::source::set_note_section(repo, &sha, NOTE_MARK, &text) {
            Ok(true) => written += 1,
            Ok(false) => {}
            Err(source) => {
                return Err(NotesError::Git {
                    commit: sha,
                    source,
                });
            }
        }
        // What the note was rendered from (rows recorded meanwhile included).
        let last = outcomes.iter().map(|o| o.recorded_at).max().unwrap_or(at);
        let rows = outcomes.iter().filter(|o| o.recorded_at >= last).count() as i64;
        next.note(sha, last, rows);
    }
    if next != synced {
        store.set_state_value(&key, &next.to_string()).await?;
    }
    Ok(written)
}

/// How far the notes are written: every outcome recorded before `at`, and of those recorded
/// at `at` itself (another may land in the same millisecond), how many each commit had when
/// its note was rendered. Kept as `AT` (what earlier versions wrote) or `AT SHA=ROWS …`.
/// A pass records one outcome per tenant and commit, so a count that did not change means
/// nothing was added.
#[derive(Debug, Default, PartialEq, Eq)]
struct Synced {
    at: i64,
    held: BTreeMap<String, i64>,
}

impl Synced {
    fn parse(value: Option<&str>) -> Synced {
        let mut words = value.unwrap_or("").split_whitespace();
        let at = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let held = words
            .filter_map(|w| w.split_once('='))
            .filter_map(|(sha, n)| Some((sha.to_owned(), n.parse().ok()?)))
            .collect();
        Synced { at, held }
    }

    /// `sha`'s note says everything up to `rows` outcomes recorded at `last`.
    fn note(&mut self, sha: String, last: i64, rows: i64) {
        if last > self.at {
            self.at = last;
            self.held.clear();
        }
        if last == self.at {
            self.held.insert(sha, rows);
        }
    }
}

impl std::fmt::Display for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.at)?;
        for (sha, rows) in &self.held {
            write!(f, " {sha}={rows}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_resume_after_what_they_were_rendered_from() {
        // What versions before the counts wrote: everything at that millisecond is looked at.
        let old = Synced::parse(Some("1700"));
        assert_eq!((old.at, old.held.len()), (1700, 0));
        assert_eq!(Synced::parse(Some("junk")), Synced::default());
        let mut next = Synced {
            at: 1700,
            held: BTreeMap::new(),
        };
        next.note("a".repeat(40), 1700, 3);
        next.note("b".repeat(40), 1800, 10_000);
        // A later millisecond replaces what was held at the earlier one.
        assert_eq!(next.to_string(), format!("1800 {}=10000", "b".repeat(40)));
        next.note("c".repeat(40), 1800, 1);
        next.note("d".repeat(40), 1500, 1);
        let kept = Synced::parse(Some(&next.to_string()));
        assert_eq!(kept, next);
        assert_eq!(kept.held.len(), 2);
    }

    fn outcome(pass: &str, tenant: &str, outcome: &str, at: i64) -> CommitOutcome {
        CommitOutcome {
            commit_sha: "c".repeat(40),
            pass_id: pass.into(),
            tenant_id: tenant.into(),
            outcome: outcome.into(),
            changes_made: 1,
            changes_planned: 2,
            reason: (outcome != "applied").then(|| "why\nnot\u{1b}[2J".into()),
            recorded_at: at,
        }
    }

    #[test]
    fn one_block_per_pass_with_verdicts_and_baselines_and_no_control_characters() {
        let decisions = vec![DecisionRecord {
            tenant_id: "t_1".into(),
            commit_sha: "c".repeat(40),
            operation: "transition".into(),
            policy: "lifecycle".into(),
            digest: "d".repeat(64),
            mode: "enforce".into(),
            blocks: true,
            verdicts: serde_json::json!([{ "rule": "lifecycle.transition-not-allowed", "severity": "deny" }]),
            failure: None,
            decided_at: 1,
            against: "last applied at abc".into(),
        }];
        let text = render(
            &[
                outcome("p1", "t_1", "blocked", 1_000),
                outcome("p1", "t_2", "applied", 1_001),
                outcome("p2", "t_2", "applied", 9_000),
            ],
            &decisions,
        );
        assert!(text.starts_with(NOTE_MARK));
        assert_eq!(text.matches("Tenancy apply at").count(), 2, "{text}");
        assert!(text.contains("1970-01-01T00:00:01Z: 1 applied, 1 blocked, 0 failed, 0 drifted"));
        assert!(text.contains(&format!(
            "policy lifecycle sha256:{} (enforce)",
            "d".repeat(64)
        )));
        assert!(
            text.contains(r"t_1 blocked: 1 of 2 change(s) made — why\nnot\u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains(
            "  lifecycle sha256:dddddddddddd: deny lifecycle.transition-not-allowed (judged against last applied at abc)"
        ));
        assert!(!text.contains('\u{1b}'));
    }
}
