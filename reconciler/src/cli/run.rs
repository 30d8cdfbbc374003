//! `tenancy run`: the reconciler as a daemon.

use super::plan::{SourceArgs, bundle, runtime};
use super::{CliError, exit};
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
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
pub(crate) fn run_daemon(args: &RunArgs) -> Result<u8, CliError> {
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
    let result = rt.block_on(crate::daemon::run(opts, Some(Box::new(rest_api))));
    // Stop promptly: what is still in flight (a webhook attempt, a relay batch waiting for a
    // broker) is left pending in the store and resumed by the next start.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result?;
    Ok(exit::OK)
}

/// The REST API beside the daemon, when `[api]` has tokens: reads from the daemon's store and
/// last pass, writes as judged commits to the repository it reads.
fn rest_api(shared: crate::daemon::Shared<'_>) -> Result<Option<crate::daemon::Served>, String> {
    use crate::api::writes::{Push, WriteTarget};
    let config = shared.config;
    if config.api.tokens.is_empty() {
        return Ok(None);
    }
    if !crate::diagnostics::JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "tenancy run: REST API on http://{}{} ({} token(s))",
            shared.addr,
            crate::api::BASE,
            config.api.tokens.len()
        );
    }
    let writes = WriteTarget {
        repo: shared.repo.to_owned(),
        path: shared.path.to_owned(),
        bundle: shared.bundle.map(ToOwned::to_owned),
        max_file_bytes: shared.max_file_bytes,
        // Following a remote, writes go there (the mirror follows); otherwise to `[api] push`
        // when set.
        push: match (shared.remote, &config.api.push) {
            (Some(url), _) => Some(Push {
                remote: url.to_owned(),
                branch: config.daemon.branch.clone(),
            }),
            (None, Some(name)) => Some(Push {
                remote: name.clone(),
                branch: crate::source::current_branch(shared.repo).unwrap_or_else(|| "main".into()),
            }),
            (None, None) => None,
        },
        cache: Default::default(),
    };
    let (router, metrics) = crate::api::router(
        shared.store,
        &config.api,
        writes,
        shared.planes,
        shared.platform,
        shared.guard,
    )?;
    Ok(Some(crate::daemon::Served {
        router,
        metrics: Box::new(move || metrics.render()),
    }))
}
