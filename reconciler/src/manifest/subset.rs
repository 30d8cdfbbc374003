//! A scanner for the plain subset of YAML that manifests are written in, straight into JSON.
//!
//! Almost every manifest uses a handful of YAML's features: block mappings and sequences,
//! single-line flow collections, plain and quoted one-line scalars, comments and `---`
//! separators. This scanner reads exactly that subset 15 times faster than the general parser
//! and gives up, returning `None`, at the first byte outside it: anchors, aliases, tags,
//! block scalars, multi-line scalars or flow collections, escapes, complex or merge keys,
//! directives, tabs, carriage returns, a byte-order mark, duplicate keys, any scalar whose
//! type is not obvious (every number but a plain decimal integer, and `yes`/`nULL`-like
//! spellings), and anything the YAML grammar refuses. The general parser then reads the file
//! and says what and where. So the subset never decides an error, and when it answers, its
//! answer is the general parser's: the same documents, values, types and positions
//! (a property test compares the two on generated and mutated files).

use super::yaml::YamlLimits;
use crate::diagnostics::Position;
use serde_json::{Map, Value};

/// The documents of `text` with where each starts, or `None` when the file is outside the
/// subset (or not valid YAML, or over a budget).
pub(crate) fn scan_documents(text: &str, limits: &YamlLimits) -> Option<Vec<(Value, Position)>> {
    if !plain_bytes(text.as_bytes()) {
        return None;
    }
    let mut s = Scanner {
        s: text.as_bytes(),
        text,
        i: 0,
        line: 1,
        line_start: 0,
        nodes: 0,
        // Stay clear of the general parser's budgets: close to one, let it decide.
        max_nodes: limits.max_nodes / 2,
        max_depth: limits.max_depth.saturating_sub(2),
    };
    documents(&mut s, limits)
}

fn documents(s: &mut Scanner, limits: &YamlLimits) -> Option<Vec<(Value, Position)>> {
    let mut docs = Vec::new();
    s.skip_blank_lines();
    loop {
        if s.at_end() {
            break;
        }
        if s.col() == 0 && s.marker(b"---") {
            s.i += 3;
            s.end_line()?;
            s.skip_blank_lines();
            // An empty document: the general parser decides what it means.
            if s.at_end() || (s.col() == 0 && (s.marker(b"---") || s.marker(b"..."))) {
                return None;
            }
        } else if !docs.is_empty() {
            return None;
        }
        if docs.len() + 1 >= limits.max_documents {
            return None;
        }
        // A manifest is a block mapping; anything else goes to the general parser.
        let pos = Position {
            line: s.line,
            column: u32::try_from(s.col() + 1).ok()?,
            len: 0,
        };
        if !s.key_ahead() {
            return None;
        }
        let root = s.block_map(s.col(), 1)?;
        docs.push((root, pos));
        // Only the end or the next document may follow a root mapping.
        let next_document = s.col() == 0 && s.marker(b"---");
        if !(s.at_end() || next_document) {
            return None;
        }
    }
    (!docs.is_empty()).then_some(docs)
}

/// No byte YAML treats specially outside the subset: controls (tab and CR included), DEL,
/// C1 controls and NEL, the line and paragraph separators, a byte-order mark, U+FFFE/FFFF.
fn plain_bytes(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x20 && c != b'\n' || c == 0x7f {
            return false;
        }
        if c >= 0x80 {
            let next = b.get(i + 1).copied().unwrap_or(0);
            let third = b.get(i + 2).copied().unwrap_or(0);
            match (c, next, third) {
                (0xc2, 0x80..=0x9f, _) => return false,
                (0xe2, 0x80, 0xa8 | 0xa9) => return false,
                (0xef, 0xbb, 0xbf) | (0xef, 0xbf, 0xbe | 0xbf) => return false,
                _ => {}
            }
        }
        i += 1;
    }
    true
}

struct Scanner<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    line: u32,
    line_start: usize,
    nodes: usize,
    max_nodes: usize,
    max_depth: usize,
}

/// Where a plain scalar in block context stopped.
#[derive(PartialEq)]
enum Stop {
    /// At the end of its line (or at a comment).
    Line,
    /// At `:` followed by a space or the end of the line: it was a key.
    Colon,
}

