//! `tenancy policy test` and `tenancy policy inspect`: the policy author's tools.

use super::{CliError, Output, exit};
use crate::policy::bundle::Bundle;
use crate::policy::fixtures::{self, CaseResult};
use crate::policy::host::PolicyHost;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run fixture cases against the bundle's modules and show a diff for each failing case.
    ///
    /// Fixtures are YAML files (kind: PolicyTest) naming a policy of the bundle, a platform
    /// directory, a base tenant and cases (a JSON merge patch and the expected violations).
    /// Without FIXTURES, every `fixtures/*.yaml` next to a bundle module is run.
    #[command(
        after_help = "Exit codes: 0 = every case passed, 1 = a case failed, 2 = could not run."
    )]
    Test(TestArgs),
    /// Show a module's digest, metadata and whether the sandbox accepts it.
    Inspect(InspectArgs),
    /// Evaluate one module against one tenant manifest, as `kwctl run` does for Kubewarden.
    #[command(
        after_help = "Exit codes: 0 = allowed, 1 = denied (or the module failed), 2 = could not run."
    )]
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
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
    /// Fuel (instructions) limit.
    #[arg(long, default_value_t = crate::policy::bundle::Limits::default().fuel)]
    pub fuel: u64,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = crate::policy::bundle::Limits::default().memory_mib)]
    pub memory_mib: u64,
    /// Wall-clock limit in milliseconds.
    #[arg(long, default_value_t = crate::policy::bundle::Limits::default().timeout_ms)]
    pub timeout_ms: u64,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Fixture files to run (default: every fixtures/*.yaml next to the bundle's modules).
    pub fixtures: Vec<PathBuf>,
    /// The policy bundle whose modules are tested.
    #[arg(long, default_value = super::validate::DEFAULT_BUNDLE, env = "TENANCY_POLICIES")]
    pub bundle: PathBuf,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A policy component (.wasm).
    pub module: PathBuf,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(cmd: &Command, color: bool) -> Result<u8, CliError> {
    match cmd {
        Command::Test(a) => test(a, color),
        Command::Inspect(a) => inspect(a),
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
    let mut out = std::io::stdout().lock();
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
                ("\x1b[32m", "\x1b[1;31m", "\x1b[2m", "\x1b[0m")
            } else {
                ("", "", "", "")
            };
            for r in &results {
                if r.passed {
                    writeln!(out, "{green}ok{reset}   {} › {}", r.policy, r.name)?;
                    continue;
                }
                writeln!(
                    out,
                    "{red}FAIL{reset} {} › {} {dim}({}:{}){reset}",
                    r.policy, r.name, r.file, r.line
                )?;
                if let Some(e) = &r.error {
                    writeln!(out, "       error:      {e}")?;
                }
                for m in &r.missing {
                    writeln!(
                        out,
                        "       missing:    {} {} at {:?}",
                        m.severity, m.rule, m.path
                    )?;
                }
                for u in &r.unexpected {
                    writeln!(
                        out,
                        "       unexpected: {} {} at {:?}",
                        u.severity, u.rule, u.path
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

fn inspect(args: &InspectArgs) -> Result<u8, CliError> {
    let bytes = std::fs::read(&args.module)?;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let host = host()?;
    let loaded = host.load_bytes(&bytes, &digest);
    #[derive(Serialize)]
    struct Inspect {
        module: String,
        sha256: String,
        bytes: usize,
        accepted: bool,
        error: Option<String>,
        name: Option<String>,
        version: Option<String>,
        rules: Vec<String>,
        compile_ms: Option<f64>,
    }
    let report = Inspect {
        module: args.module.display().to_string(),
        sha256: digest,
        bytes: bytes.len(),
        accepted: loaded.is_ok(),
        error: loaded.as_ref().err().map(|e| e.to_string()),
        name: loaded.as_ref().ok().map(|m| m.info.name.clone()),
        version: loaded.as_ref().ok().map(|m| m.info.version.clone()),
        rules: loaded
            .as_ref()
            .map(|m| m.info.rules.clone())
            .unwrap_or_default(),
        compile_ms: loaded
            .as_ref()
            .ok()
            .map(|m| m.compile_time.as_secs_f64() * 1e3),
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            writeln!(out, "module:  {} ({} bytes)", report.module, report.bytes)?;
            writeln!(out, "sha256:  {}", report.sha256)?;
            match &report.error {
                None => {
                    writeln!(
                        out,
                        "policy:  {} {}",
                        report.name.as_deref().unwrap_or_default(),
                        report.version.as_deref().unwrap_or_default()
                    )?;
                    writeln!(out, "rules:   {}", report.rules.join(", "))?;
                    writeln!(
                        out,
                        "sandbox: accepted (compiled in {:.1} ms)",
                        report.compile_ms.unwrap_or_default()
                    )?;
                }
                Some(e) => writeln!(out, "sandbox: REFUSED: {e}")?,
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
    let bytes = std::fs::read(&args.module)?;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
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
    let limits = crate::policy::bundle::Limits {
        fuel: args.fuel,
        memory_mib: args.memory_mib,
        timeout_ms: args.timeout_ms,
        ..Default::default()
    };
    let host = host()?;
    let started = std::time::Instant::now();
    let outcome = host
        .load_bytes(&bytes, &digest)
        .and_then(|m| host.evaluate(&m, &limits, &input));
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
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            if let Some(e) = &report.error {
                writeln!(out, "denied: {e}")?;
            }
            for v in &report.violations {
                writeln!(
                    out,
                    "{} {} at {:?}: {}",
                    v.severity,
                    v.rule,
                    v.path,
                    crate::diagnostics::quote(&v.message)
                )?;
            }
            writeln!(
                out,
                "{} in {:.1} ms",
                if report.allowed { "allowed" } else { "denied" },
                report.elapsed_ms
            )?;
        }
    }
    Ok(if report.allowed {
        exit::OK
    } else {
        exit::FINDINGS
    })
}
