#!/usr/bin/env bash
# verify.sh: end-to-end check of the release binary, as an operator would see it.
#
# Builds target/release/failover, starts two loopback upstreams (scripts/upstream.py:
# a primary and a backup that echo what they receive) and the proxy on 127.0.0.1 with
# short health timings, then runs one case per behaviour of the contract. Prints
# `PASS name` or `FAIL name: detail` per case and a last line `N passed, N failed`;
# exits non-zero if any case failed. Needs only bash, curl, python3 and openssl (for the
# throwaway CA of the HTTPS cases). Every process it starts is stopped on exit; every
# port is a free port on 127.0.0.1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# FAILOVER_PROFILE=ci (as ./test.sh sets it) reuses the test build instead of a release one.
PROFILE="${FAILOVER_PROFILE:-release}"
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/failover"
UPSTREAM=scripts/upstream.py
RAW=scripts/raw.py

# Health timings used by every proxy below; the failover bound follows from them.
INTERVAL_MS=200
TIMEOUT_MS=200
FAIL_THRESHOLD=2
RECOVER_THRESHOLD=2
FAIL_BOUND_MS=$((FAIL_THRESHOLD * INTERVAL_MS + TIMEOUT_MS))
RECOVER_BOUND_MS=$((RECOVER_THRESHOLD * INTERVAL_MS + TIMEOUT_MS))
SLACK_MS=1000 # generous: the loop, curl start-up and a busy CI machine
HEALTH_FLAGS=(--check-interval=${INTERVAL_MS}ms --check-timeout=${TIMEOUT_MS}ms
  --fail-threshold=$FAIL_THRESHOLD --recover-threshold=$RECOVER_THRESHOLD --health-path=/healthz)

PASSED=0
FAILED=0
PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/failover-verify.XXXXXX")

# ---------------------------------------------------------------- bookkeeping

pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1: ${2//$'\n'/ }"; }

# expect NAME GOT WANT: exact match.
expect() { if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1" "expected '$3', got '$2'"; fi; }
# expect_re NAME GOT REGEX: extended regex match.
expect_re() { if [[ $2 =~ $3 ]]; then pass "$1"; else fail "$1" "expected /$3/, got '$2'"; fi; }

finish() {
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]] && exit 0
  exit 1
}
# abort NAME DETAIL: a failure the remaining cases cannot run without.
abort() { fail "$1" "$2 (aborting)"; finish; }

# section TITLE: starts a group of cases; once the time budget is spent the run stops
# (as one failure), so a hanging proxy cannot keep this script running for long.
BUDGET_S=100
START_S=$SECONDS
section() {
  echo "== $1"
  ((SECONDS - START_S <= BUDGET_S)) || abort "time budget" "over ${BUDGET_S}s before '$1'"
}

alive() { # PID: running and not a zombie
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

# stop_pid PID: SIGTERM, up to 3s grace, then SIGKILL. Returns 0 if SIGTERM was enough.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  for ((i = 0; i < 60; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 1
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do alive "$pid" && kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do alive "$pid" && stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS CMD...: poll CMD every 50ms until it succeeds.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(now_ms) > deadline)) && return 1
    sleep 0.05
  done
}

# sleep_until MS: sleep until the wall clock reaches MS (epoch milliseconds).
sleep_until() {
  local left=$(($1 - $(now_ms)))
  ((left > 0)) && sleep "$(printf '%d.%03d' $((left / 1000)) $((left % 1000)))"
  return 0
}

# ---------------------------------------------------------------- HTTP helpers

# req OUT [curl args...]: prints the status code ("000" if curl failed); body in OUT.
req() {
  local out=$1
  shift
  curl -sS -o "$out" -w '%{http_code}' --max-time 3 "$@" 2>"$out.err" || true
}

# jf FILE EXPR: evaluate a Python expression over the JSON in FILE (`d`); `hdr(name)`
# joins the values of a request header seen by the upstream with '|'.
jf() {
  python3 - "$1" "$2" <<'PY' 2>/dev/null || echo "<not json>"
import json, sys
d = json.load(open(sys.argv[1]))
def hdr(name):
    return "|".join(v for k, v in d.get("headers", []) if k.lower() == name.lower())
v = eval(sys.argv[2], {"d": d, "hdr": hdr})
print(v if isinstance(v, str) else json.dumps(v))
PY
}

# state EXPR: evaluate EXPR over a fresh GET /__failover/state.
state() {
  req "$TMP/state.json" "$PROXY/__failover/state" >/dev/null
  jf "$TMP/state.json" "$1"
}
on_backup_is() { [[ $(state 'd["on_backup"]') == "$1" ]]; }

# raw PORT COUNT REQUEST [raw.py options]: see scripts/raw.py.
raw() { python3 "$RAW" "$@" 2>&1 | head -c 2000; }

