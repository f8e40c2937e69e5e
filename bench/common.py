"""Helpers every bench script shares: logging, free ports, waiting for a server, berth's
credentials, botocore from the project venv, latency statistics, tool versions.

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common  # noqa: E402
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")


def log(msg):
    """One `[bench] ...` line on stderr."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    """subprocess.run, checked unless told otherwise."""
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def load_botocore(required=True):
    """The `botocore` package (with botocore.session imported) and its Config class. When it is
    missing, the script re-runs itself under the project venv (which has it, via awscli);
    failing that, raises ImportError, or returns (None, None) when not `required`."""
    try:
        # awscli v1 (>= 1.44) vendors botocore as awscli.botocore and aliases the top-level name
        # `botocore` once anything from awscli is imported; a standalone botocore works as well.
        try:
            import awscli  # noqa: F401
        except ImportError:
            pass
        import botocore.session
        from botocore.config import Config
        return botocore, Config
    except ImportError:
        if os.path.exists(VENV_PY) and os.path.realpath(sys.executable) != os.path.realpath(VENV_PY):
            os.execv(VENV_PY, [VENV_PY] + sys.argv)
        if required:
            raise
        return None, None


def wait_http(url, proc=None, what=None, timeout=30):
    """Waits until `url` gives any HTTP answer (berth's /v2/ says 401 before a login); raises
    RuntimeError when `proc` (if given) exits first or nothing answers within `timeout` s."""
    what = what or url
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer at {url} within {timeout}s")
            time.sleep(0.05)


def credentials(data_dir, timeout=30):
    """(access key id, secret) berth created in `data_dir/credentials.json` on start."""
    path = os.path.join(data_dir, "credentials.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)
    with open(path) as f:
        k = json.load(f)["AccessKeys"][0]
    return k["AccessKeyId"], k["SecretAccessKey"]


def stats(samples_s):
    """Summary in milliseconds of samples in seconds: n, median, p90 (nearest rank), min, max,
    mean, and the sorted samples."""
    ms = sorted(s * 1000.0 for s in samples_s)
    n = len(ms)

    def pct(p):  # nearest-rank percentile
        k = max(1, -(-p * n // 100))  # ceil(p*n/100)
        return ms[int(k) - 1]

    return {
        "n": n,
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(pct(90), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "samples_ms": [round(x, 3) for x in ms],
    }


def tool_version(cmd):
    """First line of what `cmd` (e.g. ["podman", "--version"]) prints, or None."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def write_json(path, obj):
    """Writes `obj` as indented JSON (and a newline) to `path`, creating its directory; a bare
    name such as "services.json" goes to bench/results/."""
    if os.path.dirname(path) == "":
        path = os.path.join(ROOT, "bench", "results", path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return path
