"""Live capture on a veth pair in throw-away namespaces, checked against what was sent and against tcpdump.

Traffic: UDP datagrams from namespace a to addresses that b's MAC receives but b drops silently (b is
not a router, so it answers with no ICMP), so the link carries exactly what a test sends. Every
capture runs in a forked child that joined namespace a with setns(2); tcpdump runs beside it under
`ip netns exec`.
"""

from __future__ import annotations

import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import dpkt
import netns
import pcapy
import pytest

from pktscope.bpf import classic
from pktscope.capture import kernel
from pktscope.capture.afpacket import LiveCaptureError, PacketRing, RingStats
from pktscope.capture.linktypes import LINKTYPE_ETHERNET
from pktscope.capture.pcapwriter import PcapWriter

CHILD_SECONDS = 20  # upper bound on any capture child's life

Frame = tuple[bytes, int, int]  # bytes, timestamp in µs (what pcapy-ng gives back), wire length


# --- capture side, run inside namespace a ----------------------------------------------------------


def _drain(ring: PacketRing, frames: list[Frame], writer: PcapWriter | None) -> int:
    batches = ring.read(0.05)
    for batch in batches:
        frames.extend(
            (batch.frame(i), int(batch.ts_ns[i]) // 1000, int(batch.wirelens[i])) for i in range(len(batch))
        )
        assert set(batch.linktypes.tolist()) == {ring.linktype}
        if writer is not None:
            writer.write(batch)
    return len(batches)


def capture_child(
    conn: Connection, ifname: str, open_kwargs: dict[str, Any], pcap_path: str | None, hold: bool
) -> dict[str, Any]:
    """Open a ring, say "ready", read until told "stop" (not at all when `hold`), drain the ring, report."""
    ring = PacketRing.open(ifname, **open_kwargs)
    writer = PcapWriter(pcap_path, linktype=ring.linktype, snaplen=ring.snaplen) if pcap_path else None
    conn.send("ready")
    frames: list[Frame] = []
    deadline = time.monotonic() + CHILD_SECONDS
    while time.monotonic() < deadline:
        if conn.poll():
            conn.recv()
            break
        if hold:
            time.sleep(0.02)
            continue
        _drain(ring, frames, writer)
    # blocks retire after block_timeout_ms; two empty polls in a row mean the ring is drained
    empty = 0
    while empty < 2 and time.monotonic() < deadline:
        empty = empty + 1 if _drain(ring, frames, writer) == 0 else 0
        time.sleep(0.1)
    stats = ring.stats()
    again = ring.stats()
    ring.close()
    if writer is not None:
        writer.close()
    return {"frames": frames, "stats": stats, "stats_again": again, "linktype": ring.linktype}


def hold_child(conn: Connection, open_kwargs: dict[str, Any]) -> str:
    """Open a ring, say "ready", keep it open until told to go."""
    ring = PacketRing.open(netns.IF_A, **open_kwargs)
    conn.send("ready")
    conn.poll(CHILD_SECONDS)
    ring.close()
    return "closed"


def open_error_child(conn: Connection, ifname: str, open_kwargs: dict[str, Any]) -> str:
    """The LiveCaptureError message that opening gives (or 'opened')."""
    try:
        PacketRing.open(ifname, **open_kwargs).close()
    except LiveCaptureError as exc:
        return str(exc)
    return "opened"


def start_capture(
    rig: netns.VethRig,
    open_kwargs: dict[str, Any],
    pcap_path: str | None = None,
    hold: bool = False,
    side: str = "a",
) -> netns.NetnsChild:
    ifname = netns.IF_A if side == "a" else netns.IF_B
    child = netns.in_netns(rig.ns(side), capture_child, ifname, dict(open_kwargs), pcap_path, hold)
    child.expect("ready")
    return child


def stop_capture(child: netns.NetnsChild) -> dict[str, Any]:
    child.send("stop")
    try:
        return child.result(timeout=CHILD_SECONDS + 5)
    finally:
        child.kill()


# --- tcpdump as the oracle ---------------------------------------------------------------------------


class Tcpdump:
    """tcpdump -w on one end of the veth, inside its namespace, started and stopped around the traffic."""

    def __init__(
        self, rig: netns.VethRig, path: Path, expression: str = "", snaplen: int = 262144, side: str = "a"
    ) -> None:
        argv = [
            "tcpdump",
            "-p",
            "--immediate-mode",  # else frames still in tcpdump's ring when SIGINT arrives are never written
            "-n",
            "-B",
            "131072",  # KiB: a burst of frames must not overflow tcpdump's ring either
            "-Z",
            "root",
            "--time-stamp-precision",
            "nano",
            "-s",
            str(snaplen),
            "-i",
            netns.IF_A if side == "a" else netns.IF_B,
            "-w",
            str(path),
        ]
        argv += [expression] if expression else []
        self.path = path
        self.proc = rig.popen(side, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if ready:
                line = self.proc.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    break
        assert "listening on" in line, f"tcpdump did not start: {line!r}"

    def stop(self) -> list[Frame]:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=10)
        assert "\n0 packets dropped by kernel" in err, err
        return read_pcap(self.path)


def read_pcap(path: Path) -> list[Frame]:
    """Frames of a pcap file as libpcap (pcapy-ng) reads them; it scales timestamps to microseconds."""
    reader = pcapy.open_offline(str(path))
    frames: list[Frame] = []
    for _ in range(10_000_000):
        header, data = reader.next()
        if header is None:
            break
        sec, frac = header.getts()
        frames.append((bytes(data), sec * 1_000_000 + frac, header.getlen()))
    return frames


def udp_sport(frame: bytes) -> int | None:
    """Source port of a UDP datagram in an Ethernet frame (IPv4 or IPv6), else None."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.udp.UDP):
        return int(ip.data.sport)
    return None


# --- tests ---------------------------------------------------------------------------------------------


def test_counts_match_sent_and_tcpdump(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    tcpdump = Tcpdump(veth_rig, tmp_path / "oracle.pcap")
    child = start_capture(veth_rig, {})
    sent4 = veth_rig.send_udp("a", veth_rig.blackhole4, 9, 41000, 5, 100, size=100)
    sent6 = veth_rig.send_udp("a", veth_rig.blackhole6, 9, 42000, 3, 100, size=1200)
    result = stop_capture(child)
    oracle = tcpdump.stop()

    ours = result["frames"]
    assert result["linktype"] == LINKTYPE_ETHERNET
    sports = [udp_sport(f) for f, _, _ in ours]
    assert sum(1 for p in sports if p is not None and 41000 <= p < 41005) == sent4 == 500
    assert sum(1 for p in sports if p is not None and 42000 <= p < 42003) == sent6 == 300
    assert len(ours) == len(oracle) == 800
    assert sorted(ours) == sorted(oracle)  # same bytes, same kernel timestamps, same wire lengths
    assert [ts for _, ts, _ in ours] == sorted(ts for _, ts, _ in ours)
    assert result["stats"] == RingStats(packets=800, drops=0, freeze_q_cnt=0)


def test_snaplen_cuts_frames_like_tcpdump(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    tcpdump = Tcpdump(veth_rig, tmp_path / "oracle.pcap", snaplen=96)
    child = start_capture(veth_rig, {"snaplen": 96})
    sent = veth_rig.send_udp("a", veth_rig.blackhole4, 9, 43000, 2, 50, size=700)
    result = stop_capture(child)
    oracle = tcpdump.stop()
    assert len(result["frames"]) == sent == 100
    assert all(len(f) == 96 and wire == 14 + 20 + 8 + 700 for f, _, wire in result["frames"])
    assert sorted(result["frames"]) == sorted(oracle)


def test_fanout_hash_splits_flows(veth_rig: netns.VethRig) -> None:
    group = (4242, "hash", 0)
    workers = [start_capture(veth_rig, {"fanout": group}) for _ in range(2)]
    busy = netns.in_netns(veth_rig.ns_a, open_error_child, netns.IF_A, {"fanout": (4242, "lb", 0)}).result()
    sent = veth_rig.send_udp("a", veth_rig.blackhole4, 9, 44000, 64, 10)
    results = [stop_capture(w) for w in workers]

    assert busy == "fanout group 4242 is in use with another mode, flags or interface"
    flows = [{udp_sport(f) for f, _, _ in r["frames"]} for r in results]
    counts = [len(r["frames"]) for r in results]
    assert sent == 640
    assert sum(counts) == 640, counts  # nothing lost, nothing seen twice (the drop-all filter before joining)
    assert not flows[0] & flows[1], "a flow reached both sockets"
    assert flows[0] | flows[1] == set(range(44000, 44064))
    assert all(counts), f"hash fanout left one socket empty: {counts}"
    assert [r["stats"].packets for r in results] == counts


def test_classic_filter_passes_what_tcpdump_passes(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expression = "udp src portrange 45000-45004 or (ip6 and greater 500)"
    compiled = classic.compile_filter(expression)
    filtered = Tcpdump(veth_rig, tmp_path / "filtered.pcap", expression)
    everything = Tcpdump(veth_rig, tmp_path / "all.pcap")
    child = start_capture(veth_rig, {"classic_bpf": compiled.instructions})
    veth_rig.send_udp("a", veth_rig.blackhole4, 9, 45000, 10, 20)  # half of these flows match
    veth_rig.send_udp("a", veth_rig.blackhole6, 9, 46000, 2, 20, size=100)  # too short
    veth_rig.send_udp("a", veth_rig.blackhole6, 9, 46000, 2, 20, size=1000)  # match
    result = stop_capture(child)
    oracle = filtered.stop()
    unfiltered = everything.stop()

    assert len(unfiltered) == 200 + 40 + 40
    assert len(result["frames"]) == len(oracle) == 100 + 40
    assert sorted(result["frames"]) == sorted(oracle)
    # the same program run offline picks the same frames out of the unfiltered capture
    assert sorted(f for f in unfiltered if compiled.matches(f[0])) == sorted(oracle)
    # frames the filter rejects are not counted by the kernel
    assert result["stats"].packets == 140


def test_promiscuity_is_undone_on_close_and_on_sigkill(veth_rig: netns.VethRig) -> None:
    before = veth_rig.promiscuity("a")
    holder = netns.in_netns(veth_rig.ns_a, hold_child, {"promisc": True})
    holder.expect("ready")
    assert veth_rig.promiscuity("a") == before + 1
    holder.send("go")
    assert holder.result() == "closed"
    holder.kill()
    assert veth_rig.promiscuity("a") == before

    victim = netns.in_netns(veth_rig.ns_a, hold_child, {"promisc": True})
    victim.expect("ready")
    assert veth_rig.promiscuity("a") == before + 1
    victim.kill()  # SIGKILL: no Python cleanup runs; the kernel drops the membership with the socket
    deadline = time.monotonic() + 5
    while veth_rig.promiscuity("a") != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert veth_rig.promiscuity("a") == before


def test_stats_count_drops_when_the_ring_overflows(veth_rig: netns.VethRig) -> None:
    # 1 MiB of 4 KiB blocks, ~19 small frames per block: about 4,800 frames fit, nobody reads during the burst
    child = start_capture(veth_rig, {"snaplen": 128, "ring_mb": 1, "block_size": 4096}, hold=True)
    sent = veth_rig.send_udp("a", veth_rig.blackhole4, 9, 47000, 4, 2000)
    result = stop_capture(child)
    stats: RingStats = result["stats"]
    assert sent == 8000
    assert stats.packets == sent  # tp_packets includes the drops
    assert stats.drops > 0
    assert len(result["frames"]) == stats.packets - stats.drops
    assert result["stats_again"] == stats  # totals survive the kernel's reset-on-read


def test_pcapwriter_output_reads_back_in_tcpdump(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    path = tmp_path / "live.pcap"
    child = start_capture(veth_rig, {}, str(path))
    sent = veth_rig.send_udp("a", veth_rig.blackhole4, 9, 48000, 3, 40, size=300)
    result = stop_capture(child)
    assert sent == 120
    assert sorted(read_pcap(path)) == sorted(result["frames"])
    listing = subprocess.run(
        ["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True, timeout=30, check=True
    )
    assert len(listing.stdout.splitlines()) == 120
    assert "link-type EN10MB" in listing.stderr
    tshark = subprocess.run(
        ["tshark", "-r", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert len(tshark.stdout.splitlines()) == 120


# Sends 802.1Q-tagged frames (VLAN 100, inner IPv4/UDP) as raw bytes out of veth-a, bounded in count.
_TAGGED_SENDER = """
import socket, struct, sys
dst, src, count = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("veth-a", 0))
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 32, 1, 0, 64, 17, 0, bytes([10, 201, 0, 1]), bytes([10, 201, 0, 2]))
for i in range(count):
    udp = struct.pack("!HHHH", 50000 + i % 4, 9, 8 + 32, 0) + bytes(32)
    s.send(dst + src + struct.pack("!HHH", 0x8100, 100, 0x0800) + ip + udp)
