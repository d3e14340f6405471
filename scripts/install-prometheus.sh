#!/usr/bin/env bash
# Installs prometheus and promtool (Debian package `prometheus`) and links both into .tools/bin,
# which `make test` puts first on PATH. Idempotent: a no-op when both are already there.
#
# The package's postinst may try to start the prometheus service; we do not want a daemon in a
# test machine or a container, so a policy-rc.d that refuses service starts is put in place for
# the install (only when none exists) and removed again.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=".tools/bin"
mkdir -p "$BIN"

link_tools() {
  for tool in prometheus promtool; do
    ln -sf "$(command -v "$tool")" "$BIN/$tool"
  done
}

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  link_tools
  echo "prometheus already installed: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-prometheus.sh: needs root for apt-get (or install the Debian package prometheus)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# apt-get update only when the package lists do not know the package yet (a fresh machine).
if ! apt-cache show prometheus >/dev/null 2>&1; then
  apt-get update -qq
fi

made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  made_policy=1
fi
trap 'if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
# Retry once after an update: lists present but stale give 404s on a machine kept for a while.
if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

link_tools
echo "prometheus installed: $(promtool --version 2>&1 | head -n1)"
