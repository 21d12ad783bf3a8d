"""`pktscope live` with VLAN filter expressions, against tcpdump's live filter on the same tagged traffic.

The kernel moves a received frame's outer 802.1Q/802.1ad tag into skb metadata before packet sockets
see it, so libpcap's offline-compiled `vlan` tests cannot run in the kernel; pktscope runs those
expressions in its workers on the frames with the tag put back (see app/live.py `_place_filter`).
tcpdump (libpcap 1.10, compiling live with SKF_AD_VLAN_TAG* loads) is the oracle. This kernel has no
8021q module, so tagged frames are raw bytes sent out of veth-a from an AF_PACKET socket; veth-b's
receive path untags them as it would on a NIC with VLAN offload.
"""

from __future__ import annotations

import glob
import time
from contextlib import ExitStack
from pathlib import Path

import netns
import pcapy
import pytest
from test_live import SETTLE, live, packets, read_pcap, tcpdump

from pktscope.app.live import _place_filter
from pktscope.bpf import classic
from pktscope.capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW

# Raw frames out of veth-a, each kind `per_kind` times with distinct source ports; prints how many.
# Kinds: VLAN 100 UDP/IPv4, VLAN 100 TCP SYN/IPv4, VLAN 100 UDP/IPv6, VLAN 200 UDP/IPv4,
# untagged UDP/IPv4, QinQ (802.1ad outer VLAN 100, 802.1Q inner VLAN 300) UDP/IPv4.
_TAGGED_MIX = """
import socket, struct, sys, time
dst, src, per_kind = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("veth-a", 0))

def tag(tpid, vid):
    return struct.pack("!HH", tpid, vid)

def ip4(proto, l4):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0,
                       bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2])) + l4

def ip6(proto, l4):
    a = bytes.fromhex("fd000201" + "00" * 11 + "01")
    b = bytes.fromhex("fd000201" + "00" * 11 + "02")
    return struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + a + b + l4

def udp(sport):
    return struct.pack("!HHHH", sport, 9, 8 + 24, 0) + bytes(24)

def tcp(sport):
    return struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x02, 8192, 0, 0)

kinds = [
    lambda i: tag(0x8100, 100) + b"\\x08\\x00" + ip4(17, udp(51000 + i)),
    lambda i: tag(0x8100, 100) + b"\\x08\\x00" + ip4(6, tcp(52000 + i)),
    lambda i: tag(0x8100, 100) + b"\\x86\\xdd" + ip6(17, udp(53000 + i)),
    lambda i: tag(0x8100, 200) + b"\\x08\\x00" + ip4(17, udp(54000 + i)),
    lambda i: b"\\x08\\x00" + ip4(17, udp(55000 + i)),
    lambda i: tag(0x88a8, 100) + tag(0x8100, 300) + b"\\x08\\x00" + ip4(17, udp(56000 + i)),
]
sent = 0
for i in range(per_kind):
    for make in kinds:
        s.send(dst + src + make(i))
        sent += 1
    time.sleep(0.0005)
print(sent)
"""
PER_KIND = 30
KINDS = 6

# expression -> frames of the mix it passes (per kind: v100 udp, v100 tcp, v100 udp6, v200 udp, untagged, QinQ)
EXPECTED = {
    "vlan 100 and udp": 2 * PER_KIND,  # v100 udp + v100 udp6; QinQ's inner header is not IP
    "vlan 200": PER_KIND,
    "vlan": 5 * PER_KIND,
    "vlan and vlan 300": PER_KIND,  # QinQ, inner tag
    "vlan 100 and tcp[tcpflags] & tcp-syn != 0": PER_KIND,
    "udp": 4 * PER_KIND,  # no VLAN test: runs in the kernel, which sees the untagged frames (as tcpdump's)
}


def send_mix(rig: netns.VethRig) -> int:
    mac_b, mac_a = (m.replace(":", "") for m in (rig.mac_b, rig.mac_a))
    sent = int(rig.python("a", _TAGGED_MIX, mac_b, mac_a, str(PER_KIND)).stdout)
    assert sent == PER_KIND * KINDS
    return sent


