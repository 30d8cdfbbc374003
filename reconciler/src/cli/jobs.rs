//! `tenancy jobs`: lifecycle jobs and their steps, from the state store.

use super::Output;
use super::output::{paint, short, write_json};
use super::state::open_state;
use super::{CliError, exit};
use crate::store::{JobState, StepState};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    /// Only this tenant's jobs.
    pub tenant: Option<String>,

    /// Show one job with its steps and log.
    #[arg(long, value_name = "JOB_ID", conflicts_with = "tenant")]
    pub job: Option<String>,

    /// At most this many jobs, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn state_color(state: JobState) -> &'static str {
    match state {
        JobState::Completed => "32",
        JobState::Running | JobState::Queued => "33",
        JobState::Failed => "31",
    }
}

pub(crate) fn run(args: &JobsArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let mut out = super::report_out(args.output == Output::Json);
    if let Some(id) = &args.job {
        let job = rt.block_on(store.job(id)).map_err(CliError::State)?;
        let Some(job) = job else {
            eprintln!("no job `{id}` (list them with `tenancy jobs`)");
            return Ok(exit::FINDINGS);
        };
        match args.output {
            Output::Json => write_json(&mut out, &job)?,
            Output::Text => {
                writeln!(
                    out,
                    "job {} — {} {} for commit {}: {} ({:.0} %)",
                    job.job_id,
                    job.action,
                    job.tenant_id,
                    job.commit_sha.as_deref().map(short).unwrap_or("-"),
                    paint(color, state_color(job.state), job.state.as_str()),
                    job.progress * 100.0
                )?;
                if let Some(e) = &job.error {
                    writeln!(out, "  error: {}", crate::diagnostics::one_line(e))?;
                }
                for s in &job.steps {
                    let mark = match s.state {
                        StepState::Completed => "✓",
                        StepState::Failed => "✗",
                        StepState::Pending => "·",
                    };
                    write!(out, "  {mark} {}", s.name)?;
                    match &s.error {
                        Some(e) => writeln!(out, " — {}", crate::diagnostics::one_line(e))?,
                        None => writeln!(out)?,
                    }
                }
                if !job.logs.is_empty() {
                    writeln!(out, "log:")?;
                    for line in job.logs.lines() {
                        writeln!(out, "  {line}")?;
                    }
                }
            }
        }
        out.flush()?;
        return Ok(exit::OK);
    }
    let jobs = rt
        .block_on(store.jobs(args.tenant.as_deref(), args.limit))
        .map_err(CliError::State)?;
    match args.output {
        Output::Json => write_json(
            &mut out,
            &serde_json::json!({
                "apiVersion": "tenancy.dev/v1",
                "kind": "JobList",
                "jobs": jobs,
            }),
        )?,
        Output::Text => {
            writeln!(
                out,
                "{:<32} {:<16} {:<14} {:<10} {:>5} COMMIT",
                "JOB", "TENANT", "ACTION", "STATE", "DONE"
            )?;
            for j in &jobs {
                writeln!(
                    out,
                    "{:<32} {:<16} {:<14} {} {:>4.0}% {}",
                    j.job_id,
                    j.tenant_id,
                    j.action,
                    paint(
                        color,
                        state_color(j.state),
                        &format!("{:<10}", j.state.as_str())
                    ),
                    j.progress * 100.0,
                    j.commit_sha.as_deref().map(short).unwrap_or("-")
                )?;
            }
            if jobs.is_empty() {
                writeln!(out, "(no jobs)")?;
            }
        }
    }
    out.flush()?;
    Ok(exit::OK)
}
