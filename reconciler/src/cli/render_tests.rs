//! The renderers are pure functions over report values: each is snapshot-tested here,
//! in-process, on one hand-made plan (a create, a drift, a refused change, a blocked tenant,
//! an unobservable plane, a skipped plane, and manifest text that tries to format the output).
//! `UPDATE_EXPECT=1 cargo test -p tenancy --lib cli::render_tests` rewrites the snapshots.

use crate::diagnostics::Finding;
use crate::reconcile::{PlacementView, PlanReport, PlaneView, TenantPlan};
use expect_test::expect;
use tenancy_plane::{Change, FieldChange, Op};

/// A change of one field (`field`, before, after) of `resource`, in the postgres plane.
fn change(
    tenant: &str,
    env: &str,
    resource: &str,
    op: Op,
    (field, before, after): (&str, Option<&str>, Option<&str>),
) -> Change {
    Change {
        plane: "postgres",
        tenant: tenant.into(),
        environment: env.into(),
        resource: resource.into(),
        op,
        fields: vec![FieldChange::new(
            field,
            before.map(str::to_owned),
            after.map(str::to_owned),
        )],
        refused: None,
        desired: None,
    }
}

fn tenant(id: &str, lifecycle: &str, env: &str, changes: Vec<Change>) -> TenantPlan {
    TenantPlan {
        tenant: id.into(),
        file: format!("org_acme/{id}.yaml"),
        lifecycle: lifecycle.into(),
        placements: vec![PlacementView {
            environment: env.into(),
            plane: "postgres".into(),
            region: "ap-south-1".into(),
            target: "pg-ap-south-1-shared".into(),
        }],
        changes,
        blocked: vec![],
        errors: vec![],
    }
}

fn plan() -> PlanReport {
    let mut refused = change(
        "t_5003",
        "prod",
        "topic t_5003_prod",
        Op::Update,
        ("partitions", Some("6"), Some("3")),
    );
    refused.plane = "kafka";
    refused.refused = Some("Kafka partitions only grow".into());
    PlanReport {
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        planes: vec![
            PlaneView {
                plane: "postgres".into(),
                backend: Some("PostgreSQL 15".into()),
                skipped: None,
            },
            PlaneView {
                plane: "redis".into(),
                backend: None,
                skipped: Some("no [redis] section".into()),
            },
        ],
        tenants: vec![
            tenant(
                "t_5001",
                "Active",
                "dev",
                vec![change(
                    "t_5001",
                    "dev",
                    "schema t_5001_dev",
                    Op::Create,
                    ("owner", None, Some("t_5001_dev")),
                )],
            ),
            TenantPlan {
                errors: vec!["postgres: target pg-eu unreachable".into()],
                ..tenant(
                    "t_5002",
                    "Suspended",
                    "prod",
                    vec![change(
                        "t_5002",
                        "prod",
                        "role t_5002_prod",
                        Op::Update,
                        (
                            "login",
                            Some("true"),
                            Some("false\u{1b}[2J **bold** | cell"),
                        ),
                    )],
                )
            },
            TenantPlan {
                blocked: vec!["schema.enum: `spec.profile` is not allowed".into()],
                ..tenant("t_5003", "Active", "prod", vec![refused])
            },
            // No environment: nothing placed, nothing to change.
            TenantPlan {
                placements: vec![],
                ..tenant("t_5004", "Active", "dev", vec![])
            },
        ],
        removed: vec!["org_acme/t_5009.yaml".into()],
    }
}

fn findings() -> Vec<Finding> {
    vec![
        Finding::error(
            "org_acme/t_5003.yaml",
            "schema.enum",
            "`spec.profile` is not allowed",
        )
        .tenant(Some("t_5003")),
    ]
}

