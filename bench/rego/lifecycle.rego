# Rego equivalent of policies/lifecycle.
package tenancy.lifecycle

import rego.v1

to := input.tenant.spec.lifecycle

allowed_moves := {["Draft", "Active"], ["Active", "Suspended"], ["Suspended", "Active"], ["Suspended", "Archived"]}

allowed(from, to) if from == to

allowed(from, "Deleted") if from != "Deleted"

allowed(from, to) if [from, to] in allowed_moves

violations contains {"rule": "lifecycle.transition-not-allowed", "path": "/spec/lifecycle", "message": sprintf("%s -> %s", [from, to])} if {
	from := input.previous.spec.lifecycle
	not allowed(from, to)
}

violations contains {"rule": "lifecycle.delete-unconfirmed", "path": "/spec/lifecycle", "message": "deletion needs confirmation"} if {
	to == "Deleted"
	not input.tenant.spec.deletion.confirm == input.tenant.metadata.id
}
