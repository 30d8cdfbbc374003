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
    components(schemas(Problem, FieldError, PatchBody)),
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

/// Request bodies that carry manifest fields are described by the manifest's own JSON Schemas
/// (`schemas/*.schema.json`, the ones `tenancy validate` applies), so the document and the
/// validator cannot disagree: their `$defs` become components named `manifest.<def>`. They are
/// put into the document as JSON (utoipa's typed schemas cannot hold every JSON Schema
/// construct, and a schema it cannot hold must not silently go missing).
/// Point the `$ref`s of a bundled schema (`#/$defs/x`, `common.schema.json#/$defs/x`) at the
/// components they become; a ref to a component already is left alone.
fn rewrite_refs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get_mut("$ref")
                && !r.starts_with("#/components/")
            {
                let def = r.rsplit('/').next().unwrap_or_default().to_owned();
                *r = format!("#/components/schemas/manifest.{def}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// `schema`, or null (an optional field may be sent as null: it is then left out).
fn nullable(schema: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "anyOf": [schema, { "type": "null" }] })
}

fn manifest_ref(def: &str) -> serde_json::Value {
    serde_json::json!({ "$ref": format!("#/components/schemas/manifest.{def}") })
}

fn manifest_schemas(doc: &mut serde_json::Value) {
    {
        use serde_json::json;
        let parse = |text: &str| -> serde_json::Value {
            serde_json::from_str(text).expect("the bundled schemas are JSON")
        };
        let common = parse(include_str!("../../../schemas/common.schema.json"));
        let tenant = parse(include_str!("../../../schemas/tenant.schema.json"));
        let events = parse(include_str!("../../../schemas/event.schema.json"));
        let mut components: Vec<(String, serde_json::Value)> = Vec::new();
        for (name, def) in common["$defs"].as_object().into_iter().flatten() {
            components.push((name.clone(), def.clone()));
        }
        let spec = &tenant["properties"]["spec"]["properties"];
        components.push(("environment".into(), spec["environments"]["items"].clone()));
        components.push(("policies".into(), spec["policies"].clone()));
        components.push(("billing".into(), spec["billing"].clone()));
        let environments = |nullable_items: bool| {
            let items = json!({ "oneOf": [manifest_ref("envName"), manifest_ref("environment")] });
            let list = json!({ "type": "array", "minItems": 1, "maxItems": 16, "items": items });
            if nullable_items { nullable(list) } else { list }
        };
        let optional = |def: &str| nullable(manifest_ref(def));
        let create = json!({
            "type": "object",
            "description": "A new tenant (seed 000 §1). `regions` and `plan` default to the organization's `spec.defaults`; `plan` also defaults to `billing.plan`.",
            "additionalProperties": false,
            "required": ["tenantId", "organizationId", "profile", "environments"],
            "properties": {
                "tenantId": manifest_ref("identifier"),
                "organizationId": manifest_ref("identifier"),
                "profile": manifest_ref("profile"),
                "environments": environments(false),
                "displayName": optional("displayName"),
                "labels": optional("labels"),
                "plan": optional("name"),
                "regions": optional("regions"),
                "quotas": optional("quotas"),
                "policies": optional("policies"),
                "billing": optional("billing"),
                "contacts": optional("contacts"),
                "externalIds": optional("externalIds"),
            },
        });
        // A merge patch: objects are merged key by key (so their fields are all optional
        // here), null removes a field, anything else replaces it.
        let object = json!({
            "type": ["object", "null"],
            "additionalProperties": true,
            "description": "Merged into the manifest's field key by key; a null value removes a key, null removes the field.",
        });
        let patch = json!({
            "type": "object",
            "description": "A JSON merge patch (RFC 7396) of the tenant's manifest (seed 000 §5, §13). The lifecycle changes only through :activate, :suspend and DELETE.",
            "additionalProperties": false,
            "properties": {
                "profile": manifest_ref("profile"),
                "plan": manifest_ref("name"),
                "displayName": optional("displayName"),
                "environments": environments(true),
                "regions": object, "quotas": object, "policies": object, "billing": object,
                "contacts": object, "externalIds": object, "labels": object,
            },
        });
        let event_types = events["properties"]["type"]["enum"].clone();
        let schemas = &mut doc["components"]["schemas"];
        let mut put = |name: String, mut schema: serde_json::Value| {
            rewrite_refs(&mut schema);
            schemas[name] = schema;
        };
        for (name, def) in components {
            put(format!("manifest.{name}"), def);
        }
        put("CreateBody".into(), create);
        put("PatchBody".into(), patch);
        // Webhook event filters are the event types the reconciler emits.
        schemas["WebhookBody"]["properties"]["events"] = json!({
            "type": "array",
            "items": { "type": "string", "enum": event_types },
            "maxItems": crate::webhooks::MAX_EVENT_FILTERS,
        });
    }
}

/// Which pattern a parameter or property of this name holds, from the id newtypes' one
/// definition (`manifest::ids`); `in_tenant_path` says whether an `id` is a tenant's.
fn id_pattern(name: &str, in_tenant_path: bool) -> Option<&'static str> {
    use crate::manifest::ids::{ENV_NAME_PATTERN, ID_PATTERN};
    match name {
        "id" if in_tenant_path => Some(ID_PATTERN),
        "tenantId" | "organizationId" | "tenant" => Some(ID_PATTERN),
        "env" => Some(ENV_NAME_PATTERN),
        _ => None,
    }
}

