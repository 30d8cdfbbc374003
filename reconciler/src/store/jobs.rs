//! Lifecycle jobs (`tenant_jobs`): every lifecycle transition and profile change of a tenant
//! runs as a job whose steps are the plan's changes, with progress, from `queued` through
//! `running` to `completed` or `failed`.
//!
//! A job's id is derived from (tenant, commit) — one job per tenant and commit, whoever queued
//! it (the API at once, the daemon when it reconciles; the daemon's action wins) — so the
//! reconcile that follows a crash finds the same job and resumes it: the steps it completed stay completed, the plan (which
//! lists only what is still to do) supplies the remaining ones, and a step that was pending
//! but no longer appears in the plan was done before the crash and is marked so. A newer
//! commit's job for the same tenant supersedes an unfinished older one.

use super::{Store, StoreError, json_column, now_ms, safe, stable_id};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// A job's state: `queued → running → completed | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
    ];

    /// The spelling of the database column, the CLI and its JSON (`queued`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    /// Seed 000's spelling in the API (`Queued`).
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            JobState::Queued => "Queued",
            JobState::Running => "Running",
            JobState::Completed => "Completed",
            JobState::Failed => "Failed",
        }
    }

    fn parse(s: &str) -> Result<JobState, StoreError> {
        super::named(&JobState::ALL, JobState::as_str, "job state", s)
    }
}

/// A step's state, spelled the same in the database, the CLI and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStep {
    pub name: String,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub job_id: String,
    pub tenant_id: String,
    /// `create`, `activate`, `suspend`, `resume`, `archive`, `delete`, `change-profile`.
    pub action: String,
    pub state: JobState,
    /// Completed steps / all steps, 0.0–1.0.
    pub progress: f64,
    pub steps: Vec<JobStep>,
    pub commit_sha: Option<String>,
    pub error: Option<String>,
    /// One line per state change, oldest first.
    pub logs: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The job that converged this one's commit too (a later pass reconciled the tenant at a
    /// commit including it); its state is this job's outcome.
    pub(crate) superseded_by: Option<String>,
}

/// A job to run: its tenant, the commit it converges, its action and its steps.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: String,
    pub commit_sha: String,
    pub action: String,
    pub steps: Vec<String>,
}

impl NewJob {
    pub fn id(&self) -> String {
        stable_id(&["job", &self.tenant_id, &self.commit_sha])
    }
}

impl Job {
    fn refresh_progress(&mut self) {
        let done = self
            .steps
            .iter()
            .filter(|s| s.state == StepState::Completed)
            .count();
        self.progress = if self.steps.is_empty() {
            if self.state == JobState::Completed {
                1.0
            } else {
                0.0
            }
        } else {
            done as f64 / self.steps.len() as f64
        };
    }

    fn log(&mut self, line: &str) {
        let when = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        self.logs.push_str(&format!("{when} {line}\n"));
        self.updated_at = now_ms();
    }

    /// Mark step `name` completed.
    pub(crate) fn step_done(&mut self, name: &str) {
        if let Some(s) = self
            .steps
            .iter_mut()
            .find(|s| s.name == name && s.state != StepState::Completed)
        {
            s.state = StepState::Completed;
            s.error = None;
        }
        self.updated_at = now_ms();
        self.refresh_progress();
    }

    /// Mark step `name` failed and the job with it.
    pub fn fail(&mut self, step: Option<&str>, error: &str) {
        if let Some(s) = step.and_then(|n| self.steps.iter_mut().find(|s| s.name == n)) {
            s.state = StepState::Failed;
            s.error = Some(error.to_owned());
        }
        self.state = JobState::Failed;
        self.error = Some(error.to_owned());
        self.log(&format!("failed: {error}"));
        self.refresh_progress();
    }

    pub fn complete(&mut self) {
        for s in &mut self.steps {
            if s.state == StepState::Pending {
                s.state = StepState::Completed;
            }
        }
        self.state = JobState::Completed;
        self.error = None;
        self.log("completed");
        self.refresh_progress();
    }
}

const JOB_COLUMNS: &str = "job_id, tenant_id, action, state, progress, CAST(steps AS TEXT) AS steps, logs, commit_sha, error, created_at, updated_at, superseded_by";

fn job_from_row(r: &sqlx::any::AnyRow) -> Result<Job, StoreError> {
    Ok(Job {
        job_id: r.try_get("job_id")?,
        tenant_id: r.try_get("tenant_id")?,
        action: r.try_get("action")?,
        state: JobState::parse(&r.try_get::<String, _>("state")?)?,
        progress: r.try_get("progress")?,
        steps: json_column(r, "steps")?,
        commit_sha: r.try_get("commit_sha")?,
        error: r.try_get("error")?,
        logs: r.try_get("logs")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        superseded_by: r.try_get("superseded_by")?,
    })
}

