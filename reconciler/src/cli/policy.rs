//! `tenancy policy test` and `tenancy policy inspect`: the policy author's tools.

use super::{CliError, Output, exit};
use crate::diagnostics::{Terminal, one_line, sgr};
use crate::policy::bundle::{Bundle, Limits};
use crate::policy::fixtures::{self, CaseResult};
use crate::policy::host::{Failure, PolicyHost};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run fixture cases against the bundle's modules and show a diff for each failing case.
    ///
    /// Fixtures are YAML files (kind: PolicyTest) naming a policy of the bundle, a platform
    /// directory, a base tenant and cases (a JSON merge patch and the expected violations).
    /// Without FIXTURES, every `fixtures/*.yaml` next to a bundle module is run.
    #[command(
        after_help = "Exit codes: 0 = every case passed, 1 = a case failed, 2 = could not run."
    )]
    Test(TestArgs),
    /// Show a module's digest, shape, metadata and whether the sandbox accepts it.
    ///
    /// The module is read, checked and compiled exactly as `validate` does for a bundle
    /// entry, under the limits given here (a bundle's defaults unless set), so a module this
    /// refuses is refused there for the same reason.
    #[command(
        after_help = "Exit codes: 0 = accepted, 1 = refused (the reason is shown), 2 = could not run."
    )]
    Inspect(InspectArgs),
    /// Evaluate one module against one tenant manifest, as `kwctl run` does for Kubewarden.
    #[command(
        after_help = "Exit codes: 0 = allowed, 1 = denied (or the module failed), 2 = could not run."
    )]
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A policy component (.wasm).
    pub module: PathBuf,
    /// The tenant manifest to judge (YAML).
    #[arg(long)]
    pub tenant: PathBuf,
    /// Its previous version, for update/transition/delete.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// Directory holding the platform's Region and Plan manifests.
    #[arg(long, default_value = "tenants/platform")]
    pub platform: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The sandbox's limits, as a bundle entry's `limits:` sets them (defaults: a bundle's).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Sandbox limits (as in a bundle entry's `limits:`)")]
pub(crate) struct LimitArgs {
    /// Fuel (instructions) per evaluation.
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// Memory of one evaluation (all memories and tables together), in MiB.
    #[arg(long, default_value_t = Limits::default().memory_mib)]
    pub memory_mib: u64,
    /// Wall-clock limit of one evaluation, in milliseconds.
    #[arg(long, default_value_t = Limits::default().timeout_ms)]
    pub timeout_ms: u64,
    /// Bytes of violations one evaluation may return.
    #[arg(long, default_value_t = Limits::default().max_output_bytes)]
    pub max_output_bytes: u64,
    /// Violations one evaluation may return.
    #[arg(long, default_value_t = Limits::default().max_violations)]
    pub max_violations: u64,
    /// CPU time compiling the module may take, in milliseconds.
    #[arg(long, default_value_t = Limits::default().compile_ms)]
    pub compile_ms: u64,
    /// Memory compiling the module may take, in MiB.
    #[arg(long, default_value_t = Limits::default().compile_mib)]
    pub compile_mib: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_mib: self.memory_mib,
            timeout_ms: self.timeout_ms,
            max_output_bytes: self.max_output_bytes,
            max_violations: self.max_violations,
            compile_ms: self.compile_ms,
            compile_mib: self.compile_mib,
        }
    }
}

