"""Peer for the benchmark: nfstream's flow meter over the same file, at the setting issue 6 names.

    python3 bench/nfstream_flows.py FILE

`NFStreamer(n_dissections=0, statistical_analysis=False)`: no nDPI dissection, no per-flow statistics,
its fastest setting (meters as nfstream chooses; n_meters=1 measured the same on 2 cores). nfstream
pulls in its own numpy and pandas, so `bench/setup_peers.sh` installs it into a venv of its own
(bench/out/peers); bench_read.py uses that interpreter for this row.
"""

from __future__ import annotations

import sys

from nfstream import NFStreamer


def main() -> int:
    flows = sum(1 for _ in NFStreamer(source=sys.argv[1], n_dissections=0, statistical_analysis=False))
    print(f"{flows} flows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
