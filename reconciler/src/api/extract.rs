//! Request bodies and queries: strict JSON (unknown fields refused, field paths in errors) and the one-line reasons problems carry.

use super::*;

/// A strict JSON body: a syntax error is 400, a wrong field or type 422 (naming the field), a
/// wrong content type 415, an oversized body 413 — each as a problem.
pub(super) fn body<T>(
    b: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Problem> {
    use axum::extract::rejection::JsonRejection as R;
    b.map(|axum::Json(v)| v).map_err(|e| {
        let text = e.body_text();
        match &e {
            R::JsonDataError(_) => {
                // "Failed to deserialize the JSON body into the target type: amount: invalid
                // type: …" or "…: unknown field `x`, expected …"
                let detail = text
                    .split_once("target type: ")
                    .map_or(text.as_str(), |x| x.1);
                let field = match detail.split_once(": ") {
                    Some((f, _)) if !f.contains(' ') => f.to_owned(),
                    _ => detail.split('`').nth(1).unwrap_or("body").to_owned(),
                };
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "the body does not match the schema",
                )
                .field(&field, detail)
            }
            R::JsonSyntaxError(_) => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", text),
            R::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "send the body as Content-Type: application/json",
            ),
            _ => Problem::new(e.status(), "body", text),
        }
    })
}

/// A strict JSON body: an object (serde would also take an array for a struct), each field of
/// the right type and no other; errors name the field (422). A syntax error is 400, another
/// content type 415, an oversized body 413.
pub struct Strict<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Strict<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let value = body(axum::Json::<serde_json::Value>::from_request(req, state).await)?;
        strict_value(value).map(Strict)
    }
}

/// `value` as a `T`, if it is a JSON object whose fields all fit; the problem names the field.
pub(super) fn strict_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, Problem> {
    if !value.is_object() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the body must be a JSON object",
        )
        .field("body", format!("a JSON object, not {}", json_kind(&value))));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // An unknown field is reported at its parent; name the field itself.
        let field = match path.as_str() {
            "." => message.split('`').nth(1).unwrap_or("body").to_owned(),
            p => p.to_owned(),
        };
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the body does not match the schema",
        )
        .field(&field, format!("{path}: {message}"))
    })
}

/// A reason that travels in a commit message: one line of at most `max` characters.
pub(super) fn one_line_reason(
    reason: Option<&str>,
    max: usize,
    status: StatusCode,
    field: &str,
) -> Result<(), Problem> {
    if reason.is_some_and(|r| r.chars().count() > max || r.chars().any(char::is_control)) {
        let slug = if status == StatusCode::BAD_REQUEST {
            "invalid-query"
        } else {
            "invalid-body"
        };
        return Err(
            Problem::new(status, slug, "reason is not one line of text").field(
                field,
                format!("one line, at most {max} characters, no control characters"),
            ),
        );
    }
    Ok(())
}

pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
