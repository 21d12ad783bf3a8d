"""Conversations inside tunnels: real tunnel frames opened by decoders/tunnels.py, counted as tshark counts them.

Each frame below was built with struct and dpkt (addresses from the documentation ranges) and written to a one-frame
pcap (link type 1); the comment above it is `TZ=UTC tcpdump -XX -nn -r` of that file (tcpdump
4.99.3) and tshark 4.0.17's `frame.protocols`. The expected conversations come from how each frame was built;
when tshark is installed it is asked about the same frame (`-z conv,ip -z conv,ipv6 -z conv,tcp -z conv,udp`).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pktscope.analyzers.analysis import Analysis
from pktscope.capture import linktypes as lt
from pktscope.capture.batch import Batch
from pktscope.capture.pcapwriter import write_pcap
from pktscope.decoders import decode_batch
from pktscope.decoders.tunnels import inner_frames, tunnel_layers, tunnel_rows

TSHARK = shutil.which("tshark")

# fmt: off
# tcpdump -XX -nn -r gre.pcap  (link type 1; tshark: eth:ethertype:ip:gre:ip:tcp)
# 22:13:20.250000 IP 192.0.2.1 > 198.51.100.1: GREv0, key=0x7, length 48: IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 64240, length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0044 0001 0000 402f 8e54 c000 0201 c633  .D....@/.T.....3
#   0x0020:  6401 2000 0800 0000 0007 4500 0028 0001  d.........E..(..
#   0x0030:  0000 4006 66cd 0a00 0001 0a00 0002 9c40  ..@.f..........@
#   0x0040:  0050 0000 03e8 0000 0000 5002 faf0 0000  .P........P.....
#   0x0050:  0000                                     ..
GRE = bytes.fromhex(
    "02000000000202000000000108004500004400010000402f8e54c0000201c633"
    "640120000800000000074500002800010000400666cd0a0000010a0000029c40"
    "0050000003e8000000005002faf000000000"
)

# tcpdump -XX -nn -r ipip.pcap  (link type 1; tshark: eth:ethertype:ip:ip:udp:dns)
# 22:13:20.250000 IP 192.0.2.1 > 198.51.100.1: IP 10.1.0.1.5000 > 10.1.0.2.53: 4660 [0q] (12)
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  003c 0001 0000 4004 8e87 c000 0201 c633  .<....@........3
#   0x0020:  6401 4500 0028 0001 0000 4011 66c0 0a01  d.E..(....@.f...
#   0x0030:  0001 0a01 0002 1388 0035 0014 0000 1234  .........5.....4
#   0x0040:  0000 0000 0000 0000 0000                 ..........
IPIP = bytes.fromhex(
    "02000000000202000000000108004500003c0001000040048e87c0000201c633"
    "64014500002800010000401166c00a0100010a01000213880035001400001234"
    "00000000000000000000"
)

# tcpdump -XX -nn -r sixin4.pcap  (link type 1; tshark: eth:ethertype:ip:ipv6:tcp)
# 22:13:20.250000 IP 192.0.2.1 > 192.88.99.1: IP6 2001:db8::1.40001 > 2001:db8::2.443: Flags [S], seq 1000, win 64240, length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0050 0001 0000 4029 9529 c000 0201 c058  .P....@).).....X
#   0x0020:  6301 6000 0000 0014 0640 2001 0db8 0000  c.`......@......
#   0x0030:  0000 0000 0000 0000 0001 2001 0db8 0000  ................
#   0x0040:  0000 0000 0000 0000 0002 9c41 01bb 0000  ...........A....
#   0x0050:  03e8 0000 0000 5002 faf0 0000 0000       ......P.......
SIXIN4 = bytes.fromhex(
    "0200000000020200000000010800450000500001000040299529c0000201c058"
    "6301600000000014064020010db800000000000000000000000120010db80000"
    "000000000000000000029c4101bb000003e8000000005002faf000000000"
)

# tcpdump -XX -nn -r vxlan.pcap  (link type 1; tshark: eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp)
# 22:13:20.250000 IP 192.0.2.1.54321 > 198.51.100.1.4789: VXLAN, flags [I] (0x08), vni 123
# IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 64240, length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  005a 0001 0000 4011 8e5c c000 0201 c633  .Z....@..\.....3
#   0x0020:  6401 d431 12b5 0046 0000 0800 0000 0000  d..1...F........
#   0x0030:  7b00 0a00 0000 0002 0a00 0000 0001 0800  {...............
#   0x0040:  4500 0028 0001 0000 4006 66cd 0a00 0001  E..(....@.f.....
#   0x0050:  0a00 0002 9c40 0050 0000 03e8 0000 0000  .....@.P........
#   0x0060:  5002 faf0 0000 0000                      P.......
VXLAN = bytes.fromhex(
    "02000000000202000000000108004500005a0001000040118e5cc0000201c633"
    "6401d43112b5004600000800000000007b000a00000000020a00000000010800"
    "4500002800010000400666cd0a0000010a0000029c400050000003e800000000"
    "5002faf000000000"
)

# tcpdump -XX -nn -r geneve.pcap  (link type 1; tshark: eth:ethertype:ipv6:udp:geneve:ipv6:tcp)
# 22:13:20.250000 IP6 2001:db8:1::1.50000 > 2001:db8:1::2.6081: Geneve, Flags [none], vni 0xa, options [4 bytes]: IP6 2001:db8::1.40001 > 2001:db8::2.443: Flags [S], seq 1000, win 64240, length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 86dd 6000  ..............`.
#   0x0010:  0000 0050 1140 2001 0db8 0001 0000 0000  ...P.@..........
#   0x0020:  0000 0000 0001 2001 0db8 0001 0000 0000  ................
#   0x0030:  0000 0000 0002 c350 17c1 0050 0000 0100  .......P...P....
#   0x0040:  86dd 0000 0a00 0101 0101 6000 0000 0014  ..........`.....
#   0x0050:  0640 2001 0db8 0000 0000 0000 0000 0000  .@..............
#   0x0060:  0001 2001 0db8 0000 0000 0000 0000 0000  ................
#   0x0070:  0002 9c41 01bb 0000 03e8 0000 0000 5002  ...A..........P.
#   0x0080:  faf0 0000 0000                           ......
GENEVE = bytes.fromhex(
    "02000000000202000000000186dd600000000050114020010db8000100000000"
    "00000000000120010db8000100000000000000000002c35017c1005000000100"
    "86dd00000a0001010101600000000014064020010db800000000000000000000"
    "000120010db80000000000000000000000029c4101bb000003e8000000005002"
    "faf000000000"
)

# tcpdump -XX -nn -r gtp_u.pcap  (link type 1; tshark: eth:ethertype:ip:udp:gtp:ip:udp:dns)
# 22:13:20.250000 IP 192.0.2.1.2152 > 198.51.100.1.2152: UDP, length 56
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0054 0001 0000 4011 8e62 c000 0201 c633  .T....@..b.....3
#   0x0020:  6401 0868 0868 0040 0000 34ff 0030 0000  d..h.h.@..4..0..
#   0x0030:  1234 0001 0085 0110 0000 4500 0028 0001  .4........E..(..
#   0x0040:  0000 4011 66c0 0a01 0001 0a01 0002 1388  ..@.f...........
#   0x0050:  0035 0014 0000 1234 0000 0000 0000 0000  .5.....4........
#   0x0060:  0000                                     ..
GTP_U = bytes.fromhex(
    "0200000000020200000000010800450000540001000040118e62c0000201c633"
    "6401086808680040000034ff0030000012340001008501100000450000280001"
    "0000401166c00a0100010a010002138800350014000012340000000000000000"
    "0000"
)

# tcpdump -XX -nn -r macsec.pcap  (link type 1; tshark: eth:ethertype:macsec:ethertype:ip:udp:dns)
# 22:13:20.250000 IP 10.1.0.1.5000 > 10.1.0.2.53: 4660 [0q] (12)
#   0x0000:  0200 0000 0002 0200 0000 0001 88e5 2000  ................
#   0x0010:  0000 0042 0200 0000 0001 0001 0800 4500  ...B..........E.
#   0x0020:  0028 0001 0000 4011 66c0 0a01 0001 0a01  .(....@.f.......
#   0x0030:  0002 1388 0035 0014 0000 1234 0000 0000  .....5.....4....
#   0x0040:  0000 0000 0000 0001 0203 0405 0607 0809  ................
#   0x0050:  0a0b 0c0d 0e0f                           ......
MACSEC = bytes.fromhex(
    "02000000000202000000000188e5200000000042020000000001000108004500"
    "002800010000401166c00a0100010a0100021388003500140000123400000000"
    "000000000000000102030405060708090a0b0c0d0e0f"
)

# tcpdump -XX -nn -r l2tp.pcap  (link type 1; tshark: eth:ethertype:ip:udp:l2tp:ppp:ip:tcp)
# 22:13:20.250000 IP 192.0.2.1.1701 > 198.51.100.1.1701:  l2tp:[](11/22) {IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 64240, length 0}
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  004e 0001 0000 4011 8e68 c000 0201 c633  .N....@..h.....3
#   0x0020:  6401 06a5 06a5 003a 0000 0002 000b 0016  d......:........
#   0x0030:  ff03 0021 4500 0028 0001 0000 4006 66cd  ...!E..(....@.f.
#   0x0040:  0a00 0001 0a00 0002 9c40 0050 0000 03e8  .........@.P....
#   0x0050:  0000 0000 5002 faf0 0000 0000            ....P.......
L2TP = bytes.fromhex(
    "02000000000202000000000108004500004e0001000040118e68c0000201c633"
    "640106a506a5003a00000002000b0016ff0300214500002800010000400666cd"
    "0a0000010a0000029c400050000003e8000000005002faf000000000"
)

# tcpdump -XX -nn -r teredo.pcap  (link type 1; tshark: eth:ethertype:ip:udp:teredo:ipv6:udp:data)
# 22:13:20.250000 IP 192.0.2.1.51000 > 65.54.227.120.3544: UDP, length 61
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0059 0001 0000 4011 93e3 c000 0201 4136  .Y....@.......A6
#   0x0020:  e378 c738 0dd8 0045 0000 0000 fa4f c000  .x.8...E.....O..
#   0x0030:  0201 6000 0000 000d 1140 2001 0000 4136  ..`......@....A6
#   0x0040:  e378 8000 63bf 3fff fdd2 2001 0db8 0000  .x..c.?.........
#   0x0050:  0000 0000 0000 0000 0005 1770 1b58 000d  ...........p.X..
#   0x0060:  0000 6865 6c6c 6f                        ..hello
TEREDO = bytes.fromhex(
    "02000000000202000000000108004500005900010000401193e3c00002014136"
    "e378c7380dd8004500000000fa4fc000020160000000000d1140200100004136"
    "e378800063bf3ffffdd220010db800000000000000000000000517701b58000d"
    "000068656c6c6f"
)

# tcpdump -XX -nn -r vxlan_gpe_nsh.pcap  (link type 1; tshark: eth:ethertype:ip:udp:nsh:ip:udp:dns)
# 22:13:20.250000 IP 192.0.2.1.55555 > 198.51.100.1.4790: VXLAN-GPE, flags [IP], vni 3000: NSH, flags [none], service-path-id 0x00002a, service-index 0xff: IP 10.1.0.1.5000 > 10.1.0.2.53: 4660 [0q] (12)
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0064 0001 0000 4011 8e52 c000 0201 c633  .d....@..R.....3
#   0x0020:  6401 d903 12b6 0050 0000 0c00 0004 000b  d......P........
#   0x0030:  b800 0fc6 0101 0000 2aff 0000 0000 0000  ........*.......
#   0x0040:  0000 0000 0000 0000 0000 4500 0028 0001  ..........E..(..
#   0x0050:  0000 4011 66c0 0a01 0001 0a01 0002 1388  ..@.f...........
#   0x0060:  0035 0014 0000 1234 0000 0000 0000 0000  .5.....4........
#   0x0070:  0000                                     ..
VXLAN_GPE_NSH = bytes.fromhex(
    "0200000000020200000000010800450000640001000040118e52c0000201c633"
    "6401d90312b6005000000c000004000bb8000fc6010100002aff000000000000"
    "000000000000000000004500002800010000401166c00a0100010a0100021388"
    "003500140000123400000000000000000000"
)

# tcpdump -XX -nn -r gre_vxlan.pcap  (link type 1; tshark: eth:ethertype:ip:gre:ip:udp:vxlan:eth:ethertype:ip:udp:dns)
# 22:13:20.250000 IP 203.0.113.1 > 203.0.113.2: GREv0, length 94: IP 192.0.2.1.54321 > 198.51.100.1.4789: VXLAN, flags [I] (0x08), vni 123
# IP 10.1.0.1.5000 > 10.1.0.2.53: 4660 [0q] (12)
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0072 0001 0000 402f 0258 cb00 7101 cb00  .r....@/.X..q...
#   0x0020:  7102 0000 0800 4500 005a 0001 0000 4011  q.....E..Z....@.
#   0x0030:  8e5c c000 0201 c633 6401 d431 12b5 0046  .\.....3d..1...F
#   0x0040:  0000 0800 0000 0000 7b00 0200 0000 0002  ........{.......
#   0x0050:  0200 0000 0001 0800 4500 0028 0001 0000  ........E..(....
#   0x0060:  4011 66c0 0a01 0001 0a01 0002 1388 0035  @.f............5
#   0x0070:  0014 0000 1234 0000 0000 0000 0000 0000  .....4..........
GRE_VXLAN = bytes.fromhex(
    "02000000000202000000000108004500007200010000402f0258cb007101cb00"
    "7102000008004500005a0001000040118e5cc0000201c6336401d43112b50046"
    "00000800000000007b0002000000000202000000000108004500002800010000"
    "401166c00a0100010a0100021388003500140000123400000000000000000000"
)

# tcpdump -XX -nn -r vxlan_behind_dns.pcap  (link type 1; tshark: eth:ethertype:ip:udp:dns)
# 22:13:20.250000 IP 192.0.2.1.53 > 198.51.100.1.4789: 2048 [31488a] [0q] [512n] (62)
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  005a 0001 0000 4011 8e5c c000 0201 c633  .Z....@..\.....3
#   0x0020:  6401 0035 12b5 0046 0000 0800 0000 0000  d..5...F........
#   0x0030:  7b00 0200 0000 0002 0200 0000 0001 0800  {...............
#   0x0040:  4500 0028 0001 0000 4006 66cd 0a00 0001  E..(....@.f.....
#   0x0050:  0a00 0002 9c40 0050 0000 03e8 0000 0000  .....@.P........
#   0x0060:  5002 faf0 0000 0000                      P.......
VXLAN_BEHIND_DNS = bytes.fromhex(
    "02000000000202000000000108004500005a0001000040118e5cc0000201c633"
    "6401003512b5004600000800000000007b000200000000020200000000010800"
    "4500002800010000400666cd0a0000010a0000029c400050000003e800000000"
    "5002faf000000000"
)
# fmt: on

# frame -> tshark's four conversation counts, known from how the frame was built (outer and inner layers)
CASES: dict[str, tuple[bytes, dict[str, int]]] = {
    "gre": (GRE, {"ipv4": 2, "ipv6": 0, "tcp": 1, "udp": 0}),
    "ipip": (IPIP, {"ipv4": 2, "ipv6": 0, "tcp": 0, "udp": 1}),
    "6in4": (SIXIN4, {"ipv4": 1, "ipv6": 1, "tcp": 1, "udp": 0}),
    "vxlan": (VXLAN, {"ipv4": 2, "ipv6": 0, "tcp": 1, "udp": 1}),
    "geneve": (GENEVE, {"ipv4": 0, "ipv6": 2, "tcp": 1, "udp": 1}),
    "gtp-u": (GTP_U, {"ipv4": 2, "ipv6": 0, "tcp": 0, "udp": 2}),
    "macsec": (MACSEC, {"ipv4": 1, "ipv6": 0, "tcp": 0, "udp": 1}),
    "l2tp": (L2TP, {"ipv4": 2, "ipv6": 0, "tcp": 1, "udp": 1}),
    "teredo": (TEREDO, {"ipv4": 1, "ipv6": 1, "tcp": 0, "udp": 2}),
    "vxlan-gpe-nsh": (VXLAN_GPE_NSH, {"ipv4": 2, "ipv6": 0, "tcp": 0, "udp": 2}),
    "gre-vxlan": (GRE_VXLAN, {"ipv4": 3, "ipv6": 0, "tcp": 0, "udp": 2}),
    "vxlan-behind-dns": (VXLAN_BEHIND_DNS, {"ipv4": 1, "ipv6": 0, "tcp": 0, "udp": 1}),
}
_TSHARK_TABLES = {"IPv4": "ipv4", "IPv6": "ipv6", "TCP": "tcp", "UDP": "udp"}


def one_frame(frame: bytes) -> Batch:
    return Batch.from_frames([frame], [1_700_000_000_250_000_000], lt.LINKTYPE_ETHERNET)


def conversations(batch: Batch) -> dict[str, int]:
    analysis = Analysis()
    analysis.feed(decode_batch(batch), batch)
    return analysis.finish().conversations()


def tshark_conversations(path: Path) -> dict[str, int]:
    """Rows of each of tshark's conversation tables for a capture file."""
    out = subprocess.run([TSHARK, "-n", "-q", "-r", str(path), "-z", "conv,ip", "-z", "conv,ipv6", "-z", "conv,tcp",
                          "-z", "conv,udp"], capture_output=True, text=True, check=True).stdout
    counts = dict.fromkeys(_TSHARK_TABLES.values(), 0)
    table = None
    for line in out.splitlines():
        if line.endswith("Conversations"):
            table = _TSHARK_TABLES.get(line.split()[0])
        elif "<->" in line and table is not None:
            counts[table] += 1
    return counts


