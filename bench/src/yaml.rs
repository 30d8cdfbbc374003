//! `yaml-throughput REPO`: how fast the YAML library the reconciler uses reads a tenant
//! repository's manifests (`org_*/*.yaml`), on one thread: the event parser alone
//! (granit-parser), and events into `serde_json::Value` (serde-saphyr, what `validate`'s fast
//! path does per clean file). The floor under `tenancy validate`'s parsing time.
//!
//!     cargo run --release --manifest-path bench/Cargo.toml --bin yaml-throughput -- /tmp/repo-10k

use anyhow::{Context, Result};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let root = std::env::args()
        .nth(1)
        .context("usage: yaml-throughput REPO (a directory of org_*/ manifest folders)")?;
    let mut texts = Vec::new();
    for org in std::fs::read_dir(&root)? {
        let org = org?.path();
        let is_org = org
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("org_"));
        if !org.is_dir() || !is_org {
            continue;
        }
        for file in std::fs::read_dir(&org)? {
            let file = file?.path();
            if file.extension().is_some_and(|e| e == "yaml") {
                texts.push(std::fs::read_to_string(&file)?);
            }
        }
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    println!(
        "{} files, {bytes} bytes, one thread, median of 5",
        texts.len()
    );
    let (mut events_runs, mut value_runs) = (Vec::new(), Vec::new());
    let mut events = 0usize;
    for _ in 0..5 {
        let started = Instant::now();
        events = 0;
        for text in &texts {
            for event in granit_parser::Parser::new_from_str(text) {
                std::hint::black_box(event.map_err(|e| anyhow::anyhow!("{e}"))?);
                events += 1;
            }
        }
        events_runs.push(started.elapsed());
        let started = Instant::now();
        for text in &texts {
            let value: serde_json::Value = serde_saphyr::from_str(text)?;
            std::hint::black_box(value);
        }
        value_runs.push(started.elapsed());
    }
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let (e, v) = (median(&mut events_runs), median(&mut value_runs));
    let mbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "granit-parser events only: {:.1} ms ({events} events, {:.0} MB/s)",
        e.as_secs_f64() * 1e3,
        mbs(e)
    );
    println!(
        "serde-saphyr into serde_json::Value: {:.1} ms ({:.0} MB/s)",
        v.as_secs_f64() * 1e3,
        mbs(v)
    );
    Ok(())
}
