#!/usr/bin/env bash
# TLS throughput side by side: failover vs HAProxy (one thread each), both directions.
#   listener: wrk --https--> proxy (TLS termination) --http--> nginx :9001
#   upstream: wrk --http--> proxy --https (verify against our CA)--> nginx :9443
# usage: benches/tls_compare.sh [BINARY] [SECONDS] [ROUNDS] [PATH]
#   PATH /small (14 bytes, default) or /64k
#   BASE=binary  also measure that failover binary as a TLS listener ("base_listener"),
#                for a before/after of one change in the same run
# Needs: wrk, nginx-light, haproxy, openssl, curl. Loopback only; stops what it starts.
# Prints medians per target (req/s, p99, and the proxy process's user+system CPU time per
# request, and that of wrk and the upstream, "rest") and `ratio_listener_vs_haproxy=…
# ratio_upstream_vs_haproxy=…`, then the req/s ratios the CPU figures allow where everything
# shares the cores, (rest + HAProxy's) / (rest + failover's), and a proxy's that cost nothing.
set -u
BIN=$(readlink -f "${1:-target/release/failover}")
D=${2:-5}
R=${3:-3}
P=${4:-/small}
case $P in /small | /64k) ;; *) echo "tls_compare.sh: PATH must be /small or /64k" >&2; exit 1 ;; esac
if [ -n "${BASE:-}" ]; then BASE=$(readlink -f "$BASE"); fi
W=$(mktemp -d "${TMPDIR:-/tmp}/failover-tls-bench.XXXXXX") || exit 1
cd "$W" || exit 1
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$W/haproxy.pid" ] && kill "$(cat "$W/haproxy.pid")" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p www && head -c 65536 /dev/urandom >www/64k && chmod -R a+rX "$W"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf 2>/dev/null
cat srv.pem srv.key >combined.pem

cat >nginx.conf <<EOF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9001 reuseport backlog=4096;
    location = /healthz { return 200 "ok\n"; } location = /small { return 200 "primary hello\n"; }
    location / { root $W/www; } }
  server { listen 127.0.0.1:9443 ssl reuseport backlog=4096;
    ssl_certificate $W/srv.pem; ssl_certificate_key $W/srv.key;
    location = /healthz { return 200 "ok\n"; } location = /small { return 200 "primary hello\n"; }
    location / { root $W/www; } } }
EOF
cat >haproxy.cfg <<EOF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend listener
  bind 127.0.0.1:8444 ssl crt $W/combined.pem alpn http/1.1
  default_backend plain
frontend upstream
  bind 127.0.0.1:8445
  default_backend tls
backend plain
  http-reuse always
  server primary 127.0.0.1:9001 check inter 2s
backend tls
  http-reuse always
  server primary 127.0.0.1:9443 ssl verify required ca-file $W/ca.pem sni str(localhost) check inter 2s
EOF
nginx -p "$W" -c "$W/nginx.conf" >/dev/null 2>&1 &
pids+=($!)
haproxy -f "$W/haproxy.cfg" -D -p "$W/haproxy.pid" >/dev/null 2>&1
"$BIN" --listen=127.0.0.1:8446 --tls-cert="$W/srv.pem" --tls-key="$W/srv.key" --primary=http://127.0.0.1:9001 \
  --backup=http://127.0.0.1:9001 --health-path=/healthz --workers=1 >"$W/listener.log" 2>&1 &
pids+=($!)
"$BIN" --listen=127.0.0.1:8447 --primary=https://localhost:9443 --primary-ca="$W/ca.pem" \
  --backup=http://127.0.0.1:9001 --health-path=/healthz --workers=1 >"$W/upstream.log" 2>&1 &
pids+=($!)
declare -A pid_of=([failover_listener]=${pids[1]} [failover_upstream]=${pids[2]})
targets="haproxy_listener:https://127.0.0.1:8444 failover_listener:https://127.0.0.1:8446 haproxy_upstream:http://127.0.0.1:8445 failover_upstream:http://127.0.0.1:8447"
if [ -n "${BASE:-}" ]; then
  "$BASE" --listen=127.0.0.1:8448 --tls-cert="$W/srv.pem" --tls-key="$W/srv.key" --primary=http://127.0.0.1:9001 \
    --backup=http://127.0.0.1:9001 --health-path=/healthz --workers=1 >"$W/base.log" 2>&1 &
  pids+=($!)
  pid_of[base_listener]=$!
  targets="$targets base_listener:https://127.0.0.1:8448"
