# Rego equivalent of policies/residency (for the benchmark's side-by-side figure).
package tenancy.residency

import rego.v1

regions := {r.metadata.name: r | some r in data.platform.regions}

spec := input.tenant.spec

mode := object.get(object.get(spec, "policies", {}), "dataResidency", "unrestricted")

placements contains [sprintf("/spec/regions/allowed/%d", [i]), r] if some i, r in spec.regions.allowed

placements contains ["/spec/regions/preferred", spec.regions.preferred]

placements contains [sprintf("/spec/environments/%d/region", [i]), e.region] if {
	some i, e in spec.environments
	e.region
}

violations contains {"rule": "residency.preferred-not-allowed", "path": "/spec/regions/preferred", "message": msg} if {
	not spec.regions.preferred in spec.regions.allowed
	msg := sprintf("preferred region `%s` is not in regions.allowed", [spec.regions.preferred])
}

violations contains {"rule": "residency.environment-region-not-allowed", "path": sprintf("/spec/environments/%d/region", [i]), "message": msg} if {
	some i, e in spec.environments
	e.region
	not e.region in spec.regions.allowed
	msg := sprintf("environment `%s` is placed in `%s`, which is not in regions.allowed", [e.name, e.region])
}

violations contains {"rule": "residency.single-region-required", "path": "/spec/regions/allowed", "message": "in-region-only allows one region"} if {
	mode == "in-region-only"
	count(spec.regions.allowed) > 1
}

violations contains {"rule": "residency.unknown-region", "path": p[0], "message": sprintf("region `%s` is not declared", [p[1]])} if {
	some p in placements
	not regions[p[1]]
}

violations contains {"rule": "residency.outside-zone", "path": p[0], "message": sprintf("region `%s` is outside zone `%s`", [p[1], zone])} if {
	mode != "unrestricted"
	zone := regions[spec.regions.preferred].spec.residencyZone
	some p in placements
	regions[p[1]].spec.residencyZone != zone
}
