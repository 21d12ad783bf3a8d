"""Generate a large synthetic capture for the offline benchmark, fast.

Every header field is computed for all frames at once with numpy and written as one buffer per chunk,
so a million frames take seconds; building dpkt objects per packet would take minutes.

The traffic: about 20k bidirectional flows whose sizes follow a Zipf-like law (a few elephants, many
mice), 90% IPv4 / 10% IPv6, some flows 802.1Q-tagged, 70% TCP / 25% UDP / 5% ICMP, wire lengths
60..1514 bytes, snaplen 128 (caplen = min(wirelen, 128)), timestamps rising over a few minutes.
TCP flows open with SYN / SYN-ACK, end with FIN and carry consistent sequence and ACK numbers, so
tshark's TCP analysis sees ordinary connections.

    python3 bench/gen_capture.py OUT.pcap [--frames N] [--flows F] [--seed S]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import numpy as np

SNAPLEN = 128
PCAP_MAGIC_US = 0xA1B2C3D4  # https://www.tcpdump.org/manpages/pcap-savefile.5.html
LINKTYPE_ETHERNET = 1
T0_S = 1_700_000_000
DURATION_S = 180.0
CHUNK = 1 << 17  # frames per write: bounds memory (~150 bytes per frame in flight)
REC_HDR = 16  # pcap record header: ts_sec, ts_usec, caplen, wirelen

ETH_IP, ETH_IP6, ETH_8021Q = 0x0800, 0x86DD, 0x8100
PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_ICMPV6 = 6, 17, 1, 58
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10
# kinds of flow, drawn with the shares the benchmark asks for
KIND_TCP, KIND_UDP, KIND_ICMP = 0, 1, 2
KIND_SHARES = (0.70, 0.25, 0.05)
IPV6_SHARE = 0.10
VLAN_SHARE = 0.08
# server ports whose dissectors accept zero-filled payloads quietly: a flood of "malformed" expert
# entries (MySQL on 3306, VXLAN on 4789) would make tshark's numbers about its error path
TCP_SERVER_PORTS = np.array([80, 443, 443, 443, 22, 25, 993, 8443, 5432, 8080], dtype=np.uint16)
UDP_SERVER_PORTS = np.array([53, 53, 53, 123, 443, 514, 1194, 5353, 5060, 51820], dtype=np.uint16)
UDP_MIN_WIRELEN = 120  # room for a 48-byte NTP message behind VLAN + IPv6 + UDP headers


def _layout(vlan: bool, v6: bool, kind: int) -> np.dtype:
    """The packed header of one kind of frame, as a numpy structured dtype in wire byte order."""
    fields: list[tuple] = [("dst_mac", ">u2", (3,)), ("src_mac", ">u2", (3,))]
    if vlan:
        fields += [("tpid", ">u2"), ("tci", ">u2")]
    fields += [("ethertype", ">u2")]
    if v6:
        fields += [("vtcfl", ">u4"), ("plen", ">u2"), ("nxt", "u1"), ("hlim", "u1"),
                   ("src_ip", ">u8", (2,)), ("dst_ip", ">u8", (2,))]
    else:
        fields += [("vihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
                   ("ttl", "u1"), ("proto", "u1"), ("ip_sum", ">u2"), ("src_ip", ">u4"), ("dst_ip", ">u4")]
    if kind == KIND_TCP:
        fields += [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off", "u1"),
                   ("flags", "u1"), ("win", ">u2"), ("l4_sum", ">u2"), ("urg", ">u2")]
    elif kind == KIND_UDP:
        fields += [("sport", ">u2"), ("dport", ">u2"), ("ulen", ">u2"), ("l4_sum", ">u2")]
    else:
        fields += [("icmp_type", "u1"), ("icmp_code", "u1"), ("l4_sum", ">u2"), ("icmp_id", ">u2"),
                   ("icmp_seq", ">u2")]
    return np.dtype(fields)


def _zipf_weights(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _assign_by_share(weight: np.ndarray, shares: tuple[float, ...]) -> np.ndarray:
    """A class per flow such that the classes' share of *frames* matches shares.

    Drawing each flow's class at random gets the share of flows right but not the share of frames:
    one elephant flow carries ~10% of a Zipf mix. So hand flows out heaviest first, each to the class
    furthest below its target.
    """
    target = np.asarray(shares)
    got = np.zeros(len(shares))
    out = np.empty(len(weight), dtype=np.int64)
    total = 0.0
    for i in np.argsort(-weight, kind="stable"):
        total += weight[i]
        c = int(np.argmax(target * total - got))
        got[c] += weight[i]
        out[i] = c
    return out


def _group_exclusive_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Sum of values before each row within its group (rows sorted by group; group_start[i] = first row)."""
    c = np.cumsum(values) - values
    return c - c[group_start]


