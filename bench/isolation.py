#!/usr/bin/env python3
"""Fargate-grade isolation benchmarks: berth vs podman, same image, same machine, same run.

    cargo build --release -p berth && .venv/bin/python bench/isolation.py [-n 20] [--tasks 200]

1. Task start with networking: berth RunTask (awsvpc, a portMapping) until DescribeTasks says
   RUNNING *and* an HTTP GET to 127.0.0.1:<port> (the published port) is answered by the
   container's busybox httpd; vs `podman run -d -p 127.0.0.1:<port>:<port>` on podman's default
   bridge network until the same GET is answered. Both then removed (not timed). N starts back
   to back after a warm-up, then --idle more, each after 3 s with no start (reported apart).
2. Memory per task: 200 concurrent `sleep 3600` tasks. berth: RSS and PSS (smaps_rollup) of all
   shim processes (`berth-shim shim <task-dir> ..`) plus the server's RSS growth, per task; podman: RSS and PSS of all
   `conmon` processes, per container. The containers' own processes are not counted.

Writes bench/results/isolation.json. Only 127.0.0.1 and berth's/podman's own bridge addresses are
used. Everything started is removed at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task_start as ts  # noqa: E402  (re-execs under the venv for botocore)

IMG = f"{ts.ACCOUNT}.dkr.ecr.{ts.REGION}.amazonaws.com/busybox:1"
# Idle time before each "after idle" start: longer than the agent keeps the kernel's cgroup
# attach path warm after a start (berth_agent::cgroups::PRIME_FOR, 2 s).
IDLE_S = 3.0


def http_ok(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            r.read()
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: the container's server is reachable
    except OSError:
        return False


def wait_http(port, t0, timeout=30):
    while not http_ok(port):
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"port {port} not answering after {timeout}s")
        time.sleep(0.001)
    return time.perf_counter() - t0


def mem_of(pids):
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss  # KiB


def pids_named(pred):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if pred(args):
            out.append(int(d))
    return out


def berth_bench(binary, image_dir, n, n_idle, ntasks, workdir):
    b = ts.Berth(binary, workdir, 0.002, 60)
    res = {}
    try:
        b.start()
        b.setup(image_dir, "1")
        port = ts.free_port()
        b.ecs.register_task_definition(
            family="bench-web", requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
            cpu="256", memory="512",
            containerDefinitions=[{"name": "app", "image": IMG, "essential": True,
                                   "command": ["httpd", "-f", "-p", str(port), "-h", "/"],
                                   "portMappings": [{"containerPort": port}], "stopTimeout": 1}])
        samples, running, idle = [], [], []
        for i in range(n + 1 + n_idle):
            if i > n:
                time.sleep(IDLE_S)  # an idle host: nothing started for a while
            t0 = time.perf_counter()
            resp = b.ecs.run_task(cluster=b.cluster, taskDefinition="bench-web", launchType="FARGATE",
                                  networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}})
            arn = resp["tasks"][0]["taskArn"]
            b.started.append(arn)
            while b.describe(arn).get("lastStatus") != "RUNNING":
                time.sleep(0.002)
            t_run = time.perf_counter() - t0
            dt = wait_http(port, t0)
            if i > n:
                idle.append(dt)
            elif i > 0:
                samples.append(dt)
                running.append(t_run)
            b.stop_and_wait(arn)
        res["start_net_ms"] = ts.stats(samples)
        res["running_ms"] = ts.stats(running)
        res["start_net_after_idle_ms"] = ts.stats(idle)

        # Memory: ntasks concurrent sleep tasks.
        server_pid = b.proc.pid
        base_rss, _ = mem_of([server_pid])
        arns = []
        for i in range(0, ntasks, 10):
            r = b.ecs.run_task(cluster=b.cluster, taskDefinition="bench-sleep", launchType="FARGATE",
                               count=min(10, ntasks - i),
                               networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"]}})
            arns += [t["taskArn"] for t in r["tasks"]]
        b.started += arns
        deadline = time.monotonic() + 300
        while True:
            st = [t["lastStatus"] for k in range(0, len(arns), 100)
                  for t in b.ecs.describe_tasks(cluster=b.cluster, tasks=arns[k:k + 100])["tasks"]]
            if all(s == "RUNNING" for s in st):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all RUNNING: {st}")
            time.sleep(0.5)
        time.sleep(2)
        shims = pids_named(lambda a: len(a) > 2 and a[1] == b"shim" and a[2].startswith(b.data_dir.encode()))
        rss, pss = mem_of(shims)
        srv_rss, _ = mem_of([server_pid])
        res["tasks"] = len(arns)
        res["shims"] = len(shims)
        res["shim_rss_kib_per_task"] = rss / len(arns)
        res["shim_pss_kib_per_task"] = pss / len(arns)
        res["server_rss_growth_kib_per_task"] = (srv_rss - base_rss) / len(arns)
        for k in range(0, len(arns), 10):
            for a in arns[k:k + 10]:
                b.ecs.stop_task(cluster=b.cluster, task=a)
        return res
    except Exception:
        ts.log("berth server log tail:\n" + b.tail_log())
        raise
    finally:
        b.shutdown()


def podman_bench(image_dir, n, n_idle, ntasks):
    ts.run(["skopeo", "copy", "-q", f"oci:{image_dir}:1", f"containers-storage:{ts.PODMAN_REF}"],
           stdout=subprocess.DEVNULL)
    res = {}
    names = []
    try:
        port = ts.free_port()
        samples, idle = [], []
        for i in range(n + 1 + n_idle):
            if i > n:
                time.sleep(IDLE_S)
            name = f"berth-bench-web-{i}"
            t0 = time.perf_counter()
            ts.run(["podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{port}", ts.PODMAN_REF,
                    "httpd", "-f", "-p", str(port), "-h", "/"], stdout=subprocess.DEVNULL)
            dt = wait_http(port, t0)
            if i > n:
                idle.append(dt)
            elif i > 0:
                samples.append(dt)
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        res["start_net_ms"] = ts.stats(samples)
        res["start_net_after_idle_ms"] = ts.stats(idle)
        for i in range(ntasks):
            name = f"berth-bench-sleep-{i}"
            names.append(name)
            ts.run(["podman", "run", "-d", "--name", name, "--network", "none", ts.PODMAN_REF, "sleep", "3600"],
                   stdout=subprocess.DEVNULL)
        time.sleep(2)
        conmons = pids_named(lambda a: a[0].endswith(b"conmon") and any(
            x.startswith(b"berth-bench-sleep-") for x in a))
        rss, pss = mem_of(conmons)
        res["conmons"] = len(conmons)
        res["conmon_rss_kib_per_ctr"] = rss / ntasks
        res["conmon_pss_kib_per_ctr"] = pss / ntasks
        return res
    finally:
        for k in range(0, len(names), 50):
            subprocess.run(["podman", "rm", "-f", "-t", "0"] + names[k:k + 50], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", ts.PODMAN_REF], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--idle", type=int, default=5,
                    help="extra starts, each after %.0f s without any start" % IDLE_S)
    args = ap.parse_args()
    binary = os.environ.get("BERTH_BIN", os.path.join(ts.ROOT, "target", "release", "berth"))
    image_dir = os.environ.get("BERTH_TEST_IMAGE", os.path.join(ts.ROOT, "build", "busybox-oci"))
    workdir = tempfile.mkdtemp(prefix="berth-bench-iso-")
    try:
        b = berth_bench(binary, image_dir, args.n, args.idle, args.tasks, workdir)
    finally:
        ts.unmount_under(workdir)
        subprocess.run(["rm", "-rf", workdir])
    p = podman_bench(image_dir, args.n, args.idle, args.tasks)
    out = {"berth": b, "podman": p,
           "host": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                    "cold_cgroup_attach_ms": ts.cold_cgroup_attach_ms()},
           "ratio_start_podman_over_berth": p["start_net_ms"]["median_ms"] / b["start_net_ms"]["median_ms"],
           "ratio_start_after_idle_podman_over_berth":
               p["start_net_after_idle_ms"]["median_ms"] / b["start_net_after_idle_ms"]["median_ms"],
           "ratio_rss_berth_over_podman": (b["shim_rss_kib_per_task"] + max(0, b["server_rss_growth_kib_per_task"])) / p["conmon_rss_kib_per_ctr"],
           "ratio_pss_berth_over_podman": (b["shim_pss_kib_per_task"] + max(0, b["server_rss_growth_kib_per_task"])) / p["conmon_pss_kib_per_ctr"]}
    ts.common.write_json("isolation.json", out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
