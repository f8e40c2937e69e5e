#!/usr/bin/env python3
"""Build berth's small test image as an OCI image layout directory.

The image is one gzip layer holding Debian's static busybox (package
busybox-static) with symlinks for common applets, plus /etc/passwd and
/etc/group.  No registry, no Docker: only this host's /bin/busybox.

Usage: python3 scripts/build-test-image.py OUTDIR [--tag 1] [--busybox /bin/busybox]

The output is deterministic (fixed mtimes, sorted entries, fixed gzip header),
so the same busybox binary always gives the same manifest digest.  Other tags
already in OUTDIR/index.json are kept; an entry with the same tag is replaced.

Check it with:  skopeo inspect oci:OUTDIR:TAG
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

EPOCH = 0  # mtime of every tar entry and the gzip header
CREATED = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Applets linked in /bin when this busybox has them (checked with `busybox --list`).
APPLETS = """
    sh ash echo cat sleep ls env wget head tail dd true false id hostname ps grep
    egrep fgrep yes seq printf printenv pwd test [ [[ expr uname date stat kill
    killall pidof pgrep pkill mkdir rmdir rm cp mv ln chmod chown chgrp touch
    readlink realpath basename dirname mktemp sed awk tr wc sort uniq cut tee
    xargs find which timeout usleep nohup sync df du free uptime top watch
    md5sum sha1sum sha256sum sha512sum base64 hexdump od diff cmp nc netstat
    ifconfig ip ping route nslookup httpd tar gzip gunzip zcat more less vi
    whoami mount umount dmesg nproc rev fold tac install truncate
""".split()

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\n"


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def available_applets(busybox):
    try:
        out = subprocess.run(
            [busybox, "--list"], check=True, capture_output=True, text=True
        ).stdout
        have = set(out.split())
    except (OSError, subprocess.CalledProcessError):
        have = None  # cannot ask: link the whole list
    return sorted(a for a in APPLETS if have is None or a in have)


def tar_info(name, kind, mode, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def build_layer(busybox):
    """Return the uncompressed layer tar as bytes."""
    with open(busybox, "rb") as f:
        busybox_bytes = f.read()

    # name -> (kind, mode, data or linkname)
    entries = {}
    for d, mode in [
        ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755),
        ("proc", 0o555), ("root", 0o700), ("run", 0o755), ("sbin", 0o755),
        ("sys", 0o555), ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755),
        ("usr/sbin", 0o755), ("var", 0o755), ("var/tmp", 0o1777),
    ]:
        entries[d] = (tarfile.DIRTYPE, mode, None)
    entries["bin/busybox"] = (tarfile.REGTYPE, 0o755, busybox_bytes)
    for applet in available_applets(busybox):
        if applet != "busybox":
            entries["bin/" + applet] = (tarfile.SYMTYPE, 0o777, "busybox")
    entries["usr/bin/env"] = (tarfile.SYMTYPE, 0o777, "/bin/busybox")
    entries["etc/passwd"] = (tarfile.REGTYPE, 0o644, PASSWD.encode())
    entries["etc/group"] = (tarfile.REGTYPE, 0o644, GROUP.encode())

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, mode, payload = entries[name]
            if kind == tarfile.REGTYPE:
                tar.addfile(tar_info(name, kind, mode, len(payload)), io.BytesIO(payload))
            elif kind == tarfile.SYMTYPE:
                tar.addfile(tar_info(name, kind, mode, linkname=payload))
            else:
                tar.addfile(tar_info(name + "/", kind, mode))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of host details.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=6, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_blob(outdir, data):
    digest = sha256(data)
    path = os.path.join(outdir, "blobs", "sha256", digest.split(":", 1)[1])
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return {"digest": digest, "size": len(data)}


def write_file(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def build(outdir, tag, busybox):
    os.makedirs(os.path.join(outdir, "blobs", "sha256"), exist_ok=True)

    layer_tar = build_layer(busybox)
    layer_gz = gzip_bytes(layer_tar)
    layer = write_blob(outdir, layer_gz)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": [PATH_ENV],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer_tar)]},
        "history": [{"created": CREATED, "created_by": "scripts/build-test-image.py (busybox-static)"}],
    }
    cfg = write_blob(outdir, canonical_json(config))

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, **cfg},
        "layers": [{"mediaType": MT_LAYER_GZIP, **layer}],
    }
    man = write_blob(outdir, canonical_json(manifest))

    index_path = os.path.join(outdir, "index.json")
    manifests = []
    if os.path.exists(index_path):
        try:
            with open(index_path) as f:
                old = json.load(f)
            manifests = [
                m for m in old.get("manifests", [])
                if m.get("annotations", {}).get(REF_NAME) != tag
            ]
        except (OSError, ValueError):
            manifests = []
    manifests.append({
        "mediaType": MT_MANIFEST,
        **man,
        "annotations": {REF_NAME: tag},
    })
    manifests.sort(key=lambda m: (m.get("annotations", {}).get(REF_NAME, ""), m["digest"]))
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}

    write_file(os.path.join(outdir, "oci-layout"), canonical_json({"imageLayoutVersion": "1.0.0"}))
    write_file(index_path, canonical_json(index))
    return man["digest"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--tag", default="1")
    ap.add_argument("--busybox", default="/bin/busybox",
                    help="static busybox binary (default: /bin/busybox from busybox-static)")
    args = ap.parse_args()
    if not os.path.isfile(args.busybox):
        sys.exit(f"{args.busybox} not found: apt-get install busybox-static (or run scripts/deps.sh)")
    digest = build(args.outdir, args.tag, args.busybox)
    print(f"{args.outdir}:{args.tag} {digest}")


if __name__ == "__main__":
    main()
