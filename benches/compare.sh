#!/usr/bin/env bash
# failover next to HAProxy and nginx, on loopback, under the same load.
#
# What it measures: wrk (one thread, keep-alive) asks for PATH through four targets:
#   direct    the upstream nginx itself (the ceiling: no proxy in the way)
#   haproxy   HAProxy, one thread, http mode, keep-alive to the upstream
#   nginx     nginx as a reverse proxy, one worker, keep-alive upstream pool
#   failover  this project, --workers=1
# Each proxy has the upstream as its primary and a dead port as its backup, and probes
# /healthz. Rounds interleave (every target once per round) so that the machine's noise
# is shared. For every run it records requests per second, p99 latency (µs) and the
# proxy process's own CPU time per request (user+system from /proc/PID/stat, µs), which
# varies less than req/s when wrk, the upstream and the proxy compete for the same cores.
# Then medians per target, failover's req/s over HAProxy's and nginx's, and their CPU per
# request over failover's (above 1 means failover spends less CPU per request).
# rest_us_per_req is the CPU time per request of everything else, wrk and the upstream
# nginx, in the same run. Where they and the proxy share the cores (no PIN), req/s goes as
# 1 / (rest + proxy), so cpu_bound_ratio_vs_haproxy = (rest + HAProxy's) / (rest +
# failover's) is the req/s ratio the CPU figures allow, and zero_cpu_bound_ratio_vs_haproxy
# what a proxy that cost nothing at all would reach against HAProxy on this machine.
#
# usage: benches/compare.sh [PATH] [CONNS] [SECONDS] [ROUNDS]   (from the repository root)
#   PATH     /small (a 14-byte body), /1k or /64k (random bytes),  default /small
#            /chunked/64k or /chunked/256k (random bytes, chunked: the upstream nginx
#            sends them in chunks of 64 KB, as an app server streaming a file does)
#   CONNS    wrk connections                                       default 50
#   SECONDS  length of one wrk run                                 default 5
#   ROUNDS   number of interleaved rounds                          default 3
#   BIN=...  the failover binary (default target/release/failover, built if missing)
#   BASE=... / BASE_FLAGS=...  also measure a second failover, "base" (port 8083): the
#            binary BASE (default BIN) with BASE_FLAGS added, for a before/after of one
#            change in the same run, e.g. BASE_FLAGS=--no-splice or BASE=/tmp/old-failover
#   PIN=1    the proxies on CPU 0 alone, wrk and the upstream nginx on the other CPUs
#            (taskset): each proxy gets a core to itself, as in a deployment, and its p99
#            is not the load generator's scheduling (needs 2 CPUs or more)
#   IDLE=N   then also the memory each proxy holds per idle keep-alive connection: N
#            connections, one GET each, kept open; RSS growth of the proxy (its workers
#            included) over N. Needs python3. (2026-12-01, IDLE=5000: failover 227 B,
#            nginx 492 B, HAProxy 1126 B per connection.)
#
# Needs: bash 4, wrk, nginx (nginx-light), haproxy, curl, ss, awk; on Debian or Ubuntu:
#   apt-get install -y wrk nginx-light haproxy curl
# Uses 127.0.0.1 only, ports 8080-8082 and 9001-9002 (refuses to start if any is taken),
# writes its configs to a temporary directory, and stops everything it started on exit.
#
# Compare figures only within one run: absolute numbers on a shared 2-core machine, where
# the load generator, the upstream and the proxy share two cores, move from run to run.
set -u

URL_PATH=${1:-/small}
CONNS=${2:-50}
SECS=${3:-5}
ROUNDS=${4:-3}

FAILOVER_PORT=8080
HAPROXY_PORT=8081
NGINX_PORT=8082
BASE_PORT=8083
UPSTREAM_PORT=9001
DEAD_PORT=9002 # the backup: nothing listens here

die() { echo "compare.sh: $*" >&2; exit 1; }

case $URL_PATH in
  /small | /1k | /64k | /chunked/64k | /chunked/256k) ;;
  *) die "PATH must be /small, /1k, /64k, /chunked/64k or /chunked/256k (got $URL_PATH)" ;;
