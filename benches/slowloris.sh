#!/usr/bin/env bash
# Slowloris resistance: does p99 of a normal wrk run hold while 1,000 slowloris connections
# (a request head sent one byte a second, never finished) and 1,000 idle keep-alive
# connections (one request answered, then silence) sit on the proxy? And is RSS bounded?
#   wrk -t1 -c50 --> proxy :8096 (one worker, --header-timeout=60s) --> nginx :9001
#   benches/slowloris.py (SLOW + IDLE connections) --> proxy :8096, or --> sink :8097
# usage: benches/slowloris.sh [BINARY] [SECONDS]   (defaults: target/release/failover, 5)
# env: EXTRA='--flag=…' extra proxy args; SLOW=1000 IDLE=1000 ROUNDS=3;
#      SYNC=1: all slowloris bytes on the same tick each second (a burst) instead of spread out;
#      PAD=N: each slowloris head starts with ~N bytes of header lines (N < 32768: a full buffer)
# Needs: wrk, nginx-light, python3, curl. Loopback only; starts and stops what it uses.
#
# The attack tool shares this machine with wrk, nginx and the proxy, so it is measured too.
# Each of ROUNDS rounds runs three phases back to back, one wrk run (SECONDS) each:
#   baseline  no attack process at all;
#   attacked  slowloris.py started fresh against the proxy; once it prints `ready` and the
#             proxy holds a descriptor for every connection, 2 s with the attack alone
#             (proxy and tool CPU), then wrk; then the tool is stopped and the proxy's
#             descriptor count must drop back before the next phase;
#   control   the same tool, same SLOW/IDLE/SYNC/PAD, against a sink on :8097 that accepts
#             the connections and holds them without ever reading (the kernel buffers the
#             bytes; the sink sleeps in accept() the whole time), started fresh each round
#             so closed connections don't pile up in it. The sink never answers, so the tool
#             runs with SLOWLORIS_SINK=1: its idle connections only write their request.
#             (Accepting rather than leaving connections in the listen queue: the queue is
#             capped by net.core.somaxconn, and connections the tool closes would keep their
#             places in it until accepted.)
# Interleaving the phases cancels most of this VM's drift; control vs baseline is what the
# tool alone costs wrk, attacked vs control what the proxy's handling of the attack costs
# (including the kernel waking the proxy for each byte, which a sink that never waits for
# data doesn't cause). Each attack is followed by the next round's baseline, so there is no
# separate `after` round.
# Each attack lives a few seconds plus SECONDS, far below the proxy's --header-timeout=60s
# and --idle-timeout (60s), so no slowloris head or idle connection is closed during a
# phase unless SECONDS nears 60 (the `attack ... final` lines count any the proxy closed;
# the tool reopens them).
# Prints one line per wrk round (`round=… phase=…`, with the tool's CPU during wrk for the
# attack phases), one `attack` line per attack phase, the RSS samples, then one summary line:
#   baseline_p99_us=… attacked_p99_us=… control_p99_us=… p99_ratio=… tool_p99_ratio=…
#   proxy_p99_ratio=… baseline_rps=… attacked_rps=… control_rps=… rss_before_kib=…
#   rss_during_kib=… rss_per_conn_bytes=… tool_cpu_pct=… proxy_cpu_pct_attack=…
#   paired_p99_ratio=… paired_proxy_p99_ratio=… rss_per_conn_bytes_first=…
# p99/rps values are medians over ROUNDS; p99_ratio = attacked/baseline, tool_p99_ratio =
# control/baseline, proxy_p99_ratio = attacked/control (ratios of the medians); the paired_
# ratios are the medians of the per-round ratios attacked/baseline and attacked/control.
# rss_before is the proxy's RSS before the first attack, rss_during the largest sample while
# an attack is up (any round: RSS a round's attack leaves behind counts against later ones),
# rss_per_conn_bytes = (rss_during - rss_before) / (SLOW + IDLE); rss_per_conn_bytes_first is
# the same for the first attack alone (what a single attack costs, as one long attack did).
# tool_cpu_pct and proxy_cpu_pct_attack: % of one core (utime+stime) in the 2 s of attack
# alone before wrk, medians over the attacked phases.
set -u
BIN=$(readlink -f "${1:-target/release/failover}")
D=${2:-5}
R=${ROUNDS:-3}
SLOW=${SLOW:-1000}
IDLE=${IDLE:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=/work/shared/bench
PORT=8096
SINK_PORT=8097
URL=http://127.0.0.1:$PORT/small
W=/tmp/failover-bench            # upstream-nginx.conf keeps its pid and error log here
L=/tmp/failover-slowloris-bench  # this script's own logs
mkdir -p "$W/www" && rm -rf "$L" && mkdir -p "$L"
[ -x "$BIN" ] || { echo "no binary at $BIN (build it with: cargo build --release)" >&2; exit 1; }

# 2 descriptors per proxied connection in the proxy, 1 per connection in the tool and sink.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((2 * (SLOW + IDLE) + 1024)) ] || echo "warning: open-file limit $(ulimit -n) is low" >&2

pids=()
ATTACK=
SINK=
cleanup() {
  [ -n "$ATTACK" ] && kill "$ATTACK" 2>/dev/null
  [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nginx -c "$SHARED/upstream-nginx.conf" >/dev/null 2>&1 & pids+=($!)
# shellcheck disable=SC2086  # EXTRA is a list of flags
"$BIN" --primary=http://127.0.0.1:9001 --backup=http://127.0.0.1:9002 --listen=127.0.0.1:$PORT \
  --health-path=/healthz --workers=1 --header-timeout=60s ${EXTRA:-} >"$L/proxy.log" 2>&1 &
PROXY=$!; pids+=("$PROXY")
for _ in $(seq 50); do curl -s -o /dev/null -m1 "$URL" && break; sleep 0.1; done
curl -sf -o /dev/null -m1 "$URL" || { echo "proxy not answering on :$PORT"; cat "$L/proxy.log"; exit 1; }

# The control's sink: accepts and holds every connection, never reads, never writes.
SINK_PY='
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4096)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
'

rss() { awk '/^VmRSS:/ {print $2}' /proc/$PROXY/status 2>/dev/null || echo 0; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }  # utime + stime
TCK=$(getconf CLK_TCK)
pct() { awk -v t="$1" -v k="$TCK" -v s="$2" 'BEGIN {printf "%.1f", t * 100 / k / s}'; }  # ticks secs
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
med() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }

declare -A rps p99 pair
run_wrk() {  # phase round [attack tool pid]
  local out q l e c0 c1 c a0 a1 tool=
  c0=$(ticks $PROXY); [ -n "${3:-}" ] && a0=$(ticks "$3")
  out=$(wrk -t1 -c50 -d"${D}s" --latency "$URL" 2>&1)
  c1=$(ticks $PROXY); [ -n "${3:-}" ] && a1=$(ticks "$3") && tool=" tool_cpu_pct=$(pct $((a1 - a0)) "$D")"
  q=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  l=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /ms$/) {sub("ms","",v); v=v*1000} else if (v ~ /us$/) {sub("us","",v)} else if (v ~ /s$/) {sub("s","",v); v=v*1000000}; print v}')
  e=$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ')
  # proxy CPU per request: less sensitive to a busy machine than latency is
  c=$(awk -v t=$((c1 - c0)) -v k="$TCK" -v q="${q:-0}" -v d="$D" 'BEGIN {printf "%.2f", (q > 0 ? t * 1e6 / k / (q * d) : 0)}')
  echo "round=$2 phase=$1 rps=${q:-0} p99_us=${l:-NA} proxy_cpu_us_per_req=$c rss_kib=$(rss)$tool $e"
  rps[$1]+="${q:-0} "; p99[$1]+="${l:-0} "; pair[$1.$2]=${l:-0}
}

