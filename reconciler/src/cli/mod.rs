//! The command line: argument parsing, output formats and exit codes. Commands call the
//! pipeline stages and render what they return; they hold no domain logic of their own.

pub mod apply;
pub mod demo;
pub mod jobs;
pub mod markdown;
mod output;
pub mod plan;
pub mod policy;
#[cfg(test)]
mod render_tests;
pub mod run;
pub mod state;
pub mod validate;
pub mod webhooks;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

pub(crate) use output::report_out;

/// Exit codes shared by every command.
pub mod exit {
    /// Success: nothing that blocks (warnings may have been printed).
    pub(crate) const OK: u8 = 0;
    /// The input was examined and refused (validation errors, policy denials).
    pub(crate) const FINDINGS: u8 = 1;
    /// The command could not run: bad arguments, repository, revision or I/O.
    pub(crate) const FAILURE: u8 = 2;
    /// `apply`: some tenant failed (the next run resumes where it stopped).
    pub(crate) const PARTIAL: u8 = 3;
    /// `apply --detect-only`: drift was found.
    pub(crate) const DRIFT: u8 = 4;
}

const ABOUT: &str = "Tenancy: GitOps governance for multi-tenant platforms.

Tenancy reads tenant manifests from a Git repository, validates every change against JSON \
Schema and sandboxed WebAssembly governance policies, and converges each tenant's PostgreSQL (or embedded \
SQLite), object-store and Kafka resources.";

const AFTER_HELP: &str = "Exit codes: 0 = success, 1 = the input was refused (findings), 2 = could not run;
apply also: 3 = some tenants failed (a rerun resumes), 4 = drift found (--detect-only).

Examples:
  tenancy validate                          # the manifests committed at HEAD of the current repository
  tenancy validate --repo ./tenants-repo --rev origin/main
  tenancy validate --worktree               # uncommitted edits in the work tree
  tenancy validate --path tenants --output json | jq '.findings[]'
  tenancy plan --path tenants --base origin/main --head HEAD --output markdown
  tenancy apply --path tenants --config tenancy.toml --yes";

#[derive(Debug, Parser)]
#[command(name = "tenancy", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// When to use colours in text output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, env = "TENANCY_COLOR")]
    pub color: ColorChoice,

    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format on stderr: text for people, or JSON lines (with tenant, commit and
    /// correlation id fields) for log pipelines. `tenancy run` then logs only JSON.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TENANCY_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check a revision's manifests: YAML, JSON Schema, identifiers and cross-references.
    ///
    /// Reads the manifests committed at --rev (default HEAD) from Git's object database — not
    /// the work tree — so what is checked is exactly what was committed. Every file is checked
    /// even when others are broken; findings are printed like compiler diagnostics.
    #[command(
        after_help = "Exit codes: 0 = no errors (warnings allowed), 1 = at least one error, 2 = could not run.\n\nJSON output (--output json) is documented in docs/validate-output.md and schemas/validate-report.schema.json."
    )]
    Validate(validate::Args),

    /// The reconciler daemon: watch the repository and converge every new commit.
    ///
    /// Reconciles only the tenants a commit changed (all of them at start and on each periodic
    /// resync), records status, decisions, audit, events and the commit's note, relays events
    /// to Kafka, and serves /healthz, /readyz and /metrics. A commit that does not descend from
    /// the last one reconciled (a force-push) is refused by default.
    #[command(
        after_help = "Stops on SIGTERM or Ctrl-C (between reconciles).\n\nExample:\n  tenancy run --repo /srv/tenants --path tenants --config /etc/tenancy/tenancy.toml --listen 127.0.0.1:9090"
    )]
    Run(run::RunArgs),

    /// Show what would change in every plane, per tenant, against live state.
    ///
    /// Validates and governs the revision, decides placement, observes each plane's actual
    /// state in bulk and prints the differences (`+` create, `~` change, `-` delete, `!`
    /// refused) with before and after values, and why any tenant is blocked. Changes nothing.
    #[command(
        after_help = "Exit codes: 0 = can be applied, 1 = refused by validation or policy (or a change a plane refuses), 2 = could not run (bad arguments, repository, or a plane that could not be observed).\n\nJSON output (--output json) is published as schemas/plan-report.schema.json.\n\nExamples:\n  tenancy plan --path tenants\n  tenancy plan --path tenants --base origin/main --head HEAD --output markdown > plan.md\n  tenancy plan --config tenancy.toml --output json | jq '.summary'"
    )]
    Plan(plan::PlanArgs),

    /// Make the plan so: tenant by tenant, recording every outcome in the state store.
    ///
    /// A tenant refused by validation or policy keeps its last applied state; a tenant whose
    /// change fails does not stop the others, and its reason is recorded. Every step is
    /// idempotent: rerunning after a failure or crash resumes where it stopped.
    #[command(
        after_help = "Exit codes: 0 = converged, 1 = some tenants refused (validation, policy, or a change a plane refuses), 2 = could not run, 3 = some tenants failed (rerun to resume), 4 = drift found with --detect-only.\n\nJSON output (--output json) is published as schemas/apply-report.schema.json."
    )]
    Apply(apply::ApplyArgs),

    /// Each tenant's last reconcile outcome, from the state store.
    #[command(
        after_help = "Exit codes: 0 = shown, 1 = a named tenant was never reconciled, 2 = could not run (no state store)."
    )]
    Status(state::StatusArgs),

    /// The events the reconciler has recorded (its outbox), oldest first: CloudEvents 1.0.
    #[command(
        after_help = "Events are written in the same transaction as the change they describe (schemas/event.schema.json).\n\nExamples:\n  tenancy events --tenant t_5001\n  tenancy events --output json --follow | jq .type"
    )]
    Events(state::EventsArgs),

    /// A tenant's commits, with what each did and the policy decisions on it.
    #[command(
        after_help = "Exit codes: 0 = shown, 1 = the tenant was never reconciled, 2 = could not run.\n\nEach applied commit also carries a git note: git log --notes=tenancy"
    )]
    History(state::HistoryArgs),

    /// Lifecycle jobs (transitions, profile changes) with their steps and progress.
    #[command(
        after_help = "Job states: queued → running → completed | failed. A job stopped by a crash or a failure is resumed from its last completed step by the next reconcile of its commit.\n\nExamples:\n  tenancy jobs t_5001\n  tenancy jobs --job 3f2a… --output json"
    )]
    Jobs(jobs::JobsArgs),

    /// Signed webhooks: register, list, remove; deliveries and dead letters.
    #[command(
        after_help = "Each delivery is POSTed with Tenancy-Signature: v1=<hex HMAC-SHA256(secret, \"<Tenancy-Timestamp>.<body>\")>; see docs/webhooks.md.\n\nExamples:\n  tenancy webhooks add --url https://ops.example.com/hooks/tenancy --event TENANCY_ACTIVATED,TENANCY_SUSPENDED --secret-env HOOK_SECRET\n  tenancy webhooks deliveries --state dead\n  tenancy webhooks requeue --all"
    )]
    Webhooks(webhooks::WebhooksArgs),

    /// The whole loop on embedded defaults, with nothing running: a demo repository, four
    /// commits (an import, a new tenant, a suspension, a refused change), what each did.
    #[command(
        after_help = "Run it from the root of a Tenancy checkout (it reads tenants/ and policies/bundle.yaml):\n  cargo run --release -- demo"
    )]
    Demo(demo::DemoArgs),

    /// Policy author tools: run fixture cases, inspect a module.
    #[command(subcommand)]
    Policy(policy::Command),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

