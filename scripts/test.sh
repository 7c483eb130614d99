#!/usr/bin/env bash
# The whole test suite: unit, property, contract and integration tests (real js-ipfs daemons,
# the real pinhive binary, real HTTP). This is the command the README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The integration tests drive the real binary; build it first.
cargo build --locked -p pinhive
cargo test --locked --workspace "$@"