samples=
first=0
tool_cpu=
proxy_cpu=
attack_phase() {  # phase round: one fresh attack tool for one wrk run
  local phase=$1 r=$2 port=$PORT holder=$PROXY sink=0 need up c0 c1 a0 a1 base info
  base=$(fds $PROXY)
  if [ "$phase" = control ]; then
    : >"$L/sink.log"
    python3 -c "$SINK_PY" $SINK_PORT >"$L/sink.log" 2>&1 &
    SINK=$!
    for _ in $(seq 100); do grep -q '^listening' "$L/sink.log" && break; kill -0 $SINK 2>/dev/null || break; sleep 0.05; done
    grep -q '^listening' "$L/sink.log" || { echo "sink did not start on :$SINK_PORT: $(cat "$L/sink.log")"; exit 1; }
    port=$SINK_PORT holder=$SINK sink=1
  fi
  need=$(($(fds $holder) + SLOW + IDLE))
  : >"$L/attack.log"  # exists before the background child opens it (the wait loop greps it)
  SLOWLORIS_SINK=$sink python3 "$HERE/slowloris.py" 127.0.0.1 $port "$SLOW" "$IDLE" $((D + 120)) \
    "$([ "${SYNC:-0}" = 1 ] && echo sync)" "${PAD:-0}" >"$L/attack.log" 2>&1 &
  ATTACK=$!
  # Up = the tool saw every connection start (slow: first byte written; idle: answered, or
  # written for the sink) and the holder has a descriptor for each (a connect alone may
  # still sit in the listen queue).
  up=0
  for _ in $(seq 300); do
    kill -0 $ATTACK 2>/dev/null || break
    if grep -q '^ready' "$L/attack.log" && [ "$(fds $holder)" -ge "$need" ]; then up=1; break; fi
    sleep 0.1
  done
  [ $up = 1 ] || { echo "round=$r phase=$phase: attack connections not established: $(tail -2 "$L/attack.log") holder_fds=$(fds $holder) (want $need)"; exit 1; }
  c0=$(ticks $PROXY); a0=$(ticks $ATTACK); sleep 2; c1=$(ticks $PROXY); a1=$(ticks $ATTACK)
  info="ready_secs=$(sed -n 's/^ready .*secs=//p' "$L/attack.log") holder_fds=$(fds $holder)"
  info+=" attack_only: tool_cpu_pct=$(pct $((a1 - a0)) 2) proxy_cpu_pct=$(pct $((c1 - c0)) 2)"
  if [ "$phase" = attacked ]; then
    tool_cpu+="$(pct $((a1 - a0)) 2) "; proxy_cpu+="$(pct $((c1 - c0)) 2) "; samples+="$(rss) "
    [ "$r" = 1 ] && first=$(rss)
  fi
  run_wrk "$phase" "$r" $ATTACK
  if [ "$phase" = attacked ]; then samples+="$(rss) "; [ "$r" = 1 ] && first=$(max "$first $(rss)"); fi
  kill $ATTACK 2>/dev/null; wait $ATTACK 2>/dev/null; ATTACK=
  echo "attack round=$r phase=$phase $info $(grep '^final' "$L/attack.log" | tail -1)"
  if [ $sink = 1 ]; then
    kill $SINK 2>/dev/null; wait $SINK 2>/dev/null; SINK=
  else
    for _ in $(seq 100); do [ "$(fds $PROXY)" -le $((base + 10)) ] && break; sleep 0.1; done
    [ "$(fds $PROXY)" -le $((base + 10)) ] || echo "warning: proxy still holds $(fds $PROXY) descriptors (before the attack: $base)"
  fi
}

