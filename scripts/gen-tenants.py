#!/usr/bin/env python3
"""Generate a tenant repository with N tenants (plus organizations and the platform files of
tenants/), committed to a fresh Git repository. Used by the benchmarks.

    scripts/gen-tenants.py 10000 /tmp/repo-10k [--seed 7]

Tenants are varied the way real ones are: three profiles, every lifecycle state, one to three
environments, several regions and plans, all valid. With --uniform every tenant is an Active
mt-standard tenant with two environments (dev, prod), as in the apply benchmark.
"""
import argparse, os, random, shutil, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGIONS = {"in": ["ap-south-1"], "eu": ["eu-west-1", "eu-central-1"], "us": ["us-east-1"]}
PLANS = {  # plan: (profiles, storage, jobs, api)
    "free": (["mt-standard"], 20, 2, 50),
    "starter": (["mt-standard"], 500, 20, 500),
    "business": (["mt-standard", "hybrid"], 2000, 50, 2000),
    "enterprise": (["mt-standard", "st-dedicated", "hybrid"], 20000, 200, 10000),
}
ENVS = ["dev", "qa", "staging", "prod"]
LIFECYCLE = ["Active"] * 6 + ["Draft", "Suspended", "Archived", "Deleted"]


def tenant(i, org, rng, uniform=False, prefix=""):
    tid = f"t_{prefix}{100000 + i}"
    plan = rng.choice(list(PLANS))
    profiles, storage, jobs, api = PLANS[plan]
    profile = "mt-standard" if uniform else rng.choice(profiles)
    zone = rng.choice(list(REGIONS))
    allowed = REGIONS[zone]
    lifecycle = "Active" if uniform else rng.choice(LIFECYCLE)
    envs = ["dev", "prod"] if uniform else rng.sample(ENVS, rng.randint(1, 3))
    per_env = max(1, storage // 2 // len(envs))
    env_lines = []
    for e in envs:
        extra = ", isolation: strict" if e == "prod" else f", retentionDays: {rng.choice([7, 14, 30])}"
        env_lines.append(f"    - {{ name: {e}, quotas: {{ storageGiB: {per_env} }}{extra} }}")
    enc = "kms-per-tenant" if zone != "us" else "platform-managed"
    residency = "in-region-only" if len(allowed) == 1 else "in-zone"
    text = f"""apiVersion: tenancy.dev/v1
kind: Tenant
metadata:
  id: {tid}
  organization: {org}
  displayName: Tenant {i} of {org}
  labels: {{ team: team-{i % 97}, tier: {plan} }}
spec:
  profile: {profile}
  lifecycle: {lifecycle}
  plan: {plan}
  regions: {{ allowed: [{", ".join(allowed)}], preferred: {allowed[0]} }}
  environments:
{chr(10).join(env_lines)}
  quotas: {{ storageGiB: {storage // 2}, concurrentJobs: {max(1, jobs // 2)}, apiRateLimit: {api // 2} }}
  policies: {{ dataResidency: {residency}, encryption: {enc}, retentionDays: 30 }}
  billing: {{ plan: {plan}, costCenter: cc-{i % 500} }}
  contacts: {{ technical: ops-{i}@{org}.example, billing: ap@{org}.example, incident: oncall@{org}.example }}
  externalIds: {{ crm: "crm-{i:08d}", billing: "cus_{i:08d}" }}
"""
    if lifecycle == "Deleted":
        text += f"  deletion: {{ confirm: {tid}, reason: generated }}\n"
    return tid, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("count", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--orgs", type=int, default=0, help="number of organizations (default count/50)")
    ap.add_argument("--uniform", action="store_true", help="Active mt-standard tenants with dev and prod")
    ap.add_argument("--id-prefix", default="", help="put this after `t_` in every tenant id (tests keep ids unique per run)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(os.path.join(args.out, "platform"))
    for f in ("regions.yaml", "plans.yaml"):
        shutil.copy(os.path.join(ROOT, "tenants", "platform", f), os.path.join(args.out, "platform", f))
    n_orgs = args.orgs or max(1, args.count // 50)
    orgs = [f"org_{j:05d}" for j in range(n_orgs)]
    for org in orgs:
        os.makedirs(os.path.join(args.out, org))
        with open(os.path.join(args.out, org, "organization.yaml"), "w") as fh:
            fh.write(f"apiVersion: tenancy.dev/v1\nkind: Organization\nmetadata: {{ id: {org}, displayName: Org {org} }}\n")
    for i in range(args.count):
        org = orgs[i % n_orgs]
        tid, text = tenant(i, org, rng, args.uniform, args.id_prefix)
        with open(os.path.join(args.out, org, f"{tid}.yaml"), "w") as fh:
            fh.write(text)
    git = ["git", "-C", args.out, "-c", "user.name=bench", "-c", "user.email=bench@tenancy.invalid"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", f"{args.count} generated tenants"], check=True)
    print(f"generated {args.count} tenants in {n_orgs} organizations at {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
