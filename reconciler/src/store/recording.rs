//! What a pass records for a tenant in one transaction: decisions, status, manifest, audit and events.

use super::*;

impl Store {
    /// Record every decision of one tenant change in one transaction.
    pub async fn record_decisions(&self, decisions: &[DecisionRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.record_decisions_on(&mut tx, decisions).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_decisions_on(
        &self,
        conn: &mut AnyConnection,
        decisions: &[DecisionRecord],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO policy_decisions (decision_id, tenant_id, commit_sha, operation, policy, digest, mode, blocks, verdicts, failure, decided_at, against) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {}, $10, $11, $12)",
            self.dialect.json(9)
        );
        for d in decisions {
            // Stable id: the same decision recorded twice (a retried commit) collides, not
            // duplicates; the same policy judging against two baselines is two decisions.
            let id = stable_id(&[
                &d.tenant_id,
                &d.commit_sha,
                &d.policy,
                &d.digest,
                &d.against,
            ]);
            sqlx::query(safe(format!("{sql} ON CONFLICT (decision_id) DO NOTHING")))
                .bind(id)
                .bind(&d.tenant_id)
                .bind(&d.commit_sha)
                .bind(&d.operation)
                .bind(&d.policy)
                .bind(&d.digest)
                .bind(&d.mode)
                .bind(d.blocks)
                .bind(d.verdicts.to_string())
                .bind(&d.failure)
                .bind(d.decided_at)
                .bind(&d.against)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Record one reconcile of one tenant — status, applied manifest, decisions, audit and
    /// events — atomically: either all of it is stored or none (the outbox pattern: an event
    /// exists exactly when the state change it describes does). Events already recorded (same
    /// id) are not duplicated. Returns the events this call added, with their sequence numbers.
    pub async fn record_reconcile(
        &self,
        r: &ReconcileRecord,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(status) = &r.status {
            Self::set_status_on(&mut tx, status).await?;
        }
        if let Some((tenant, expected)) = &r.tenant {
            self.put_tenant_on(&mut tx, tenant, *expected).await?;
        }
        self.record_decisions_on(&mut tx, &r.decisions).await?;
        if let Some(job) = &r.job {
            self.save_job_on(&mut tx, job).await?;
        }
        if let Some(o) = &r.outcome {
            Self::record_outcome_on(&mut tx, o).await?;
        }
        let now = now_ms();
        for (order, a) in r.audit.iter().enumerate() {
            let id = stable_id(&[&a.tenant_id, &a.correlation_id, &a.event_type, &a.target]);
            sqlx::query(safe(format!(
                "INSERT INTO tenant_audit (audit_id, tenant_id, event_type, actor, target, outcome, commit_sha, payload, correlation_id, occurred_at, entry_order) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, {}, $9, $10, $11) ON CONFLICT (audit_id) DO NOTHING",
                self.dialect.json(8)
            )))
            .bind(id)
            .bind(&a.tenant_id)
            .bind(&a.event_type)
            .bind(&a.actor)
            .bind(&a.target)
            .bind(&a.outcome)
            .bind(&a.commit_sha)
            .bind(a.payload.to_string())
            .bind(&a.correlation_id)
            .bind(now)
            .bind(order as i32)
            .execute(&mut *tx)
            .await?;
        }
        let mut added = Vec::new();
        for e in &r.events {
            let tenant = e.tenant_id.clone();
            let exists: Option<String> =
                sqlx::query_scalar("SELECT event_id FROM outbox WHERE event_id = $1")
                    .bind(&e.event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                continue;
            }
            let sequence: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(sequence), 0) + 1 AS BIGINT) FROM outbox WHERE tenant_id = $1",
            )
            .bind(&tenant)
            .fetch_one(&mut *tx)
            .await?;
            let mut event = e.event.clone();
            event["tenantsequence"] = serde_json::json!(sequence);
            sqlx::query(safe(format!(
                "INSERT INTO outbox (event_id, tenant_id, sequence, event_type, event, created_at, attempts) \
                 VALUES ($1, $2, $3, $4, {}, $6, 0)",
                self.dialect.json(5)
            )))
            .bind(&e.event_id)
            .bind(&tenant)
            .bind(sequence)
            .bind(&e.event_type)
            .bind(event.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added.push(EventRecord {
                event_id: e.event_id.clone(),
                tenant_id: tenant,
                sequence,
                event_type: e.event_type.clone(),
                event,
                created_at: now,
                published_at: None,
                attempts: 0,
            });
        }
        tx.commit().await?;
        Ok(added)
    }
}
