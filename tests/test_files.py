"""Capture file readers: files built byte by byte here, checked against tshark/tcpdump and real captures."""

from __future__ import annotations

import csv
import os
import shutil
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dpkt
import numpy as np
import pytest

from pktscope.capture.batch import Batch
from pktscope.capture.files import (
    CHUNK_SIZE,
    DEFAULT_BATCH_FRAMES,
    CaptureError,
    CaptureReader,
    _pick,
    _prove_chain,
    open_capture,
)

TSHARK = shutil.which("tshark")
TCPDUMP = shutil.which("tcpdump")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed")
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
T0 = 1_700_000_000  # an arbitrary second since the epoch


# -- real frames ----------------------------------------------------------------------------------


def udp_frame(i: int, payload_len: int = 20) -> bytes:
    """An Ethernet/IPv4/UDP frame, different for every i."""
    udp = dpkt.udp.UDP(sport=40000 + i, dport=53, data=bytes([i & 0xFF]) * payload_len)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=dpkt.ip.IP_PROTO_UDP, data=udp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(
        src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02", type=0x0800, data=ip
    )
    return bytes(eth)


def raw_ipv6_frame(i: int) -> bytes:
    """A raw IPv6/UDP packet (LINKTYPE_RAW), different for every i."""
    udp = dpkt.udp.UDP(sport=50000 + i, dport=123, data=b"ntp" + bytes([i & 0xFF]))
    udp.ulen = len(udp)
    ip6 = dpkt.ip6.IP6(src=b"\xfe\x80" + b"\x00" * 13 + b"\x01", dst=b"\xfe\x80" + b"\x00" * 13 + b"\x02")
    ip6.nxt, ip6.hlim, ip6.data, ip6.plen = dpkt.ip.IP_PROTO_UDP, 64, udp, len(udp)
    return bytes(ip6)


def sll_frame(i: int) -> bytes:
    """A Linux cooked (SLL v1) header carrying an IPv4/UDP packet."""
    ip = udp_frame(i)[14:]
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x09\x00\x00", 0x0800) + ip


# -- pcap writer ----------------------------------------------------------------------------------


def pcap_bytes(
    records: list[tuple[int, bytes, int]],
    *,
    order: str = "<",
    nsec: bool = False,
    linktype: int = LINKTYPE_ETHERNET,
    snaplen: int = 65535,
) -> bytes:
    """A classic pcap file; records are (ts_ns, captured bytes, wire length)."""
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, data, wirelen in records:
        sec, ns = divmod(ts_ns, 1_000_000_000)
        out.append(struct.pack(order + "IIII", sec, ns if nsec else ns // 1000, len(data), wirelen))
        out.append(data)
    return b"".join(out)


# -- pcapng writer (draft-ietf-opsawg-pcapng) -----------------------------------------------------


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, snaplen: int = 0, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += option(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, iface: int, ticks: int, data: bytes, wirelen: int | None = None) -> bytes:
    wl = len(data) if wirelen is None else wirelen
    return block(
        order, 6, struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), wl) + data
    )


def pb(order: str, iface: int, ticks: int, data: bytes, drops: int = 0) -> bytes:
    """Obsolete Packet Block (appendix A): 16-bit interface id, 16-bit drops count."""
    head = struct.pack(order + "HHIIII", iface, drops, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + data)


def spb(order: str, data: bytes, wirelen: int | None = None) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(data) if wirelen is None else wirelen) + data)


# -- oracles --------------------------------------------------------------------------------------


def read_all(reader: CaptureReader) -> list[Batch]:
    return list(reader)


def frames_of(batches: list[Batch]) -> list[tuple[int, bytes, int, int]]:
    """(ts_ns, bytes, wire length, link type) of every frame, in order."""
    return [
        (int(b.ts_ns[i]), b.frame(i), int(b.wirelens[i]), int(b.linktypes[i]))
        for b in batches
        for i in range(len(b))
    ]


def tshark_frames(path: Path) -> list[tuple[int, int, int]]:
    """(ts_ns, captured length, wire length) of every frame, as tshark reads the file."""
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.cap_len",
         "-e", "frame.len"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    # a frame without a timestamp (SPB, section 4.4) has an empty time; the reader gives it 0
    return [(int(Decimal(t or 0) * 1_000_000_000), int(c), int(w)) for t, c, w in rows]


def tshark_protocols(path: Path) -> list[str]:
    """The first protocol tshark sees in each frame (shows the link type it used)."""
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "frame.protocols"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split(":")[0] for line in out.splitlines()]


def tcpdump_read(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TCPDUMP, "-nn", "-tt", "--time-stamp-precision=nano", "-r", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )


def ours(path: Path) -> list[tuple[int, int, int]]:
    return [(t, len(data), w) for t, data, w, _ in frames_of(read_all(open_capture(str(path))))]


# -- pcap -----------------------------------------------------------------------------------------

PCAP_VARIANTS = [("<", False), (">", False), ("<", True), (">", True)]


def three_records(nsec: bool) -> list[tuple[int, bytes, int]]:
    frac = 123_456_789 if nsec else 123_456_000  # microsecond files cannot hold the last digits
    f0, f1, f2 = udp_frame(0), udp_frame(1, 200), udp_frame(2)
    # the second frame is cut at 60 bytes (a snaplen-style capture: caplen < wire length)
    return [
        (T0 * 10**9 + frac, f0, len(f0)),
        (T0 * 10**9 + 2 * frac, f1[:60], len(f1)),
        ((T0 + 5) * 10**9, f2, len(f2)),
    ]


@pytest.mark.parametrize(("order", "nsec"), PCAP_VARIANTS)
def test_pcap_variants_read_back_what_was_written(tmp_path: Path, order: str, nsec: bool) -> None:
    records = three_records(nsec)
    path = tmp_path / "x.cap"  # the name says nothing: the format comes from the magic
    path.write_bytes(pcap_bytes(records, order=order, nsec=nsec))
    with open_capture(str(path)) as reader:
        assert reader.format == "pcap"
        assert reader.linktypes == [LINKTYPE_ETHERNET]
        batches = read_all(reader)
        assert not reader.truncated and reader.warning is None
        assert reader.bytes_read == reader.size == path.stat().st_size
    assert frames_of(batches) == [(t, d, w, LINKTYPE_ETHERNET) for t, d, w in records]
    b = batches[0]
    assert (b.offsets.dtype, b.caplens.dtype, b.wirelens.dtype, b.ts_ns.dtype, b.linktypes.dtype) == (
        np.int64, np.uint32, np.uint32, np.int64, np.uint16,
    )  # fmt: skip


