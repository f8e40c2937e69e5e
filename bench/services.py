#!/usr/bin/env python3
"""ECS services: convergence time and the idle cost of the service controller.

    .venv/bin/python bench/services.py [--tasks 10] [--idle-services 1000] [--idle-seconds 120]

Env: BERTH_BIN (default target/release/berth if built, else target/debug/berth),
BERTH_TEST_IMAGE (default build/busybox-oci). Writes bench/results/services.json.
Needs root (berth's agent runs the tasks), skopeo, and botocore (the venv's, via awscli).

What is measured (wall clock, DescribeServices polled every --poll-ms with botocore):
  create_to_steady   CreateService(desiredCount=N, FARGATE, busybox) until the service is what
                     ServicesStable waits for (one deployment, runningCount == desiredCount) and
                     that deployment's rolloutState is COMPLETED.
  update_to_complete UpdateService(new task definition revision) until the new deployment is the
                     only one left and COMPLETED (defaults 100% / 200%: N new tasks start, the N
                     old ones stop once the new ones run).
  idle_cpu           CPU time (utime + stime from /proc/<pid>/stat) of the whole `berth server`
                     process (control plane, service controller and its in-process agent) over
                     --idle-seconds while --idle-services services (desiredCount 0, steady) sit in
                     the store and nothing changes; reported as % of one core. The controller
                     resyncs every service once a minute, so use a window of at least 60 s.
Only 127.0.0.1 is used; the server and its data directory are removed at the end.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, credentials, free_port, log  # noqa: E402,F401
import common  # noqa: E402

botocore, Config = common.load_botocore()

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}


def wait_up(ep, timeout=15):
    """Waits until berth answers GET /v2/ (401 without a registry login counts)."""
    common.wait_http(f"{ep}/v2/", timeout=timeout)


def dest_creds(ecr):
    """`AWS:<password>` for skopeo's --dest-creds, from ECR GetAuthorizationToken."""
    import base64
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def taskdef(family, tag):
    return {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "app",
            "image": "000000000000.dkr.ecr.us-east-1.amazonaws.com/busybox:1",
            "essential": True,
            "command": ["sh", "-c", f"trap 'exit 0' TERM; sleep {tag} & wait"],
            "stopTimeout": 2,
        }],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--idle-services", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=120.0)
    ap.add_argument("--poll-ms", type=float, default=20.0)
    args = ap.parse_args()

    binary = os.environ.get("BERTH_BIN")
    if not binary:
        rel = os.path.join(ROOT, "target/release/berth")
        binary = rel if os.path.exists(rel) else os.path.join(ROOT, "target/debug/berth")
    image = os.environ.get("BERTH_TEST_IMAGE", os.path.join(ROOT, "build/busybox-oci"))
    port = free_port()
    ep = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="berth-bench-svc-")
    logf = open(os.path.join(data, "server.log"), "w")
    srv = subprocess.Popen([binary, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                           stdout=subprocess.DEVNULL, stderr=logf)
    results = {"binary": binary, "tasks": args.tasks}
    try:
        wait_up(ep)
        key_id, secret = credentials(data)
        sess = botocore.session.get_session()
        cfg = Config(retries={"max_attempts": 1})
        kw = dict(region_name="us-east-1", endpoint_url=ep, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, config=cfg)
        ecs = sess.create_client("ecs", **kw)
        ecr = sess.create_client("ecr", **kw)
        ecr.create_repository(repositoryName="busybox")
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", dest_creds(ecr),
                        f"oci:{image}:1", f"docker://127.0.0.1:{port}/busybox:1"], check=True)
        ecs.create_cluster(clusterName="bench")
        td1 = ecs.register_task_definition(**taskdef("bench", 1001))["taskDefinition"]["taskDefinitionArn"]
        td2 = ecs.register_task_definition(**taskdef("bench", 1002))["taskDefinition"]["taskDefinitionArn"]

        def describe():
            return ecs.describe_services(cluster="bench", services=["web"])["services"][0]

        def wait(pred, timeout=300):
            deadline = time.monotonic() + timeout
            while True:
                s = describe()
                if pred(s):
                    return s
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out: {json.dumps(s, default=str)[:2000]}")
                time.sleep(args.poll_ms / 1000)

        def done(s, dep_id=None):
            d = s["deployments"]
            return (len(d) == 1 and s["runningCount"] == s["desiredCount"] == args.tasks
                    and d[0]["rolloutState"] == "COMPLETED" and (dep_id is None or d[0]["id"] == dep_id))

        # Warm the image into the agent's snapshot cache (one task), not measured.
        ecs.create_service(cluster="bench", serviceName="warm", taskDefinition=td1, desiredCount=1,
                           launchType="FARGATE", networkConfiguration=NET)
        deadline = time.monotonic() + 120
        while ecs.describe_services(cluster="bench", services=["warm"])["services"][0]["runningCount"] != 1:
            assert time.monotonic() < deadline, "warm-up task never ran"
            time.sleep(0.1)
        ecs.delete_service(cluster="bench", service="warm", force=True)

        t0 = time.monotonic()
        ecs.create_service(cluster="bench", serviceName="web", taskDefinition=td1,
                           desiredCount=args.tasks, launchType="FARGATE", networkConfiguration=NET)
        wait(done)
        results["create_to_steady_s"] = round(time.monotonic() - t0, 3)
        log(f"CreateService({args.tasks}) -> steady: {results['create_to_steady_s']} s")

        t0 = time.monotonic()
        up = ecs.update_service(cluster="bench", service="web", taskDefinition=td2)["service"]
        new_id = up["deployments"][0]["id"]
        peak = 0
        def rolled(s):
            nonlocal peak
            peak = max(peak, sum(d["runningCount"] + d["pendingCount"] for d in s["deployments"]))
            return done(s, new_id)
        wait(rolled)
        results["update_to_complete_s"] = round(time.monotonic() - t0, 3)
        results["update_peak_tasks"] = peak
        log(f"UpdateService -> rollout COMPLETED: {results['update_to_complete_s']} s (peak {peak} tasks)")

        ecs.update_service(cluster="bench", service="web", desiredCount=0)
        ecs.delete_service(cluster="bench", service="web")
        wait(lambda s: s["status"] == "INACTIVE", timeout=120)

        # Idle: many steady services with nothing to do.
        t0 = time.monotonic()
        for i in range(args.idle_services):
            ecs.create_service(cluster="bench", serviceName=f"idle-{i:05d}", taskDefinition=td1,
                               desiredCount=0, launchType="FARGATE", networkConfiguration=NET)
        results["create_idle_services_s"] = round(time.monotonic() - t0, 3)
        log(f"created {args.idle_services} idle services in {results['create_idle_services_s']} s")
        time.sleep(5)
        last = ecs.describe_services(cluster="bench", services=[f"idle-{args.idle_services - 1:05d}"])["services"][0]
        assert last["deployments"][0]["rolloutState"] == "COMPLETED", last
        c0, w0 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        c1, w1 = cpu_seconds(srv.pid), time.monotonic()
        results["idle_services"] = args.idle_services
        results["idle_window_s"] = round(w1 - w0, 1)
        results["idle_cpu_seconds"] = round(c1 - c0, 3)
        results["idle_cpu_percent_of_one_core"] = round(100 * (c1 - c0) / (w1 - w0), 3)
        log(f"idle: {results['idle_cpu_seconds']} CPU s over {results['idle_window_s']} s = "
            f"{results['idle_cpu_percent_of_one_core']}% of one core with {args.idle_services} services")
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.kill()
        shutil.rmtree(data, ignore_errors=True)
    common.write_json("services.json", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
