//! A module's shape, read before anything compiles it: how many core modules, functions,
//! locals, memories and tables it has, what it imports, which contract version it is built
//! for. Parsing is linear in the module's size and allocates little, so a module whose shape
//! is out of bounds (a compile bomb by count, a forbidden import, an unserved contract) is
//! refused in milliseconds, before the compiler — whose cost is not linear — sees it.

use super::host::Failure;
use serde::Serialize;
use wasmparser::{Parser, Payload};

/// Most core functions a policy may define (a JavaScript policy, engine included, has ~12,700).
pub(crate) const MAX_FUNCTIONS: u64 = 50_000;
/// Most locals one function may declare (the JavaScript engine's largest has a few hundred).
pub(crate) const MAX_LOCALS: u64 = 10_000;
/// Largest function body, in bytes.
pub(crate) const MAX_BODY_BYTES: u64 = 1 << 20;
/// Most core modules and memories in one component (the sandbox's pool has room for no more).
pub(crate) const MAX_CORE_MODULES: u64 = 8;
pub(crate) const MAX_MEMORIES: u64 = 2;
/// Most tables in one component.
pub(crate) const MAX_TABLES: u64 = 8;

/// What [`read`] found. Shown by `tenancy policy inspect`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    pub bytes: u64,
    pub(crate) core_modules: u64,
    pub functions: u64,
    /// The most locals declared by one function.
    pub(crate) max_locals: u64,
    /// The largest function body, in bytes.
    pub(crate) max_body_bytes: u64,
    /// Each defined memory's initial size, in bytes.
    pub memories: Vec<u64>,
    /// The most memories one core module defines.
    pub(crate) max_module_memories: u64,
    pub tables: u64,
    /// The component's own imports (what it asks the host for).
    pub(crate) imports: Vec<String>,
    /// The `tenancy:policy` version it imports the contract's interfaces from, if it does.
    pub contract: Option<String>,
}

/// The contract's package: a policy may import its interfaces and nothing else.
pub(crate) const CONTRACT: &str = "tenancy:policy/";

/// The interfaces each served contract version lets a policy import.
pub(crate) fn contract_interfaces(version: &str) -> &'static [&'static str] {
    match version {
        "0.1.0" => &["types"],
        "0.2.0" => &["types", "platform"],
        _ => &[],
    }
}

/// `tenancy:policy/IFACE@VERSION` → (IFACE, VERSION).
fn contract_import(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(CONTRACT)?.split_once('@')
}

/// Read a component's shape. Fails on bytes that are not a well-formed component; does not
/// judge the shape (see [`Shape::check`]).
pub fn read(bytes: &[u8]) -> Result<Shape, Failure> {
    let malformed = |e: wasmparser::BinaryReaderError| Failure::Compile(e.to_string());
    let mut shape = Shape {
        bytes: bytes.len() as u64,
        ..Shape::default()
    };
    // What encloses the payload being read: empty is the outer component, whose imports are
    // the ones the host must grant; `Some(n)` a core module with `n` memories so far.
    let mut open: Vec<Option<u64>> = Vec::new();
    let mut saw_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::Version { encoding, .. } => {
                if open.is_empty() && !saw_component && encoding != wasmparser::Encoding::Component
                {
                    return Err(Failure::Compile(
                        "a core WebAssembly module, not a component: wrap it with `wasm-tools component new` (see policies/README.md)".into(),
                    ));
                }
                saw_component = true;
            }
            Payload::ModuleSection { .. } => {
                shape.core_modules += 1;
                open.push(Some(0));
            }
            Payload::ComponentSection { .. } => open.push(None),
            Payload::End(_) => {
                open.pop();
            }
            Payload::ComponentImportSection(reader) if open.is_empty() => {
                for import in reader {
                    let import = import.map_err(malformed)?;
                    // `(import "input" (type (eq …)))` names a type the contract already
                    // defines; it asks the host for nothing.
                    if matches!(
                        import.ty,
                        wasmparser::ComponentTypeRef::Type(wasmparser::TypeBounds::Eq(_))
                    ) {
                        continue;
                    }
                    let name = import.name.name;
                    if let Some((_, version)) = contract_import(name) {
                        shape.contract = Some(version.to_owned());
                    }
                    shape.imports.push(name.to_owned());
                }
            }
            Payload::FunctionSection(reader) => shape.functions += u64::from(reader.count()),
            Payload::TableSection(reader) => shape.tables += u64::from(reader.count()),
            Payload::MemorySection(reader) => {
                if let Some(Some(n)) = open.last_mut() {
                    *n += u64::from(reader.count());
                    shape.max_module_memories = shape.max_module_memories.max(*n);
                }
                for memory in reader {
                    let memory = memory.map_err(malformed)?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    shape.memories.push(memory.initial.saturating_mul(page));
                }
            }
            Payload::CodeSectionEntry(body) => {
                shape.max_body_bytes = shape.max_body_bytes.max(body.range().len() as u64);
                let mut locals = body.get_locals_reader().map_err(malformed)?;
                let mut declared = 0u64;
                for _ in 0..locals.get_count() {
                    let (count, _) = locals.read().map_err(malformed)?;
                    declared = declared.saturating_add(u64::from(count));
                }
                shape.max_locals = shape.max_locals.max(declared);
            }
            _ => {}
        }
    }
    Ok(shape)
}