use crate::diagnostics::JSON_LOGS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub(crate) fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Text for people (colours on a terminal).
    Text,
    /// One JSON document with a stable shape.
    Json,
}

/// Parse sizes such as `1MiB`, `512KiB`, `2000000`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 1MiB, 512KiB or a number of bytes)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1_000_000,
        "mib" => 1024 * 1024,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, KB or MB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A positive, finite number of seconds (`2`, `0.5`), for clap.
pub(crate) fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 1e9 => Ok(std::time::Duration::from_secs_f64(n)),
        _ => Err(format!(
            "`{s}` is not a positive number of seconds (e.g. 2 or 0.5)"
        )),
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init()
        }
    };
}

/// Entry point used by `main`: parse arguments, run the command, map the result to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // `tenancy run` with JSON logs is a service feeding a log pipeline: what it does is
    // logged at info level (in text mode its progress lines say the same on stderr).
    let verbose = match cli.command {
        Command::Run(_) if cli.log_format == LogFormat::Json => cli.verbose.max(1),
        _ => cli.verbose,
    };
    init_logging(verbose, cli.log_format);
    let color = cli.color.enabled();
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args, color),
        Command::Run(args) => run::run_daemon(&args),
        Command::Plan(args) => plan::run_plan(&args, color),
        Command::Apply(args) => apply::run_apply(&args, color),
        Command::Status(args) => state::run_status(&args, color),
        Command::Events(args) => state::run_events(&args, color),
        Command::History(args) => state::run_history(&args, color),
        Command::Jobs(args) => jobs::run(&args, color),
        Command::Webhooks(args) => webhooks::run(&args, color),
        Command::Demo(args) => demo::run(&args, color),
        Command::Policy(cmd) => policy::run(&cmd, color),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{:?}", miette::Report::new(Shown::of(&err)));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// An error as it is shown: its message, code, help and causes with every character that could
/// drive a terminal escaped (a path or a message may come from a repository or a module), in
/// miette's own colours.
#[derive(Debug)]
struct Shown {
    message: String,
    code: Option<String>,
    help: Option<String>,
    cause: Option<Box<Shown>>,
}

