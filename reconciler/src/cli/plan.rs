//! `tenancy plan` and `tenancy apply`: the diff against live state, and making it so.

use super::{CliError, exit};
use crate::config::Config;
use crate::diagnostics::{self, Finding, Severity, one_line};
use crate::policy::history::Previous;
use crate::reconcile::{
    self, ApplyReport, Evaluation, Inputs, Outcome, PlanReport, Planes, TenantOutcome,
};
use crate::store::Store;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tenancy_plane::{Change, Op};

/// What to read, shared by `plan` and `apply`.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
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
pub enum PlanOutput {
    /// `+ ~ -` per tenant, for a terminal.
    Text,
    /// One JSON document (kind: Plan).
    Json,
    /// Ready to paste as a pull-request comment.
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplyOutput {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Revision to apply.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,

    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short)]
    pub yes: bool,

    /// Report drift without correcting it (also per tenant or plane in the config's
    /// [apply.detect-only]).
    #[arg(long)]
    pub detect_only: bool,

    /// Output format of the summary.
    #[arg(long, short, value_enum, default_value_t = ApplyOutput::Text)]
    pub output: ApplyOutput,
}

/// Exit code of `apply` when some tenant failed (the next run resumes where it stopped).
pub const PARTIAL: u8 = 3;
/// Exit code of `apply --detect-only` when drift was found.
pub const DRIFT: u8 = 4;

