#!/usr/bin/env python3
"""Hostile-but-cheap client load for benches/slowloris.sh.

Opens SLOW slowloris connections (a request head sent one byte a second that never ends
within LIFETIME) and IDLE keep-alive connections (one complete request and its response,
then silence) to HOST:PORT. Prints `ready slow=N idle=N secs=X` once every connection is
up, a `status ...` line every 5 seconds, and a `final ...` line on SIGTERM/SIGINT or after
LIFETIME seconds. A connection the server closes is counted and reopened, so the pressure
stays at SLOW + IDLE connections.

usage: slowloris.py HOST PORT SLOW IDLE LIFETIME [sync] [PAD]
With `sync`, every slowloris connection writes its byte on the same whole-second tick (a
burst of SLOW one-byte reads for the server each second) instead of spread over the second.
With PAD > 0, a slowloris connection first sends about PAD bytes of complete header lines
at once (lines under 8KB; keep PAD under the 32KB head limit), then trickles as usual: the
worst case for the memory a partial head holds.
With SLOWLORIS_SINK=1 in the environment the server is taken to be a sink that never
answers (the control in slowloris.sh): an idle connection only writes its request and
counts as up once it is written.

The tool has to be cheap, because it shares the machine with what it measures: one thread,
non-blocking sockets and one epoll set, no asyncio. The one-byte writes are scheduled on a
wheel of 10 ms slots (each slowloris connection sits in one slot: a random one, or slot 0
of every whole second with `sync`), so the loop wakes about 100 times a second whatever
SLOW is, and each write is a single send(). epoll is only asked about readability (the
server answering or closing) and, while connecting, writability.
"""
import errno
import heapq
import os
import random
import resource
import select
import signal
import socket
import sys
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
SLOW, IDLE, LIFETIME = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
SYNC = len(sys.argv) > 6 and sys.argv[6] == "sync"
PAD = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[7] else 0
SINK = os.environ.get("SLOWLORIS_SINK", "0") not in ("", "0")
CONNECT_PARALLEL = 200  # connects in flight at once (stays well under the listen backlog)
RETRY_DELAY = 0.2       # after a failed connect or a bad idle exchange
SLOTS = 100             # slots per second in the write wheel (10 ms each)
MAX_HEAD = 65536        # an idle connection's response head longer than this is bad

