"""PcapWriter against tcpdump: the files `tcpdump -r IN -w OUT -C/-W` makes, byte for byte; -G on frame time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pktscope.capture.batch import Batch
from pktscope.capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from pktscope.capture.pcapwriter import PcapWriteError, PcapWriter, wflag_chars, write_pcap

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
T0 = 1_700_000_000_000_000_000  # ns


def random_frames(count: int, seed: int = 1) -> tuple[list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = [bytes(rng.integers(0, 256, int(rng.integers(60, 1500)), dtype=np.uint8)) for _ in range(count)]
    ts = T0 + np.arange(count, dtype=np.int64) * 7_345_678
    return frames, ts


def batches_of(frames: list[bytes], ts: np.ndarray, sizes: list[int]) -> list[Batch]:
    out, i, k = [], 0, 0
    while i < len(frames):
        n = sizes[k % len(sizes)]
        out.append(Batch.from_frames(frames[i : i + n], ts[i : i + n], LINKTYPE_ETHERNET))
        i, k = i + n, k + 1
    return out


def tcpdump_count(path: Path) -> int:
    done = subprocess.run(
        ["tcpdump", "--count", "-r", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "truncated" not in done.stderr, done.stderr
    return int(done.stdout.split()[0])  # "N packets"


def test_wflag_chars_matches_tcpdump() -> None:
    assert [wflag_chars(n) for n in (1, 2, 10, 11, 100, 101)] == [0, 1, 1, 2, 2, 3]


@needs_tcpdump
@pytest.mark.parametrize(
    "flags", [["-C", "1"], ["-C", "1", "-W", "3"], ["-C", "1", "-W", "2"], ["-C", "1", "-W", "12"]]
)
def test_size_rotation_gives_the_files_tcpdump_gives(tmp_path: Path, flags: list[str]) -> None:
    frames, ts = random_frames(3000)  # about 2.4 MB: three files at -C 1, a wrap-around at -W 2
    source = write_pcap(tmp_path / "in.pcap", [Batch.from_frames(frames, ts, LINKTYPE_ETHERNET)])
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    subprocess.run(
        [
            "tcpdump",
            "-Z",
            "root",
            "--time-stamp-precision",
            "nano",
            "-r",
            str(source),
            "-w",
            str(theirs / "out"),
            *flags,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    options = dict(zip(flags[::2], flags[1::2], strict=True))
    with PcapWriter(
        ours / "out",
        file_size_mb=int(options["-C"]),
        file_count=int(options["-W"]) if "-W" in options else None,
    ) as writer:
        for batch in batches_of(frames, ts, [700, 1, 333, 1200]):  # rotation points fall inside batches
            assert writer.write(batch)
    names = sorted(p.name for p in theirs.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert len(writer.files) == 3  # opened three times, even when the ring reused a name


@needs_tcpdump
def test_time_rotation_names_files_by_strftime_of_frame_time(tmp_path: Path) -> None:
    frames, _ = random_frames(100)
    ts = T0 + np.arange(100, dtype=np.int64) * 100_000_000  # 10 s of frames, 10 per second
    pattern = str(tmp_path / "cap-%H%M%S.pcap")
    with PcapWriter(pattern, rotate_seconds=3) as writer:
        for batch in batches_of(frames, ts, [7, 30]):
            assert writer.write(batch)
    start = T0 // 1_000_000_000
    expected = [time.strftime(pattern, time.localtime(start + k)) for k in (0, 3, 6, 9)]
    assert writer.files == expected
    assert [tcpdump_count(Path(f)) for f in expected] == [30, 30, 30, 10]


def test_time_rotation_with_file_count_stops(tmp_path: Path) -> None:
    frames, _ = random_frames(100)
    ts = T0 + np.arange(100, dtype=np.int64) * 100_000_000
    writer = PcapWriter(tmp_path / "cap-%S", rotate_seconds=3, file_count=2)
    results = [writer.write(b) for b in batches_of(frames, ts, [25])]
    writer.close()
    assert results == [True, True, False, False]  # the third file would start at frame 60
    assert writer.finished and len(writer.files) == 2
    assert writer.frames_written == 60


def test_time_and_size_rotation_number_files_within_each_period(tmp_path: Path) -> None:
    frames = [bytes(400_000)] * 8  # two frames pass 0.5 MB
    ts = T0 + np.arange(8, dtype=np.int64) * 1_000_000_000
    with PcapWriter(tmp_path / "p%S-", rotate_seconds=4, file_size_mb=0.5, file_count=3) as writer:
        writer.write(Batch.from_frames(frames, ts, LINKTYPE_ETHERNET))
    sec = T0 // 1_000_000_000
    first, second = (time.strftime("%S", time.localtime(sec + k)) for k in (0, 4))
    names = [Path(f).name for f in writer.files]
    assert names == [f"p{first}-0", f"p{first}-1", f"p{second}-0", f"p{second}-1"]


def test_one_file_holds_one_link_type(tmp_path: Path) -> None:
    writer = PcapWriter(tmp_path / "x.pcap")
    writer.write(Batch.from_frames([bytes(60)], [T0], LINKTYPE_ETHERNET))
    with pytest.raises(PcapWriteError, match="one link type"):
        writer.write(Batch.from_frames([bytes(40)], [T0], LINKTYPE_RAW))
    writer.close()


@needs_tcpdump
@pytest.mark.parametrize("nanosecond", [True, False])
def test_tcpdump_and_tshark_read_it(tmp_path: Path, nanosecond: bool) -> None:
    frames, ts = random_frames(50)
    path = write_pcap(tmp_path / "x.pcap", [Batch.from_frames(frames, ts, LINKTYPE_ETHERNET)], nanosecond)
    assert tcpdump_count(path) == 50
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-r", str(path)], capture_output=True, text=True, timeout=60, check=True
        )
        assert len(out.stdout.splitlines()) == 50


def test_empty_capture_still_makes_a_readable_file(tmp_path: Path) -> None:
    PcapWriter(tmp_path / "empty.pcap", linktype=LINKTYPE_ETHERNET).close()
    assert (tmp_path / "empty.pcap").stat().st_size == 24


_INTERRUPTED_WRITER = """
import sys, numpy as np
from pktscope.capture.batch import Batch
from pktscope.capture.pcapwriter import PcapWriter
frames = [bytes(1400)] * 200
with PcapWriter(sys.argv[1], linktype=1) as writer:
    print("writing", flush=True)
    for i in range(2000):  # bounded: 560 MB at most, SIGINT comes long before
        writer.write(Batch.from_frames(frames, np.full(200, i, dtype=np.int64), 1))
"""


@needs_tcpdump
def test_sigint_leaves_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    size = os.path.getsize(path)
    assert size > 24 and (size - 24) % (16 + 1400) == 0
    assert tcpdump_count(path) == (size - 24) // (16 + 1400)
