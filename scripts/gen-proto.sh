#!/usr/bin/env bash
# Regenerates the Python stubs (messages, gRPC, and their .pyi) from plugin_worker/_proto/*.proto
# and dra_driver/_proto/*.proto. Needs the dev extras: pip install -e '.[dev]'.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. \
  --mypy_out=. --mypy_grpc_out=. \
  plugin_worker/_proto/*.proto dra_driver/_proto/*.proto
