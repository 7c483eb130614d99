#!/usr/bin/env bash
# Installs tansu 0.6.0 (a Kafka-protocol broker written in Rust, from crates.io; the `dynostore`
# feature provides the memory:// storage engine) into /opt/tansu unless it is already there.
# A cold build takes 12–25 minutes on 2 cores: scripts/test.sh runs this in the background
# while the workspace compiles.
set -euo pipefail
root=${TANSU_ROOT:-/opt/tansu}
# One build at a time: a second caller waits for the first and then finds tansu installed.
mkdir -p "$root"
exec 9>"$root/.install.lock"
flock 9
if command -v tansu >/dev/null 2>&1 || [ -x "$root/bin/tansu" ]; then
  echo "install-tansu: present"
  exit 0
fi
echo "install-tansu: building tansu 0.6.0 (cold: 12-25 min)"
cargo install tansu --version 0.6.0 --features dynostore --root "$root" --quiet
echo "install-tansu: done"
