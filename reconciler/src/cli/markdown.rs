//! `tenancy plan --output markdown`: the plan as a pull-request comment, within the size a
//! code host accepts (GitHub refuses a comment over 65,536 characters).
//!
//! A pure function over the plan: the summary first; then every tenant that is blocked or
//! refused, one line each with why; then the findings; then the other tenants' changes,
//! folded. When the budget runs out the rest is cut with a count, and the comment says how to
//! get the whole plan as JSON. Text that comes from manifests, planes or policies is escaped:
//! it can neither format the comment nor inject HTML.

use crate::diagnostics::{Finding, Severity, unsafe_char};
use crate::reconcile::{PlanReport, TenantPlan};
use std::fmt::Write;

/// Under GitHub's 65,536-character comment limit, with room to spare.
pub(crate) const GITHUB_LIMIT: usize = 65_000;

/// What the end of the comment needs at most (the cut notices and the pointer to the JSON).
const RESERVE: usize = 1_500;

/// `s` as Markdown text: no HTML, no emphasis, links, code or table cells of its own, one line.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' | '!' | '(' | ')' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c if unsafe_char(c) => out.push_str(&visible(c)),
            c => out.push(c),
        }
    }
    out
}

/// A character that would reorder the text around it, shown as its code point instead.
fn visible(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// `s` inside an HTML element (`<summary>`, `<code>`): Markdown is not read there, HTML is.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => out.push(' '),
            c if unsafe_char(c) => out.push_str(&visible(c)),
            c => out.push(c),
        }
    }
    out
}

/// `s` inside a code span or block: it cannot close the fence.
fn code(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '`' => out.push('ˋ'),
            c if c.is_control() => out.push(' '),
            c if unsafe_char(c) => out.push_str(&visible(c)),
            c => out.push(c),
        }
    }
    out
}

/// The comment being written, within a budget of characters.
struct Comment {
    out: String,
    used: usize,
    budget: usize,
    /// What did not fit, counted ("12 more finding(s)").
    cut: Vec<String>,
}

impl Comment {
    /// Add `text` if it fits; `false` (and nothing added) when it does not.
    fn push(&mut self, text: &str) -> bool {
        let n = text.chars().count();
        if self.used + n > self.budget {
            return false;
        }
        self.used += n;
        self.out.push_str(text);
        true
    }

    /// Add as many of `items` as fit, each rendered by `render`; count the rest as `what`.
    fn push_all<T>(&mut self, items: &[T], what: &str, render: impl Fn(&T) -> String) {
        let shown = items
            .iter()
            .take_while(|item| self.push(&render(item)))
            .count();
        if shown < items.len() {
            self.cut
                .push(format!("{} more {what}", items.len() - shown));
        }
    }
}

fn is_blocked(t: &TenantPlan) -> bool {
    !t.blocked.is_empty() || t.refused().next().is_some()
}

