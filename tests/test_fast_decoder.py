"""The fast (numpy) decoder against the reference (dpkt) decoder: identical Columns, row for row.

On every capture of the shared corpus, the samples, a generated bench-like capture, every snaplen cut
of the decoder test frames and of bench frames, and seeded byte mutations of the test frames. The
bench capture also shows that the fast path takes the common frames itself rather than handing them
all to dpkt.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_decoders import CASES

from pktscope.capture.batch import Batch
from pktscope.capture.files import CaptureError, open_capture
from pktscope.decoders import decode_batch, fast, reference
from pktscope.decoders.columns import COLUMNS_DTYPE

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SAMPLES = sorted((REPO / "samples").glob("*.pcap*")) + sorted((REPO / "samples" / "linktypes").iterdir())


def differences(batch: Batch) -> list[str]:
    """Where the fast decoder's Columns differ from the reference's: the first row per field."""
    got = fast.decode_batch_fast(batch)
    want = reference.decode_batch(batch)
    if np.array_equal(got, want):
        return []
    out = []
    for name in COLUMNS_DTYPE.names:
        diff = got[name] != want[name]
        if diff.ndim > 1:
            diff = diff.any(axis=1)
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            out.append(f"{name}: row {i} of {len(batch)} (link type {batch.linktypes[i]}, frame "
                       f"{batch.frame(i)[:64].hex()}): fast {got[name][i]} != reference {want[name][i]}")
    return out


def file_differences(path: Path) -> list[str]:
    try:
        with open_capture(str(path)) as reader:
            return [f"{path}: {d}" for batch in reader for d in differences(batch)]
    except CaptureError:
        return []


def cuts(frames: list[tuple[int, bytes]]) -> Batch:
    """Every prefix of every frame, once cut by the snaplen (wire length kept) and once as a whole frame."""
    pieces, links, wires = [], [], []
    for linktype, frame in frames:
        for n in range(len(frame) + 1):
            for wire in (len(frame), n):
                pieces.append(frame[:n])
                links.append(linktype)
                wires.append(wire)
    return Batch.from_frames(pieces, np.arange(len(pieces)), links, wires)


def test_entry_point_is_the_fast_path() -> None:
    case = CASES["ethernet-tcp-syn"]
    batch = Batch.from_frames([case.frame], [0], case.linktype)
    before = fast.stats.frames
    assert np.array_equal(decode_batch(batch), reference.decode_batch(batch))
    assert fast.stats.frames == before + 1


def test_corpus() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"no corpus at {CORPUS}")
    files = sorted(f for f in CORPUS.rglob("*") if f.suffix in (".pcap", ".pcapng", ".cap"))
    wrong = [d for f in files for d in file_differences(f)]
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples(path: Path) -> None:
    assert not file_differences(path)


def test_every_cut_of_the_decoder_test_frames() -> None:
    assert not differences(cuts([(c.linktype, c.frame) for c in CASES.values()]))


def test_mutated_headers() -> None:
    """Random bytes in the first 80 bytes of each test frame (the reference path must take the odd ones)."""
    rng = np.random.default_rng(6)
    frames, links = [], []
    for case in CASES.values():
        for _ in range(300):
            frame = bytearray(case.frame)
            for pos in rng.integers(0, min(len(frame), 80), size=rng.integers(1, 4)):
                frame[pos] = int(rng.integers(0, 256))
            frames.append(bytes(frame))
            links.append(case.linktype)
    assert not differences(Batch.from_frames(frames, np.arange(len(frames)), links))


@pytest.fixture(scope="module")
def bench_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run([sys.executable, str(REPO / "bench" / "gen_capture.py"), str(path), "--frames", "50000"],
                   check=True, capture_output=True, timeout=120)
    return path


def test_bench_capture_mostly_fast(bench_capture: Path) -> None:
    frames, sent = fast.stats.frames, fast.stats.reference
    assert not file_differences(bench_capture)
    frames, sent = fast.stats.frames - frames, fast.stats.reference - sent
    assert frames == 50000
    assert sent <= frames // 100, f"{sent} of {frames} frames went to the reference decoder"


def test_every_cut_of_bench_frames(bench_capture: Path) -> None:
    with open_capture(str(bench_capture)) as reader:
        batch = next(iter(reader))
    picks = np.unique(np.concatenate([np.arange(10), np.linspace(0, len(batch) - 1, 40).astype(int)]))
    assert not differences(cuts([(int(batch.linktypes[i]), batch.frame(int(i))) for i in picks]))


# --- the plain path (fast._decode_plain) and its edges ------------------------------------------

ETHERNET, SLL, SLL2, RAW, IPV4, IPV6, NULL, LOOP = 1, 113, 276, 101, 228, 229, 0, 108
# BSD address families: IPv4, IPv6 (NetBSD, FreeBSD, macOS), and ones pktscope does not open
FAMILIES = {0x0800: (2,), 0x86DD: (24, 28, 30), 0: (7, 0, 255, 256, 258, 0x11E, 0x10002, 0x02000000)}


def _ipv4(proto: int, payload: bytes, ihl: int = 5, total: int | None = None, frag: int = 0,
          first: int | None = None) -> bytes:
    options = bytes(range(1, 1 + max(ihl - 5, 0) * 4))
    head = 4 * ihl if ihl >= 5 else 20
    length = head + len(payload) if total is None else total
    b0 = (4 << 4 | ihl) if first is None else first
    return (struct.pack("!BBHHHBBH4s4s", b0, 0, length, 0x1234, frag, 64, proto, 0, b"\x0a\x00\x00\x01",
                        b"\xc0\xa8\x01\x02") + options + payload)


def _ipv6(nxt: int, payload: bytes, plen: int | None = None, first: int = 0x60) -> bytes:
    length = len(payload) if plen is None else plen
    return (struct.pack("!BBHHBB", first, 0, 0, length, nxt, 64) + bytes(range(16, 32))
            + bytes(range(32, 48)) + payload)


def _tcp(off: int = 5, flags: int = 0x12, data: bytes = b"xyz") -> bytes:
    return struct.pack("!HHIIBBHHH", 4321, 80, 7, 9, off << 4, flags, 1024, 0, 0) + bytes(max(off - 5, 0) * 4) + data


def _udp(ulen: int | None = None, data: bytes = b"abcd") -> bytes:
    return struct.pack("!HHHH", 5353, 53, 8 + len(data) if ulen is None else ulen, 0) + data


def _eth(etype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    head = bytes(range(1, 13))
    for tpid, tci in tags:
        head += struct.pack("!HH", tpid, tci)
    return head + struct.pack("!H", etype) + payload


def _sll(etype: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, bytes(8), etype) + payload


def _sll2(etype: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", etype, 0, 2, 1, 0, 6, bytes(8)) + payload


TCP, UDP, ICMP, ICMPV6, SCTP, AH, GRE, HOPOPTS, FRAGMENT = 6, 17, 1, 58, 132, 51, 47, 0, 44


def _network_payloads() -> list[tuple[int, bytes]]:
    """(EtherType, network header and on): plain ones and the edges just past them."""
    icmp = b"\x08\x00\x00\x00\x00\x01\x00\x02"
    sctp = struct.pack("!HHII", 1000, 2000, 1, 0) + b"chunk"
    v4 = [
        _ipv4(TCP, _tcp()), _ipv4(TCP, _tcp(off=8)), _ipv4(TCP, _tcp(off=4)), _ipv4(TCP, _tcp(off=15, data=b"")),
        _ipv4(UDP, _udp()), _ipv4(UDP, _udp(ulen=7)), _ipv4(UDP, _udp(ulen=0)), _ipv4(ICMP, icmp),
        _ipv4(ICMPV6, icmp), _ipv4(SCTP, sctp), _ipv4(GRE, b"\x00\x00\x08\x00" + bytes(20)), _ipv4(GRE, b""),
        _ipv4(AH, bytes(24)), _ipv4(HOPOPTS, bytes(8)), _ipv4(FRAGMENT, bytes(8)),
        _ipv4(TCP, _tcp(), ihl=6), _ipv4(UDP, _udp(), ihl=15), _ipv4(TCP, _tcp(), ihl=4), _ipv4(TCP, _tcp(), ihl=0),
        _ipv4(TCP, _tcp(), total=10), _ipv4(TCP, _tcp(), total=19), _ipv4(TCP, _tcp(), total=20),
        _ipv4(TCP, _tcp(), total=30), _ipv4(TCP, _tcp(), total=0), _ipv4(UDP, _udp(), total=0),
        _ipv4(TCP, _tcp(), total=400), _ipv4(UDP, _udp() + bytes(6), total=32),
        _ipv4(UDP, _udp(), frag=0x2000), _ipv4(UDP, _udp(), frag=0x0001), _ipv4(UDP, _udp(), frag=0x4000),
        _ipv4(UDP, _udp(), frag=0x8000), _ipv4(TCP, _tcp(), first=0x65), _ipv4(TCP, _tcp(), first=0x45 | 0x80),
    ]
    v6 = [
        _ipv6(TCP, _tcp()), _ipv6(TCP, _tcp(off=4)), _ipv6(UDP, _udp()), _ipv6(UDP, _udp(ulen=3)),
        _ipv6(ICMPV6, icmp), _ipv6(ICMP, icmp), _ipv6(SCTP, sctp), _ipv6(59, b""), _ipv6(GRE, bytes(4)),
        _ipv6(HOPOPTS, b"\x11\x00" + bytes(6) + _udp()), _ipv6(FRAGMENT, struct.pack("!BBHI", 17, 0, 1, 7) + _udp()),
        _ipv6(60, b"\x06\x00" + bytes(6) + _tcp()), _ipv6(43, b"\x3b\x00" + bytes(6)), _ipv6(AH, bytes(16)),
        _ipv6(TCP, _tcp(), plen=0), _ipv6(UDP, _udp(), plen=5), _ipv6(UDP, _udp(), plen=300),
        _ipv6(TCP, _tcp(), first=0x40), _ipv6(TCP, _tcp(), first=0x6F),
    ]
    arp = bytes.fromhex("0001080006040001") + bytes(20)
    return ([(0x0800, f) for f in v4] + [(0x86DD, f) for f in v6] + [(0x0800, v6[0]), (0x86DD, v4[0]),
            (0x0806, arp), (0x8847, b"\x00\x01\x01\x40" + v4[0]), (0x88CC, bytes(30)), (64, v4[0])])


def _edge_frames() -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    for etype, net in _network_payloads():
        frames.append((ETHERNET, _eth(etype, net)))
        frames.append((SLL, _sll(etype, net)))
        frames.append((SLL2, _sll2(etype, net)))
    for etype, net in _network_payloads()[::2]:
        for tags in (((0x8100, 0x2064),), ((0x88A8, 0xF00D),), ((0x9100, 5),), ((0x8100, 7), (0x8100, 8)),
                     ((0x88A8, 100), (0x8100, 200))):
            frames.append((ETHERNET, _eth(etype, net, tags)))
        frames.append((SLL, _sll(0x8100, struct.pack("!HH", 10, etype) + net)))
    for i, (etype, net) in enumerate(_network_payloads()):
        for linktype in (RAW, IPV4, IPV6, 12, 14):
            frames.append((linktype, net))
        for family in FAMILIES.get(etype, ()) + (FAMILIES[0] if i == 0 else FAMILIES[0][:1]):
            frames.append((NULL, struct.pack("<I", family) + net))
            frames.append((NULL, struct.pack(">I", family) + net))  # written by a big-endian host
            frames.append((LOOP, struct.pack(">I", family) + net))
    return frames


def test_every_cut_of_the_plain_path_edges() -> None:
    """Frames at the plain path's edges, whole and at every cut, one link type per batch and mixed."""
    frames = _edge_frames()
    for linktype in sorted({lt for lt, _ in frames}):
        assert not differences(cuts([(lt, f) for lt, f in frames if lt == linktype])), linktype
    mixed = [frames[i] for i in range(0, len(frames), 7)]
    assert not differences(Batch.from_frames([f for _, f in mixed], np.arange(len(mixed)), [lt for lt, _ in mixed]))


