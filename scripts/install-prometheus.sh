#!/usr/bin/env bash
# Puts prometheus and promtool into .tools/bin, which `make test` puts first on PATH.
# Never changes the system and never needs root: every file it writes is under .tools/.
#
#   1. Both tools already on PATH (outside .tools/bin): link them into .tools/bin.
#   2. Otherwise, or with WIDGET_TOOLS_LOCAL=1 (to use this path on a machine that has them):
#      `apt-get update` and `apt-get download prometheus` (the Debian package) with apt's
#      package lists and cache in .tools/apt, removed afterwards (the system's sources, keys
#      and apt.conf are only read; no lock files), `dpkg -x` the .deb into .tools/prometheus
#      (no maintainer scripts run: no service, no system user), and link the two binaries.
#
# Idempotent: a no-op when .tools/bin already holds working binaries of the wanted kind.
# Each result is checked by running `promtool --version` and `prometheus --version`.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/.tools"
BIN="$TOOLS/bin"
LOCAL="$TOOLS/prometheus"
APT_DIR="$TOOLS/apt"
FORCE_LOCAL="${WIDGET_TOOLS_LOCAL:-0}"

works() {  # both linked tools run and say who they are
  "$BIN/promtool" --version >/dev/null 2>&1 && "$BIN/prometheus" --version >/dev/null 2>&1
}

is_local() {  # the links point into .tools/prometheus
  [ "$(readlink -f "$BIN/promtool")" = "$(readlink -f "$LOCAL/usr/bin/promtool")" ]
}

on_path() {  # the tool's path on PATH, skipping .tools/bin (linking it to itself would loop)
  local dir
  local IFS=:
  for dir in $PATH; do
    [ -n "$dir" ] || continue
    [ "$(readlink -f "$dir")" != "$(readlink -f "$BIN")" ] || continue
    if [ -x "$dir/$1" ] && [ ! -d "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  return 1
}

report() {
  echo "prometheus $1: $("$BIN/promtool" --version 2>&1 | head -n1)"
}

mkdir -p "$BIN"

if [ -e "$BIN/promtool" ] && works && { [ "$FORCE_LOCAL" != 1 ] || is_local; }; then
  report "already in .tools/bin"
  exit 0
fi

if [ "$FORCE_LOCAL" != 1 ] && promtool="$(on_path promtool)" && prometheus="$(on_path prometheus)"; then
  ln -sfn "$promtool" "$BIN/promtool"
  ln -sfn "$prometheus" "$BIN/prometheus"
  works || { echo "install-prometheus.sh: $promtool or $prometheus does not run" >&2; exit 1; }
  report "from PATH"
  exit 0
fi

for needed in apt-get dpkg; do
  command -v "$needed" >/dev/null || {
    echo "install-prometheus.sh: $needed not found; put prometheus and promtool on PATH yourself" >&2
    exit 1
  }
done

# apt with private state: package lists and cache under .tools/apt; no lock files (the
# system's need root); downloads run as this user (as root apt hands them to _apt, who cannot
# write here); no update hooks (the system's refresh caches under /var). Sources, keys and
# the rest of apt's configuration (proxies, mirrors) are the system's, only read.
trap 'rm -rf "$APT_DIR" "$TOOLS"/download.*' EXIT
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
cat >"$APT_DIR/apt.conf" <<CONF
Dir::State::Lists "$APT_DIR/lists";
Dir::Cache "$APT_DIR/cache";
Dir::Cache::pkgcache "$APT_DIR/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "$APT_DIR/cache/srcpkgcache.bin";
Debug::NoLocking "true";
APT::Sandbox::User "$(id -un)";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
CONF
apt_opts=(-c "$APT_DIR/apt.conf")
work="$(mktemp -d "$TOOLS/download.XXXXXX")"
export TMPDIR="$work"  # apt and gpgv temp files stay here too

# Private lists start empty and are removed afterwards (90 MB), so every install reads
# fresh ones: neither missing nor stale system lists matter.
apt-get -qq "${apt_opts[@]}" update
(cd "$work" && apt-get -q "${apt_opts[@]}" download prometheus)

deb="$(echo "$work"/prometheus_*.deb)"
[ -f "$deb" ] || { echo "install-prometheus.sh: apt-get download gave no .deb" >&2; exit 1; }
rm -rf "$LOCAL"
dpkg -x "$deb" "$LOCAL"
ln -sfn "$LOCAL/usr/bin/promtool" "$BIN/promtool"
ln -sfn "$LOCAL/usr/bin/prometheus" "$BIN/prometheus"
works || { echo "install-prometheus.sh: the unpacked $(basename "$deb") does not run" >&2; exit 1; }
report "unpacked from $(basename "$deb") into .tools/prometheus"