fn bundle(source: &SourceArgs, config: &Config) -> Option<PathBuf> {
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

fn inputs(source: &SourceArgs, config: &Config, rev: &str, previous: Vec<Previous>) -> Inputs {
    Inputs {
        path: source.path.clone(),
        max_file_bytes: source.max_file_size,
        bundle: bundle(source, config),
        previous,
        ..Inputs::new(&source.repo, Some(rev))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The last applied manifests of the state store `config` names, when it exists (a SQLite
/// file that was never created holds nothing applied); read-only commands never create one.
pub fn applied_if_recorded(config: &Config) -> Result<Option<Previous>, CliError> {
    let rt = runtime()?;
    rt.block_on(async {
        match Store::open_existing(&config.state_url()).await {
            Ok(Some(store)) => reconcile::applied_baseline(&store).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    })
    .map_err(|e| CliError::State(e.to_string()))
}

/// Let the process exit without waiting for clients to close: the output is written and
/// every change is recorded, and librdkafka's client teardown alone takes ~0.2 s.
fn teardown(rt: tokio::runtime::Runtime, planes: Arc<Planes>) {
    rt.shutdown_background();
    std::thread::spawn(move || drop(planes));
}

/// Validate and govern while the planes of `config` observe what they can without the
/// desired state (on the runtime's worker threads); returns when both are done.
fn evaluate_prefetching(
    rt: tokio::runtime::Runtime,
    config: &Config,
    inputs: &Inputs,
) -> Result<(tokio::runtime::Runtime, Arc<Planes>, Evaluation), CliError> {
    let planes = Arc::new(Planes::from_config(config));
    let p = planes.clone();
    let prefetch = rt.spawn(async move { p.prefetch().await });
    let evaluation = reconcile::evaluate(inputs)?;
    // A failed prefetch only means `plan` observes by itself (and reports what fails).
    let _ = rt.block_on(prefetch);
    Ok((rt, planes, evaluation))
}

pub fn run_plan(args: &PlanArgs, color: bool) -> Result<u8, CliError> {
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
fn relevant_findings<'a>(
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

pub fn run_apply(args: &ApplyArgs, color: bool) -> Result<u8, CliError> {
    let started = Instant::now();
    let mut config = Config::load(args.source.config.as_deref())?;
    if args.detect_only {
        config.apply.detect_only.all = true;
    }
    let root = &config.embedded.root;
    if config.state.url.is_none() {
        std::fs::create_dir_all(root)?;
    }
    let rt = runtime()?;
    let store = rt
        .block_on(Store::open(&config.state_url()))
        .map_err(|e| CliError::State(e.to_string()))?;
    // Every change is judged against what is applied, never against an older commit.
    let applied = rt
        .block_on(reconcile::applied_baseline(&store))
        .map_err(|e| CliError::State(e.to_string()))?;
    let inputs = inputs(&args.source, &config, &args.rev, vec![applied]);
    let (rt, planes, evaluation) = evaluate_prefetching(rt, &config, &inputs)?;
    let report = rt.block_on(reconcile::plan(&planes, &evaluation, None));
    let findings = relevant_findings(&evaluation, None);
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !args.yes && !config.apply.detect_only.all {
        if !interactive {
            eprintln!(
                "error: `tenancy apply` changes live resources; pass --yes to apply without a prompt \
                 (or run `tenancy plan` first to see the changes)"
            );
            return Ok(exit::FAILURE);
        }
        let mut err = crate::diagnostics::Terminal::new(std::io::stderr().lock());
        write_findings(&mut err, &evaluation, &findings, color)?;
        write_text(&mut err, &report, &args.rev, color)?;
        if report.changes() == 0 {
            writeln!(err, "Nothing to apply.")?;
        } else {
            write!(err, "Apply these changes? Only `yes` is accepted: ")?;
            err.flush()?;
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if answer.trim() != "yes" {
                writeln!(err, "Apply cancelled; nothing was changed.")?;
                return Ok(exit::FAILURE);
            }
        }
    }
    if args.yes && args.output == ApplyOutput::Text {
        // As `terraform apply -auto-approve` does: what is about to happen, then the outcome.
        let mut out = crate::diagnostics::Terminal::new(std::io::stdout().lock());
        write_text(&mut out, &report, &args.rev, color)?;
        writeln!(out)?;
    }
    let bar = progress_bar(report.tenants.len() as u64, interactive);
    let tick = |o: &TenantOutcome| {
        bar.inc(1);
        if o.outcome != Outcome::Applied || o.applied > 0 {
            bar.set_message(format!("{} {:?}", o.tenant, o.outcome));
        }
        // Off a terminal, long runs report every 10 % (short ones only print the summary).
        let total = bar.length().unwrap_or(0);
        if bar.is_hidden() && total >= 50 {
            let done = bar.position();
            if done % total.div_ceil(10) == 0 || done == total {
                eprintln!("apply: {done}/{total} tenants");
            }
        }
    };
    let applied = rt
        .block_on(reconcile::apply(
            &planes,
            &evaluation,
            &report,
            &store,
            &config.apply.detect_only,
            config.apply.concurrency,
            &tick,
        ))
        .map_err(|e| CliError::State(e.to_string()))?;
    bar.finish_and_clear();
    // Nothing is silent: files that could not be read, tenants no file declares any more.
    let (unreadable, absent) = rt
        .block_on(async {
            let n = reconcile::absent::record_unreadable(&store, &evaluation).await?;
            let correlation = reconcile::correlation_id(&evaluation);
            let absent =
                reconcile::absent::record_absent(&store, &evaluation, None, &correlation).await?;
            Ok::<_, reconcile::ApplyError>((n, absent))
        })
        .map_err(|e| CliError::State(e.to_string()))?;
    if unreadable > 0 {
        eprintln!(
            "warning: {unreadable} file(s) could not be read; their tenants keep their last applied state (see the findings above, or `tenancy status`)"
        );
    }
    for a in &absent {
        let (status, why) = a.status(evaluation.commit().unwrap_or(""));
        eprintln!(
            "{}",
            crate::diagnostics::printable(&format!("warning: {} is {status}: {why}", a.tenant))
        );
    }
    // The commit carries its decisions and outcome (`git log --notes=tenancy`), rendered from
    // the state store — with any commit an earlier, interrupted run left unannotated.
    if config.apply.notes
        && let Err(e) = rt.block_on(reconcile::notes::write_notes(&store, &args.source.repo))
    {
        eprintln!(
            "{}",
            crate::diagnostics::printable(&format!("warning: could not write the git notes: {e}"))
        );
    }
    // Publish what this run (and any earlier one) recorded; unpublished events wait.
    let relayed = config
        .events
        .kafka
        .as_ref()
        .map(|k| rt.block_on(reconcile::relay(&store, k, config.events.content_mode)));
    if let Some(r) = &relayed {
        match &r.error {
            None => eprintln!("events: {} published", r.published),
            Some(e) => eprintln!(
                "events: {} published, {} waiting in the outbox ({e}); the next run publishes them",
                r.published, r.pending
            ),
        }
    }
    let mut out = super::report_out(args.output == ApplyOutput::Json);
    match args.output {
        ApplyOutput::Json => {
            #[derive(Serialize)]
            struct Json<'a> {
                #[serde(rename = "apiVersion")]
                api_version: &'static str,
                kind: &'static str,
                commit: Option<&'a str>,
                summary: Summary,
                tenants: &'a [TenantOutcome],
                /// Applied tenants the revision no longer declares (orphaned, or unreadable).
                absent: Vec<serde_json::Value>,
                findings: &'a [&'a Finding],
            }
            let sha = evaluation.commit().unwrap_or("");
            let json = Json {
                api_version: "tenancy.dev/v1",
                kind: "ApplyReport",
                commit: applied.commit.as_deref(),
                summary: Summary::of(&applied),
                tenants: &applied.tenants,
                absent: absent
                    .iter()
                    .map(|a| {
                        let (status, reason) = a.status(sha);
                        serde_json::json!({ "tenant": a.tenant, "status": status, "reason": reason })
                    })
                    .collect(),
                findings: &findings,
            };
            write_json(&mut out, &json)?;
        }
        ApplyOutput::Text => {
            write_findings(&mut out, &evaluation, &findings, color)?;
            for t in &applied.tenants {
                if t.outcome != Outcome::Applied {
                    writeln!(
                        out,
                        "{} {}: {}",
                        paint(color, "1;33", &format!("{:?}", t.outcome).to_lowercase()),
                        t.tenant,
                        one_line(t.reason.as_deref().unwrap_or_default())
                    )?;
                }
            }
            let s = Summary::of(&applied);
            writeln!(
                out,
                "Apply {}: {} tenant(s) applied ({} change(s)), {} blocked, {} failed, {} drifted ({} change(s) not applied) at {} [{:.2}s]",
                if s.failed > 0 {
                    "incomplete"
                } else {
                    "complete"
                },
                s.applied,
                s.changes,
                s.blocked,
                s.failed,
                s.drifted,
                s.detected,
                short(applied.commit.as_deref().unwrap_or(&args.rev)),
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    out.flush()?;
    teardown(rt, planes);
    let s = Summary::of(&applied);
    let refused = findings.iter().any(|f| f.severity == Severity::Error) || s.blocked > 0;
    Ok(if s.failed > 0 {
        PARTIAL
    } else if refused {
        exit::FINDINGS
    } else if s.drifted > 0 {
        DRIFT
    } else {
        exit::OK
    })
}

#[derive(Serialize)]
struct Summary {
    applied: usize,
    blocked: usize,
    failed: usize,
    drifted: usize,
    changes: usize,
    detected: usize,
}

impl Summary {
    fn of(r: &ApplyReport) -> Summary {
        Summary {
            applied: r.count(Outcome::Applied),
            blocked: r.count(Outcome::Blocked),
            failed: r.count(Outcome::Failed),
            drifted: r.count(Outcome::Drifted),
            changes: r.tenants.iter().map(|t| t.applied).sum(),
            detected: r.tenants.iter().map(|t| t.detected).sum(),
        }
    }
}

fn progress_bar(len: u64, interactive: bool) -> indicatif::ProgressBar {
    if interactive {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} applying [{bar:30}] {pos}/{len} tenants {elapsed} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_length(len);
        bar
    }
}

/// One pretty-printed JSON document and a newline: every `--output json`.
pub(crate) fn write_json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)
}

pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `s` in colour `code` for a [`crate::diagnostics::Terminal`] (plain when `color` is off).
pub(crate) fn paint(color: bool, code: &str, s: &str) -> String {
    use crate::diagnostics::sgr;
    if color {
        format!("{}{s}{}", sgr(code), sgr("0"))
    } else {
        s.to_owned()
    }
}

fn write_findings(
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

fn write_text(
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

fn json_plan<'a>(
    report: &'a PlanReport,
    findings: &'a [&'a Finding],
    rev: &'a str,
) -> serde_json::Value {
    let c = counts(report);
    serde_json::json!({
        "apiVersion": "tenancy.dev/v1",
        "kind": "Plan",
        "revision": rev,
        "commit": report.commit,
        "summary": {
            "create": c.create,
            "update": c.update,
            "delete": c.delete,
            "tenants": report.tenants.len(),
            "blocked": report.blocked(),
            "errors": report.errors(),
        },
        "planes": report.planes,
        "tenants": report.tenants,
        "removed": report.removed,
        "findings": findings,
    })
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these tenants.
    pub tenants: Vec<String>,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ApplyOutput::Text)]
    pub output: ApplyOutput,
}

/// The state store of a configuration, for read commands; `None` (after saying so) when the
/// embedded default has never been created, rather than creating an empty one.
pub(crate) fn open_state(
    config: Option<&std::path::Path>,
) -> Result<Option<(tokio::runtime::Runtime, Store)>, CliError> {
    let config = Config::load(config)?;
    let url = config.state_url();
    if config.state.url.is_none() && !config.embedded.root.join("state.db").is_file() {
        eprintln!(
            "no state store at {url}: nothing has been applied yet (run `tenancy apply`, or pass --config)"
        );
        return Ok(None);
    }
    let rt = runtime()?;
    let store = rt
        .block_on(Store::open(&url))
        .map_err(|e| CliError::State(e.to_string()))?;
    Ok(Some((rt, store)))
}

/// The state store of a configuration for a command that writes to it (created if needed).
pub(crate) fn open_state_for_write(
    config: Option<&std::path::Path>,
) -> Result<(tokio::runtime::Runtime, Store), CliError> {
    let config = Config::load(config)?;
    if config.state.url.is_none() {
        std::fs::create_dir_all(&config.embedded.root)?;
    }
    let rt = runtime()?;
    let store = rt
        .block_on(Store::open(&config.state_url()))
        .map_err(|e| CliError::State(e.to_string()))?;
    Ok((rt, store))
}

/// `tenancy status`: each tenant's last outcome, from the state store.
pub fn run_status(args: &StatusArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let statuses = rt
        .block_on(store.statuses())
        .map_err(|e| CliError::State(e.to_string()))?;
    // The repository as a whole: a refused head, files that could not be read.
    let state = |key: &str| -> Result<Option<serde_json::Value>, CliError> {
        Ok(rt
            .block_on(store.state_value(key))
            .map_err(|e| CliError::State(e.to_string()))?
            .and_then(|v| serde_json::from_str(&v).ok()))
    };
    let refused = state(crate::daemon::REFUSED)?;
    let unreadable = state(reconcile::absent::REPOSITORY_FINDINGS)?
        .filter(|v| v["files"].as_array().is_some_and(|f| !f.is_empty()));
    let wanted: BTreeSet<&str> = args.tenants.iter().map(String::as_str).collect();
    let shown: Vec<_> = statuses
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(s.tenant_id.as_str()))
        .collect();
    let missing: Vec<&&str> = wanted
        .iter()
        .filter(|w| !statuses.iter().any(|s| s.tenant_id == **w))
        .collect();
    let mut out = super::report_out(args.output == ApplyOutput::Json);
    match args.output {
        ApplyOutput::Json => {
            let json = serde_json::json!({
                "apiVersion": "tenancy.dev/v1",
                "kind": "StatusList",
                "repository": { "refused": refused, "unreadable": unreadable },
                "tenants": shown,
                "unknown": missing,
            });
            write_json(&mut out, &json)?;
        }
        ApplyOutput::Text => {
            if let Some(r) = &refused {
                let since = r["since"].as_i64().unwrap_or(0).max(0) as u64;
                writeln!(
                    out,
                    "{} since {}: {}\n",
                    paint(color, "31", "repository refused"),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(since)
                    ),
                    one_line(r["reason"].as_str().unwrap_or_default())
                )?;
            }
            if let Some(u) = &unreadable {
                let files = u["files"].as_array().map(Vec::as_slice).unwrap_or_default();
                writeln!(
                    out,
                    "{} at {}: {} file(s) could not be read; their tenants keep their last applied state",
                    paint(color, "31", "repository"),
                    u["commit"].as_str().map(short).unwrap_or("-"),
                    files.len()
                )?;
                for f in files {
                    writeln!(
                        out,
                        "  {}: {}",
                        one_line(f["file"].as_str().unwrap_or_default()),
                        one_line(f["why"].as_str().unwrap_or_default())
                    )?;
                }
                writeln!(out)?;
            }
            writeln!(
                out,
                "{:<24} {:<11} {:<12} {:<12} REASON",
                "TENANT", "STATUS", "APPLIED", "ATTEMPTED"
            )?;
            for s in &shown {
                let code = match s.status.as_str() {
                    "synced" => "32",
                    "drifted" | "progressing" | "orphaned" => "33",
                    _ => "31",
                };
                let reason = s
                    .blocked_reason
                    .as_deref()
                    .or(s.error.as_deref())
                    .map(one_line)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<24} {} {:<12} {:<12} {reason}",
                    s.tenant_id,
                    paint(color, code, &format!("{:<11}", s.status)),
                    s.last_applied_commit.as_deref().map(short).unwrap_or("-"),
                    s.last_attempted_commit.as_deref().map(short).unwrap_or("-"),
                )?;
            }
            for m in &missing {
                writeln!(out, "{m:<24} unknown  (never reconciled)")?;
            }
        }
    }
    out.flush()?;
    Ok(if missing.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this tenant's events.
    #[arg(long)]
    pub tenant: Option<String>,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Keep printing new events as they are recorded (Ctrl-C to stop).
    #[arg(long, short)]
    pub follow: bool,

    /// At most this many events (the oldest first; with --follow, per poll).
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,

    /// Output format: text, or JSON lines (one CloudEvent per line).
    #[arg(long, short, value_enum, default_value_t = ApplyOutput::Text)]
    pub output: ApplyOutput,
}

