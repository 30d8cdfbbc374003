//! The events the reconciler records and publishes: CloudEvents 1.0 whose `data` is the body
//! seed 000 shows (§7, §11) — `{ id, type, tenantId, reason, timestamp, data }` — so that a
//! consumer written from the seed reads it as it is, and `schemas/event.schema.json` describes
//! the whole envelope.
//!
//! Two content modes (CloudEvents Kafka and HTTP bindings), `[events] content-mode`:
//!
//! * **binary** (the default): the attributes travel as `ce_*` Kafka headers / `ce-*` HTTP
//!   headers and the message body is the `data` — the seed's shape;
//! * **structured**: the body is the whole CloudEvent (`application/cloudevents+json`).

use serde_json::{Value, json};

/// The type of every event Tenancy emits (`type` of the CloudEvent, seed 000's names): one
/// spelling, used by the pipeline, webhook filters, the CLI and the schema's test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventType {
    Created,
    Activated,
    Suspended,
    Resumed,
    Archived,
    Deleted,
    Updated,
    Orphaned,
    ReconcileFailed,
    PolicyDenied,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::Created,
        EventType::Activated,
        EventType::Suspended,
        EventType::Resumed,
        EventType::Archived,
        EventType::Deleted,
        EventType::Updated,
        EventType::Orphaned,
        EventType::ReconcileFailed,
        EventType::PolicyDenied,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "TENANCY_CREATED",
            EventType::Activated => "TENANCY_ACTIVATED",
            EventType::Suspended => "TENANCY_SUSPENDED",
            EventType::Resumed => "TENANCY_RESUMED",
            EventType::Archived => "TENANCY_ARCHIVED",
            EventType::Deleted => "TENANCY_DELETED",
            EventType::Updated => "TENANCY_UPDATED",
            EventType::Orphaned => "TENANCY_ORPHANED",
            EventType::ReconcileFailed => "RECONCILE_FAILED",
            EventType::PolicyDenied => "POLICY_DENIED",
        }
    }
}

/// One fact about one tenant, to record as an event.
pub(crate) struct Fact<'a> {
    pub tenant: &'a str,
    pub ty: &'static str,
    /// The commit it happened at (`None`: the work tree).
    pub commit: Option<&'a str>,
    pub correlation: &'a str,
    pub reason: Option<&'a str>,
    /// What else is known (lifecycle, commit, changes, organization, profile, plan, the
    /// denying policies…): the body's `data`.
    pub details: Value,
}

/// The stable id of `fact` (the same fact recorded twice is one event) and its CloudEvent.
pub(crate) fn cloud_event(fact: &Fact<'_>, time: &str) -> (String, Value) {
    let sha = fact.commit.unwrap_or("");
    let id = crate::store::stable_id(&[fact.tenant, sha, fact.ty]);
    let mut body = json!({
        "id": id,
        "type": fact.ty,
        "tenantId": fact.tenant,
        "timestamp": time,
        "data": fact.details,
    });
    if let Some(reason) = fact.reason {
        body["reason"] = reason.into();
    }
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tenancy/reconciler",
        "type": fact.ty,
        "subject": fact.tenant,
        "time": time,
        "datacontenttype": "application/json",
        "tenantid": fact.tenant,
        "commitsha": sha,
        "correlationid": fact.correlation,
        "data": body,
    });
    (id, event)
}

pub use crate::config::ContentMode;

/// `event` for the wire in `mode`: (header name, value) pairs with the `prefix` (`ce_` for
/// Kafka, `ce-` for HTTP) and the content type, and the body.
pub fn encode(event: &Value, mode: ContentMode, prefix: &str) -> (Vec<(String, String)>, String) {
    match mode {
        ContentMode::Structured => (
            vec![("content-type".into(), "application/cloudevents+json".into())],
            event.to_string(),
        ),
        ContentMode::Binary => {
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if let Some(attrs) = event.as_object() {
                for (k, v) in attrs {
                    if k == "data" || k == "datacontenttype" {
                        continue;
                    }
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    headers.push((format!("{prefix}{k}"), v));
                }
            }
            (headers, event["data"].to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published event schema lists exactly the types the reconciler emits, in order.
    #[test]
    fn event_types_are_the_schemas() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../schemas/event.schema.json"))
                .expect("event schema");
        let listed: Vec<&str> = schema["properties"]["type"]["enum"]
            .as_array()
            .expect("enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed, EventType::ALL.map(EventType::as_str));
    }

    #[test]
    fn the_body_is_the_seeds_shape_and_binary_mode_carries_the_attributes_in_headers() {
        let (id, e) = cloud_event(
            &Fact {
                tenant: "t_5001",
                ty: "TENANCY_SUSPENDED",
                commit: Some(&"a".repeat(40)),
                correlation: &"b".repeat(32),
                reason: Some("billing"),
                details: json!({ "changes": 2 }),
            },
            "2025-10-08T15:40:00.000Z",
        );
        assert_eq!(e["id"], id.as_str());
        let body = &e["data"];
        // Seed 000 §11's consumer: event["type"], event["tenantId"], event["reason"].
        assert_eq!(body["type"], "TENANCY_SUSPENDED");
        assert_eq!(body["tenantId"], "t_5001");
        assert_eq!(body["reason"], "billing");
        assert_eq!(body["timestamp"], "2025-10-08T15:40:00.000Z");
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["data"]["changes"], 2);

        let (headers, wire) = encode(&e, ContentMode::Binary, "ce_");
        assert_eq!(serde_json::from_str::<Value>(&wire).unwrap(), *body);
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-type"), Some("application/json"));
        assert_eq!(h("ce_specversion"), Some("1.0"));
        assert_eq!(h("ce_id"), Some(id.as_str()));
        assert_eq!(h("ce_type"), Some("TENANCY_SUSPENDED"));
        assert_eq!(h("ce_tenantid"), Some("t_5001"));
        assert_eq!(h("ce_datacontenttype"), None);
        let (headers, wire) = encode(&e, ContentMode::Structured, "ce-");
        assert_eq!(
            headers,
            [(
                "content-type".to_owned(),
                "application/cloudevents+json".to_owned()
            )]
        );
        assert_eq!(serde_json::from_str::<Value>(&wire).unwrap(), e);
    }
}
