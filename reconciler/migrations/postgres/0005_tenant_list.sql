-- The API lists tenants by id within a filter: composite indexes give each page without a sort.
CREATE INDEX tenants_organization_id ON tenants (organization_id, tenant_id);
CREATE INDEX tenants_state_id ON tenants (state, tenant_id);
CREATE INDEX tenants_region_id ON tenants (region, tenant_id);