# A head that never ends: after the request line and Host, one header whose value grows a
# byte a second (far below the 8KB line limit and 32KB head limit for any sane run).
REQUEST_LINE = f"GET /small HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n".encode()
PADDING = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * min(4000, PAD - i * 4000))
                   for i in range((PAD + 3999) // 4000))
HEAD_PREFIX = REQUEST_LINE + PADDING + b"X-Slowloris: "
FIRST_WRITE = len(REQUEST_LINE + PADDING) if PAD else 1  # bytes written on connect
HEAD = HEAD_PREFIX + b"a" * 4096  # its first bytes, for the one-byte slices
IDLE_REQUEST = f"GET /small HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n\r\n".encode()

stats = {
    "slow_open": 0, "idle_open": 0,            # currently open
    "slow_closed": 0, "idle_closed": 0,        # closed by the server (then reopened)
    "slow_answered": 0,                        # server wrote something to a slow connection
    "connect_errors": 0, "idle_bad": 0,
}
answers = {}  # first status line seen on a slow connection -> count

CONNECTING, TRICKLING, AWAITING, HELD = range(4)  # Conn.state


class Conn:
    """One of the SLOW + IDLE logical connections; it gets a new socket when reopened."""
    __slots__ = ("slow", "sock", "send", "fd", "state", "sent", "buf", "first", "slot", "was_up")

    def __init__(self, slow):
        self.slow = slow
        self.sock = None
        self.send = None     # self.sock.send
        self.fd = -1
        self.state = CONNECTING
        self.sent = 0        # slow: head bytes written so far
        self.buf = b""       # idle: response bytes read so far
        self.first = b""     # slow: the first bytes the server wrote
        self.slot = -1       # slow: its slot in the wheel while trickling
        self.was_up = False


def head_bytes(a, b):
    """Bytes a..b of the never-ending slowloris head."""
    return HEAD_PREFIX[a:b] + b"a" * (b - max(a, len(HEAD_PREFIX)))


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def line(tag):
    s = " ".join(f"{k}={v}" for k, v in stats.items())
    a = ";".join(f"{k!r}x{v}" for k, v in answers.items())
    return f"{tag} {s}" + (f" slow_answers={a}" if a else "")


def main():
    raise_nofile()
    family, socktype, proto, _, addr = socket.getaddrinfo(HOST, PORT, 0, socket.SOCK_STREAM)[0]
    ep = select.epoll()
    by_fd = {}                                # fd -> Conn, for every open socket
    wheel = [set() for _ in range(SLOTS)]     # slot -> trickling slow Conns
    queue = [Conn(False) for _ in range(IDLE)] + [Conn(True) for _ in range(SLOW)]
    queue.reverse()                           # popped from the end: idle ones first
    retry = []                                # heap of (time, seq, Conn) waiting to reconnect
    seq = 0
    in_flight = 0                             # connects not yet completed
    up = 0                                    # logical connections that came up at least once
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def came_up(c):
        nonlocal up
        if not c.was_up:
            c.was_up = True
            up += 1
            if up == SLOW + IDLE:
                print(f"ready slow={SLOW} idle={IDLE} secs={time.monotonic() - t0:.2f}", flush=True)

    def drop(c):
        """Closes c's socket; the caller decides when c reconnects."""
        if c.slot >= 0:
            wheel[c.slot].discard(c)
            c.slot = -1
        del by_fd[c.fd]
        ep.unregister(c.fd)
        c.sock.close()
        c.sock, c.send, c.fd = None, None, -1

    def later(c):
        nonlocal seq
        seq += 1
        heapq.heappush(retry, (time.monotonic() + RETRY_DELAY, seq, c))

    def connected(c):
        c.first, c.buf = b"", b""
        try:
            if c.slow:
                c.sent = c.sock.send(head_bytes(0, FIRST_WRITE))
            else:
                c.sock.sendall(IDLE_REQUEST)  # 40-odd bytes into an empty buffer: one send
        except OSError:
            stats["connect_errors"] += 1
            drop(c)
            later(c)
            return
        ep.modify(c.fd, select.EPOLLIN)
        if c.slow:
            c.state = TRICKLING
            c.slot = 0 if SYNC else random.randrange(SLOTS)
            wheel[c.slot].add(c)
            stats["slow_open"] += 1
            came_up(c)
        elif SINK:
            c.state = HELD
            stats["idle_open"] += 1
            came_up(c)
        else:
            c.state = AWAITING

    def start(c):
        nonlocal in_flight
        try:
            s = socket.socket(family, socktype, proto)
        except OSError:
            stats["connect_errors"] += 1
            later(c)
            return
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            stats["connect_errors"] += 1
            s.close()
            later(c)
            return
        c.sock, c.send, c.fd, c.state = s, s.send, s.fileno(), CONNECTING
        by_fd[c.fd] = c
        ep.register(c.fd, select.EPOLLOUT)
        if err == 0:
            connected(c)
        else:
            in_flight += 1

    def readable(c):
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if c.state == AWAITING:
            if data:
                c.buf += data
                end = c.buf.find(b"\r\n\r\n")
                if end < 0 and len(c.buf) <= MAX_HEAD:
                    return
                try:
                    if end < 0:
                        raise ValueError("head too long")
                    length = 0
                    for h in c.buf[:end].split(b"\r\n")[1:]:
                        name, _, value = h.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(c.buf) - end - 4 < length:
                        return
                    if not c.buf.startswith(b"HTTP/1.1 200"):
                        stats["idle_bad"] += 1
                    c.buf = b""
                    c.state = HELD
                    stats["idle_open"] += 1
                    came_up(c)
                    return
                except ValueError:
                    pass
            stats["idle_bad"] += 1  # closed before a whole response, or a malformed one
            drop(c)
            later(c)
            return
        if data:
            if c.slow and not c.first:
                c.first = data
            return  # anything else the server says is only read and dropped
        # The server closed it.
        if c.slow:
            stats["slow_open"] -= 1
            stats["slow_closed"] += 1
            if c.first:
                stats["slow_answered"] += 1
                k = c.first.split(b"\r\n", 1)[0].decode("latin-1")[:40]
                answers[k] = answers.get(k, 0) + 1
        else:
            stats["idle_open"] -= 1
            stats["idle_closed"] += 1
        drop(c)
        queue.append(c)

    t0 = time.monotonic()
    end_at = t0 + LIFETIME
    next_status = t0 + 5
    tick = int(t0 * SLOTS) + 1  # the next slot boundary, in 1/SLOTS seconds of the monotonic clock
    if SLOW + IDLE == 0:
        print("ready slow=0 idle=0 secs=0.00", flush=True)
    while not stop:
        while queue and in_flight < CONNECT_PARALLEL:
            start(queue.pop())
        now = time.monotonic()
        if now >= end_at:
            break
        try:
            events = ep.poll(max(0.0, tick / SLOTS - now))
        except InterruptedError:
            events = []
        for fd, _ in events:
            c = by_fd.get(fd)
            if c is None:
                continue
            if c.state == CONNECTING:
                in_flight -= 1
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    stats["connect_errors"] += 1
                    drop(c)
                    later(c)
                else:
                    connected(c)
            else:
                readable(c)
        now = time.monotonic()
        tick = max(tick, int(now * SLOTS) - SLOTS + 1)  # fell a whole second behind: skip
        while tick <= now * SLOTS:
            for c in wheel[tick % SLOTS]:
                i = c.sent
                try:  # one send; if it would block (it never does) the byte just comes later
                    c.sent = i + c.send(HEAD[i:i + 1] or b"a" if i >= FIRST_WRITE
                                        else head_bytes(i, FIRST_WRITE + 1))
                except OSError:
                    pass  # a reset shows up as readable
            tick += 1
        while retry and retry[0][0] <= now:
            queue.append(heapq.heappop(retry)[2])
        if now >= next_status:
            print(line("status"), flush=True)
            next_status += 5
    print(line("final"), flush=True)


if __name__ == "__main__":
    main()