@needs_tshark
@pytest.mark.parametrize(("order", "nsec"), PCAP_VARIANTS)
def test_pcap_variants_agree_with_tshark(tmp_path: Path, order: str, nsec: bool) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(three_records(nsec), order=order, nsec=nsec))
    assert ours(path) == tshark_frames(path)


@needs_tcpdump
def test_pcap_linktype_fcs_bits_are_masked_like_libpcap(tmp_path: Path) -> None:
    # LinkType 0x30000001: Ethernet with the F bit and an FCS length in the upper bits (libpcap LT_LINKTYPE)
    path = tmp_path / "fcs.pcap"
    path.write_bytes(pcap_bytes([(T0 * 10**9, udp_frame(0), 60)], linktype=0x30000000 | LINKTYPE_ETHERNET))
    reader = open_capture(str(path))
    assert reader.linktypes == [LINKTYPE_ETHERNET]
    assert int(read_all(reader)[0].linktypes[0]) == LINKTYPE_ETHERNET
    assert "link-type EN10MB" in tcpdump_read(path).stderr


def test_pcap_caplen_greater_than_wirelen_is_kept(tmp_path: Path) -> None:
    frame = udp_frame(3)
    path = tmp_path / "odd.pcap"
    path.write_bytes(pcap_bytes([(T0 * 10**9, frame, 20), ((T0 + 1) * 10**9, frame, len(frame))]))
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [(d, w) for _, d, w, _ in got] == [(frame, 20), (frame, len(frame))]
    assert not reader.truncated


@needs_tcpdump
def test_pcap_absurd_caplen_stops_like_libpcap(tmp_path: Path) -> None:
    good = [(T0 * 10**9 + i, udp_frame(i), len(udp_frame(i))) for i in range(2)]
    data = pcap_bytes(good) + struct.pack("<IIII", T0, 0, 300_000, 300_000) + b"\0" * 64
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(data)
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == [d for _, d, _ in good]
    assert reader.truncated
    assert reader.warning is not None and "300000" in reader.warning and "2 packets" in reader.warning
    td = tcpdump_read(path)
    assert "invalid packet capture length 300000" in td.stderr
    assert len(td.stdout.splitlines()) == 2


@needs_tcpdump
@pytest.mark.parametrize("cut", [5, 20])  # inside the 16-byte record header / inside the packet data
def test_pcap_truncated_mid_record_keeps_what_came_before(tmp_path: Path, cut: int) -> None:
    records = [(T0 * 10**9 + i * 1000, udp_frame(i), len(udp_frame(i))) for i in range(3)]
    full = pcap_bytes(records)
    last_start = len(full) - 16 - len(records[-1][1])
    path = tmp_path / "cut.pcap"
    path.write_bytes(full[: last_start + cut])
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == [d for _, d, _ in records[:2]]
    assert reader.truncated
    assert reader.warning == f"file ends mid-record after 2 packets (offset {last_start})"
    td = tcpdump_read(path)
    assert "truncated dump file" in td.stderr
    assert len(td.stdout.splitlines()) == 2


