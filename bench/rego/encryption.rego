# Rego equivalent of policies/encryption.
package tenancy.encryption

import rego.v1

regions := {r.metadata.name: r | some r in data.platform.regions}

spec := input.tenant.spec

enc := object.get(object.get(spec, "policies", {}), "encryption", "unset")

strength := {"kms-per-tenant": 2, "platform-managed": 1, "unset": 0}

placement contains r if some r in spec.regions.allowed

placement contains spec.regions.preferred

placement contains e.region if {
	some e in spec.environments
	e.region
}

violations contains {"rule": "encryption.kms-unavailable", "path": "/spec/policies/encryption", "message": sprintf("region `%s` has no per-tenant keys", [r])} if {
	enc == "kms-per-tenant"
	some r in placement
	regions[r].spec.encryption.perTenantKeys == false
}

violations contains {"rule": "encryption.required", "path": "/spec/policies", "message": "dedicated data planes must declare encryption"} if {
	spec.profile in {"st-dedicated", "hybrid"}
	enc == "unset"
}

violations contains {"rule": "encryption.weakened", "path": "/spec/policies/encryption", "message": "encryption may not be weakened"} if {
	before := object.get(object.get(input.previous.spec, "policies", {}), "encryption", "unset")
	strength[enc] < strength[before]
}
