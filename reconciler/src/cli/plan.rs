//! `tenancy plan`: the diff between a revision and live state, in text, JSON or Markdown; and
//! what plan and apply share (the source arguments, inputs, findings and the plan's text).

use super::output::{ByName, paint, short, write_json};
use super::{CliError, exit};
use crate::config::Config;
use crate::diagnostics::{self, Finding, Severity, one_line};
use crate::policy::history::Previous;
use crate::reconcile::{self, Evaluation, Inputs, PlanReport, Planes};
use crate::store::Store;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tenancy_plane::{Change, Op};

/// What to read, shared by `plan` and `apply`.
#[derive(Debug, clap::Args)]
pub(crate) struct SourceArgs {
    /// Path to the Git repository that holds the manifests.
    #[arg(long, default_value = ".", env = "TENANCY_REPO")]
    pub repo: PathBuf,

    /// Sub-directory of the repository that holds the manifests.
    #[arg(long, default_value = "", value_name = "DIR")]
    pub path: String,

    /// The reconciler's configuration (targets, state store, limits). Default: ./tenancy.toml
    /// if present, else embedded defaults (SQLite and a local directory under .tenancy/).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Policy bundle to enforce (default: the config's `policies.bundle`, else
    /// policies/bundle.yaml in the current directory, if any).
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

    /// Largest manifest file accepted, e.g. 1MiB or 200KiB.
    #[arg(long, default_value = "1MiB", value_parser = super::parse_size, value_name = "SIZE")]
    pub max_file_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlanOutput {
    /// `+ ~ -` per tenant, for a terminal.
    Text,
    /// One JSON document (kind: Plan).
    Json,
    /// Ready to paste as a pull-request comment.
    Markdown,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Revision to plan (default HEAD).
    #[arg(long, default_value = "HEAD", conflicts_with_all = ["base", "head"])]
    pub rev: String,

    /// With --head: plan only the tenants changed between the two revisions (pull requests).
    #[arg(long, requires = "head", value_name = "REV")]
    pub base: Option<String>,

    /// The revision under review (with --base).
    #[arg(long, requires = "base", value_name = "REV")]
    pub head: Option<String>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = PlanOutput::Text)]
    pub output: PlanOutput,
}

pub(super) fn bundle(source: &SourceArgs, config: &Config) -> Option<PathBuf> {
    if source.no_policies {
        return None;
    }
    source
        .policies
        .clone()
        .or_else(|| config.policies.bundle.clone())
        .or_else(|| {
            let default = PathBuf::from(super::validate::DEFAULT_BUNDLE);
            default.is_file().then_some(default)
        })
}

pub(super) fn inputs(
    source: &SourceArgs,
    config: &Config,
    rev: &str,
    previous: Vec<Previous>,
) -> Inputs {
    Inputs {
        path: source.path.clone(),
        max_file_bytes: source.max_file_size,
        bundle: bundle(source, config),
        previous,
        ..Inputs::new(&source.repo, Some(rev))
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::system("cannot start the async runtime"))
}