def test_pcap_header_only_gives_no_batches(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(pcap_bytes([], order=">", nsec=True, linktype=LINKTYPE_RAW))
    reader = open_capture(str(path))
    assert reader.linktypes == [LINKTYPE_RAW]
    assert read_all(reader) == []
    assert not reader.truncated and reader.warning is None


def test_records_straddling_chunks_and_batches_stay_valid(tmp_path: Path) -> None:
    # a 64-byte chunk forces every record across a chunk boundary, and one record (1400 bytes of
    # payload) is far bigger than a chunk
    records = [(T0 * 10**9 + i * 1000, udp_frame(i, 1400 if i == 4 else 10 + i), 0) for i in range(9)]
    records = [(t, d, len(d)) for t, d, _ in records]
    path = tmp_path / "chunks.pcap"
    path.write_bytes(pcap_bytes(records))
    batches = read_all(open_capture(str(path), batch_frames=2, chunk_size=64))
    assert all(1 <= len(b) <= 2 for b in batches)
    # read only after all batches exist: a reused buffer would show up as wrong bytes here
    assert frames_of(batches) == [(t, d, w, LINKTYPE_ETHERNET) for t, d, w in records]


def many_chunks(tmp_path: Path) -> tuple[Path, list[tuple[int, bytes, int, int]]]:
    """A pcap of 300 frames of different bytes, and its frames as frames_of gives them."""
    records = [(T0 * 10**9 + i * 1000, udp_frame(i, 10 + i % 50), 0) for i in range(300)]
    records = [(t, d, len(d)) for t, d, _ in records]
    path = tmp_path / "many-chunks.pcap"
    path.write_bytes(pcap_bytes(records))
    return path, [(t, d, w, LINKTYPE_ETHERNET) for t, d, w in records]


def test_chunk_arrays_are_reused_once_no_batch_points_into_them(tmp_path: Path) -> None:
    path, frames = many_chunks(tmp_path)
    seen: list[weakref.ref] = []  # the chunk arrays met (a weak reference keeps none alive for reuse)
    got = []
    with open_capture(str(path), batch_frames=3, chunk_size=2000) as reader:
        for batch in reader:
            got += frames_of([batch])
            array = batch.buf.obj  # type: ignore[union-attr]
            if not any(known() is array for known in seen):
                seen.append(weakref.ref(array))
            del array
    assert got == frames
    assert path.stat().st_size > 10 * 2000 and len(seen) <= 3  # over ten chunks read into three arrays at most


def test_batches_and_views_kept_while_reading_keep_their_bytes(tmp_path: Path) -> None:
    # Batches dropped as they come (their arrays are reused) between batches, memoryviews and numpy
    # views that are kept: what is kept is read only after the whole file, so a reused array would
    # show up as wrong bytes
    path, frames = many_chunks(tmp_path)
    kept_batches: list[tuple[int, Batch]] = []
    kept_views: list[tuple[int, memoryview, np.ndarray]] = []
    with open_capture(str(path), batch_frames=3, chunk_size=500) as reader:
        first = 0
        for n, batch in enumerate(reader):
            if n % 7 == 0:
                kept_batches.append((first, batch))
            elif n % 7 == 3:
                start, cap = int(batch.offsets[0]), int(batch.caplens[0])
                view = memoryview(batch.buf)[start : start + cap]
                kept_views.append((first, view, np.frombuffer(batch.buf, dtype=np.uint8)[start : start + cap]))
            first += len(batch)
    assert len(kept_batches) > 10 and len(kept_views) > 10
    for first, batch in kept_batches:
        assert frames_of([batch]) == frames[first : first + len(batch)]
    for first, view, array in kept_views:
        assert bytes(view) == array.tobytes() == frames[first][1]


def test_batches_hold_at_most_batch_frames(tmp_path: Path) -> None:
    records = [(T0 * 10**9 + i * 1000, udp_frame(i), len(udp_frame(i))) for i in range(10)]
    path = tmp_path / "ten.pcap"
    path.write_bytes(pcap_bytes(records))
    reader = open_capture(str(path), batch_frames=4)
    assert [len(b) for b in reader] == [4, 4, 2]
    assert reader.frames == 10
    # a second pass reads the file again from the start
    assert sum(len(b) for b in reader) == 10


# -- pcapng ---------------------------------------------------------------------------------------

UNKNOWN_BLOCK = 0x0BADF00C  # not a registered block type: readers skip it by its length (section 3.1)


def two_section_pcapng() -> tuple[bytes, list[tuple[int, bytes, int, int]]]:
    """A pcapng file exercising interfaces, time resolutions, SPB, PB, an unknown block, two sections.

    Returns the file and the frames it holds as (ts_ns, bytes, wire length, link type).
    """
    le, be = "<", ">"
    f = [udp_frame(i) for i in range(6)]
    r6 = raw_ipv6_frame(7)
    s = sll_frame(8)
    expect: list[tuple[int, bytes, int, int]] = []
    parts = [shb(le)]
    parts.append(idb(le, LINKTYPE_ETHERNET, snaplen=70))  # interface 0: microseconds (default)
    parts.append(idb(le, LINKTYPE_RAW, tsresol=9, tsoffset=100))  # interface 1: ns, +100 s
    us = T0 * 10**6 + 250_000
    parts.append(epb(le, 0, us, f[0]))
    expect.append((us * 1000, f[0], len(f[0]), LINKTYPE_ETHERNET))
    ns = T0 * 10**9 + 987_654_321
    parts.append(epb(le, 1, ns, r6))
    expect.append((ns + 100 * 10**9, r6, len(r6), LINKTYPE_RAW))
    parts.append(block(le, UNKNOWN_BLOCK, b"skip me!"))
    # SPB: interface 0, no timestamp; it holds min(original length, interface 0's snaplen of 70)
    # bytes (section 4.4), the reader knows that length only from the snaplen
    spb_data = (f[1] + b"\0" * 30)[:70]
    parts.append(spb(le, spb_data, wirelen=len(f[1]) + 30))
    expect.append((0, spb_data, len(f[1]) + 30, LINKTYPE_ETHERNET))
    # PB on interface 1 after a nonzero drops count: the two 16-bit fields must not be confused
    parts.append(pb(le, 1, ns + 1, r6, drops=3))
    expect.append((ns + 1 + 100 * 10**9, r6, len(r6), LINKTYPE_RAW))
    # second section, big-endian, with its own interface list: its interface 0 is Linux SLL
    parts.append(shb(be))
    parts.append(idb(be, LINKTYPE_LINUX_SLL, tsresol=0x80 | 10))  # units of 2**-10 s
    ticks = T0 * 1024 + 512
    parts.append(epb(be, 0, ticks, s))
    expect.append((T0 * 10**9 + 500_000_000, s, len(s), LINKTYPE_LINUX_SLL))
    parts.append(epb(be, 0, ticks + 1, f[3][:40], wirelen=len(f[3])))
    expect.append((T0 * 10**9 + 500_000_000 + 976_562, f[3][:40], len(f[3]), LINKTYPE_LINUX_SLL))
    return b"".join(parts), expect


def test_pcapng_interfaces_resolutions_block_kinds_and_sections(tmp_path: Path) -> None:
    data, expect = two_section_pcapng()
    path = tmp_path / "mixed.pcap"  # a pcapng file with a .pcap name, as in the wild
    path.write_bytes(data)
    with open_capture(str(path), batch_frames=3) as reader:
        assert reader.format == "pcapng"
        got = frames_of(read_all(reader))
        assert reader.linktypes == [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL]
        assert not reader.truncated and reader.skipped == 0
        assert reader.bytes_read == reader.size
    assert got == expect


@needs_tshark
def test_pcapng_agrees_with_tshark(tmp_path: Path) -> None:
    data, _ = two_section_pcapng()
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(data)
    assert ours(path) == tshark_frames(path)
    # tshark decodes each frame with its own interface's link type, as our per-frame linktypes say
    assert tshark_protocols(path) == ["eth", "raw", "eth", "raw", "sll", "sll"]


@needs_tcpdump
def test_pcapng_single_interface_agrees_with_tcpdump(tmp_path: Path) -> None:
    frames = [udp_frame(i) for i in range(3)]
    data = (
        shb("<")
        + idb("<", LINKTYPE_ETHERNET, tsresol=9)
        + b"".join(epb("<", 0, T0 * 10**9 + 111 * i, f) for i, f in enumerate(frames))
    )
    path = tmp_path / "one.pcapng"
    path.write_bytes(data)
    lines = tcpdump_read(path).stdout.splitlines()
    assert [line.split()[0] for line in lines] == [f"{t // 10**9}.{t % 10**9:09d}" for t, _, _ in ours(path)]
    assert [t for t, _, _ in ours(path)] == [T0 * 10**9 + 111 * i for i in range(3)]


def test_pcapng_unknown_interface_frames_are_skipped_and_counted(tmp_path: Path) -> None:
    f = [udp_frame(i) for i in range(3)]
    data = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, f[0]) + epb("<", 5, 2, f[1])
    data += epb("<", 0, 3, f[2])
    path = tmp_path / "ghost.pcapng"
    path.write_bytes(data)
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == [f[0], f[2]]
    assert reader.skipped == 1
    assert not reader.truncated
    assert reader.warning is not None and "skipped 1 packets" in reader.warning