@pytest.mark.parametrize("name", CASES)
def test_inner_conversations(name: str) -> None:
    frame, expected = CASES[name]
    assert conversations(one_frame(frame)) == expected


@pytest.mark.parametrize("name", CASES)
def test_inner_conversations_match_tshark(name: str, tmp_path: Path) -> None:
    if TSHARK is None:
        pytest.skip("tshark not installed")
    batch = one_frame(CASES[name][0])
    path = write_pcap(tmp_path / f"{name}.pcap", [batch])
    assert conversations(batch) == tshark_conversations(path)


def test_inner_packets_and_their_link_types() -> None:
    frames = [VXLAN, GRE, SIXIN4, IPIP, VXLAN_BEHIND_DNS]
    batch = Batch.from_frames(frames, np.arange(len(frames)), lt.LINKTYPE_ETHERNET)
    inner, parent = inner_frames(batch, decode_batch(batch))
    assert parent.tolist() == [0, 1, 2, 3]
    assert inner.linktypes.tolist() == [lt.LINKTYPE_ETHERNET, lt.LINKTYPE_RAW, lt.LINKTYPE_IPV6, lt.LINKTYPE_RAW]
    assert inner.ts_ns.tolist() == [0, 1, 2, 3]
    cols = decode_batch(inner)
    assert cols["ip_version"].tolist() == [4, 4, 6, 4]
    assert cols["proto"].tolist() == [6, 6, 6, 17]


