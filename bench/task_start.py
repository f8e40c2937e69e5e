#!/usr/bin/env python3
"""Task start latency: berth RunTask -> RUNNING vs bare `crun run` vs `podman run`, same image, same run.

    make bench                        # builds release berth + test image, runs this
    .venv/bin/python bench/task_start.py [-n 30] [--only berth,crun,podman]

Env: BERTH_BIN (default target/release/berth), BERTH_TEST_IMAGE (default build/busybox-oci).
Writes bench/results/task_start.json.  Needs root (crun, podman, berth's agent), the packages from
scripts/deps.sh, and botocore (the venv's; this script re-runs itself under .venv/bin/python).

What is measured (wall clock, per start, N starts after one unmeasured warm-up each):
  berth   RunTask (FARGATE, awsvpc, busybox `sleep 3600`, image already pulled by the warm-up task)
          until DescribeTasks, polled every --poll-ms, reports lastStatus RUNNING; then StopTask and
          wait for STOPPED (not measured) so tasks do not pile up.
  crun    `crun run` of an OCI bundle whose rootfs is the same image's layer, args ["true"]:
          create + start + exit + delete (the floor for starting a container on this host).
  podman  `podman run --rm --network none` of the same image loaded into containers-storage,
          command `true`.
Only loopback addresses are used.  Everything started is stopped and removed at the end.
"""

import argparse
import base64
import json
import os
import platform
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, free_port, log, run, stats, tool_version  # noqa: E402,F401
import common  # noqa: E402

botocore, Config = common.load_botocore(required=False)

ACCOUNT = "000000000000"
REGION = "us-east-1"
PODMAN_REF = "localhost/berth-bench-busybox:1"


# ---------------------------------------------------------------------------------------- image


