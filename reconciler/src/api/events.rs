//! `GET /events`: the outbox as Server-Sent Events, resumable by position.

use super::*;

/// `GET /events`: the events the caller may see as Server-Sent Events, oldest first, then live.
/// Each SSE `id` is the event's outbox position, so a reconnect with `Last-Event-ID` resumes
/// right after it; `event` is the CloudEvents type and `data` the CloudEvent.
#[utoipa::path(get, path = "/api/tenancy/v1/events", tag = "events", params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-Sent Events: `id` (position), `event` (CloudEvents type), `data` (the CloudEvent)", content_type = "text/event-stream"), (status = 400, description = "Last-Event-ID is not an event position", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn event_stream(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let after = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => Some(parse_position(v).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-header",
                "Last-Event-ID is not an event position",
            )
            .field("Last-Event-ID", "the `id` of an event this stream sent")
        })?),
    };
    struct Cursor {
        api: Arc<Api>,
        caller: Caller,
        after: Option<(i64, String, i64)>,
        queue: std::collections::VecDeque<crate::store::EventRecord>,
        orgs: std::collections::HashMap<String, Option<String>>,
    }
    let cursor = Cursor {
        api,
        caller,
        after,
        queue: Default::default(),
        orgs: Default::default(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                c.after = Some((e.created_at, e.tenant_id.clone(), e.sequence));
                // An organization's token: only events of its tenants.
                if let Some(org) = &c.caller.organization {
                    if !c.orgs.contains_key(&e.tenant_id) {
                        let o = c
                            .api
                            .store
                            .tenant(&e.tenant_id)
                            .await
                            .ok()
                            .flatten()
                            .map(|t| t.organization_id);
                        c.orgs.insert(e.tenant_id.clone(), o);
                    }
                    if c.orgs[&e.tenant_id].as_deref() != Some(org.as_str()) {
                        continue;
                    }
                }
                let event = Event::default()
                    .id(format!("{}.{}.{}", e.created_at, e.tenant_id, e.sequence))
                    .event(e.event_type.clone())
                    .data(e.event.to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), c));
            }
            match c
                .api
                .store
                .events(c.caller.tenant.as_deref(), c.after.clone(), 200)
                .await
            {
                Ok(batch) if !batch.is_empty() => c.queue.extend(batch),
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// `<created_at>.<tenant>.<sequence>` → the outbox position.
pub(super) fn parse_position(s: &str) -> Option<(i64, String, i64)> {
    let (at, rest) = s.split_once('.')?;
    let (tenant, seq) = rest.rsplit_once('.')?;
    crate::manifest::ids::TenantId::parse(tenant).ok()?;
    Some((at.parse().ok()?, tenant.to_owned(), seq.parse().ok()?))
}
