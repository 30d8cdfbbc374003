//! `tenancy webhooks`: register signed webhooks, inspect deliveries, requeue dead letters.

use super::Output;
use super::output::{paint, write_json};
use super::state::{open_state, open_state_for_write};
use super::{CliError, exit};
use crate::store::RetryPolicy;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct WebhooksArgs {
    #[command(subcommand)]
    pub command: WebhooksCommand,

    /// The reconciler's configuration (for the state store URL).
    #[arg(long, global = true, value_name = "FILE", env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Register (or update) a webhook: every event of a tenant (or of all, `--tenant '*'`)
    /// whose type is subscribed is POSTed to the URL, signed with the secret.
    Add {
        /// The endpoint (http or https).
        #[arg(long)]
        url: String,
        /// A tenant id, or `*` for every tenant.
        #[arg(long, default_value = "*")]
        tenant: String,
        /// Event types to deliver (repeat or comma-separate); all when omitted.
        #[arg(long = "event", value_delimiter = ',')]
        events: Vec<String>,
        /// Read the signing secret from this environment variable.
        #[arg(long, value_name = "NAME", conflicts_with = "secret_file")]
        secret_env: Option<String>,
        /// Read the signing secret from this file (trailing newline ignored).
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
        /// Attempts before a delivery is dead-lettered.
        #[arg(long, default_value_t = 8)]
        max_attempts: i64,
        /// Wait after the first failed attempt, in milliseconds (doubled after each further one).
        #[arg(long, default_value_t = 1000)]
        initial_backoff_ms: i64,
    },
    /// The registered webhooks (secrets are never shown).
    List,
    /// Remove a webhook and its undelivered deliveries.
    Remove { webhook_id: String },
    /// Deliveries, newest first.
    Deliveries {
        /// Only deliveries in this state.
        #[arg(long, value_enum)]
        state: Option<crate::store::DeliveryState>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Give dead-lettered deliveries another round of attempts (the daemon sends them).
    Requeue {
        /// One delivery; all dead ones with --all.
        #[arg(required_unless_present = "all")]
        delivery_id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

use crate::webhooks::EVENT_TYPES;

fn secret(env: Option<&str>, file: Option<&std::path::Path>) -> Result<String, CliError> {
    let value = match (env, file) {
        (Some(name), _) => std::env::var(name).map_err(|_| {
            CliError::Usage(format!(
                "--secret-env: environment variable `{name}` is not set"
            ))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--secret-file {}: {e}", path.display())))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => {
            return Err(CliError::Usage(
                "a signing secret is required: --secret-env NAME or --secret-file PATH".into(),
            ));
        }
    };
    if value.chars().count() < 8 {
        return Err(CliError::Usage(
            "the signing secret must be at least 8 characters (32 or more random ones recommended)"
                .into(),
        ));
    }
    Ok(value)
}

pub(crate) fn run(args: &WebhooksArgs, color: bool) -> Result<u8, CliError> {
    // Check the arguments before touching the store.
    let registration = match &args.command {
        WebhooksCommand::Add {
            url,
            tenant,
            events,
            secret_env,
            secret_file,
            max_attempts,
            initial_backoff_ms,
        } => {
            // The same target rules as the API and every delivery ([webhooks] in the config).
            let config = crate::config::Config::load(args.config.as_deref())?;
            crate::webhooks::guard::Guard::new(&config.webhooks, None)
                .check_url(url)
                .map_err(|why| CliError::Usage(format!("--url `{url}`: {why}")))?;
            if tenant != "*" {
                crate::manifest::ids::TenantId::parse(tenant)
                    .map_err(|e| CliError::Usage(format!("--tenant: {}", e.explained())))?;
            }
            if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
                return Err(CliError::Usage(format!(
                    "--event `{bad}` is not an event type (one of: {})",
                    EVENT_TYPES.join(", ")
                )));
            }
            if !(1..=100).contains(max_attempts) || *initial_backoff_ms < 1 {
                return Err(CliError::Usage(
                    "--max-attempts must be 1–100 and --initial-backoff-ms positive".into(),
                ));
            }
            Some((
                secret(secret_env.as_deref(), secret_file.as_deref())?,
                RetryPolicy {
                    max_attempts: *max_attempts,
                    initial_backoff_ms: *initial_backoff_ms,
                    ..RetryPolicy::default()
                },
            ))
        }
        _ => None,
    };
    let (rt, store) = if registration.is_some() {
        open_state_for_write(args.config.as_deref())?
    } else {
        let Some(opened) = open_state(args.config.as_deref())? else {
            return Ok(exit::FAILURE);
        };
        opened
    };
    let state = CliError::State;
    let mut out = super::report_out(args.output == Output::Json);
    let json = args.output == Output::Json;
    match &args.command {
        WebhooksCommand::Add {
            url,
            tenant,
            events,
            ..
        } => {
            let (secret, retry) = registration.expect("checked above");
            let hook = rt
                .block_on(store.put_webhook(tenant, url, events, &secret, &retry))
                .map_err(state)?;
            if json {
                write_json(&mut out, &hook)?;
            } else {
                writeln!(
                    out,
                    "registered {} → {} (tenant {}, events {})",
                    hook.webhook_id,
                    hook.url,
                    hook.tenant_id,
                    if hook.events.is_empty() {
                        "all".to_owned()
                    } else {
                        hook.events.join(",")
                    }
                )?;
            }
        }
        WebhooksCommand::List => {
            let hooks = rt.block_on(store.webhooks()).map_err(state)?;
            if json {
                write_json(
                    &mut out,
                    &serde_json::json!({"apiVersion": "tenancy.dev/v1", "kind": "WebhookList", "webhooks": hooks}),
                )?;
            } else {
                writeln!(
                    out,
                    "{:<20} {:<16} {:<40} EVENTS",
                    "WEBHOOK", "TENANT", "URL"
                )?;
                for h in &hooks {
                    writeln!(
                        out,
                        "{:<20} {:<16} {:<40} {}",
                        h.webhook_id,
                        h.tenant_id,
                        h.url,
                        if h.events.is_empty() {
                            "all".to_owned()
                        } else {
                            h.events.join(",")
                        }
                    )?;
                }
            }
        }
        WebhooksCommand::Remove { webhook_id } => {
            if !rt
                .block_on(store.remove_webhook(webhook_id))
                .map_err(state)?
            {
                eprintln!("no webhook `{webhook_id}` (list them with `tenancy webhooks list`)");
                return Ok(exit::FINDINGS);
            }
            if !json {
                writeln!(out, "removed {webhook_id}")?;
            } else {
                write_json(&mut out, &serde_json::json!({"removed": webhook_id}))?;
            }
        }
        WebhooksCommand::Deliveries { state: s, limit } => {
            let list = rt.block_on(store.deliveries(*s, *limit)).map_err(state)?;
            if json {
                write_json(
                    &mut out,
                    &serde_json::json!({"apiVersion": "tenancy.dev/v1", "kind": "DeliveryList", "deliveries": list}),
                )?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<20} {:<12} {:<10} {:>8} LAST ERROR",
                    "DELIVERY", "WEBHOOK", "TENANT", "STATE", "ATTEMPTS"
                )?;
                for d in &list {
                    use crate::store::DeliveryState as D;
                    let code = match d.state {
                        D::Delivered => "32",
                        D::Pending => "33",
                        D::Dead => "31",
                    };
                    writeln!(
                        out,
                        "{:<24} {:<20} {:<12} {} {:>8} {}",
                        d.delivery_id,
                        d.webhook_id,
                        d.tenant_id,
                        paint(color, code, &format!("{:<10}", d.state.as_str())),
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
        WebhooksCommand::Requeue { delivery_id, all } => {
            let id = if *all { None } else { delivery_id.as_deref() };
            let n = rt.block_on(store.requeue(id)).map_err(state)?;
            if json {
                write_json(&mut out, &serde_json::json!({"requeued": n}))?;
            } else {
                writeln!(
                    out,
                    "requeued {n} dead-lettered deliver{}",
                    if n == 1 { "y" } else { "ies" }
                )?;
            }
            if n == 0 && id.is_some() {
                eprintln!("no dead-lettered delivery `{}`", id.unwrap_or_default());
                out.flush()?;
                return Ok(exit::FINDINGS);
            }
        }
    }
    out.flush()?;
    Ok(exit::OK)
}
