#!/usr/bin/env bash
# test.sh: the one test command. Format, lints, unit + integration tests, then the
# end-to-end verify.sh. Tests build with the `ci` profile (release optimisations without fat
# LTO, see Cargo.toml). Stops at the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

run() {
  echo "+ $*"
  "$@"
}

run cargo fmt --check
run cargo clippy --all-targets -- -D warnings
run cargo test --profile ci
run env FAILOVER_PROFILE=ci ./verify.sh
echo "test.sh: all checks passed"