esac
for n in "$CONNS" "$SECS" "$ROUNDS"; do
  case $n in '' | *[!0-9]* | 0) die "CONNS, SECONDS and ROUNDS must be positive integers" ;; esac
done
for tool in wrk nginx haproxy curl ss awk; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool (apt-get install -y wrk nginx-light haproxy curl)"
done

# Work from the repository root, whatever the caller's directory; keep a BIN given
# relative to the caller's directory working.
cd "$(dirname "$0")/.." || die "cannot find the repository root"
if [ -n "${BIN:-}" ]; then
  case $BIN in /*) ;; *) BIN=$OLDPWD/$BIN ;; esac
  [ -x "$BIN" ] || die "BIN=$BIN is not an executable"
else
  BIN=$PWD/target/release/failover
  if [ ! -x "$BIN" ]; then
    echo "compare.sh: $BIN is missing, running cargo build --release" >&2
    cargo build --release || die "cargo build --release failed"
  fi
fi

# A process already on one of these ports would take part of the load (SO_REUSEPORT) or
# answer instead of ours, and every figure would be wrong.
taken=""
for port in $FAILOVER_PORT $HAPROXY_PORT $NGINX_PORT $BASE_PORT $UPSTREAM_PORT $DEAD_PORT; do
  if ss -ltn | awk -v p=":$port" 'NR > 1 && substr($4, length($4) - length(p) + 1) == p {found = 1} END {exit !found}'; then
    taken="$taken $port"
  fi
done
[ -z "$taken" ] || die "something already listens on port(s)$taken; stop it first (ss -ltnp shows what)"

# PIN=1: who runs where (commands are prefixed with these; empty otherwise).
PROXY_PIN=() LOAD_PIN=()
if [ "${PIN:-0}" = 1 ]; then
  ncpu=$(nproc)
  [ "$ncpu" -ge 2 ] || die "PIN=1 needs 2 CPUs or more (nproc says $ncpu)"
  command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
  PROXY_PIN=(taskset -c 0) LOAD_PIN=(taskset -c "1-$((ncpu - 1))")
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/failover-compare.XXXXXX") || die "mktemp failed"
chmod 755 "$WORK" # nginx workers may run as nobody and must read the files below

started=() # PIDs of everything started here, stopped on exit
stop_all() {
  local pid
  for pid in ${started[@]+"${started[@]}"}; do kill "$pid" 2>/dev/null; done
  for pid in ${started[@]+"${started[@]}"}; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the files the upstream serves -------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/upstream" "$WORK/proxy"
head -c 1024 /dev/urandom >"$WORK/www/1k"
head -c 65536 /dev/urandom >"$WORK/www/64k"
head -c 262144 /dev/urandom >"$WORK/www/256k"
chmod 755 "$WORK/www"
chmod 644 "$WORK/www/1k" "$WORK/www/64k" "$WORK/www/256k"

# nginx writes temporary files and logs under its prefix (-p), so each instance gets its
# own directory and touches nothing outside $WORK.
nginx_temp_paths() {
  local d=$1
  cat <<EOF
  client_body_temp_path $d/client_body;
  proxy_temp_path $d/proxy_temp;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
EOF
}

# --- upstream: nginx, one worker ---------------------------------------------------------
cat >"$WORK/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
$(nginx_temp_paths "$WORK/upstream")
  server {
    listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
    location = /healthz { return 200 "ok\n"; }
    location = /small { return 200 "hello, world!\n"; }
    # The same files without a length: a filter that never matches makes nginx stream
    # them chunked, one chunk per 64 KB output buffer.
    location /chunked/ {
      alias $WORK/www/;
      sendfile off;
      output_buffers 1 64k;
      sub_filter 'never-matches-f41l0v3r' '';
      sub_filter_types *;
    }
    location / { root $WORK/www; }
  }
}
EOF

# --- HAProxy: one thread, http mode, connections to the upstream reused ------------------
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend upstreams
backend upstreams
  http-reuse always
  option httpchk GET /healthz
  server primary 127.0.0.1:$UPSTREAM_PORT check inter 2s fall 3 rise 2
  server backup 127.0.0.1:$DEAD_PORT check inter 2s fall 3 rise 2 backup
EOF

# --- nginx as a reverse proxy: one worker, keep-alive pool to the upstream ---------------
cat >"$WORK/proxy/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 10000; }
http {
  access_log off;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
$(nginx_temp_paths "$WORK/proxy")
  upstream upstreams {
    server 127.0.0.1:$UPSTREAM_PORT max_fails=3 fail_timeout=2s;
    server 127.0.0.1:$DEAD_PORT backup;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://upstreams;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF

# --- start everything, each as a child of this shell so that its PID is known ------------
${LOAD_PIN[@]+"${LOAD_PIN[@]}"} nginx -p "$WORK/upstream" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" \
  >"$WORK/upstream/stdout.log" 2>&1 &
UPSTREAM_PID=$!
started+=("$UPSTREAM_PID")

# -db: stay in the foreground (no daemon, no pidfile needed); the PID is this child's.
${PROXY_PIN[@]+"${PROXY_PIN[@]}"} haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
started+=("$HAPROXY_PID")

${PROXY_PIN[@]+"${PROXY_PIN[@]}"} nginx -p "$WORK/proxy" -e "$WORK/proxy/error.log" -c "$WORK/proxy/nginx.conf" \
  >"$WORK/proxy/stdout.log" 2>&1 &
NGINX_PID=$!
started+=("$NGINX_PID")

${PROXY_PIN[@]+"${PROXY_PIN[@]}"} "$BIN" --listen=127.0.0.1:$FAILOVER_PORT \
  --primary=http://127.0.0.1:$UPSTREAM_PORT --backup=http://127.0.0.1:$DEAD_PORT \
  --health-path=/healthz --workers=1 >"$WORK/failover.log" 2>&1 &
FAILOVER_PID=$!
started+=("$FAILOVER_PID")

if [ -n "${BASE:-}${BASE_FLAGS:-}" ]; then
  BASE=${BASE:-$BIN}
  case $BASE in /*) ;; *) BASE=$OLDPWD/$BASE ;; esac
  [ -x "$BASE" ] || die "BASE=$BASE is not an executable"
  # shellcheck disable=SC2086 # BASE_FLAGS is a list of flags
  ${PROXY_PIN[@]+"${PROXY_PIN[@]}"} "$BASE" --listen=127.0.0.1:$BASE_PORT \
    --primary=http://127.0.0.1:$UPSTREAM_PORT --backup=http://127.0.0.1:$DEAD_PORT \
    --health-path=/healthz --workers=1 ${BASE_FLAGS:-} >"$WORK/base.log" 2>&1 &
  BASE_PID=$!
  started+=("$BASE_PID")
fi

# The targets, in the order of each round. The PID is the process whose CPU time is
# counted (with its children: the nginx master's worker); none for direct.
NAMES=(direct haproxy nginx failover)
PORTS=("$UPSTREAM_PORT" "$HAPROXY_PORT" "$NGINX_PORT" "$FAILOVER_PORT")
PIDS=("" "$HAPROXY_PID" "$NGINX_PID" "$FAILOVER_PID")
SERVERS=("$UPSTREAM_PID" "$HAPROXY_PID" "$NGINX_PID" "$FAILOVER_PID") # who answers on the port
LOGS=("$WORK/upstream/error.log" "$WORK/haproxy.log" "$WORK/proxy/error.log" "$WORK/failover.log")
if [ -n "${BASE_PID:-}" ]; then
  NAMES+=(base) PORTS+=("$BASE_PORT") PIDS+=("$BASE_PID") SERVERS+=("$BASE_PID") LOGS+=("$WORK/base.log")
fi

# Wait until every target answers PATH with 200 (up to 10 s each).
for i in "${!NAMES[@]}"; do
  code=000
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:${PORTS[i]}$URL_PATH")
    [ "$code" = 200 ] && break
    kill -0 "${SERVERS[i]}" 2>/dev/null || break # it exited: no use waiting
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    echo "compare.sh: ${NAMES[i]} (port ${PORTS[i]}) does not answer 200 for $URL_PATH (last: $code); its log:" >&2
    tail -n 20 "${LOGS[i]}" >&2 2>/dev/null
    exit 1
  fi
done

# --- measuring helpers ---------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
TIMEFORMAT='wrk_cpu %U %S' # what bash's `time` prints: wrk's user and system seconds

# utime+stime, in clock ticks, of PID and of its children. The fields are counted from the
# end of the ')' that closes the command name, which may itself hold spaces.
cpu_ticks() {
  local pid=$1 total=0 kids child t
  [ -n "$pid" ] || { echo 0; return; }
  kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null)
  for child in $pid $kids; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' /proc/"$child"/stat 2>/dev/null)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# wrk prints latencies as 812.00us, 1.53ms, 2.01s or 1.00m; give microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); m = 1 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); m = 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); m = 1000000 }
    else if (v ~ /m$/) { sub(/m$/, "", v); m = 60000000 }
    else { print "NA"; exit }
    printf "%.0f", v * m }'
}

median() {
  printf '%s\n' "$@" | grep -v -e '^$' -e '^NA$' | sort -g |
    awk '{ v[NR] = $1 } END {
      if (NR == 0) print "NA"
      else if (NR % 2) print v[(NR + 1) / 2]
      else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# a/b with two decimals, NA when either is missing or b is zero.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "NA" || b == "NA" || b + 0 == 0) print "NA"; else printf "%.2f", a / b }'
}

# --- warm-up: fill every keep-alive pool before anything is recorded ----------------------
for i in "${!NAMES[@]}"; do
  ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${PORTS[i]}$URL_PATH" >/dev/null 2>&1
done

echo "path=$URL_PATH conns=$CONNS seconds=$SECS rounds=$ROUNDS bin=$BIN${LOAD_PIN[*]+ pinned: proxies on CPU 0, wrk and the upstream on ${LOAD_PIN[2]}}"

# --- interleaved rounds ---------------------------------------------------------------------
RPS=() P99=() CPU=() REST=() # per target: space-separated values of all rounds
for round in $(seq "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    before=$(cpu_ticks "${PIDS[i]}")
    up_before=$(cpu_ticks "$UPSTREAM_PID")
    # bash's `time` gives wrk's own CPU time (user, system), printed last.
    out=$( { time ${LOAD_PIN[@]+"${LOAD_PIN[@]}"} wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:${PORTS[i]}$URL_PATH" 2>&1; } 2>&1)
    after=$(cpu_ticks "${PIDS[i]}")
    up_after=$(cpu_ticks "$UPSTREAM_PID")

    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    requests=$(awk '/ requests in / { print $1 }' <<<"$out")
    p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    cpu=NA rest=NA
    if [ -n "${PIDS[i]}" ] && [ "${requests:-0}" -gt 0 ]; then
      cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { printf "%.2f", t / hz * 1000000 / n }')
    fi
    # The rest of the work per request: the load generator's and the upstream's CPU time.
    if [ "${requests:-0}" -gt 0 ]; then
      rest=$(awk -v t=$((up_after - up_before)) -v hz="$CLK_TCK" -v n="$requests" \
        -v w="$(awk '$1 == "wrk_cpu" { print $2 + $3 }' <<<"$out")" \
        'BEGIN { if (w == "") print "NA"; else printf "%.2f", (t / hz + w) * 1000000 / n }')
    fi

    # Anything but clean 2xx answers is shown on the line itself.
    problems=""
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
    [ -n "$non2xx" ] && problems="$problems non2xx=$non2xx"
    sockerr=$(awk '/Socket errors:/ { sub(/.*Socket errors: */, ""); gsub(/,/, ""); print }' <<<"$out")
    [ -n "$sockerr" ] && problems="$problems socket_errors=\"$sockerr\""
    [ -z "$rps" ] && problems="$problems wrk_failed=\"$(tail -n 1 <<<"$out")\""

    echo "round=$round target=${NAMES[i]} rps=${rps:-NA} p99_us=${p99:-NA} cpu_us_per_req=$cpu rest_us_per_req=$rest$problems"
    RPS[i]="${RPS[i]:-} ${rps:-NA}"
    P99[i]="${P99[i]:-} ${p99:-NA}"
    CPU[i]="${CPU[i]:-} $cpu"
    REST[i]="${REST[i]:-} $rest"
  done
