//! Findings: what `validate` (and later `plan`) tells a user about their repository.
//!
//! A [`Finding`] is data — file, position, tenant, rule, severity, message, hint — so that every
//! output format (text for people, JSON for machines) renders the same facts. This module owns
//! the rendering; it never decides what is wrong.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write as _;

/// How bad a finding is. Only `Error` makes `tenancy validate` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A 1-based position in a file, plus the byte range of the offending text when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u32,
    pub column: u32,
    /// Byte length of the offending text (for the caret underline); 0 = a single caret.
    pub len: u32,
}

/// One diagnostic. The JSON form of this struct is a documented, stable interface
/// (`schemas/validate-report.schema.json`): add fields, never rename or remove them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Path of the file relative to the repository root, `/`-separated.
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// The tenant the finding concerns, when the manifest declared a valid id.
    pub tenant: Option<String>,
    /// Stable rule identifier, e.g. `schema.missing-field`, `ref.plan`, or a policy's own rule
    /// such as `residency.outside-zone`.
    pub rule: Cow<'static, str>,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    /// JSON pointer to the offending value inside the document, when there is one.
    pub pointer: Option<String>,
    /// The policy that reported this finding (name and module digest), for policy findings.
    pub policy: Option<PolicyRef>,
    #[serde(skip)]
    pub span_len: u32,
}

/// Which policy module produced a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub name: String,
    pub digest: String,
}

impl Finding {
    pub fn error(
        file: impl Into<String>,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            file: file.into(),
            line: None,
            column: None,
            tenant: None,
            rule: rule.into(),
            policy: None,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
            pointer: None,
            span_len: 0,
        }
    }

    pub fn warning(
        file: impl Into<String>,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(file, rule, message)
        }
    }

    pub fn at(mut self, pos: Position) -> Self {
        if pos.line > 0 {
            self.line = Some(pos.line);
            self.column = Some(pos.column.max(1));
            self.span_len = pos.len;
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn tenant(mut self, tenant: Option<&str>) -> Self {
        self.tenant = tenant.map(str::to_owned);
        self
    }

    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }

    /// `file:line:col` (or just `file`) — the form editors and CI annotators understand.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }

    fn sort_key(&self) -> (&str, u32, u32, Severity, &str) {
        (
            &self.file,
            self.line.unwrap_or(0),
            self.column.unwrap_or(0),
            self.severity,
            &self.rule,
        )
    }
}

/// Sort findings into reading order: by file, then position, then severity.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        a.sort_key()
            .cmp(&b.sort_key())
            .then_with(|| a.message.cmp(&b.message))
    });
}

/// Quote an untrusted value for display: control characters, quotes and non-ASCII look-alikes are
/// escaped so that a hostile manifest cannot forge terminal output or hide characters.
pub fn quote(value: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::with_capacity(value.len().min(MAX) + 2);
    out.push('"');
    for (n, c) in value.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Make one line of source text safe to print: control characters become `�`.
fn sanitize_line(line: &str) -> String {
    line.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Text rendering in the style of rustc: header, location arrow, the source line with a caret
/// under the offending value, then the tenant and the hint.
pub fn render_text(f: &Finding, source: Option<&str>, color: bool) -> String {
    let (bold, red, yellow, blue, cyan, reset) = if color {
        (
            "\x1b[1m",
            "\x1b[1;31m",
            "\x1b[1;33m",
            "\x1b[1;34m",
            "\x1b[1;36m",
            "\x1b[0m",
        )
    } else {
        ("", "", "", "", "", "")
    };
    let sev_color = match f.severity {
        Severity::Error => red,
        Severity::Warning => yellow,
        Severity::Info => cyan,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{sev_color}{}[{}]{reset}{bold}: {}{reset}",
        f.severity.as_str(),
        f.rule,
        f.message
    );
    let gutter_width = f.line.map(|l| l.to_string().len()).unwrap_or(1);
    let pad = " ".repeat(gutter_width);
    let _ = writeln!(out, "{pad}{blue}-->{reset} {}", f.location());
    if let (Some(line_no), Some(src)) = (f.line, source) {
        if let Some(text) = src.lines().nth(line_no.saturating_sub(1) as usize) {
            let text = sanitize_line(text);
            let col = f.column.unwrap_or(1).max(1) as usize;
            // Columns are in characters; the caret underlines at least one character.
            let avail = text.chars().count().saturating_sub(col - 1).max(1);
            let width = (f.span_len as usize).clamp(1, avail);
            let _ = writeln!(out, "{pad} {blue}|{reset}");
            let _ = writeln!(out, "{blue}{line_no} |{reset} {text}");
            let indent: String = text
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(
                out,
                "{pad} {blue}|{reset} {indent}{sev_color}{}{reset}",
                "^".repeat(width)
            );
        }
    }
    if let Some(t) = &f.tenant {
        let _ = writeln!(out, "{pad} {blue}={reset} tenant: {t}");
    }
    if let Some(h) = &f.hint {
        let _ = writeln!(out, "{pad} {blue}={reset} hint: {h}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_controls_and_lookalikes() {
        assert_eq!(quote("t_1\"; DROP"), r#""t_1\"; DROP""#);
        assert_eq!(quote("\u{1b}[31mred"), r#""\u{1b}[31mred""#);
        assert_eq!(quote("tеnant"), r#""t\u{435}nant""#); // Cyrillic 'е'
    }

    #[test]
    fn text_rendering_points_at_the_value() {
        let src = "a: 1\nspec:\n  plan: golden\n";
        let f = Finding::error("org/t.yaml", "ref.plan", "unknown plan \"golden\"")
            .at(Position {
                line: 3,
                column: 9,
                len: 6,
            })
            .tenant(Some("t_5001"))
            .hint("declare it in platform/plans.yaml");
        let text = render_text(&f, Some(src), false);
        assert_eq!(
            text,
            "error[ref.plan]: unknown plan \"golden\"\n --> org/t.yaml:3:9\n  |\n3 |   plan: golden\n  |         ^^^^^^\n  = tenant: t_5001\n  = hint: declare it in platform/plans.yaml\n"
        );
    }

    #[test]
    fn sanitizes_terminal_escapes_in_source_lines() {
        let src = "id: \u{1b}]0;pwned\u{7}\n";
        let f = Finding::error("x.yaml", "r", "m").at(Position {
            line: 1,
            column: 5,
            len: 1,
        });
        let text = render_text(&f, Some(src), false);
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains('\u{fffd}'));
    }
}