def build_frames(n_frames: int, n_flows: int, seed: int) -> dict[str, np.ndarray]:
    """Per-frame fields (flow id, direction, lengths, TCP state, times) for the whole capture."""
    rng = np.random.default_rng(seed)
    n_flows = max(1, min(n_flows, n_frames))
    perm = rng.permutation(n_flows)  # flow ids in random order of Zipf rank
    flow = perm[rng.choice(n_flows, size=n_frames, p=_zipf_weights(n_flows))]
    weight = np.empty(n_flows)
    weight[perm] = _zipf_weights(n_flows)
    kind_of_flow = _assign_by_share(weight, KIND_SHARES).astype(np.int8)
    v6_of_flow = _assign_by_share(weight, (1 - IPV6_SHARE, IPV6_SHARE)).astype(bool)
    vlan_of_flow = _assign_by_share(weight, (1 - VLAN_SHARE, VLAN_SHARE)).astype(bool)

    kind = kind_of_flow[flow]
    v6 = v6_of_flow[flow]
    vlan = vlan_of_flow[flow]
    direction = (rng.random(n_frames) < 0.45).astype(np.int8)  # replies a little less often than requests

    # first and last frame of each flow (frames are in time order, so a stable sort keeps it)
    order = np.argsort(flow, kind="stable")
    fs = flow[order]
    starts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
    ends = np.r_[starts[1:] - 1, len(fs) - 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n_frames]))  # per sorted row: its flow's first row
    pos_in_flow = np.arange(n_frames) - group_start
    first = np.zeros(n_frames, dtype=bool)
    last = np.zeros(n_frames, dtype=bool)
    second = np.zeros(n_frames, dtype=bool)
    first[order[starts]] = True
    last[order[ends]] = True
    second[order[pos_in_flow == 1]] = True
    is_tcp = kind == KIND_TCP
    direction[first] = 0  # the client speaks first
    direction[second & is_tcp] = 1  # the SYN-ACK

    # wire length: a mix of ACK-sized, mid-sized and MTU-sized frames, like a real uplink
    pick = rng.random(n_frames)
    wirelen = np.where(pick < 0.40, rng.integers(60, 100, n_frames),
                       np.where(pick < 0.75, rng.integers(100, 1400, n_frames), 1514))
    wirelen = np.where(kind == KIND_ICMP, 98, wirelen)
    udp = kind == KIND_UDP
    wirelen = np.where(udp & (pick < 0.5), rng.integers(UDP_MIN_WIRELEN, 300, n_frames), wirelen)
    wirelen = np.where(udp, np.maximum(wirelen, UDP_MIN_WIRELEN), wirelen)
    l2 = 14 + 4 * vlan
    l3 = np.where(v6, 40, 20)
    l4 = np.select([kind == KIND_TCP, kind == KIND_UDP], [20, 8], 8)
    hdr = l2 + l3 + l4
    syn = first & is_tcp
    synack = second & is_tcp
    fin = last & is_tcp & ~first & ~second
    control = syn | synack | fin
    payload = np.where(control, 0, np.maximum(wirelen - hdr, 0))
    ip_len = l3 + l4 + payload
    wirelen = np.maximum(60, l2 + ip_len)  # short frames are padded to the Ethernet minimum

    # TCP sequence space: SYN and FIN take one number each (RFC 9293 3.4)
    seqlen = (payload + syn + synack + fin).astype(np.int64)
    d_sorted = direction[order]
    sent0 = _group_exclusive_cumsum(np.where(d_sorted == 0, seqlen[order], 0), group_start)
    sent1 = _group_exclusive_cumsum(np.where(d_sorted == 1, seqlen[order], 0), group_start)
    before0 = np.empty(n_frames, dtype=np.int64)
    before1 = np.empty(n_frames, dtype=np.int64)
    before0[order] = sent0
    before1[order] = sent1
    isn = rng.integers(0, 2**32, size=(n_flows, 2), dtype=np.uint64).astype(np.int64)
    isn_own = isn[flow, direction]
    isn_peer = isn[flow, 1 - direction]
    own_before = np.where(direction == 0, before0, before1)
    peer_before = np.where(direction == 0, before1, before0)
    seq = (isn_own + own_before) & 0xFFFFFFFF
    ack = np.where(syn, 0, (isn_peer + peer_before) & 0xFFFFFFFF)
    flags = np.where(syn, TCP_SYN, np.where(synack, TCP_SYN | TCP_ACK,
                     np.where(fin, TCP_FIN | TCP_ACK, np.where(payload > 0, TCP_PSH | TCP_ACK, TCP_ACK))))

    # arrival times: Poisson-like gaps scaled to the capture duration, microsecond resolution
    gaps = rng.exponential(1.0, n_frames)
    ts_us = T0_S * 1_000_000 + (np.cumsum(gaps) * (DURATION_S * 1e6 / gaps.sum())).astype(np.int64)

    # flow endpoints: clients in 10.0.0.0/16, servers in 198.18.0.0/15 (RFC 2544 benchmarking range)
    cli4 = (10 << 24) + rng.integers(1, 1 << 16, n_flows)
    srv4 = (198 << 24) + (18 << 16) + rng.integers(1, 1 << 17, n_flows)
    # IPv6 in 2001:db8::/32: high 64 bits fixed per side, low 64 random
    cli6_hi = np.full(n_flows, 0x20010DB800010000, dtype=np.uint64)
    srv6_hi = np.full(n_flows, 0x20010DB800020000, dtype=np.uint64)
    cli6_lo = rng.integers(1, 2**63, n_flows, dtype=np.int64).astype(np.uint64)
    srv6_lo = rng.integers(1, 2**63, n_flows, dtype=np.int64).astype(np.uint64)
    cport = rng.integers(32768, 61000, n_flows)
    sport = np.where(kind_of_flow == KIND_TCP, rng.choice(TCP_SERVER_PORTS, n_flows),
                     rng.choice(UDP_SERVER_PORTS, n_flows))
    vid = rng.integers(2, 4095, n_flows)

    return {
        "flow": flow, "kind": kind, "v6": v6, "vlan": vlan, "dir": direction, "wirelen": wirelen,
        "ip_len": ip_len, "l4": l4, "payload": payload, "seq": seq, "ack": ack, "flags": flags,
        "ts_us": ts_us, "cli4": cli4, "srv4": srv4, "cli6_hi": cli6_hi, "cli6_lo": cli6_lo,
        "srv6_hi": srv6_hi, "srv6_lo": srv6_lo, "cport": cport, "sport": sport, "vid": vid,
        "ip_id": rng.integers(0, 1 << 16, n_frames), "pos_in_flow": _scatter(pos_in_flow, order),
    }


