"""The fast (numpy) decoder against the reference (dpkt) decoder: identical Columns, row for row.

On every capture of the shared corpus, the samples, a generated bench-like capture, every snaplen cut
of the decoder test frames and of bench frames, and seeded byte mutations of the test frames. The
bench capture also shows that the fast path takes the common frames itself rather than handing them
all to dpkt.
"""

from __future__ import annotations

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
