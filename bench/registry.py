#!/usr/bin/env python3
"""berth's registry against the CNCF distribution registry, same host, same run, same client.

    python3 bench/registry.py [--rounds 5] [--duration 10] [--connections 32] [--big-mib 100]

Env: BERTH_BIN (default target/release/berth; build it with `cargo build --release -p berth`).
Installs `docker-registry` (CNCF distribution 2.8, Debian's package) and `wrk` with apt-get when
missing, so CI never pays for them. Needs skopeo and python3. Writes bench/results/registry.json.

Setup: one image built here as an OCI layout (bench/oci-layout.py): a ~100 MiB layer of random,
incompressible bytes (gzip level 1) plus 5 small layers (1 KiB .. 256 KiB of text). berth
(`berth server --no-agent`, its own temp data dir) and distribution (`docker-registry serve`
with filesystem storage in its own temp dir, inmemory blob descriptor cache as Debian ships it,
access log off) listen on two free 127.0.0.1 ports.

Measured, for each registry:
  push    `skopeo copy oci:<layout-i>:big docker://<reg>/bench-<i>:big`: round i pushes its own
          freshly built image (new random layer) into a fresh repository of each registry, so
          nothing can be deduplicated or mounted; MiB/s of the image's bytes (median of --rounds;
          the registry that goes first alternates).
  pull    `skopeo copy docker://<reg>/bench-0:big oci:<fresh dir>:big`, MiB/s (median of
          --rounds, alternating which registry goes first).
  by_tag  `wrk -d10s` GET /v2/bench-0/manifests/big (Accept: OCI manifest), requests/s.
  by_digest the same by digest.
Ratios are berth/distribution (> 1 is berth faster). Targets (issue 4): manifest GETs >= 10x,
push and pull >= 1.0x. Only 127.0.0.1 is used; both servers and the temp dirs go at the end.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, credentials, log, free_port, wait_http, write_json  # noqa: E402

VENV_AWS = os.path.join(ROOT, ".venv", "bin", "aws")


def ensure_tools():
    missing = [p for p, b in (("docker-registry", "docker-registry"), ("wrk", "wrk"), ("skopeo", "skopeo"))
               if shutil.which(b) is None]
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq",
                        "--no-install-recommends"] + missing, check=True, env=env,
                       stdout=subprocess.DEVNULL)


def build_image(tmp, big_mib, n):
    out = os.path.join(tmp, f"layout-{n}")
    small = [
        {"files": {f"etc/small-{i}.txt": ("layer %d\n" % i) * max(1, (4 ** i) * 1024 // 8)}}
        for i in range(5)
    ]
    spec = {"out": out, "images": [{"tag": "big", "layers": [{"random": big_mib * 1024 * 1024}] + small}]}
    spec_path = os.path.join(tmp, f"spec-{n}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    digests = json.loads(subprocess.check_output([sys.executable, os.path.join(ROOT, "bench", "oci-layout.py"), spec_path]))
    size = 0
    for root, _, files in os.walk(os.path.join(out, "blobs")):
        size += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return out, digests["big"], size


def skopeo(src, dst):
    t = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst],
                   check=True)
    return time.perf_counter() - t


def wrk(url, duration, connections, accept):
    out = subprocess.check_output(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-H", f"Accept: {accept}", url], text=True)
    rps = None
    non2xx = 0
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if "Non-2xx" in line:
            non2xx = int(line.split()[-1])
    if rps is None or non2xx:
        raise SystemExit(f"wrk against {url} failed:\n{out}")
    return rps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--big-mib", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "registry.json"))
    args = ap.parse_args()
    berth_bin = os.environ.get("BERTH_BIN", os.path.join(ROOT, "target", "release", "berth"))
    if not os.path.exists(berth_bin):
        raise SystemExit(f"{berth_bin} missing: cargo build --release -p berth")
    ensure_tools()
    aws = VENV_AWS if os.path.exists(VENV_AWS) else shutil.which("aws")
    tmp = tempfile.mkdtemp(prefix="berth-bench-registry-")
    procs = []
    try:
        log(f"building {args.rounds} images ({args.big_mib} MiB random layer + 5 small layers each)")
        # A new image per push round: skopeo's blob info cache would otherwise turn later pushes
        # into cross-repository mounts of the blobs pushed in the first round.
        images = [build_image(tmp, args.big_mib, i) for i in range(args.rounds)]
        digest = images[0][1]
        image_mib = images[0][2] / (1024 * 1024)
        image_bytes = images[0][2]
        bport, dport = free_port(), free_port()
        bdata = os.path.join(tmp, "berth")
        os.makedirs(bdata)
        # Like for like: distribution runs without auth, so berth does too (--no-registry-auth);
        # its ECR API still needs the generated key.
        berth = subprocess.Popen([berth_bin, "server", "--no-agent", "--no-registry-auth",
                                  "--listen", f"127.0.0.1:{bport}", "--data-dir", bdata], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(tmp, "berth.log"), "w"),
                                 env=dict(os.environ, BERTH_LOG="warn"))
        procs.append(berth)
        ddata = os.path.join(tmp, "distribution")
        os.makedirs(ddata)
        cfg = os.path.join(tmp, "distribution.yml")
        with open(cfg, "w") as f:
            f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {ddata}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{dport}
""")
        dist = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "distribution.log"), "w"))
        procs.append(dist)
        wait_http(f"http://127.0.0.1:{bport}/v2/", berth, "berth")
        wait_http(f"http://127.0.0.1:{dport}/v2/", dist, "distribution")
        version = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True).stdout.strip()
        key_id, secret = credentials(bdata)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION="us-east-1")
        for i in range(args.rounds):
            subprocess.run([aws, "--endpoint-url", f"http://127.0.0.1:{bport}", "ecr", "create-repository",
                            "--repository-name", f"bench-{i}"], check=True, env=env, stdout=subprocess.DEVNULL)
        results = {}
        servers = (("berth", bport), ("distribution", dport))
        push = {"berth": [], "distribution": []}
        for i in range(args.rounds):
            # Alternate who goes first so neither always reads a cold page cache.
            for name, port in (servers if i % 2 == 0 else servers[::-1]):
                layout, _, size = images[i]
                mib = size / (1024 * 1024)
                secs = skopeo(f"oci:{layout}:big", f"docker://127.0.0.1:{port}/bench-{i}:big")
                push[name].append(mib / secs)
                log(f"{name} push {i}: {secs:.2f} s, {mib / secs:.0f} MiB/s")
        pull = {"berth": [], "distribution": []}
        for i in range(args.rounds):
            for name, port in (servers if i % 2 == 0 else servers[::-1]):
                dest = os.path.join(tmp, f"pull-{name}-{i}")
                secs = skopeo(f"docker://127.0.0.1:{port}/bench-0:big", f"oci:{dest}:big")
                pull[name].append(image_mib / secs)
                shutil.rmtree(dest)
                log(f"{name} pull {i}: {secs:.2f} s, {image_mib / secs:.0f} MiB/s")
        for name, port in servers:
            accept = "application/vnd.oci.image.manifest.v1+json"
            base = f"http://127.0.0.1:{port}/v2/bench-0/manifests/"
            by_tag = wrk(base + "big", args.duration, args.connections, accept)
            log(f"{name} manifest GET by tag: {by_tag:.0f} req/s")
            by_digest = wrk(base + digest, args.duration, args.connections, accept)
            log(f"{name} manifest GET by digest: {by_digest:.0f} req/s")
            results[name] = {
                "push_mib_s": statistics.median(push[name]), "push_samples_mib_s": push[name],
                "pull_mib_s": statistics.median(pull[name]), "pull_samples_mib_s": pull[name],
                "manifest_get_by_tag_rps": by_tag, "manifest_get_by_digest_rps": by_digest,
            }
        b, d = results["berth"], results["distribution"]
        ratios = {
            "manifest_get_by_tag": b["manifest_get_by_tag_rps"] / d["manifest_get_by_tag_rps"],
            "manifest_get_by_digest": b["manifest_get_by_digest_rps"] / d["manifest_get_by_digest_rps"],
            "push": b["push_mib_s"] / d["push_mib_s"],
            "pull": b["pull_mib_s"] / d["pull_mib_s"],
        }
        targets = {"manifest_get_by_tag": 10.0, "manifest_get_by_digest": 10.0, "push": 1.0, "pull": 1.0}
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        report = {
            "benchmark": "registry",
            "image_bytes": image_bytes, "big_layer_mib": args.big_mib, "small_layers": 5,
            "rounds": args.rounds, "wrk": {"threads": 2, "connections": args.connections, "duration_s": args.duration},
            "peer": {"name": "CNCF distribution (docker-registry)", "version": version},
            "results": results, "ratios_berth_over_distribution": ratios,
            "targets": targets, "met": {k: ratios[k] >= targets[k] for k in ratios},
            "host": {"cpus": os.cpu_count(), "kernel": os.uname().release},
            "git_revision": rev, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(args.out, report)
        print(f"{'':24}{'berth':>12}{'distribution':>14}{'ratio':>8}{'target':>8}")
        rows = [("manifest GET tag req/s", "manifest_get_by_tag_rps", "manifest_get_by_tag"),
                ("manifest GET digest req/s", "manifest_get_by_digest_rps", "manifest_get_by_digest"),
                ("push MiB/s", "push_mib_s", "push"), ("pull MiB/s", "pull_mib_s", "pull")]
        for label, key, r in rows:
            print(f"{label:24}{b[key]:12.0f}{d[key]:14.0f}{ratios[r]:8.2f}{targets[r]:8.1f}"
                  f"{'' if ratios[r] >= targets[r] else '  MISSED'}")
        print(f"written {args.out}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
