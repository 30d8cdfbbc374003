//! `tenancy validate`: schema and cross-manifest checks, then the governance policies.

use super::{CliError, Output, exit};
use crate::diagnostics::{self, Finding};
use crate::policy::history::Previous;
use crate::reconcile::{self, Evaluation, Inputs, PolicyStatus};
use crate::source;
use crate::validate::{self, Report};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Where the policy bundle is looked for when --policies is not given.
pub(crate) const DEFAULT_BUNDLE: &str = "policies/bundle.yaml";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Path to the Git repository that holds the manifests.
    #[arg(long, default_value = ".", env = "TENANCY_REPO")]
    pub repo: PathBuf,

    /// Revision to read (branch, tag, sha, `HEAD~1`, …). Ignored with --worktree.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,

    /// Read the work tree instead of a commit (for local edits before committing).
    #[arg(long)]
    pub worktree: bool,

    /// Judge each tenant against its version at this revision (a pull request's base)
    /// instead of the commit's first parent, so a change spread over several commits is
    /// judged as a whole.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,

    /// The reconciler's configuration: when it names a state store (or the embedded one
    /// exists), each tenant is also judged against its last applied manifest. Default:
    /// ./tenancy.toml if present.
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Sub-directory of the repository that holds the manifests.
    #[arg(long, default_value = "", value_name = "DIR")]
    pub path: String,

    /// Largest manifest file accepted, e.g. 1MiB or 200KiB.
    #[arg(long, default_value = "1MiB", value_parser = super::parse_size, value_name = "SIZE")]
    pub max_file_size: u64,

    /// Policy bundle to enforce (default: policies/bundle.yaml in the current directory, if any).
    /// The bundle is the operator's, never read from the tenant repository under review.
    #[arg(
        long,
        value_name = "FILE",
        env = "TENANCY_POLICIES",
        conflicts_with = "no_policies"
    )]
    pub policies: Option<PathBuf>,

    /// Run the schema and cross-manifest checks only.
    #[arg(long)]
    pub no_policies: bool,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The JSON report: a stable, documented shape (schemas/validate-report.schema.json).
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    source: JsonSource<'a>,
    summary: validate::Summary,
    policies: Vec<PolicyStatus>,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct JsonSource<'a> {
    repo: String,
    path: &'a str,
    revision: Option<&'a str>,
    commit: Option<&'a str>,
    worktree: bool,
}

fn bundle_path(args: &Args) -> Option<PathBuf> {
    if args.no_policies {
        return None;
    }
    match &args.policies {
        Some(p) => Some(p.clone()),
        None => {
            let default = PathBuf::from(DEFAULT_BUNDLE);
            if default.is_file() {
                Some(default)
            } else {
                eprintln!(
                    "note: no policy bundle at {DEFAULT_BUNDLE}; only schema and cross-manifest checks ran (use --policies FILE)"
                );
                None
            }
        }
    }
}

pub(crate) fn run(args: &Args, color: bool) -> Result<u8, CliError> {
    let started = Instant::now();
    let bundle = bundle_path(args);
    let mut previous = vec![match &args.base {
        Some(base) => Previous::Revision(base.clone()),
        None => Previous::Parent,
    }];
    if bundle.is_some() {
        let config = crate::config::Config::load(args.config.as_deref())?;
        previous.extend(super::plan::applied_if_recorded(&config)?);
    }
    let inputs = Inputs {
        path: args.path.clone(),
        max_file_bytes: args.max_file_size,
        bundle,
        previous,
        ..Inputs::new(&args.repo, (!args.worktree).then_some(args.rev.as_str()))
    };
    let Evaluation {
        snapshot,
        report,
        policies,
        governance,
    } = reconcile::evaluate(&inputs)?;
    tracing::info!(
        files = report.summary.files,
        evaluations = governance.evaluations,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "validated and governed"
    );

    let mut out = super::report_out(args.output == Output::Json);
    match args.output {
        Output::Json => {
            let json = JsonReport {
                api_version: "tenancy.dev/v1",
                kind: "ValidationReport",
                source: JsonSource {
                    repo: args.repo.display().to_string(),
                    path: &args.path,
                    revision: (!args.worktree).then_some(args.rev.as_str()),
                    commit: snapshot.commit.as_ref().map(|c| c.sha.as_str()),
                    worktree: args.worktree,
                },
                summary: report.summary,
                policies,
                findings: &report.findings,
            };
            serde_json::to_writer_pretty(&mut out, &json).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => write_text(
            &mut out,
            &report,
            &snapshot,
            args,
            color,
            started,
            policies.len(),
        )?,
    }
    out.flush()?;
    Ok(if report.has_errors() {
        exit::FINDINGS
    } else {
        exit::OK
    })
}

fn write_text(
    out: &mut impl Write,
    report: &Report,
    snapshot: &source::Snapshot,
    args: &Args,
    color: bool,
    started: Instant,
    policies: usize,
) -> std::io::Result<()> {
    let texts: HashMap<&str, &str> = snapshot
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    for f in &report.findings {
        let text = diagnostics::render_text(f, texts.get(f.file.as_str()).copied(), color);
        writeln!(out, "{text}")?;
    }
    let s = &report.summary;
    let what = match &snapshot.commit {
        Some(c) => format!("{} ({})", args.rev, &c.sha[..c.sha.len().min(12)]),
        None => "work tree".to_owned(),
    };
    let verdict = if s.errors > 0 { "refused" } else { "ok" };
    writeln!(
        out,
        "{verdict}: {} error(s), {} warning(s) in {} file(s), {} document(s), {} tenant(s), {policies} polic{} at {what} [{:.2}s]",
        s.errors,
        s.warnings,
        s.files,
        s.documents,
        s.tenants,
        if policies == 1 { "y" } else { "ies" },
        started.elapsed().as_secs_f64()
    )
}
