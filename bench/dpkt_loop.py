"""Baseline for the benchmark: the plain dpkt loop most Python tools start from.

Reads a pcap with dpkt.pcap.Reader, decodes Ethernet (802.1Q included) → IPv4/IPv6 → TCP/UDP and counts
frames per 5-tuple in a dict. Run as a child of bench_read.py so it is timed like the other tools.

    python3 bench/dpkt_loop.py FILE
"""

from __future__ import annotations

import sys
from collections import Counter

import dpkt


def count_five_tuples(path: str) -> tuple[int, Counter]:
    """Frames read and a count of frames per (src, dst, proto, sport, dport)."""
    flows: Counter = Counter()
    frames = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            frames += 1
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except dpkt.UnpackError:
                continue
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            l4 = ip.data
            proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
            if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                flows[(ip.src, ip.dst, proto, l4.sport, l4.dport)] += 1
            else:
                flows[(ip.src, ip.dst, proto, 0, 0)] += 1
    return frames, flows


def main() -> int:
    frames, flows = count_five_tuples(sys.argv[1])
    print(f"{frames} frames, {len(flows)} 5-tuples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
