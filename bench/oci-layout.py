#!/usr/bin/env python3
"""Build OCI image layouts for berth's registry tests and benchmark.

Usage: python3 bench/oci-layout.py SPEC.json

SPEC (JSON):
  {"out": "DIR",                      # OCI layout directory (created; other tags kept)
   "images": [{
      "tag": "1",                     # ref name in index.json
      "arch": "amd64", "os": "linux", # config platform (defaults shown)
      "layers": [                     # bottom first; each is one tar layer
        {"files": {"path": "content", ...},   # regular files (text)
         "dirs": ["path", ...],               # directories
         "whiteouts": ["path", ...],          # .wh.<name> entries
         "opaque": ["dir", ...]},             # <dir>/.wh..wh..opq entries
        {"random": 104857600}                 # one file of N random (incompressible) bytes
      ],
      "compress": "gzip"}],           # gzip (level 1) or none
   "indexes": [{"tag": "multi", "images": ["amd", "arm"]}]}  # image index of earlier tags

Entries have fixed mtimes and order; only random layers differ between runs.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF = "org.opencontainers.image.ref.name"


def sha256_file(path):
    """(sha256 hex digest, size) of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            size += len(b)
    return h.hexdigest(), size


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    def __init__(self, out):
        self.out = out
        self.blobs = os.path.join(out, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(out, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        try:
            with open(os.path.join(out, "index.json")) as f:
                self.index = json.load(f)
        except FileNotFoundError:
            self.index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
        self.tags = {}

    def put(self, data, media_type):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, d), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data)}

    def put_file(self, path, media_type):
        d, size = sha256_file(path)
        os.replace(path, os.path.join(self.blobs, d))
        return {"mediaType": media_type, "digest": "sha256:" + d, "size": size}

    def tag(self, tag, desc):
        self.index["manifests"] = [
            m for m in self.index["manifests"] if m.get("annotations", {}).get(REF) != tag
        ]
        entry = dict(desc)
        entry["annotations"] = {REF: tag}
        self.index["manifests"].append(entry)
        self.tags[tag] = desc

    def save(self):
        with open(os.path.join(self.out, "index.json"), "wb") as f:
            f.write(canonical(self.index))


def tar_info(name, kind=tarfile.REGTYPE, size=0, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = 0
    ti.uname = ti.gname = "root"
    return ti


def build_layer(layout, spec, compress, tmpdir):
    """Writes one layer; returns (descriptor, diff_id)."""
    raw_path = os.path.join(tmpdir, "layer.tar")
    with open(raw_path, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            for d in spec.get("dirs", []):
                t.addfile(tar_info(d.rstrip("/") + "/", tarfile.DIRTYPE, mode=0o755))
            for d in spec.get("opaque", []):
                t.addfile(tar_info(d.rstrip("/") + "/.wh..wh..opq"), io.BytesIO(b""))
            for w in spec.get("whiteouts", []):
                head, _, base = w.rpartition("/")
                name = (head + "/" if head else "") + ".wh." + base
                t.addfile(tar_info(name), io.BytesIO(b""))
            for path, content in sorted(spec.get("files", {}).items()):
                data = content.encode()
                t.addfile(tar_info(path, size=len(data)), io.BytesIO(data))
            n = spec.get("random")
            if n:
                src = os.path.join(tmpdir, "random.bin")
                with open(src, "wb") as f:
                    left = n
                    while left:
                        chunk = os.urandom(min(left, 1 << 20))
                        f.write(chunk)
                        left -= len(chunk)
                with open(src, "rb") as f:
                    t.addfile(tar_info("data/random.bin", size=n), f)
                os.remove(src)
    diff, _ = sha256_file(raw_path)
    if compress == "gzip":
        gz_path = raw_path + ".gz"
        with open(raw_path, "rb") as src, open(gz_path, "wb") as dst:
            with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=1, mtime=0, filename="") as z:
                while True:
                    b = src.read(1 << 20)
                    if not b:
                        break
                    z.write(b)
        os.remove(raw_path)
        return layout.put_file(gz_path, MT_TAR_GZIP), "sha256:" + diff
    return layout.put_file(raw_path, MT_TAR), "sha256:" + diff


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    layout = Layout(spec["out"])
    tmpdir = os.path.join(spec["out"], ".tmp")
    os.makedirs(tmpdir, exist_ok=True)
    for img in spec.get("images", []):
        descs, diffs = [], []
        for l in img.get("layers", []):
            d, diff = build_layer(layout, l, img.get("compress", "gzip"), tmpdir)
            descs.append(d)
            diffs.append(diff)
        arch, os_name = img.get("arch", "amd64"), img.get("os", "linux")
        config = {
            "architecture": arch,
            "os": os_name,
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diffs},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "oci-layout.py"} for _ in diffs],
        }
        cdesc = layout.put(canonical(config), MT_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc, "layers": descs}
        mdesc = layout.put(canonical(manifest), MT_MANIFEST)
        mdesc["platform"] = {"architecture": arch, "os": os_name}
        layout.tag(img["tag"], mdesc)
    for ix in spec.get("indexes", []):
        manifests = [layout.tags[t] for t in ix["images"]]
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}
        layout.tag(ix["tag"], layout.put(canonical(index), MT_INDEX))
    layout.save()
    os.rmdir(tmpdir)
    print(json.dumps({t: d["digest"] for t, d in layout.tags.items()}))


if __name__ == "__main__":
    main()