/// Every tenant id, organization id and environment name in the document — path and query
/// parameters, request and response properties — gets its pattern from `manifest::ids`, so the
/// document can never disagree with what the server accepts.
fn ids_from_newtypes(doc: &mut serde_json::Value) {
    fn set(schema: &mut serde_json::Value, pattern: &str) {
        // `Option<String>` is written as a one-of with null, or a type list.
        if let Some(alternatives) = schema.get_mut("oneOf").and_then(|v| v.as_array_mut()) {
            for a in alternatives.iter_mut().filter(|a| a["type"] == "string") {
                a["pattern"] = pattern.into();
            }
        } else {
            schema["pattern"] = pattern.into();
        }
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let in_tenant_path = path.contains("/tenants/{id}");
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
                    continue;
                };
                for p in params {
                    let name = p["name"].as_str().unwrap_or_default().to_owned();
                    if let Some(pattern) = id_pattern(&name, in_tenant_path)
                        && let Some(schema) = p.get_mut("schema")
                    {
                        set(schema, pattern);
                    }
                }
            }
        }
    }
    // Request bodies (`…Body`): what a client sends. Responses echo what the server wrote,
    // where a field of the same name may hold a link or `*`.
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (_, schema) in schemas
            .iter_mut()
            .filter(|(name, _)| name.ends_with("Body"))
        {
            let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
                continue;
            };
            for (name, prop) in props.iter_mut() {
                // An explicit pattern of another kind of field is kept.
                if let Some(pattern) = id_pattern(name, false)
                    && prop.get("pattern").is_none()
                    && (prop["type"] == "string"
                        || prop["type"]
                            .as_array()
                            .is_some_and(|t| t.contains(&"string".into())))
                {
                    set(prop, pattern);
                }
            }
        }
    }
}

/// The document, pretty-printed (what `docs/openapi.json` holds).
pub fn document() -> String {
    let mut api = ApiDoc::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    manifest_schemas(&mut doc);
    ids_from_newtypes(&mut doc);
    // An action's body is optional, and is an object when sent (the server also takes
    // `null`): said as a not-required body of the object's schema, which is what client
    // generators turn into "omit the body" (openapi-python-client would send a `null` body, or
    // fail, for a nullable one).
    for action in ["activate", "suspend"] {
        let body =
            &mut doc["paths"][format!("{BASE}/tenants/{{id}}:{action}")]["post"]["requestBody"];
        body["required"] = false.into();
        body["content"]["application/json"]["schema"] =
            serde_json::json!({ "$ref": "#/components/schemas/ActionBody" });
    }
    serde_json::to_string_pretty(&doc).expect("the OpenAPI document serializes") + "\n"
}

#[cfg(test)]
mod tests {
    /// Ids in the OpenAPI document, the manifest schema and the newtypes' parse say the same
    /// thing: one definition (`manifest::ids`), checked against the other two.
    #[test]
    fn id_patterns_come_from_the_newtypes() {
        use crate::manifest::ids::{ENV_NAME_PATTERN, EnvName, ID_PATTERN, TenantId};
        let doc: serde_json::Value = serde_json::from_str(&super::document()).expect("json");
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for op in item.as_object().expect("operations").values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().expect("name");
                    if let Some(want) = super::id_pattern(name, path.contains("/tenants/{id}")) {
                        assert_eq!(p["schema"]["pattern"], want, "{path} {name}");
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen >= 10, "{seen} id parameters");
        // Bounds the document states are the server's constants.
        let hook = &doc["components"]["schemas"]["WebhookBody"]["properties"];
        assert_eq!(hook["url"]["maxLength"], crate::webhooks::MAX_URL_CHARS);
        assert_eq!(
            hook["events"]["maxItems"],
            crate::webhooks::MAX_EVENT_FILTERS
        );
        let common: serde_json::Value =
            serde_json::from_str(crate::validate::schema::COMMON).expect("common schema");
        assert_eq!(common["$defs"]["identifier"]["pattern"], ID_PATTERN);
        assert_eq!(common["$defs"]["envName"]["pattern"], ENV_NAME_PATTERN);
        let matches = |pattern: &str, s: &str| {
            jsonschema::is_valid(&serde_json::json!({ "pattern": pattern }), &s.into())
        };
        for s in [
            "t_5001",
            "abc",
            "a1_",
            "ab",
            "T_5001",
            "t-5001",
            "1abc",
            &"a".repeat(64),
        ] {
            assert_eq!(TenantId::parse(s).is_ok(), matches(ID_PATTERN, s), "{s}");
        }
        for s in [
            "dev",
            "prod2",
            "d",
            "dev-eu",
            "Dev",
            &"e".repeat(17),
            &"e".repeat(16),
        ] {
            assert_eq!(
                EnvName::parse(s).is_ok(),
                matches(ENV_NAME_PATTERN, s),
                "{s}"
            );
        }
    }

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
        // Every reference resolves, and every array says what it holds (generators need it).
        fn walk(v: &serde_json::Value, doc: &serde_json::Value, at: &str) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
                    }
                    if map.get("type").is_some_and(|t| t == "array") {
                        assert!(map.contains_key("items"), "{at}: an array without items");
                    }
                    for (k, v) in map {
                        walk(v, doc, &format!("{at}/{k}"));
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, doc, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        walk(&doc, &doc, "");
    }
}
