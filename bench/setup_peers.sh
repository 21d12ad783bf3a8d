#!/usr/bin/env bash
# Installs the benchmark's peers: tshark and tcpdump from Debian, and nfstream from PyPI into a venv of
# its own (bench/out/peers), kept apart from pktscope's .venv because it brings its own numpy and pandas.
# Usage: bash bench/setup_peers.sh      (as root for the Debian packages; safe to run again)
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in tshark tcpdump time netsniff-ng iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
mkdir -p out
[ -x out/peers/bin/python ] || python3 -m venv out/peers
out/peers/bin/python -m pip install -q nfstream dpkt
out/peers/bin/python -c "import nfstream; print('nfstream', nfstream.__version__, 'in bench/out/peers')"