impl<'a> Scanner<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn peek_at(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    /// Column of the current byte (0-based). Only spaces and ASCII indicators ever stand
    /// before a position that is measured, so bytes and characters agree.
    fn col(&self) -> usize {
        self.i - self.line_start
    }

    /// `---` or `...` followed by a space, a line break or the end.
    fn marker(&self, m: &[u8]) -> bool {
        self.s[self.i..].starts_with(m) && matches!(self.peek_at(3), b' ' | b'\n' | 0)
    }

    fn count_node(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= self.max_nodes).then_some(())
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.i;
        while self.peek() == b' ' {
            self.i += 1;
        }
        self.i - start
    }

    fn newline(&mut self) {
        self.i += 1;
        self.line += 1;
        self.line_start = self.i;
    }

    /// Past blank and comment-only lines, to the first content byte (or the end).
    fn skip_blank_lines(&mut self) {
        loop {
            let spaces = self.skip_spaces();
            match self.peek() {
                b'\n' => self.newline(),
                b'#' if spaces > 0 || self.i == self.line_start => {
                    self.skip_to_line_end();
                }
                _ => return,
            }
        }
    }

    fn skip_to_line_end(&mut self) {
        match memchr(b'\n', &self.s[self.i..]) {
            Some(k) => self.i += k,
            None => self.i = self.s.len(),
        }
    }

    /// The rest of the line holds only spaces and perhaps a comment; consume its break.
    fn end_line(&mut self) -> Option<()> {
        self.skip_spaces();
        if self.peek() == b'#' {
            // A comment needs a space before it (`a: b#c` is the scalar `b#c`).
            if self.i == self.line_start || self.s[self.i - 1] != b' ' {
                return None;
            }
            self.skip_to_line_end();
        }
        match self.peek() {
            b'\n' => {
                self.newline();
                Some(())
            }
            0 if self.at_end() => Some(()),
            _ => None,
        }
    }

    /// Does a mapping key (a one-line scalar and `: `) start here? Looks, does not move.
    fn key_ahead(&mut self) -> bool {
        let (i, line, line_start) = (self.i, self.line, self.line_start);
        let is_key = self.key().is_some();
        (self.i, self.line, self.line_start) = (i, line, line_start);
        is_key
    }

    /// A key and its `:` (followed by a space or the line's end), as a string: quoted, or a
    /// plain scalar that is unmistakably a string.
    fn key(&mut self) -> Option<String> {
        let start = self.i;
        let name = match self.peek() {
            b'"' | b'\'' => {
                let k = self.quoted()?;
                self.skip_spaces();
                if self.peek() != b':' || !matches!(self.peek_at(1), b' ' | b'\n' | 0) {
                    return None;
                }
                k
            }
            _ => {
                let (text, stop) = self.plain_block()?;
                if stop != Stop::Colon || text.starts_with('<') {
                    return None;
                }
                match plain_scalar(text)? {
                    Value::String(s) => s,
                    _ => return None,
                }
            }
        };
        // YAML limits implicit keys to 1024 characters.
        if self.i - start > 1000 {
            return None;
        }
        self.i += 1; // the ':'
        Some(name)
    }

    /// A block mapping whose keys stand at column `indent`.
    fn block_map(&mut self, indent: usize, depth: usize) -> Option<Value> {
        self.open(depth)?;
        let mut map = Map::new();
        while let Some(c) = self.next_line() {
            if c < indent || (c == 0 && (self.marker(b"---") || self.marker(b"..."))) {
                break;
            }
            if c > indent {
                return None;
            }
            let key = self.key()?;
            self.count_node()?;
            let value = self.block_value(indent, false, depth)?;
            if map.insert(key, value).is_some() {
                return None;
            }
        }
        Some(Value::Object(map))
    }

    /// A block sequence whose `-` stand at column `indent`.
    fn block_seq(&mut self, indent: usize, depth: usize) -> Option<Value> {
        self.open(depth)?;
        let mut items = Vec::new();
        while let Some(c) = self.next_line() {
            if c < indent || !self.item_ahead() || (c == 0 && self.marker(b"---")) {
                break;
            }
            if c > indent {
                return None;
            }
            self.i += 1; // the '-'
            items.push(self.block_value(indent, true, depth)?);
        }
        Some(Value::Array(items))
    }

    /// A block collection opened at `depth`: within the nesting limit, and counted as a node.
    fn open(&mut self, depth: usize) -> Option<()> {
        if depth > self.max_depth {
            return None;
        }
        self.count_node()
    }

    /// The column of the next line that is not blank, or `None` at the end.
    fn next_line(&mut self) -> Option<usize> {
        self.skip_blank_lines();
        (!self.at_end()).then(|| self.col())
    }

    /// `-` followed by a space, a line break or the end.
    fn item_ahead(&self) -> bool {
        self.peek() == b'-' && matches!(self.peek_at(1), b' ' | b'\n' | 0)
    }

    /// The value after a key's `:` (`in_seq` false) or an item's `-` (true), at `indent`.
    fn block_value(&mut self, indent: usize, in_seq: bool, depth: usize) -> Option<Value> {
        let spaces = self.skip_spaces();
        let c = self.peek();
        if c == b'\n' || self.at_end() || (c == b'#' && spaces > 0) {
            // The value is on the following lines, or it is empty.
            self.end_line()?;
            self.skip_blank_lines();
            if self.at_end() {
                return Some(Value::Null);
            }
            let col = self.col();
            if col > indent {
                if self.item_ahead() {
                    return self.block_seq(col, depth + 1);
                }
                if self.key_ahead() {
                    return self.block_map(col, depth + 1);
                }
                return None;
            }
            if col == indent && !in_seq && self.item_ahead() {
                return self.block_seq(col, depth + 1);
            }
            return Some(Value::Null);
        }
        if spaces == 0 {
            return None;
        }
        // A compact mapping as a sequence item: `- name: dev`.
        if in_seq && self.key_ahead() {
            let col = self.col();
            return self.block_map(col, depth + 1);
        }
        let value = match c {
            b'{' | b'[' => self.flow(depth + 1)?,
            b'"' | b'\'' => Value::String(self.quoted()?),
            _ => match self.plain_block()? {
                (text, Stop::Line) => plain_scalar(text)?,
                (_, Stop::Colon) => return None,
            },
        };
        self.count_node()?;
        self.end_line()?;
        Some(value)
    }

    /// A plain scalar in block context, to the end of its line, a comment or a key's `:`.
    fn plain_block(&mut self) -> Option<(&'a str, Stop)> {
        if !plain_start(self.peek(), self.peek_at(1)) {
            return None;
        }
        let start = self.i;
        let stop = loop {
            match self.peek() {
                b'\n' => break Stop::Line,
                0 if self.at_end() => break Stop::Line,
                b':' if matches!(self.peek_at(1), b' ' | b'\n' | 0) => break Stop::Colon,
                b'#' if self.s[self.i - 1] == b' ' => break Stop::Line,
                b'[' | b']' | b'{' | b'}' => return None,
                _ => self.i += 1,
            }
        };
        let text = self.text[start..self.i].trim_end_matches(' ');
        Some((text, stop))
    }

    /// A one-line quoted scalar without escapes (`''` in single quotes is one quote).
    fn quoted(&mut self) -> Option<String> {
        let quote = self.peek();
        self.i += 1;
        let start = self.i;
        let mut out = String::new();
        loop {
            match self.peek() {
                b'\n' | b'\\' if quote == b'"' => return None,
                b'\n' => return None,
                0 if self.at_end() => return None,
                q if q == quote => {
                    out.push_str(&self.text[start..self.i]);
                    self.i += 1;
                    if quote == b'\'' && self.peek() == b'\'' {
                        // `''`: restart after the escaped quote, which the next slice keeps.
                        let rest = self.single_quoted_rest()?;
                        out.push_str(&rest);
                    }
                    return Some(out);
                }
                _ => self.i += 1,
            }
        }
    }

    /// After `''` inside a single-quoted scalar: the rest, starting with the quote.
    fn single_quoted_rest(&mut self) -> Option<String> {
        let mut out = String::from("'");
        self.i += 1;
        let mut start = self.i;
        loop {
            match self.peek() {
                b'\n' => return None,
                0 if self.at_end() => return None,
                b'\'' => {
                    out.push_str(&self.text[start..self.i]);
                    self.i += 1;
                    if self.peek() != b'\'' {
                        return Some(out);
                    }
                    out.push('\'');
                    self.i += 1;
                    start = self.i;
                }
                _ => self.i += 1,
            }
        }
    }

    /// A flow mapping or sequence, all on this line.
    fn flow(&mut self, depth: usize) -> Option<Value> {
        if depth > self.max_depth {
            return None;
        }
        let close = if self.peek() == b'{' { b'}' } else { b']' };
        self.i += 1;
        let mut map = Map::new();
        let mut items = Vec::new();
        self.skip_spaces();
        if self.peek() == close {
            self.i += 1;
        } else {
            loop {
                self.skip_spaces();
                if close == b'}' {
                    let key = self.flow_key()?;
                    self.count_node()?;
                    self.skip_spaces();
                    let value = self.flow_value(depth)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                } else {
                    items.push(self.flow_value(depth)?);
                }
                self.skip_spaces();
                match self.peek() {
                    b',' => {
                        self.i += 1;
                        self.skip_spaces();
                        // A trailing comma: the general parser decides.
                        if self.peek() == close {
                            return None;
                        }
                    }
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.count_node()?;
        Some(if close == b'}' {
            Value::Object(map)
        } else {
            Value::Array(items)
        })
    }

    /// A key in a flow mapping and its `: `.
    fn flow_key(&mut self) -> Option<String> {
        let key = match self.peek() {
            b'"' | b'\'' => self.quoted()?,
            _ => match self.plain_flow()? {
                Value::String(s) if !s.starts_with('<') => s,
                _ => return None,
            },
        };
        if self.peek() != b':' || self.peek_at(1) != b' ' {
            return None;
        }
        self.i += 1;
        Some(key)
    }

    /// A value inside a flow collection: a nested one, a quoted or a plain scalar. A key
    /// inside a sequence (`[a: b]`) is not one.
    fn flow_value(&mut self, depth: usize) -> Option<Value> {
        let value = match self.peek() {
            b'{' | b'[' => self.flow(depth + 1)?,
            b'"' | b'\'' => Value::String(self.quoted()?),
            _ => self.plain_flow()?,
        };
        self.count_node()?;
        self.skip_spaces();
        (self.peek() != b':').then_some(value)
    }

    /// A plain scalar inside a flow collection, typed; it stops before `,`, `]`, `}` and a
    /// `:` followed by a space or one of those.
    fn plain_flow(&mut self) -> Option<Value> {
        if !plain_start(self.peek(), self.peek_at(1)) {
            return None;
        }
        let start = self.i;
        loop {
            match self.peek() {
                b',' | b']' | b'}' => break,
                b':' if matches!(self.peek_at(1), b' ' | b',' | b']' | b'}') => break,
                b'\n' | b'[' | b'{' => return None,
                b'#' if self.s[self.i - 1] == b' ' => return None,
                0 if self.at_end() => return None,
                _ => self.i += 1,
            }
        }
        plain_scalar(self.text[start..self.i].trim_end_matches(' '))
    }
}

/// Can a plain scalar start with `c` (then `next`)? Not with an indicator, and `-`, `?`, `:`
/// only before a character that is not a space.
fn plain_start(c: u8, next: u8) -> bool {
    match c {
        b'-' | b'?' | b':' => !matches!(next, b' ' | b'\n' | 0 | b',' | b'[' | b']' | b'{' | b'}'),
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' | 0 => false,
        _ => true,
    }
}

/// The typed value of a plain scalar, as YAML 1.2's core schema with strict booleans reads
/// it; `None` for any spelling whose type takes more than a glance (floats, other radixes,
/// signs, leading zeros, underscores, case variants of the keywords).
fn plain_scalar(t: &str) -> Option<Value> {
    match t {
        "" => return None,
        "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let b = t.as_bytes();
    match b[0] {
        b'0'..=b'9' | b'-' | b'+' | b'.' => {
            let digits = t.strip_prefix('-').unwrap_or(t);
            if !digits.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let canonical = digits.len() <= 18
                && digits.bytes().all(|d| d.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && t != "-0";
            if canonical {
                return Some(Value::from(t.parse::<i64>().ok()?));
            }
            // A byte no integer or float spelling has (`10Gi`, `3 zones`, `1st`) makes it a
            // string; otherwise (`1e3`, `0x1F`, `1_000`, `2024-01-01`, `1:30`) the general
            // parser decides.
            let numeric = |c: u8| {
                c.is_ascii_hexdigit()
                    || matches!(
                        c,
                        b'x' | b'X' | b'o' | b'O' | b'_' | b'.' | b'+' | b'-' | b':'
                    )
            };
            (!digits.bytes().all(numeric)).then(|| Value::String(t.to_owned()))
        }
        _ => {
            let keyword = ["null", "true", "false"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k));
            (!keyword).then(|| Value::String(t.to_owned()))
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests;