#[test]
fn plan_as_text() {
    let mut out = Vec::new();
    super::plan::write_text(&mut out, &plan(), "HEAD", false).expect("write");
    expect![[r#"
        Tenancy plan for HEAD (0123456789ab): 4 tenant(s)
          plane postgres: PostgreSQL 15
          plane redis: skipped — no [redis] section

        t_5001 (Active) org_acme/t_5001.yaml
          placement: dev/postgres→pg-ap-south-1-shared (ap-south-1)
          + postgres schema t_5001_dev
              owner: t_5001_dev

        t_5002 (Suspended) org_acme/t_5002.yaml
          error: postgres: target pg-eu unreachable
          placement: prod/postgres→pg-ap-south-1-shared (ap-south-1)
          ~ postgres role t_5002_prod
              login: true → false\u{1b}[2J **bold** | cell

        t_5003 (Active) org_acme/t_5003.yaml
          blocked: schema.enum: `spec.profile` is not allowed
          placement: prod/postgres→pg-ap-south-1-shared (ap-south-1)
          ! kafka topic t_5003_prod — refused: Kafka partitions only grow
              partitions: 6 → 3

        removed: org_acme/t_5009.yaml — its resources are kept; declare `lifecycle: Deleted` with a confirmation to remove them

        Plan: 1 to create, 2 to change, 0 to delete; 1 tenant(s) blocked, 1 could not be planned, 1 up to date.
    "#]].assert_eq(&String::from_utf8(out).expect("utf-8"));
}

#[test]
fn plan_as_a_pull_request_comment() {
    let findings = findings();
    let refs: Vec<&Finding> = findings.iter().collect();
    let comment =
        super::markdown::plan_comment(&plan(), &refs, "HEAD", "tenancy plan --output json", 65_536);
    expect![[r#"
        ### Tenancy plan for `0123456789ab` — ⚠️ could not be fully planned

        **1 to create, 2 to change, 0 to delete** · 4 tenant(s) planned · 1 blocked

        #### Blocked

        - ❌ `t_5003` (`org_acme/t_5003.yaml`): schema.enum: \`spec.profile\` is not allowed; kafka topic t\_5003\_prod: Kafka partitions only grow

        | | Where | Rule | Message |
        |---|---|---|---|
        | ❌ | `org_acme/t_5003.yaml` | `schema.enum` | \`spec.profile\` is not allowed |

        <details><summary><code>t_5001</code> (Active) — 1 change(s), ok</summary>

        ```diff
        + postgres schema t_5001_dev
            owner: t_5001_dev
        ```

        </details>

        <details><summary><code>t_5002</code> (Suspended) — 1 change(s), not planned</summary>

        - postgres: target pg-eu unreachable
        ```diff
        ~ postgres role t_5002_prod
            login: true → false [2J **bold** | cell
        ```

        </details>

        - `org_acme/t_5009.yaml` removed: its resources are kept until a confirmed `lifecycle: Deleted`.
    "#]].assert_eq(&comment);
}

#[test]
fn plan_as_json() {
    let report = plan();
    let findings = findings();
    let refs: Vec<&Finding> = findings.iter().collect();
    let value = super::plan::json_plan(&report, &refs, "HEAD");
    let text = serde_json::to_string_pretty(&value).expect("json");
    expect![[r#"
        {
          "apiVersion": "tenancy.dev/v1",
          "commit": "0123456789abcdef0123456789abcdef01234567",
          "findings": [
            {
              "column": null,
              "file": "org_acme/t_5003.yaml",
              "hint": null,
              "line": null,
              "message": "`spec.profile` is not allowed",
              "pointer": null,
              "policy": null,
              "rule": "schema.enum",
              "severity": "error",
              "tenant": "t_5003"
            }
          ],
          "kind": "Plan",
          "planes": [
            {
              "backend": "PostgreSQL 15",
              "plane": "postgres",
              "skipped": null
            },
            {
              "backend": null,
              "plane": "redis",
              "skipped": "no [redis] section"
            }
          ],
          "removed": [
            "org_acme/t_5009.yaml"
          ],
          "revision": "HEAD",
          "summary": {
            "blocked": 1,
            "create": 1,
            "delete": 0,
            "errors": 1,
            "tenants": 4,
            "update": 2
          },
          "tenants": [
            {
              "blocked": [],
              "changes": [
                {
                  "environment": "dev",
                  "fields": [
                    {
                      "after": "t_5001_dev",
                      "before": null,
                      "field": "owner"
                    }
                  ],
                  "op": "create",
                  "plane": "postgres",
                  "resource": "schema t_5001_dev",
                  "tenant": "t_5001"
                }
              ],
              "errors": [],
              "file": "org_acme/t_5001.yaml",
              "lifecycle": "Active",
              "placements": [
                {
                  "environment": "dev",
                  "plane": "postgres",
                  "region": "ap-south-1",
                  "target": "pg-ap-south-1-shared"
                }
              ],
              "tenant": "t_5001"
            },
            {
              "blocked": [],
              "changes": [
                {
                  "environment": "prod",
                  "fields": [
                    {
                      "after": "false\u001b[2J **bold** | cell",
                      "before": "true",
                      "field": "login"
                    }
                  ],
                  "op": "update",
                  "plane": "postgres",
                  "resource": "role t_5002_prod",
                  "tenant": "t_5002"
                }
              ],
              "errors": [
                "postgres: target pg-eu unreachable"
              ],
              "file": "org_acme/t_5002.yaml",
              "lifecycle": "Suspended",
              "placements": [
                {
                  "environment": "prod",
                  "plane": "postgres",
                  "region": "ap-south-1",
                  "target": "pg-ap-south-1-shared"
                }
              ],
              "tenant": "t_5002"
            },
            {
              "blocked": [
                "schema.enum: `spec.profile` is not allowed"
              ],
              "changes": [
                {
                  "environment": "prod",
                  "fields": [
                    {
                      "after": "3",
                      "before": "6",
                      "field": "partitions"
                    }
                  ],
                  "op": "update",
                  "plane": "kafka",
                  "refused": "Kafka partitions only grow",
                  "resource": "topic t_5003_prod",
                  "tenant": "t_5003"
                }
              ],
              "errors": [],
              "file": "org_acme/t_5003.yaml",
              "lifecycle": "Active",
              "placements": [
                {
                  "environment": "prod",
                  "plane": "postgres",
                  "region": "ap-south-1",
                  "target": "pg-ap-south-1-shared"
                }
              ],
              "tenant": "t_5003"
            },
            {
              "blocked": [],
              "changes": [],
              "errors": [],
              "file": "org_acme/t_5004.yaml",
              "lifecycle": "Active",
              "placements": [],
              "tenant": "t_5004"
            }
          ]
        }"#]]
    .assert_eq(&text);
}
