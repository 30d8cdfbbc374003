//! Manifests: from a file's text to positioned YAML documents and, once validated, to typed
//! values. This is the boundary where untrusted repository content becomes trusted data.

pub mod ids;
pub(crate) mod model;
mod subset;
pub mod yaml;

pub use ids::{EnvName, IdError, OrgId, PlanName, RegionName, TenantId};
pub use model::{Lifecycle, Organization, Plan, Profile, Region, Tenant};

use crate::diagnostics::{Finding, Position};
use yaml::{Node, ParseErrorKind, YamlLimits};

/// The kinds a repository may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Tenant,
    Organization,
    Region,
    Plan,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tenant, Kind::Organization, Kind::Region, Kind::Plan];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tenant => "Tenant",
            Kind::Organization => "Organization",
            Kind::Region => "Region",
            Kind::Plan => "Plan",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// One YAML document of a file, with its kind when it declared a known one.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    pub file: String,
    /// 0-based index of the document within its file.
    pub index: usize,
    pub(crate) node: Node,
    pub kind: Kind,
}

impl Document {
    /// The tenant id this document declares, if it is a Tenant with a valid id.
    pub fn tenant_id(&self) -> Option<&str> {
        if self.kind != Kind::Tenant {
            return None;
        }
        let id = self.node.get("metadata")?.get("id")?.as_str()?;
        TenantId::parse(id).is_ok().then_some(id)
    }
}

/// Split a file into documents, reporting YAML errors, empty documents and unknown kinds.
pub(crate) fn parse_file(
    file: &str,
    text: &str,
    limits: &YamlLimits,
) -> (Vec<Document>, Vec<Finding>) {
    let mut findings = Vec::new();
    if text.trim().is_empty() {
        findings.push(
            Finding::error(
                file,
                "file.empty",
                "file is empty: expected at least one manifest",
            )
            .hint(
                "delete the file, or add a manifest (apiVersion: tenancy.dev/v1, kind: Tenant, …)",
            ),
        );
        return (Vec::new(), findings);
    }
    let nodes = match yaml::parse_documents(text, limits) {
        Ok(nodes) => nodes,
        Err(e) => {
            let (rule, hint) = match e.kind {
                ParseErrorKind::Syntax => (
                    "yaml.syntax",
                    "check indentation and quoting near this position",
                ),
                ParseErrorKind::DuplicateKey => {
                    ("yaml.duplicate-key", "remove or merge the repeated key")
                }
                ParseErrorKind::Budget => (
                    "yaml.budget",
                    "manifests may not use deeply nested or heavily repeated aliases; write the values out",
                ),
            };
            findings.push(Finding::error(file, rule, e.message).at(e.pos).hint(hint));
            return (Vec::new(), findings);
        }
    };
    if nodes.is_empty() {
        findings.push(
            Finding::error(
                file,
                "file.empty",
                "file holds no YAML document (only comments or separators)",
            )
            .hint("delete the file, or add a manifest"),
        );
    }
    let mut docs = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.into_iter().enumerate() {
        let doc_pos = if node.pos.line > 0 {
            node.pos
        } else {
            Position {
                line: 1,
                column: 1,
                len: 0,
            }
        };
        let yaml::Value::Map(_) = node.value else {
            let rule = if matches!(node.value, yaml::Value::Null) {
                "file.empty"
            } else {
                "manifest.not-a-mapping"
            };
            let message = if rule == "file.empty" {
                format!("document {} is empty", index + 1)
            } else {
                format!(
                    "document {} is a {}, expected a mapping with apiVersion, kind, metadata",
                    index + 1,
                    node.type_name()
                )
            };
            findings.push(Finding::error(file, rule, message).at(doc_pos));
            continue;
        };
        let kind_node = node.get("kind");
        let kind = match kind_node.and_then(Node::as_str) {
            Some(k) => match Kind::from_name(k) {
                Some(kind) => kind,
                None => {
                    let pos = kind_node.map(|n| n.pos).unwrap_or(doc_pos);
                    findings.push(
                        Finding::error(
                            file,
                            "manifest.unknown-kind",
                            format!("unknown kind {}", crate::diagnostics::quote(k)),
                        )
                        .at(pos)
                        .pointer("/kind")
                        .hint("kind must be one of: Tenant, Organization, Region, Plan"),
                    );
                    continue;
                }
            },
            None => {
                let pos = kind_node.map(|n| n.pos).unwrap_or(doc_pos);
                findings.push(
                    Finding::error(
                        file,
                        "manifest.missing-kind",
                        "document has no `kind` string",
                    )
                    .at(pos)
                    .pointer("/kind")
                    .hint("add `kind: Tenant` (or Organization, Region, Plan)"),
                );
                continue;
            }
        };
        docs.push(Document {
            file: file.to_owned(),
            index,
            node,
            kind,
        });
    }
    (docs, findings)
}
