#!/usr/bin/env python3
"""Send raw bytes to 127.0.0.1:PORT and report what came back, for verify.sh.

    raw.py PORT COUNT REQUEST

REQUEST is a Python-escaped string (\\r\\n, \\x00, ...). It is sent as is and
exactly COUNT responses are read (each with its body, framed by
Content-Length, chunked or close). The output is one line: the status codes,
then whether the proxy closed the connection afterwards:

    400 closed          200 200 open          none reset          none timeout

With --body-of N the body of the Nth response (1-based) is written to stdout
after that line. --methods HEAD,GET names the method of each request, so that
the answer to a HEAD is read without a body. With --sleep-after-head S the request is split at the first
CRLFCRLF and the body goes out S seconds after the head.
"""

import argparse
import socket
import sys
import time
from http.client import HTTPResponse


class _SharedFile:
    """Lets several HTTPResponse objects read one after the other from one
    buffered file (HTTPResponse closes its file when a body ends)."""

    def __init__(self, f):
        self.f = f

    def makefile(self, *args, **kwargs):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self.f, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("request")
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--body-of", type=int, default=0)
    ap.add_argument("--sleep-after-head", type=float, default=0.0)
    ap.add_argument("--methods", default="")
    args = ap.parse_args()

    data = args.request.encode("latin-1").decode("unicode_escape").encode("latin-1")
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    codes, bodies, ending = [], [], "open"
    try:
        if args.sleep_after_head and b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            sock.sendall(head + b"\r\n\r\n")
            time.sleep(args.sleep_after_head)
            sock.sendall(body)
        else:
            sock.sendall(data)
        f = sock.makefile("rb")
        methods = [m for m in args.methods.split(",") if m]
        for i in range(args.count):
            method = methods[i] if i < len(methods) else "GET"
            resp = HTTPResponse(_SharedFile(f), method=method)
            resp.begin()
            codes.append(str(resp.status))
            bodies.append(resp.read())
        # After the expected answers: does the proxy close, or keep the connection?
        sock.settimeout(min(args.timeout, 1.0))
        try:
            extra = f.read1(1) if hasattr(f, "read1") else f.read(1)
            ending = "closed" if extra == b"" else "extra-bytes"
        except socket.timeout:
            ending = "open"
    except socket.timeout:
        ending = "timeout"
    except (ConnectionResetError, BrokenPipeError):
        ending = "reset"
    except Exception as e:  # a malformed answer is a result, not a crash
        ending = "error:" + type(e).__name__
    finally:
        sock.close()
    print(" ".join(codes or ["none"]), ending)
    if args.body_of and len(bodies) >= args.body_of:
        sys.stdout.write(bodies[args.body_of - 1].decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