done

# --- medians and ratios -----------------------------------------------------------------------
MED_RPS=() MED_CPU=() MED_REST=()
for i in "${!NAMES[@]}"; do
  # shellcheck disable=SC2086 # the lists are meant to split into one value per round
  MED_RPS[i]=$(median ${RPS[i]})
  # shellcheck disable=SC2086
  MED_CPU[i]=$(median ${CPU[i]})
  # shellcheck disable=SC2086
  MED_REST[i]=$(median ${REST[i]})
  # shellcheck disable=SC2086
  echo "median target=${NAMES[i]} rps=${MED_RPS[i]} p99_us=$(median ${P99[i]}) cpu_us_per_req=${MED_CPU[i]} rest_us_per_req=${MED_REST[i]}"
done
# indexes: 0 direct, 1 haproxy, 2 nginx, 3 failover
echo "ratio_vs_haproxy=$(ratio "${MED_RPS[3]}" "${MED_RPS[1]}")" \
  "ratio_vs_nginx=$(ratio "${MED_RPS[3]}" "${MED_RPS[2]}")"
echo "cpu_per_req_haproxy_over_failover=$(ratio "${MED_CPU[1]}" "${MED_CPU[3]}")" \
  "cpu_per_req_nginx_over_failover=$(ratio "${MED_CPU[2]}" "${MED_CPU[3]}")"
