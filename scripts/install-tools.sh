#!/usr/bin/env bash
# Installs the external tools the test suite drives for real. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
for installer in scripts/install-helm.sh scripts/install-prometheus.sh; do
  if [ -f "$installer" ]; then bash "$installer"; fi
done
