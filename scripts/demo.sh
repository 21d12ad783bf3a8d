#!/usr/bin/env bash
# One command on a fresh machine: set up, then analyse the bundled sample capture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pktscope read samples/mixed.pcap "$@"
