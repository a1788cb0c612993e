#!/usr/bin/env bash
# Sets everything up, then runs every test: the crates' unit tests and the integration tests
# against real redis-server processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PYO3_PYTHON="$(.venv/bin/python -c 'import sys, os; print(os.path.realpath(sys.executable))')"
echo "==> cargo test"
cargo test --release --workspace
echo "==> pytest tests/"
.venv/bin/python -m pytest -q tests/
