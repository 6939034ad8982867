#!/usr/bin/env bash
# test.sh: the one test command. Format, lints, unit + integration tests, then the
# end-to-end verify.sh against the release binary. Stops at the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

run() {
  echo "+ $*"
  "$@"
}

run cargo fmt --check
run cargo clippy --all-targets -- -D warnings
run cargo test --release
run ./verify.sh
echo "test.sh: all checks passed"