/// The last applied manifests of the state store `config` names, when it exists (a SQLite
/// file that was never created holds nothing applied); read-only commands never create one.
pub(crate) fn applied_if_recorded(config: &Config) -> Result<Option<Previous>, CliError> {
    let rt = runtime()?;
    rt.block_on(async {
        match Store::open_existing(&config.state_url()).await {
            Ok(Some(store)) => reconcile::applied_baseline(&store).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .map_err(CliError::State)
}

/// Let the process exit without waiting for clients to close: the output is written and
/// every change is recorded, and librdkafka's client teardown alone takes ~0.2 s.
pub(super) fn teardown(rt: tokio::runtime::Runtime, planes: Arc<Planes>) {
    rt.shutdown_background();
    std::thread::spawn(move || drop(planes));
}

/// Validate and govern while the planes of `config` observe what they can without the
/// desired state (on the runtime's worker threads); returns when both are done.
pub(super) fn evaluate_prefetching(
    rt: tokio::runtime::Runtime,
    config: &Config,
    inputs: &Inputs,
) -> Result<(tokio::runtime::Runtime, Arc<Planes>, Evaluation), CliError> {
    let planes = Arc::new(Planes::from_config(config)?);
    let p = planes.clone();
    let prefetch = rt.spawn(async move { p.prefetch().await });
    let evaluation = reconcile::evaluate(inputs)?;
    // A failed prefetch only means `plan` observes by itself (and reports what fails).
    let _ = rt.block_on(prefetch);
    Ok((rt, planes, evaluation))
}

pub(crate) fn run_plan(args: &PlanArgs, color: bool) -> Result<u8, CliError> {
    let started = Instant::now();
    let config = Config::load(args.source.config.as_deref())?;
    let rev = args.head.as_deref().unwrap_or(&args.rev);
    // A pull request is judged against its base and what is applied; a revision against
    // what is applied, exactly as `apply` would judge it.
    let applied = applied_if_recorded(&config)?;
    let previous = match &args.base {
        Some(base) => std::iter::once(Previous::Revision(base.clone()))
            .chain(applied)
            .collect(),
        None => vec![applied.unwrap_or_else(|| Previous::Applied(Default::default()))],
    };
    let inputs = inputs(&args.source, &config, rev, previous);
    let (rt, planes, evaluation) = evaluate_prefetching(runtime()?, &config, &inputs)?;
    let (selected, removed) = match &args.base {
        Some(base) => reconcile::changed_tenants(&inputs, base, rev, &evaluation.report.catalog)?,
        None => (None, Vec::new()),
    };
    let mut report = rt.block_on(reconcile::plan(&planes, &evaluation, selected.as_ref()));
    report.removed = removed;
    let findings = relevant_findings(&evaluation, selected.as_ref());
    let mut out = super::report_out(args.output != PlanOutput::Text);
    match args.output {
        PlanOutput::Json => {
            write_json(&mut out, &json_plan(&report, &findings, rev))?;
        }
        PlanOutput::Text => {
            write_findings(&mut out, &evaluation, &findings, color)?;
            write_text(&mut out, &report, rev, color)?;
            writeln!(out, "[{:.2}s]", started.elapsed().as_secs_f64())?;
        }
        PlanOutput::Markdown => {
            let rerun = match &args.base {
                Some(base) => format!("tenancy plan --base {base} --head {rev} --output json"),
                None => format!("tenancy plan --rev {rev} --output json"),
            };
            let comment = super::markdown::plan_comment(
                &report,
                &findings,
                rev,
                &rerun,
                super::markdown::GITHUB_LIMIT,
            );
            out.write_all(comment.as_bytes())?;
        }
    }
    out.flush()?;
    teardown(rt, planes);
    let refused = findings.iter().any(|f| f.severity == Severity::Error) || report.blocked() > 0;
    Ok(if report.errors() > 0 {
        exit::FAILURE
    } else if refused {
        exit::FINDINGS
    } else {
        exit::OK
    })
}

/// The findings that concern the planned tenants (and those of no tenant).
pub(super) fn relevant_findings<'a>(
    evaluation: &'a Evaluation,
    selected: Option<&BTreeSet<String>>,
) -> Vec<&'a Finding> {
    evaluation
        .report
        .findings
        .iter()
        .filter(|f| match (selected, &f.tenant) {
            (Some(s), Some(t)) => s.contains(t),
            _ => true,
        })
        .collect()
}

pub(super) fn write_findings(
    out: &mut impl Write,
    evaluation: &Evaluation,
    findings: &[&Finding],
    color: bool,
) -> std::io::Result<()> {
    let texts: HashMap<&str, &str> = evaluation
        .snapshot
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    for f in findings.iter().filter(|f| f.severity != Severity::Info) {
        writeln!(
            out,
            "{}",
            diagnostics::render_text(f, texts.get(f.file.as_str()).copied(), color)
        )?;
    }
    Ok(())
}

#[derive(Default, Serialize)]
pub(crate) struct Counts {
    pub(crate) create: usize,
    pub(crate) update: usize,
    pub(crate) delete: usize,
}

pub(crate) fn counts(report: &PlanReport) -> Counts {
    let mut c = Counts::default();
    for change in report.tenants.iter().flat_map(|t| &t.changes) {
        match change.op {
            Op::Create => c.create += 1,
            Op::Update => c.update += 1,
            Op::Delete => c.delete += 1,
        }
    }
    c
}

pub(crate) fn change_lines(c: &Change) -> Vec<String> {
    let mut lines = vec![format!(
        "{} {} {}{}",
        if c.refused.is_some() {
            '!'
        } else {
            c.op.symbol()
        },
        c.plane,
        c.resource,
        c.refused
            .as_deref()
            .map_or(String::new(), |r| format!(" — refused: {r}"))
    )];
    for f in &c.fields {
        let line = match (&f.before, &f.after) {
            (None, Some(a)) => format!("    {}: {a}", f.field),
            (Some(b), Some(a)) => format!("    {}: {b} → {a}", f.field),
            (Some(b), None) => format!("    {}: {b} → (none)", f.field),
            (None, None) => format!("    {}", f.field),
        };
        lines.push(line);
    }
    lines
}

pub(super) fn write_text(
    out: &mut impl Write,
    report: &PlanReport,
    rev: &str,
    color: bool,
) -> std::io::Result<()> {
    let at = report.commit.as_deref().map(short).unwrap_or(rev);
    writeln!(
        out,
        "Tenancy plan for {rev} ({at}): {} tenant(s)",
        report.tenants.len()
    )?;
    for p in &report.planes {
        match (&p.backend, &p.skipped) {
            (Some(b), _) => writeln!(out, "  plane {}: {b}", p.plane)?,
            (None, Some(why)) => writeln!(out, "  plane {}: skipped — {}", p.plane, one_line(why))?,
            _ => {}
        }
    }
    let mut unchanged = 0;
    for t in &report.tenants {
        if t.changes.is_empty() && t.blocked.is_empty() && t.errors.is_empty() {
            unchanged += 1;
            continue;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{} ({}) {}",
            paint(color, "1", &t.tenant),
            t.lifecycle,
            t.file
        )?;
        // Reasons quote policy modules and planes: each stays on its line.
        for reason in &t.blocked {
            writeln!(
                out,
                "  {} {}",
                paint(color, "1;31", "blocked:"),
                one_line(reason)
            )?;
        }
        for e in &t.errors {
            writeln!(out, "  {} {}", paint(color, "1;31", "error:"), one_line(e))?;
        }
        if !t.changes.is_empty() {
            let mut envs: Vec<String> = Vec::new();
            for p in &t.placements {
                envs.push(format!(
                    "{}/{}→{} ({})",
                    p.environment, p.plane, p.target, p.region
                ));
            }
            writeln!(out, "  placement: {}", envs.join(", "))?;
        }
        for c in &t.changes {
            let code = match (c.refused.is_some(), c.op) {
                (true, _) => "1;31",
                (_, Op::Create) => "32",
                (_, Op::Update) => "33",
                (_, Op::Delete) => "31",
            };
            for (i, line) in change_lines(c).iter().enumerate() {
                let line = format!("  {}", one_line(line));
                writeln!(
                    out,
                    "{}",
                    if i == 0 {
                        paint(color, code, &line)
                    } else {
                        line
                    }
                )?;
            }
        }
    }
    for file in &report.removed {
        writeln!(
            out,
            "\nremoved: {file} — its resources are kept; declare `lifecycle: Deleted` with a confirmation to remove them"
        )?;
    }
    let c = counts(report);
    writeln!(out)?;
    writeln!(
        out,
        "Plan: {} to create, {} to change, {} to delete; {} tenant(s) blocked, {} could not be planned, {unchanged} up to date.",
        c.create,
        c.update,
        c.delete,
        report.blocked(),
        report.errors()
    )
}

/// A tenant as `plan --output json` shows it (schemas/plan-report.schema.json): the CLI's own
/// format, so a plane crate's structs can change without changing it.
#[derive(serde::Serialize)]
struct TenantJson<'a> {
    tenant: &'a str,
    file: &'a str,
    lifecycle: &'a str,
    placements: &'a [crate::reconcile::PlacementView],
    changes: Vec<ChangeJson<'a>>,
    blocked: &'a [String],
    errors: &'a [String],
}