/// The comment for `report`, at most `limit` characters. `rerun` is the command that prints
/// the whole plan as JSON.
pub(crate) fn plan_comment(
    report: &PlanReport,
    findings: &[&Finding],
    rev: &str,
    rerun: &str,
    limit: usize,
) -> String {
    let c = super::plan::counts(report);
    let at = report
        .commit
        .as_deref()
        .map(super::output::short)
        .unwrap_or(rev);
    let errors = findings.iter().any(|f| f.severity == Severity::Error);
    let verdict = if report.errors() > 0 {
        "⚠️ could not be fully planned"
    } else if report.blocked() > 0 || errors {
        "❌ refused"
    } else {
        "✅ can be applied"
    };
    let mut out = String::new();
    let _ = writeln!(out, "### Tenancy plan for `{}` — {verdict}\n", code(at));
    let _ = writeln!(
        out,
        "**{} to create, {} to change, {} to delete** · {} tenant(s) planned · {} blocked\n",
        c.create,
        c.update,
        c.delete,
        report.tenants.len(),
        report.blocked()
    );
    let used = out.chars().count();
    let mut comment = Comment {
        out,
        used,
        budget: limit.saturating_sub(RESERVE),
        cut: Vec::new(),
    };

    // Blocked and refused tenants: always first, one line each.
    let blocked: Vec<&TenantPlan> = report.tenants.iter().filter(|t| is_blocked(t)).collect();
    if !blocked.is_empty() {
        comment.push("#### Blocked\n\n");
        comment.push_all(&blocked, "blocked tenant(s)", |t| {
            let mut why: Vec<String> = t.blocked.clone();
            why.extend(t.refused().map(|ch| {
                format!(
                    "{} {}: {}",
                    ch.plane,
                    ch.resource,
                    ch.refused.as_deref().unwrap_or_default()
                )
            }));
            let mut reason = why.join("; ");
            if reason.chars().count() > 400 {
                reason = reason.chars().take(400).collect::<String>() + "…";
            }
            format!(
                "- ❌ `{}` (`{}`): {}\n",
                code(&t.tenant),
                code(&t.file),
                text(&reason)
            )
        });
        comment.push("\n");
    }

    // Findings: errors before warnings.
    let mut listed: Vec<&&Finding> = findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .collect();
    listed.sort_by_key(|f| f.severity != Severity::Error);
    if !listed.is_empty() {
        comment.push("| | Where | Rule | Message |\n|---|---|---|---|\n");
        comment.push_all(&listed, "finding(s)", |f| {
            let icon = if f.severity == Severity::Error {
                "❌"
            } else {
                "⚠️"
            };
            format!(
                "| {icon} | `{}` | `{}` | {} |\n",
                code(&f.location()),
                code(&f.rule),
                text(&f.message)
            )
        });
        comment.push("\n");
    }

    // The other tenants' changes, folded.
    let changed: Vec<&TenantPlan> = report
        .tenants
        .iter()
        .filter(|t| !is_blocked(t) && (!t.changes.is_empty() || !t.errors.is_empty()))
        .collect();
    comment.push_all(&changed, "tenant(s) with changes", |t| {
        let state = if t.errors.is_empty() {
            "ok"
        } else {
            "not planned"
        };
        let mut block = format!(
            "<details><summary><code>{}</code> ({}) — {} change(s), {state}</summary>\n\n",
            html(&t.tenant),
            html(&t.lifecycle),
            t.changes.len()
        );
        for reason in &t.errors {
            let _ = writeln!(block, "- {}", text(reason));
        }
        if !t.changes.is_empty() {
            block.push_str("```diff\n");
            for ch in &t.changes {
                for line in super::plan::change_lines(ch) {
                    let _ = writeln!(block, "{}", code(&line));
                }
            }
            block.push_str("```\n");
        }
        block.push_str("\n</details>\n\n");
        block
    });
    comment.push_all(&report.removed, "removed file(s)", |file| {
        format!(
            "- `{}` removed: its resources are kept until a confirmed `lifecycle: Deleted`.\n",
            code(file)
        )
    });

    let Comment { mut out, cut, .. } = comment;
    if !cut.is_empty() {
        let _ = writeln!(
            out,
            "\n> **Cut to fit a comment:** {}. The whole plan: `{}`.",
            cut.join(", "),
            code(rerun)
        );
    }
    // The limit holds whatever the reserve held (a very long rerun command, say).
    if out.chars().count() > limit {
        out = out
            .chars()
            .take(limit.saturating_sub(2))
            .collect::<String>()
            + "…\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_manifests_cannot_format_the_comment() {
        let hostile = "<img src=x onerror=alert(1)> **bold** [x](http://e) `code` | cell\n# h";
        let t = text(hostile);
        assert!(!t.contains('<') && !t.contains('\n'), "{t}");
        assert!(t.contains("\\*\\*bold\\*\\*") && t.contains("\\|"), "{t}");
        assert_eq!(code("a```b\n"), "aˋˋˋb ");
        assert_eq!(html("t_1 <b>\"x\""), "t_1 &lt;b&gt;&quot;x&quot;");
        // A bidirectional override would reorder what a reviewer reads.
        assert_eq!(text("\u{202e}gnp.exe"), "U+202Egnp.exe");
        assert_eq!(code("a\u{2066}b"), "aU+2066b");
    }
}