/// Read a module the way a bundle's modules are read (a regular file, bounded), and its digest.
fn read_module(path: &std::path::Path) -> (Result<Vec<u8>, Failure>, String) {
    use sha2::Digest;
    let bytes = crate::policy::host::read_module(path, &path.display().to_string());
    let digest = bytes
        .as_ref()
        .map(|b| hex::encode(sha2::Sha256::digest(b)))
        .unwrap_or_default();
    (bytes, digest)
}

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Fixture files to run (default: every fixtures/*.yaml next to the bundle's modules).
    pub fixtures: Vec<PathBuf>,
    /// The policy bundle whose modules are tested.
    #[arg(long, default_value = super::validate::DEFAULT_BUNDLE, env = "TENANCY_POLICIES")]
    pub bundle: PathBuf,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// A policy component (.wasm).
    pub module: PathBuf,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub(crate) fn run(cmd: &Command, color: bool) -> Result<u8, CliError> {
    match cmd {
        Command::Test(a) => test(a, color),
        Command::Inspect(a) => inspect(a, color),
        Command::Run(a) => run_module(a),
    }
}

fn host() -> Result<PolicyHost, CliError> {
    PolicyHost::new().map_err(|e| CliError::Policy(e.to_string()))
}

fn test(args: &TestArgs, color: bool) -> Result<u8, CliError> {
    let bundle = Bundle::load(&args.bundle)?;
    let host = host()?;
    let files = if args.fixtures.is_empty() {
        fixtures::discover(&bundle)
    } else {
        args.fixtures.clone()
    };
    if files.is_empty() {
        return Err(CliError::Policy(format!(
            "no fixtures found next to the modules of {}",
            args.bundle.display()
        )));
    }
    let mut results: Vec<CaseResult> = Vec::new();
    for f in &files {
        results.extend(
            fixtures::run_file(&host, &bundle, f).map_err(|e| CliError::Policy(e.to_string()))?,
        );
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let mut out = super::report_out(args.output == Output::Json);
    match args.output {
        Output::Json => {
            #[derive(Serialize)]
            struct Report<'a> {
                passed: usize,
                failed: usize,
                cases: &'a [CaseResult],
            }
            serde_json::to_writer_pretty(
                &mut out,
                &Report {
                    passed: results.len() - failed,
                    failed,
                    cases: &results,
                },
            )
            .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            let (green, red, dim, reset) = if color {
                (sgr("32"), sgr("1;31"), sgr("2"), sgr("0"))
            } else {
                Default::default()
            };
            for r in &results {
                if r.passed {
                    writeln!(
                        out,
                        "{green}ok{reset}   {} › {}",
                        one_line(&r.policy),
                        one_line(&r.name)
                    )?;
                    continue;
                }
                writeln!(
                    out,
                    "{red}FAIL{reset} {} › {} {dim}({}:{}){reset}",
                    one_line(&r.policy),
                    one_line(&r.name),
                    one_line(&r.file),
                    r.line
                )?;
                if let Some(e) = &r.error {
                    writeln!(out, "       error:      {}", one_line(e))?;
                }
                for m in &r.missing {
                    writeln!(
                        out,
                        "       missing:    {} {} at {:?}",
                        m.severity,
                        one_line(&m.rule),
                        m.path
                    )?;
                }
                for u in &r.unexpected {
                    writeln!(
                        out,
                        "       unexpected: {} {} at {:?}",
                        u.severity,
                        one_line(&u.rule),
                        u.path
                    )?;
                }
            }
            writeln!(
                out,
                "\n{} passed, {} failed ({} fixture file(s))",
                results.len() - failed,
                failed,
                files.len()
            )?;
        }
    }
    Ok(if failed > 0 { exit::FINDINGS } else { exit::OK })
}

fn inspect(args: &InspectArgs, color: bool) -> Result<u8, CliError> {
    let (bytes, digest) = read_module(&args.module);
    let host = host()?;
    let limits = args.limits.limits();
    let loaded = bytes
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|b| host.load_with(b, &digest, &limits));
    // The shape the host read; for a refused module, read here (it may not get that far).
    let shape = match &loaded {
        Ok(m) => Some(m.shape.clone()),
        Err(_) => bytes
            .as_ref()
            .ok()
            .and_then(|b| crate::policy::shape::read(b).ok()),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Compile {
        /// This run's time: compiling, or loading the cached artifact.
        ms: f64,
        /// What compiling it cost when it was compiled.
        cpu_ms: u64,
        #[serde(rename = "peakMiB")]
        peak_mib: f64,
        cached: bool,
    }
    #[derive(Serialize)]
    struct Inspect {
        module: String,
        sha256: String,
        bytes: usize,
        accepted: bool,
        error: Option<String>,
        /// What kind of refusal: `read`, `shape`, `compile-budget`, `contract`, …
        reason: Option<&'static str>,
        name: Option<String>,
        version: Option<String>,
        rules: Vec<String>,
        /// The `tenancy:policy` version it is built for: as loaded, or as its imports name.
        contract: Option<String>,
        shape: Option<crate::policy::shape::Shape>,
        compile: Option<Compile>,
    }
    let report = Inspect {
        module: args.module.display().to_string(),
        sha256: digest,
        bytes: bytes.as_ref().map(Vec::len).unwrap_or_default(),
        accepted: loaded.is_ok(),
        error: loaded.as_ref().err().map(|e| e.to_string()),
        reason: loaded.as_ref().err().map(Failure::class),
        name: loaded.as_ref().ok().map(|m| m.info.name.clone()),
        version: loaded.as_ref().ok().map(|m| m.info.version.clone()),
        rules: loaded
            .as_ref()
            .map(|m| m.info.rules.clone())
            .unwrap_or_default(),
        contract: match &loaded {
            Ok(m) => Some(m.contract().to_owned()),
            Err(_) => shape.as_ref().and_then(|s| s.contract.clone()),
        },
        shape,
        compile: loaded.as_ref().ok().map(|m| Compile {
            ms: m.compile_time.as_secs_f64() * 1e3,
            cpu_ms: m.cost.cpu_ms,
            peak_mib: m.cost.peak_kib as f64 / 1024.0,
            cached: m.cost.cached,
        }),
    };
    match args.output {
        Output::Json => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            let (bold, red, green, reset) = if color {
                (sgr("1"), sgr("1;31"), sgr("32"), sgr("0"))
            } else {
                Default::default()
            };
            // Everything a module says of itself goes through a Terminal, on its own line.
            let mut out = Terminal::new(std::io::stdout().lock());
            writeln!(
                out,
                "module:   {} ({} bytes)",
                one_line(&report.module),
                report.bytes
            )?;
            if !report.sha256.is_empty() {
                writeln!(out, "sha256:   {}", report.sha256)?;
            }
            if let Some(s) = &report.shape {
                let memories: Vec<String> = s
                    .memories
                    .iter()
                    .map(|b| format!("{} KiB", b / 1024))
                    .collect();
                writeln!(
                    out,
                    "shape:    {} core module(s), {} functions (largest {} bytes, most locals {}), {} memor{} [{}], {} table(s)",
                    s.core_modules,
                    s.functions,
                    s.max_body_bytes,
                    s.max_locals,
                    s.memories.len(),
                    if s.memories.len() == 1 { "y" } else { "ies" },
                    memories.join(", "),
                    s.tables
                )?;
                let imports: Vec<String> = s
                    .imports
                    .iter()
                    .map(|i| crate::diagnostics::quote(i))
                    .collect();
                writeln!(
                    out,
                    "imports:  {}",
                    if imports.is_empty() {
                        "none".into()
                    } else {
                        imports.join(", ")
                    }
                )?;
            }
            writeln!(
                out,
                "contract: {}",
                report
                    .contract
                    .as_deref()
                    .map(|v| format!("tenancy:policy@{}", one_line(v)))
                    .unwrap_or_else(|| "none named by its imports".into())
            )?;
            match (&loaded, &report.error) {
                (Ok(m), _) => {
                    writeln!(
                        out,
                        "policy:   {bold}{} {}{reset}",
                        one_line(&m.info.name),
                        one_line(&m.info.version)
                    )?;
                    let rules: Vec<String> = m
                        .info
                        .rules
                        .iter()
                        .map(|r| one_line(r).into_owned())
                        .collect();
                    writeln!(out, "rules:    {}", rules.join(", "))?;
                    let c = report
                        .compile
                        .as_ref()
                        .expect("accepted modules are compiled");
                    writeln!(
                        out,
                        "sandbox:  {green}accepted{reset} (compiled with {} ms of CPU, {:.0} MiB peak{}; ready in {:.1} ms)",
                        c.cpu_ms,
                        c.peak_mib,
                        if c.cached { ", from the cache" } else { "" },
                        c.ms
                    )?;
                }
                (Err(_), Some(e)) => {
                    writeln!(out, "sandbox:  {red}REFUSED{reset}: {}", one_line(e))?
                }
                (Err(_), None) => {}
            }
        }
    }
    Ok(if report.accepted {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

fn read_manifest_json(path: &std::path::Path) -> Result<String, CliError> {
    fixtures::load_yaml_json(path, path)
        .map(|(json, _)| json.to_string())
        .map_err(|e| CliError::Policy(e.to_string()))
}

fn run_module(args: &RunArgs) -> Result<u8, CliError> {
    use crate::policy::host::{Commit, Input, Operation};
    let (bytes, digest) = read_module(&args.module);
    let platform = fixtures::load_platform(&args.platform, &args.platform)
        .map_err(|e| CliError::Policy(e.to_string()))?;
    let tenant = read_manifest_json(&args.tenant)?;
    let previous = args
        .previous
        .as_deref()
        .map(read_manifest_json)
        .transpose()?;
    let input = Input {
        operation: if previous.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        tenant,
        previous,
        platform,
        commit: Commit {
            sha: String::new(),
            author: String::new(),
        },
    };
    let limits = args.limits.limits();
    let host = host()?;
    let started = std::time::Instant::now();
    let mut timing = crate::policy::host::Timing::default();
    let outcome = bytes
        .and_then(|b| host.load_with(&b, &digest, &limits))
        .and_then(|m| {
            let (outcome, t) = host.evaluate_timed(&m, &limits, &input);
            timing = t;
            outcome
        });
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    #[derive(Serialize)]
    struct V {
        rule: String,
        severity: &'static str,
        path: String,
        message: String,
    }
    #[derive(Serialize)]
    struct Report {
        module: String,
        sha256: String,
        allowed: bool,
        error: Option<String>,
        violations: Vec<V>,
        elapsed_ms: f64,
        /// Fuel the evaluation used, of `fuel_limit`: instructions and platform lookups.
        fuel: u64,
        fuel_limit: u64,
        lookups: u64,
    }
    let (violations, error) = match outcome {
        Ok(vs) => (
            vs.into_iter()
                .map(|v| V {
                    severity: v.severity.as_str(),
                    rule: v.rule,
                    path: v.path,
                    message: v.message,
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(f) => (Vec::new(), Some(f.to_string())),
    };
    let allowed = error.is_none() && !violations.iter().any(|v| v.severity == "deny");
    let report = Report {
        module: args.module.display().to_string(),
        sha256: digest,
        allowed,
        error,
        violations,
        elapsed_ms,
        fuel: timing.fuel,
        fuel_limit: limits.fuel,
        lookups: timing.lookups,
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            let mut out = Terminal::new(out);
            if let Some(e) = &report.error {
                writeln!(out, "denied: {}", one_line(e))?;
            }
            for v in &report.violations {
                writeln!(
                    out,
                    "{} {} at {:?}: {}",
                    v.severity,
                    one_line(&v.rule),
                    v.path,
                    crate::diagnostics::quote(&v.message)
                )?;
            }
            writeln!(
                out,
                "{} in {:.1} ms, {} of {} fuel, {} platform lookup(s)",
                if report.allowed { "allowed" } else { "denied" },
                report.elapsed_ms,
                report.fuel,
                report.fuel_limit,
                report.lookups
            )?;
        }
    }
    Ok(if report.allowed {
        exit::OK
    } else {
        exit::FINDINGS
    })
}
