//! `tenancy status`, `tenancy events`, `tenancy history`: what the state store recorded.

use super::output::{ByName, paint, short, write_json};
use super::plan::runtime;
use super::{CliError, Output, exit};
use crate::config::Config;
use crate::diagnostics::one_line;
use crate::reconcile::{self};
use crate::store::Store;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Only these tenants.
    pub tenants: Vec<String>,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
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
    let store = rt.block_on(Store::open(&url)).map_err(CliError::State)?;
    Ok(Some((rt, store)))
}

/// The state store of a configuration for a command that writes to it (created if needed).
pub(crate) fn open_state_for_write(
    config: Option<&std::path::Path>,
) -> Result<(tokio::runtime::Runtime, Store), CliError> {
    let config = Config::load(config)?;
    if config.state.url.is_none() {
        std::fs::create_dir_all(&config.embedded.root).map_err(CliError::system(format!(
            "cannot create {}",
            config.embedded.root.display()
        )))?;
    }
    let rt = runtime()?;
    let store = rt
        .block_on(Store::open(&config.state_url()))
        .map_err(CliError::State)?;
    Ok((rt, store))
}

/// `tenancy status`: each tenant's last outcome, from the state store.
pub(crate) fn run_status(args: &StatusArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let statuses = rt.block_on(store.statuses()).map_err(CliError::State)?;
    // The repository as a whole: a refused head, files that could not be read.
    let state = |key: &str| -> Result<Option<serde_json::Value>, CliError> {
        Ok(rt
            .block_on(store.state_value(key))
            .map_err(CliError::State)?
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
    let mut out = super::report_out(args.output == Output::Json);
    match args.output {
        Output::Json => {
            // Written as it is serialized (a status per tenant: 100,000 of them, say), keys in
            // name order as they always were.
            #[derive(serde::Serialize)]
            struct Json<'a> {
                #[serde(rename = "apiVersion")]
                api_version: &'static str,
                kind: &'static str,
                repository: serde_json::Value,
                tenants: ByName<'a, &'a crate::store::Status>,
                unknown: &'a [&'a &'a str],
            }
            let json = Json {
                api_version: "tenancy.dev/v1",
                kind: "StatusList",
                repository: serde_json::json!({ "refused": refused, "unreadable": unreadable }),
                tenants: ByName {
                    items: &shown,
                    shape: serde_json::to_value,
                },
                unknown: &missing,
            };
            write_json(&mut out, &json)?;
        }
        Output::Text => {
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
                use crate::store::ReconcileStatus as S;
                let code = match s.status {
                    S::Synced => "32",
                    S::Drifted | S::Progressing | S::Orphaned => "33",
                    S::Blocked | S::Failed => "31",
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
                    paint(color, code, &format!("{:<11}", s.status.as_str())),
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
pub(crate) struct EventsArgs {
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
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `tenancy events`: the outbox, i.e. every event the reconciler has recorded, in order.
pub(crate) fn run_events(args: &EventsArgs, color: bool) -> Result<u8, CliError> {
    let Some((rt, store)) = open_state(args.config.as_deref())? else {
        return Ok(exit::FAILURE);
    };
    let mut after = None;
    loop {
        let events = rt
            .block_on(store.events(args.tenant.as_deref(), after.clone(), args.limit))
            .map_err(CliError::State)?;
        let mut out = super::report_out(args.output == Output::Json);
        for e in &events {
            match args.output {
                Output::Json => writeln!(out, "{}", e.event)?,
                Output::Text => writeln!(
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
pub(crate) struct HistoryArgs {
    /// The tenant.
    pub tenant: String,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `tenancy history TENANT`: the commits that concerned a tenant, what each did (audit) and
/// the policy decisions on each, from the state store.
pub(crate) fn run_history(args: &HistoryArgs, color: bool) -> Result<u8, CliError> {
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
        .map_err(CliError::State)?;
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
    let mut out = super::report_out(args.output == Output::Json);
    match args.output {
        Output::Json => {
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
        Output::Text => {
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
