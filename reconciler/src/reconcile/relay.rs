//! Stage 5, publish: the outbox relayed to Kafka, an event marked published only on its own delivery report.

use super::*;

/// What one relay pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayReport {
    pub published: usize,
    pub pending: usize,
    /// Why publishing stopped early (the events wait in the outbox for the next pass).
    pub error: Option<String>,
}

/// Publish the outbox's pending events to Kafka, in order (key = tenant id, so one tenant's
/// events land in one partition in sequence), with an idempotent producer; an event is marked
/// published only after the broker acknowledged it. At-least-once: an event sent twice (a
/// crash between the ack and the mark) carries the same `id`.
pub async fn relay(
    store: &Store,
    cfg: &crate::config::EventsKafka,
    mode: events::ContentMode,
) -> RelayReport {
    match EventsProducer::new(cfg, mode) {
        Ok(p) => p.relay(store).await,
        Err(e) => RelayReport {
            error: Some(e),
            ..Default::default()
        },
    }
}

/// Delivery reports of the events producer, by event id: `true` when the broker acknowledged
/// the event, `false` when it did not. Reports that arrive after a batch stopped waiting (a
/// slow or down broker) are kept for the next batch, never dropped: an event is marked
/// published only on its own successful report.
#[derive(Default)]
pub(super) struct Deliveries(std::sync::Mutex<HashMap<String, bool>>);

impl Deliveries {
    fn take(&self) -> HashMap<String, bool> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl tenancy_plane_kafka::rdkafka::ClientContext for Deliveries {}

impl tenancy_plane_kafka::rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = Box<String>;

    fn delivery(
        &self,
        result: &tenancy_plane_kafka::rdkafka::producer::DeliveryResult<'_>,
        event_id: Box<String>,
    ) {
        if let Ok(mut reports) = self.0.lock() {
            // A later success (a re-send) wins over an earlier failure of the same event.
            let ok = result.is_ok();
            let entry = reports.entry(*event_id).or_insert(ok);
            *entry |= ok;
        }
    }
}