def test_pcapng_spb_without_any_interface_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "noidb.pcapng"
    path.write_bytes(shb("<") + spb("<", udp_frame(0)))
    reader = open_capture(str(path))
    assert read_all(reader) == []
    assert reader.skipped == 1


@needs_tshark
def test_pcapng_invalid_block_length_stops_with_warning(tmp_path: Path) -> None:
    f = [udp_frame(i) for i in range(2)]
    good = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, f[0]) + epb("<", 0, 2, f[1])
    bad = struct.pack("<II", 6, 45) + b"\0" * 41  # 45 is not a multiple of 4 (section 3.1)
    path = tmp_path / "badlen.pcapng"
    path.write_bytes(good + bad)
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == f
    assert reader.truncated
    assert reader.warning is not None and f"offset {len(good)}" in reader.warning
    ts = subprocess.run([TSHARK, "-n", "-r", str(path)], check=False, capture_output=True, text=True)
    assert ts.returncode != 0 and len(ts.stdout.splitlines()) == 2


@needs_tshark
def test_pcapng_caplen_past_block_end_stops(tmp_path: Path) -> None:
    f = [udp_frame(i) for i in range(2)]
    head = shb("<") + idb("<", LINKTYPE_ETHERNET) + epb("<", 0, 1, f[0])
    lying = bytearray(epb("<", 0, 2, f[1]))
    struct.pack_into("<I", lying, 20, len(f[1]) + 100)  # captured length bigger than the block holds
    path = tmp_path / "lying.pcapng"
    path.write_bytes(head + bytes(lying) + epb("<", 0, 3, f[0]))
    reader = open_capture(str(path))
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == [f[0]]
    assert reader.truncated and reader.warning is not None and f"offset {len(head)}" in reader.warning
    ts = subprocess.run([TSHARK, "-n", "-r", str(path)], check=False, capture_output=True, text=True)
    assert len(ts.stdout.splitlines()) == 1


@needs_tshark
@pytest.mark.parametrize("cut", [6, 30])  # inside the block header / inside the packet data
def test_pcapng_truncated_mid_block(tmp_path: Path, cut: int) -> None:
    f = [udp_frame(i) for i in range(3)]
    head = shb(">") + idb(">", LINKTYPE_ETHERNET) + epb(">", 0, 1, f[0]) + epb(">", 0, 2, f[1])
    path = tmp_path / "cut.pcapng"
    path.write_bytes(head + epb(">", 0, 3, f[2])[:cut])
    reader = open_capture(str(path), chunk_size=100)
    got = frames_of(read_all(reader))
    assert [d for _, d, _, _ in got] == f[:2]
    assert reader.truncated
    assert reader.warning == f"file ends mid-block after 2 packets (offset {len(head)})"
    assert len(tshark_frames_lenient(path)) == 2


def tshark_frames_lenient(path: Path) -> list[str]:
    """Frame lines tshark prints before it gives up on a damaged file."""
    return subprocess.run(
        [TSHARK, "-n", "-r", str(path)], check=False, capture_output=True, text=True
    ).stdout.splitlines()


def test_pcapng_many_frames_across_chunks_and_batches(tmp_path: Path) -> None:
    frames = [udp_frame(i, 5 + i % 50) for i in range(200)]
    data = (
        shb("<")
        + idb("<", LINKTYPE_ETHERNET, tsresol=3)
        + b"".join(epb("<", 0, T0 * 1000 + i, f) for i, f in enumerate(frames))
    )
    path = tmp_path / "many.pcapng"
    path.write_bytes(data)
    batches = read_all(open_capture(str(path), batch_frames=7, chunk_size=300))
    assert max(len(b) for b in batches) <= 7
    assert [(t, d) for t, d, _, _ in frames_of(batches)] == [
        ((T0 * 1000 + i) * 10**6, f) for i, f in enumerate(frames)
    ]


# -- bad input ------------------------------------------------------------------------------------