impl Shape {
    /// Refuse a shape the sandbox will not compile, naming what is out of bounds. Imports
    /// and the contract version are judged here too, so that a module the host could never
    /// link costs no compilation either.
    pub fn check(&self, supported: &[&str]) -> Result<(), Failure> {
        let over = |what: &str, n: u64, most: u64| {
            Failure::Shape(format!("it has {n} {what}, more than the sandbox's {most}"))
        };
        if self.core_modules > MAX_CORE_MODULES {
            return Err(over("core modules", self.core_modules, MAX_CORE_MODULES));
        }
        if self.functions > MAX_FUNCTIONS {
            return Err(over("functions", self.functions, MAX_FUNCTIONS));
        }
        if self.max_locals > MAX_LOCALS {
            return Err(over("locals in one function", self.max_locals, MAX_LOCALS));
        }
        if self.max_body_bytes > MAX_BODY_BYTES {
            return Err(over(
                "bytes in one function body",
                self.max_body_bytes,
                MAX_BODY_BYTES,
            ));
        }
        if self.max_module_memories > 1 {
            return Err(Failure::Shape(format!(
                "a core module of it defines {} memories; the sandbox gives each core module one",
                self.max_module_memories
            )));
        }
        if self.memories.len() as u64 > MAX_MEMORIES {
            return Err(over("memories", self.memories.len() as u64, MAX_MEMORIES));
        }
        if self.tables > MAX_TABLES {
            return Err(over("tables", self.tables, MAX_TABLES));
        }
        check_contract(&self.imports, supported)
    }
}

