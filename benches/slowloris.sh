#!/usr/bin/env bash
# Slowloris resistance: does p99 of a normal wrk run hold while 1,000 slowloris connections
# (a request head sent one byte a second, never finished) and 1,000 idle keep-alive
# connections (one request answered, then silence) sit on the proxy? And is RSS bounded?
#   wrk -t1 -c50 --> proxy :8096 (one worker, --header-timeout=60s) --> nginx :9001
#   benches/slowloris.py (SLOW + IDLE connections) --> proxy :8096
# usage: benches/slowloris.sh [BINARY] [SECONDS]   (defaults: target/release/failover, 5)
# env: EXTRA='--flag=…' extra proxy args; SLOW=1000 IDLE=1000 ROUNDS=3 (wrk rounds per phase);
#      SYNC=1: all slowloris bytes on the same tick each second (a burst) instead of spread out;
#      PAD=N: each slowloris head starts with ~N bytes of header lines (N < 32768: a full buffer)
# Needs: wrk, nginx-light, python3, curl. Loopback only; starts and stops what it uses.
# Prints one line per wrk round (baseline, attacked, then one 'after' round once the attack
# is gone, as a noise check), the RSS samples, then one summary line:
#   baseline_p99_us=… attacked_p99_us=… p99_ratio=… baseline_rps=… attacked_rps=…
#   rss_before_kib=… rss_during_kib=… rss_per_conn_bytes=…
# (medians over ROUNDS; rss_during is the largest sample while the attack is up;
# rss_per_conn_bytes = (rss_during - rss_before) / (SLOW + IDLE)). The attack phase must end
# before --header-timeout closes the slowloris heads: keep ROUNDS * SECONDS well under 60
# (the helper reopens closed connections and counts them in its `attack final` line).
set -u
BIN=$(readlink -f "${1:-target/release/failover}")
D=${2:-5}
R=${ROUNDS:-3}
SLOW=${SLOW:-1000}
IDLE=${IDLE:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=/work/shared/bench
PORT=8096
URL=http://127.0.0.1:$PORT/small
W=/tmp/failover-bench            # upstream-nginx.conf keeps its pid and error log here
L=/tmp/failover-slowloris-bench  # this script's own logs
mkdir -p "$W/www" && rm -rf "$L" && mkdir -p "$L"
[ -x "$BIN" ] || { echo "no binary at $BIN (cd /work/wt6 && cargo build --release)" >&2; exit 1; }

# 2 descriptors per proxied connection in the proxy, 1 per connection in the helper.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((2 * (SLOW + IDLE) + 1024)) ] || echo "warning: open-file limit $(ulimit -n) is low" >&2

pids=()
ATTACK=
cleanup() {
  [ -n "$ATTACK" ] && kill "$ATTACK" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nginx -c "$SHARED/upstream-nginx.conf" >/dev/null 2>&1 & pids+=($!)
# shellcheck disable=SC2086  # EXTRA is a list of flags
"$BIN" --primary=http://127.0.0.1:9001 --backup=http://127.0.0.1:9002 --listen=127.0.0.1:$PORT \
  --health-path=/healthz --workers=1 --header-timeout=60s ${EXTRA:-} >"$L/proxy.log" 2>&1 &
PROXY=$!; pids+=($PROXY)
for i in $(seq 50); do curl -s -o /dev/null -m1 "$URL" && break; sleep 0.1; done
curl -sf -o /dev/null -m1 "$URL" || { echo "proxy not answering on :$PORT"; cat "$L/proxy.log"; exit 1; }

rss() { awk '/^VmRSS:/ {print $2}' /proc/$PROXY/status 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$PROXY/stat 2>/dev/null || echo 0; }  # utime + stime
TCK=$(getconf CLK_TCK)
fds() { ls /proc/$PROXY/fd 2>/dev/null | wc -l; }
med() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }

declare -A rps p99
run_wrk() {  # phase round
  local out q l e c0 c1 c
  c0=$(cpu_ticks)
  out=$(wrk -t1 -c50 -d"${D}s" --latency "$URL" 2>&1)
  c1=$(cpu_ticks)
  q=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  l=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub("ms","",v); v=v*1000} else if (v ~ /us$/) {sub("us","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000000}; print v}')
  e=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ')
  # proxy CPU per request: less sensitive to a busy machine than latency is
  c=$(awk -v t=$((c1 - c0)) -v k="$TCK" -v q="${q:-0}" -v d="$D" 'BEGIN {printf "%.2f", (q > 0 ? t * 1e6 / k / (q * d) : 0)}')
  echo "round=$2 phase=$1 rps=${q:-0} p99_us=${l:-NA} proxy_cpu_us_per_req=$c rss_kib=$(rss) $e"
  rps[$1]+="${q:-0} "; p99[$1]+="${l:-0} "
}

wrk -t1 -c50 -d1s "$URL" >/dev/null 2>&1  # warm-up: upstream pool, buffer pool, page cache
for r in $(seq "$R"); do run_wrk baseline "$r"; done
rss_before=$(rss); fds_before=$(fds)

: >"$L/attack.log"  # exists before the background child opens it (the wait loop greps it)
python3 "$HERE/slowloris.py" 127.0.0.1 $PORT "$SLOW" "$IDLE" $((3 * R * D + 60)) "$([ "${SYNC:-0}" = 1 ] && echo sync)" "${PAD:-0}" >"$L/attack.log" 2>&1 &
ATTACK=$!
# Up = the helper saw every connection start (slow: first byte written; idle: answered)
# and the proxy holds a descriptor for each (a connect alone may still sit in the backlog).
up=0
for i in $(seq 300); do
  kill -0 $ATTACK 2>/dev/null || break
  if grep -q '^ready' "$L/attack.log" && [ "$(fds)" -ge $((fds_before + SLOW + IDLE)) ]; then up=1; break; fi
  sleep 0.1
done
[ $up = 1 ] || { echo "attack connections not established: $(tail -2 "$L/attack.log") proxy_fds=$(fds)"; exit 1; }
c0=$(cpu_ticks); sleep 2; c1=$(cpu_ticks)  # every slowloris connection trickles 2 more bytes
rss_during=$(rss)
echo "attack $(grep '^ready' "$L/attack.log") proxy_fds=$(fds) (before: $fds_before) rss_kib=$rss_during" \
  "proxy_cpu_pct_without_wrk=$(awk -v t=$((c1 - c0)) -v k="$TCK" 'BEGIN {printf "%.1f", t * 100 / k / 2}')"
samples="$rss_during"
for r in $(seq "$R"); do run_wrk attacked "$r"; samples+=" $(rss)"; done
rss_after_wrk=$(rss)
kill $ATTACK 2>/dev/null; wait $ATTACK 2>/dev/null; ATTACK=
echo "attack $(grep '^final' "$L/attack.log" | tail -1)"
for i in $(seq 50); do [ "$(fds)" -le $((fds_before + 10)) ] && break; sleep 0.1; done
rss_released=$(rss)
run_wrk after 1
echo "rss before_kib=$rss_before established_kib=$rss_during after_wrk_kib=$rss_after_wrk released_kib=$rss_released hwm_kib=$(awk '/^VmHWM:/ {print $2}' /proc/$PROXY/status) samples_kib=\"$samples\""
rss_during=$(max $samples)
kill -0 $PROXY 2>/dev/null || { echo "proxy exited during the run:"; tail -5 "$L/proxy.log"; }

awk -v bp="$(med ${p99[baseline]})" -v ap="$(med ${p99[attacked]})" \
    -v br="$(med ${rps[baseline]})" -v ar="$(med ${rps[attacked]})" \
    -v rb="$rss_before" -v rd="$rss_during" -v n=$((SLOW + IDLE)) \
  'BEGIN {printf "baseline_p99_us=%s attacked_p99_us=%s p99_ratio=%.2f baseline_rps=%s attacked_rps=%s rss_before_kib=%d rss_during_kib=%d rss_per_conn_bytes=%d\n",
          bp, ap, (bp > 0 ? ap / bp : 0), br, ar, rb, rd, (rd - rb) * 1024 / n}'