def _scatter(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(sorted_values)
    out[order] = sorted_values
    return out


def _ipv4_checksum(hdr_bytes: np.ndarray) -> np.ndarray:
    """RFC 1071 checksum of each row of 20 header bytes (with the checksum field zero)."""
    words = hdr_bytes.astype(np.uint64)
    return _fold_checksum((words[:, 0::2] << np.uint64(8) | words[:, 1::2]).sum(axis=1))


def _fold_checksum(s: np.ndarray) -> np.ndarray:
    """One's complement of the end-around-carry fold of 16-bit word sums (RFC 1071)."""
    s = s.astype(np.uint64)
    for _ in range(3):
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return (~s & np.uint64(0xFFFF)).astype(np.uint16)


def _mac_words(x: np.ndarray) -> np.ndarray:
    # locally administered unicast MAC 02:00 + 32 bits derived from the address
    x = x.astype(np.uint64) & 0xFFFFFFFF
    return np.stack([np.full_like(x, 0x0200), x >> 16, x & 0xFFFF], axis=1)


def _fill_group(f: dict[str, np.ndarray], rows: np.ndarray, vlan: bool, v6: bool, kind: int) -> np.ndarray:
    """Packed headers (as uint8 rows) of the frames in rows, which all share one layout."""
    dt = _layout(vlan, v6, kind)
    h = np.zeros(len(rows), dtype=dt)
    fl = f["flow"][rows]
    rev = f["dir"][rows] == 1
    if v6:
        c_lo, s_lo = f["cli6_lo"][fl], f["srv6_lo"][fl]
        h["src_ip"] = np.stack([np.where(rev, f["srv6_hi"][fl], f["cli6_hi"][fl]), np.where(rev, s_lo, c_lo)], 1)
        h["dst_ip"] = np.stack([np.where(rev, f["cli6_hi"][fl], f["srv6_hi"][fl]), np.where(rev, c_lo, s_lo)], 1)
        mac_key_src, mac_key_dst = np.where(rev, s_lo, c_lo), np.where(rev, c_lo, s_lo)
    else:
        c, s = f["cli4"][fl], f["srv4"][fl]
        h["src_ip"], h["dst_ip"] = np.where(rev, s, c), np.where(rev, c, s)
        mac_key_src, mac_key_dst = h["src_ip"], h["dst_ip"]
    h["src_mac"] = _mac_words(mac_key_src)
    h["dst_mac"] = _mac_words(mac_key_dst)
    ethertype = ETH_IP6 if v6 else ETH_IP
    if vlan:
        h["tpid"] = ETH_8021Q
        h["tci"] = f["vid"][fl]
    h["ethertype"] = ethertype

    ip_len = f["ip_len"][rows]
    proto = (PROTO_ICMPV6 if v6 else PROTO_ICMP) if kind == KIND_ICMP else (PROTO_TCP if kind == KIND_TCP
                                                                          else PROTO_UDP)
    if v6:
        h["vtcfl"] = (6 << 28) | (fl & 0xFFFFF)  # flow label from the flow id
        h["plen"] = ip_len - 40
        h["nxt"] = proto
        h["hlim"] = 64
    else:
        h["vihl"] = 0x45
        h["tot_len"] = ip_len
        h["ip_id"] = f["ip_id"][rows]
        h["frag"] = 0x4000  # DF
        h["ttl"] = np.where(rev, 57, 64)
        h["proto"] = proto

    if kind == KIND_ICMP:
        # echo request from the client, echo reply from the server (RFC 792; RFC 4443 4.1/4.2)
        h["icmp_type"] = np.where(rev, 129 if v6 else 0, 128 if v6 else 8)
        h["icmp_id"] = fl & 0xFFFF
        h["icmp_seq"] = f["pos_in_flow"][rows] & 0xFFFF
        # echo frames are shorter than the snaplen, so their checksum can be exact (the data is zeros)
        words = [h["icmp_type"].astype(np.uint64) << 8, h["icmp_id"].astype(np.uint64),
                 h["icmp_seq"].astype(np.uint64)]
        if v6:  # RFC 4443 2.3: the checksum covers the IPv6 pseudo-header too
            for addr in (h["src_ip"], h["dst_ip"]):
                for part in (addr[:, 0], addr[:, 1]):
                    words += [(part >> np.uint64(sh)) & np.uint64(0xFFFF) for sh in (48, 32, 16, 0)]
            words += [(ip_len - 40).astype(np.uint64), np.full(len(rows), PROTO_ICMPV6, dtype=np.uint64)]
        h["l4_sum"] = _fold_checksum(np.sum(words, axis=0))
    else:
        h["sport"] = np.where(rev, f["sport"][fl], f["cport"][fl])
        h["dport"] = np.where(rev, f["cport"][fl], f["sport"][fl])
        if kind == KIND_TCP:
            h["seq"] = f["seq"][rows]
            h["ack"] = f["ack"][rows]
            h["off"] = 5 << 4
            h["flags"] = f["flags"][rows]
            h["win"] = np.where(f["flags"][rows] & TCP_SYN, 64240, 502)
        else:
            h["ulen"] = ip_len - (40 if v6 else 20)
            # any nonzero value: zero means "no checksum", which IPv6 forbids (RFC 8200 8.1)
            h["l4_sum"] = (fl * 2654435761 & 0xFFFE) + 1
    # transport checksums stay zero-filled where they cover payload we do not store past the snaplen;
    # the IPv4 header checksum is exact because nothing it covers is cut
    raw = h.view(np.uint8).reshape(len(rows), dt.itemsize)
    if not v6:
        ip_off = dt.fields["vihl"][1]
        csum = _ipv4_checksum(raw[:, ip_off:ip_off + 20])
        h["ip_sum"] = csum
    return raw


def write_capture(path: Path, n_frames: int = 1_000_000, n_flows: int = 20_000, seed: int = 7) -> None:
    """Write a classic little-endian microsecond pcap of n_frames synthetic frames to path."""
    f = build_frames(n_frames, n_flows, seed)
    caplen = np.minimum(f["wirelen"], SNAPLEN)
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        cols = np.arange(REC_HDR + SNAPLEN)
        for lo in range(0, n_frames, CHUNK):
            hi = min(lo + CHUNK, n_frames)
            n = hi - lo
            rec = np.zeros((n, REC_HDR + SNAPLEN), dtype=np.uint8)
            rh = np.empty((n, 4), dtype="<u4")
            rh[:, 0] = f["ts_us"][lo:hi] // 1_000_000
            rh[:, 1] = f["ts_us"][lo:hi] % 1_000_000
            rh[:, 2] = caplen[lo:hi]
            rh[:, 3] = f["wirelen"][lo:hi]
            rec[:, :REC_HDR] = rh.view(np.uint8)
            layout_key = (f["vlan"][lo:hi].astype(np.int8) * 6 + f["v6"][lo:hi].astype(np.int8) * 3
                          + f["kind"][lo:hi])
            for key in np.unique(layout_key):
                local = np.flatnonzero(layout_key == key)
                vlan, rest = divmod(int(key), 6)
                v6, kind = divmod(rest, 3)
                raw = _fill_group(f, local + lo, bool(vlan), bool(v6), kind)
                rec[local, REC_HDR:REC_HDR + raw.shape[1]] = raw
            # keep each record's header and its first caplen bytes, in row order: the file's layout
            out.write(rec[cols < (REC_HDR + caplen[lo:hi])[:, None]].tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="pcap file to write")
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    write_capture(args.out, args.frames, args.flows, args.seed)
    print(f"wrote {args.frames} frames to {args.out} in {time.perf_counter() - t:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
