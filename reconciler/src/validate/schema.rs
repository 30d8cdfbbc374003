//! JSON Schema validation of manifest documents, with errors mapped back to YAML positions.
//!
//! The schemas are the files in the repository's top-level `schemas/` directory, embedded at
//! build time and compiled once per process; they reference each other by `$id`.

use crate::diagnostics::{Finding, quote};
use crate::manifest::yaml::Node;
use crate::manifest::{Document, EnvName, Kind, TenantId};
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Registry, Resource, Validator};
use serde_json::Value;
use std::sync::OnceLock;

pub(crate) const COMMON: &str = include_str!("../../../schemas/common.schema.json");
pub const TENANT: &str = include_str!("../../../schemas/tenant.schema.json");
pub(crate) const ORGANIZATION: &str = include_str!("../../../schemas/organization.schema.json");
pub(crate) const REGION: &str = include_str!("../../../schemas/region.schema.json");
pub(crate) const PLAN: &str = include_str!("../../../schemas/plan.schema.json");

pub(crate) struct KindSchema {
    validator: Validator,
    /// The schema document, for listing allowed fields in hints.
    raw: Value,
}

pub(crate) struct Schemas {
    tenant: KindSchema,
    organization: KindSchema,
    region: KindSchema,
    plan: KindSchema,
}

fn parse(text: &str) -> Value {
    // The schemas are part of the binary and covered by tests; failing to parse them is a build
    // defect, not an input error.
    serde_json::from_str(text).expect("embedded schema is valid JSON")
}

impl Schemas {
    /// The compiled schemas, built on first use.
    pub fn get() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(Schemas::compile)
    }

    fn compile() -> Schemas {
        let common = parse(COMMON);
        let id = |v: &Value| v["$id"].as_str().expect("schema has $id").to_owned();
        let registry = Registry::new()
            .add(id(&common), Resource::from_contents(common.clone()))
            .and_then(|r| r.prepare())
            .expect("embedded schemas form a valid registry");
        let build = |text: &str| {
            let raw = parse(text);
            let validator = jsonschema::draft202012::options()
                .with_registry(&registry)
                .build(&raw)
                .expect("embedded schema compiles");
            KindSchema { validator, raw }
        };
        Schemas {
            tenant: build(TENANT),
            organization: build(ORGANIZATION),
            region: build(REGION),
            plan: build(PLAN),
        }
    }

    fn for_kind(&self, kind: Kind) -> &KindSchema {
        match kind {
            Kind::Tenant => &self.tenant,
            Kind::Organization => &self.organization,
            Kind::Region => &self.region,
            Kind::Plan => &self.plan,
        }
    }

    /// Is `json` a valid manifest of `kind`? (No findings: [`Schemas::check`] says why not.)
    pub(crate) fn is_valid(&self, kind: Kind, json: &Value) -> bool {
        self.for_kind(kind).validator.is_valid(json)
    }

    /// Validate one document. Returns the JSON form when it is valid, findings otherwise.
    pub fn check(&self, doc: &Document) -> Result<Value, Vec<Finding>> {
        let schema = self.for_kind(doc.kind);
        let json = doc.node.to_json();
        if schema.validator.is_valid(&json) {
            return Ok(json);
        }
        let tenant = doc.tenant_id();
        let mut findings: Vec<Finding> = Vec::new();
        for err in schema.validator.iter_errors(&json) {
            let pointer = err.instance_path().as_str().to_owned();
            let schema_path = err.schema_path().as_str().to_owned();
            let mut f = describe(
                &doc.node,
                &schema.raw,
                &pointer,
                &schema_path,
                err.kind(),
                err.instance(),
            );
            f.file = doc.file.clone();
            f.tenant = tenant.map(str::to_owned);
            // `not`/`anyOf` wrappers can report the same value twice; keep the first.
            if !findings
                .iter()
                .any(|g| g.pointer == f.pointer && g.rule == f.rule && g.line == f.line)
            {
                findings.push(f);
            }
        }
        Err(findings)
    }
}

