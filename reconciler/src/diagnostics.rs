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
            if (unsafe_char(c) || c == SGR_OPEN || c == SGR_CLOSE) && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Opens and closes our own colour codes in text that goes through a [`Terminal`]: a
/// private-use character and a token random to this process, turned into an ANSI SGR sequence
/// there. Text from a manifest, a plane or a policy module cannot know the token, so any escape
/// it carries — an ESC, a forged marker — is shown as an escape, never obeyed.
const SGR_OPEN: char = '\u{E000}';
const SGR_CLOSE: char = '\u{E001}';

fn sgr_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        format!("{:016x}", h.finish())
    })
}

/// The colour `code` (`1;31`) for a [`Terminal`].
pub fn sgr(code: &str) -> String {
    format!("{SGR_OPEN}{}{code}{SGR_CLOSE}", sgr_token())
}

/// Is `c` one that could move the cursor, clear the screen, ring or reorder text?
pub fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `s` with every character that could drive a terminal shown as an escape (`\u{1b}`): for
/// text that is printed somewhere a [`Terminal`] is not (a log line, a one-line reason).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s
        .chars()
        .any(|c| unsafe_char(c) || c == SGR_OPEN || c == SGR_CLOSE)
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) || c == SGR_OPEN || c == SGR_CLOSE {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// [`printable`], and a line break shown as `\n` too: for a value that must stay on its line
/// (a finding's message, a module's name), so that it cannot print a line of its own.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    let text = printable(s);
    if !text.contains('\n') {
        return text;
    }
    text.replace('\n', "\\n").into()
}

/// A text output that a module, a manifest or a plane cannot take over: control characters,
/// ANSI escapes and bidirectional overrides in what is written are shown escaped, and only our
/// own colour codes ([`sgr`]) become escape sequences. Every text output of the CLI writes
/// through one.
pub struct Terminal<W: std::io::Write> {
    inner: W,
    /// The bytes of a character split across writes.
    partial: Vec<u8>,
    /// A colour marker being read (from [`SGR_OPEN`]).
    marker: Option<String>,
}

impl<W: std::io::Write> Terminal<W> {
    pub fn new(inner: W) -> Terminal<W> {
        Terminal {
            inner,
            partial: Vec::new(),
            marker: None,
        }
    }

    fn emit(&mut self, text: &str) -> std::io::Result<()> {
        let token = sgr_token();
        let mut out = String::with_capacity(text.len());
        let escaped = |c: char| format!("\\u{{{:x}}}", c as u32);
        for c in text.chars() {
            if let Some(marker) = self.marker.as_mut() {
                if c == SGR_CLOSE {
                    let ours = marker
                        .strip_prefix(token)
                        .filter(|code| code.bytes().all(|b| b.is_ascii_digit() || b == b';'));
                    match ours {
                        Some(code) => out.push_str(&format!("\x1b[{code}m")),
                        None => {
                            out.push_str(&escaped(SGR_OPEN));
                            out.push_str(&printable(marker));
                            out.push_str(&escaped(SGR_CLOSE));
                        }
                    }
                    self.marker = None;
                } else if marker.len() < token.len() + 16 && c != SGR_OPEN {
                    marker.push(c);
                } else {
                    // Not one of ours: what it held is text.
                    out.push_str(&escaped(SGR_OPEN));
                    out.push_str(&printable(marker));
                    self.marker = None;
                    if c == SGR_OPEN {
                        self.marker = Some(String::new());
                    } else {
                        out.push_str(&printable(&c.to_string()));
                    }
                }
                continue;
            }
            match c {
                SGR_OPEN => self.marker = Some(String::new()),
                SGR_CLOSE => out.push_str(&escaped(c)),
                c if unsafe_char(c) => out.push_str(&escaped(c)),
                c => out.push(c),
            }
        }
        self.inner.write_all(out.as_bytes())
    }
}