def test_plain_frames_stay_on_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common frames are decoded by the plain path alone, and exactly as the reference does."""
    icmp = b"\x08\x00\x00\x00\x00\x01\x00\x02"
    nets = [(0x0800, _ipv4(TCP, _tcp())), (0x0800, _ipv4(UDP, _udp())), (0x0800, _ipv4(ICMP, icmp)),
            (0x0800, _ipv4(GRE, bytes(4))), (0x0800, _ipv4(TCP, _tcp(off=6), total=0)),
            (0x0800, _ipv4(UDP, _udp(), frag=0x4000)), (0x86DD, _ipv6(TCP, _tcp())), (0x86DD, _ipv6(UDP, _udp())),
            (0x86DD, _ipv6(ICMPV6, icmp)), (0x86DD, _ipv6(SCTP, bytes(12))), (0x86DD, _ipv6(UDP, _udp(), plen=0))]
    by_link = {
        ETHERNET: [_eth(et, net) for et, net in nets] + [_eth(et, net, ((tpid, 0xE123),)) for et, net in nets
                                                           for tpid in (0x8100, 0x88A8)],
        SLL: [_sll(et, net) for et, net in nets],
        SLL2: [_sll2(et, net) for et, net in nets],
        RAW: [net for _, net in nets],
        IPV4: [net for et, net in nets if et == 0x0800],
        IPV6: [net for et, net in nets if et == 0x86DD],
        NULL: [struct.pack(order + "I", family) + net for et, net in nets for family in FAMILIES[et] for order in "<>"],
        LOOP: [struct.pack(">I", family) + net for et, net in nets for family in FAMILIES[et]],
    }

    def no_general(*args: object) -> None:
        raise AssertionError("a plain frame left the plain path")

    batches = [Batch.from_frames(frames, np.arange(len(frames)), linktype) for linktype, frames in by_link.items()]
    mixed = [(linktype, frame) for linktype, frames in by_link.items() for frame in frames]
    mixed = mixed[::2] + mixed[1::2]  # several link types in one batch (pcapng interfaces), interleaved
    batches.append(Batch.from_frames([f for _, f in mixed], np.arange(len(mixed)), [lt for lt, _ in mixed]))
    for batch in batches:
        want = reference.decode_batch(batch)
        with monkeypatch.context() as m:
            m.setattr(fast, "_decode_general", no_general)
            got = fast.decode_batch_fast(batch)
        assert got.tobytes() == want.tobytes(), batch.linktypes


def test_slices_of_a_batch(monkeypatch: pytest.MonkeyPatch, bench_capture: Path) -> None:
    """Batches decoded a slice at a time: plain and other frames in several slices, the last one shorter."""
    frames = _edge_frames()
    eth = [f for lt, f in frames if lt == ETHERNET]
    monkeypatch.setattr(fast, "PLAIN_CHUNK", 7)
    assert not differences(Batch.from_frames(eth, np.arange(len(eth)), ETHERNET))
    with open_capture(str(bench_capture)) as reader:
        batch = next(iter(reader))
    monkeypatch.setattr(fast, "PLAIN_CHUNK", 1000)
    assert not differences(batch.select(slice(0, 4321)))
