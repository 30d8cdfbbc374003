//! `tenancy apply`: making the plan so, tenant by tenant, with progress and a summary.

use super::exit::{DRIFT, PARTIAL};
use super::output::{paint, short, write_json};
use super::plan::{
    SourceArgs, evaluate_prefetching, inputs, relevant_findings, runtime, teardown, write_findings,
    write_text,
};
use super::{CliError, Output, exit};
use crate::config::Config;
use crate::diagnostics::{Finding, Severity, one_line};
use crate::reconcile::{self, ApplyReport, Outcome, TenantOutcome};
use crate::store::Store;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
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
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `apply`'s observer: a progress bar on a terminal, a line every 10 % off one.
struct Progress<'a>(&'a indicatif::ProgressBar);

impl reconcile::pass::Observer for Progress<'_> {
    fn applied(&self, o: &TenantOutcome) {
        let bar = self.0;
        bar.inc(1);
        if o.outcome != Outcome::Applied || o.applied > 0 {
            bar.set_message(format!("{} {:?}", o.tenant, o.outcome));
        }
        // Off a terminal, long runs report every 10 % (short ones only print the summary).
        let total = bar.length().unwrap_or(0);
        if bar.is_hidden() && total >= 50 {
            let done = bar.position();
            if done.is_multiple_of(total.div_ceil(10)) || done == total {
                eprintln!("apply: {done}/{total} tenants");
            }
        }
    }
}

pub(crate) fn run_apply(args: &ApplyArgs, color: bool) -> Result<u8, CliError> {
    let started = Instant::now();
    let mut config = Config::load(args.source.config.as_deref())?;
    if args.detect_only {
        config.apply.detect_only.all = true;
    }
    let root = &config.embedded.root;
    if config.state.url.is_none() {
        std::fs::create_dir_all(root).map_err(CliError::system(format!(
            "cannot create {}",
            root.display()
        )))?;
    }
    let rt = runtime()?;
    let store = rt
        .block_on(Store::open(&config.state_url()))
        .map_err(CliError::State)?;
    // Every change is judged against what is applied, never against an older commit.
    let applied = rt
        .block_on(reconcile::applied_baseline(&store))
        .map_err(CliError::State)?;
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
    if args.yes && args.output == Output::Text {
        // As `terraform apply -auto-approve` does: what is about to happen, then the outcome.
        let mut out = crate::diagnostics::Terminal::new(std::io::stdout().lock());
        write_text(&mut out, &report, &args.rev, color)?;
        writeln!(out)?;
    }
    let bar = progress_bar(report.tenants.len() as u64, interactive);
    let pass = reconcile::pass::Pass {
        planes: &planes,
        store: &store,
        config: &config,
        repo: &args.source.repo,
        selected: None,
        absent_in: None,
        publish: match &config.events.kafka {
            Some(k) => reconcile::pass::Publish::Relay(k, config.events.content_mode),
            None => reconcile::pass::Publish::Outbox,
        },
    };
    let done = rt.block_on(reconcile::pass::run_planned(
        &pass,
        &evaluation,
        report,
        &Progress(&bar),
    ))?;
    bar.finish_and_clear();
    let reconcile::pass::PassReport {
        plan: _,
        applied,
        unreadable,
        absent,
        notes_error,
        relayed,
    } = done;
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
    if let Some(e) = notes_error {
        eprintln!(
            "{}",
            crate::diagnostics::printable(&format!("warning: could not write the git notes: {e}"))
        );
    }
    if let Some(r) = &relayed {
        match &r.error {
            None => eprintln!("events: {} published", r.published),
            Some(e) => eprintln!(
                "events: {} published, {} waiting in the outbox ({e}); the next run publishes them",
                r.published, r.pending
            ),
        }
    }
    let mut out = super::report_out(args.output == Output::Json);
    match args.output {
        Output::Json => {
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
        Output::Text => {
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
