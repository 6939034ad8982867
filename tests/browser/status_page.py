#!/usr/bin/env python3
"""Browser test of the status page (/__failover/), in real headless Chromium.

Starts two loopback upstreams (scripts/upstream.py) and the real proxy with fast health
checks, opens http://127.0.0.1:PORT/__failover/ in headless Chromium, and watches the
page's DOM while the upstreams die and come back:

  1. the page shows `primary` serving, both cards up, a bar of probe results;
  2. primary killed: `backup` serves, the primary card says DOWN, a primary -> backup row;
  3. backup killed too: the ALL UPSTREAMS DOWN banner, a backup -> none row;
  4. backup back: `backup` serves again (screenshot: target/status-page.png, and with
     --docs docs/status.png);
  5. primary back on the same port: `primary` serves, a backup -> primary row;
  6. at phone width (390 px) nothing overflows sideways (target/status-page-phone.png);
  7. on the admin listener's page (which shows operators' reasons): an override pinning
     `backup` for 2 s shows the PINNED BY AN OPERATOR banner and a PINNED badge
     (target/status-page-pinned.png), then expires back to `primary`; a drain of the
     primary shows a DRAINED badge with `backup` serving, and is gone once deleted;
  8. proxy stopped: the page keeps the last data and says it is stale;
  9. a second proxy whose directory backup's path looks like HTML: the page shows it as
     text and creates no element from it.

The page must raise no JavaScript error and break no Content-Security-Policy rule.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ended by NUL on fds 3 and 4), so only the Python standard library is needed.
Environment: FAILOVER_BIN (default target/ci/failover, else target/release/failover),
CHROMIUM (default: chromium on PATH), CHROMIUM_EXTRA_ARGS (e.g. "--single-process").
Exits 0 when every step passed, 1 with a message saying what the page showed otherwise;
every process it started is stopped either way.
"""

import argparse
import base64
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 15  # the longest any step may take; the page polls every 2 s
DESKTOP = (1200, 900)
PHONE = (390, 844)


class Failure(Exception):
    pass


def log(msg):
    print(f"status_page: {msg}", flush=True)