print(count)
"""


def test_vlan_tags_are_put_back_like_libpcap(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    # veth-b's receive path moves the tag into skb metadata (skb_vlan_untag) before packet sockets see
    # the frame, so the ring reports it in tp_vlan_tci; libpcap puts it back, and so must we.
    tcpdump = Tcpdump(veth_rig, tmp_path / "oracle.pcap", side="b")
    child = start_capture(veth_rig, {}, side="b")
    mac_b, mac_a = (m.replace(":", "") for m in (netns.MAC_B, netns.MAC_A))
    sent = int(veth_rig.python("a", _TAGGED_SENDER, mac_b, mac_a, "40").stdout)
    result = stop_capture(child)
    oracle = tcpdump.stop()
    assert sent == 40
    assert len(result["frames"]) == 40
    assert all(
        f[12:18] == b"\x81\x00\x00\x64\x08\x00" and len(f) == wire == 78 for f, _, wire in result["frames"]
    )
    assert sorted(result["frames"]) == sorted(oracle)


# --- errors a user causes ---------------------------------------------------------------------------------


def test_open_errors_are_one_clear_line(veth_rig: netns.VethRig) -> None:
    # a second veth pair, left down (this kernel has no dummy driver)
    veth_rig.run("a", ["ip", "link", "add", "down9", "type", "veth", "peer", "name", "down9p"])
    try:

        def error(ifname: str, **kwargs: Any) -> str:
            return netns.in_netns(veth_rig.ns_a, open_error_child, ifname, kwargs).result()

        assert error("eth9") == "no such interface: eth9"
        assert error("x" * 20) == f"no such interface: {'x' * 20}"
        assert error("down9") == "interface is down: down9 (bring it up with `ip link set down9 up`)"
        assert error(netns.IF_A, block_size=5000).startswith(
            "bad ring size: block size 5000 is not a multiple of the page size"
        )
        assert error(netns.IF_A, block_size=4096).startswith("bad ring size: block size 4096 cannot hold one")
        assert error(netns.IF_A, fanout=(1, "bogus", 0)).startswith("bad fanout group")
    finally:
        veth_rig.run("a", ["ip", "link", "del", "down9"], check=False)


def test_without_cap_net_raw_the_message_says_what_to_do(veth_rig: netns.VethRig) -> None:
    code = (
        "from pktscope.capture.afpacket import PacketRing, LiveCaptureError\n"
        "try:\n    PacketRing.open('veth-a')\nexcept LiveCaptureError as exc:\n    print(exc)\n"
    )
    python = os.path.realpath(sys.executable)
    # uid 0 with an empty bounding set: root's files stay readable, but no capability survives exec
    out = veth_rig.run("a", ["setpriv", "--bounding-set=-all", python, "-c", code]).stdout.strip()
    assert out == f"capturing needs CAP_NET_RAW: run as root or `setcap cap_net_raw+eip {python}`"


def test_bad_filter_expression_is_one_line_with_libpcap_message() -> None:
    with pytest.raises(classic.FilterError) as info:
        classic.compile_filter("udp prt 53")
    assert (
        str(info.value) == "bad filter expression 'udp prt 53': can't parse filter expression: syntax error"
    )
    with pytest.raises(classic.FilterError, match="netmask not known"):
        classic.compile_filter("ip broadcast")


def test_constants_agree_with_the_installed_kernel_header() -> None:
    header = Path("/usr/include/linux/if_packet.h")
    if not header.exists():
        pytest.skip("linux/if_packet.h not installed")
    define = re.compile(
        r"^#define\s+((?:PACKET|TP_STATUS)_\w+)\s+\(?\s*(0x[0-9a-fA-F]+|\d+)(?:U?\s*<<\s*(\d+))?\s*\)?"
    )
    checked = 0
    for line in header.read_text().splitlines():
        match = define.match(line)
        if match and hasattr(kernel, match[1]):
            value = int(match[2], 0) << int(match[3] or 0)
            assert getattr(kernel, match[1]) == value, match[1]
            checked += 1
    assert checked > 40


def _walk(block: bytes, count: int, first: int) -> list[int]:
    """tp_next_offset followed frame by frame: the plain reading of packet_mmap.rst."""
    heads, h = [], first
    for _ in range(count):
        heads.append(h)
        h += struct.unpack_from("=I", block, h)[0]
    return heads


@pytest.mark.parametrize("sizes", [
    [144] * 700,  # a flood of equal frames: the guessed layout holds
    [144] * 100 + [208] + [144] * 50,  # it fails at one frame: walked from there
    [80, 144, 1600, 80, 80, 144] * 40,  # mixed sizes: fails the first probe
    [144], [144, 152], [0], [],
])
def test_frame_heads_follow_the_next_offset_chain(sizes: list[int]) -> None:
    from pktscope.capture.afpacket import _frame_heads

    first = 48  # tpacket_block_desc, aligned
    block = bytearray(first + sum(sizes) + 64)
    at = first
    for i, size in enumerate(sizes):
        struct.pack_into("=I", block, at, size if i < len(sizes) - 1 else 0)  # the last frame's offset is 0
        at += size
    assert _frame_heads(bytes(block), len(sizes), first).tolist() == _walk(bytes(block), len(sizes), first)