impl Store {
    /// Record a pass's jobs as `queued` (those already known keep their state), and end the
    /// unfinished jobs of the pass's other tenants — from an older commit, or no longer needed
    /// at this one — as failed with the reason: a job never stays queued or running for good.
    /// One transaction.
    ///
    /// `included(sha)` says whether a commit is part of the one reconciled (itself or an
    /// ancestor): a job for a newer commit — one the API queued while this pass was running —
    /// is left for the pass that reconciles it.
    pub(crate) async fn queue_jobs(
        &self,
        commit: &str,
        tenants: &[&str],
        jobs: &[NewJob],
        included: impl Fn(&str) -> bool + Send,
    ) -> Result<(), StoreError> {
        let unfinished: Vec<(String, String, Option<String>)> = sqlx::query(
            "SELECT job_id, tenant_id, commit_sha FROM tenant_jobs WHERE state IN ('queued', 'running')",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("job_id")?,
                r.try_get("tenant_id")?,
                r.try_get("commit_sha")?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
        let in_pass: std::collections::HashSet<&str> = tenants.iter().copied().collect();
        let wanted: std::collections::HashSet<String> = jobs.iter().map(NewJob::id).collect();
        let successor: std::collections::HashMap<&str, String> = jobs
            .iter()
            .map(|j| (j.tenant_id.as_str(), j.id()))
            .collect();
        let stale: Vec<(&String, Option<&String>)> = unfinished
            .iter()
            .filter(|(id, tenant, sha)| {
                in_pass.contains(tenant.as_str())
                    && !wanted.contains(id)
                    && sha.as_deref().is_none_or(&included)
            })
            .map(|(id, tenant, _)| (id, successor.get(tenant.as_str())))
            .collect();
        if jobs.is_empty() && stale.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for (id, next) in stale {
            // With a successor at this commit, that job converges this one's change too.
            sqlx::query(
                "UPDATE tenant_jobs SET state = 'failed', error = $2, updated_at = $3, superseded_by = $4 WHERE job_id = $1",
            )
            .bind(id)
            .bind(match next {
                Some(next) => format!(
                    "superseded: the tenant was reconciled at commit {commit}, which includes this one, by job {next}"
                ),
                None => format!("superseded: the tenant was reconciled again at commit {commit}"),
            })
            .bind(now)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        for j in jobs {
            let steps: Vec<JobStep> = j
                .steps
                .iter()
                .map(|n| JobStep {
                    name: n.clone(),
                    state: StepState::Pending,
                    error: None,
                })
                .collect();
            let logs = format!(
                "{} queued for commit {}\n",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                j.commit_sha
            );
            sqlx::query(safe(format!(
                "INSERT INTO tenant_jobs (job_id, tenant_id, action, state, progress, steps, logs, commit_sha, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'queued', 0.0, {}, $5, $6, $7, $7) ON CONFLICT (job_id) DO NOTHING",
                self.dialect.json(4)
            )))
            .bind(j.id())
            .bind(&j.tenant_id)
            .bind(&j.action)
            .bind(serde_json::to_string(&steps).unwrap_or_else(|_| "[]".into()))
            .bind(logs)
            .bind(&j.commit_sha)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Start (or resume) a job: `running`, its steps merged with those already completed, and
    /// the tenant's status `progressing`. (The tenant's older unfinished jobs were superseded
    /// by [`Store::queue_jobs`] when the pass began; a newer one — the API may queue one for a
    /// later commit while this pass runs — is left for the pass that reconciles it.)
    pub(crate) async fn start_job(&self, new: &NewJob) -> Result<Job, StoreError> {
        let id = new.id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Write first: SQLite then takes its write lock at once (waiting for it under the busy
        // timeout) instead of failing to upgrade a read lock while another writer holds it.
        sqlx::query("UPDATE tenant_jobs SET updated_at = updated_at WHERE job_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(safe(format!(
            "SELECT {JOB_COLUMNS} FROM tenant_jobs WHERE job_id = $1"
        )))
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| job_from_row(&r))
        .transpose()?;
        let resumed = existing
            .as_ref()
            .is_some_and(|j| j.state != JobState::Queued);
        let mut job = existing.unwrap_or_else(|| Job {
            superseded_by: None,
            job_id: id.clone(),
            tenant_id: new.tenant_id.clone(),
            action: new.action.clone(),
            state: JobState::Queued,
            progress: 0.0,
            steps: Vec::new(),
            commit_sha: Some(new.commit_sha.clone()),
            error: None,
            logs: String::new(),
            created_at: now,
            updated_at: now,
        });
        // Steps still pending from an earlier attempt that the plan no longer lists were made
        // before that attempt stopped: the plan only lists what is left to do.
        for s in &mut job.steps {
            if s.state != StepState::Completed && !new.steps.contains(&s.name) {
                s.state = StepState::Completed;
                s.error = None;
            }
        }
        for name in &new.steps {
            match job.steps.iter_mut().find(|s| &s.name == name) {
                Some(s) => {
                    s.state = StepState::Pending;
                    s.error = None;
                }
                None => job.steps.push(JobStep {
                    name: name.clone(),
                    state: StepState::Pending,
                    error: None,
                }),
            }
        }
        if job.action != new.action {
            // Queued by the API from the committed state; the daemon converges from what is
            // applied (a tenant created and activated before either was applied is created).
            job.log(&format!(
                "runs as {} (queued as {})",
                new.action, job.action
            ));
            job.action = new.action.clone();
        }
        job.state = JobState::Running;
        job.error = None;
        job.log(if resumed {
            "resumed from its last completed step"
        } else {
            "running"
        });
        job.refresh_progress();
        self.save_job_on(&mut tx, &job).await?;
        sqlx::query(
            "INSERT INTO reconcile_status (tenant_id, status, last_attempted_commit, updated_at) VALUES ($1, 'progressing', $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET status = 'progressing', last_attempted_commit = excluded.last_attempted_commit, \
             updated_at = excluded.updated_at",
        )
        .bind(&new.tenant_id)
        .bind(&new.commit_sha)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    pub(super) async fn save_job_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        job: &Job,
    ) -> Result<(), StoreError> {
        sqlx::query(safe(format!(
            "INSERT INTO tenant_jobs (job_id, tenant_id, action, state, progress, steps, logs, commit_sha, error, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, {}, $7, $8, $9, $10, $11) \
             ON CONFLICT (job_id) DO UPDATE SET action = excluded.action, state = excluded.state, progress = excluded.progress, steps = excluded.steps, \
               logs = excluded.logs, error = excluded.error, updated_at = excluded.updated_at",
            self.dialect.json(6)
        )))
        .bind(&job.job_id)
        .bind(&job.tenant_id)
        .bind(&job.action)
        .bind(job.state.as_str())
        .bind(job.progress)
        .bind(serde_json::to_string(&job.steps).unwrap_or_else(|_| "[]".into()))
        .bind(&job.logs)
        .bind(&job.commit_sha)
        .bind(&job.error)
        .bind(job.created_at)
        .bind(job.updated_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Save a job's progress.
    pub(crate) async fn save_job(&self, job: &Job) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.save_job_on(&mut conn, job).await
    }

    /// The job that finally converged `job` (itself, or the last of its successors).
    pub(crate) async fn outcome_of(&self, job: Job) -> Result<Job, StoreError> {
        let mut current = job;
        // A chain is short (one hop per pass that took over); bounded anyway.
        for _ in 0..16 {
            let Some(next) = current.superseded_by.clone() else {
                break;
            };
            match self.job(&next).await? {
                Some(j) => current = j,
                None => break,
            }
        }
        Ok(current)
    }

    pub async fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        sqlx::query(safe(format!(
            "SELECT {JOB_COLUMNS} FROM tenant_jobs WHERE job_id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| job_from_row(&r))
        .transpose()
    }

    /// Jobs, newest first: all or one tenant's, at most `limit`.
    pub async fn jobs(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<Job>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(safe(format!(
                    "SELECT {JOB_COLUMNS} FROM tenant_jobs WHERE tenant_id = $1 ORDER BY created_at DESC, job_id LIMIT $2"
                )))
                .bind(t)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(safe(format!(
                    "SELECT {JOB_COLUMNS} FROM tenant_jobs ORDER BY created_at DESC, job_id LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(job_from_row).collect()
    }

    /// Each stored tenant's lifecycle state and profile, by id (the "before" of a transition).
    pub(crate) async fn tenant_states(
        &self,
    ) -> Result<std::collections::HashMap<String, (String, String)>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, state, profile FROM tenants")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    (r.try_get("state")?, r.try_get("profile")?),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryState;

    /// One spelling per state for the column, the CLI and JSON; seed 000's in the API.
    #[test]
    fn every_state_has_one_spelling_per_audience() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()).ok(), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
            assert!(s.api_name().eq_ignore_ascii_case(s.as_str()));
            assert!(s.api_name().starts_with(|c: char| c.is_ascii_uppercase()));
        }
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()).ok(), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
        }
        use crate::store::ReconcileStatus;
        for s in ReconcileStatus::ALL {
            assert_eq!(ReconcileStatus::parse(s.as_str()).ok(), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(s.as_str().into()));
            assert_eq!(format!("{s:<12}|"), format!("{:<12}|", s.as_str()));
        }
        let step = serde_json::to_value(StepState::Pending).ok();
        assert_eq!(step, Some("pending".into()));
        assert!(matches!(
            JobState::parse("Running"),
            Err(StoreError::Unknown {
                what: "job state",
                ..
            })
        ));
    }
}
