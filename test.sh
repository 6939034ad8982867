#!/usr/bin/env bash
# test.sh: the one test command. Format, lints, then the unit + integration tests and the
# end-to-end verify.sh side by side, then the status page in headless Chromium. Tests build
# with the `ci` profile (release optimisations without fat LTO, see Cargo.toml). Fails if any
# step fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Checked first, so a missing browser fails in seconds rather than after the build.
if ! command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
  echo "test.sh: FAILED: chromium is not installed; the status page test needs it:" \
    "apt-get install -y --no-install-recommends chromium (.ci/run installs it)" >&2
  exit 1
fi

run() {
  echo "+ $*"
  "$@"
}

run cargo fmt --check
run cargo clippy --all-targets -- -D warnings
run cargo test --profile ci --no-run
run tests/deploy/validate.sh target/ci/failover
# The integration tests and verify.sh mostly wait on sockets and timers: run them side by
# side (verify.sh reuses the binary just built), then report both.
mkdir -p target
echo "+ env FAILOVER_PROFILE=ci FAILOVER_BUILT=1 ./verify.sh > target/verify.log (in the background)"
FAILOVER_PROFILE=ci FAILOVER_BUILT=1 ./verify.sh >target/verify.log 2>&1 &
verify=$!
tests=0
run cargo test --profile ci || tests=$?
verified=0
wait "$verify" || verified=$?
echo "+ ./verify.sh (its output)"
cat target/verify.log
# Alone at the end, so the browser does not compete with the tests above for the cores.
browser=0
run env FAILOVER_BIN=target/ci/failover python3 tests/browser/status_page.py || browser=$?
if ((tests != 0 || verified != 0 || browser != 0)); then
  echo "test.sh: FAILED (cargo test: exit $tests, verify.sh: exit $verified, status page: exit $browser)" >&2
  exit 1
fi
echo "test.sh: all checks passed"
