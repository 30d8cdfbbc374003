# Rego equivalent of policies/quotas.
package tenancy.quotas

import rego.v1

spec := input.tenant.spec

plans := {p.metadata.name: p | some p in data.platform.plans}

plan := plans[spec.plan]

quotas := object.get(spec, "quotas", {})

violations contains {"rule": "quotas.unknown-plan", "path": "/spec/plan", "message": "plan is not declared"} if not plans[spec.plan]

violations contains {"rule": "quotas.profile-not-in-plan", "path": "/spec/profile", "message": sprintf("plan does not offer %s", [spec.profile])} if {
	not spec.profile in plan.spec.profiles
}

violations contains {"rule": "quotas.over-plan", "path": sprintf("/spec/quotas/%s", [f]), "message": sprintf("%s %d exceeds %d", [f, v, c])} if {
	some f in ["storageGiB", "concurrentJobs", "apiRateLimit"]
	v := quotas[f]
	c := plan.spec.ceilings[f]
	v > c
}

violations contains {"rule": "quotas.near-ceiling", "path": sprintf("/spec/quotas/%s", [f]), "message": sprintf("%s %d is near %d", [f, v, c])} if {
	some f in ["storageGiB", "concurrentJobs", "apiRateLimit"]
	v := quotas[f]
	c := plan.spec.ceilings[f]
	v <= c
	v * 100 >= c * 90
}

violations contains {"rule": "quotas.environments-exceed-tenant", "path": "/spec/environments", "message": sprintf("%d GiB > %d GiB", [total, quotas.storageGiB])} if {
	total := sum([s | some e in spec.environments; s := e.quotas.storageGiB])
	total > quotas.storageGiB
}

violations contains {"rule": "quotas.retention-over-plan", "path": "/spec/policies/retentionDays", "message": "retention exceeds plan"} if {
	spec.policies.retentionDays > plan.spec.maxRetentionDays
}

violations contains {"rule": "quotas.retention-over-plan", "path": sprintf("/spec/environments/%d/retentionDays", [i]), "message": "retention exceeds plan"} if {
	some i, e in spec.environments
	e.retentionDays > plan.spec.maxRetentionDays
}
