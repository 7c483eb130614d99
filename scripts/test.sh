#!/usr/bin/env bash
# The whole test suite: unit, property, contract and integration tests (real js-ipfs daemons,
# a real Kafka-protocol broker, real Prometheus, the real pinhive binary, real HTTP). This is
# the command the README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
# tansu takes the longest to build from scratch: start it first, in the background.
bash scripts/install-tansu.sh > target/install-tansu.log 2>&1 &
tansu_pid=$!
PINHIVE_SETUP_SKIP_TANSU=1 bash scripts/setup.sh
# The integration tests drive the real binary; build it first.
cargo build --locked -p pinhive
if ! wait "$tansu_pid"; then
  echo "installing tansu failed:" >&2
  tail -50 target/install-tansu.log >&2
  exit 1
fi
cat target/install-tansu.log
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$out" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
passed=$(grep -Eo '[0-9]+ passed' "$out" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$out" | awk '{s+=$1} END {print s+0}')
echo "summary: ${passed} passed, ${failed} failed"
exit "$status"
