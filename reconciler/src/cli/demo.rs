//! `tenancy demo`: the whole loop on embedded defaults, in one command, with nothing running.
//!
//! Copies the example tenants into a fresh Git repository, reconciles it, then commits three
//! changes — a new tenant, a suspension, a change the residency policy refuses — reconciling
//! after each, and shows what happened: outcomes, statuses, events and the commit notes. Every
//! step is the real pipeline (validate, govern, plan, apply, record); only the targets are
//! embedded (a SQLite file per tenant-environment, a local object directory).

use super::{CliError, exit};
use crate::config::Config;
use crate::reconcile::{self, Inputs, Outcome, Planes};
use crate::store::{ReconcileStatus, Store};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The example tenant repository to start from.
    #[arg(long, default_value = "tenants", value_name = "DIR")]
    pub from: PathBuf,

    /// The policy bundle to enforce.
    #[arg(long, default_value = super::validate::DEFAULT_BUNDLE, value_name = "FILE")]
    pub policies: PathBuf,

    /// Where to create the demo repository and its data (default: a new directory under the
    /// system's temporary directory). Must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const NEW_TENANT: &str = "apiVersion: tenancy.dev/v1
kind: Tenant
metadata:
  id: t_5010
  organization: org_acme
  displayName: Acme Onboarding Demo
  labels: { team: demo }
