//! Webhooks: register, list and delete signed event deliveries.

use super::*;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct WebhookBody {
    #[schema(pattern = "^https?://[^ ]+$", max_length = 2048)]
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[schema(min_length = 8, max_length = 256)]
    secret: String,
    /// One tenant; every tenant when absent (unconfined tokens only).
    tenant_id: Option<String>,
}

/// May `caller` manage webhooks of `tenant` (`*` = every tenant)?
pub(super) async fn may_manage(api: &Api, caller: &Caller, tenant: &str) -> bool {
    if tenant == "*" {
        return caller.unconfined();
    }
    matches!(api.store.tenant(tenant).await, Ok(Some(t)) if caller.sees(&t))
}

/// `POST /webhooks` (seed 000 §7): 201 with the webhook — never its secret.
#[utoipa::path(post, path = "/api/tenancy/v1/webhooks", tag = "webhooks", request_body(content = WebhookBody, description = "Seed 000 §7", example = json!({"url": "https://ops.example.com/hooks/tenancy", "events": ["TENANCY_ACTIVATED", "TENANCY_SUSPENDED"], "secret": "whsec_demo"})), responses((status = 201, description = "Registered (the secret is never returned)", body = crate::store::Webhook), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role or scope does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn create_webhook(
    State(api): State<Arc<Api>>,
    caller: Caller,
    b: Result<Strict<WebhookBody>, Problem>,
) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let w = b?.0;
    let invalid = |field: &str, message: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the webhook is not valid",
        )
        .field(field, message)
    };
    if w.url.chars().count() > crate::webhooks::MAX_URL_CHARS {
        return Err(invalid(
            "/url",
            format!("at most {} characters", crate::webhooks::MAX_URL_CHARS),
        ));
    }
    // The target must be public (https, no credentials, no internal address or name) —
    // checked again, after DNS resolution, at every delivery.
    if let Err(why) = api.guard.check_registration(&w.url).await {
        return Err(invalid("/url", why));
    }
    if w.events.len() > crate::webhooks::MAX_EVENT_FILTERS {
        return Err(invalid(
            "/events",
            format!(
                "at most {} event types (there are {})",
                crate::webhooks::MAX_EVENT_FILTERS,
                crate::webhooks::EVENT_TYPES.len()
            ),
        ));
    }
    if let Some((i, e)) = w
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| !crate::webhooks::EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(invalid(
            &format!("/events/{i}"),
            format!(
                "`{e}` is not one of {}",
                crate::webhooks::EVENT_TYPES.join(", ")
            ),
        ));
    }
    if !(8..=256).contains(&w.secret.chars().count()) {
        return Err(invalid(
            "/secret",
            "8 to 256 characters (32 or more random ones recommended)".into(),
        ));
    }
    let tenant = match (&w.tenant_id, &caller.tenant) {
        (Some(t), _) => t.clone(),
        (None, Some(mine)) => mine.clone(),
        (None, None) => "*".to_owned(),
    };
    if tenant != "*"
        && let Err(e) = crate::manifest::ids::TenantId::parse(&tenant)
    {
        return Err(invalid("/tenantId", e.explained()));
    }
    if !may_manage(&api, &caller, &tenant).await {
        return Err(if tenant == "*" {
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a token confined to a tenant or organization registers webhooks for one of its tenants (tenantId)",
            )
        } else {
            Problem::not_found(&format!("tenant `{tenant}`"))
        });
    }
    let hook = api
        .store
        .put_webhook(
            &tenant,
            &w.url,
            &w.events,
            &w.secret,
            &crate::store::RetryPolicy::default(),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(hook)).into_response())
}

#[utoipa::path(get, path = "/api/tenancy/v1/webhooks", tag = "webhooks", responses((status = 200, description = "`items`: the webhooks in the caller’s scope", body = views::WebhookList), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list_webhooks(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let mut items = Vec::new();
    for h in api.store.webhooks().await? {
        if may_manage(&api, &caller, &h.tenant_id).await {
            items.push(h);
        }
    }
    Ok(axum::Json(views::WebhookList { items }).into_response())
}

#[utoipa::path(delete, path = "/api/tenancy/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id")), responses((status = 204, description = "Removed"), (status = 400, description = "Not a webhook id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such webhook in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn delete_webhook(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let hooks = api.store.webhooks().await?;
    let Some(h) = hooks.iter().find(|h| h.webhook_id == id) else {
        return Err(Problem::not_found(&format!("webhook `{id}`")));
    };
    if !may_manage(&api, &caller, &h.tenant_id).await {
        return Err(Problem::not_found(&format!("webhook `{id}`")));
    }
    api.store.remove_webhook(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