impl<W: std::io::Write> std::io::Write for Terminal<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        let taken = std::mem::take(&mut self.partial);
        let (text, rest) = match std::str::from_utf8(&taken) {
            Ok(t) => (t.to_owned(), Vec::new()),
            Err(e) if e.error_len().is_none() => {
                // A character cut at the end: keep its first bytes for the next write.
                let valid = e.valid_up_to();
                (
                    String::from_utf8_lossy(&taken[..valid]).into_owned(),
                    taken[valid..].to_vec(),
                )
            }
            Err(_) => (String::from_utf8_lossy(&taken).into_owned(), Vec::new()),
        };
        self.partial = rest;
        self.emit(&text)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit(&String::from_utf8_lossy(&rest))?;
        }
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for Terminal<W> {
    fn drop(&mut self) {
        // A marker left open is text, not a colour.
        if let Some(marker) = self.marker.take() {
            let text = format!("\\u{{{:x}}}{}", SGR_OPEN as u32, printable(&marker));
            let _ = self.inner.write_all(text.as_bytes());
        }
        let _ = std::io::Write::flush(self);
    }
}

/// Logs go to stderr as JSON lines (`--log-format json`): plain lines for people are then
/// not printed, so that stderr stays one JSON object per line. Set once by the CLI.
pub static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Text rendering in the style of rustc: header, location arrow, the source line with a caret
/// under the offending value, then the tenant and the hint.
pub fn render_text(f: &Finding, source: Option<&str>, color: bool) -> String {
    let (bold, red, yellow, blue, cyan, reset) = if color {
        (
            sgr("1"),
            sgr("1;31"),
            sgr("1;33"),
            sgr("1;34"),
            sgr("1;36"),
            sgr("0"),
        )
    } else {
        Default::default()
    };
    let sev_color = match f.severity {
        Severity::Error => &red,
        Severity::Warning => &yellow,
        Severity::Info => &cyan,
    };
    // What a finding says may come from a module or a manifest: printable and on its own
    // line, whoever prints it.
    let p = |s: &str| one_line(s).into_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{sev_color}{}[{}]{reset}{bold}: {}{reset}",
        f.severity.as_str(),
        p(&f.rule),
        p(&f.message)
    );
    let gutter_width = f.line.map(|l| l.to_string().len()).unwrap_or(1);
    let pad = " ".repeat(gutter_width);
    let _ = writeln!(out, "{pad}{blue}-->{reset} {}", p(&f.location()));
    if let (Some(line_no), Some(src)) = (f.line, source)
        && let Some(text) = src.lines().nth(line_no.saturating_sub(1) as usize)
    {
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
    if let Some(t) = &f.tenant {
        let _ = writeln!(out, "{pad} {blue}={reset} tenant: {}", p(t));
    }
    if let Some(h) = &f.hint {
        let _ = writeln!(out, "{pad} {blue}={reset} hint: {}", p(h));
    }
    out
}

/// An error and its causes on one line (`a: b: c`), each cause once: a message that already
/// quotes its source (`state store: {0}`) does not repeat it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
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

    /// A module's message cannot clear the screen, return the cursor, ring, reorder text or
    /// forge one of our colour codes — whatever prints it through a Terminal.
    #[test]
    fn a_terminal_obeys_only_our_own_colour_codes() {
        use std::io::Write;
        let hostile = format!(
            "\u{1b}[2J\u{1b}[H\rok: 0 error(s)\u{7}\u{202e}evil{}8{}hidden\u{E000}1;31",
            SGR_OPEN, SGR_CLOSE
        );
        let mut buf = Vec::new();
        {
            let mut t = Terminal::new(&mut buf);
            writeln!(t, "{}red{} {hostile}", sgr("1;31"), sgr("0")).unwrap();
        }
        let out = String::from_utf8(buf).unwrap();
        assert!(out.starts_with("\u{1b}[1;31mred\u{1b}[0m "), "{out:?}");
        let rest = &out["\u{1b}[1;31mred\u{1b}[0m ".len()..];
        for c in ['\u{1b}', '\r', '\u{7}', '\u{202e}', SGR_OPEN, SGR_CLOSE] {
            assert!(!rest.contains(c), "{c:?} in {rest:?}");
        }
        assert!(
            rest.contains("\\u{1b}[2J") && rest.contains("hidden"),
            "{rest:?}"
        );
        // A multi-byte character split across writes stays one character.
        let mut buf = Vec::new();
        {
            let mut t = Terminal::new(&mut buf);
            let bytes = "é".as_bytes();
            t.write_all(&bytes[..1]).unwrap();
            t.write_all(&bytes[1..]).unwrap();
        }
        assert_eq!(String::from_utf8(buf).unwrap(), "é");
        let m = Finding::error("x.yaml", "r", "\u{1b}[2Jgone");
        assert!(!render_text(&m, None, false).contains('\u{1b}'));
    }
}