fi
for _ in $(seq 50); do [ -s "$W/haproxy.pid" ] && break; sleep 0.1; done
pid_of[haproxy_listener]=$(cat "$W/haproxy.pid" 2>/dev/null)
pid_of[haproxy_upstream]=${pid_of[haproxy_listener]}
HZ=$(getconf CLK_TCK)
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The upstream nginx: its master and its worker.
up_ticks() {
  local t=0 p
  for p in ${pids[0]} $(cat /proc/"${pids[0]}"/task/*/children 2>/dev/null); do t=$((t + $(ticks "$p"))); done
  echo "$t"
}
TIMEFORMAT='wrk_cpu %U %S' # bash's `time`: wrk's own user and system seconds
for t in $targets; do
  url=${t#*:}
  for _ in $(seq 50); do curl -sk -o /dev/null -m1 "$url$P" && break; sleep 0.1; done
done
declare -A rps p99 cpu rest
for r in $(seq "$R"); do
  for t in $targets; do
    name=${t%%:*}
    url=${t#*:}
    t0=$(ticks "${pid_of[$name]}") u0=$(up_ticks)
    out=$( { time wrk -t1 -c50 -d"${D}s" --latency "$url$P" 2>&1; } 2>&1)
    t1=$(ticks "${pid_of[$name]}") u1=$(up_ticks)
    n=$(echo "$out" | awk '/ requests in / {print $1}')
    c=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "NA" }')
    # The rest of the work per request: wrk's (its TLS included) and the upstream's.
    w=$(echo "$out" | awk '$1 == "wrk_cpu" { print $2 + $3 }')
    o=$(awk -v t=$((u1 - u0)) -v w="${w:-}" -v hz="$HZ" -v n="${n:-0}" \
      'BEGIN { if (n > 0 && w != "") printf "%.2f", (t / hz + w) * 1e6 / n; else print "NA" }')
    q=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    l=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub("ms","",v); v=v*1000} else if (v ~ /us$/) {sub("us","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000000}; print v}')
    e=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ')
    echo "round=$r target=$name rps=${q:-0} p99_us=${l:-NA} cpu_us_per_req=$c rest_us_per_req=$o $e"
    # A failed run counts as missing, not as zero.
    rps[$name]+="${q:-NA} "
    p99[$name]+="${l:-NA} "
    cpu[$name]+="$c "
    rest[$name]+="$o "
  done
done
med() { echo "$@" | tr ' ' '\n' | grep -v -e '^$' -e '^NA$' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "NA")}'; }
for t in $targets; do
  n=${t%%:*}
  echo "median target=$n rps=$(med "${rps[$n]}") p99_us=$(med "${p99[$n]}") cpu_us_per_req=$(med "${cpu[$n]}") rest_us_per_req=$(med "${rest[$n]}")"
done
awk -v fl="$(med "${rps[failover_listener]}")" -v hl="$(med "${rps[haproxy_listener]}")" \
  -v fu="$(med "${rps[failover_upstream]}")" -v hu="$(med "${rps[haproxy_upstream]}")" \
  'function r(a, b) { return (a == "NA" || b == "NA" || b + 0 == 0) ? "NA" : sprintf("%.2f", a / b) }
  BEGIN { print "ratio_listener_vs_haproxy=" r(fl, hl), "ratio_upstream_vs_haproxy=" r(fu, hu) }'
# As in compare.sh: where wrk, the upstream and the proxy share the cores, req/s goes as
# 1 / (rest + proxy CPU per request); the ratio the CPU figures allow, and a free proxy's.
bound() {
  awk -v r="$(med "${rest[failover_$1]}")" -v h="$(med "${cpu[haproxy_$1]}")" -v f="$(med "${cpu[failover_$1]}")" \
    'BEGIN { if (r == "NA" || h == "NA" || f == "NA") print "NA NA"; else printf "%.2f %.2f", (r + h) / (r + f), (r + h) / r }'
}
read -r lb lz < <(bound listener)
read -r ub uz < <(bound upstream)
echo "cpu_bound_listener=$lb zero_cpu_bound_listener=$lz cpu_bound_upstream=$ub zero_cpu_bound_upstream=$uz"
