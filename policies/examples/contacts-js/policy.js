// A governance policy in JavaScript, compiled to a component with componentize-js: proof that
// the tenancy:policy contract is not Rust-only. It exports the same `info` and `evaluate` as
// the Rust policies (see policies/wit/policy.wit) and imports nothing.
//
// Rules:
//   contacts.incident-required — an Active tenant with a `prod` environment names an incident
//                                 contact (someone must be paged when production breaks);
//   contacts.shared-inbox      — warn when the incident contact is also the billing contact.

const RULES = ["contacts.incident-required", "contacts.shared-inbox"];

export function info() {
  return { name: "contacts", version: "1.0.0", rules: RULES };
}

export function evaluate(input) {
  const tenant = JSON.parse(input.tenant);
  const spec = tenant.spec || {};
  const contacts = spec.contacts || {};
  const envs = spec.environments || [];
  const out = [];
  const hasProd = envs.some((e) => e.name === "prod");
  if (spec.lifecycle === "Active" && hasProd && !contacts.incident) {
    out.push({
      rule: "contacts.incident-required",
      message: `tenant ${tenant.metadata.id} runs production but names no incident contact (spec.contacts.incident)`,
      path: "/spec/contacts",
      severity: "deny",
    });
  }
  if (contacts.incident && contacts.incident === contacts.billing) {
    out.push({
      rule: "contacts.shared-inbox",
      message: `the incident contact ${contacts.incident} is also the billing contact; pages may go unnoticed`,
      path: "/spec/contacts/incident",
      severity: "warn",
    });
  }
  return out;
}