/// How long the producer may take to report on a message: librdkafka reports every message
/// within `message.timeout.ms` (delivered, or failed once it expires), so waiting that long
/// (plus a margin for the report itself) hears about every message of a batch.
pub(super) fn report_deadline(cfg: &crate::config::EventsKafka) -> std::time::Duration {
    let timeout_ms = cfg
        .properties
        .get("message.timeout.ms")
        .or_else(|| cfg.properties.get("delivery.timeout.ms"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(MESSAGE_TIMEOUT_MS);
    std::time::Duration::from_millis(timeout_ms.saturating_add(5_000))
}

/// `message.timeout.ms` unless the configuration says otherwise.
pub(super) const MESSAGE_TIMEOUT_MS: u64 = 10_000;

/// A Kafka producer for the outbox, kept for a daemon's lifetime (an idempotent producer's
/// setup costs a round trip or two; the daemon relays after every commit). It has no polling
/// thread of its own: it is served only while relaying, so an idle daemon stays idle.
pub(crate) struct EventsProducer {
    producer: Arc<tenancy_plane_kafka::rdkafka::producer::BaseProducer<Deliveries>>,
    topic: String,
    servers: String,
    /// How long a batch waits for its delivery reports.
    deadline: std::time::Duration,
    mode: events::ContentMode,
}

impl EventsProducer {
    pub fn new(
        cfg: &crate::config::EventsKafka,
        mode: events::ContentMode,
    ) -> Result<EventsProducer, String> {
        let mut client = tenancy_plane_kafka::rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
            .set("linger.ms", "0")
            .set("log_level", "3");
        for (k, v) in &cfg.properties {
            client.set(k, v);
        }
        Ok(EventsProducer {
            producer: Arc::new(
                client
                    .create_with_context(Deliveries::default())
                    .map_err(|e| format!("events producer: {e}"))?,
            ),
            topic: cfg.topic.clone(),
            servers: cfg.bootstrap_servers.clone(),
            deadline: report_deadline(cfg),
            mode,
        })
    }

    /// Publish every pending event, in order; see [`relay`].
    pub async fn relay(&self, store: &Store) -> RelayReport {
        let mut report = RelayReport::default();
        loop {
            let batch = match store.pending_events(500).await {
                Ok(b) => b,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return report;
                }
            };
            if batch.is_empty() {
                return report;
            }
            let started = std::time::Instant::now();
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            let servers = self.servers.clone();
            let (deadline, mode) = (self.deadline, self.mode);
            // Sending and waiting for the acknowledgements block: off the async threads.
            let sent = tokio::task::spawn_blocking(move || {
                send_batch(&producer, &topic, &servers, &batch, deadline, mode)
            })
            .await
            .unwrap_or_else(|e| Err((Vec::new(), e.to_string())));
            let (published, error) = match sent {
                Ok(ids) => (ids, None),
                Err((ids, e)) => (ids, Some(e)),
            };
            report.published += published.len();
            tracing::debug!(
                events = published.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch acknowledged"
            );
            if let Err(e) = store.mark_published(&published).await {
                report.error = Some(e.to_string());
            }
            if error.is_some() || report.error.is_some() {
                report.error = report.error.or(error);
                report.pending = store.pending_count().await.unwrap_or(0).max(0) as usize;
                return report;
            }
        }
    }
}

/// Send a batch and wait (up to `deadline`) for the broker's acknowledgements; returns the
/// ids of events acknowledged — this batch's, and any earlier batch's whose reports came late
/// — and why it stopped, if not every event of the batch was acknowledged. An event with a
/// failed report, or none yet, is not returned: it stays pending and is sent again.
pub(super) fn send_batch(
    producer: &tenancy_plane_kafka::rdkafka::producer::BaseProducer<Deliveries>,
    topic: &str,
    servers: &str,
    batch: &[crate::store::EventRecord],
    deadline: std::time::Duration,
    mode: events::ContentMode,
) -> Result<Vec<String>, (Vec<String>, String)> {
    use tenancy_plane_kafka::rdkafka::message::{Header, OwnedHeaders};
    use tenancy_plane_kafka::rdkafka::producer::{BaseRecord, Producer};
    let mut queued = Vec::new();
    let mut stopped = None;
    for e in batch {
        // The CloudEvents Kafka binding: binary (ce_* headers, the body is the data) or
        // structured (the whole event).
        let (attrs, payload) = events::encode(&e.event, mode, "ce_");
        let mut headers = OwnedHeaders::new_with_capacity(attrs.len());
        for (k, v) in &attrs {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_str()),
            });
        }
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(e.event_id.clone()))
            .key(&e.tenant_id)
            .payload(&payload)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => {
                    queued.push(e.event_id.clone());
                    break;
                }
                Err((err, back)) => {
                    if err.rdkafka_error_code()
                        == Some(tenancy_plane_kafka::rdkafka::types::RDKafkaErrorCode::QueueFull)
                    {
                        producer.poll(std::time::Duration::from_millis(100));
                        record = back;
                    } else {
                        stopped = Some(format!("Kafka `{servers}`: {err}"));
                        break;
                    }
                }
            }
        }
        if stopped.is_some() {
            break;
        }
    }
    // Wait for the acknowledgements by polling (each poll returns as soon as a delivery
    // report is served); rdkafka's `flush` sleeps in 100 ms steps, which would be most of the
    // daemon's commit-to-event latency.
    let until = std::time::Instant::now() + deadline;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < until {
        producer.poll(std::time::Duration::from_millis(5));
    }
    let reports = producer.context().take();
    let delivered: Vec<String> = reports
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(id, _)| id.clone())
        .collect();
    let failed = queued
        .iter()
        .filter(|id| reports.get(*id) == Some(&false))
        .count();
    let unreported = queued
        .iter()
        .filter(|id| !reports.contains_key(*id))
        .count();
    if failed > 0 {
        stopped.get_or_insert(format!(
            "Kafka `{servers}`: {failed} event(s) not acknowledged"
        ));
    }
    if unreported > 0 {
        stopped.get_or_insert(format!(
            "Kafka `{servers}`: {unreported} event(s) not acknowledged within {}s",
            deadline.as_secs()
        ));
    }
    match stopped {
        None => Ok(delivered),
        Some(why) => Err((delivered, why)),
    }
}