class Processes:
    """Every process the test started, to stop them all, also on failure."""

    def __init__(self):
        self.procs = []

    def start(self, args, log_path, **kw):
        out = open(log_path, "ab")
        try:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **kw)
        finally:
            out.close()
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, grace=3.0):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def admin_call(url, method, body=None):
    """An operator's request to the admin listener (no token: it is on loopback)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise Failure(f"{method} {url} {json.dumps(body)} answered {e.code}: {e.read()!r}")


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in lines[-n:])


class Upstream:
    """scripts/upstream.py on 127.0.0.1; it answers GET / (the health path) with 200."""

    def __init__(self, procs, tmp, name):
        self.procs, self.tmp, self.name, self.port, self.proc = procs, tmp, name, 0, None

    def start(self):
        port_file = self.tmp / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, str(ROOT / "scripts/upstream.py"), "--name", self.name,
                "--port", str(self.port), "--port-file", str(port_file)]
        self.proc = self.procs.start(args, self.tmp / f"{self.name}.log")
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise Failure(f"upstream {self.name} did not start:\n{tail(self.tmp / f'{self.name}.log')}")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    def kill(self):
        self.procs.stop(self.proc, signal.SIGKILL)


def start_proxy(procs, tmp, binary, primary, backup, label, admin_port=None):
    port = free_port()
    log_path = tmp / f"proxy-{label}.log"
    args = [binary, "--listen", f"127.0.0.1:{port}", "--primary", primary, "--backup", backup,
            "--check-interval", "200ms", "--fail-threshold", "2", "--recover-threshold", "2"]
    if admin_port:
        args += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    proc = procs.start(args, log_path, cwd=ROOT)
    deadline = time.monotonic() + 10
    while True:
        try:
            if get(f"http://127.0.0.1:{port}/__failover/health")[0] == 200:
                return proc, port, log_path
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise Failure(f"the proxy ({binary}) did not start on 127.0.0.1:{port}:\n{tail(log_path)}")
        time.sleep(0.05)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, procs, tmp, binary):
        self.procs = procs
        self.next_id = 0
        self.replies = {}
        self.events = []
        self.closed = False
        self.cond = threading.Condition()
        self.log_path = tmp / "chromium.log"
        # Chromium reads commands on fd 3 and writes answers on fd 4: bash moves our
        # pipe ends there (and closes the originals) before it becomes Chromium. Our ends
        # are parked above 10 first, so that moving one cannot overwrite the other.
        def parked(fd):
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return high

        r, to_chrome_w = os.pipe()
        from_chrome_r, w = os.pipe()
        child_r, child_w = parked(r), parked(w)
        args = ["bash", "-c", 'exec 3<&"$1" 4>&"$2"; eval "exec $1<&- $2>&-"; shift 2; exec "$@"',
                "bash", str(child_r), str(child_w), binary,
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={tmp / 'chromium-profile'}",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-crash-reporter", "--disable-breakpad", "--mute-audio",
                "--hide-scrollbars", "--force-color-profile=srgb",
                f"--window-size={DESKTOP[0]},{DESKTOP[1]}"]
        args += shlex.split(os.environ.get("CHROMIUM_EXTRA_ARGS", ""))
        args.append("about:blank")
        try:
            # Its own process group, so its helper processes go with it.
            self.proc = procs.start(args, self.log_path, pass_fds=(child_r, child_w), start_new_session=True)
        finally:
            os.close(child_r)
            os.close(child_w)
        self.wfd, self.rfd = to_chrome_w, from_chrome_r
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            with self.cond:
                for raw in msgs:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self.cond.notify_all()

    def send(self, method, params=None, session=True, timeout=30):
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self.wfd, data):]
        except OSError as e:
            raise Failure(f"chromium is gone ({e}):\n{tail(self.log_path)}")
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.replies:
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    why = "exited" if self.closed else f"did not answer {method} within {timeout}s"
                    raise Failure(f"chromium {why}:\n{tail(self.log_path)}")
                self.cond.wait(left)
            reply = self.replies.pop(mid)
        if "error" in reply:
            raise Failure(f"DevTools {method} failed: {reply['error']}")
        return reply.get("result", {})

    def open_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Inspector"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        self.viewport(*DESKTOP)

    def viewport(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def navigate(self, url):
        r = self.send("Page.navigate", {"url": url})
        if r.get("errorText"):
            raise Failure(f"cannot load {url}: {r['errorText']}")

    def evaluate(self, expression):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise Failure(f"evaluating in the page failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path, width, height=None, mobile=False):
        """A PNG of the whole page at this width (of `height` when given)."""
        self.viewport(width, height or 600, mobile)
        if height is None:
            content = self.send("Page.getLayoutMetrics")["cssContentSize"]
            self.viewport(width, int(content["height"]) + 1, mobile)
        time.sleep(0.3)  # one frame after the resize
        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise Failure(f"the screenshot for {path} is not a PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        w, h = struct.unpack(">II", png[16:24])
        log(f"screenshot {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({w}x{h}, {len(png)} bytes)")
        self.viewport(*DESKTOP)

    def take_events(self):
        with self.cond:
            events, self.events = self.events, []
        return events

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", session=False, timeout=5)
                self.proc.wait(5)
            except (Failure, subprocess.TimeoutExpired):
                pass
        try:  # it, if it did not close, and any helper left behind in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.procs.stop(self.proc, signal.SIGKILL)
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass


# What the test reads from the page: only ids and data-* hooks, and the visible text.
SNAPSHOT_JS = r"""
(() => {
  if (!document.body || !document.getElementById("banner")) return null; // still loading
  const byId = (id) => document.getElementById(id);
  const text = (id) => (byId(id) ? byId(id).textContent : null);
  const data = (id, k) => (byId(id) ? byId(id).getAttribute(k) : null);
  const shown = (id) => !!byId(id) && !!(byId(id).offsetWidth || byId(id).offsetHeight);
  return {
    active: text("active-name"),
    banner: data("banner", "data-state"),
    bannerText: text("banner-text"),
    conn: data("conn", "data-state"),
    connText: text("conn"),
    override: data("override", "data-target"),
    overrideShown: shown("override"),
    overrideText: text("override"),
    drainsShown: shown("drains"),
    drainsText: text("drains"),
    retries: text("retries"),
    rescues: text("rescues"),
    title: document.title,
    stale: document.body.classList.contains("stale"),
    cards: [...document.querySelectorAll("[data-upstream]")].map((c) => ({
      name: c.getAttribute("data-upstream"),
      healthy: c.getAttribute("data-healthy"),
      active: c.getAttribute("data-active"),
      pinned: c.getAttribute("data-pinned"),
      drained: c.getAttribute("data-drained"),
      text: c.innerText,
      url: c.querySelector(".url") ? c.querySelector(".url").textContent : null,
      cells: c.querySelectorAll("[data-ok]").length,
      failed: c.querySelectorAll('[data-ok="false"]').length,
      untitled: [...c.querySelectorAll("[data-ok]")].filter((x) => !x.title).length,
    })),
    rows: [...document.querySelectorAll("#transitions tr")].map((r) => ({
      from: r.getAttribute("data-from"), to: r.getAttribute("data-to"),
      current: r.getAttribute("data-current"), operator: r.getAttribute("data-operator"), text: r.innerText,
    })),
    injected: document.querySelectorAll("#xss, [id^=xss]").length,
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  };
})()
"""


def describe(s):
    if not s:
        return "nothing yet"
    cards = ", ".join(f"{c['name']}(healthy={c['healthy']}, active={c['active']}, pinned={c['pinned']}, "
                      f"drained={c['drained']}, {c['cells']} checks)" for c in s["cards"])
    rows = ", ".join(f"{r['from']}->{r['to']}{' (current)' if r['current'] == 'true' else ''}" for r in s["rows"])
    return (f"active-name={s['active']!r}, banner={s['banner']!r} {s['bannerText']!r}, conn={s['conn']!r} "
            f"{s['connText']!r}; override={s['override']!r} shown={s['overrideShown']} {s['overrideText']!r}; "
            f"drains shown={s['drainsShown']} {s['drainsText']!r}; cards: {cards or 'none'}; "
            f"transitions: {rows or 'none'}")


def card(s, name):
    return next((c for c in s["cards"] if c["name"] == name), None)


def row(s, frm, to):
    return next((r for r in s["rows"] if r["from"] == frm and r["to"] == to), None)


class Test:
    def __init__(self, chrome):
        self.chrome = chrome
        self.t0 = time.monotonic()
        self.gone = None  # the address of a stopped proxy: the browser logs each failed poll

    def check_events(self):
        for e in self.chrome.take_events():
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                raise Failure(f"JavaScript error in the page: {d.get('exception', {}).get('description') or d.get('text')}")
            if method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                text = entry.get("text", "")
                if entry.get("source") == "security" or "Content Security Policy" in text:
                    raise Failure(f"the page breaks its Content-Security-Policy: {text}")
                if not (self.gone and entry.get("source") == "network" and entry.get("url", "").startswith(self.gone)):
                    raise Failure(f"the browser logged an error: {entry.get('source')}: {text} {entry.get('url', '')}")
            if method == "Runtime.consoleAPICalled" and p.get("type") == "error":
                raise Failure(f"the page logged an error: {p.get('args')}")
            if method == "Inspector.targetCrashed":
                raise Failure("the page crashed")

    def snapshot(self):
        self.check_events()
        return self.chrome.evaluate(SNAPSHOT_JS)

    def wait(self, what, ok):
        start = time.monotonic()
        s = None
        while True:
            s = self.snapshot()
            try:
                if s and ok(s):
                    log(f"ok   {what} ({time.monotonic() - start:.1f}s)")
                    return s
            except (KeyError, TypeError):
                pass
            if time.monotonic() - start > WAIT_S:
                raise Failure(f"waited {WAIT_S}s for: {what}\n  the page shows: {describe(s)}")
            time.sleep(0.1)


def run(args, procs, tmp):
    binary = os.environ.get("FAILOVER_BIN")
    if not binary:
        ci, release = ROOT / "target/ci/failover", ROOT / "target/release/failover"
        binary = str(ci if ci.exists() else release)
    if not os.access(binary, os.X_OK):
        raise Failure(f"no proxy binary at {binary}: build it (cargo build --profile ci) or set FAILOVER_BIN")
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise Failure("chromium is not installed: apt-get install -y --no-install-recommends chromium "
                      "(.ci/run does this), or set CHROMIUM to a Chrome/Chromium binary")

    primary = Upstream(procs, tmp, "primary").start()
    backup = Upstream(procs, tmp, "backup").start()
    admin_port = free_port()
    proxy, port, proxy_log = start_proxy(procs, tmp, binary, f"http://127.0.0.1:{primary.port}",
                                         f"http://127.0.0.1:{backup.port}", "main", admin_port)
    base = f"http://127.0.0.1:{port}/__failover/"
    admin = f"http://127.0.0.1:{admin_port}/__failover/"
    log(f"proxy {binary} on 127.0.0.1:{port} (admin :{admin_port}), primary :{primary.port}, backup :{backup.port}")

    # The binary must serve this checkout's page (it is compiled in), under the CSP.
    status, headers, body = get(base)
    if body != (ROOT / "src/status.html").read_bytes():
        raise Failure(f"{binary} serves another status page than src/status.html: rebuild it "
                      "(cargo build --profile ci, or --release)")
    if len(body) >= 30 * 1024:
        raise Failure(f"src/status.html is {len(body)} bytes: keep it under 30 KB")
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write"):
        if sink in body:
            raise Failure(f"src/status.html uses {sink.decode()}: put strings from the state in with textContent")
    csp = headers.get("Content-Security-Policy", "")
    if status != 200 or "default-src 'none'" not in csp:
        raise Failure(f"GET /__failover/ answered {status} with CSP {csp!r}")

    chrome = Chromium(procs, tmp, chromium)
    try:
        chrome.open_page()
        t = Test(chrome)
        chrome.navigate(base)
        s = t.wait("the page shows primary serving", lambda s: (
            s["active"] == "primary" and s["banner"] == "ok" and s["conn"] == "ok"
            and [c["name"] for c in s["cards"]] == ["primary", "backup"]
            and card(s, "primary")["healthy"] == "true" and card(s, "primary")["active"] == "true"
            and card(s, "backup")["healthy"] == "true" and card(s, "backup")["active"] == "false"
            and "✓ UP" in card(s, "primary")["text"] and card(s, "primary")["cells"] > 0))
        for c in s["cards"]:
            if c["untitled"]:
                raise Failure(f"{c['untitled']} probe cells of {c['name']} have no title tooltip")
        if s["rows"] or s["retries"] != "0" or s["rescues"] != "0":
            raise Failure(f"a fresh proxy should show no transition and 0 retries/rescues: {describe(s)}")

        primary.kill()
        log("killed the primary upstream")
        t.wait("backup serves, primary card DOWN, a primary -> backup row", lambda s: (
            s["active"] == "backup" and s["banner"] == "failover"
            and card(s, "primary")["healthy"] == "false" and "✗ DOWN" in card(s, "primary")["text"]
            and card(s, "primary")["failed"] > 0 and card(s, "backup")["active"] == "true"
            and row(s, "primary", "backup") and row(s, "primary", "backup")["current"] == "true"))

        backup.kill()
        log("killed the backup upstream")
        t.wait("the ALL UPSTREAMS DOWN banner, a backup -> none row", lambda s: (
            s["banner"] == "all-down" and s["active"] == "none" and "ALL UPSTREAMS DOWN" in s["bannerText"]
            and all(c["healthy"] == "false" and c["active"] == "false" for c in s["cards"])
            and row(s, "backup", "none") and row(s, "backup", "none")["current"] == "true"))

        backup.start()
        log(f"restarted the backup upstream on :{backup.port}")
        t.wait("backup serves again", lambda s: (
            s["active"] == "backup" and s["banner"] == "failover" and card(s, "backup")["healthy"] == "true"
            and row(s, "none", "backup") and row(s, "none", "backup")["current"] == "true"))
        time.sleep(0.5)
        t.snapshot()
        chrome.screenshot(ROOT / "target/status-page.png", DESKTOP[0])
        if args.docs:
            (ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(ROOT / "target/status-page.png", ROOT / "docs/status.png")
            log("copied it to docs/status.png")

        primary.start()
        log(f"restarted the primary upstream on :{primary.port}")
        s = t.wait("primary serves again, a backup -> primary row", lambda s: (
            s["active"] == "primary" and s["banner"] == "ok" and card(s, "primary")["healthy"] == "true"
            and card(s, "primary")["active"] == "true"
            and row(s, "backup", "primary") and row(s, "backup", "primary")["current"] == "true"))
        if [(r["from"], r["to"]) for r in s["rows"]] != [
                ("backup", "primary"), ("none", "backup"), ("backup", "none"), ("primary", "backup")]:
            raise Failure(f"transitions should be listed newest first: {describe(s)}")
        if (s["override"] != "" or s["overrideShown"] or s["drainsShown"]
                or any(r["operator"] != "false" for r in s["rows"])
                or any(c["pinned"] != "false" or c["drained"] != "false" for c in s["cards"])):
            raise Failure(f"without holds the page should show no pin, no drain, no operator row: {describe(s)}")

        chrome.viewport(*PHONE, mobile=True)
        time.sleep(0.3)
        s = t.snapshot()
        if s["overflow"] > 0:
            raise Failure(f"at {PHONE[0]} px wide the page is {s['overflow']} px too wide (scrolls sideways)")
        log(f"ok   nothing overflows at {PHONE[0]} px wide")
        chrome.screenshot(ROOT / "target/status-page-phone.png", PHONE[0], mobile=True)

        # Operator holds, seen on the admin listener's page (its state has the reasons).
        # Loading the page right after the POST makes it poll at once, well inside the 2 s.
        reason = "<i id=xss-reason>DB migration</i> & co"
        got = admin_call(admin + "override", "POST", {"target": "backup", "ttl": "2s", "reason": reason})
        if (got.get("override") or {}).get("name") != "backup":
            raise Failure(f"POST {admin}override did not pin backup: {got}")
        log("pinned backup for 2 s (POST /__failover/override)")
        chrome.navigate(admin)
        s = t.wait("the PINNED BY AN OPERATOR banner, a PINNED badge on backup, backup serving", lambda s: (
            s["conn"] == "ok" and s["active"] == "backup" and s["banner"] == "pinned"
            and "PINNED BY AN OPERATOR to backup" in s["bannerText"]
            and s["override"] == "backup" and s["overrideShown"]
            and f"http://127.0.0.1:{backup.port}" in s["overrideText"]
            and ("s left" in s["overrideText"] or "ending now" in s["overrideText"])
            and "not forced" in s["overrideText"] and reason in s["overrideText"]
            and card(s, "backup")["pinned"] == "true" and "PINNED" in card(s, "backup")["text"]
            and card(s, "backup")["active"] == "true"
            and card(s, "primary")["pinned"] == "false" and "PINNED" not in card(s, "primary")["text"]))
        if s["injected"]:
            raise Failure(f"the operator's reason {reason!r} made an element in the page")
        chrome.screenshot(ROOT / "target/status-page-pinned.png", DESKTOP[0])
        t.wait("the override expires: primary serves, no pin, an operator row backup -> primary", lambda s: (
            s["active"] == "primary" and s["banner"] == "ok" and s["override"] == "" and not s["overrideShown"]
            and all(c["pinned"] == "false" and "PINNED" not in c["text"] for c in s["cards"])
            and row(s, "backup", "primary")["operator"] == "true"
            and "expired" in row(s, "backup", "primary")["text"]))

        admin_call(admin + "drain", "POST", {"target": 0, "ttl": "60s", "reason": "bad deploy"})
        log("drained the primary for 60 s (POST /__failover/drain)")
        t.wait("a DRAINED badge on primary, backup serving", lambda s: (
            s["active"] == "backup" and s["banner"] == "failover" and "DRAINED BY AN OPERATOR" in s["bannerText"]
            and card(s, "primary")["drained"] == "true" and "DRAINED" in card(s, "primary")["text"]
            and "s left" in card(s, "primary")["text"] and card(s, "primary")["healthy"] == "true"
            and card(s, "backup")["drained"] == "false" and card(s, "backup")["active"] == "true"
            and s["drainsShown"] and "primary" in s["drainsText"] and "bad deploy" in s["drainsText"]
            and s["override"] == "" and not s["overrideShown"]))
        got = admin_call(admin + "drain", "DELETE", {"target": "primary"})
        if got.get("drains"):
            raise Failure(f"DELETE {admin}drain left drains: {got}")
        log("ended the drain (DELETE /__failover/drain)")
        t.wait("the drain is gone: primary serves, no DRAINED badge", lambda s: (
            s["active"] == "primary" and s["banner"] == "ok" and not s["drainsShown"]
            and all(c["drained"] == "false" and "DRAINED" not in c["text"] for c in s["cards"])
            and row(s, "backup", "primary")["operator"] == "true"))

        t.gone = admin
        procs.stop(proxy)
        log("stopped the proxy")
        t.wait("the page says the proxy cannot be reached and keeps the last data", lambda s: (
            s["conn"] == "error" and "Cannot reach the proxy" in s["connText"] and "stale since" in s["connText"]
            and s["stale"] and s["active"] == "primary" and len(s["cards"]) == 2))

        # Strings from the state are text: a directory path that looks like markup is shown
        # as it is, and no element comes out of it.
        odd = tmp / "<b id=xss>site&amp;"
        odd.mkdir()
        (odd / "index.html").write_text("ok\n")
        odd_url = f"file://{odd}"
        _, port2, _ = start_proxy(procs, tmp, binary, f"http://127.0.0.1:{primary.port}", odd_url, "escape")
        chrome.navigate(f"http://127.0.0.1:{port2}/__failover/status")
        t.wait("a URL that looks like HTML is shown as text (page loaded at /__failover/status)", lambda s: (
            s["conn"] == "ok" and card(s, "backup") and card(s, "backup")["url"] == odd_url and s["injected"] == 0))
    finally:
        chrome.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", action="store_true", help="also write the screenshot to docs/status.png")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(f"status_page: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    start = time.monotonic()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="status-page-"))
    ok = False
    try:
        run(args, procs, tmp)
        ok = True
    except Exception as e:  # noqa: BLE001 - any error fails the test, with the logs
        what = str(e) if isinstance(e, Failure) else traceback.format_exc()
        print(f"status_page: FAIL: {what}", file=sys.stderr, flush=True)
        for name in sorted(tmp.glob("*.log")):
            print(f"--- {name.name} (last lines)\n{tail(name)}", file=sys.stderr)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - start
    if ok:
        log(f"PASS in {took:.1f}s")
        return 0
    print(f"status_page: FAILED after {took:.1f}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
