//! `tenancy-bench policies`: the standard policies over a tenant repository, end to end
//! (instantiation included), with a per-evaluation breakdown, against regorus evaluating the
//! equivalent Rego rules (bench/rego) on the same inputs.
//!
//!     cargo run --release --manifest-path bench/Cargo.toml -- policies --repo /tmp/repo-10k

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenancy::policy::bundle::Bundle;
use tenancy::policy::host::{self, PolicyHost};
use tenancy::policy::{Change, PolicySet, platform_of};

struct Args {
    repo: PathBuf,
    bundle: PathBuf,
    rego: PathBuf,
    runs: usize,
    /// Another bundle run in the same rounds (e.g. the modules of an older contract).
    also: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        repo: root.clone(),
        bundle: root.join("policies/bundle.yaml"),
        rego: root.join("bench/rego"),
        runs: 5,
        also: None,
    };
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("policies") => {}
        _ => bail!(
            "usage: tenancy-bench policies [--repo DIR] [--bundle FILE] [--rego DIR] [--runs N] [--also FILE]"
        ),
    }
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--repo" => a.repo = value.into(),
            "--bundle" => a.bundle = value.into(),
            "--rego" => a.rego = value.into(),
            "--runs" => a.runs = value.parse()?,
            "--also" => a.also = Some(value.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() -> Result<()> {
    let a = args()?;
    let snapshot = tenancy::source::read_revision(&a.repo, "HEAD", &Default::default())?;
    let report = tenancy::validate::validate(&snapshot, &Default::default());
    let catalog = report.catalog;
    let tenants: Vec<_> = catalog.tenants.iter().map(|t| &t.value).collect();
    let platform = platform_of(&catalog);
    println!(
        "repository: {} tenants, {} threads",
        tenants.len(),
        rayon::current_num_threads()
    );

    // Modules compile in a child running the `tenancy` binary built next to this one.
    if std::env::var_os("TENANCY_POLICY_COMPILER").is_none() {
        let exe = std::env::current_exe()?.with_file_name("tenancy");
        anyhow::ensure!(
            exe.exists(),
            "{} missing: build the tenancy binary too",
            exe.display()
        );
        tenancy::policy::compile::use_compiler(exe);
    }
    // Compile cost: paid once per digest.
    let host = Arc::new(PolicyHost::new().map_err(|e| anyhow::anyhow!("{e}"))?);
    let bundle = Bundle::load(&a.bundle)?;
    let started = Instant::now();
    let set = PolicySet::load(host.clone(), &bundle);
    let cold = started.elapsed();
    let started = Instant::now();
    let again = PolicySet::load(host.clone(), &bundle);
    let warm = started.elapsed();
    for (e, m) in &set.policies {
        let m = m.as_ref().map_err(|f| anyhow::anyhow!("{}: {f}", e.name))?;
        println!(
            "  compile {:<11} {:>7.1} ms  ({} rules)",
            e.name,
            m.compile_time.as_secs_f64() * 1e3,
            m.info.rules.len()
        );
    }
    println!(
        "load bundle: cold {:.1} ms, again (cached by digest) {:.3} ms",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    drop(again);

    // End to end: every tenant × every policy in scope, in parallel, fresh sandbox each.
    let changes: Vec<Change<'_>> = tenants
        .iter()
        .map(|t| Change {
            tenant: t,
            previous: None,
            commit_sha: "0",
            commit_author: "bench",
        })
        .collect();
    // Breakdown on one thread: marshal (JSON for the input), instantiate, call.
    let sample = &tenants[..tenants.len().min(2_000)];
    let (mut marshal, mut inst, mut call, mut teardown, mut n) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        0u32,
    );
    let mut per_policy = vec![Duration::ZERO; set.policies.len()];
    // Fuel used and platform lookups made, per policy.
    let mut fuel = vec![(0u64, 0u64); set.policies.len()];
    let mut per_policy_inst = vec![Duration::ZERO; set.policies.len()];
    for t in sample {
        let started = Instant::now();
        let input = host::Input {
            operation: host::Operation::Create,
            tenant: tenancy::policy::tenant_json(t),
            previous: None,
            platform: platform.clone(),
            commit: host::Commit {
                sha: "0".into(),
                author: "bench".into(),
            },
        };
        marshal += started.elapsed();
        for (i, (e, m)) in set.policies.iter().enumerate() {
            let m = m.as_ref().map_err(|f| anyhow::anyhow!("{f}"))?;
            let (r, timing) = host.evaluate_timed(m, &e.limits, &input);
            per_policy[i] += timing.instantiate + timing.call + timing.teardown;
            per_policy_inst[i] += timing.instantiate;
            r.map_err(|f| anyhow::anyhow!("{}: {f}", e.name))?;
            inst += timing.instantiate;
            call += timing.call;
            teardown += timing.teardown;
            fuel[i].0 += timing.fuel;
            fuel[i].1 += timing.lookups;
            n += 1;
        }
    }
    let us = |d: Duration, k: u32| d.as_secs_f64() * 1e6 / k as f64;
    println!(
        "per evaluation (1 thread, {n} samples): marshal {:.1} µs (once per tenant: {:.1} µs), instantiate {:.1} µs, call (lower + run + lift) {:.1} µs, teardown (memory reset) {:.1} µs",
        us(marshal, n),
        us(marshal, sample.len() as u32),
        us(inst, n),
        us(call, n),
        us(teardown, n)
    );
    let each: Vec<String> = set
        .policies
        .iter()
        .zip(&per_policy)
        .zip(&per_policy_inst)
        .map(|(((e, _), d), i)| {
            format!(
                "{} {:.1} µs (instantiate {:.1})",
                e.name,
                us(*d, sample.len() as u32),
                us(*i, sample.len() as u32)
            )
        })
        .collect();
    println!("  sandbox time per policy: {}", each.join(", "));
    let k = sample.len().max(1) as u64;
    let used: Vec<String> = set
        .policies
        .iter()
        .zip(&fuel)
        .map(|((e, _), (f, l))| {
            format!("{} {} ({:.1} lookups)", e.name, f / k, *l as f64 / k as f64)
        })
        .collect();
    println!(
        "  fuel per evaluation (instructions and lookups): {}",
        used.join(", ")
    );

    // regorus: the same rules in Rego, the same inputs.
    let mut engine = regorus::Engine::new();
    let mut packages = Vec::new();
    for entry in std::fs::read_dir(&a.rego)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rego") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            engine
                .add_policy_from_file(&path)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            packages.push(format!("data.tenancy.{name}.violations"));
        }
    }
    packages.sort();
    // The platform inventory is `data`, loaded once, as an OPA deployment holds it; each
    // tenant is the input (as the wasm modules get the inventory from the host once per pass).
    let data = format!(r#"{{"platform":{}}}"#, platform.json());
    engine
        .add_data(regorus::Value::from_json_str(&data).map_err(|e| anyhow::anyhow!("{e}"))?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let inputs: Vec<String> = tenants
        .iter()
        .map(|t| Ok(format!(r#"{{"tenant":{}}}"#, serde_json::to_string(t)?)))
        .collect::<Result<_>>()?;
    let also = match &a.also {
        Some(path) => Some(PolicySet::load(host.clone(), &Bundle::load(path)?)),
        None => None,
    };
    // The engines take turns, run after run, so a slow moment of the machine hits all.
    let rego_evals = inputs.len() * packages.len();
    let (mut wasm_runs, mut rego_runs, mut also_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut also_evaluations = 0;
    let (mut evaluations, mut denies, mut rego_violations) = (0, 0, 0);
    for _ in 0..a.runs {
        let started = Instant::now();
        let all = set.evaluate_all(&changes, &platform);
        wasm_runs.push(started.elapsed());
        evaluations = all.iter().map(Vec::len).sum::<usize>();
        denies = all.iter().flatten().filter(|d| d.blocks()).count();

        if let Some(also) = &also {
            let started = Instant::now();
            let all = also.evaluate_all(&changes, &platform);
            also_runs.push(started.elapsed());
            also_evaluations = all.iter().map(Vec::len).sum::<usize>();
        }

        if packages.is_empty() {
            // No Rego to compare with (`--rego` of an empty directory): the wasm runs alone.
            continue;
        }
        let started = Instant::now();
        let counts: Vec<usize> = inputs
            .par_iter()
            .map_init(
                || engine.clone(),
                |eng, input| {
                    eng.set_input(regorus::Value::from_json_str(input).expect("input is JSON"));
                    packages
                        .iter()
                        .map(|p| match eng.eval_rule(p.clone()) {
                            Ok(v) => v.as_set().map(|s| s.len()).unwrap_or(0),
                            Err(_) => 0,
                        })
                        .sum()
                },
            )
            .collect();
        rego_runs.push(started.elapsed());
        rego_violations = counts.iter().sum();
    }
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs.get(runs.len() / 2).copied()
    };
    let wasm = median(&mut wasm_runs).unwrap_or_default();
    println!(
        "wasm end to end: {evaluations} evaluations in {:.3} s (median of {}, best {:.3} s) = {:.0} evaluations/s, {denies} denies",
        wasm.as_secs_f64(),
        a.runs,
        wasm_runs.first().copied().unwrap_or_default().as_secs_f64(),
        per_sec(evaluations, wasm)
    );
    // Regorus's evaluations per second, when there was Rego to run.
    let rego = median(&mut rego_runs).map(|rego| per_sec(rego_evals, rego));
    match rego {
        Some(rate) => {
            println!(
                "regorus: {rego_evals} evaluations in {:.3} s (median of {}, best {:.3} s) = {rate:.0} evaluations/s, {rego_violations} violations",
                rego_runs[rego_runs.len() / 2].as_secs_f64(),
                a.runs,
                rego_runs[0].as_secs_f64(),
            );
            println!(
                "summary: wasm {:.0}/s vs regorus {rate:.0}/s, interleaved -> wasm is {:.2}x",
                per_sec(evaluations, wasm),
                per_sec(evaluations, wasm) / rate
            );
        }
        None => println!("regorus: not run (no .rego file in {})", a.rego.display()),
    }
    if let Some(path) = &a.also {
        let d = median(&mut also_runs).unwrap_or_default();
        let vs_rego = rego
            .map(|rate| format!("{:.2}x regorus, ", per_sec(also_evaluations, d) / rate))
            .unwrap_or_default();
        println!(
            "also {}: {also_evaluations} evaluations in {:.3} s (median of {}) = {:.0} evaluations/s -> {vs_rego}{:.2}x slower than the bundle",
            path.display(),
            d.as_secs_f64(),
            a.runs,
            per_sec(also_evaluations, d),
            per_sec(evaluations, wasm) / per_sec(also_evaluations, d)
        );
    }
    Ok(())
}
