#!/usr/bin/env bash
# The README's performance table (failover next to HAProxy and nginx), measured on this
# machine, printed as Markdown. It only runs the two existing benchmarks, one after another,
# and reads their median, ratio and idle lines:
#   1. benches/compare.sh /small 50 SECONDS ROUNDS, with IDLE=N (memory per idle connection)
#   2. benches/compare.sh /64k   50 SECONDS ROUNDS
#   3. benches/tls_compare.sh BIN SECONDS ROUNDS /small   (TLS listener and TLS upstream)
# Each step's full output (per-round lines included) is saved in a temporary directory,
# named on stderr and kept; progress goes to stderr, the table alone to stdout:
#   benches/table.sh 8 3 >perf.md
#
# usage: benches/table.sh [SECONDS] [ROUNDS]   (from any directory)
#   SECONDS  length of one wrk run                          default 8 (as in the README)
#   ROUNDS   number of interleaved rounds                   default 3
#   BIN=...  the failover binary (default target/release/failover, built if missing)
#   IDLE=N   idle keep-alive connections for the memory row default 5000; 0 skips it
# With the defaults it takes about 5 minutes (3 x 4 targets x 3 rounds x 8 s, the TLS step
# and warm-ups). Needs what the two scripts need: wrk, nginx, haproxy, openssl, curl,
# python3 (apt-get install -y wrk nginx-light haproxy openssl curl python3).
# Ctrl-C stops the running step, which stops everything it started.
#
# Compare figures only within one run: on a machine where wrk, the upstream and the proxy
# share the cores, absolute req/s move from run to run; the ratios of one run and the CPU
# time per request are what carry over.
set -u

SECS=${1:-8}
ROUNDS=${2:-3}
IDLE=${IDLE:-5000}
CONNS=50 # as in the README

die() { echo "table.sh: $*" >&2; exit 1; }

for n in "$SECS" "$ROUNDS"; do
  case $n in '' | *[!0-9]* | 0) die "SECONDS and ROUNDS must be positive integers (usage: benches/table.sh [SECONDS] [ROUNDS])" ;; esac
done
case $IDLE in '' | *[!0-9]*) die "IDLE must be a number of connections (0 skips the idle row)" ;; esac
for tool in awk date nproc ss tee; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done

