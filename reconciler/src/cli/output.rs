//! What every command's output shares: JSON documents, short commits, colours.

use serde::Serialize;
use std::io::Write;

/// One pretty-printed JSON document and a newline: every `--output json`.
pub(crate) fn write_json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)
}

/// A sequence written one element at a time, each as a JSON value (so its objects' keys are in
/// name order), shaped by `shape`.
pub(crate) struct ByName<'a, T> {
    pub(crate) items: &'a [T],
    pub(crate) shape: fn(&'a T) -> serde_json::Result<serde_json::Value>,
}

impl<T> serde::Serialize for ByName<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for item in self.items {
            seq.serialize_element(&(self.shape)(item).map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `s` in colour `code` for a [`crate::diagnostics::Terminal`] (plain when `color` is off).
pub(crate) fn paint(color: bool, code: &str, s: &str) -> String {
    use crate::diagnostics::sgr;
    if color {
        format!("{}{s}{}", sgr(code), sgr("0"))
    } else {
        s.to_owned()
    }
}

/// Standard output for a command's report: JSON as is (serde escapes what must be escaped in
/// a string), text through a [`crate::diagnostics::Terminal`], so that nothing a manifest, a
/// plane or a policy module said can drive the reader's terminal.
pub(crate) fn report_out(json: bool) -> Box<dyn std::io::Write> {
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        Box::new(out)
    } else {
        Box::new(crate::diagnostics::Terminal::new(out))
    }
}