/// Refuse a component built for a contract version this host does not serve, built for two
/// versions at once, or that imports anything but its version's contract interfaces.
pub(crate) fn check_contract(imports: &[String], supported: &[&str]) -> Result<(), Failure> {
    let printable = |v: &str| {
        crate::diagnostics::printable(&v.chars().take(64).collect::<String>()).into_owned()
    };
    let mut seen: Option<&str> = None;
    for (_, version) in imports.iter().filter_map(|n| contract_import(n)) {
        if !supported.contains(&version) {
            return Err(Failure::Version {
                found: format!("tenancy:policy@{}", printable(version)),
                supported: supported
                    .iter()
                    .map(|v| format!("tenancy:policy@{v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        match seen {
            Some(other) if other != version => {
                return Err(Failure::Contract(format!(
                    "it imports both tenancy:policy@{other} and tenancy:policy@{}; a policy is built for one contract version",
                    printable(version)
                )));
            }
            _ => seen = Some(version),
        }
    }
    check_imports(imports)
}

/// Refuse a component that imports anything the sandbox does not grant, naming every such
/// import and what it would have given the module.
fn check_imports(imports: &[String]) -> Result<(), Failure> {
    let granted = |name: &str| {
        contract_import(name)
            .is_some_and(|(iface, version)| contract_interfaces(version).contains(&iface))
    };
    let forbidden: Vec<&String> = imports.iter().filter(|name| !granted(name)).collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    let grants = |name: &str| {
        if name.starts_with("wasi:filesystem") {
            " (file system)"
        } else if name.starts_with("wasi:sockets") || name.starts_with("wasi:http") {
            " (network)"
        } else if name.starts_with("wasi:clocks") {
            " (clock)"
        } else if name.starts_with("wasi:random") {
            " (randomness)"
        } else if name.starts_with("wasi:cli/environment") {
            " (environment)"
        } else {
            ""
        }
    };
    let listed: Vec<String> = forbidden
        .iter()
        .map(|n| format!("{}{}", crate::diagnostics::quote(n), grants(n)))
        .collect();
    Err(Failure::Contract(format!(
        "it imports {}; policies may import nothing but the tenancy:policy interfaces of their contract version (types; from 0.2.0 also platform) — build for wasm32-unknown-unknown, see policies/README.md",
        listed.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_and_contract_versions_are_judged_before_compiling() {
        let with = |imports: &[&str]| Shape {
            imports: imports.iter().map(|i| (*i).to_owned()).collect(),
            ..Shape::default()
        };
        assert!(with(&[]).check(&["0.1.0"]).is_ok());
        assert!(
            with(&["tenancy:policy/types@0.1.0"])
                .check(&["0.1.0"])
                .is_ok()
        );
        let future = with(&["tenancy:policy/types@9.0.0"]).check(&["0.1.0"]);
        assert!(
            matches!(&future, Err(Failure::Version { found, supported }) if found == "tenancy:policy@9.0.0" && supported == "tenancy:policy@0.1.0"),
            "{future:?}"
        );
        let wasi =
            with(&["wasi:filesystem/types@0.2.0", "tenancy:policy/types@0.1.0"]).check(&["0.1.0"]);
        assert!(
            matches!(&wasi, Err(Failure::Contract(m)) if m.contains("(file system)")),
            "{wasi:?}"
        );
        // An unversioned contract name is not the contract.
        assert!(with(&["tenancy:policy/types"]).check(&["0.1.0"]).is_err());

        // 0.2.0 grants the platform lookups; 0.1.0 has no such interface.
        let served = ["0.1.0", "0.2.0"];
        let v2 = with(&[
            "tenancy:policy/platform@0.2.0",
            "tenancy:policy/types@0.2.0",
        ]);
        assert!(v2.check(&served).is_ok());
        assert_eq!(
            contract_import("tenancy:policy/platform@0.2.0"),
            Some(("platform", "0.2.0"))
        );
        let old_platform = with(&["tenancy:policy/platform@0.1.0"]).check(&served);
        assert!(
            matches!(&old_platform, Err(Failure::Contract(m)) if m.contains("platform@0.1.0")),
            "{old_platform:?}"
        );
        let unknown = with(&["tenancy:policy/secrets@0.2.0"]).check(&served);
        assert!(matches!(unknown, Err(Failure::Contract(_))), "{unknown:?}");
        let mixed = with(&[
            "tenancy:policy/types@0.1.0",
            "tenancy:policy/platform@0.2.0",
        ])
        .check(&served);
        assert!(
            matches!(&mixed, Err(Failure::Contract(m)) if m.contains("both")),
            "{mixed:?}"
        );
        let future = with(&["tenancy:policy/types@9.0.0"]).check(&served);
        assert!(
            matches!(&future, Err(Failure::Version { supported, .. }) if supported == "tenancy:policy@0.1.0, tenancy:policy@0.2.0"),
            "{future:?}"
        );
    }

    #[test]
    fn counts_over_the_sandbox_bounds_are_refused() {
        let over = [
            Shape {
                functions: MAX_FUNCTIONS + 1,
                ..Shape::default()
            },
            Shape {
                max_locals: MAX_LOCALS + 1,
                ..Shape::default()
            },
            Shape {
                max_body_bytes: MAX_BODY_BYTES + 1,
                ..Shape::default()
            },
            Shape {
                core_modules: MAX_CORE_MODULES + 1,
                ..Shape::default()
            },
            Shape {
                memories: vec![0; 3],
                ..Shape::default()
            },
            Shape {
                max_module_memories: 2,
                ..Shape::default()
            },
            Shape {
                tables: MAX_TABLES + 1,
                ..Shape::default()
            },
        ];
        for shape in over {
            assert!(
                matches!(shape.check(&["0.1.0"]), Err(Failure::Shape(_))),
                "{shape:?}"
            );
        }
    }

    #[test]
    fn a_core_module_or_garbage_is_not_a_component() {
        // `(module)`: the magic, version 1, core encoding.
        let core = b"\0asm\x01\0\0\0";
        assert!(
            matches!(read(core), Err(Failure::Compile(m)) if m.contains("core WebAssembly module"))
        );
        assert!(matches!(read(b"not wasm at all"), Err(Failure::Compile(_))));
    }
}