def assert_capture_error(path: Path, needle: str) -> None:
    with pytest.raises(CaptureError) as err:
        open_capture(str(path))
    message = str(err.value)
    assert str(path) in message and needle in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    assert_capture_error(tmp_path / "nope.pcap", "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_capture_error(tmp_path, "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    assert_capture_error(path, "empty")


def test_text_file_is_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("these are not packets\n" * 10)
    assert_capture_error(path, "not a pcap or pcapng capture file")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (pcap_bytes([])[:10], "truncated pcap file header"),
        (shb("<")[:10], "truncated pcapng section header"),
        (shb("<")[:8] + b"\x01\x02\x03\x04" + shb("<")[12:], "bad pcapng byte-order magic"),
    ],
    ids=["pcap", "pcapng", "pcapng-byte-order"],
)
def test_truncated_or_bad_file_header(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "short.cap"
    path.write_bytes(data)
    assert_capture_error(path, needle)


def test_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.pcap"
    path.write_bytes(pcap_bytes([(T0 * 10**9, udp_frame(0), 60)]))
    path.chmod(0)
    if os.geteuid() != 0:
        assert_capture_error(path, "permission denied")
        return
    # root reads a mode-000 file anyway: open it from a forked child that gave up root
    try:
        import pwd

        nobody = pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        pytest.skip("running as root and there is no 'nobody' user to open the file as")
    tmp_path.chmod(0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, report what open_capture said, never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                open_capture(str(path))
                message = "opened"
            except CaptureError as e:
                message = str(e)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read().decode()
    os.waitpid(pid, 0)
    assert message == f"{path}: permission denied"


# -- real captures --------------------------------------------------------------------------------

CORPUS_FILES = [
    "tcpdump/tcp-handshake-nano.pcap",  # nanosecond pcap
    "tcpdump/isup.pcap",  # big-endian pcap
    "PcapPlusPlus/Tests/Packet++Test/PacketExamples/ldap.pcapng",  # Ethernet + Linux SLL interfaces
    "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/many_interfaces-1.pcapng",  # 11 interfaces
    "packets/dns.pcap",  # pcapng under a .pcap name
    "retina/traces/quic_retry.pcapng",  # classic pcap under a .pcapng name
    "PcapPlusPlus/Tests/ExamplesTest/pcap_examples/http-packets.pcap",  # 2.6 MB, many chunks below
]


@pytest.fixture(scope="module")
def corpus_reference() -> dict[str, dict[str, str]]:
    if not (CORPUS / "reference.tsv").is_file():
        pytest.skip(f"real-capture corpus not found at {CORPUS} (only in the shared workspace)")
    with open(CORPUS / "reference.tsv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_frame_counts_match_capinfos(corpus_reference: dict[str, dict[str, str]], name: str) -> None:
    ref = corpus_reference[name]
    with open_capture(str(CORPUS / name), chunk_size=1 << 16) as reader:
        batches = read_all(reader)
        assert not reader.truncated
        assert reader.format == ("pcapng" if ref["file_format"] == "pcapng" else "pcap")
    assert sum(len(b) for b in batches) == int(ref["packets"])
    for b in batches:
        assert np.all(b.offsets + b.caplens <= len(b.buf))
    # tcpdump names the first frame's link type; "A+B" lists the mix in a pcapng file
    first = ref["linktype"].split("+")[0]
    names = {"EN10MB": 1, "LINUX_SLL": 113}
    if first in names:
        assert int(batches[0].linktypes[0]) == names[first]


@needs_tshark
def test_corpus_mixed_interfaces_agree_with_tshark(corpus_reference: dict[str, dict[str, str]]) -> None:
    path = CORPUS / "PcapPlusPlus/Tests/Packet++Test/PacketExamples/ldap.pcapng"
    assert ours(path) == tshark_frames(path)


# -- the vectorized pcap record walk against the plain one ----------------------------------------
#
# CaptureReader walks pcap records with numpy where it can prove the chain and with the plain Python
# loop elsewhere; `_fast_walk = False` makes it use the plain loop only. Both must give the same
# batches (arrays, split points, buffers), the same bytes_read after each, and the same ending.

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
# thresholds of the fast walk: as shipped, and forced on everywhere with tiny windows (so that small
# files and small chunks take it, and its steps stop short all the time)
WALK_TUNINGS: dict[str, dict[str, int]] = {
    "shipped": {},
    "eager": {"FAST_WALK_MIN_BYTES": 0, "FAST_WALK_FIRST_WINDOW": 64, "FAST_WALK_POOR_STEPS": 10**9},
    "short": {"FAST_WALK_MIN_BYTES": 200, "FAST_WALK_FIRST_WINDOW": 1000, "FAST_WALK_POOR_STEPS": 2},
}
# (chunk_size, batch_frames, tuning)
WALK_CONFIGS = [
    (CHUNK_SIZE, DEFAULT_BATCH_FRAMES, "shipped"),
    (1 << 20, DEFAULT_BATCH_FRAMES, "shipped"),
    (1000, DEFAULT_BATCH_FRAMES, "eager"),
    (4099, 7, "eager"),
    (100_003, 1000, "short"),
]


def walk_read(
    path: Path, chunk_size: int, batch_frames: int, fast: bool, tuning: str
) -> tuple[list, tuple, int]:
    """Every batch's arrays and bytes_read, the reader's final state, and the records the fast walk proved."""
    with open_capture(str(path), batch_frames=batch_frames, chunk_size=chunk_size) as reader:
        reader._fast_walk = fast
        for name, value in WALK_TUNINGS[tuning].items():
            setattr(reader, name, value)
        proven = 0

        def counting(fast_walk: Callable[..., tuple]) -> Callable[..., tuple]:
            def walk(*args: object) -> tuple:
                nonlocal proven
                found = fast_walk(*args)  # the starts first
                proven += len(found[0])
                return found

            return walk

        reader._walk_pcap_fast = counting(reader._walk_pcap_fast)  # type: ignore[method-assign]
        reader._walk_blocks_fast = counting(reader._walk_blocks_fast)  # type: ignore[method-assign]
        batches = [
            (len(b.buf), b.offsets, b.caplens, b.wirelens, b.ts_ns, b.linktypes, reader.bytes_read)
            for b in reader
        ]
        state = (
            reader.format,
            reader.truncated,
            reader.warning,
            reader.bytes_read,
            reader.frames,
            reader.skipped,
        )
    return batches, state, proven


def walk_differences(path: Path, configs: list[tuple[int, int, str]] = WALK_CONFIGS) -> tuple[list[str], int]:
    """How the fast walk's reading of path differs from the plain loop's (nothing, we hope), and how many
    records the fast walk proved in all."""
    problems = []
    proven = 0
    for chunk_size, batch_frames, tuning in configs:
        where = f"{path.name} chunk {chunk_size} batch {batch_frames} {tuning}"
        old, old_state, _ = walk_read(path, chunk_size, batch_frames, False, tuning)
        new, new_state, n = walk_read(path, chunk_size, batch_frames, True, tuning)
        proven += n
        if old_state != new_state:
            problems.append(f"{where}: ended {new_state}, plain loop {old_state}")
        if len(old) != len(new):
            problems.append(f"{where}: {len(new)} batches, plain loop {len(old)}")
        for i, (a, b) in enumerate(zip(old, new)):
            same = a[0] == b[0] and a[6] == b[6]
            same = same and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a[1:6], b[1:6]))
            if not same:
                problems.append(f"{where}: batch {i} differs")
                break
    return problems, proven


@dataclass
class Rec:
    """One raw pcap record: header fields as written (they need not tell the truth) and the data."""

    sec: int
    frac: int
    data: bytes
    cap: int | None = None  # caplen field; len(data) when None
    wire: int | None = None  # wirelen field; len(data) when None


def raw_pcap(
    recs: list[Rec],
    *,
    order: str = "<",
    magic: int = 0xA1B2C3D4,
    version: tuple[int, int] = (2, 4),
    linktype: int = LINKTYPE_ETHERNET,
) -> bytes:
    """A pcap file whose record headers say exactly what recs say; swapped-length versions (before 2.3,
    543.0) get caplen in the second length field, Kuznetzov files 8 more header bytes."""
    swapped = version[0] == 2 and version[1] < 3 or version == (543, 0)
    out = [struct.pack(order + "IHHiIII", magic, *version, 0, 0, 65535, linktype)]
    for r in recs:
        cap = len(r.data) if r.cap is None else r.cap
        wire = len(r.data) if r.wire is None else r.wire
        lens = (wire, cap) if swapped else (cap, wire)
        out.append(struct.pack(order + "IIII", r.sec & 0xFFFFFFFF, r.frac, *lens))
        if magic == 0xA1B2CD34:
            out.append(struct.pack(order + "IHBB", 3, 0x0800, 0, 0))
        out.append(r.data)
    return b"".join(out)


def record_header(r: Rec, order: str = "<") -> bytes:
    return struct.pack(order + "IIII", r.sec, r.frac, len(r.data) if r.cap is None else r.cap, len(r.data))


def traffic(
    rng: np.random.Generator, n: int, sec: int, step: float = 0.001, sizes: tuple[int, int] = (0, 300)
) -> list[Rec]:
    """n records of random bytes and sizes, seconds from sec on."""
    recs = []
    for i in range(n):
        t = sec + i * step
        size = int(rng.integers(*sizes))
        recs.append(Rec(int(t), int((t % 1) * 1e6), rng.integers(0, 256, size, dtype=np.uint8).tobytes()))
    return recs


def with_fake_headers(rng: np.random.Generator, recs: list[Rec], order: str = "<") -> list[Rec]:
    """Payloads holding copies of real record headers (of this record, the next ones, earlier ones):
    every copy is a candidate record start with a caplen that leads somewhere plausible."""
    out = []
    for i, r in enumerate(recs):
        data = bytearray(r.data)
        for _ in range(int(rng.integers(0, 4))):
            other = recs[int(np.clip(i + rng.integers(-3, 4), 0, len(recs) - 1))]
            at = int(rng.integers(0, len(data) + 1))
            data[at:at] = record_header(other, order)
        out.append(Rec(r.sec, r.frac, bytes(data), wire=len(data) + 10))
    return out


def adversarial_files(tmp_path: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(20261127)
    files: dict[str, bytes] = {}
    base = traffic(rng, 3000, T0)
    files["fake-headers"] = raw_pcap(with_fake_headers(rng, base))
    files["fake-headers-be"] = raw_pcap(with_fake_headers(rng, base, ">"), order=">")
    # a record whose whole payload is a chain of valid-looking headers with caplen 0
    chain = b"".join(record_header(Rec(T0, 5, b"")) for _ in range(40))
    files["fake-chain"] = raw_pcap(
        [*base[:100], Rec(T0, 7, chain), *base[100:200], Rec(T0, 7, chain * 3)] * 5
    )
    # ts_sec crosses a multiple of 65536 seconds (its high half changes) mid-file, twice
    files["ts-high-half-changes"] = raw_pcap(traffic(rng, 4000, (T0 | 0xFFFF) - 1, step=0.0011))
    files["ts-high-half-changes-be"] = raw_pcap(traffic(rng, 4000, (T0 | 0xFFFF) - 1, step=0.0011), order=">")
    # timestamps out of order: a few jumps back and forth, then at random on every record
    jumpy = traffic(rng, 3000, T0)
    for i in range(0, 3000, 250):
        for r in jumpy[i : i + 100]:
            r.sec -= 70_000 * (i % 3)
    files["ts-jumps"] = raw_pcap(jumpy)
    chaos = traffic(rng, 3000, T0)
    for r in chaos:
        r.sec = int(rng.integers(0, 1 << 32))
    files["ts-random"] = raw_pcap(chaos)
    # ts_sec 0 everywhere and zero payloads: every other word looks like a record start
    files["ts-zero"] = raw_pcap([Rec(0, 0, bytes(int(rng.integers(0, 100)))) for _ in range(3000)])
    files["ts-zero-fake"] = raw_pcap(with_fake_headers(rng, [Rec(0, i, bytes(50)) for i in range(3000)]))
    # byte orders, resolutions, swapped lengths (2.2 and DG/UX 543.0), Kuznetzov headers
    recs = with_fake_headers(rng, traffic(rng, 2000, T0, sizes=(0, 2000)))
    for order in "<>":
        o = "le" if order == "<" else "be"
        files[f"nsec-{o}"] = raw_pcap(recs, order=order, magic=0xA1B23C4D)
        files[f"v2.2-{o}"] = raw_pcap(recs, order=order, version=(2, 2))
        files[f"v543-{o}"] = raw_pcap(recs, order=order, version=(543, 0))
        files[f"kuznetzov-{o}"] = raw_pcap(recs, order=order, magic=0xA1B2CD34)
    # caplen 0 records, alone and in runs
    zeros = traffic(rng, 3000, T0, sizes=(0, 40))
    for r in zeros[::3]:
        r.data = b""
    files["caplen-0"] = raw_pcap(zeros + [Rec(T0 + 9, 0, b"") for _ in range(500)])
    # caplen 0 but a wire length (snaplen 0 style), and caplen above the wire length
    files["caplen-vs-wire"] = raw_pcap([Rec(r.sec, r.frac, r.data, wire=len(r.data) // 2) for r in base])
    # truncated last record: cut inside its header and inside its data
    whole = raw_pcap(base)
    files["cut-in-header"] = whole[: len(whole) - len(base[-1].data) - 7]
    files["cut-in-data"] = whole[: len(whole) - max(len(base[-1].data) // 2, 1)]
    # a corrupt caplen (over libpcap's maximum) mid-file, its record whole or running past the end
    for name, cap in [("corrupt-caplen", 300_000), ("corrupt-caplen-huge", 0xFFFFFFF0)]:
        bad = [Rec(r.sec, r.frac, r.data) for r in base]
        bad[1700] = Rec(bad[1700].sec, bad[1700].frac, bad[1700].data, cap=cap)
        files[name] = raw_pcap(bad)
    bad = [Rec(r.sec, r.frac, r.data) for r in base]
    bad[2999] = Rec(bad[2999].sec, bad[2999].frac, bytes(100), cap=262_145)
    files["corrupt-caplen-last"] = raw_pcap(bad)
    # records bigger than the small chunks, and caplens that only USBPCAP's 1 MiB limit allows
    files["big-records"] = raw_pcap(traffic(rng, 300, T0, sizes=(0, 20_000)))
    big = traffic(rng, 40, T0, sizes=(200_000, 400_000))
    files["usbpcap-over-262144"] = raw_pcap(big, linktype=249)
    files["ethernet-over-262144"] = raw_pcap(big)
    # a record header whose caplen leads exactly to the file's end, and one byte past it
    files["header-only-last"] = raw_pcap([*base[:500], Rec(T0 + 1, 0, b"", cap=0)])
    return files


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("walk")
    paths = {}
    for name, data in adversarial_files(out).items():
        paths[name] = out / f"{name}.pcap"
        paths[name].write_bytes(data)
    return paths


ADVERSARIAL = [
    "fake-headers", "fake-headers-be", "fake-chain", "ts-high-half-changes", "ts-high-half-changes-be", "ts-jumps",
    "ts-random", "ts-zero", "ts-zero-fake", "nsec-le", "nsec-be", "v2.2-le", "v2.2-be", "v543-le", "v543-be",
    "kuznetzov-le", "kuznetzov-be", "caplen-0", "caplen-vs-wire", "cut-in-header", "cut-in-data", "corrupt-caplen",
    "corrupt-caplen-huge", "corrupt-caplen-last", "big-records", "usbpcap-over-262144", "ethernet-over-262144",
    "header-only-last",
]  # fmt: skip


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_fast_walk_equals_plain_loop_on_adversarial_pcaps(adversarial: dict[str, Path], name: str) -> None:
    problems, proven = walk_differences(adversarial[name])
    assert not problems
    if not name.startswith(("ts-random", "ts-zero", "usbpcap", "ethernet-over")):
        assert proven > 0  # the fast walk did take part


def test_adversarial_files_are_what_they_claim(adversarial: dict[str, Path]) -> None:
    """The damaged ones stop where they should, the rest read whole (so the comparisons cover both)."""
    assert set(ADVERSARIAL) == set(adversarial)
    for name, path in adversarial.items():
        with open_capture(str(path)) as reader:
            frames = sum(len(b) for b in reader)
        damaged = name.startswith(("cut-", "corrupt-", "ethernet-over"))
        assert reader.truncated == damaged, name
        if name.startswith("corrupt-caplen") and name != "corrupt-caplen-last":
            assert frames == 1700 and "exceeds the maximum" in (reader.warning or "")


def test_fast_walk_equals_plain_loop_on_samples() -> None:
    paths = sorted(p for p in SAMPLES.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert paths
    problems = []
    for path in paths:
        problems += walk_differences(path)[0]
    assert not problems


def test_fast_walk_equals_plain_loop_on_the_corpus(corpus_reference: dict[str, dict[str, str]]) -> None:
    problems = []
    proven = 0
    for name in corpus_reference:
        try:
            open_capture(str(CORPUS / name)).close()
        except CaptureError:
            continue  # not a capture for us: no walk to compare
        found, n = walk_differences(CORPUS / name)
        problems += found
        proven += n
    assert not problems
    assert proven > 0


@pytest.mark.parametrize("decoys", [0, 1, 3, 100])
def test_prove_chain_picks_the_chain_and_what_runs_beside_it(decoys: int) -> None:
    # records of 10 bytes at 0, 10, 20, ...; a decoy candidate (a payload offset that looked like a
    # record) inside every one of the first `decoys` records, leading nowhere: the chain steps over
    # them in one run, a few runs or a mask, and whatever is parallel to the candidates is picked alike
    records = list(range(0, 2000, 10))
    decoy = [r + 3 for r in records[:decoys]]
    cand = np.array(sorted(records + decoy), dtype=np.int64)
    succ = np.where(np.isin(cand, decoy), 100_000, cand + 10)  # a decoy's record would end past the buffer
    valid = succ <= records[-1] + 10
    which, after = _prove_chain(cand, succ, valid)
    assert _pick(cand, which).tolist() == records
    assert _pick(cand * 7, which).tolist() == [r * 7 for r in records]
    assert after == records[-1] + 10


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run([sys.executable, str(REPO / "bench" / "gen_capture.py"), str(path), "--frames", "50000"],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    return path


def test_fast_walk_equals_plain_loop_on_a_bench_capture(bench_capture: Path) -> None:
    problems, proven = walk_differences(bench_capture)
    assert not problems
    # the shipped thresholds at the default chunk size prove nearly every record with numpy
    _, state, proven = walk_read(bench_capture, CHUNK_SIZE, DEFAULT_BATCH_FRAMES, True, "shipped")
    assert state[4] == 50000 and proven >= 49_000


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(
    ("magic", "version"),
    [
        (0xA1B2C3D4, (2, 4)),
        (0xA1B23C4D, (2, 4)),
        (0xA1B2C3D4, (2, 2)),
        (0xA1B2C3D4, (543, 0)),
        (0xA1B2CD34, (2, 4)),
    ],
)
def test_fast_walk_proves_well_formed_files_of_every_kind(
    tmp_path: Path, order: str, magic: int, version: tuple[int, int]
) -> None:
    """Not a correctness test (the plain loop could do it all): the fast walk must not quietly give up
    on a byte order, resolution or header layout, with the thresholds as shipped."""
    rng = np.random.default_rng(7)
    recs = traffic(rng, 20_000, T0)
    path = tmp_path / "x.pcap"
    path.write_bytes(raw_pcap(recs, order=order, magic=magic, version=version))
    assert not walk_differences(path, WALK_CONFIGS[:2])[0]
    _, state, proven = walk_read(path, CHUNK_SIZE, DEFAULT_BATCH_FRAMES, True, "shipped")
    assert state[4] == 20_000 and proven >= 19_000


# -- the same for pcapng packet blocks --------------------------------------------------------------


def epb_header(order: str, data_len: int, iface: int = 0) -> bytes:
    """The first 28 bytes of an EPB holding data_len bytes: a candidate block start with a true length."""
    total = 32 + data_len + (-data_len % 4)
    return struct.pack(order + "IIIIIII", 6, total, iface, 0, 1000, data_len, data_len)


def pcapng_adversarial_files() -> dict[str, bytes]:
    rng = np.random.default_rng(4242)
    files: dict[str, bytes] = {}

    def payload(lo: int = 0, hi: int = 300) -> bytes:
        return rng.integers(0, 256, int(rng.integers(lo, hi)), dtype=np.uint8).tobytes()

    for order in "<>":
        o = "le" if order == "<" else "be"
        # payloads holding copies of EPB headers (with lengths of real neighbours) at 4-aligned offsets
        blocks = []
        for i in range(3000):
            data = bytearray(payload())
            for _ in range(int(rng.integers(0, 3))):
                at = int(rng.integers(0, len(data) // 4 + 1)) * 4
                data[at:at] = epb_header(order, int(rng.integers(0, 300)))
            blocks.append(epb(order, 0, T0 * 10**6 + i, bytes(data)))
        files[f"ng-fake-headers-{o}"] = shb(order) + idb(order, LINKTYPE_ETHERNET) + b"".join(blocks)
        # runs of EPBs, SPBs and PBs, unknown blocks and new interfaces among them, a second section
        # in the other byte order, frames naming interfaces that do not exist
        other = ">" if order == "<" else "<"
        parts = [shb(order), idb(order, LINKTYPE_ETHERNET, snaplen=200)]
        for i in range(40):
            kind = int(rng.integers(0, 6))
            for _ in range(int(rng.integers(1, 200))):
                if kind <= 2:
                    parts.append(epb(order, int(rng.integers(0, 3)) if kind == 2 else 0, i, payload()))
                elif kind == 3:
                    parts.append(spb(order, payload(0, 150)))
                elif kind == 4:
                    parts.append(pb(order, 0, i, payload()))
                else:
                    parts.append(block(order, UNKNOWN_BLOCK, payload(0, 40)))
            if i == 20:
                parts.append(idb(order, LINKTYPE_RAW))
            if i == 30:
                order, other = other, order
                parts += [shb(order), idb(order, LINKTYPE_LINUX_SLL)]
        files[f"ng-mixed-{o}"] = b"".join(parts)
    head = shb("<") + idb("<", LINKTYPE_ETHERNET)
    good = [epb("<", 0, i, payload()) for i in range(3000)]
    whole = head + b"".join(good)
    # payloads of words equal to 6 (the EPB type) everywhere
    files["ng-type-words"] = head + b"".join(epb("<", 0, i, struct.pack("<I", 6) * 60) for i in range(3000))
    # truncated in the last block's header and in its data
    files["ng-cut-in-header"] = whole[: len(whole) - len(good[-1]) + 6]
    files["ng-cut-in-data"] = whole[: len(whole) - 9]
    # damaged lengths mid-run: not a multiple of 4, below the minimum, above the maximum, past the end
    for name, bad_len in [("odd", 70), ("short", 28), ("huge", (200 << 20)), ("past-end", 1 << 24)]:
        bad = bytearray(good[1700])
        bad[4:8] = struct.pack("<I", bad_len)
        files[f"ng-bad-length-{name}"] = head + b"".join(good[:1700]) + bytes(bad) + b"".join(good[1701:])
    # a captured length that does not fit its block (found when the batch is gathered)
    bad = bytearray(good[2100])
    bad[20:24] = struct.pack("<I", 5000)
    files["ng-caplen-past-block"] = head + b"".join(good[:2100]) + bytes(bad) + b"".join(good[2101:])
    # blocks bigger than the small chunks
    files["ng-big-blocks"] = head + b"".join(epb("<", 0, i, payload(0, 20_000)) for i in range(300))
    return files


@pytest.fixture(scope="module")
def pcapng_adversarial(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("walkng")
    paths = {}
    for name, data in pcapng_adversarial_files().items():
        paths[name] = out / f"{name}.pcapng"
        paths[name].write_bytes(data)
    return paths


PCAPNG_ADVERSARIAL = [
    "ng-fake-headers-le", "ng-fake-headers-be", "ng-mixed-le", "ng-mixed-be", "ng-type-words",
    "ng-cut-in-header", "ng-cut-in-data", "ng-bad-length-odd", "ng-bad-length-short", "ng-bad-length-huge",
    "ng-bad-length-past-end", "ng-caplen-past-block", "ng-big-blocks",
]  # fmt: skip


@pytest.mark.parametrize("name", PCAPNG_ADVERSARIAL)
def test_fast_walk_equals_plain_loop_on_adversarial_pcapngs(
    pcapng_adversarial: dict[str, Path], name: str
) -> None:
    problems, proven = walk_differences(pcapng_adversarial[name])
    assert not problems
    if name != "ng-type-words":
        assert proven > 0


def test_pcapng_adversarial_files_are_what_they_claim(pcapng_adversarial: dict[str, Path]) -> None:
    assert set(PCAPNG_ADVERSARIAL) == set(pcapng_adversarial)
    for name, path in pcapng_adversarial.items():
        with open_capture(str(path)) as reader:
            frames = sum(len(b) for b in reader)
        damaged = name.startswith(("ng-cut-", "ng-bad-", "ng-caplen"))
        assert reader.truncated == damaged, name
        if name.startswith("ng-bad-length") and name != "ng-bad-length-past-end":
            assert frames == 1700, name
        if name.startswith("ng-mixed"):
            assert reader.skipped > 0 and len(reader.linktypes) == 3


@pytest.mark.parametrize("order", ["<", ">"])
def test_fast_walk_proves_well_formed_pcapng(tmp_path: Path, order: str) -> None:
    rng = np.random.default_rng(8)
    blocks = [
        epb(order, 0, i, rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        for i in range(20_000)
    ]
    path = tmp_path / "x.pcapng"
    path.write_bytes(shb(order) + idb(order, LINKTYPE_ETHERNET) + b"".join(blocks))
    assert not walk_differences(path, WALK_CONFIGS[:2])[0]
    _, state, proven = walk_read(path, CHUNK_SIZE, DEFAULT_BATCH_FRAMES, True, "shipped")
    assert state[4] == 20_000 and proven >= 19_000
