#!/usr/bin/env python3
"""Hostile-but-cheap client load for benches/slowloris.sh.

Opens SLOW slowloris connections (a request head sent one byte a second that never ends
within LIFETIME) and IDLE keep-alive connections (one complete request and its response,
then silence) to HOST:PORT. Prints `ready slow=N idle=N` once every connection is up,
a `status ...` line every few seconds, and a final `final ...` line on SIGTERM/SIGINT or
after LIFETIME seconds. A connection the server closes is counted and reopened, so the
pressure stays at SLOW + IDLE connections.

usage: slowloris.py HOST PORT SLOW IDLE LIFETIME [sync] [PAD]
With `sync`, every slowloris connection writes its byte on the same whole-second tick (a
burst of SLOW one-byte reads for the server each second) instead of spread over the second.
With PAD > 0, a slowloris connection first sends about PAD bytes of complete header lines
at once (lines under 8KB; keep PAD under the 32KB head limit), then trickles as usual: the
worst case for the memory a partial head holds.
"""
import asyncio
import math
import random
import resource
import signal
import sys
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
SLOW, IDLE, LIFETIME = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
SYNC = len(sys.argv) > 6 and sys.argv[6] == "sync"
PAD = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[7] else 0
CONNECT_PARALLEL = 200  # connects in flight at once (stays well under the listen backlog)

# A head that never ends: after the request line and Host, one header whose value grows a
# byte a second (far below the 8KB line limit and 32KB head limit for any sane run).
REQUEST_LINE = f"GET /small HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n".encode()
PADDING = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * min(4000, PAD - i * 4000))
                   for i in range((PAD + 3999) // 4000))
HEAD_PREFIX = REQUEST_LINE + PADDING + b"X-Slowloris: "
IDLE_REQUEST = f"GET /small HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n\r\n".encode()

stats = {
    "slow_open": 0, "idle_open": 0,            # currently open
    "slow_closed": 0, "idle_closed": 0,        # closed by the server (then reopened)
    "slow_answered": 0,                        # server wrote something to a slow connection
    "connect_errors": 0, "idle_bad": 0,
}
answers = {}  # first status line seen on a slow connection -> count


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def connect(sem):
    while True:
        async with sem:
            try:
                return await asyncio.open_connection(HOST, PORT)
            except OSError:
                stats["connect_errors"] += 1
        await asyncio.sleep(0.2)


async def watch_close(reader, kind):
    """Returns when the server closes the connection; notes what it said first."""
    first = b""
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                break
            if not first:
                first = data
    except OSError:
        pass
    if first and kind == "slow":
        stats["slow_answered"] += 1
        line = first.split(b"\r\n", 1)[0].decode("latin-1")[:40]
        answers[line] = answers.get(line, 0) + 1


async def slow_conn(sem, up):
    first_time = True
    while True:
        reader, writer = await connect(sem)
        stats["slow_open"] += 1
        closed = asyncio.ensure_future(watch_close(reader, "slow"))
        try:
            i = len(REQUEST_LINE + PADDING) if PAD else 1
            writer.write(HEAD_PREFIX[:i])
            if first_time:
                up.release()
                first_time = False
            # Spread the one-byte writes over the second (or all on the tick with SYNC).
            loop = asyncio.get_running_loop()
            await asyncio.sleep(math.ceil(loop.time()) - loop.time() if SYNC else random.random())
            while not closed.done():
                writer.write(HEAD_PREFIX[i:i + 1] if i < len(HEAD_PREFIX) else b"a")
                i += 1
                wait = math.floor(loop.time() + 0.5) + 1 - loop.time() if SYNC else 1.0
                await asyncio.wait([closed], timeout=wait)
        except OSError:
            pass
        await closed
        writer.close()
        stats["slow_open"] -= 1
        stats["slow_closed"] += 1


async def idle_conn(sem, up):
    first_time = True
    while True:
        reader, writer = await connect(sem)
        try:
            writer.write(IDLE_REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                stats["idle_bad"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            stats["idle_bad"] += 1
            writer.close()
            await asyncio.sleep(0.2)
            continue
        stats["idle_open"] += 1
        if first_time:
            up.release()
            first_time = False
        await watch_close(reader, "idle")  # stays idle until the server gives up on it
        writer.close()
        stats["idle_open"] -= 1
        stats["idle_closed"] += 1


def line(tag):
    s = " ".join(f"{k}={v}" for k, v in stats.items())
    a = ";".join(f"{k!r}x{v}" for k, v in answers.items())
    return f"{tag} {s}" + (f" slow_answers={a}" if a else "")


async def main():
    raise_nofile()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(LIFETIME, stop.set)
    sem = asyncio.Semaphore(CONNECT_PARALLEL)
    up = asyncio.Semaphore(0)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(idle_conn(sem, up)) for _ in range(IDLE)]
    tasks += [asyncio.ensure_future(slow_conn(sem, up)) for _ in range(SLOW)]

    async def announce():
        for _ in range(SLOW + IDLE):
            await up.acquire()
        print(f"ready slow={SLOW} idle={IDLE} secs={time.monotonic() - t0:.2f}", flush=True)

    async def report():
        while True:
            await asyncio.sleep(5)
            print(line("status"), flush=True)

    extra = [asyncio.ensure_future(announce()), asyncio.ensure_future(report())]
    await stop.wait()
    print(line("final"), flush=True)
    for t in tasks + extra:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
