//! How the SDK's failures become [`PlaneError`]s: unavailable targets, refused requests, an
//! absent resource that is not an error, and replies some servers get wrong.

use super::PLANE;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tenancy_plane::PlaneError;

pub(super) fn unavailable(target: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unavailable {
        plane: PLANE,
        message: format!("target `{target}`: {e}"),
    }
}

/// An SDK error as a plane error: a connection or timeout failure means the service is
/// unavailable (the whole target), anything else fails this resource.
pub(super) fn sdk_error<E>(resource: &str, e: SdkError<E, HttpResponse>) -> PlaneError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let message = match (e.code(), &e) {
        (Some(code), _) => format!("{code}: {}", e.message().unwrap_or("(no message)")),
        // An unparseable reply: say what the client saw, not the whole raw response.
        (None, SdkError::ServiceError(s)) => format!(
            "unexpected reply (HTTP {}): {}",
            s.raw().status().as_u16(),
            first_chars(&DisplayErrorContext(s.err()).to_string(), 300)
        ),
        (None, _) => first_chars(&DisplayErrorContext(&e).to_string(), 300),
    };
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => PlaneError::Unavailable {
            plane: PLANE,
            message: format!("{resource}: {message}"),
        },
        _ => PlaneError::Failed {
            plane: PLANE,
            resource: resource.to_owned(),
            message,
        },
    }
}

/// `Ok(None)` when the error is one of `absent` (e.g. `NoSuchTagSet`): the setting is unset.
pub(super) fn absent_ok<T, E>(
    resource: &str,
    result: Result<T, SdkError<E, HttpResponse>>,
    absent: &[&str],
) -> Result<Option<T>, PlaneError>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code().is_some_and(|c| absent.contains(&c)) => Ok(None),
        Err(e) => Err(sdk_error(resource, e)),
    }
}

pub(super) fn first_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Some S3 implementations (moto 5.2, at least) answer GetBucketVersioning with the root
/// element `GetBucketVersioningResponse` instead of S3's `VersioningConfiguration`, which the
/// SDK's strict parser rejects. The reply is otherwise S3's, so its status is read from the raw
/// body the error keeps; any other failure stays a failure.
pub(super) fn versioning_from_misnamed_reply<E>(e: &SdkError<E, HttpResponse>) -> Option<bool> {
    let SdkError::ServiceError(s) = e else {
        return None;
    };
    let text = std::str::from_utf8(s.raw().body().bytes()?).ok()?;
    text.contains("<GetBucketVersioningResponse")
        .then(|| text.contains("<Status>Enabled</Status>"))
}

pub(super) fn build_error(resource: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Failed {
        plane: PLANE,
        resource: resource.to_owned(),
        message: e.to_string(),
    }
}