# --- where the filter runs (no root needed) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reads_tag"),
    [
        ("vlan 100 and udp", True),
        ("vlan", True),
        ("udp or vlan 100", True),  # the VLAN test is on the second branch of the program
        ("vlan and vlan 5", True),
        ("ether proto 0x8100", True),
        ("ether[12:2] = 0x88a8 or tcp", True),
        ("udp", False),
        ("udp port 33024", False),  # 0x8100 compared with a port, not with the EtherType
        ("tcp port 34984 or host 10.0.0.1", False),  # 0x88a8 likewise
        ("mpls", False),
        ("pppoes", False),
        ("icmp or arp", False),
    ],
)
def test_vlan_tests_are_found_in_the_compiled_program(expression: str, reads_tag: bool) -> None:
    program = classic.compile_filter(expression, snaplen=96).instructions
    assert classic.reads_vlan_tag(program, LINKTYPE_ETHERNET) is reads_tag
    kernel_program, userspace = _place_filter(expression, LINKTYPE_ETHERNET, 96)
    if reads_tag:
        assert userspace == expression
        assert kernel_program == tuple(classic.accept_all(classic.DEFAULT_SNAPLEN))  # whole frames up
    else:
        assert userspace is None and kernel_program == program


def test_no_vlan_test_on_raw_ip_and_no_ancillary_load_in_userspace() -> None:
    assert not classic.reads_vlan_tag(classic.compile_filter("udp", LINKTYPE_RAW).instructions, LINKTYPE_RAW)
    assert classic.uses_ancillary_loads(classic.compile_filter("inbound").instructions)
    assert not classic.uses_ancillary_loads(classic.compile_filter("vlan 100").instructions)
    with pytest.raises(classic.FilterError, match="inbound/outbound cannot be combined with VLAN tests"):
        _place_filter("inbound and vlan 100", LINKTYPE_ETHERNET, 262144)
    assert _place_filter("", LINKTYPE_ETHERNET, 128) == (tuple(classic.accept_all(128)), None)


# --- live, against tcpdump --------------------------------------------------------------------------------


def test_vlan_expressions_pass_what_tcpdump_passes(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    with ExitStack() as stack:
        dumps, runs = [], []
        for i, expr in enumerate(EXPECTED):
            dumps.append(stack.enter_context(tcpdump(veth_rig, tmp_path / f"td{i}.pcap", expr)))
            workers = "2" if expr == "vlan" else "1"  # fanout: the userspace filter in every worker
            runs.append(stack.enter_context(live(veth_rig, ["--workers", workers, "-w", str(tmp_path / f"ps{i}.pcap")],
                                                 expr)))
        for run in runs:
            run.wait_ready()
        sent = send_mix(veth_rig)
        time.sleep(SETTLE)
        finals = [run.stop() for run in runs]
        for td in dumps:
            td.stop()

    for i, (expr, final) in enumerate(zip(EXPECTED, finals, strict=True)):
        # `tcpdump -r` lines without their timestamps: each socket stamps a frame that crossed namespaces
        # itself (the skb's stamp is scrubbed), microseconds apart
        oracle = sorted(line.split(" ", 1)[1] for line in read_pcap(tmp_path / f"td{i}.pcap"))
        ours = sorted(line.split(" ", 1)[1] for f in glob.glob(str(tmp_path / f"ps{i}*.pcap"))
                      for line in read_pcap(f))
        assert len(oracle) == EXPECTED[expr], (expr, len(oracle))
        assert ours == oracle, expr  # the same frames
        assert packets(final) == len(oracle), expr
        assert final["kernel"]["drops"] == 0
        if expr == "udp":
            assert final["filter_in"] == "kernel" and final["kernel"]["packets"] == len(oracle)
            assert "userspace_rejected" not in final
        else:
            assert final["filter_in"] == "userspace", expr
            # the kernel keeps every frame, the workers reject the rest
            assert final["kernel"]["packets"] == sent
            assert final["userspace_rejected"] == sent - len(oracle), expr
    assert len(glob.glob(str(tmp_path / "ps2.w*.pcap"))) == 2  # "vlan" ran on two workers


def test_vlan_filter_with_count_and_snaplen(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    """-c counts frames after the userspace filter; -s cuts them after it, so it tests whole frames."""
    cap = tmp_path / "c.pcap"
    expr = "vlan 100 and ip and udp dst port 9"  # the port is at bytes 40-41 of these frames, beyond -s 40
    with live(veth_rig, ["-c", "25", "-s", "40", "-w", str(cap)], expr) as run:
        run.wait_ready()
        send_mix(veth_rig)
        final = run.finish()  # stops by itself
    assert packets(final) == 25 and final["filter_in"] == "userspace"
    reader = pcapy.open_offline(str(cap))
    lengths = []
    while (header := reader.next()[0]) is not None:
        lengths.append((header.getcaplen(), header.getlen()))
    assert lengths == [(40, 70)] * 25  # 14 + 4 (the tag) + 20 + 8 + 24
