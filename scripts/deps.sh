#!/usr/bin/env bash
# Install and set up what berth's build, tests, demo and benchmark need on a Debian 12 host.
# Idempotent: each step checks first and only acts when something is missing; safe to run twice.
# Needs root for apt-get, the cgroup mount and /etc/containers (skips those steps, saying so, if not root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

say() { echo "deps: $*"; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else SUDO=""; fi
as_root() {
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then $SUDO "$@"; else return 1; fi
}

# --- Debian packages -------------------------------------------------------------------------------
# crun/runc: OCI runtimes (crun is the agent's default); skopeo: push/copy images in tests;
# busybox-static: the test image; containernetworking-plugins + iproute2 + iptables: awsvpc task
# networking; podman: the benchmark's peer; python3-venv: the aws cli venv; curl/make/jq: scripts.
PACKAGES=(crun runc skopeo busybox-static podman buildah containernetworking-plugins iproute2 iptables
          python3-venv curl make jq ca-certificates chromium)
# chromium: the web console test and benchmark (Playwright from npm drives Debian's chromium).
# Node.js with npm must already be there (Debian's `npm` conflicts with NodeSource's nodejs).

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
    as_root apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
    say "installed: ${missing[*]}"
else
    say "Debian packages present (${PACKAGES[*]})"
fi

# --- AWS CLI (v1, from PyPI) in a project-local venv ---------------------------------------------
if [ ! -x "$ROOT/.venv/bin/aws" ]; then
    PY=""
    for cand in /usr/bin/python3 python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            PY=$cand; break
        fi
    done
    [ -n "$PY" ] || { say "no python3 with venv+ensurepip found (apt-get install python3-venv)"; exit 1; }
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        say "creating .venv with $PY ($("$PY" --version 2>&1))"
        "$PY" -m venv "$ROOT/.venv"
    fi
    say "pip install awscli into .venv"
    "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check awscli
    say "installed $("$ROOT/.venv/bin/aws" --version 2>&1)"
else
    say ".venv/bin/aws present ($("$ROOT/.venv/bin/aws" --version 2>&1 | cut -d' ' -f1-2))"
fi

# --- playwright-core for the console test (npm; uses /usr/bin/chromium, never downloads a browser) ---
if [ ! -d "$ROOT/tests/console/node_modules/playwright-core" ]; then
    command -v npm >/dev/null 2>&1 || { say "npm missing: install Node.js with npm"; exit 1; }
    say "npm ci in tests/console (playwright-core)"
    (cd "$ROOT/tests/console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
else
    say "tests/console/node_modules present"
fi

# --- cgroup hugetlb v1 hierarchy (crun 1.8 refuses hybrid layouts otherwise) ----------------------
# On hosts whose cgroup layout is hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified), Debian's
# crun 1.8.1 fails with "cgroups in hybrid mode not supported" unless hugetlb has a v1 hierarchy.
# The mount lasts until reboot.
if [ "$(findmnt -n -o FSTYPE /sys/fs/cgroup/unified 2>/dev/null || true)" = "cgroup2" ]; then
    if mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
        say "cgroup hugetlb hierarchy already mounted"
    elif grep -qw hugetlb /proc/cgroups; then
        say "hybrid cgroup layout: mounting a v1 hugetlb hierarchy at /sys/fs/cgroup/hugetlb (for crun)"
        as_root mkdir -p /sys/fs/cgroup/hugetlb
        as_root mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb \
            || say "WARNING: could not mount hugetlb; crun may refuse this hybrid cgroup layout"
    else
        say "hybrid cgroup layout but the kernel has no hugetlb controller; leaving it"
    fi
else
    say "cgroup layout is not hybrid; no hugetlb mount needed"
fi

# --- podman configuration (benchmark peer) -------------------------------------------------------
# No systemd session here -> cgroupfs + file events; no CAP_SYS_RESOURCE and a hard nofile limit
# (and nproc) below podman's defaults -> fixed ulimits that fit under the hard limits.
if command -v podman >/dev/null 2>&1; then
    CONF=/etc/containers/containers.conf
    MARK="# managed by berth scripts/deps.sh"
    hard=$(ulimit -Hn)
    if [ "$hard" = "unlimited" ] || [ "$hard" -gt 1024 ]; then nofile=1024; else nofile=$hard; fi
    hardu=$(ulimit -Hu)
    # (podman's conmon runs with nproc capped at 32768 here, so keep well below that)
    if [ "$hardu" = "unlimited" ] || [ "$hardu" -gt 4096 ]; then nproc=4096; else nproc=$hardu; fi
    want="$MARK
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]

[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
runtime = \"crun\"
"
    if [ -f "$CONF" ] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
        if grep -q 'default_ulimits' "$CONF" && grep -q 'cgroup_manager *= *"cgroupfs"' "$CONF"; then
            say "$CONF exists (not ours) and already sets default_ulimits and cgroupfs; leaving it"
        else
            say "$CONF exists (not ours): saving it as $CONF.berth-orig and writing berth's settings"
            as_root cp -n "$CONF" "$CONF.berth-orig"
            printf '%s' "$want" | as_root tee "$CONF" >/dev/null
        fi
    elif [ "$(cat "$CONF" 2>/dev/null || true)" != "$(printf '%s' "$want")" ]; then
        say "writing $CONF (nofile=${nofile}, nproc=${nproc}, cgroupfs, file events)"
        as_root mkdir -p /etc/containers
        printf '%s' "$want" | as_root tee "$CONF" >/dev/null
    else
        say "$CONF already configured"
    fi
else
    say "podman not installed; skipping its configuration"
fi

say "done"
