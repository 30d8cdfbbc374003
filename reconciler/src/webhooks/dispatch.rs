//! Webhook deliveries beside the reconcile loop: reconciling never waits for a receiver.
//!
//! One task owns scheduling. Woken after each pass (new events), when a webhook's round ends,
//! and when the next retry is due, it fans new outbox events out into deliveries and starts a
//! round for every webhook with a due delivery that has no round running — at most
//! [`CONCURRENCY`] at once. A round attempts one webhook's due deliveries in order, so a slow
//! or hanging receiver (each attempt is bounded by the client's 10 s timeout) delays only its
//! own deliveries, never another webhook's. Stopping the daemon drops the rounds in flight:
//! their deliveries stay pending (an attempt is recorded only once it finished) and are sent
//! again after the restart — receivers deduplicate on `Tenancy-Delivery`.

use super::{Deliverer, DeliveryReport};
use crate::store::{Store, StoreError, now_ms};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Webhooks delivered to at once.
pub(crate) const CONCURRENCY: usize = 16;

/// Start delivering; returns what wakes the dispatcher (notify it after recording events).
/// `report` sees what every round did (metrics).
pub(crate) fn spawn(
    deliverer: Deliverer,
    store: Store,
    report: impl Fn(&DeliveryReport) + Send + Sync + 'static,
) -> Arc<tokio::sync::Notify> {
    let wake = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(run(Arc::new(deliverer), store, wake.clone(), report));
    wake
}

async fn run(
    deliverer: Arc<Deliverer>,
    store: Store,
    wake: Arc<tokio::sync::Notify>,
    report: impl Fn(&DeliveryReport) + Send + Sync + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut rounds: tokio::task::JoinSet<Result<DeliveryReport, StoreError>> =
        tokio::task::JoinSet::new();
    // Webhook of each running round (by task id), and the webhooks with one running.
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut busy: HashSet<String> = HashSet::new();
    // A webhook whose last round could attempt nothing (its due deliveries wait behind an
    // earlier one being retried) is not looked at again before this time, or new events.
    let mut not_before: HashMap<String, i64> = HashMap::new();
    loop {
        let mut next_ms: Option<i64> = None;
        let mut soonest = |ms: i64| next_ms = Some(next_ms.map_or(ms, |n: i64| n.min(ms)));
        if let Err(e) = fan_out(&store).await {
            tracing::error!(error = %e, "webhook deliveries: state store");
            soonest(1_000);
        }
        match store.pending_webhooks().await {
            Ok(pending) => {
                let now = now_ms();
                for (id, due) in pending {
                    let due = due.max(not_before.get(&id).copied().unwrap_or(0));
                    if busy.contains(&id) {
                        continue;
                    }
                    if due > now {
                        soonest(due - now);
                        continue;
                    }
                    let (d, s, p, webhook) = (
                        deliverer.clone(),
                        store.clone(),
                        permits.clone(),
                        id.clone(),
                    );
                    let task = rounds.spawn(async move {
                        let _permit = p.acquire_owned().await;
                        d.run_webhook(&s, &webhook).await
                    });
                    running.insert(task.id(), id.clone());
                    busy.insert(id);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook deliveries: state store");
                soonest(1_000);
            }
        }
        let nap = Duration::from_millis(next_ms.unwrap_or(60_000).clamp(10, 60_000) as u64);
        tokio::select! {
            _ = wake.notified() => {
                // New events: every webhook may have something new to deliver.
                not_before.clear();
            }
            Some(done) = rounds.join_next_with_id(), if !rounds.is_empty() => {
                let (task, result) = match done {
                    Ok((task, r)) => (task, Some(r)),
                    Err(e) => (e.id(), None),
                };
                let Some(webhook) = running.remove(&task) else { continue };
                busy.remove(&webhook);
                match result {
                    Some(Ok(r)) => {
                        if r.delivered + r.failed == 0 {
                            let wait = r.next_due_in_ms.unwrap_or(1_000).max(10);
                            not_before.insert(webhook, now_ms() + wait);
                        } else {
                            not_before.remove(&webhook);
                        }
                        report(&r);
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, %webhook, "webhook deliveries: state store");
                        not_before.insert(webhook, now_ms() + 1_000);
                    }
                    None => {
                        tracing::error!(%webhook, "a webhook delivery round stopped unexpectedly");
                        not_before.insert(webhook, now_ms() + 1_000);
                    }
                }
            }
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Turn every new outbox event into its deliveries.
async fn fan_out(store: &Store) -> Result<(), StoreError> {
    while store.fan_out(1000).await? > 0 {}
    Ok(())
}
