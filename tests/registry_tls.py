#!/usr/bin/env python3
"""A small read-only OCI registry for black-box tests (stdlib only).

Serves one OCI image layout directory (its index.json tags, its blobs) as repository
--repo, over TLS (--cert/--key) or plain HTTP, with the distribution token protocol:
every /v2/ request without a valid token gets 401 and
`WWW-Authenticate: Bearer realm="<scheme>://<host>:<port>/token",service="test-registry",
scope="repository:<repo>:pull"`; GET /token (Basic credentials required when --user is
given) answers {"token": ..., "expires_in": 300}. Each request is logged to --log as one
line: `<METHOD> <path> <auth>` where auth is none, bearer-ok, bearer-bad or basic;
TLS handshake failures are logged as `TLS-FAIL <reason>`. In plain mode a TLS ClientHello
is answered `HTTP/1.0 400 Bad Request` at once, as common HTTP servers do.

Prints `PORT <n>` on stdout once listening.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--layout", required=True)
ap.add_argument("--repo", default="busybox")
ap.add_argument("--bind", default="127.0.0.1")
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--user")
ap.add_argument("--password")
ap.add_argument("--log", required=True)
# The scope the challenge names and /token expects (default repository:<repo>:pull; public
# ECR names `aws`).
ap.add_argument("--challenge-scope")
args = ap.parse_args()

TOKENS = set()
SCOPE = args.challenge_scope or f"repository:{args.repo}:pull"
LOCK = threading.Lock()
LOG = open(args.log, "a", buffering=1)


def log(line):
    with LOCK:
        LOG.write(line + "\n")


def tags():
    with open(os.path.join(args.layout, "index.json")) as f:
        idx = json.load(f)
    out = {}
    for m in idx.get("manifests", []):
        name = (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if name:
            out[name] = m
    return out


def blob_path(digest):
    m = re.fullmatch(r"sha256:([0-9a-f]{64})", digest)
    if not m:
        return None
    p = os.path.join(args.layout, "blobs", "sha256", m.group(1))
    return p if os.path.isfile(p) else None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle(self):
        if not args.cert:
            try:
                first = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if first == b"\x16":
                log("PLAIN-GOT-TLS")
                self.connection.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
        super().handle()

    def scheme_host(self):
        scheme = "https" if args.cert else "http"
        return f"{scheme}://{args.bind}:{self.server.server_address[1]}"

    def send_json(self, status, obj, headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def auth_kind(self):
        h = self.headers.get("Authorization", "")
        if h.startswith("Bearer "):
            with LOCK:
                ok = h[7:] in TOKENS
            return "bearer-ok" if ok else "bearer-bad"
        if h.startswith("Basic "):
            return "basic"
        return "none"

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        kind = self.auth_kind()
        log(f"{self.command} {self.path} {kind}")
        if url.path == "/token":
            return self.token(url, kind)
        if not url.path.startswith("/v2/"):
            return self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
        if kind != "bearer-ok":
            challenge = (
                f'Bearer realm="{self.scheme_host()}/token",service="test-registry",'
                f'scope="{SCOPE}"'
            )
            return self.send_json(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                [("WWW-Authenticate", challenge)],
            )
        if url.path == "/v2/":
            return self.send_json(200, {})
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", url.path)
        if not m or m.group(1) != args.repo:
            return self.send_json(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]})
        what, ref = m.group(2), m.group(3)
        media_type = "application/octet-stream"
        if what == "manifests":
            t = tags().get(ref)
            digest = t["digest"] if t else ref
            media_type = t["mediaType"] if t else "application/vnd.oci.image.manifest.v1+json"
        else:
            digest = ref
        p = blob_path(digest)
        if p is None:
            code = "MANIFEST_UNKNOWN" if what == "manifests" else "BLOB_UNKNOWN"
            return self.send_json(404, {"errors": [{"code": code, "message": "unknown"}]})
        with open(p, "rb") as f:
            data = f.read()
        if what == "manifests" and not (tags().get(ref)):
            try:
                media_type = json.loads(data).get("mediaType", media_type)
            except ValueError:
                pass
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def token(self, url, kind):
        if args.user is not None:
            want = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
            if self.headers.get("Authorization", "") != want:
                return self.send_json(401, {"details": "incorrect username or password"})
        q = urllib.parse.parse_qs(url.query)
        if q.get("scope") != [SCOPE] or q.get("service") != ["test-registry"]:
            return self.send_json(400, {"details": "unexpected scope or service"})
        tok = secrets.token_hex(16)
        with LOCK:
            TOKENS.add(tok)
        self.send_json(200, {"token": tok, "expires_in": 300})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        if args.cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.cert, args.key)
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log(f"TLS-FAIL {getattr(e, 'reason', None) or e}")
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass


srv = Server((args.bind, args.port), Handler)
print(f"PORT {srv.server_address[1]}", flush=True)
srv.serve_forever()