/// `tenancy events`: the outbox, i.e. every event the reconciler has recorded, in order.
pub fn run_events(args: &EventsArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let mut after = None;
    loop {
        let events = rt
            .block_on(store.events(args.tenant.as_deref(), after.clone(), args.limit))
            .map_err(|e| CliError::State(e.to_string()))?;
        let mut out = super::report_out(args.output == ApplyOutput::Json);
        for e in &events {
            match args.output {
                ApplyOutput::Json => writeln!(out, "{}", e.event)?,
                ApplyOutput::Text => writeln!(
                    out,
                    "{} {:<24} #{:<4} {} {}{}",
                    e.event["time"].as_str().unwrap_or_default(),
                    e.tenant_id,
                    e.sequence,
                    paint(color, "1", &format!("{:<18}", e.event_type)),
                    e.event["data"]["reason"]
                        .as_str()
                        .map(|r| format!("{} ", one_line(r)))
                        .unwrap_or_default(),
                    if e.published_at.is_some() {
                        ""
                    } else {
                        "(not yet published)"
                    }
                )?,
            }
        }
        out.flush()?;
        if let Some(last) = events.last() {
            after = Some((last.created_at, last.tenant_id.clone(), last.sequence));
        }
        if !args.follow {
            return Ok(exit::OK);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The tenant.
    pub tenant: String,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ApplyOutput::Text)]
    pub output: ApplyOutput,
}

