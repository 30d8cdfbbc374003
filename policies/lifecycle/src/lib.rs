//! Lifecycle transitions, after the seed's lifecycle states:
//!
//! * Draft → Active (activation); Active → Suspended; Suspended → Active (resume);
//!   Suspended → Archived. Staying in a state is always allowed.
//! * Archived → anything but Deleted is refused: recovery needs a restore workflow.
//! * Deleted is terminal, and entering it needs `spec.deletion.confirm` equal to the tenant id.
use tenancy_policy_sdk::*;

pub struct Lifecycle;

fn allowed(from: &str, to: &str) -> bool {
    from == to
        || to == "Deleted" && from != "Deleted"
        || matches!(
            (from, to),
            ("Draft", "Active") | ("Active", "Suspended") | ("Suspended", "Active") | ("Suspended", "Archived")
        )
}

impl Policy for Lifecycle {
    const NAME: &'static str = "lifecycle";
    const VERSION: &'static str = "1.0.0";
    const RULES: &'static [&'static str] = &["lifecycle.transition-not-allowed", "lifecycle.delete-unconfirmed"];

    fn evaluate(ctx: &Context) -> Vec<Violation> {
        let t = &ctx.tenant;
        let to = t.spec.lifecycle.as_str();
        let mut out = Vec::new();
        if let Some(prev) = &ctx.previous {
            let from = prev.spec.lifecycle.as_str();
            if !allowed(from, to) {
                let why = match from {
                    "Archived" => " (an archived tenant is restored through the restore workflow, not by editing its state)",
                    "Deleted" => " (Deleted is terminal)",
                    _ => "",
                };
                out.push(deny(
                    "lifecycle.transition-not-allowed",
                    ptr!("spec", "lifecycle"),
                    format!("lifecycle may not change from {from} to {to}{why}"),
                ));
            }
        }
        let confirmed = t.spec.deletion.as_ref().is_some_and(|d| d.confirm == t.metadata.id);
        if to == "Deleted" && !confirmed {
            out.push(deny(
                "lifecycle.delete-unconfirmed",
                ptr!("spec", "lifecycle"),
                format!("deleting a tenant needs `spec.deletion.confirm: {}` (the tenant id, typed again)", t.metadata.id),
            ));
        }
        out
    }
}

#[cfg(target_arch = "wasm32")]
export_policy!(Lifecycle);
