#!/usr/bin/env bash
# One command on a fresh machine: set up (Debian tools, .venv), then run the whole test suite.
# Tests that need root (network namespaces, AF_PACKET) skip with a reason when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
