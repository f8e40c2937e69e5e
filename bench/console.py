#!/usr/bin/env python3
"""Web console first paint with 1,000 tasks in the store, measured in headless Chromium.

    python3 bench/console.py [--tasks 1000] [--baseline 10] [--runs 5]

Env: BERTH_BIN (default: the newer of target/release/berth and target/debug/berth). Needs Debian's
chromium and tests/console/node_modules (scripts/deps.sh). Writes bench/results/console.json.

What is measured: `berth server --no-agent` (tasks stay PROVISIONING with desiredStatus RUNNING,
so they are all listed, and nothing runs) gets --tasks tasks through RunTask (count 10 per call)
in cluster `big`, and --baseline tasks in cluster `small`. Chromium (bench/console.js, Playwright)
opens the console on each cluster --runs times:
  first_paint_ms  navigation start until the task list shows its first page (50 rows, or all of
                  the baseline) — what a user waits for;
  next_page_ms    click on "Next" until the second page replaced the first.
The ratio big/small of the median first paint says how the console scales with the task count
(paginated: it lists 100 task ARNs and describes only the 50 shown). Only 127.0.0.1 is used; the
server and its data directory are removed at the end.
"""

import argparse
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, credentials, free_port, log, wait_http, write_json  # noqa: E402

KEY = {}  # the server's access key (credentials.json), set once it has started


def sigv4(method, host, path, headers, body, key_id, secret, service="ecs", region="us-east-1"):
    """SigV4 headers (AWS General Reference, header form) for a request with no query string."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = hashlib.sha256(body).hexdigest()
    h = {k.lower(): v for k, v in headers.items()}
    h.update({"host": host, "x-amz-date": now, "x-amz-content-sha256": payload})
    names = sorted(h)
    canonical = "\n".join([method, path, ""] + [f"{n}:{' '.join(str(h[n]).split())}" for n in names]
                          + ["", ";".join(names), payload])
    scope = f"{now[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", now, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (now[:8], region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    return {"X-Amz-Date": now, "X-Amz-Content-Sha256": payload, "Authorization": auth}


def call(ep, op, body):
    data = json.dumps(body).encode()
    headers = {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113." + op,
               "Content-Type": "application/x-amz-json-1.1"}
    headers.update(sigv4("POST", ep.split("://", 1)[1], "/", headers, data, KEY["id"], KEY["secret"]))
    req = urllib.request.Request(ep + "/", data=data, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def fill(ep, cluster, n):
    call(ep, "CreateCluster", {"clusterName": cluster})
    done = 0
    while done < n:
        c = min(10, n - done)
        call(ep, "RunTask", {"cluster": cluster, "taskDefinition": "bench", "count": c,
                             "launchType": "FARGATE",
                             "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}})
        done += c


def measure(ep, cluster, runs, rows):
    out = subprocess.run(["node", os.path.join(ROOT, "bench", "console.js"),
                          f"{ep}/#/", str(runs), str(rows)],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, BENCH_CLUSTER=cluster, BERTH_ACCESS_KEY_ID=KEY["id"],
                                  BERTH_SECRET_ACCESS_KEY=KEY["secret"]))
    if out.returncode != 0:
        raise SystemExit(f"console.js failed: {out.stderr}")
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--baseline", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    rel = os.path.join(ROOT, "target", "release", "berth")
    dbg = os.path.join(ROOT, "target", "debug", "berth")
    # the newer of the release and debug builds (a stale release build would lack the console)
    cands = [b for b in (rel, dbg) if os.path.exists(b)]
    binary = os.environ.get("BERTH_BIN") or max(cands, key=os.path.getmtime)
    data = tempfile.mkdtemp(prefix="berth-bench-console-")
    port = free_port()
    ep = f"http://127.0.0.1:{port}"
    srv = subprocess.Popen([binary, "server", "--no-agent", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "server.log"), "w"))
    try:
        wait_http(ep + "/", srv, "berth server", timeout=15)
        key_id, secret = credentials(data)
        KEY.update(id=key_id, secret=secret)
        call(ep, "RegisterTaskDefinition", {
            "family": "bench", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "busybox:1", "command": ["true"]}]})
        t0 = time.time()
        fill(ep, "big", a.tasks)
        fill(ep, "small", a.baseline)
        log(f"{a.tasks + a.baseline} tasks stored in {time.time() - t0:.1f}s")
        results = {}
        for cluster, rows in (("big", min(50, a.tasks)), ("small", min(50, a.baseline))):
            # The console remembers the cluster in localStorage; pick it through the URL's first load.
            r = measure_cluster(ep, cluster, a.runs, rows)
            results[cluster] = r
            log(f"{cluster}: first paint median {statistics.median(r['first_paint_ms']):.0f} ms "
                f"({r['first_paint_ms']}), next page median {statistics.median(r['next_page_ms']) if r['next_page_ms'] else 0:.0f} ms")
        big = statistics.median(results["big"]["first_paint_ms"])
        small = statistics.median(results["small"]["first_paint_ms"])
        summary = {
            "tasks": a.tasks, "baseline_tasks": a.baseline, "runs": a.runs, "binary": binary,
            "first_paint_ms_median_1000": round(big, 1), "first_paint_ms_median_baseline": round(small, 1),
            "ratio_big_over_baseline": round(big / small, 2),
            "next_page_ms_median": statistics.median(results["big"]["next_page_ms"]),
            "dom_nodes": results["big"]["dom_nodes"][0],
            "chromium": subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip(),
            "git": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "samples": results,
        }
        write_json("console.json", summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def measure_cluster(ep, cluster, runs, rows):
    # The console picks the cluster from localStorage (`berth.cluster`); console.js sets it from
    # BENCH_CLUSTER before the page loads.
    return measure(ep, cluster, runs, rows)


if __name__ == "__main__":
    main()
