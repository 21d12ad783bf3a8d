"""Peer for the benchmark, used only when nfstream is installed: its flow meter over the same file.

    python3 bench/nfstream_flows.py FILE
"""

from __future__ import annotations

import sys

from nfstream import NFStreamer


def main() -> int:
    # statistics off and one meter: the closest to what the other tools compute
    flows = sum(1 for _ in NFStreamer(source=sys.argv[1], statistical_analysis=False, n_meters=1))
    print(f"{flows} flows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