wrk -t1 -c50 -d1s "$URL" >/dev/null 2>&1  # warm-up: upstream pool, buffer pool, page cache
rss_before=
for r in $(seq "$R"); do
  run_wrk baseline "$r"
  [ -z "$rss_before" ] && rss_before=$(rss)
  attack_phase attacked "$r"
  attack_phase control "$r"
done
rss_released=$(rss)
echo "rss before_kib=$rss_before released_kib=$rss_released hwm_kib=$(awk '/^VmHWM:/ {print $2}' /proc/$PROXY/status) samples_kib=\"${samples% }\""
rss_during=$(max "$samples")
kill -0 $PROXY 2>/dev/null || { echo "proxy exited during the run:"; tail -5 "$L/proxy.log"; }

ratios() {  # numerator denominator: per-round ratios
  for r in $(seq "$R"); do awk -v a="${pair[$1.$r]}" -v b="${pair[$2.$r]}" 'BEGIN {if (b > 0) printf "%.4f ", a / b}'; done
}
awk -v bp="$(med "${p99[baseline]}")" -v ap="$(med "${p99[attacked]}")" -v cp="$(med "${p99[control]}")" \
    -v br="$(med "${rps[baseline]}")" -v ar="$(med "${rps[attacked]}")" -v cr="$(med "${rps[control]}")" \
    -v rb="$rss_before" -v rd="$rss_during" -v rf="$first" -v n=$((SLOW + IDLE)) \
    -v tc="$(med "$tool_cpu")" -v pc="$(med "$proxy_cpu")" \
    -v pr="$(med "$(ratios attacked baseline)")" -v ppr="$(med "$(ratios attacked control)")" \
  'BEGIN {printf "baseline_p99_us=%s attacked_p99_us=%s control_p99_us=%s p99_ratio=%.2f tool_p99_ratio=%.2f proxy_p99_ratio=%.2f baseline_rps=%s attacked_rps=%s control_rps=%s rss_before_kib=%d rss_during_kib=%d rss_per_conn_bytes=%d tool_cpu_pct=%s proxy_cpu_pct_attack=%s paired_p99_ratio=%.2f paired_proxy_p99_ratio=%.2f rss_per_conn_bytes_first=%d\n",
          bp, ap, cp, (bp > 0 ? ap / bp : 0), (bp > 0 ? cp / bp : 0), (cp > 0 ? ap / cp : 0),
          br, ar, cr, rb, rd, (rd - rb) * 1024 / n, tc, pc, pr, ppr, (rf - rb) * 1024 / n}'