def read_layout(image_dir, tag):
    with open(os.path.join(image_dir, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            break
    else:
        raise SystemExit(f"{image_dir}: no manifest tagged {tag!r}")
    blob = lambda d: os.path.join(image_dir, "blobs", *d.split(":", 1))  # noqa: E731
    with open(blob(m["digest"])) as f:
        manifest = json.load(f)
    return [blob(layer["digest"]) for layer in manifest["layers"]]


def unpack_rootfs(image_dir, tag, rootfs):
    """Apply the image's layers in order with tar (the test image has one layer, no whiteouts)."""
    os.makedirs(rootfs, exist_ok=True)
    for layer in read_layout(image_dir, tag):
        run(["tar", "-xzf", layer, "-C", rootfs, "--numeric-owner"])


# ----------------------------------------------------------------------------------------- crun


def bench_crun(image_dir, tag, n, workdir):
    bundle = os.path.join(workdir, "crun-bundle")
    os.makedirs(bundle)
    unpack_rootfs(image_dir, tag, os.path.join(bundle, "rootfs"))
    run(["crun", "spec"], cwd=bundle)
    cfg_path = os.path.join(bundle, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["process"]["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    cfg["hostname"] = "bench"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)

    prefix = f"berth-bench-{os.getpid()}"
    samples = []
    for i in range(n + 1):  # first run is a warm-up
        cid = f"{prefix}-{i}"
        t0 = time.perf_counter()
        r = subprocess.run(["crun", "run", "--bundle", bundle, cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            subprocess.run(["crun", "delete", "-f", cid], capture_output=True)
            raise RuntimeError(f"crun run failed ({r.returncode}): {r.stderr.decode().strip()}")
        if i > 0:
            samples.append(dt)
    # crun run deletes the container when it exits; make sure nothing of ours is left
    out = subprocess.run(["crun", "list", "-q"], capture_output=True, text=True).stdout.split()
    for cid in out:
        if cid.startswith(prefix):
            subprocess.run(["crun", "delete", "-f", cid], capture_output=True)
    return samples


# --------------------------------------------------------------------------------------- podman


def bench_podman(image_dir, tag, n):
    run(["skopeo", "copy", "-q", f"oci:{image_dir}:{tag}", f"containers-storage:{PODMAN_REF}"],
        stdout=subprocess.DEVNULL)
    try:
        samples = []
        for i in range(n + 1):  # first run is a warm-up
            t0 = time.perf_counter()
            r = subprocess.run(["podman", "run", "--rm", "--network", "none", PODMAN_REF, "true"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(f"podman run failed ({r.returncode}): {r.stderr.decode().strip()}"
                                   " (did scripts/deps.sh write /etc/containers/containers.conf?)")
            if i > 0:
                samples.append(dt)
        return samples
    finally:
        subprocess.run(["podman", "rmi", "-f", PODMAN_REF], capture_output=True)


# ---------------------------------------------------------------------------------------- berth


class Berth:
    def __init__(self, binary, workdir, poll_s, timeout_s):
        self.binary = binary
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = os.path.join(workdir, "berth-data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(workdir, "berth-server.log")
        self.proc = None
        self.cluster = "bench"
        self.started = []  # task ARNs

    def start(self):
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
             "--task-bridge", self.bridge, "--task-subnet", self.subnet],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT)
        try:
            common.wait_http(self.endpoint + "/v2/", self.proc, "berth server")
        except RuntimeError as e:
            raise RuntimeError(f"{e}:\n{self.tail_log()}")
        key_id, secret = common.credentials(self.data_dir)
        session = botocore.session.get_session()
        cfg = Config(retries={"mode": "standard", "max_attempts": 2},
                     connect_timeout=5, read_timeout=60, max_pool_connections=4)
        kw = dict(region_name=REGION, endpoint_url=self.endpoint, config=cfg,
                  aws_access_key_id=key_id, aws_secret_access_key=secret)
        self.ecs = session.create_client("ecs", **kw)
        self.ecr = session.create_client("ecr", **kw)

    def tail_log(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def setup(self, image_dir, tag):
        try:
            self.ecr.create_repository(repositoryName="busybox")
        except self.ecr.exceptions.RepositoryAlreadyExistsException:
            pass
        token = self.ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
             "--dest-creds", base64.b64decode(token).decode(), f"oci:{image_dir}:{tag}",
             f"docker://127.0.0.1:{self.port}/busybox:1"], stdout=subprocess.DEVNULL)
        self.ecs.create_cluster(clusterName=self.cluster)
        self.ecs.register_task_definition(
            family="bench-sleep",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[{
                "name": "app",
                "image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/busybox:1",
                "essential": True,
                "command": ["sleep", "3600"],
                # PID 1 ignores SIGTERM: keep the (unmeasured) stop between samples short.
                "stopTimeout": 1,
            }],
        )

    def start_one(self):
        """RunTask, then DescribeTasks until RUNNING. Returns (seconds, task ARN)."""
        t0 = time.perf_counter()
        resp = self.ecs.run_task(
            cluster=self.cluster, taskDefinition="bench-sleep", launchType="FARGATE", count=1,
            networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}})
        if resp.get("failures") or not resp.get("tasks"):
            raise RuntimeError(f"RunTask failed: {resp.get('failures')}")
        arn = resp["tasks"][0]["taskArn"]
        self.started.append(arn)
        status = resp["tasks"][0].get("lastStatus")
        deadline = t0 + self.timeout_s
        while status != "RUNNING":
            if status == "STOPPED":
                task = self.describe(arn)
                raise RuntimeError(f"task {arn} stopped before RUNNING: {task.get('stopCode')} "
                                   f"{task.get('stoppedReason')} {task.get('containers')}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"task {arn} not RUNNING after {self.timeout_s}s (last {status})")
            time.sleep(self.poll_s)
            status = self.describe(arn).get("lastStatus")
        return time.perf_counter() - t0, arn

    def describe(self, arn):
        resp = self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn])
        tasks = resp.get("tasks") or []
        return tasks[0] if tasks else {}

    def stop_and_wait(self, arn, timeout_s=60):
        self.ecs.stop_task(cluster=self.cluster, task=arn, reason="bench")
        deadline = time.monotonic() + timeout_s
        while self.describe(arn).get("lastStatus") != "STOPPED":
            if time.monotonic() > deadline:
                raise RuntimeError(f"task {arn} not STOPPED {timeout_s}s after StopTask")
            time.sleep(0.02)

    def shutdown(self):
        if self.proc is None:
            return
        if self.proc.poll() is None and hasattr(self, "ecs"):
            # stop whatever is still running: tasks are meant to outlive a server restart
            try:
                arns = self.ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING").get("taskArns", [])
            except Exception:  # noqa: BLE001 - best effort
                arns = []
            for arn in set(arns) | set(self.started):
                try:
                    if self.describe(arn).get("lastStatus") != "STOPPED":
                        self.stop_and_wait(arn, timeout_s=30)
                except Exception as e:  # noqa: BLE001
                    log(f"could not stop {arn}: {e}")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        remove_bridge(self.bridge)

    @property
    def bridge(self):
        """This server's own task bridge (benchmarks may run beside other berth servers)."""
        return f"bb{self.port}"

    @property
    def subnet(self):
        """This server's own task subnet: a /22 of 10.240.0.0/12 derived from its port."""
        p = self.port % 1024
        return f"10.{240 + p // 64}.{(p % 64) * 4}.0/22"


def cold_cgroup_attach_ms(samples=3, idle_s=0.3):
    """Median time of a no-op cgroup attach (this process into its own cgroup) after idle_s
    without attaches: the kernel's cold-attach wait that every container start pays on this host
    (7-15 ms on hosts without cgroup2 `favordynmods`, ~0.2 ms with it). Recorded with results so
    runs on different hosts can be compared; None when no cgroup.procs is writable."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _, opts = right.split()[:3]
            if fstype == "cgroup2":
                mounts.setdefault("", left.split()[4])
            elif fstype == "cgroup":
                for o in opts.split(","):
                    mounts.setdefault(o, left.split()[4])
    target = None
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            base = mounts.get(ctls.split(",")[0] if ctls else "")
            if base:
                cand = os.path.join(base, path.lstrip("/"), "cgroup.procs")
                if os.path.exists(cand):
                    target = cand
                    break
    if target is None:
        return None
    xs = []
    for _ in range(samples):
        time.sleep(idle_s)
        t0 = time.perf_counter()
        try:
            with open(target, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            return None
        xs.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(xs), 3)


def remove_bridge(bridge):
    """Deletes a berth task bridge and the iptables and ip6tables rules berth tagged with it."""
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    for tool in ("iptables", "ip6tables"):
        out = subprocess.run([tool, "-w", "5", "-S"], capture_output=True, text=True).stdout
        for rule in out.splitlines():
            words = [w.strip('"') for w in rule.split()]
            if rule.startswith("-A ") and f"berth:{bridge}" in words:
                subprocess.run([tool, "-w", "5", "-D"] + shlex.split(rule[3:]), capture_output=True)


def bench_berth(binary, image_dir, tag, n, workdir, poll_s, timeout_s):
    b = Berth(binary, workdir, poll_s, timeout_s)
    try:
        b.start()
        b.setup(image_dir, tag)
        cold, arn = b.start_one()  # warm-up: pulls and unpacks the image
        b.stop_and_wait(arn)
        log(f"berth warm-up (image pull) task RUNNING after {cold * 1000:.1f} ms")
        samples = []
        for i in range(n):
            dt, arn = b.start_one()
            samples.append(dt)
            b.stop_and_wait(arn)
        return samples, cold
    except Exception:
        log("berth server log tail:\n" + b.tail_log())
        raise
    finally:
        b.shutdown()


# ----------------------------------------------------------------------------------------- main


def unmount_under(path):
    """Unmount anything (task rootfs overlays...) left below path, deepest first."""
    try:
        with open("/proc/self/mountinfo") as f:
            targets = [line.split()[4] for line in f]
    except OSError:
        return
    prefix = os.path.realpath(path) + "/"
    for t in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", t], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description="task start latency: berth vs crun vs podman")
    ap.add_argument("-n", "--count", type=int, default=30, help="measured starts per system (>= 30)")
    ap.add_argument("--only", default="berth,crun,podman", help="comma list of berth,crun,podman")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="DescribeTasks poll interval")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for one task to reach RUNNING")
    ap.add_argument("--image", default=os.environ.get("BERTH_TEST_IMAGE", os.path.join(ROOT, "build", "busybox-oci")))
    ap.add_argument("--tag", default="1")
    ap.add_argument("--berth-bin", default=os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "release", "berth")))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "task_start.json"))
    args = ap.parse_args()

    systems = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.count < 30:
        log(f"warning: -n {args.count} is below 30; results are only indicative")
    if not os.path.exists(os.path.join(args.image, "index.json")):
        run([sys.executable, os.path.join(ROOT, "scripts", "build-test-image.py"), args.image, "--tag", args.tag])
    if "berth" in systems:
        if botocore is None:
            raise SystemExit("botocore missing: run scripts/deps.sh (creates .venv with awscli)")
        if not os.access(args.berth_bin, os.X_OK):
            raise SystemExit(f"{args.berth_bin} not built (cargo build --release -p berth)")

    workdir = tempfile.mkdtemp(prefix="berth-bench.")
    results = {}
    extra = {}
    try:
        for system in systems:
            log(f"{system}: {args.count} starts ...")
            if system == "crun":
                results["crun"] = stats(bench_crun(args.image, args.tag, args.count, workdir))
            elif system == "podman":
                results["podman"] = stats(bench_podman(args.image, args.tag, args.count))
            elif system == "berth":
                samples, cold = bench_berth(args.berth_bin, args.image, args.tag, args.count, workdir,
                                            args.poll_ms / 1000.0, args.timeout)
                results["berth"] = stats(samples)
                extra["berth_first_task_with_pull_ms"] = round(cold * 1000.0, 3)
            else:
                raise SystemExit(f"unknown system {system!r}")
    finally:
        unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)

    ratios = {}
    for peer in ("crun", "podman"):
        if "berth" in results and peer in results:
            ratios[f"berth/{peer}"] = {
                "median": round(results["berth"]["median_ms"] / results[peer]["median_ms"], 3),
                "p90": round(results["berth"]["p90_ms"] / results[peer]["p90_ms"], 3),
            }

    print()
    print(f"task start latency, {args.count} starts each (ms)")
    print(f"{'system':<8} {'median':>10} {'p90':>10} {'min':>10} {'max':>10}")
    for name, s in results.items():
        print(f"{name:<8} {s['median_ms']:>10.2f} {s['p90_ms']:>10.2f} {s['min_ms']:>10.2f} {s['max_ms']:>10.2f}")
    for name, r in ratios.items():
        print(f"{name:<14} median x{r['median']:.2f}  p90 x{r['p90']:.2f}")
    if extra:
        print(f"berth first task (image pull + unpack): {extra['berth_first_task_with_pull_ms']:.1f} ms")

    git_rev = tool_version(["git", "-C", ROOT, "rev-parse", "HEAD"])
    doc = {
        "benchmark": "task_start",
        "what": {
            "berth": "RunTask -> DescribeTasks lastStatus RUNNING (FARGATE, awsvpc, cached image, sleep 3600)",
            "crun": "crun run of an OCI bundle from the same image, args [true] (create+start+exit+delete)",
            "podman": "podman run --rm --network none, same image, true",
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "count": args.count,
        "poll_ms": args.poll_ms,
        "results": results,
        "ratios": ratios,
        **extra,
        "host": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "cold_cgroup_attach_ms": cold_cgroup_attach_ms(),
            "crun": tool_version(["crun", "--version"]),
            "podman": tool_version(["podman", "--version"]),
            "berth_bin": args.berth_bin if "berth" in results else None,
            "git_rev": git_rev,
        },
    }
    common.write_json(args.out, doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
