//! Editing a manifest in place. An API write changes only the lines of the fields it touches:
//! comments, key order, quoting and every other field stay as the author wrote them, so the
//! commit's diff shows exactly what the request changed. Positions come from the same parser
//! the validator uses; every edit is checked by parsing the result again and comparing it with
//! the intended document, so an edit that would change anything else is refused, not committed.

use crate::manifest::yaml::{Node, Value, YamlLimits, parse_documents};
use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError(pub String);

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A YAML flow rendering of `v` on one line: `{ storageGiB: 500, tier: "gold plus" }`.
pub fn flow(v: &Json) -> String {
    flow_like(v, None)
}

/// [`flow`], keeping the key order of `like` (the value being replaced); new keys follow.
fn flow_like(v: &Json, like: Option<&Node>) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => scalar(s),
        Json::Array(items) => {
            let old = match like.map(|n| &n.value) {
                Some(Value::Seq(old)) => old.as_slice(),
                _ => &[],
            };
            let inner: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, v)| flow_like(v, old.get(i)))
                .collect();
            format!("[{}]", inner.join(", "))
        }
        Json::Object(map) if map.is_empty() => "{}".into(),
        Json::Object(map) => {
            let old = match like.map(|n| &n.value) {
                Some(Value::Map(old)) => old.as_slice(),
                _ => &[],
            };
            let mut keys: Vec<&String> = old
                .iter()
                .map(|(k, _)| &k.name)
                .filter(|k| map.contains_key(*k))
                .collect();
            keys.extend(
                map.keys()
                    .filter(|k| !old.iter().any(|(o, _)| o.name == **k)),
            );
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    let like = old.iter().find(|(o, _)| o.name == *k).map(|(_, n)| n);
                    format!("{}: {}", scalar(k), flow_like(&map[k], like))
                })
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

/// A string as a plain scalar when that reads back as the same string, else double-quoted
/// (JSON string syntax is valid YAML).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'/'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// One manifest document being edited: the whole file's text, which document, and the
/// document as it is intended to read after the edits.
pub struct Editor {
    text: String,
    doc: usize,
    intended: Json,
}

/// Byte offset of 1-based (`line`, `column`) in `text` (columns count characters).
fn offset(text: &str, line: u32, column: u32) -> Option<usize> {
    let start = line_start(text, line)?;
    let rest = &text[start..];
    let col = column.saturating_sub(1) as usize;
    rest.char_indices()
        .nth(col)
        .map(|(i, _)| start + i)
        .or_else(|| (rest.chars().count() == col).then_some(text.len()))
}

/// The byte offset `chars` characters after the byte offset `start` (a character boundary).
fn advance(text: &str, start: usize, chars: usize) -> Option<usize> {
    let rest = text.get(start..)?;
    rest.char_indices()
        .nth(chars)
        .map(|(i, _)| start + i)
        .or_else(|| (rest.chars().count() == chars).then_some(text.len()))
}

/// Byte offset where 1-based `line` starts (`text.len()` for the line after the last).
fn line_start(text: &str, line: u32) -> Option<usize> {
    if line == 0 {
        return None;
    }
    if line == 1 {
        return Some(0);
    }
    let mut seen = 1;
    for (i, b) in text.bytes().enumerate() {
        if b == b'\n' {
            seen += 1;
            if seen == line {
                return Some(i + 1);
            }
        }
    }
    (seen + 1 == line && !text.ends_with('\n')).then_some(text.len())
}

impl Editor {
    pub fn new(text: &str, doc: usize) -> Result<Editor, EditError> {
        let intended = Self::parse(text, doc)?.to_json();
        Ok(Editor {
            text: text.to_owned(),
            doc,
            intended,
        })
    }

    fn parse(text: &str, doc: usize) -> Result<Node, EditError> {
        parse_documents(text, &YamlLimits::default())
            .map_err(|e| EditError(format!("the manifest does not parse: {}", e.message)))?
            .into_iter()
            .nth(doc)
            .ok_or_else(|| EditError(format!("the file has no document {}", doc + 1)))
    }

    /// The document as it now reads.
    pub fn document(&self) -> &Json {
        &self.intended
    }