spec:
  profile: mt-standard
  lifecycle: Active
  plan: starter
  regions: { allowed: [ap-south-1], preferred: ap-south-1 }
  environments:
    - { name: dev, quotas: { storageGiB: 20 }, retentionDays: 14 }
    - { name: prod, quotas: { storageGiB: 80 }, isolation: strict }
  quotas: { storageGiB: 100, concurrentJobs: 4, apiRateLimit: 100 }
  policies: { dataResidency: in-region-only, encryption: kms-per-tenant, retentionDays: 90 }
  billing: { plan: starter, costCenter: cc-99 }
  contacts: { technical: ops-5010@acme.example, billing: ap@acme.example, incident: oncall@acme.example }
  externalIds: { crm: \"0015g00000AcMe5010\", billing: \"cus_5010\" }
";

/// One demo step's edit of the repository.
type Step<'a> = dyn Fn() -> Result<(), CliError> + 'a;

fn failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::System {
        what: what.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn commit_all(repo: &git2::Repository, message: &str) -> Result<String, CliError> {
    let mut index = repo.index().map_err(|e| failed("git index", e))?;
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .and_then(|_| index.update_all(["*"], None))
        .and_then(|_| index.write())
        .map_err(|e| failed("git add", e))?;
    let tree = index
        .write_tree()
        .and_then(|id| repo.find_tree(id))
        .map_err(|e| failed("git tree", e))?;
    let who = git2::Signature::now("Demo Platform Team", "platform@demo.tenancy.invalid")
        .map_err(|e| failed("git signature", e))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &who, &who, message, &tree, &parents)
        .map_err(|e| failed("git commit", e))?;
    Ok(id.to_string())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

fn edit(repo: &Path, rel: &str, from: &str, to: &str) -> Result<(), CliError> {
    let path = repo.join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(CliError::system(format!("cannot read {}", path.display())))?;
    if !text.contains(from) {
        return Err(failed(rel, format!("expected to find `{from}`")));
    }
    std::fs::write(&path, text.replacen(from, to, 1))
        .map_err(CliError::system(format!("cannot write {}", path.display())))?;
    Ok(())
}

pub(crate) fn run(args: &DemoArgs, color: bool) -> Result<u8, CliError> {
    if !args.from.join("platform").is_dir() {
        eprintln!(
            "error: {} is not a tenant repository (no platform/ directory); run the demo from the \
             root of a Tenancy checkout, or pass --from DIR",
            args.from.display()
        );
        return Ok(exit::FAILURE);
    }
    if !args.policies.is_file() {
        eprintln!(
            "error: no policy bundle at {}; run the demo from the root of a Tenancy checkout, or pass --policies FILE",
            args.policies.display()
        );
        return Ok(exit::FAILURE);
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "tenancy-demo-{}-{}",
            std::process::id(),
            crate::store::now_ms()
        )),
    };
    let listed = |d: &Path| std::fs::read_dir(d).map(|mut e| e.next().is_some());
    if dir.exists()
        && listed(&dir).map_err(CliError::system(format!("cannot read {}", dir.display())))?
    {
        eprintln!("error: {} exists and is not empty", dir.display());
        return Ok(exit::FAILURE);
    }
    let repo_dir = dir.join("tenants-repo");
    let data = dir.join("data");
    copy_dir(&args.from, &repo_dir).map_err(CliError::system(format!(
        "cannot copy {} to {}",
        args.from.display(),
        repo_dir.display()
    )))?;
    let repo = git2::Repository::init(&repo_dir).map_err(|e| failed("git init", e))?;
    let config_path = dir.join("tenancy.toml");
    std::fs::write(
        &config_path,
        format!(
            "# Written by `tenancy demo`: embedded planes and state store under data/.\n\
             [embedded]\nroot = \"{}\"\n\n[policies]\nbundle = \"{}\"\n",
            data.display(),
            std::fs::canonicalize(&args.policies)
                .map_err(CliError::system(format!(
                    "cannot find the policy bundle {}",
                    args.policies.display()
                )))?
                .display()
        ),
    )
    .map_err(CliError::system(format!(
        "cannot write {}",
        config_path.display()
    )))?;
    let config = Config::load(Some(&config_path))?;
    std::fs::create_dir_all(&data).map_err(CliError::system(format!(
        "cannot create {}",
        data.display()
    )))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::system("cannot start the async runtime"))?;
    let store = rt
        .block_on(Store::open(&config.state_url()))
        .map_err(CliError::State)?;
    let planes = Planes::from_config(&config)?;
    let bold = |s: &str| {
        if color {
            format!(
                "{}{s}{}",
                crate::diagnostics::sgr("1"),
                crate::diagnostics::sgr("0")
            )
        } else {
            s.to_owned()
        }
    };

    println!(
        "{}",
        bold("Tenancy demo: the whole loop on embedded defaults (no services)")
    );
    println!("  repository: {}", repo_dir.display());
    println!(
        "  data:       {} (SQLite files, object directories, state store)\n",
        data.display()
    );

    let steps: [(&str, &Step); 4] = [
        (
            "Import the example tenants (3 organizations, 13 tenants)",
            &|| Ok(()),
        ),
        (
            "Onboard a new tenant, t_5010 (mt-standard, Active)",
            &|| {
                let file = repo_dir.join("org_acme/t_5010.yaml");
                std::fs::write(&file, NEW_TENANT)
                    .map_err(CliError::system(format!("cannot write {}", file.display())))?;
                Ok(())
            },
        ),
        ("Suspend t_5002", &|| {
            edit(
                &repo_dir,
                "org_acme/t_5002.yaml",
                "lifecycle: Active",
                "lifecycle: Suspended",
            )
        }),
        (
            "Move t_6002's preferred region to us-east-1 (outside its residency zone)",
            &|| {
                edit(
                    &repo_dir,
                    "org_globex/t_6002.yaml",
                    "preferred: eu-central-1",
                    "preferred: us-east-1",
                )
            },
        ),
    ];
    let mut last_commit = String::new();
    for (n, (title, change)) in steps.iter().enumerate() {
        change()?;
        last_commit = commit_all(&repo, title)?;
        println!("{} {title}", bold(&format!("[{}/4]", n + 1)));
        let inputs = Inputs {
            bundle: Some(args.policies.clone()),
            previous: vec![
                rt.block_on(reconcile::applied_baseline(&store))
                    .map_err(CliError::State)?,
            ],
            ..Inputs::new(&repo_dir, Some("HEAD"))
        };
        let evaluation = reconcile::evaluate(&inputs)?;
        // The same pass as `tenancy apply` and the daemon; the demo narrates afterwards.
        let pass = reconcile::pass::Pass {
            planes: &planes,
            store: &store,
            config: &config,
            repo: &repo_dir,
            selected: None,
            absent_in: None,
            publish: reconcile::pass::Publish::Outbox,
        };
        let done = rt
            .block_on(reconcile::pass::run(
                &pass,
                &evaluation,
                &reconcile::pass::Quiet,
            ))?
            .ok_or_else(|| failed("the pass", "stopped after planning"))?;
        if let Some(e) = done.notes_error {
            return Err(e.into());
        }
        let (plan, applied) = (done.plan, done.applied);
        println!(
            "      commit {}: planned {} change(s); {} tenant(s) applied, {} blocked, {} failed",
            &last_commit[..12],
            plan.changes(),
            applied.count(Outcome::Applied),
            applied.count(Outcome::Blocked),
            applied.count(Outcome::Failed)
        );
        for t in applied
            .tenants
            .iter()
            .filter(|t| t.applied > 0 || t.outcome != Outcome::Applied)
        {
            if n == 0 && t.outcome == Outcome::Applied {
                continue; // the import creates everything; the summary line says so
            }
            println!(
                "      {} {}: {} change(s){}",
                t.tenant,
                format!("{:?}", t.outcome).to_lowercase(),
                t.applied,
                t.reason
                    .as_deref()
                    .map(|r| format!(" — {}", r.split("; ").next().unwrap_or(r)))
                    .unwrap_or_default()
            );
        }
    }

    let (statuses, events) = rt
        .block_on(async {
            Ok::<_, crate::store::StoreError>((
                store.statuses().await?,
                store.events(None, None, 10_000).await?,
            ))
        })
        .map_err(CliError::State)?;
    println!("\n{}", bold("Statuses (tenancy status)"));
    for s in statuses.iter().filter(|s| {
        s.status != ReconcileStatus::Synced || ["t_5002", "t_5010"].contains(&s.tenant_id.as_str())
    }) {
        let reason = s
            .blocked_reason
            .as_deref()
            .or(s.error.as_deref())
            .unwrap_or("");
        let first = reason.split("; ").next().unwrap_or(reason);
        println!("  {:<8} {:<8} {first}", s.tenant_id, s.status);
    }
    println!(
        "  … and {} more synced",
        statuses
            .iter()
            .filter(|s| s.status == ReconcileStatus::Synced)
            .count()
            .saturating_sub(2)
    );
    let jobs = rt
        .block_on(store.jobs(None, 10_000))
        .map_err(CliError::State)?;
    let mut by_action: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for j in &jobs {
        *by_action
            .entry((j.action.as_str(), j.state.as_str()))
            .or_default() += 1;
    }
    println!(
        "\n{} — each lifecycle transition ran as a job with steps:",
        bold("Jobs (tenancy jobs)")
    );
    for ((action, state), n) in &by_action {
        println!("  {n:>3} {action:<10} {state}");
    }
    println!(
        "\n{} — {} in all; the last ones:",
        bold("Events (tenancy events)"),
        events.len()
    );
    for e in events
        .iter()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!("  {:<8} #{:<3} {}", e.tenant_id, e.sequence, e.event_type);
    }
    println!(
        "\n{}",
        bold("The last commit's note (git log --notes=tenancy -1)")
    );
    if let Some(note) = crate::source::read_note(&repo_dir, &last_commit)? {
        // The header, the policies, and the tenants this commit did something to.
        let mut show = true;
        for line in note.lines() {
            if line.starts_with("t_") {
                show = !line.contains(" applied: 0 of 0");
            } else if line.is_empty() {
                continue;
            }
            if show {
                println!("  {line}");
            }
        }
    }
    let cfg = config_path.display();
    println!(
        "\n{} (tenancy = target/release/tenancy, or `cargo run --release --`)",
        bold("Where to look next")
    );
    println!("  tenancy status  --config {cfg}");
    println!("  tenancy events  --config {cfg} --tenant t_5002");
    println!("  tenancy history t_6002 --config {cfg}");
    println!("  git -C {} log --notes=tenancy", repo_dir.display());
    println!(
        "  tenancy plan --repo {} --config {cfg}",
        repo_dir.display()
    );
    println!(
        "\nTo converge real PostgreSQL, S3 and Kafka, map the regions' targets in a tenancy.toml \
         (see docs/tenancy.example.toml and the README's \"Production backends\")."
    );
    Ok(exit::OK)
}