def test_nested_tunnels_are_opened_level_by_level() -> None:
    batch = one_frame(GRE_VXLAN)
    levels = [cols for _batch, cols in tunnel_layers(batch, decode_batch(batch))]
    assert [(int(c["ip_version"][0]), int(c["proto"][0]), int(c["dport"][0])) for c in levels] == [
        (4, 17, 4789), (4, 17, 53)]


def test_a_tunnel_port_behind_a_lower_registered_port_is_no_tunnel() -> None:
    # tshark tries the lower port first: 53 goes to DNS, so 4789 on the other side is not opened
    batch = Batch.from_frames([VXLAN_BEHIND_DNS] * 3, np.arange(3), lt.LINKTYPE_ETHERNET)
    cols = decode_batch(batch)
    assert tunnel_rows(cols).tolist() == [0, 1, 2]
    inner, parent = inner_frames(batch, cols)
    assert len(inner) == 0 and len(parent) == 0


def test_frames_without_tunnels_cost_one_mask() -> None:
    cut = Batch.from_frames([VXLAN[:34]], [0], lt.LINKTYPE_ETHERNET, [len(VXLAN)])  # the UDP header cut off
    assert len(tunnel_rows(decode_batch(cut))) == 0
    inner, _parent = inner_frames(cut, decode_batch(cut))
    assert len(inner) == 0


def test_cut_and_fuzzed_tunnel_frames_never_raise() -> None:
    """Every snaplen cut of every tunnel frame, seeded byte mutations and garbage tunnel payloads: no exception."""
    rng = random.Random(20240611)
    pieces, wires = [], []
    for frame, _ in CASES.values():
        for n in range(len(frame) + 1):
            pieces.append(frame[:n])
            wires.append(len(frame))
        for _ in range(300):
            mutated = bytearray(frame)
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(14, len(frame))] = rng.randrange(256)
            pieces.append(bytes(mutated))
            wires.append(len(frame))
        for _ in range(100):  # the outer headers kept, garbage from somewhere in the tunnel header on
            keep = rng.randrange(34, len(frame))
            pieces.append(frame[:keep] + rng.randbytes(len(frame) - keep))
            wires.append(len(frame))
    batch = Batch.from_frames(pieces, np.arange(len(pieces)), lt.LINKTYPE_ETHERNET, wires)
    analysis = Analysis()
    analysis.feed(decode_batch(batch), batch)
    counts = analysis.finish().conversations()
    assert counts["ipv4"] >= 1
