//! The OpenAPI 3.1 document of `/api/tenancy/v1`, generated from the handlers' annotations and
//! the request types (utoipa). Served at `/api/tenancy/v1/openapi.json` and committed as
//! `docs/openapi.json`; a test keeps the two equal.

use super::*;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tenancy API",
        description = "Tenants, their lifecycle and topology, jobs, governance, usage, webhooks and events. Writes are Git commits to the repository the daemon watches, judged by the same schema and policies as a pull request.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        list_tenants,
        create_tenant,
        get_tenant,
        patch_tenant,
        delete_tenant,
        activate_tenant,
        suspend_tenant,
        by_external_id,
        environments,
        topology,
        get_job,
        governance,
        post_usage,
        create_webhook,
        list_webhooks,
        delete_webhook,
        event_stream,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&Bearer),
    tags(
        (name = "tenants", description = "Tenants: create, read, change, lifecycle, delete, topology"),
        (name = "jobs", description = "The jobs that converge changes"),
        (name = "governance", description = "Policies bound to a tenant"),
        (name = "billing", description = "Usage reports"),
        (name = "webhooks", description = "Signed event deliveries"),
        (name = "events", description = "Server-Sent Events"),
    )
)]
struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from [[api.tokens]] (stored there as its SHA-256)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, pretty-printed (what `docs/openapi.json` holds).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.to_pretty_json()
        .expect("the OpenAPI document serializes")
        + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("TENANCY_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: regenerate it with TENANCY_UPDATE_OPENAPI=1 cargo test -p tenancy --lib openapi"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).expect("json");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(13));
    }
}
