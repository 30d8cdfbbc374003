//! YAML documents as positioned trees.
//!
//! Manifests are parsed with `serde-saphyr` into [`Node`]s that remember where every value and
//! key stands in the file, so a JSON-Schema error at `/spec/quotas/storageGiB` can be reported at
//! `file:line:col`. Parsing is bounded: duplicate keys are errors and alias expansion, nesting
//! depth, node count and document count have hard budgets, so a "billion laughs" file is a
//! finding rather than an out-of-memory kill.

use crate::diagnostics::Position;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};
use std::fmt;

/// A YAML value and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub(crate) pos: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub(crate) pos: Position,
}

/// A YAML syntax or budget error, positioned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParseError {
    pub message: String,
    pub(crate) pos: Position,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseErrorKind {
    Syntax,
    DuplicateKey,
    Budget,
}

fn position(loc: &Location) -> Position {
    let span_len = loc.span().len();
    Position {
        line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
        column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        len: u32::try_from(span_len).unwrap_or(0),
    }
}

impl Node {
    /// Convert to JSON for schema validation. YAML values that JSON cannot hold were already
    /// refused while parsing (non-finite floats, complex keys).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => J::Number(n.clone()),
            Value::String(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn get_key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Follow a JSON pointer (RFC 6901) and return the node it names, or the deepest node on
    /// the way there (so an error about a missing field points at the object that lacks it).
    pub fn locate(&self, pointer: &str) -> &Node {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.value {
                Value::Map(entries) => entries.iter().find(|(k, _)| k.name == seg).map(|(_, v)| v),
                Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// Position of the key under which the value at `pointer` stands (`spec:` for `/spec`).
    pub(crate) fn key_of(&self, pointer: &str) -> Option<Position> {
        let (parent, last) = pointer.rsplit_once('/')?;
        let last = last.replace("~1", "/").replace("~0", "~");
        self.locate_key(parent, &last)
    }

    /// Position of the key `name` inside the object at `pointer`, for unknown-field errors.
    pub(crate) fn locate_key(&self, pointer: &str, name: &str) -> Option<Position> {
        self.locate(pointer).get_key(name).map(|k| k.pos)
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Seq(_) => "sequence",
            Value::Map(_) => "mapping",
        }
    }
}

/// Limits applied to every file; the defaults suit manifests (a few hundred nodes each).
#[derive(Debug, Clone, Copy)]
pub struct YamlLimits {
    pub(crate) max_nodes: usize,
    pub(crate) max_aliases: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_documents: usize,
}

impl Default for YamlLimits {
    fn default() -> Self {
        YamlLimits {
            max_nodes: 100_000,
            max_aliases: 1_000,
            max_depth: 64,
            max_documents: 1_000,
        }
    }
}

/// Parse every document of a YAML stream. Empty documents (only comments) are returned as
/// `Null` nodes so the caller can report them.
pub(crate) fn parse_documents(text: &str, limits: &YamlLimits) -> Result<Vec<Node>, ParseError> {
    let docs: Vec<Spanned<RawValue>> =
        serde_saphyr::from_multiple_with_options(text, options(limits))
            .map_err(|e| convert_error(&e, limits))?;
    Ok(docs.into_iter().map(into_node).collect())
}

/// The documents of a stream as JSON, each with where it starts, under the same rules and
/// budgets as [`parse_documents`] but without a positioned tree: the fast path for the files
/// that turn out clean, which most are. `None` on any error; parsing with positions then says
/// what and where.
pub(crate) fn parse_json_documents(
    text: &str,
    limits: &YamlLimits,
) -> Option<Vec<(serde_json::Value, Position)>> {
    super::subset::scan_documents(text, limits).or_else(|| general_json_documents(text, limits))
}

/// [`parse_json_documents`] by the general parser alone, for files outside the subset.
pub(super) fn general_json_documents(
    text: &str,
    limits: &YamlLimits,
) -> Option<Vec<(serde_json::Value, Position)>> {
    let docs: Vec<Spanned<JsonValue>> =
        serde_saphyr::from_multiple_with_options(text, options(limits)).ok()?;
    Some(
        docs.into_iter()
            .map(|d| (d.value.0, position(&d.referenced)))
            .collect(),
    )
}

/// How every manifest is parsed.
fn options(limits: &YamlLimits) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2 core schema: `no`/`on` are strings, not booleans (the "Norway problem").
    options.strict_booleans = true;
    // Language-specific tags (`!!python/object`, custom `!Tags`) have no meaning in a manifest.
    options.reject_unsupported_tags = true;
    if let Some(budget) = options.budget.as_mut() {
        budget.max_nodes = limits.max_nodes;
        budget.max_aliases = limits.max_aliases;
        budget.max_depth = limits.max_depth;
        budget.max_documents = limits.max_documents;
    }
    options.alias_limits.max_total_replayed_events = limits.max_nodes;
    options
}

fn convert_error(e: &serde_saphyr::Error, limits: &YamlLimits) -> ParseError {
    let pos = e.location().map(|l| position(&l)).unwrap_or_default();
    let full = e.to_string();
    // serde-saphyr appends " at line L, column C …"; we print the position ourselves.
    let mut message = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    let kind = if message.starts_with("duplicate mapping key") {
        let key = message.trim_start_matches("duplicate mapping key: ");
        let key = key
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(key)
            .to_string();
        message = format!("duplicate key `{key}`: a key may appear only once in a mapping");
        ParseErrorKind::DuplicateKey
    } else if message.starts_with("budget breached") || message.contains("limit exceeded") {
        let detail = if message.contains("Depth") || message.contains("recursion") {
            format!("nesting is deeper than {} levels", limits.max_depth)
        } else if message.contains("Documents") {
            format!(
                "the file holds more than {} documents",
                limits.max_documents
            )
        } else if message.contains("Aliases") {
            format!("more than {} aliases are used", limits.max_aliases)
        } else if message.contains("Nodes") || message.contains("replay") {
            format!(
                "alias expansion produces more than {} values",
                limits.max_nodes
            )
        } else {
            message.trim_start_matches("budget breached: ").to_owned()
        };
        message = format!("document exceeds the parsing budget: {detail}");
        ParseErrorKind::Budget
    } else {
        if message.starts_with("cannot deserialize null into string") {
            message = "mapping keys must be non-empty strings (found a null key)".to_owned();
        } else if message == "expected string scalar" {
            message = "mapping keys must be plain strings (found a sequence or mapping as a key)"
                .to_owned();
        }
        ParseErrorKind::Syntax
    };
    ParseError { message, pos, kind }
}

fn into_node(s: Spanned<RawValue>) -> Node {
    let pos = position(&s.referenced);
    let value = match s.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Number(n) => Value::Number(n),
        RawValue::String(s) => Value::String(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(into_node).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.value,
                            pos: position(&k.referenced),
                        },
                        into_node(v),
                    )
                })
                .collect(),
        ),
    };
    Node { value, pos }
}