#[derive(serde::Serialize)]
struct ChangeJson<'a> {
    plane: &'a str,
    tenant: &'a str,
    environment: &'a str,
    resource: &'a str,
    op: &'static str,
    fields: Vec<FieldJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct FieldJson<'a> {
    field: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
}

impl<'a> TenantJson<'a> {
    fn of(t: &'a crate::reconcile::TenantPlan) -> TenantJson<'a> {
        TenantJson {
            tenant: &t.tenant,
            file: &t.file,
            lifecycle: &t.lifecycle,
            placements: &t.placements,
            changes: t
                .changes
                .iter()
                .map(|c| ChangeJson {
                    plane: c.plane,
                    tenant: &c.tenant,
                    environment: &c.environment,
                    resource: &c.resource,
                    op: match c.op {
                        tenancy_plane::Op::Create => "create",
                        tenancy_plane::Op::Update => "update",
                        tenancy_plane::Op::Delete => "delete",
                    },
                    fields: c
                        .fields
                        .iter()
                        .map(|f| FieldJson {
                            field: &f.field,
                            before: f.before.as_deref(),
                            after: f.after.as_deref(),
                        })
                        .collect(),
                    refused: c.refused.as_deref(),
                })
                .collect(),
            blocked: &t.blocked,
            errors: &t.errors,
        }
    }
}

/// `plan --output json` (schemas/plan-report.schema.json), serialized as it is written: at
/// 100,000 tenants the document is hundreds of megabytes, and building it as a JSON value first
/// doubled the plan's peak memory. Every object's keys in name order, as they always were.
#[derive(serde::Serialize)]
pub(super) struct PlanJson<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    commit: &'a Option<String>,
    findings: ByName<'a, &'a Finding>,
    kind: &'static str,
    planes: ByName<'a, crate::reconcile::PlaneView>,
    removed: &'a [String],
    revision: &'a str,
    summary: serde_json::Value,
    tenants: ByName<'a, crate::reconcile::TenantPlan>,
}

pub(super) fn json_plan<'a>(
    report: &'a PlanReport,
    findings: &'a [&'a Finding],
    rev: &'a str,
) -> PlanJson<'a> {
    let c = counts(report);
    PlanJson {
        api_version: "tenancy.dev/v1",
        commit: &report.commit,
        findings: ByName {
            items: findings,
            shape: serde_json::to_value,
        },
        kind: "Plan",
        planes: ByName {
            items: &report.planes,
            shape: serde_json::to_value,
        },
        removed: &report.removed,
        revision: rev,
        summary: serde_json::json!({
            "create": c.create,
            "update": c.update,
            "delete": c.delete,
            "tenants": report.tenants.len(),
            "blocked": report.blocked(),
            "errors": report.errors(),
        }),
        tenants: ByName {
            items: &report.tenants,
            shape: |t| serde_json::to_value(TenantJson::of(t)),
        },
    }
}
