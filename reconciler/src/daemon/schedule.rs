//! What the loop does next, decided from what it observed: a pure function, so every rule
//! (first pass, fast-forward, periodic resync, retries, the force-push rule) is a unit test.

use crate::config::NonFastForward;
use std::collections::BTreeSet;

/// Which tenants a pass reconciles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every tenant (start, periodic resync, after an accepted non-fast-forward).
    Full,
    /// The tenants changed since this commit.
    Since(String),
    /// These tenants again (they failed; their backoff has expired).
    Retry(BTreeSet<String>),
}

/// What the loop knows when it decides.
#[derive(Debug, Clone)]
pub(super) struct Observed<'a> {
    /// The branch's head; empty when it could not be read.
    pub head: &'a str,
    /// The last commit reconciled, if any.
    pub last: Option<&'a str>,
    /// Whether `head` descends from `last` (true when there is no `last`).
    pub fast_forward: bool,
    /// Whether a periodic full resync is due.
    pub resync_due: bool,
    pub on_non_fast_forward: NonFastForward,
    /// Failed tenants whose backoff has expired.
    pub due_retries: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing to do until the next poll, trigger or retry.
    Wait,
    /// The head does not descend from what was reconciled and the rule is to refuse it:
    /// nothing is applied, and the refusal is said.
    Refuse,
    Pass(Scope),
}

/// The loop's rule. A non-fast-forward head is refused (when the rule says so) before anything
/// else, including a due resync or retry: old state is never silently re-applied. Otherwise a
/// first pass, a due resync and an accepted non-fast-forward reconcile everything; a moved
/// branch reconciles what changed since the last commit; expired retries come last.
pub(super) fn schedule(o: Observed<'_>) -> Decision {
    if o.head.is_empty() {
        return Decision::Wait;
    }
    let moved = o.last != Some(o.head);
    if (moved || o.resync_due) && !o.fast_forward && o.on_non_fast_forward == NonFastForward::Refuse
    {
        return Decision::Refuse;
    }
    match o.last {
        _ if o.resync_due || !o.fast_forward => Decision::Pass(Scope::Full),
        None => Decision::Pass(Scope::Full),
        Some(last) if moved => Decision::Pass(Scope::Since(last.to_owned())),
        Some(_) if !o.due_retries.is_empty() => Decision::Pass(Scope::Retry(o.due_retries)),
        Some(_) => Decision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed<'a>(head: &'a str, last: Option<&'a str>) -> Observed<'a> {
        Observed {
            head,
            last,
            fast_forward: true,
            resync_due: false,
            on_non_fast_forward: NonFastForward::Refuse,
            due_retries: BTreeSet::new(),
        }
    }

    fn retries(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_loop_s_rules_one_by_one() {
        use Decision::*;
        let cases: Vec<(&str, Observed<'_>, Decision)> = vec![
            ("unreadable head", observed("", Some("a")), Wait),
            ("first pass", observed("b", None), Pass(Scope::Full)),
            ("nothing moved", observed("a", Some("a")), Wait),
            (
                "fast-forward: what changed since",
                observed("b", Some("a")),
                Pass(Scope::Since("a".into())),
            ),
            (
                "resync due",
                Observed {
                    resync_due: true,
                    ..observed("a", Some("a"))
                },
                Pass(Scope::Full),
            ),
            (
                "resync due beats a move",
                Observed {
                    resync_due: true,
                    ..observed("b", Some("a"))
                },
                Pass(Scope::Full),
            ),
            (
                "expired retries when nothing moved",
                Observed {
                    due_retries: retries(&["t_1"]),
                    ..observed("a", Some("a"))
                },
                Pass(Scope::Retry(retries(&["t_1"]))),
            ),
            (
                "a move covers the retries (they are in the pass or unchanged)",
                Observed {
                    due_retries: retries(&["t_1"]),
                    ..observed("b", Some("a"))
                },
                Pass(Scope::Since("a".into())),
            ),
            (
                "force-push refused",
                Observed {
                    fast_forward: false,
                    ..observed("x", Some("a"))
                },
                Refuse,
            ),
            (
                "refused even when a resync and retries are due",
                Observed {
                    fast_forward: false,
                    resync_due: true,
                    due_retries: retries(&["t_1"]),
                    ..observed("x", Some("a"))
                },
                Refuse,
            ),
            (
                "force-push applied in full when the rule says so",
                Observed {
                    fast_forward: false,
                    on_non_fast_forward: NonFastForward::Apply,
                    ..observed("x", Some("a"))
                },
                Pass(Scope::Full),
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(schedule(o), want, "{name}");
        }
    }
}