/// What serde-saphyr hands us: every child wrapped in `Spanned` so it carries its location.
enum RawValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<String>, Spanned<RawValue>)>),
}

/// What a YAML value may be in a manifest, whichever tree it is built into: the refusals
/// (numbers JSON cannot hold, binary) are the same for both.
trait Tree: Sized {
    fn null() -> Self;
    fn bool(v: bool) -> Self;
    fn number(n: serde_json::Number) -> Self;
    fn string(s: String) -> Self;
    fn seq<'de, A: SeqAccess<'de>>(a: A) -> Result<Self, A::Error>;
    fn map<'de, A: MapAccess<'de>>(a: A) -> Result<Self, A::Error>;
}

impl Tree for RawValue {
    fn null() -> Self {
        RawValue::Null
    }
    fn bool(v: bool) -> Self {
        RawValue::Bool(v)
    }
    fn number(n: serde_json::Number) -> Self {
        RawValue::Number(n)
    }
    fn string(s: String) -> Self {
        RawValue::String(s)
    }
    fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
        while let Some(x) = a.next_element()? {
            items.push(x);
        }
        Ok(RawValue::Seq(items))
    }
    fn map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut entries = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
        while let Some(k) = a.next_key()? {
            let v = a.next_value()?;
            entries.push((k, v));
        }
        Ok(RawValue::Map(entries))
    }
}

