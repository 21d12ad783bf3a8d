#!/usr/bin/env bash
# Sets up everything pktscope needs on a fresh Debian 12 machine (Python 3.11): the Debian tools the
# tests use as oracles (tcpdump, tshark), as test rigs (iproute2) and as a flow collector (nfdump's
# nfcapd), and a virtual environment in .venv with pktscope installed. Safe to run again.
# Usage: bash scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[ "${1:-}" = "--test" ] && want_tests=1

apt_packages=(python3-venv)
if [ "$want_tests" = 1 ]; then
  apt_packages+=(tcpdump tshark iproute2 procps bpftool nfdump tmux)
fi
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (install them as root): ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv 2>/dev/null || { "$python" -m pip install -q virtualenv && "$python" -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$want_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q .
fi