/// `/spec/quotas/storageGiB` → `spec.quotas.storageGiB`, `/spec/environments/0` → `spec.environments[0]`.
pub(crate) fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    if out.is_empty() {
        "document".to_owned()
    } else {
        out
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "mapping",
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Array(_) => "a sequence".into(),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

/// Allowed property names of the object whose `additionalProperties` failed.
fn allowed_fields(raw_schema: &Value, schema_path: &str) -> Vec<String> {
    let Some(parent) = schema_path.strip_suffix("/additionalProperties") else {
        return Vec::new();
    };
    let props = raw_schema.pointer(&format!("{parent}/properties"));
    props
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn id_explanation(pointer: &str, value: &Value) -> Option<(String, &'static str)> {
    let s = value.as_str()?;
    let last = pointer.rsplit('/').next()?;
    let err = if pointer == "/metadata/id" || pointer == "/metadata/organization" {
        TenantId::parse(s).err()
    } else if last == "name" && pointer.starts_with("/spec/environments/") {
        EnvName::parse(s).err()
    } else {
        None
    }?;
    Some((err.message, err.hint))
}

fn describe(
    node: &Node,
    raw_schema: &Value,
    pointer: &str,
    schema_path: &str,
    kind: &ValidationErrorKind,
    instance: &Value,
) -> Finding {
    let target = node.locate(pointer);
    let field = field_path(pointer);
    let base = |rule: &'static str, message: String| {
        Finding::error(String::new(), rule, message)
            .at(target.pos)
            .pointer(pointer)
    };
    match kind {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let child = if pointer.is_empty() {
                format!("/{name}")
            } else {
                format!("{pointer}/{name}")
            };
            let where_ = if pointer.is_empty() {
                "the document".to_owned()
            } else {
                format!("`{field}`")
            };
            base(
                "schema.missing-field",
                format!("missing required field `{name}` in {where_}"),
            )
            .pointer(child)
            // Point at the key that opens the incomplete mapping (`spec:`), not its first child.
            .at(node.key_of(pointer).unwrap_or(target.pos))
            .hint(format!("add `{name}:` under {where_}"))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = unexpected.first().cloned().unwrap_or_default();
            let allowed = allowed_fields(raw_schema, schema_path);
            let suggestion = allowed
                .iter()
                .map(|a| (strsim::jaro_winkler(a, &name), a))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, a)| a.clone());
            let pos = node.locate_key(pointer, &name).unwrap_or(target.pos);
            let child = if pointer.is_empty() {
                format!("/{name}")
            } else {
                format!("{pointer}/{name}")
            };
            let mut f = Finding::error(
                String::new(),
                "schema.unknown-field",
                format!(
                    "unknown field {} in {}",
                    quote(&name),
                    if pointer.is_empty() {
                        "the document".to_owned()
                    } else {
                        format!("`{field}`")
                    }
                ),
            )
            .at(pos)
            .pointer(child);
            f.hint = Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None if !allowed.is_empty() => {
                    format!("allowed fields here: {}", allowed.join(", "))
                }
                None => "remove the field".to_owned(),
            });
            f
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let expected = expected
                .replace("object", "mapping")
                .replace("array", "sequence");
            base(
                "schema.type",
                format!(
                    "`{field}` must be {} {expected}, found {} {}",
                    article(&expected),
                    json_type(instance),
                    show(instance)
                ),
            )
        }
        ValidationErrorKind::Enum { options } => {
            let allowed = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            base(
                "schema.enum",
                format!(
                    "`{field}` has value {}, which is not allowed",
                    show(instance)
                ),
            )
            .hint(format!("allowed values: {allowed}"))
        }
        ValidationErrorKind::Constant { expected_value } => base(
            "schema.const",
            format!(
                "`{field}` must be {}, found {}",
                show(expected_value),
                show(instance)
            ),
        ),
        ValidationErrorKind::Pattern { pattern } => {
            if let Some((message, hint)) = id_explanation(pointer, instance) {
                return base("id.invalid", message).hint(hint);
            }
            base(
                "schema.pattern",
                format!(
                    "`{field}` has value {}, which does not match the required format",
                    show(instance)
                ),
            )
            .hint(format!("expected a value matching {pattern}"))
        }
        ValidationErrorKind::Not { .. } => {
            if let Some((message, hint)) = id_explanation(pointer, instance) {
                return base("id.invalid", message).hint(hint);
            }
            base(
                "schema.not",
                format!("`{field}` has value {}, which is reserved", show(instance)),
            )
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => base(
            "schema.range",
            format!("`{field}` is {}, below the minimum {limit}", show(instance)),
        ),
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => base(
            "schema.range",
            format!("`{field}` is {}, above the maximum {limit}", show(instance)),
        ),
        ValidationErrorKind::MinLength { limit } => base(
            "schema.length",
            format!("`{field}` is shorter than {limit} characters"),
        ),
        ValidationErrorKind::MaxLength { limit } => base(
            "schema.length",
            format!("`{field}` is longer than {limit} characters"),
        ),
        ValidationErrorKind::MinItems { limit } => base(
            "schema.items",
            format!("`{field}` needs at least {limit} item(s)"),
        ),
        ValidationErrorKind::MaxItems { limit } => base(
            "schema.items",
            format!("`{field}` allows at most {limit} item(s)"),
        ),
        ValidationErrorKind::UniqueItems => base(
            "schema.unique-items",
            format!("`{field}` lists the same value twice"),
        ),
        ValidationErrorKind::MaxProperties { limit } => base(
            "schema.properties",
            format!("`{field}` allows at most {limit} entries"),
        ),
        _ => {
            let keyword = schema_path.rsplit('/').next().unwrap_or("schema");
            base(
                "schema.invalid",
                format!("`{field}` is invalid ({keyword}): {}", show(instance)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile_and_have_ids() {
        let s = Schemas::get();
        assert!(
            s.tenant.raw["$id"]
                .as_str()
                .unwrap()
                .starts_with("https://tenancy.dev/schemas/v1/")
        );
    }

    #[test]
    fn field_paths_read_naturally() {
        assert_eq!(
            field_path("/spec/environments/1/name"),
            "spec.environments[1].name"
        );
        assert_eq!(field_path(""), "document");
    }
}