# When the cores are what runs out (wrk, the upstream and the proxy on the same cores),
# req/s goes as 1 / (rest + proxy CPU per request): the ratio that CPU time alone allows.
# Without PIN, a proxy that spent nothing at all would reach (rest + HAProxy's) / rest.
cpu_ratio() {
  awk -v r="$1" -v a="$2" -v b="$3" 'BEGIN {
    if (r == "NA" || a == "NA" || b == "NA" || r + b == 0) print "NA"; else printf "%.2f", (r + a) / (r + b) }'
}
if [ -z "${LOAD_PIN[*]+set}" ]; then # pinned, the proxy has a core of its own: no such bound
  echo "cpu_bound_ratio_vs_haproxy=$(cpu_ratio "${MED_REST[3]}" "${MED_CPU[1]}" "${MED_CPU[3]}")" \
    "cpu_bound_ratio_vs_nginx=$(cpu_ratio "${MED_REST[3]}" "${MED_CPU[2]}" "${MED_CPU[3]}")" \
    "zero_cpu_bound_ratio_vs_haproxy=$(cpu_ratio "${MED_REST[3]}" "${MED_CPU[1]}" 0)"
fi
if [ -n "${BASE_PID:-}" ]; then
  echo "failover_over_base_rps=$(ratio "${MED_RPS[3]}" "${MED_RPS[4]}")" \
    "cpu_per_req_base_over_failover=$(ratio "${MED_CPU[4]}" "${MED_CPU[3]}")"
fi

# --- memory per idle keep-alive connection (IDLE=N) ---------------------------------------
if [ -n "${IDLE:-}" ]; then
  case $IDLE in *[!0-9]* | 0) die "IDLE must be a positive integer" ;; esac
  for i in 1 2 3; do
    bytes=$(python3 - "${PORTS[i]}" "${PIDS[i]}" "$IDLE" "$URL_PATH" <<'PY'
import os, resource, socket, sys, time

port, pid, n, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

def rss():
    """KiB resident in the process and its children (nginx's worker, say)."""
    pids, total = [pid], 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            pids += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    for p in pids:
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total

def answered(s):
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed")
        got += chunk

before, conns = rss(), []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: idle\r\n\r\n".encode())
    answered(s)
    conns.append(s)
time.sleep(1)
print(round((rss() - before) * 1024 / n))
PY
    )
    echo "idle target=${NAMES[i]} conns=$IDLE bytes_per_conn=${bytes:-NA}"
  done
fi
