"""Write Batches to classic pcap files, with tcpdump's -C / -G / -W rotation.

File format: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html (nanosecond magic
0xa1b23c4d by default, microsecond 0xa1b2c3d4 on request), in this machine's byte order as libpcap
writes it. A pcap file holds one link type, so a Batch of another link type is refused.

Rotation follows tcpdump 4.99 (tcpdump(1) and dump_packet_and_trunc() in tcpdump.c):
  * -C `file_size_mb`: before writing a record, if the current file is already larger than
    file_size_mb * 1,000,000 bytes, close it and open the next: FILE, FILE1, FILE2, ...
  * -W `file_count` with -C: a ring; names get a number padded to the width of file_count - 1
    (FILE0, FILE1, FILE2, then FILE0 is overwritten).
  * -G `rotate_seconds`: FILE is a strftime(3) pattern expanded in local time; a new file starts at the
    first record at least rotate_seconds after the current file started. With -W (and no -C) writing
    stops after file_count files: `write` returns False and drops the rest, where tcpdump exits.
  * -G with -C: names are strftime(FILE) followed by the -C number (padded when -W is given); the -C
    number restarts at 0 on every -G rotation, and -W only sets the padding.
Deviations from tcpdump, on purpose:
  * the -G clock is the frames' timestamps, not the wall clock, so writing a capture file again gives
    the same files; in live capture the two differ by the ring's block timeout at most. The first file
    is named after the first frame's second (tcpdump: the time it started);
  * `file_size_mb` may be fractional (tcpdump takes whole millions);
  * the first file is created at the first write (or at close, empty, when the link type is known),
    since the -G name needs a timestamp.
Every `write` appends whole records with unbuffered writes; if it is interrupted (SIGINT between two
system calls), `close` cuts the file back to the last complete Batch, so no file ends in half a record.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Self

import numpy as np

from pktscope.capture.batch import Batch

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_VERSION = (2, 4)
PCAP_FILE_HEADER = struct.Struct("=IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
PCAP_RECORD_HEADER = np.dtype([("sec", "=u4"), ("frac", "=u4"), ("incl_len", "=u4"), ("orig_len", "=u4")])
DEFAULT_SNAPLEN = 262144


class PcapWriteError(Exception):
    """The Batches cannot go into this pcap file (mixed link types); one line for the user."""


def wflag_chars(file_count: int) -> int:
    """Digits tcpdump pads the file number to for -W file_count (tcpdump.c getWflagChars)."""
    chars, x = 0, file_count - 1
    while x > 0:
        chars += 1
        x //= 10
    return chars


class PcapWriter:
    """A pcap output that rotates like `tcpdump -w FILE [-C MB] [-G SECONDS] [-W N]`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        linktype: int | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        file_size_mb: float | None = None,
        rotate_seconds: int | None = None,
        file_count: int | None = None,
        nanosecond: bool = True,
    ) -> None:
        if file_size_mb is not None and file_size_mb <= 0:
            raise ValueError("file_size_mb must be positive")
        if rotate_seconds is not None and rotate_seconds <= 0:
            raise ValueError("rotate_seconds must be positive")
        if file_count is not None and file_count <= 0:
            raise ValueError("file_count must be positive")
        self.pattern = os.fspath(path)
        self.linktype = linktype
        self.snaplen = snaplen
        self.size_limit = None if file_size_mb is None else int(file_size_mb * 1_000_000)
        self.rotate_seconds = rotate_seconds
        self.file_count = file_count
        self.nanosecond = nanosecond
        self.files: list[str] = []  # every file opened, in order (a -W ring names some twice)
        self.finished = False  # -G -W limit reached: nothing more is written
        self.frames_written = 0
        self._fd = -1
        self._size = 0  # bytes of complete records (and header) in the current file
        self._c_count = 0  # tcpdump's Cflag_count
        self._g_time = 0  # tcpdump's Gflag_time: the second the current -G file started
        self._g_count = 0  # tcpdump's Gflag_count
        self._chars = wflag_chars(file_count) if file_count is not None else 0

    # --- file naming and opening ------------------------------------------------------------------

    def _name(self, count: int, chars: int) -> str:
        base = time.strftime(self.pattern, time.localtime(self._g_time)) if self.rotate_seconds else self.pattern
        if count == 0 and chars == 0:
            return base
        return f"{base}{count:0{chars}d}"

    def _open(self, name: str) -> None:
        self._close_fd()
        assert self.linktype is not None
        self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        magic = PCAP_MAGIC_NS if self.nanosecond else PCAP_MAGIC_US
        header = PCAP_FILE_HEADER.pack(magic, *PCAP_VERSION, 0, 0, self.snaplen, self.linktype)
        self._write_all(header)
        self._size = len(header)
        self.files.append(name)

    def _open_first(self, first_ts_ns: int) -> None:
        self._g_time = first_ts_ns // 1_000_000_000
        # tcpdump pads the first name only when -C is in play (with -G alone the name is the pattern)
        chars = self._chars if self.size_limit is not None else 0
        self._open(self._name(0, chars))

    def _rotate_by_time(self, second: int) -> bool:
        """tcpdump's -G step; False when the -W limit ends the output."""
        self._g_time = second
        self._g_count += 1
        if self.size_limit is None and self.file_count is not None and self._g_count >= self.file_count:
            self._close_fd()
            self.finished = True
            return False
        self._c_count = 0
        self._open(self._name(0, self._chars if self.size_limit is not None else 0))
        return True

    def _rotate_by_size(self) -> None:
        self._c_count += 1
        if self.file_count is not None and self._c_count >= self.file_count:
            self._c_count = 0
        self._open(self._name(self._c_count, self._chars))

    # --- writing ----------------------------------------------------------------------------------

    def write(self, batch: Batch) -> bool:
        """Append the batch's frames; False once a -G/-W file limit was reached (the rest is dropped)."""
        n = len(batch)
        if self.finished:
            return False
        if n == 0:
            return True
        kinds = np.unique(batch.linktypes)
        if self.linktype is None:
            self.linktype = int(kinds[0])
        if kinds.size != 1 or int(kinds[0]) != self.linktype:
            raise PcapWriteError(
                f"a pcap file holds one link type: {self.linktype} expected, batch has {sorted(kinds.tolist())}"
            )
        ts = batch.ts_ns.astype(np.int64)
        records = np.empty(n, dtype=PCAP_RECORD_HEADER)
        records["sec"] = ts // 1_000_000_000
        frac = ts % 1_000_000_000
        records["frac"] = frac if self.nanosecond else frac // 1000
        records["incl_len"] = batch.caplens
        records["orig_len"] = batch.wirelens
        sizes = batch.caplens.astype(np.int64) + PCAP_RECORD_HEADER.itemsize
        seconds = (ts // 1_000_000_000).tolist()
        if self._fd < 0:
            self._open_first(int(ts[0]))

        i = 0
        while i < n:
            # -G: the records before the first one due for a new file go here (tcpdump checks -G first)
            end = n
            if self.rotate_seconds is not None:
                due = np.nonzero(ts[i:] // 1_000_000_000 - self._g_time >= self.rotate_seconds)[0]
                if due.size and due[0] == 0:
                    if not self._rotate_by_time(seconds[i]):
                        return False
                    continue
                if due.size:
                    end = i + int(due[0])
            # -C: the file takes records until its size exceeds the limit, then the next record rotates
            if self.size_limit is not None:
                if self._size > self.size_limit:
                    self._rotate_by_size()
                    continue
                grown = self._size + np.cumsum(sizes[i:end])
                over = int(np.searchsorted(grown, self.size_limit, side="right"))
                end = min(end, i + over + 1)
            self._write_records(batch, records, i, end, int(sizes[i:end].sum()))
            i = end
        return True

    def _write_records(self, batch: Batch, records: np.ndarray, start: int, end: int, nbytes: int) -> None:
        view = memoryview(batch.buf)
        heads = records[start:end].tobytes()
        hsize = PCAP_RECORD_HEADER.itemsize
        parts: list[bytes | memoryview] = []
        for j, (off, cap) in enumerate(
            zip(batch.offsets[start:end].tolist(), batch.caplens[start:end].tolist(), strict=True)
        ):
            parts.append(heads[j * hsize : (j + 1) * hsize])
            parts.append(view[off : off + cap])
        data = b"".join(parts)
        assert len(data) == nbytes
        self._write_all(data)
        self._size += nbytes
        self.frames_written += end - start

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _close_fd(self) -> None:
        if self._fd >= 0:
            # drop a record cut short by an interruption between two write() calls
            os.ftruncate(self._fd, self._size)
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Finish the current file (creating an empty one if nothing was written and the link type is known)."""
        if self._fd < 0 and not self.files and self.linktype is not None and not self.finished:
            self._open_first(time.time_ns())
        self._close_fd()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_pcap(path: str | os.PathLike[str], batches: list[Batch], nanosecond: bool = True) -> Path:
    """Write batches to one pcap file (no rotation); returns its path."""
    with PcapWriter(path, nanosecond=nanosecond) as writer:
        for batch in batches:
            writer.write(batch)
    return Path(path)
