//! One error shape for the whole API: RFC 9457 problem details (`application/problem+json`).
//!
//! Handlers return [`Problem`]s; [`problem_json`] makes the rest true as well — any error that
//! a layer below the handlers answers (axum's rejections: a path that does not decode, a body
//! over the limit, a method a route does not take) is turned into a problem with the same
//! status, so a client only ever parses one error shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One field-level error inside a problem.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer or query parameter name.
    pub field: String,
    pub message: String,
}

/// RFC 9457 problem details, the only error shape of the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds, for 429 (`Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://tenancy.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub(super) fn field(mut self, field: &str, message: impl Into<String>) -> Problem {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
        self
    }

    pub(super) fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, axum::Json(&self)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tenancy\""),
            );
        }
        r
    }
}

/// The state store failed: 503, retry later (the cause is logged, never shown).
impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Problem {
        tracing::error!(error = %crate::diagnostics::error_chain(&e), "API: state store");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state-store",
            "the state store could not be read; retry later",
        )
    }
}

/// A request's blocking work (Git, validation) panicked or was cancelled: 500.
impl From<tokio::task::JoinError> for Problem {
    fn from(e: tokio::task::JoinError) -> Problem {
        Problem::unexpected("a blocking task", &e)
    }
}

impl Problem {
    /// Something that should not happen did (a stored value that no longer parses, a task that
    /// stopped): 500, the cause logged with `what`, never shown.
    pub(super) fn unexpected(what: &str, e: &dyn std::error::Error) -> Problem {
        tracing::error!(error = %crate::diagnostics::error_chain(e), what, "API: unexpected");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be completed; the error is logged",
        )
    }
}

/// Every error answer as a problem: a response of 400 or more that is not one already gets a
/// problem body with its status (the text a rejection gave, if short and printable, as the
/// detail), keeping its headers (`Allow`, `Retry-After`).
pub async fn problem_json(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if status.as_u16() < 400 || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Rejection texts are short; anything longer is not read.
    let text = axum::body::to_bytes(body, 1024)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty() && t.chars().all(|c| !c.is_control()));
    let (slug, default) = slug_of(status);
    let mut p = Problem::new(status, slug, text.unwrap_or_else(|| default.to_owned()));
    p.retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut out = p.into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// The problem type and a default detail for an error status.
pub fn slug_of(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("bad-request", "the request is not valid"),
        401 => (
            "unauthorized",
            "an Authorization: Bearer <token> header is required",
        ),
        403 => ("forbidden", "the token may not do this"),
        404 => ("not-found", "no such resource"),
        405 => ("method", "this method is not allowed here"),
        406 => ("not-acceptable", "the API answers application/json"),
        408 => ("timeout", "the request was not received in time"),
        409 => ("conflict", "the request conflicts with the current state"),
        411 => ("length-required", "send a Content-Length"),
        413 => ("too-large", "the request body is over the limit"),
        414 => ("uri-too-long", "the request URI is over the limit"),
        415 => (
            "content-type",
            "send the body as Content-Type: application/json",
        ),
        422 => ("invalid-body", "the body does not match the schema"),
        429 => ("rate-limited", "too many requests"),
        431 => (
            "headers-too-large",
            "the request headers are over the limit",
        ),
        501 => ("not-implemented", "not implemented"),
        503 => ("unavailable", "the service is unavailable; retry later"),
        _ => ("error", "the request failed"),
    }
}
