#!/usr/bin/env python3
"""Seed 000's examples, as written, through the Python client that openapi-python-client
generates from docs/openapi.json (scripts/openapi-clients.sh generates it as `tenancy_client`
and runs this against a daemon whose repository has the platform and organizations but no
tenant yet).

    PYTHONPATH=<dir holding tenancy_client> seed-client.py BASE_URL TOKEN

Each step is the seed's request as the seed writes it, one right after the other (no waiting
for the daemon between a write and the next request); a step that fails says which and why.
"""
import sys
import time

from tenancy_client import AuthenticatedClient
from tenancy_client.api.billing import post_usage
from tenancy_client.api.governance import governance
from tenancy_client.api.jobs import get_job
from tenancy_client.api.tenants import (
    activate_tenant,
    create_tenant,
    delete_tenant,
    environments,
    get_tenant,
    list_tenants,
    patch_tenant,
    suspend_tenant,
    topology,
)
from tenancy_client.api.webhooks import create_webhook
from tenancy_client.models import (
    ActionBody,
    CreateBody,
    PatchBody,
    UsageBody,
    WebhookBody,
)

base, token = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base, token=token, timeout=30.0)


def check(step, response, status):
    if response.status_code != status:
        sys.exit(f"seed 000 {step}: {response.status_code}, not {status}: {response.content!r}")
    return response.parsed


def completed(step, job_id):
    """Poll §14 until the job completes."""
    deadline = time.time() + 60
    while time.time() < deadline:
        job = check(step, get_job.sync_detailed(job_id, client=client), 200)
        if job.state == "Completed":
            return job
        if job.state == "Failed":
            sys.exit(f"seed 000 {step}: job {job_id} failed: {job.error}")
        time.sleep(0.2)
    sys.exit(f"seed 000 {step}: job {job_id} did not complete")


# §1 Creating a tenant.
created = check("§1", create_tenant.sync_detailed(client=client, body=CreateBody.from_dict({
    "tenantId": "t_5001",
    "organizationId": "org_acme",
    "profile": "mt-standard",
    "environments": ["dev", "prod"],
    "quotas": {"storageGiB": 200, "concurrentJobs": 10},
    "policies": {"dataResidency": "in-region-only", "encryption": "kms-per-tenant"},
    "billing": {"plan": "starter"},
})), 201)
assert created.id == "t_5001" and created.state == "Draft", created

# §2 Activating it, right away; polling the job.
activated = check("§2", activate_tenant.sync_detailed("t_5001", client=client), 202)
assert activated.links.self_ == f"/api/tenancy/v1/jobs/{activated.job_id}", activated
completed("§2", activated.job_id)

# §3 Listing.
page = check("§3", list_tenants.sync_detailed(client=client, org="org_acme", state="Active"), 200)
assert [t.tenant_id for t in page.items] == ["t_5001"], page
assert page.items[0].region == "ap-south-1", page

# §4 Topology.
topo = check("§4", topology.sync_detailed("t_5001", client=client, env="prod"), 200)
assert topo.profile == "mt-standard", topo
assert topo.object_store["prefix"] == "tenants/t_5001/prod/", topo.object_store

# §6 Environments, with the quotas that apply.
envs = check("§6", environments.sync_detailed("t_5001", client=client), 200)
assert [e.name for e in envs.items] == ["dev", "prod"], envs
assert all(e.quota["storageGiB"] == 200 for e in envs.items), [e.quota for e in envs.items]

# §7 A webhook.
hook = check("§7", create_webhook.sync_detailed(client=client, body=WebhookBody.from_dict({
    "url": "https://ops.example.com/hooks/tenancy",
    "events": ["TENANCY_ACTIVATED", "TENANCY_SUSPENDED"],
    "secret": "whsec_demo",
})), 201)
assert hook.webhook_id, hook

# §8 Policies bound to the tenant.
bound = check("§8", governance.sync_detailed(client=client, tenant_id="t_5001", env="prod"), 200)
rules = {p.name: (p.rule, p.enforced) for p in bound.policies}
assert rules["DataResidency"] == ("in-region-only", True), rules
assert rules["Encryption"] == ("kms-per-tenant", True), rules

# §9 Usage, as the seed sends it (no Idempotency-Key); a retry is the same record.
usage = UsageBody.from_dict({
    "tenantId": "t_5001", "env": "prod", "resource": "storageGiBHours",
    "amount": 100.2, "timestamp": "2025-10-08T15:20:00Z",
})
first = check("§9", post_usage.sync_detailed(client=client, body=usage), 202)
again = check("§9 (retry)", post_usage.sync_detailed(client=client, body=usage), 202)
assert first.accepted and again.record_id == first.record_id, (first, again)

# §5 / §13 A profile change: the starter plan offers mt-standard only (the quotas policy says
# so, 422); on the enterprise plan the same request is a migration job.
check("§5 (starter)", patch_tenant.sync_detailed("t_5001", client=client, body=PatchBody.from_dict(
    {"profile": "st-dedicated", "quotas": {"storageGiB": 500}})), 422)
check("§5 (plan)", patch_tenant.sync_detailed("t_5001", client=client, body=PatchBody.from_dict(
    {"plan": "enterprise", "billing": {"plan": "enterprise"}})), 200)
patched = check("§5", patch_tenant.sync_detailed("t_5001", client=client, body=PatchBody.from_dict(
    {"profile": "st-dedicated", "quotas": {"storageGiB": 500}})), 200)
assert patched.profile == "st-dedicated" and patched.job_id, patched
assert "Migration in progress" in patched.message, patched
completed("§13", patched.job_id)

# §10 Suspension with a reason, then §12 deletion right away (force=false).
suspended = check("§10", suspend_tenant.sync_detailed(
    "t_5001", client=client, body=ActionBody.from_dict({"reason": "billing"})), 202)
deleted = check("§12", delete_tenant.sync_detailed("t_5001", client=client, force=False), 202)
assert deleted.state == "Queued", deleted

# §14 The job, completed.
job = completed("§14", deleted.job_id)
assert job.progress == 1.0, job
completed("§10", suspended.job_id)
tenant = check("§12", get_tenant.sync_detailed("t_5001", client=client), 200)
assert tenant.state == "Deleted", tenant
print("seed 000: every example worked through the generated Python client")
