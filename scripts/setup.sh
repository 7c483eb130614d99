#!/usr/bin/env bash
# Installs what pinhive's test suite needs on a fresh Debian machine; skips what is present.
# Used by developers and by CI alike (.ci/run calls scripts/test.sh, which calls this).
set -euo pipefail
cd "$(dirname "$0")/.."

# js-ipfs: an IPFS daemon serving the Kubo RPC API (no Kubo binary is installable here).
# `npm ci` installs exactly the committed lock file, so the transitive tree cannot drift.
ipfs_dir=integration-tests/ipfs
if [ ! -x "$ipfs_dir/node_modules/.bin/jsipfs" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
  fi
  echo "setup: installing js-ipfs (npm ci, a few minutes)"
  (cd "$ipfs_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
fi
# Prometheus 2.42 (Debian): the observability tests scrape a live pinhive with it and check the
# rules, config and dashboards in infra/ with promtool.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing prometheus (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "setup: $(prometheus --version 2>&1 | head -1)"
# kubernetes-validate (PyPI): the deploy test validates infra/k8s/ against the Kubernetes JSON
# schemas it ships (offline).
if ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
  echo "setup: installing kubernetes-validate (pip)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
echo "setup: kubernetes-validate $(python3 -m kubernetes_validate --version 2>&1)"
# Headless Chromium and chromedriver (Debian): the operator console's browser test drives the
# page with them (integration-tests/tests/dashboard_browser.rs).
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium and chromium-driver (apt, about 1.5 min)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
echo "setup: $(chromium --version 2>/dev/null | head -1)"
# tansu (Kafka-protocol broker) for the Kafka-mode tests; scripts/test.sh starts this in the
# background itself, so only run it here when setup.sh is used on its own.
if [ -z "${PINHIVE_SETUP_SKIP_TANSU:-}" ]; then
  bash "$(dirname "$0")/install-tansu.sh"
fi
echo "setup: js-ipfs $(cd "$ipfs_dir" && node -e 'console.log(JSON.parse(require("fs").readFileSync("node_modules/ipfs/package.json")).version)')"