# who_answers N: GET / on N fresh connections; prints the distinct answers (upstream
# name or status), e.g. "backup" or "502 backup".
who_answers() {
  local i code
  for ((i = 0; i < $1; i++)); do
    code=$(req "$TMP/who.json" "$PROXY/who")
    if [[ $code == 200 ]]; then jf "$TMP/who.json" 'd["upstream"]'; else echo "$code"; fi
  done | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# ---------------------------------------------------------------- processes

# start_upstream NAME PORT: PORT 0 picks a free one. Sets UP_PID and UP_PORT.
start_upstream() {
  local name=$1 pf="$TMP/$1.port"
  rm -f "$pf"
  python3 "$UPSTREAM" --name "$name" --port "$2" --port-file "$pf" >>"$TMP/$name.log" 2>&1 &
  UP_PID=$!
  PIDS+=("$UP_PID")
  if wait_until 10 test -s "$pf"; then UP_PORT=$(cat "$pf"); return 0; fi
  return 1
}

# start_proxy LOG PORT ARGS...: sets PROXY_PID and PROXY; waits for /__failover/health.
start_proxy() {
  local log=$1 port=$2
  shift 2
  "$BIN" "$@" >"$log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  PROXY="http://127.0.0.1:$port"
  local deadline=$(($(now_ms) + 10000))
  while (($(now_ms) < deadline)); do
    alive "$PROXY_PID" || return 1
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$PROXY/__failover/health") == 200 ]] && return 0
    sleep 0.05
  done
  return 1
}

log_tail() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | head -c 600; }

# ================================================================= build

section "cargo build --profile $PROFILE"
# FAILOVER_BUILT=1: the caller built the binary already (./test.sh, while cargo test runs).
if [[ ${FAILOVER_BUILT:-0} != 1 ]] && ! cargo build --profile "$PROFILE" >"$TMP/build.log" 2>&1; then
  tail -n 20 "$TMP/build.log"
  abort build "cargo build --profile $PROFILE failed"
fi
[[ -x $BIN ]] || abort build "no binary at $BIN"
pass build
START_S=$SECONDS # the budget is for the cases, not for compiling

# ================================================================= command line

section "command line"
"$BIN" --help >"$TMP/help.out" 2>&1
rc=$?
missing=()
for flag in primary backup listen check-interval check-timeout health-path fail-threshold \
  recover-threshold max-body connect-timeout upstream-timeout idle-timeout header-timeout \
  workers pin-cores json-logs config; do
  grep -q -- "--$flag" "$TMP/help.out" || missing+=("--$flag")
done
for default in 0.0.0.0:8080 2s 1s 10MB 30s 60s 10s; do
  grep -qF -- "$default" "$TMP/help.out" || missing+=("default $default")