    /// Set `section.key` (`spec.quotas`, `metadata.labels`) to `value`; `None` removes it.
    pub fn set(&mut self, section: &str, key: &str, value: Option<&Json>) -> Result<(), EditError> {
        let node = Self::parse(&self.text, self.doc)?;
        let parent = node
            .get(section)
            .ok_or_else(|| EditError(format!("the manifest has no `{section}`")))?;
        let Value::Map(entries) = &parent.value else {
            return Err(EditError(format!("`{section}` is not a mapping")));
        };
        let section_key = node.get_key(section).expect("section exists").pos;
        let block = entries
            .first()
            .is_none_or(|(k, _)| k.pos.line > section_key.line);
        let current = entries.iter().find(|(k, _)| k.name == key);
        let mut intended = self.intended.clone();
        {
            let obj = intended[section]
                .as_object_mut()
                .ok_or_else(|| EditError(format!("`{section}` is not a mapping")))?;
            match value {
                Some(v) => {
                    obj.insert(key.to_owned(), v.clone());
                }
                None => {
                    obj.remove(key);
                }
            }
        }
        if intended == self.intended {
            return Ok(());
        }
        let new_text = match (current, value) {
            // A scalar replaced by a scalar: only its own characters change, in any style.
            (Some((_, old)), Some(v))
                if !matches!(old.value, Value::Map(_) | Value::Seq(_))
                    && !v.is_object()
                    && !v.is_array()
                    && old.pos.len > 0 =>
            {
                let outside = || EditError("a position is outside the file".into());
                let start = offset(&self.text, old.pos.line, old.pos.column).ok_or_else(outside)?;
                // The parser measures a scalar in characters, not bytes.
                let end = advance(&self.text, start, old.pos.len as usize).ok_or_else(outside)?;
                format!("{}{}{}", &self.text[..start], flow(v), &self.text[end..])
            }
            _ if !block => {
                return Err(EditError(format!(
                    "`{section}` is written in flow style ({section}: {{ … }}); the API edits block-style manifests only — change it by hand"
                )));
            }
            (Some((k, old)), v) => {
                let (start, end) = self.entry_lines(&node, k.pos.line, k.pos.column)?;
                let line = v.map(|v| {
                    let indent = " ".repeat(k.pos.column.saturating_sub(1) as usize);
                    format!("{indent}{}: {}\n", scalar(key), flow_like(v, Some(old)))
                });
                format!(
                    "{}{}{}",
                    &self.text[..start],
                    line.unwrap_or_default(),
                    &self.text[end..]
                )
            }
            (None, None) => return Ok(()),
            (None, Some(v)) => {
                // After the section's last entry, at its indentation.
                let (last, _) = entries.last().ok_or_else(|| {
                    EditError(format!("`{section}` is empty; add `{key}` by hand"))
                })?;
                let (_, end) = self.entry_lines(&node, last.pos.line, last.pos.column)?;
                let indent = " ".repeat(last.pos.column.saturating_sub(1) as usize);
                let mut out = self.text[..end].to_owned();
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("{indent}{}: {}\n", scalar(key), flow(v)));
                out.push_str(&self.text[end..]);
                out
            }
        };
        // The edit must read back as exactly the intended document, nothing else changed.
        let reread = Self::parse(&new_text, self.doc)?.to_json();
        if reread != intended {
            return Err(EditError(format!(
                "could not change `{section}.{key}` in place without touching other fields; change it by hand"
            )));
        }
        self.text = new_text;
        self.intended = intended;
        Ok(())
    }

    /// Byte range of the lines of the entry whose key stands at (`line`, `column`): from its
    /// line to the next key at its column or left of it, the document's end or the file's end,
    /// less trailing blank and comment lines (they belong to what follows).
    fn entry_lines(&self, doc: &Node, line: u32, column: u32) -> Result<(usize, usize), EditError> {
        let mut end_line = u32::MAX;
        let mut stack = vec![doc];
        while let Some(n) = stack.pop() {
            match &n.value {
                Value::Map(entries) => {
                    for (k, v) in entries {
                        if k.pos.line > line && k.pos.column <= column {
                            end_line = end_line.min(k.pos.line);
                        }
                        stack.push(v);
                    }
                }
                Value::Seq(items) => stack.extend(items.iter()),
                _ => {}
            }
        }
        let start = line_start(&self.text, line)
            .ok_or_else(|| EditError("a position is outside the file".into()))?;
        let lines: Vec<(usize, &str)> = self.text[start..]
            .split_inclusive('\n')
            .scan(start, |at, l| {
                let here = *at;
                *at += l.len();
                Some((here, l))
            })
            .collect();
        let mut end = self.text.len();
        for (i, (at, l)) in lines.iter().enumerate().skip(1) {
            let n = line + i as u32;
            if n >= end_line || l.starts_with("---") || l.starts_with("...") {
                end = *at;
                break;
            }
        }
        // Give trailing blank and comment lines back to what follows.
        let mut trimmed = end;
        for (at, l) in lines.iter().skip(1).rev() {
            if *at >= end {
                continue;
            }
            let t = l.trim();
            if t.is_empty() || t.starts_with('#') {
                trimmed = *at;
            } else {
                break;
            }
        }
        Ok((start, trimmed))
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: &str = "apiVersion: tenancy.dev/v1\nkind: Tenant\nmetadata:\n  id: t_1\nspec:\n  # how it runs\n  profile: mt-standard   # shared\n  quotas: { storageGiB: 200, concurrentJobs: 10 }\n  environments:\n    - { name: dev }\n    - name: prod\n      isolation: strict\n\n  # billing below\n  billing: { plan: starter }\n";

    #[test]
    fn scalars_change_in_place_keeping_comments() {
        let mut e = Editor::new(T, 0).unwrap();
        e.set("spec", "profile", Some(&json!("st-dedicated")))
            .unwrap();
        let out = e.into_text();
        assert!(
            out.contains("  profile: st-dedicated   # shared\n"),
            "{out}"
        );
        assert_eq!(out.replace("st-dedicated", "mt-standard"), T);
    }

    #[test]
    fn maps_and_lists_are_rewritten_as_one_flow_line() {
        let mut e = Editor::new(T, 0).unwrap();
        e.set(
            "spec",
            "quotas",
            Some(&json!({"storageGiB": 500, "concurrentJobs": 10})),
        )
        .unwrap();
        e.set(
            "spec",
            "environments",
            Some(&json!([{"name": "dev"}, {"name": "prod"}])),
        )
        .unwrap();
        let out = e.into_text();
        assert!(out.contains("  quotas: { storageGiB: 500, concurrentJobs: 10 }\n"));
        assert!(
            out.contains("  environments: [{ name: dev }, { name: prod }]\n\n  # billing below\n"),
            "{out}"
        );
        assert!(!out.contains("isolation"));
    }

    #[test]
    fn keys_are_added_and_removed() {
        let mut e = Editor::new(T, 0).unwrap();
        e.set("spec", "plan", Some(&json!("gold plus"))).unwrap();
        e.set("spec", "quotas", None).unwrap();
        let out = e.into_text();
        assert!(
            out.ends_with("  billing: { plan: starter }\n  plan: \"gold plus\"\n"),
            "{out}"
        );
        assert!(!out.contains("quotas"));
        assert_eq!(
            Editor::new(&out, 0).unwrap().document()["spec"]["plan"],
            json!("gold plus")
        );
    }

    #[test]
    fn the_right_document_of_a_stream_is_edited_and_flow_style_is_refused() {
        let two = format!("{T}---\n{}", T.replace("t_1", "t_2"));
        let mut e = Editor::new(&two, 1).unwrap();
        e.set("spec", "billing", Some(&json!({"plan": "pro"})))
            .unwrap();
        let out = e.into_text();
        let (first, second) = out.split_once("---\n").unwrap();
        assert_eq!(first, T);
        assert!(second.ends_with("  billing: { plan: pro }\n"));
        let mut flowed =
            Editor::new("kind: Tenant\nspec: { profile: hybrid, plan: x }\n", 0).unwrap();
        flowed
            .set("spec", "profile", Some(&json!("st-dedicated")))
            .unwrap();
        let err = flowed
            .set("spec", "quotas", Some(&json!({"storageGiB": 1})))
            .unwrap_err();
        assert!(err.0.contains("flow style"), "{err}");
    }

    #[test]
    fn strings_that_would_read_back_as_something_else_are_quoted() {
        assert_eq!(flow(&json!("no")), "\"no\"");
        assert_eq!(flow(&json!("12")), "\"12\"");
        assert_eq!(flow(&json!("a: b")), "\"a: b\"");
        assert_eq!(flow(&json!({"crm": "0015g"})), "{ crm: \"0015g\" }");
    }

    /// Multi-byte text before, in and after every editable field: positions are characters,
    /// slices are bytes, and nothing panics or lands elsewhere.
    #[test]
    fn multi_byte_text_in_every_editable_field() {
        let text = "apiVersion: tenancy.dev/v1\nkind: Tenant\nmetadata:\n  id: t_1\n  displayName: Café Ünïon — 株式会社\n  labels: { équipe: données, team: 🚀 }\nspec:\n  profile: mt-standard # ☂ shared\n  plan: \"stärter\"\n  regions: { allowed: [ap-south-1], preferred: ap-south-1 }\n  environments:\n    - { name: dev }\n  quotas: { storageGiB: 200 }\n  policies: { encryption: kms-per-tenant }\n  billing: { plan: stärter, costCenter: Ünit-7 }\n  contacts: { technical: ops@exämple.com }\n  externalIds: { crm: \"Ω-1\" }\n";
        let values: &[(&str, &str, Json)] = &[
            ("metadata", "displayName", json!("Straße Ωmega 🚀")),
            ("metadata", "displayName", json!("plain")),
            ("metadata", "labels", json!({"équipe": "ñ", "team": "東京"})),
            ("spec", "profile", json!("st-dedicated")),
            ("spec", "plan", json!("größer")),
            (
                "spec",
                "regions",
                json!({"allowed": ["eu-west-1"], "preferred": "eu-west-1"}),
            ),
            (
                "spec",
                "environments",
                json!([{"name": "dev"}, {"name": "prod"}]),
            ),
            ("spec", "quotas", json!({"storageGiB": 500})),
            (
                "spec",
                "policies",
                json!({"encryption": "platform-managed"}),
            ),
            (
                "spec",
                "billing",
                json!({"plan": "pro", "costCenter": "Ärger"}),
            ),
            ("spec", "contacts", json!({"technical": "ünï@example.com"})),
            ("spec", "externalIds", json!({"crm": "ß-2", "billing": "€"})),
        ];
        for (section, key, value) in values {
            let mut e = Editor::new(text, 0).unwrap();
            e.set(section, key, Some(value))
                .unwrap_or_else(|err| panic!("{section}.{key}: {err}"));
            let out = e.into_text();
            let reread = Editor::new(&out, 0).unwrap();
            assert_eq!(&reread.document()[*section][*key], value, "{out}");
            // Everything else reads as before.
            let mut before = Editor::new(text, 0).unwrap().document().clone();
            before[*section][*key] = value.clone();
            assert_eq!(reread.document(), &before, "{out}");
        }
        // A scalar after multi-byte text on the same line keeps its comment.
        let mut e = Editor::new(text, 0).unwrap();
        e.set("spec", "profile", Some(&json!("hybrid"))).unwrap();
        assert!(e.into_text().contains("  profile: hybrid # ☂ shared\n"));
    }

    #[test]
    fn quoted_and_block_scalars_are_replaced_whole() {
        for (text, want) in [
            (
                "spec:\n  plan: \"starter\"\n  x: 1\n",
                "spec:\n  plan: gold\n  x: 1\n",
            ),
            (
                "spec:\n  plan: 'starter'  # c\n  x: 1\n",
                "spec:\n  plan: gold  # c\n  x: 1\n",
            ),
            (
                "spec:\n  plan: starter\n  x: 1\n",
                "spec:\n  plan: gold\n  x: 1\n",
            ),
        ] {
            let mut e = Editor::new(text, 0).unwrap();
            e.set("spec", "plan", Some(&json!("gold"))).unwrap();
            assert_eq!(e.into_text(), want);
        }
    }
}
