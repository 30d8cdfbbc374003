//! Per-commit outcomes (`commit_outcomes`, migration 0008): what each pass did to each tenant at
//! each commit. A commit's git note is rendered from these rows and the commit's decisions, so
//! it can be written (again) at any time — after a crash between recording and noting, or by
//! another process — and always says the same.

use super::{DecisionRecord, Store, StoreError};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

/// What one pass did to one tenant at one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitOutcome {
    pub commit_sha: String,
    /// The pass (one `apply` run, one daemon pass) that recorded it.
    pub(crate) pass_id: String,
    pub tenant_id: String,
    /// applied, blocked, failed or drifted.
    pub outcome: String,
    pub(crate) changes_made: i64,
    pub(crate) changes_planned: i64,
    pub reason: Option<String>,
    pub(crate) recorded_at: i64,
}

const COLUMNS: &str =
    "commit_sha, pass_id, tenant_id, outcome, changes_made, changes_planned, reason, recorded_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<CommitOutcome, StoreError> {
    Ok(CommitOutcome {
        commit_sha: r.try_get("commit_sha")?,
        pass_id: r.try_get("pass_id")?,
        tenant_id: r.try_get("tenant_id")?,
        outcome: r.try_get("outcome")?,
        changes_made: r.try_get("changes_made")?,
        changes_planned: r.try_get("changes_planned")?,
        reason: r.try_get("reason")?,
        recorded_at: r.try_get("recorded_at")?,
    })
}

impl Store {
    /// Record `o` (inside the tenant's reconcile transaction) unless it says nothing new: the
    /// tenant's latest outcome at that commit is the same, with the same reason, and this pass
    /// changed nothing — so periodic resyncs do not grow the note.
    pub(super) async fn record_outcome_on(
        conn: &mut AnyConnection,
        o: &CommitOutcome,
    ) -> Result<(), StoreError> {
        let last = sqlx::query(
            "SELECT outcome, reason FROM commit_outcomes WHERE commit_sha = $1 AND tenant_id = $2 \
             ORDER BY recorded_at DESC LIMIT 1",
        )
        .bind(&o.commit_sha)
        .bind(&o.tenant_id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = last {
            let (outcome, reason): (String, Option<String>) =
                (r.try_get("outcome")?, r.try_get("reason")?);
            if outcome == o.outcome && reason == o.reason && o.changes_made == 0 {
                return Ok(());
            }
        }
        sqlx::query(
            "INSERT INTO commit_outcomes (commit_sha, pass_id, tenant_id, outcome, changes_made, changes_planned, reason, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (commit_sha, pass_id, tenant_id) DO UPDATE SET outcome = excluded.outcome, \
               changes_made = excluded.changes_made, changes_planned = excluded.changes_planned, \
               reason = excluded.reason, recorded_at = excluded.recorded_at",
        )
        .bind(&o.commit_sha)
        .bind(&o.pass_id)
        .bind(&o.tenant_id)
        .bind(&o.outcome)
        .bind(o.changes_made)
        .bind(o.changes_planned)
        .bind(&o.reason)
        .bind(o.recorded_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Every outcome recorded at `sha`, oldest first.
    pub(crate) async fn commit_outcomes(
        &self,
        sha: &str,
    ) -> Result<Vec<CommitOutcome>, StoreError> {
        let rows = sqlx::query(super::safe(format!(
            "SELECT {COLUMNS} FROM commit_outcomes WHERE commit_sha = $1 ORDER BY recorded_at, tenant_id"
        )))
        .bind(sha)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The commits with outcomes recorded at or after `since` (epoch ms), each with the time
    /// of its latest one and how many it has at or after `since`.
    pub(crate) async fn commits_recorded_since(
        &self,
        since: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT commit_sha, CAST(MAX(recorded_at) AS BIGINT) AS at, \
             CAST(COUNT(*) AS BIGINT) AS n FROM commit_outcomes \
             WHERE recorded_at >= $1 GROUP BY commit_sha ORDER BY at",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("commit_sha")?, r.try_get("at")?, r.try_get("n")?)))
            .collect()
    }

    /// Every decision recorded at `sha`, by tenant and policy.
    pub(crate) async fn decisions_at(&self, sha: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        self.select_decisions("commit_sha", sha).await
    }
}
