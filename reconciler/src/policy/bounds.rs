//! What the host holds of what modules say, and of memory: per evaluation (what is copied out
//! of a sandbox), per run (what all evaluations keep together) and per host (the memory of the
//! sandboxes running at once) — bounds that do not grow with the number of tenants or cores.

use super::bundle::Limits;
use super::host::{Failure, MAX_VIOLATIONS, Violation, check_violation};
use std::sync::Mutex;

/// How much a run may copy out of its sandboxes, all evaluations and threads together.
pub struct OutputBudget {
    left: std::sync::atomic::AtomicU64,
}

/// What one run keeps of what its modules said, whatever the number of tenants and cores.
pub const RUN_OUTPUT_BYTES: u64 = 64 << 20;

impl OutputBudget {
    pub fn new(bytes: u64) -> OutputBudget {
        OutputBudget {
            left: std::sync::atomic::AtomicU64::new(bytes),
        }
    }

    /// Take `bytes` if that many are left.
    fn take(&self, bytes: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// The host's memory for sandboxes, shared out among concurrent evaluations.
pub(super) struct SandboxMemory {
    state: Mutex<Shares>,
    freed: std::sync::Condvar,
}

struct Shares {
    /// MiB not given out.
    left: u64,
    /// Evaluations waiting for a share: only then does a returned share wake anyone (waking
    /// costs a system call even when nobody waits, and an evaluation takes a few µs).
    waiting: usize,
}

/// All sandboxes running at once, together (MiB): 16 evaluations at the default 64 MiB.
pub const SANDBOX_MEMORY_MIB: u64 = 1024;

pub(super) struct Share<'a> {
    pool: &'a SandboxMemory,
    mib: u64,
}

impl SandboxMemory {
    pub(super) fn new() -> SandboxMemory {
        SandboxMemory {
            state: Mutex::new(Shares {
                left: SANDBOX_MEMORY_MIB,
                waiting: 0,
            }),
            freed: std::sync::Condvar::new(),
        }
    }

    pub(super) fn acquire(&self, mib: u64) -> Share<'_> {
        // One evaluation alone may always run (its own limit is at most MAX_MEMORY_MIB).
        let mib = mib.min(SANDBOX_MEMORY_MIB);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while state.left < mib {
            state.waiting += 1;
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting -= 1;
        }
        state.left -= mib;
        Share { pool: self, mib }
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        state.left += self.mib;
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.pool.freed.notify_all();
        }
    }
}

/// Judge what an evaluation returned — its number, size and form — and keep it within the
/// run's `budget`.
pub(super) fn keep(
    violations: Vec<Violation>,
    limits: &Limits,
    budget: &OutputBudget,
) -> Result<(Vec<Violation>, usize), Failure> {
    let most = most_violations(limits);
    if violations.len() as u64 > most {
        return Err(Failure::TooManyViolations {
            count: violations.len(),
            limit: most,
        });
    }
    let size: u64 = violations
        .iter()
        .map(|v| (v.rule.len() + v.message.len() + v.path.len()) as u64)
        .sum();
    if size > limits.max_output_bytes {
        return Err(Failure::OutputTooLarge {
            size,
            limit: limits.max_output_bytes,
        });
    }
    for v in &violations {
        check_violation(&v.rule, &v.message, &v.path)?;
    }
    if budget.take(size) {
        return Ok((violations, 0));
    }
    let total = violations.len();
    let mut seen = Vec::new();
    let kept: Vec<Violation> = violations
        .into_iter()
        .filter(|v| {
            let first = !seen.contains(&v.severity);
            if first {
                seen.push(v.severity);
            }
            first
        })
        .map(|mut v| {
            v.message = shorten(&v.message, 256);
            v
        })
        .collect();
    let cut = total - kept.len();
    Ok((kept, cut))
}

pub(super) fn most_violations(limits: &Limits) -> u64 {
    limits.max_violations.min(MAX_VIOLATIONS)
}

/// What the host may copy out of one call: its output limit in bytes, plus the violations'
/// (or rules') own records. Wasmtime charges this "hostcall fuel" as it copies, before it
/// allocates, so a flood is cut off at the bound instead of filling the host's memory.
pub(super) fn copy_bound(limits: &Limits, records: u64, record_size: usize) -> usize {
    let records = usize::try_from(records.saturating_mul(record_size as u64)).unwrap_or(usize::MAX);
    usize::try_from(limits.max_output_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(records)
        .saturating_add(4096)
}

/// `s` cut to at most `chars` characters, marked.
fn shorten(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::host::Severity;
    use super::*;

    #[test]
    fn a_run_past_its_output_budget_keeps_the_first_of_each_severity() {
        let v = |rule: &str, severity: Severity| Violation {
            rule: rule.into(),
            message: "m".repeat(1000),
            path: String::new(),
            severity,
        };
        let violations = vec![
            v("p.a", Severity::Warn),
            v("p.b", Severity::Deny),
            v("p.c", Severity::Deny),
            v("p.d", Severity::Warn),
        ];
        let limits = Limits::default();
        let (all, cut) =
            keep(violations.clone(), &limits, &OutputBudget::new(1 << 20)).expect("kept");
        assert_eq!((all.len(), cut), (4, 0));
        let (kept, cut) = keep(violations, &limits, &OutputBudget::new(100)).expect("kept");
        assert_eq!(cut, 2);
        let rules: Vec<&str> = kept.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(rules, ["p.a", "p.b"], "a deny still denies");
        assert!(kept.iter().all(|v| v.message.chars().count() <= 257));
    }

    #[test]
    fn shares_wait_for_each_other_and_every_waiter_is_woken() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let pool = SandboxMemory::new();
        let (held, most) = (AtomicU64::new(0), AtomicU64::new(0));
        // Eight threads asking for 400 MiB of 1024 at once: at most two run together, the
        // others wait, and a returned share wakes them (none is left waiting forever).
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _share = pool.acquire(400);
                        let now = held.fetch_add(400, Ordering::SeqCst) + 400;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        held.fetch_sub(400, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= SANDBOX_MEMORY_MIB);
        let state = pool.state.lock().expect("lock");
        assert_eq!((state.left, state.waiting), (SANDBOX_MEMORY_MIB, 0));
    }
}
