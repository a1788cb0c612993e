#!/usr/bin/env bash
# Sets everything up, then runs redis-server on 127.0.0.1 with the Gears module loaded.
# Usage: scripts/run.sh [port]   (default 6379)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PORT="${1:-6379}"
echo "==> redis-server on 127.0.0.1:$PORT with Gears"
exec redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --loadmodule "$PWD/target/release/libgears.so" PythonVenv "$PWD/.venv"