/// `tenancy history TENANT`: the commits that concerned a tenant, what each did (audit) and
/// the policy decisions on each, from the state store.
pub fn run_history(args: &HistoryArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let (status, audit, decisions) = rt
        .block_on(async {
            Ok::<_, crate::store::StoreError>((
                store.status(&args.tenant).await?,
                store.audit(&args.tenant).await?,
                store.decisions(&args.tenant).await?,
            ))
        })
        .map_err(|e| CliError::State(e.to_string()))?;
    let Some(status) = status else {
        eprintln!("tenant `{}` has never been reconciled", args.tenant);
        return Ok(exit::FINDINGS);
    };
    // Commits in the order they were first decided on or audited.
    let mut commits: Vec<String> = Vec::new();
    for c in decisions
        .iter()
        .map(|d| d.commit_sha.clone())
        .chain(audit.iter().filter_map(|a| a.commit_sha.clone()))
    {
        if !commits.contains(&c) {
            commits.push(c);
        }
    }
    let mut out = super::report_out(args.output == ApplyOutput::Json);
    match args.output {
        ApplyOutput::Json => {
            let json = serde_json::json!({
                "apiVersion": "tenancy.dev/v1",
                "kind": "TenantHistory",
                "tenant": args.tenant,
                "status": status,
                "commits": commits.iter().map(|c| serde_json::json!({
                    "commit": c,
                    "audit": audit.iter().filter(|a| a.commit_sha.as_deref() == Some(c)).collect::<Vec<_>>(),
                    "decisions": decisions.iter().filter(|d| &d.commit_sha == c).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            write_json(&mut out, &json)?;
        }
        ApplyOutput::Text => {
            writeln!(
                out,
                "{} — {} (last applied {}, last attempted {})",
                paint(color, "1", &args.tenant),
                status.status,
                status
                    .last_applied_commit
                    .as_deref()
                    .map(short)
                    .unwrap_or("-"),
                status
                    .last_attempted_commit
                    .as_deref()
                    .map(short)
                    .unwrap_or("-"),
            )?;
            for c in &commits {
                writeln!(out, "\ncommit {c}")?;
                for a in audit.iter().filter(|a| a.commit_sha.as_deref() == Some(c)) {
                    writeln!(
                        out,
                        "  {} ({}) by {}",
                        a.event_type,
                        a.outcome,
                        one_line(&a.actor)
                    )?;
                }
                for d in decisions.iter().filter(|d| &d.commit_sha == c) {
                    let verdicts = d.verdicts.as_array().map_or(0, Vec::len);
                    writeln!(
                        out,
                        "  policy {} sha256:{} ({}): {}{}",
                        d.policy,
                        short(&d.digest),
                        d.mode,
                        if d.blocks {
                            paint(color, "31", &format!("denied ({verdicts} violation(s))"))
                        } else if verdicts > 0 {
                            format!("{verdicts} finding(s), not blocking")
                        } else {
                            "allow".to_owned()
                        },
                        if d.against.is_empty() {
                            String::new()
                        } else {
                            format!(", judged against {}", d.against)
                        }
                    )?;
                }
            }
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9090; port 0 picks one).
    #[arg(long, value_name = "ADDR", env = "TENANCY_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Poll the repository at least this often, in seconds (a watcher usually reacts sooner).
    #[arg(long, default_value = "2", value_parser = super::parse_seconds, value_name = "SECONDS")]
    pub interval: std::time::Duration,

    /// Reconcile every tenant (and so correct drift) at least this often, in seconds.
    #[arg(long, default_value = "300", value_parser = super::parse_seconds, value_name = "SECONDS")]
    pub resync: std::time::Duration,
}

/// `tenancy run`.
pub fn run_daemon(args: &RunArgs) -> Result<u8, CliError> {
    let config = Config::load(args.source.config.as_deref())?;
    let opts = crate::daemon::Options {
        repo: args.source.repo.clone(),
        path: args.source.path.clone(),
        bundle: bundle(&args.source, &config),
        max_file_bytes: args.source.max_file_size,
        config,
        listen: args.listen,
        interval: args.interval,
        resync: args.resync,
    };
    crate::daemon::limit_malloc_arenas();
    let rt = runtime()?;
    let result = rt.block_on(crate::daemon::run(opts));
    // Stop promptly: what is still in flight (a webhook attempt, a relay batch waiting for a
    // broker) is left pending in the store and resumed by the next start.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    Ok(exit::OK)
}