done
if [[ $rc -eq 0 && ${#missing[@]} -eq 0 ]]; then pass "help lists every flag and default"
else fail "help lists every flag and default" "exit $rc, missing: ${missing[*]:-none}"; fi

# bad_config NAME KEY_REGEX ARGS...: exit 2 and exactly one stderr line matching KEY_REGEX.
bad_config() {
  local name=$1 key=$2 rc lines
  shift 2
  timeout 5 "$BIN" "$@" >"$TMP/bad.out" 2>"$TMP/bad.err"
  rc=$?
  lines=$(grep -c '' "$TMP/bad.err")
  if [[ $rc -eq 2 && $lines -eq 1 ]] && grep -qiE -- "$key" "$TMP/bad.err"; then
    pass "$name"
  else
    fail "$name" "want exit 2 and one stderr line naming /$key/; got exit $rc, $lines line(s): $(head -c 300 "$TMP/bad.err" | tr '\n' '|')"
  fi
}

LP=$(free_port) # never actually bound: every run below must refuse to start
OK_UP=(--primary=http://127.0.0.1:9 --backup=http://127.0.0.1:9 --listen=127.0.0.1:$LP)
bad_config "bad config: zero check interval" 'check[-_]interval' "${OK_UP[@]}" --check-interval=0s
bad_config "bad config: non-numeric threshold" 'fail[-_]threshold' "${OK_UP[@]}" --fail-threshold=abc
bad_config "bad config: bad size unit" 'max[-_]body' "${OK_UP[@]}" --max-body=10XB
bad_config "bad config: missing backup" 'backup' --primary=http://127.0.0.1:9 --listen=127.0.0.1:$LP
bad_config "bad config: unknown flag" 'no-such-flag' "${OK_UP[@]}" --no-such-flag
bad_config "bad config: --primary-ca with an http:// primary" 'primary[-_]ca' "${OK_UP[@]}" --primary-ca=/dev/null
bad_config "bad config: missing --tls-cert file" 'tls[-_]cert' "${OK_UP[@]}" --tls-cert="$TMP/no-such.crt" --tls-key="$TMP/no-such.key"
bad_config "bad config: missing config file" 'config|no-such-file' "${OK_UP[@]}" --config="$TMP/no-such-file.yaml"
printf 'primary: "http://127.0.0.1:9"\nbackup: "http://127.0.0.1:9"\nlisten: "127.0.0.1:%s"\ncheck_intervall: "2s"\n' "$LP" >"$TMP/typo.yaml"
bad_config "bad config: unknown YAML key" 'check_intervall' --config="$TMP/typo.yaml"
printf 'primary: "http://127.0.0.1:9"\nbackup: "http://127.0.0.1:9"\nlisten: "127.0.0.1:%s"\ncheck_interval: "0s"\n' "$LP" >"$TMP/zero.yaml"
bad_config "bad config: bad YAML value" 'check[-_]interval' --config="$TMP/zero.yaml"

# ================================================================= upstreams + proxy

section "proxy on primary"
start_upstream primary 0 || abort "start primary upstream" "$(log_tail "$TMP/primary.log")"
PRIMARY_PID=$UP_PID PRIMARY_PORT=$UP_PORT
start_upstream backup 0 || abort "start backup upstream" "$(log_tail "$TMP/backup.log")"
BACKUP_PID=$UP_PID BACKUP_PORT=$UP_PORT
PRIMARY_URL="http://127.0.0.1:$PRIMARY_PORT"
BACKUP_URL="http://127.0.0.1:$BACKUP_PORT"

MAIN_PORT=$(free_port)
MAIN_LOG="$TMP/proxy.log"
started_s=$(date +%s)
start_proxy "$MAIN_LOG" "$MAIN_PORT" --listen="127.0.0.1:$MAIN_PORT" --primary="$PRIMARY_URL" \
  --backup="$BACKUP_URL" "${HEALTH_FLAGS[@]}" --max-body=64KB --connect-timeout=500ms \
  --upstream-timeout=1s --idle-timeout=1m --header-timeout=5s --workers=2 ||
  abort "proxy starts" "$(log_tail "$MAIN_LOG")"
pass "proxy starts"

code=$(req "$TMP/h" "$PROXY/__failover/health")
expect "GET /__failover/health" "$code $(tr -d '\r\n' <"$TMP/h")" "200 ok"

code=$(req "$TMP/s.json" -D "$TMP/s.hdr" "$PROXY/__failover/state")
got="$code $(jf "$TMP/s.json" '[d["on_backup"], d["primary"], d["backup"], type(d["since_unix"]).__name__]')"
expect "GET /__failover/state keys" "$got" "200 [false, \"$PRIMARY_URL\", \"$BACKUP_URL\", \"int\"]"
since=$(jf "$TMP/s.json" 'd["since_unix"]')
if is_int "$since" && ((since >= started_s - 2 && since <= $(date +%s))); then pass "state since_unix is process start"
else fail "state since_unix is process start" "since_unix=$since, proxy started at $started_s"; fi
ctype=$(grep -i '^content-type:' "$TMP/s.hdr" | tr -d '\r')
expect_re "state is application/json" "${ctype,,}" 'application/json'

code=$(req "$TMP/n" "$PROXY/__failover/nope")
expect "other /__failover/ path -> 404" "$code" 404

code=$(req "$TMP/r.json" "$PROXY/hello/world?x=1&y=2")
expect "routes to primary" "$code $(jf "$TMP/r.json" '[d["upstream"], d["path"]]')" '200 ["primary", "/hello/world?x=1&y=2"]'

for method in GET POST PUT DELETE; do
  body=()
  [[ $method == POST || $method == PUT ]] && body=(-H 'Expect:' --data-binary "payload-$method")
  code=$(req "$TMP/m.json" -X "$method" "${body[@]}" "$PROXY/m")
  expect "method $method" "$code $(jf "$TMP/m.json" '[d["upstream"], d["method"], d["body"]]')" \
    "200 [\"primary\", \"$method\", \"${body[2]:+payload-$method}\"]"
done
code=$(req "$TMP/m.json" -X DELETE -H 'Expect:' --data-binary 'delete-body' "$PROXY/m")
expect "DELETE with a body" "$code $(jf "$TMP/m.json" '[d["method"], d["body"]]')" '200 ["DELETE", "delete-body"]'

# A body after the HEAD answer would be read as the start of the second answer.
out=$(raw "$MAIN_PORT" 2 'HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nGET /after-head HTTP/1.1\r\nHost: a\r\n\r\n' --methods HEAD,GET --body-of 2)
expect_re "HEAD: answer without a body" "$out" '^200 200 open.*"path": "/after-head"'

python3 -c 'import os,sys; sys.stdout.buffer.write(os.urandom(40000))' >"$TMP/body.bin"
BODY_SHA=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$TMP/body.bin")
code=$(req "$TMP/b.json" -X POST -H 'Expect:' -H 'Content-Type: application/octet-stream' --data-binary @"$TMP/body.bin" "$PROXY/upload")
expect "request body forwarded intact (Content-Length)" "$code $(jf "$TMP/b.json" '[d["body_len"], d["body_sha256"]]')" "200 [40000, \"$BODY_SHA\"]"

code=$(req "$TMP/b.json" -X PUT -H 'Expect:' -H 'Transfer-Encoding: chunked' --data-binary @"$TMP/body.bin" "$PROXY/upload")
expect "request body forwarded intact (chunked)" "$code $(jf "$TMP/b.json" '[d["body_len"], d["body_sha256"]]')" "200 [40000, \"$BODY_SHA\"]"

# curl waits for "100 Continue" up to --expect100-timeout; 10s > --max-time 3s, so a proxy
# that never lets the 100 through fails this case instead of passing slowly.
code=$(req "$TMP/b.json" -X POST -H 'Expect: 100-continue' --expect100-timeout 10 --data-binary @"$TMP/body.bin" "$PROXY/expect")
expect "Expect: 100-continue" "$code $(jf "$TMP/b.json" '[d["body_len"], d["body_sha256"]]')" "200 [40000, \"$BODY_SHA\"]"

code=$(req "$TMP/hd.json" -H 'X-Custom: hello-42' -H 'X-Multi: a' -H 'X-Multi: b' \
  -H 'X-Forwarded-For: 10.1.2.3' -H 'Host: example.test' "$PROXY/headers")
expect "custom header reaches upstream" "$code $(jf "$TMP/hd.json" 'hdr("x-custom")')" "200 hello-42"
expect "repeated headers kept in order" "$(jf "$TMP/hd.json" 'hdr("x-multi")')" "a|b"
expect "Host passed through" "$(jf "$TMP/hd.json" 'hdr("host")')" "example.test"
expect "X-Forwarded-For appended" "$(jf "$TMP/hd.json" 'hdr("x-forwarded-for")')" "10.1.2.3, 127.0.0.1"
expect "X-Forwarded-Proto set" "$(jf "$TMP/hd.json" 'hdr("x-forwarded-proto")')" "http"
code=$(req "$TMP/hd.json" "$PROXY/headers")
expect "X-Forwarded-For added" "$code $(jf "$TMP/hd.json" 'hdr("x-forwarded-for")')" "200 127.0.0.1"
code=$(req "$TMP/hd.json" -H 'Connection: X-Hop' -H 'X-Hop: secret' -H 'Keep-Alive: timeout=5' \
  -H 'Proxy-Authorization: Basic Zm9vOmJhcg==' -H 'X-Kept: yes' "$PROXY/headers")
expect "hop-by-hop headers removed" "$code $(jf "$TMP/hd.json" '[hdr("x-hop"), hdr("keep-alive"), hdr("proxy-authorization"), "x-hop" in hdr("connection").lower(), hdr("x-kept")]')" '200 ["", "", "", false, "yes"]'

out=$(raw "$MAIN_PORT" 2 'GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\n' --body-of 2)
expect_re "pipelined requests answered in order" "$out" '^200 200 open.*"path": "/p2"'
out=$(raw "$MAIN_PORT" 1 'GET /old HTTP/1.0\r\n\r\n' --body-of 1)
expect_re "HTTP/1.0 client" "$out" '^200 closed.*"upstream": "primary"'

out=$(python3 - "$MAIN_PORT" <<'PY' 2>&1
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
head, _, rest = head.partition(b"\r\n\r\n")
got = rest
for msg in (b"ping-1 ", b"ping-2"):
    s.sendall(msg)
while len(got) < 13:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print(head.split(b"\r\n")[0].decode(errors="replace"), got.decode(errors="replace"))
PY
)
expect "Upgrade tunnelled after 101" "$out" "HTTP/1.1 101 Switching Protocols ping-1 ping-2"

section "rejected requests"
# Error answers close the connection; a close with unread bytes may reach us as a reset.
CLOSED='(closed|reset)$'
expect_re "missing Host -> 400" "$(raw "$MAIN_PORT" 1 'GET / HTTP/1.1\r\n\r\n')" "^400 $CLOSED"
expect_re "two Host headers -> 400" "$(raw "$MAIN_PORT" 1 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')" "^400 $CLOSED"
expect_re "Content-Length + Transfer-Encoding -> 400" \
  "$(raw "$MAIN_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n')" "^400 $CLOSED"
expect_re "duplicate Content-Length -> 400" \
  "$(raw "$MAIN_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello')" "^400 $CLOSED"
expect_re "non-numeric Content-Length -> 400" \
  "$(raw "$MAIN_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\n')" "^400 $CLOSED"
expect_re "obs-fold header -> 400" \
  "$(raw "$MAIN_PORT" 1 'GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n')" "^400 $CLOSED"
expect_re "malformed chunked body -> 400" \
  "$(raw "$MAIN_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n')" "^400 $CLOSED"
expect_re "Transfer-Encoding gzip -> 501" \
  "$(raw "$MAIN_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n')" "^501 $CLOSED"
expect_re "HTTP/1.2 -> 505" "$(raw "$MAIN_PORT" 1 'GET / HTTP/1.2\r\nHost: a\r\n\r\n')" "^505 $CLOSED"
big=$(head -c 40000 /dev/zero | tr '\0' a)
expect_re "request head over 32KB -> 431" \
  "$(raw "$MAIN_PORT" 1 "GET / HTTP/1.1\\r\\nHost: a\\r\\nX-Big: $big\\r\\n\\r\\n")" "^431 $CLOSED"
expect_re "body over --max-body -> 413" \
  "$(raw "$MAIN_PORT" 1 'POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n')" "^413 $CLOSED"
# 70 chunks of 1000 bytes = 70,000 bytes, over --max-body=64KB (65,536).
chunked=$(python3 -c 'print(("3e8\\r\\n" + "x" * 1000 + "\\r\\n") * 70 + "0\\r\\n\\r\\n", end="")')
expect_re "chunked body over --max-body -> 413" \
  "$(raw "$MAIN_PORT" 1 "POST /big HTTP/1.1\\r\\nHost: a\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n$chunked")" "^413 $CLOSED"
code=$(req "$TMP/slow" "$PROXY/slow?ms=2500")
expect "upstream slower than --upstream-timeout -> 504" "$code" 504

# ================================================================= failover

section "failover"
stop_pid "$PRIMARY_PID"
t_kill=$(now_ms)
if wait_until 10 on_backup_is true; then
  took=$(($(now_ms) - t_kill))
  pass "state on_backup after primary killed"
  name="failover within fail-threshold x interval + timeout (${FAIL_BOUND_MS}ms, +${SLACK_MS}ms slack)"
  if ((took <= FAIL_BOUND_MS + SLACK_MS)); then pass "$name: ${took}ms"; else fail "$name" "took ${took}ms"; fi
else
  fail "state on_backup after primary killed" "still $(cat "$TMP/state.json") after 10s"
fi
sleep_until $((t_kill + FAIL_BOUND_MS + 300)) # every worker has flipped by now
expect "traffic from backup after failover" "$(who_answers 8)" "backup"
expect "state after failover" "$(state '[d["on_backup"], d.get("primary_healthy")]')" "[true, false]"
since=$(state 'd["since_unix"]')
if is_int "$since" && ((since * 1000 >= t_kill - 1000)); then pass "since_unix moved to the failover"
else fail "since_unix moved to the failover" "since_unix=$since, primary killed at $((t_kill / 1000))"; fi
expect_re "failover logged at WARN" "$(grep -E 'WARN' "$MAIN_LOG" | grep -i 'backup' | head -n 1)" '.'

section "recovery"
start_upstream primary "$PRIMARY_PORT" || abort "restart primary on the same port" "$(log_tail "$TMP/primary.log")"
PRIMARY_PID=$UP_PID
t_back=$(now_ms)
if wait_until 10 on_backup_is false; then
  took=$(($(now_ms) - t_back))
  name="recovery within recover-threshold x interval + timeout (${RECOVER_BOUND_MS}ms, +${SLACK_MS}ms slack)"
  if ((took <= RECOVER_BOUND_MS + SLACK_MS)); then pass "$name: ${took}ms"; else fail "$name" "took ${took}ms"; fi
else
  fail "state back on primary after restart" "still $(cat "$TMP/state.json") after 10s"
fi
sleep_until $((t_back + RECOVER_BOUND_MS + 300))
expect "traffic from primary after recovery" "$(who_answers 8)" "primary"
expect_re "recovery logged at WARN" "$(grep -E 'WARN' "$MAIN_LOG" | grep -i 'primary' | grep -iv 'unhealthy' | head -n 1)" '.'

section "both down"
stop_pid "$PRIMARY_PID"
stop_pid "$BACKUP_PID"
t_kill=$(now_ms)
wait_until 10 on_backup_is true
sleep_until $((t_kill + FAIL_BOUND_MS + 300))
code=$(req "$TMP/down" "$PROXY/down")
expect_re "both down -> 503 saying so" "$code $(tr '\n' ' ' <"$TMP/down")" '^503 .*[Dd][Oo][Ww][Nn]'
expect "both down: every request 503" "$(who_answers 6)" "503"
start_upstream primary "$PRIMARY_PORT" || abort "restart primary" "$(log_tail "$TMP/primary.log")"
PRIMARY_PID=$UP_PID
start_upstream backup "$BACKUP_PORT" || abort "restart backup" "$(log_tail "$TMP/backup.log")"
BACKUP_PID=$UP_PID
t_back=$(now_ms)
wait_until 10 on_backup_is false
sleep_until $((t_back + RECOVER_BOUND_MS + 300))
expect "recovers after both were down" "$(who_answers 6)" "primary"

if stop_pid "$PROXY_PID"; then pass "SIGTERM stops the proxy"; else fail "SIGTERM stops the proxy" "still running 3s after SIGTERM"; fi

# ================================================================= config file

section "config file"
# A fresh primary process, so that its probe record holds only this proxy's checks.
stop_pid "$PRIMARY_PID"
start_upstream primary "$PRIMARY_PORT" || abort "restart primary" "$(log_tail "$TMP/primary.log")"
PRIMARY_PID=$UP_PID
CFG_PORT=$(free_port)
cat >"$TMP/config.yaml" <<EOF
listen: "127.0.0.1:$CFG_PORT"
primary: "$PRIMARY_URL/pfx"
backup: "http://127.0.0.1:9"   # overridden by --backup: flags win over the file
check_interval: "${INTERVAL_MS}ms"
check_timeout: "${TIMEOUT_MS}ms"
health_path: "/healthz"
fail_threshold: $FAIL_THRESHOLD
recover_threshold: $RECOVER_THRESHOLD
max_body: "1KB"
connect_timeout: "1s"
upstream_timeout: "5s"
idle_timeout: "30s"
header_timeout: "1s"
workers: 1
pin_cores: false
json_logs: false
EOF
if start_proxy "$TMP/proxy-config.log" "$CFG_PORT" --config="$TMP/config.yaml" --backup="$BACKUP_URL"; then
  pass "proxy starts from config.yaml"
  code=$(req "$TMP/c.json" "$PROXY/a?b=c")
  expect "config file: primary with path prefix" "$code $(jf "$TMP/c.json" '[d["upstream"], d["path"]]')" '200 ["primary", "/pfx/a?b=c"]'
  expect "config file: state shows file primary, flag backup" "$(state '[d["primary"].rstrip("/"), d["backup"]]')" "[\"$PRIMARY_URL/pfx\", \"$BACKUP_URL\"]"
  expect_re "config file: max_body 1KB -> 413" \
    "$(raw "$CFG_PORT" 1 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n')" "^413 $CLOSED"
  expect_re "config file: header_timeout 1s -> 408 on a slow head" \
    "$(raw "$CFG_PORT" 1 'GET /slow-head HTTP/1.1\r\nHost: a\r\n' --timeout 4)" "^408 $CLOSED"
  sleep 0.6 # three probe periods: the prefixed health path must keep the primary healthy
  expect "config file: stays on primary" "$(state 'd["on_backup"]')" "false"
  req "$TMP/probes.json" "$PRIMARY_URL/__upstream/probes" >/dev/null
  expect "config file: probes GET <prefix>/healthz with the upstream's Host" \
    "$(jf "$TMP/probes.json" 'd')" "[[\"/pfx/healthz\", \"127.0.0.1:$PRIMARY_PORT\"]]"
  stop_pid "$PROXY_PID"
else
  fail "proxy starts from config.yaml" "$(log_tail "$TMP/proxy-config.log")"
fi

# ================================================================= JSON logs

section "json logs"
JSON_PORT=$(free_port)
DEAD_PORT=$(free_port) # nothing listens there: the primary fails at once
JSON_LOG="$TMP/proxy-json.log"
if start_proxy "$JSON_LOG" "$JSON_PORT" --listen="127.0.0.1:$JSON_PORT" --primary="http://127.0.0.1:$DEAD_PORT" \
  --backup="$BACKUP_URL" "${HEALTH_FLAGS[@]}" --workers=1 --json-logs; then
  wait_until 10 on_backup_is true
  req "$TMP/j" "$PROXY/j" >/dev/null
  stop_pid "$PROXY_PID"
  verdict=$(python3 - "$JSON_LOG" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines() if l.strip()]
bad = []
warn = False
for l in lines:
    try:
        o = json.loads(l)
        missing = [k for k in ("ts", "level", "target", "msg") if k not in o]
        if missing:
            bad.append("missing %s in %s" % (missing, l[:120]))
        elif o["level"].upper() in ("WARN", "WARNING") and "backup" in o["msg"]:
            warn = True
    except Exception:
        bad.append("not JSON: " + l[:120])
if not lines:
    print("no log lines at all")
elif bad:
    print("; ".join(bad[:3]))
elif not warn:
    print("no WARN line about the failover among %d lines" % len(lines))
else:
    print("ok")
PY
  )
  expect "--json-logs: every line a JSON object, failover at WARN" "$verdict" ok
else
  fail "--json-logs: proxy starts" "$(log_tail "$JSON_LOG")"
fi

# ================================================================= metrics

section "metrics"
# A fresh proxy with two workers serves 6 requests: its scrape must parse with the reference
# parser, sum both workers' counters and name the serving upstream.
if python3 -c 'import prometheus_client' 2>/dev/null; then
  METRICS_PORT=$(free_port)
  if start_proxy "$TMP/proxy-metrics.log" "$METRICS_PORT" --listen="127.0.0.1:$METRICS_PORT" \
    --primary="$PRIMARY_URL" --backup="$BACKUP_URL" "${HEALTH_FLAGS[@]}" --workers=2; then
    who_answers 6 >/dev/null
    # A worker counts a response after its last byte: scrape again briefly if one lags.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      code=$(req "$TMP/metrics.txt" "$PROXY/__failover/metrics")
      verdict=$(python3 - "$TMP/metrics.txt" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
need = ["failover_info", "failover_active_upstream", "failover_upstream_up", "failover_transitions",
        "failover_last_transition_timestamp_seconds", "failover_health_checks", "failover_health_check_duration_seconds",
        "failover_requests", "failover_request_duration_seconds", "failover_retries", "failover_rescues",
        "failover_client_connections"]
missing = [n for n in need if n not in families]
def value(family, **labels):
    return sum(s.value for s in families[family].samples
               if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()))
served = value("failover_requests", upstream="primary", code_class="2xx")
active = [s.labels["upstream"] for s in families["failover_active_upstream"].samples if s.value == 1] if not missing else []
print("missing %s" % missing if missing else "ok" if served >= 6 and active == ["primary"] else "served=%s active=%s" % (served, active))
PY
      )
      [[ "$code $verdict" == "200 ok" ]] && break
      sleep 0.1
    done
    expect "metrics: Prometheus text format, families present, counts move" "$code $verdict" "200 ok"
    stop_pid "$PROXY_PID"
  else
    fail "metrics: proxy starts" "$(log_tail "$TMP/proxy-metrics.log")"
  fi
else
  fail "metrics: the prometheus_client parser" "python3 -m pip install prometheus_client"
fi

# ================================================================= chain and directory backup

section "chain and directory backup"
# primary -> backup -> backup2, a directory the proxy serves itself (the shipped sorry page).
stop_pid "$PRIMARY_PID"
start_upstream primary "$PRIMARY_PORT" || abort "restart primary" "$(log_tail "$TMP/primary.log")"
PRIMARY_PID=$UP_PID
CHAIN_PORT=$(free_port)
CHAIN_LOG="$TMP/proxy-chain.log"
SORRY=examples/sorry/index.html
if start_proxy "$CHAIN_LOG" "$CHAIN_PORT" --listen="127.0.0.1:$CHAIN_PORT" --primary="$PRIMARY_URL" \
  --backup="$BACKUP_URL" --backup=file://./examples/sorry "${HEALTH_FLAGS[@]}" --workers=2; then
  pass "proxy starts with a chain of three (http, http, file://)"
  expect "chain: state lists three upstreams" "$(state '[u["kind"] for u in d["upstreams"]]')" '["http", "http", "directory"]'
  expect "chain: traffic on the primary" "$(who_answers 4)" "primary"
  stop_pid "$PRIMARY_PID"
  wait_until 10 test "$(state 'd["active"]["index"]')" = 1
  expect "chain: primary down -> backup" "$(who_answers 6)" "backup"
  stop_pid "$BACKUP_PID"
  wait_until 10 test "$(state 'd["active"]["index"]')" = 2
  code=$(req "$TMP/sorry.html" "$PROXY/")
  if [[ $code == 200 ]] && cmp -s "$TMP/sorry.html" "$SORRY"; then pass "chain: both down -> the directory serves index.html"
  else fail "chain: both down -> the directory serves index.html" "status $code, $(head -c 200 "$TMP/sorry.html")"; fi
  expect_re "chain: directory answers HEAD with type, length and ETag" \
    "$(curl -sS -I --max-time 3 "$PROXY/index.html" | tr -d '\r' | grep -iE '^(content-type|content-length|etag):' | sort | tr '\n' ' ')" \
    "^Content-Length: $(wc -c <"$SORRY") Content-Type: text/html; charset=utf-8 ETag: \".+\" \$"
  expect "chain: a missing file is 404" "$(req "$TMP/nf" "$PROXY/no-such-file")" "404"
  expect "chain: POST on the static copy is 503" "$(req "$TMP/post" -X POST -d x "$PROXY/form")" "503"
  expect "chain: traversal is refused" "$(req "$TMP/trav" --path-as-is "$PROXY/%2e%2e/%2e%2e/etc/passwd")" "404"
  start_upstream backup "$BACKUP_PORT" || abort "restart backup" "$(log_tail "$TMP/backup.log")"
  BACKUP_PID=$UP_PID
  wait_until 10 test "$(state 'd["active"]["index"]')" = 1
  expect "chain: backup back -> traffic climbs one link" "$(who_answers 4)" "backup"
  start_upstream primary "$PRIMARY_PORT" || abort "restart primary" "$(log_tail "$TMP/primary.log")"
  PRIMARY_PID=$UP_PID
  wait_until 10 test "$(state 'd["active"]["index"]')" = 0
  expect "chain: primary back -> traffic on the primary" "$(who_answers 4)" "primary"
  expect "chain: each switch logged once" "$(grep -c 'traffic -> ' "$CHAIN_LOG")" "4"
  stop_pid "$PROXY_PID"
else
  fail "proxy starts with a chain of three (http, http, file://)" "$(log_tail "$CHAIN_LOG")"
fi

# The README's first command: nothing on the primary port, the sorry page at once.
SORRY_PORT=$(free_port)
DEAD_PORT=$(free_port)
if start_proxy "$TMP/proxy-sorry.log" "$SORRY_PORT" --listen="127.0.0.1:$SORRY_PORT" \
  --primary="http://127.0.0.1:$DEAD_PORT" --backup=file://./examples/sorry --backup-status=503 --workers=1; then
  code=$(curl -sS -D "$TMP/sorry.head" -o "$TMP/sorry.body" -w '%{http_code}' --max-time 3 "$PROXY/any/path" || true)
  expect_re "sorry page: 503 with the page, Retry-After and no-store" \
    "$code $(cmp -s "$TMP/sorry.body" "$SORRY" && echo same-page) $(tr -d '\r' <"$TMP/sorry.head" | grep -ciE '^(retry-after: [0-9]+|cache-control: no-store)$')" \
    '^503 same-page 2$'
  stop_pid "$PROXY_PID"
else
  fail "sorry page: proxy starts" "$(log_tail "$TMP/proxy-sorry.log")"
fi

# ================================================================= TLS

section "tls"
# A throwaway CA and a certificate for localhost and 127.0.0.1 (EC key in SEC1 form, as
# `openssl ecparam` writes it), used by both the HTTPS upstream and the proxy's listener.
PKI="$TMP/pki"
mkdir -p "$PKI"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$PKI/leaf.ext"
if ! {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=failover verify CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" &&
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/leaf.key" &&
    openssl req -new -key "$PKI/leaf.key" -subj /CN=localhost -out "$PKI/leaf.csr" &&
    openssl x509 -req -in "$PKI/leaf.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
      -extfile "$PKI/leaf.ext" -out "$PKI/leaf.crt"
} >"$PKI/openssl.log" 2>&1; then
  abort "make a test CA with openssl" "$(log_tail "$PKI/openssl.log")"
fi

# scripts/upstream.py behind TLS (python's ssl module), as the https:// primary.
cat >"$TMP/tls_upstream.py" <<'PY'
import importlib.util, os, ssl, sys
upstream_py, name, cert, key, port_file = sys.argv[1:6]
spec = importlib.util.spec_from_file_location("upstream", upstream_py)
up = importlib.util.module_from_spec(spec)
spec.loader.exec_module(up)
up.Handler.name = name
up.ThreadingHTTPServer.daemon_threads = True
server = up.ThreadingHTTPServer(("127.0.0.1", 0), up.Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["http/1.1"])
# The handshake happens on the first read, in the request's thread, not in accept.
server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
PY
rm -f "$TMP/tls-primary.port"
python3 "$TMP/tls_upstream.py" "$UPSTREAM" tls-primary "$PKI/leaf.crt" "$PKI/leaf.key" "$TMP/tls-primary.port" \
  >>"$TMP/tls-primary.log" 2>&1 &
PIDS+=("$!")
wait_until 10 test -s "$TMP/tls-primary.port" || abort "start the https upstream" "$(log_tail "$TMP/tls-primary.log")"
TLS_UP_PORT=$(cat "$TMP/tls-primary.port")

# One proxy for both directions: an https:// primary verified with --primary-ca, and a
# TLS listener (curl --cacert) next to a plain --listen-http one.
TLS_PORT=$(free_port)
PLAIN_PORT=$(free_port)
TLS_LOG="$TMP/proxy-tls.log"
if start_proxy "$TLS_LOG" "$PLAIN_PORT" --listen="127.0.0.1:$TLS_PORT" --listen-http="127.0.0.1:$PLAIN_PORT" \
  --tls-cert="$PKI/leaf.crt" --tls-key="$PKI/leaf.key" \
  --primary="https://localhost:$TLS_UP_PORT/pfx" --primary-ca="$PKI/ca.crt" --backup="$BACKUP_URL" \
  "${HEALTH_FLAGS[@]}" --workers=2; then
  pass "proxy starts with --tls-cert, --listen-http and an https:// primary"
  code=$(req "$TMP/t1.json" -H 'Host: example.test' "$PROXY/to-https?a=1")
  expect "https:// upstream: verified, prefix, Host = URL host, X-Forwarded-Host = client's" \
    "$code $(jf "$TMP/t1.json" '[d["upstream"], d["path"], hdr("host"), hdr("x-forwarded-host"), hdr("x-forwarded-proto")]')" \
    "200 [\"tls-primary\", \"/pfx/to-https?a=1\", \"localhost:$TLS_UP_PORT\", \"example.test\", \"http\"]"
  code=$(req "$TMP/t2.json" --cacert "$PKI/ca.crt" -H 'X-Forwarded-Proto: http' "https://localhost:$TLS_PORT/from-https")
  expect "TLS listener (curl --cacert): forwarded with X-Forwarded-Proto: https" \
    "$code $(jf "$TMP/t2.json" '[d["upstream"], d["path"], hdr("x-forwarded-proto")]')" \
    '200 ["tls-primary", "/pfx/from-https", "https"]'
  stop_pid "$PROXY_PID"
else
  fail "proxy starts with --tls-cert, --listen-http and an https:// primary" "$(log_tail "$TLS_LOG")"
fi

finish