impl Shown {
    fn of(e: &dyn miette::Diagnostic) -> Shown {
        use crate::diagnostics::printable;
        Shown {
            message: printable(&e.to_string()).into_owned(),
            code: e.code().map(|c| printable(&c.to_string()).into_owned()),
            help: e.help().map(|h| printable(&h.to_string()).into_owned()),
            cause: e.source().map(|c| Box::new(Shown::cause(c))),
        }
    }

    fn cause(e: &dyn std::error::Error) -> Shown {
        Shown {
            message: crate::diagnostics::printable(&e.to_string()).into_owned(),
            code: None,
            help: None,
            cause: e.source().map(|c| Box::new(Shown::cause(c))),
        }
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Shown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl miette::Diagnostic for Shown {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.code
            .as_ref()
            .map(|c| Box::new(c) as Box<dyn std::fmt::Display>)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// A failure that stops a command (exit code 2).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum CliError {
    #[error(transparent)]
    #[diagnostic(code(tenancy::source), help("check --repo, --rev and --path"))]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    #[diagnostic(
        code(tenancy::policy_bundle),
        help("check the --policies file against schemas/policy-bundle.schema.json")
    )]
    Bundle(#[from] crate::policy::bundle::BundleError),
    #[error("policy host: {0}")]
    #[diagnostic(code(tenancy::policy_host))]
    Policy(String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    #[diagnostic(
        code(tenancy::state),
        help("check [state] url in tenancy.toml or TENANCY_STATE_URL")
    )]
    State(#[from] crate::store::StoreError),
    #[error(transparent)]
    #[diagnostic(
        code(tenancy::notes),
        help("the outcome is recorded in the state store; a later apply writes the note")
    )]
    Notes(#[from] crate::reconcile::notes::NotesError),
    /// Writing the command's output (stdout, a report file) failed.
    #[error("cannot write output: {0}")]
    #[diagnostic(code(tenancy::io))]
    Io(#[from] std::io::Error),
    /// Anything else the operating system refused (a directory, a process, a watch).
    #[error("{what}: {source}")]
    #[diagnostic(code(tenancy::system))]
    System {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    #[diagnostic(code(tenancy::usage), help("see --help"))]
    Usage(String),
}

impl From<crate::reconcile::EvaluateError> for CliError {
    fn from(e: crate::reconcile::EvaluateError) -> CliError {
        use crate::reconcile::EvaluateError as E;
        match e {
            E::Source(e) => CliError::Source(e),
            E::Bundle(e) => CliError::Bundle(e),
            E::PolicyHost(e) => CliError::Policy(e.to_string()),
        }
    }
}

impl CliError {
    /// An I/O error while doing `what` (`create .tenancy`), said as such: only failing to write
    /// the command's output is "cannot write output".
    pub(crate) fn system(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> CliError {
        move |source| CliError::System {
            what: what.to_string(),
            source,
        }
    }
}

impl From<crate::reconcile::ApplyError> for CliError {
    fn from(e: crate::reconcile::ApplyError) -> CliError {
        match e {
            crate::reconcile::ApplyError::Store(e) => CliError::State(e),
        }
    }
}

impl From<crate::daemon::DaemonError> for CliError {
    fn from(e: crate::daemon::DaemonError) -> CliError {
        use crate::daemon::DaemonError as E;
        match e {
            E::Evaluate(e) => e.into(),
            E::Source(e) => CliError::Source(e),
            E::State(e) => CliError::State(e),
            E::Apply(e) => e.into(),
            E::Usage(m) => CliError::Usage(m),
            E::Config(e) => CliError::Config(e),
            E::Io(e) => CliError::System {
                what: "tenancy run".into(),
                source: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Causes stay attached and each lands in the variant that names it: a state store error
    /// is a state error with its source, a daemon's I/O error is not "cannot write output".
    #[test]
    fn errors_keep_their_causes_and_their_kind() {
        use std::error::Error;
        let store = crate::store::StoreError::Database(sqlx::Error::PoolTimedOut);
        let cli: CliError = crate::reconcile::ApplyError::Store(store).into();
        assert!(matches!(cli, CliError::State(_)));
        assert!(cli.source().is_some(), "the sqlx error is still the source");
        let io = std::io::Error::other("inotify: too many watches");
        let cli: CliError = crate::daemon::DaemonError::Io(io).into();
        assert_eq!(cli.to_string(), "tenancy run: inotify: too many watches");
        assert!(cli.source().is_some());
        let line = crate::diagnostics::error_chain(&CliError::State(
            crate::store::StoreError::Database(sqlx::Error::PoolTimedOut),
        ));
        assert_eq!(line.matches("pool timed out").count(), 1, "{line}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("2000"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1PB").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("2"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(
            parse_seconds("0.5"),
            Ok(std::time::Duration::from_millis(500))
        );
        for bad in ["0", "-1", "NaN", "inf", "soon", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
