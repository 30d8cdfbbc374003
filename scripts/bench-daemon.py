#!/usr/bin/env python3
"""Benchmark `tenancy run`: commit-to-event latency and idle footprint.

    scripts/bench-daemon.py REPO CONFIG [--commits 20]

REPO is a tenant repository already applied with CONFIG (e.g. the one scripts/bench-apply.sh
leaves behind: $BENCH_DIR/repo-N and $BENCH_DIR/tenancy-N.toml), whose state store must be
SQLite. CONFIG should have [events.kafka] for the latency to include publishing. The script
starts the daemon, waits for its first full pass, then makes --commits commits that each change
one tenant's display name and measures, for each, the time from `git commit` returning to the
tenant's TENANCY_UPDATED event being recorded and (with Kafka) published — read from the state
store. Then it samples the idle daemon's RSS and CPU for 10 s.
"""
import argparse, os, re, signal, sqlite3, statistics, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo")
    ap.add_argument("config")
    ap.add_argument("--commits", type=int, default=20)
    ap.add_argument("--port", type=int, default=39191)
    ap.add_argument("--log", help="write the daemon's log here (TENANCY_LOG sets its level)")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "tenancy"))
    args = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"== machine: {os.cpu_count()} cores, {cpu}, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    text = open(args.config).read()
    m = re.search(r'url = "sqlite://([^"?]+)', text)
    if not m:
        sys.exit("the config's [state] url must be sqlite://PATH")
    db = m.group(1)
    published_col = "[events.kafka]" in text
    daemon = subprocess.Popen(
        [args.bin, "run", "--repo", args.repo, "--config", args.config, "--policies",
         os.path.join(ROOT, "policies/bundle.yaml"), "--listen", f"127.0.0.1:{args.port}", "--interval", "5"],
        stderr=open(args.log, "w") if args.log else subprocess.PIPE, text=True)
    try:
        measure(args, daemon, db, published_col)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)


def measure(args, daemon, db, published_col):
    started = time.time()
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{args.port}/readyz", timeout=1).status == 200:
                break
        except Exception:
            pass
        if daemon.poll() is not None:
            sys.exit(f"daemon exited: {daemon.stderr.read() if daemon.stderr else open(args.log).read()}")
        time.sleep(0.1)
    print(f"first full pass (every tenant): {time.time() - started:.1f} s")
    files = []
    for org in sorted(os.listdir(args.repo)):
        d = os.path.join(args.repo, org)
        if os.path.isdir(d) and org.startswith("org_"):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.startswith("t_")]
    git = ["git", "-C", args.repo, "-c", "user.name=bench", "-c", "user.email=bench@tenancy.invalid"]
    conn = sqlite3.connect(db, timeout=5)
    latencies = []
    in_order = []
    stamp = int(time.time())
    for i in range(args.commits):
        path = files[(i * 7919) % len(files)]
        tenant = os.path.basename(path)[:-5]
        body = open(path).read()
        body = re.sub(r"displayName: (.*)", lambda m: f"displayName: {m.group(1).split(' (rev')[0]} (rev {stamp}-{i})", body, count=1)
        open(path, "w").write(body)
        subprocess.run(git + ["commit", "-qam", f"rename {tenant}"], check=True)
        t0 = time.time()
        sha = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
        query = "SELECT published_at FROM outbox WHERE tenant_id = ? AND event_type = 'TENANCY_UPDATED' AND event LIKE ?"
        while True:
            row = conn.execute(query, (tenant, f'%{sha}%')).fetchone()
            if row and (row[0] is not None or not published_col):
                latencies.append(time.time() - t0)
                in_order.append(latencies[-1])
                break
            if time.time() - t0 > 30:
                sys.exit(f"no event for {tenant} at {sha} after 30 s")
            time.sleep(0.005)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    what = "recorded and published to Kafka" if published_col else "recorded"
    print(f"commit -> converged, event {what}: p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms ({len(latencies)} commits)")
    print("each commit, in order (ms): " + " ".join(f"{t * 1000:.0f}" for t in in_order))
    # Idle footprint.
    time.sleep(2)
    stat = lambda: open(f"/proc/{daemon.pid}/stat").read().split()
    ticks = os.sysconf("SC_CLK_TCK")
    s0 = stat(); w0 = time.time()
    time.sleep(10)
    s1 = stat(); w1 = time.time()
    cpu = (int(s1[13]) + int(s1[14]) - int(s0[13]) - int(s0[14])) / ticks / (w1 - w0) * 100
    rss = next(l for l in open(f"/proc/{daemon.pid}/status") if l.startswith("VmRSS")).split()[1]
    print(f"idle daemon: {int(rss) / 1024:.0f} MiB RSS, {cpu:.2f}% CPU over 10 s")


if __name__ == "__main__":
    main()
