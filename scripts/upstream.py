#!/usr/bin/env python3
"""A small loopback upstream for verify.sh.

Every request is answered with a JSON echo of what arrived, so the caller can
check what the proxy forwarded:

    {"upstream": NAME, "method": ..., "path": ..., "version": ...,
     "headers": [[name, value], ...],        # in arrival order
     "body_len": N, "body_sha256": "...", "body": "..."}

and with the header `X-Upstream: NAME`. Special paths:

    .../healthz          200 "ok NAME" (any prefix, so a --primary URL with a
                         path prefix is probed at <prefix>/healthz)
    /__upstream/probes   (asked directly, not through the proxy) the distinct
                         [path, Host] pairs of the health checks seen so far
    /slow?ms=N           sleeps N milliseconds before the echo
    /upgrade             with an Upgrade header: 101 Switching Protocols, then
                         echoes raw bytes back until the peer closes

Request bodies may be Content-Length or chunked. The server binds 127.0.0.1
with SO_REUSEADDR, so it can be killed and started again on the same port.
With --port 0 it picks a free port; --port-file receives the bound port once
the socket is listening.
"""

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "verify-upstream"
    name = "upstream"
    probes = set()
    probes_lock = threading.Lock()

    def log_message(self, format, *args):  # keep the verify output clean
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers end with an empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk data
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", self.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.read_body()
        url = urlsplit(self.path)
        if url.path.endswith("/healthz"):
            with self.probes_lock:
                self.probes.add((url.path, self.headers.get("Host", "")))
            self.reply(200, ("ok " + self.name).encode(), "text/plain")
            return
        if url.path == "/__upstream/probes":
            with self.probes_lock:
                seen = sorted(self.probes)
            self.reply(200, json.dumps(seen).encode(), "application/json")
            return
        if url.path == "/upgrade" and self.headers.get("Upgrade"):
            self.tunnel_echo()
            return
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000.0)
        echo = {
            "upstream": self.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode("utf-8", "replace"),
        }
        self.reply(200, json.dumps(echo).encode(), "application/json")

    def tunnel_echo(self):
        self.send_response(101)
        self.send_header("Upgrade", self.headers["Upgrade"])
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while True:
            data = self.rfile.read1(65536)  # bytes already buffered come first
            if not data:
                break
            self.wfile.write(data)
            self.wfile.flush()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            # The proxy gave up on us (e.g. its upstream timeout); not our problem.
            self.close_connection = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()

    Handler.name = args.name
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
