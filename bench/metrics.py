#!/usr/bin/env python3
"""CloudWatch metrics sampling overhead: CPU of the `berth server` process (control plane plus
its in-process agent, which samples every running task's cgroup and posts the batch) while N
tasks sit running, for several `--metrics-interval` values.

    .venv/bin/python bench/metrics.py [--tasks 200] [--window 60] [--intervals 10,1,3600]

Env: BERTH_BIN (default target/release/berth if built, else target/debug/berth),
BERTH_TEST_IMAGE (default build/busybox-oci). Writes bench/results/metrics.json. Needs root.

For each interval a fresh server starts, one service runs --tasks sleeping tasks (FARGATE, 256
CPU units), and once all run the server's utime+stime (/proc/<pid>/stat) is read over --window
seconds: % of one core. Interval 3600 is the baseline (sampling effectively off; everything else
the server does while idle); the sampling overhead is the difference. Only 127.0.0.1 is used.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, credentials, free_port, log, write_json  # noqa: E402
from services import NET, Config, botocore, cpu_seconds, dest_creds, taskdef, wait_up  # noqa: E402


def run_one(binary, image, interval, tasks, window):
    port = free_port()
    ep = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="berth-bench-metrics-")
    logf = open(os.path.join(data, "server.log"), "w")
    srv = subprocess.Popen([binary, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                            "--metrics-interval", str(interval)],
                           stdout=subprocess.DEVNULL, stderr=logf)
    try:
        wait_up(ep)
        key_id, secret = credentials(data)
        kw = dict(region_name="us-east-1", endpoint_url=ep, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
        sess = botocore.session.get_session()
        ecs, ecr = sess.create_client("ecs", **kw), sess.create_client("ecr", **kw)
        ecr.create_repository(repositoryName="busybox")
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", dest_creds(ecr),
                        f"oci:{image}:1", f"docker://127.0.0.1:{port}/busybox:1"], check=True)
        ecs.create_cluster(clusterName="bench")
        td = ecs.register_task_definition(**taskdef("bench", 100000))["taskDefinition"]["taskDefinitionArn"]
        t0 = time.monotonic()
        ecs.create_service(cluster="bench", serviceName="web", taskDefinition=td, desiredCount=tasks,
                           launchType="FARGATE", networkConfiguration=NET)
        while ecs.describe_services(cluster="bench", services=["web"])["services"][0]["runningCount"] < tasks:
            assert time.monotonic() - t0 < 60 + tasks * 5, "tasks never all ran"
            time.sleep(0.5)
        log(f"interval {interval}s: {tasks} tasks running after {time.monotonic() - t0:.1f} s")
        time.sleep(max(5.0, 2 * min(interval, 30)))
        c0, w0 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(window)
        c1, w1 = cpu_seconds(srv.pid), time.monotonic()
        pct = 100 * (c1 - c0) / (w1 - w0)
        log(f"interval {interval}s: {c1 - c0:.3f} CPU s over {w1 - w0:.1f} s = {pct:.3f}% of one core")
        ecs.update_service(cluster="bench", service="web", desiredCount=0)
        # Tasks outlive the server: wait until every one is really STOPPED before stopping it.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            arns = []
            for status in ("RUNNING", "STOPPED"):
                for page in ecs.get_paginator("list_tasks").paginate(cluster="bench", desiredStatus=status):
                    arns += page["taskArns"]
            live = [t for i in range(0, len(arns), 100)
                    for t in ecs.describe_tasks(cluster="bench", tasks=arns[i:i + 100])["tasks"]
                    if t["lastStatus"] != "STOPPED"]
            if not live:
                break
            time.sleep(1)
        return {"interval_s": interval, "cpu_seconds": round(c1 - c0, 3),
                "window_s": round(w1 - w0, 1), "cpu_percent_of_one_core": round(pct, 3)}
    finally:
        srv.terminate()
        srv.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--intervals", default="10,1,3600")
    args = ap.parse_args()
    binary = os.environ.get("BERTH_BIN")
    if not binary:
        rel = os.path.join(ROOT, "target/release/berth")
        binary = rel if os.path.exists(rel) else os.path.join(ROOT, "target/debug/berth")
    image = os.environ.get("BERTH_TEST_IMAGE", os.path.join(ROOT, "build/busybox-oci"))
    runs = [run_one(binary, image, float(i), args.tasks, args.window)
            for i in args.intervals.split(",")]
    base = next((r for r in runs if r["interval_s"] >= 3600), None)
    for r in runs:
        if base and r is not base:
            r["sampling_overhead_percent_of_one_core"] = round(
                r["cpu_percent_of_one_core"] - base["cpu_percent_of_one_core"], 3)
    out = {"binary": binary, "tasks": args.tasks, "runs": runs}
    write_json("metrics.json", out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