# Work from the repository root, whatever the caller's directory; a BIN given relative to
# the caller's directory still works (both scripts then get an absolute path).
cd "$(dirname "$0")/.." || die "cannot find the repository root"
if [ -n "${BIN:-}" ]; then
  case $BIN in /*) ;; *) BIN=$OLDPWD/$BIN ;; esac
  [ -x "$BIN" ] || die "BIN=$BIN is not an executable"
else
  BIN=$PWD/target/release/failover
  if [ ! -x "$BIN" ]; then
    echo "table.sh: $BIN is missing, running cargo build --release" >&2
    cargo build --release || die "cargo build --release failed"
  fi
fi
export BIN
# A before/after binary is not part of this table: make sure neither script adds one.
unset BASE BASE_FLAGS

# Fail now rather than minutes later: compare.sh refuses busy ports only when its turn
# comes, and tls_compare.sh does not look at all.
taken=""
for port in 8080 8081 8082 8083 8444 8445 8446 8447 8448 9001 9002 9443; do
  if ss -ltn | awk -v p=":$port" 'NR > 1 && substr($4, length($4) - length(p) + 1) == p {found = 1} END {exit !found}'; then
    taken="$taken $port"
  fi
done
[ -z "$taken" ] || die "something already listens on port(s)$taken; stop it first (ss -ltnp shows what)"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/failover-table.XXXXXX") || die "mktemp failed"
echo "table.sh: each step's full output goes to $OUT (kept)" >&2

# run STEP_NAME FILE COMMAND...: the command's output to FILE (and to stderr, as progress);
# stops the whole run, naming the step, when it fails or prints no median line.
run() {
  local step=$1 file=$2 status
  shift 2
  echo "table.sh: step $step: $*" >&2
  "$@" 2>&1 | tee "$file" >&2
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || die "step $step failed (exit status $status); its output: $file"
  grep -q '^median ' "$file" || die "step $step printed no median line; its output: $file"
}

SMALL=$OUT/compare-small.txt
BIG=$OUT/compare-64k.txt
TLS=$OUT/tls-small.txt
if [ "$IDLE" -gt 0 ]; then
  run "1/3 (compare.sh /small, IDLE=$IDLE)" "$SMALL" env IDLE="$IDLE" bash benches/compare.sh /small "$CONNS" "$SECS" "$ROUNDS"
else
  run "1/3 (compare.sh /small)" "$SMALL" env -u IDLE bash benches/compare.sh /small "$CONNS" "$SECS" "$ROUNDS"
fi
run "2/3 (compare.sh /64k)" "$BIG" env -u IDLE bash benches/compare.sh /64k "$CONNS" "$SECS" "$ROUNDS"
run "3/3 (tls_compare.sh /small)" "$TLS" bash benches/tls_compare.sh "$BIN" "$SECS" "$ROUNDS" /small

# get FILE KIND TARGET KEY: the value of KEY= on the last line of FILE whose first word is
# KIND (median, idle) and which has target=TARGET; KIND and TARGET empty: any line. NA if none.
get() {
  awk -v kind="$2" -v target="$3" -v key="$4" '
    kind == "" || $1 == kind {
      hit = (target == ""); v = ""
      for (i = 1; i <= NF; i++) {
        eq = index($i, "=")
        if (!eq) continue
        k = substr($i, 1, eq - 1); val = substr($i, eq + 1)
        if (k == "target" && val == target) hit = 1
        if (k == key) v = val
      }
      if (hit && v != "") found = v
    }
    END { print (found == "" ? "NA" : found) }' "$1"
}

# fmt KIND VALUE: a cell; NA unless VALUE is a number.
fmt() {
  awk -v kind="$1" -v v="$2" 'BEGIN {
    if (v !~ /^[0-9]+(\.[0-9]+)?$/) { print "NA"; exit }
    if (kind == "rps") printf "%.0f", v
    else if (kind == "p99") printf "%.2f ms", v / 1000
    else if (kind == "cpu") printf "%.1f µs", v
    else if (kind == "bytes") printf "%.0f B", v
    else if (kind == "ratio") printf "%.2f×", v
    else print v }'
}

# cell FILE KIND TARGET KEY FORMAT
cell() { fmt "$5" "$(get "$1" "$2" "$3" "$4")"; }

# rows_compare FILE LABEL: req/s, p99 and CPU per request rows of one compare.sh run.
rows_compare() {
  local f=$1 label=$2 t
  printf '| %s, req/s | %s | %s | %s (%s HAProxy, %s nginx) |\n' "$label" \
    "$(cell "$f" median haproxy rps rps)" "$(cell "$f" median nginx rps rps)" \
    "$(cell "$f" median failover rps rps)" \
    "$(cell "$f" "" "" ratio_vs_haproxy ratio)" "$(cell "$f" "" "" ratio_vs_nginx ratio)"
  printf '| %s, p99 latency |' "$label"
  for t in haproxy nginx failover; do printf ' %s |' "$(cell "$f" median "$t" p99_us p99)"; done
  printf '\n| %s, proxy CPU per request (user + system) |' "$label"
  for t in haproxy nginx failover; do printf ' %s |' "$(cell "$f" median "$t" cpu_us_per_req cpu)"; done
  printf '\n'
}

# rows_tls WHAT LABEL: the same three rows for TLS listener or upstream (no nginx there).
rows_tls() {
  local w=$1 label=$2
  printf '| %s, req/s | %s | — | %s (%s HAProxy) |\n' "$label" \
    "$(cell "$TLS" median "haproxy_$w" rps rps)" "$(cell "$TLS" median "failover_$w" rps rps)" \
    "$(cell "$TLS" "" "" "ratio_${w}_vs_haproxy" ratio)"
  printf '| %s, p99 latency | %s | — | %s |\n' "$label" \
    "$(cell "$TLS" median "haproxy_$w" p99_us p99)" "$(cell "$TLS" median "failover_$w" p99_us p99)"
  printf '| %s, proxy CPU per request (user + system) | %s | — | %s |\n' "$label" \
    "$(cell "$TLS" median "haproxy_$w" cpu_us_per_req cpu)" \
    "$(cell "$TLS" median "failover_$w" cpu_us_per_req cpu)"
}

idle_cell() {
  if [ "$IDLE" -gt 0 ]; then cell "$SMALL" idle "$1" bytes_per_conn bytes; else echo NA; fi
}

echo "table.sh: done; outputs in $OUT" >&2
echo '| | HAProxy | nginx | failover |'
echo '|---|---|---|---|'
rows_compare "$SMALL" "\`/small\` (14-byte body)"
rows_compare "$BIG" "\`/64k\`"
printf "| memory per idle keep-alive connection (\`IDLE=%s\`) | %s | %s | %s |\n" "$IDLE" \
  "$(idle_cell haproxy)" "$(idle_cell nginx)" "$(idle_cell failover)"
rows_tls listener "TLS listener, \`/small\`"
rows_tls upstream "TLS upstream, \`/small\`"
echo
printf "%s, %s CPUs (nproc), wrk -t1 -c%s, medians of %s round(s) of %s s; direct to the upstream nginx (no proxy): \`/small\` %s req/s, \`/64k\` %s req/s. Only ratios from one run compare; CPU time per request is the figure that transfers to other hardware.\n" \
  "$(date -u +%F)" "$(nproc)" "$CONNS" "$ROUNDS" "$SECS" \
  "$(cell "$SMALL" median direct rps rps)" "$(cell "$BIG" median direct rps rps)"
