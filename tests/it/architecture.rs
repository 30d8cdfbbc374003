//! The module tree has no import cycle: each top-level module of the library uses others only
//! in one direction (cli → daemon → api → reconcile → policy → validate → manifest → …), so a
//! layer can be read, tested and changed without the ones above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::x` and `crate::{x, y::z}` references in Rust source, as top-level module names.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').collect()
        } else {
            vec![rest]
        };
        for n in names {
            let n: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !n.is_empty() {
                out.insert(n);
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_library_has_no_import_cycle() {
    let src = crate::support::workspace_root().join("reconciler/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        let deps = graph.entry(module.clone()).or_default();
        for r in references(&text) {
            if r != module {
                deps.insert(r);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle: {}\n(the module graph: {graph:#?})",
                cycle.join(" → ")
            );
        }
    }
    // The layers this test protects (a sample, so the parser is known to see references).
    assert!(graph["cli"].contains("daemon"));
    assert!(!graph["reconcile"].contains("cli"));
    assert!(!graph["daemon"].contains("cli"));
}

#[test]
fn references_are_read_in_both_spellings() {
    let r = references("use crate::{config::Config, net};\nlet x = crate::policy::host::X;");
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        ["config", "net", "policy"]
    );
}

/// A file a reader can hold: none in the library over 800 lines (split by stage, resource or
/// command, as the others are).
#[test]
fn no_library_file_is_over_800_lines() {
    let src = crate::support::workspace_root().join("reconciler/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (lines > 800).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over 800 lines: {long:?}");
}

/// The REST API is composed beside the daemon by `tenancy run` (`cli/run.rs`); the daemon
/// serves what it is given and never builds the API or its write path itself.
#[test]
fn the_daemon_does_not_build_the_api() {
    let dir = crate::support::workspace_root().join("reconciler/src/daemon");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for built in ["api::router", "api::writes", "ApiMetrics"] {
            assert!(!text.contains(built), "{} uses {built}", f.display());
        }
    }
    let run =
        std::fs::read_to_string(crate::support::workspace_root().join("reconciler/src/cli/run.rs"))
            .expect("cli/run.rs");
    assert!(
        run.contains("crate::api::router("),
        "tenancy run composes the API"
    );
}