/// A YAML value as JSON, without positions.
struct JsonValue(serde_json::Value);

impl Tree for JsonValue {
    fn null() -> Self {
        JsonValue(serde_json::Value::Null)
    }
    fn bool(v: bool) -> Self {
        JsonValue(serde_json::Value::Bool(v))
    }
    fn number(n: serde_json::Number) -> Self {
        JsonValue(serde_json::Value::Number(n))
    }
    fn string(s: String) -> Self {
        JsonValue(serde_json::Value::String(s))
    }
    fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0).min(64));
        while let Some(JsonValue(x)) = a.next_element()? {
            items.push(x);
        }
        Ok(JsonValue(serde_json::Value::Array(items)))
    }
    fn map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut entries = serde_json::Map::new();
        while let Some(k) = a.next_key::<String>()? {
            let JsonValue(v) = a.next_value()?;
            // The parser refuses duplicate keys before this could overwrite one.
            entries.insert(k, v);
        }
        Ok(JsonValue(serde_json::Value::Object(entries)))
    }
}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor(std::marker::PhantomData))
    }
}

struct TreeVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Tree + Deserialize<'de>> Visitor<'de> for TreeVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::null())
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::null())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<T, E> {
        Ok(T::bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<T, E> {
        Ok(T::number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<T, E> {
        Ok(T::number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<T, E> {
        Err(E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<T, E> {
        Err(E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        serde_json::Number::from_f64(v)
            .map(T::number)
            .ok_or_else(|| E::custom("non-finite numbers are not allowed"))
    }
    fn visit_str<E>(self, v: &str) -> Result<T, E> {
        Ok(T::string(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<T, E> {
        Ok(T::string(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<T, E> {
        Err(E::custom("binary values are not allowed in manifests"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<T, A::Error> {
        T::seq(a)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<T, A::Error> {
        T::map(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Node>, ParseError> {
        parse_documents(s, &YamlLimits::default())
    }

    #[test]
    fn positions_and_types() {
        let docs = parse("a: 1\nb: \"2\"\nc: no\nspec:\n  plan: starter\n").unwrap();
        let d = &docs[0];
        assert_eq!(
            d.to_json(),
            serde_json::json!({"a": 1, "b": "2", "c": "no", "spec": {"plan": "starter"}})
        );
        let plan = d.locate("/spec/plan");
        assert_eq!((plan.pos.line, plan.pos.column), (5, 9));
        assert_eq!(
            d.locate_key("/spec", "plan").map(|p| (p.line, p.column)),
            Some((5, 3))
        );
        // A pointer that runs past the tree stops at the deepest existing node.
        assert_eq!(
            d.locate("/spec/quotas/x").pos.line,
            d.locate("/spec").pos.line
        );
    }

    #[test]
    fn multiple_documents() {
        let docs = parse("---\nx: 1\n---\ny: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].locate("/y").pos.line, 4);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::DuplicateKey);
        assert_eq!(e.pos.line, 3);
        assert!(e.message.contains("`a`"), "{}", e.message);
    }

    #[test]
    fn alias_bomb_hits_the_budget() {
        let mut s = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 10].join(",");
            s.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], refs));
        }
        let e = parse(&s).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Budget, "{}", e.message);
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let e = parse("a:\n  b: 1\n   c: 2\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Syntax);
        assert_eq!(e.pos.line, 3);
        assert!(parse("x: .inf\n").is_err());
        assert!(parse("x: [1, 2\n").is_err());
    }
}
