"""Capture file readers: pcap and pcapng files streamed as Batches in bounded memory.

The file is read in chunks (CHUNK_SIZE, into an array no Batch still points into, so that they stay
valid);
a record that straddles a chunk boundary is carried into the next chunk. Only the chain of record (or
block) lengths is walked, with numpy where the chain can be proven (see CaptureReader._walk_pcap) and a
Python loop elsewhere; the header fields of a whole batch are then gathered at once with numpy.

Formats: pcap as in draft-ietf-opsawg-pcap and libpcap's sf-pcap.c; pcapng as in
draft-ietf-opsawg-pcapng (the section numbers below are that draft's) and libpcap's sf-pcapng.c.
Damage is handled the way those readers do: everything before the damage is kept, then reading stops
with ``truncated`` set and a one-line ``warning``; it is never an exception.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
from array import array
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Self

import numpy as np

from pktscope.capture.batch import Batch

CHUNK_SIZE = 8 << 20  # bytes read per chunk
# chunk arrays kept for reuse: the one being read into, the reader's current chunk (its tail is carried
# over) and the one the consumer's last Batch points into
CHUNK_POOL = 3
DEFAULT_BATCH_FRAMES = 65536

# libpcap's MAXIMUM_SNAPLEN (pcap-int.h) and max_snaplen_for_dlt() (pcap-common.c): a record longer than
# this is taken as a damaged or fuzzed file and reading stops ("invalid packet capture length").
MAXIMUM_SNAPLEN = 262144
MAX_SNAPLEN_BY_LINKTYPE: dict[int, int] = {
    231: 128 << 20,  # LINKTYPE_DBUS: D-Bus messages up to 128 MiB (dbus-specification "Message Format")
    279: 8 << 20,  # LINKTYPE_EBHSCR: 8 MiB (Elektrobit)
    249: 1 << 20,  # LINKTYPE_USBPCAP: 1 MiB (wireshark bug 15985)
}

# pcap file header magics (draft-ietf-opsawg-pcap section 4), read as little-endian uint32
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
# Alexey Kuznetzov's patched libpcap: 24-byte record headers (ifindex, protocol, pkt_type, pad) after
# the usual 16; libpcap still reads these (sf-pcap.c KUZNETZOV_TCPDUMP_MAGIC).
PCAP_MAGIC_KUZNETZOV = 0xA1B2CD34
PCAP_FILE_HEADER_LEN = 24
# LinkType field: low 16 bits are the link type, the bits above carry the FCS length
# (draft-ietf-opsawg-pcap section 4; libpcap's LT_LINKTYPE()/LT_LINKTYPE_EXT()).
PCAP_LINKTYPE_MASK = 0xFFFF

# pcapng block types (draft-ietf-opsawg-pcapng, "Block Type Codes")
BT_SHB = 0x0A0D0D0A  # palindromic, so it reads the same in both byte orders
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block (appendix A)
BT_SPB = 0x00000003
BT_EPB = 0x00000006
_BATCH_BOUNDARIES = frozenset({BT_SHB, BT_IDB, BT_PB, BT_SPB, BT_EPB})  # blocks a batch does not span
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
# smallest valid total length of each block (header, fixed fields, trailer; section 4)
MIN_BLOCK_LEN = {BT_SHB: 28, BT_IDB: 20, BT_EPB: 32, BT_PB: 32, BT_SPB: 16}
# Fixed part before the packet data: 8-byte block header + fixed fields (sections 4.3, 4.4, appendix A)
PACKET_DATA_AT = {BT_EPB: 28, BT_PB: 28, BT_SPB: 12}
# No real block comes near this (the largest snaplen any reader allows is 128 MiB for D-Bus);
# a bigger total length means a damaged file, and we must not try to buffer it.
MAX_BLOCK_LEN = (128 << 20) + 4096
# IDB options (section 4.2)
OPT_ENDOFOPT = 0
IF_TSRESOL = 9
IF_TSOFFSET = 14
DEFAULT_TSRESOL = 6  # microseconds when if_tsresol is absent (section 4.2)



class CaptureError(Exception):
    """User-caused problem with a capture file (missing, unreadable, not a capture).

    str() is one clear line naming the file.
    """


def max_caplen(linktype: int) -> int:
    """The largest captured length libpcap accepts for a link type."""
    return MAX_SNAPLEN_BY_LINKTYPE.get(linktype, MAXIMUM_SNAPLEN)


class CaptureReader:
    """A pcap or pcapng file being read as a stream of Batches.

    Iterate it for the Batches (file order, at most ``batch_frames`` frames each; a batch also ends
    at a chunk boundary and, in pcapng, at a section or interface block). After iteration
    ``truncated``/``warning`` tell whether the file stopped early; ``skipped`` counts pcapng frames
    that named an interface the section never described. ``linktypes`` is known at open for pcap and
    grows as IDBs are read for pcapng.
    """

    format: str
    path: str
    truncated: bool
    warning: str | None
    linktypes: list[int]
    bytes_read: int
    size: int
    skipped: int
    frames: int

    def __init__(self, path: str, fd: int, size: int, head: bytes, batch_frames: int, chunk_size: int):
        if batch_frames < 1:
            raise ValueError("batch_frames must be at least 1")
        self.path = path
        self._fd = fd
        self.size = size
        self.batch_frames = batch_frames
        self.chunk_size = max(chunk_size, 64)
        self.truncated = False
        self.warning = None
        self.linktypes = []
        self.bytes_read = 0
        self.skipped = 0
        self.frames = 0
        self._pool: list[np.ndarray] = []  # chunk arrays, see _chunk_array
        magic = struct.unpack_from("<I", head)[0]
        if magic == BT_SHB:
            self.format = "pcapng"
            self._check_shb(head)
        else:
            self.format = "pcap"
            self._parse_pcap_header(head, magic)

    # -- public surface ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        self.truncated = False
        self.warning = None
        self.skipped = 0
        self.frames = 0
        if self.format == "pcap":
            return self._iter_pcap()
        self.linktypes = []
        return self._iter_pcapng()

    def close(self) -> None:
        """Release the file descriptor; Batches already produced stay valid."""
        self._pool = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptureReader({self.path!r}, format={self.format!r}, linktypes={self.linktypes})"

    # -- chunked reading --------------------------------------------------------------------------

    def _read_chunk(self, buf: bytes | memoryview, pos: int, need: int, offset: int) -> memoryview:
        """The next chunk (a memoryview of a numpy array): the unconsumed tail of ``buf`` from ``pos``,
        then file bytes from ``offset``.

        Never the array behind ``buf`` or behind any Batch still held (see _chunk_array).
        Reads at least ``need`` bytes in total when the file has them (a record bigger than a chunk).
        """
        tail = len(buf) - pos
        size = tail + max(self.chunk_size, need)
        view = memoryview(self._chunk_array(size))[:size]
        view[:tail] = memoryview(buf)[pos:]
        got = tail
        while got < size:
            n = os.preadv(self._fd, [view[got:]], offset + got - tail)
            if n == 0:
                break
            got += n
        return view if got == size else view[:got]

    def _chunk_array(self, size: int) -> np.ndarray:
        """An array of at least ``size`` bytes that nothing else references: an idle one of the pool, or
        a new one.

        A fresh array's pages cost the kernel a fault and a zeroed page each; a reused one is mapped
        already. Batches point into their chunk's array (a memoryview or numpy view of it holds a
        reference to it), so an array the pool alone references is one no Batch, view or slice can
        see: only that one is reused.
        """
        pool = self._pool
        idle = [i for i in range(len(pool)) if _references(pool, i) <= _IDLE_REFERENCES]
        for i in idle:
            if pool[i].shape[0] >= size:
                return pool[i]
        # numpy's allocation: not zeroed first (preadv writes what is read), and big ones get huge pages,
        # so far fewer page faults than a bytearray's. An eighth more than a chunk, so that it is still big
        # enough with the record carried over (one of MAXIMUM_SNAPLEN, at the default chunk size)
        array = np.empty(max(size, self.chunk_size + (self.chunk_size >> 3)), dtype=np.uint8)
        if idle:
            pool[idle[0]] = array  # one too small for this chunk
        elif len(pool) < CHUNK_POOL:
            pool.append(array)
        return array

    def _stop(self, offset: int, what: str) -> None:
        self.truncated = True
        self.bytes_read = offset
        self.warning = f"{what} after {self.frames} packets (offset {offset})"
        self._note_skipped()

    def _note_skipped(self) -> None:
        # a dropped frame is never silent: the CLI prints the warning
        if self.skipped:
            note = f"skipped {self.skipped} packets naming an interface the section does not describe"
            self.warning = f"{self.warning}; {note}" if self.warning else note

    # -- pcap -------------------------------------------------------------------------------------

    def _parse_pcap_header(self, head: bytes, magic: int) -> None:
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAP_MAGIC_KUZNETZOV):
            order = "<"
        else:
            order = ">"
            magic = struct.unpack_from(">I", head)[0]
        if len(head) < PCAP_FILE_HEADER_LEN:
            raise CaptureError(
                f"{self.path}: truncated pcap file header ({len(head)} of {PCAP_FILE_HEADER_LEN} bytes)"
            )
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", head, 4)
        # libpcap reads 2.x and DG/UX's 543.0 only (sf-pcap.c pcap_check_header)
        if not (major == 2 or (major, minor) == (543, 0)):
            raise CaptureError(f"{self.path}: unsupported pcap file version {major}.{minor}")
        self._order = order
        # Before 2.3 (and in DG/UX files) the caplen and len fields were the other way round
        # (sf-pcap.c "We interchanged the caplen and len fields at version 2.3").
        self._lengths_swapped = (major == 2 and minor < 3) or major == 543
        self._nsec = magic == PCAP_MAGIC_NSEC
        self._record_header_len = 24 if magic == PCAP_MAGIC_KUZNETZOV else 16
        self._cap_field = 12 if self._lengths_swapped else 8  # offset of the caplen field in a record
        self.snaplen = snaplen
        self.linktypes = [linktype & PCAP_LINKTYPE_MASK]
        self.linktype_ext = linktype & ~PCAP_LINKTYPE_MASK  # FCS length bits, kept for writers

    def _iter_pcap(self) -> Iterator[Batch]:
        hlen = self._record_header_len
        cap_at = struct.Struct(self._order + "I").unpack_from
        cap_field = self._cap_field
        limit = max_caplen(self.linktypes[0])
        batch_frames = self.batch_frames
        base = PCAP_FILE_HEADER_LEN  # file offset of buf[0]
        self._walk_window = self.FAST_WALK_FIRST_WINDOW
        buf: bytes | memoryview = b""
        pos = 0
        need = hlen
        while True:
            buf = self._read_chunk(buf, pos, need, base + len(buf))
            base += pos
            pos = 0
            end = len(buf)
            if end < need:  # end of file
                if end:
                    self._stop(base, "file ends mid-record")
                else:
                    self.bytes_read = base
                return
            # the records up to the first that is not whole in buf or has a caplen over the limit (pos)
            st, headers, pos = self._walk_pcap(buf, end, limit)
            corrupt = 0
            cap = 0
            if pos + hlen <= end:
                cap = cap_at(buf, pos + cap_field)[0]
                if cap > limit:
                    corrupt = cap
            if st.shape[0]:
                for i in range(0, len(st), batch_frames):
                    part = st[i : i + batch_frames]
                    after = int(st[i + batch_frames]) if i + batch_frames < len(st) else pos
                    self.bytes_read = base + after
                    yield self._pcap_batch(buf, part, headers[i : i + batch_frames])
            if corrupt:
                self._stop(base + pos, f"corrupt record: caplen {corrupt} exceeds the maximum {limit}")
                return
            need = hlen if pos + hlen > end else hlen + cap

    # The record walk. A record's start is only known from the one before it (start + header + caplen),
    # so the plain walk is a Python loop. The fast walk proves the same chain with numpy: it takes as
    # candidates every offset whose ts_sec high half equals that of the record it starts from (true
    # records almost all do, it changes every 18 hours; a few payload offsets do too), links each
    # candidate to the candidate its caplen leads to, and follows the links from that record by pointer
    # doubling. Every record on that path is a true record by induction (its start came from the
    # previous one's caplen, exactly as the loop computes it), so the heuristic decides only how far the
    # proof reaches, never what it says; where the path stops short, the walk goes on from there, and
    # the plain loop takes over wherever the fast walk keeps proving little.

    _fast_walk = True  # False: walk every chunk with the plain loop (the reference the tests compare with)
    FAST_WALK_MIN_BYTES = 1 << 16  # less than this left in a chunk: the plain loop is as quick
    # bytes the first fast step looks at; doubled after good steps, back to this after a poor one. A pcap
    # chunk starts with the window the previous chunk ended with (its steps cost a fixed overhead each)
    FAST_WALK_FIRST_WINDOW = 1 << 18
    FAST_WALK_POOR_STEPS = 2  # after this many steps proving under half their window: the plain loop

    def _walk_pcap(self, buf: bytes | memoryview, end: int, limit: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The records of ``buf[:end]`` chained from offset 0, and where the chain stops.

        Returns the record starts (int64), the first 16 bytes of their headers (a void item each, for
        _pcap_batch) and the start of the first record whose header or data is not all in the buffer
        or whose caplen exceeds ``limit``, as the plain loop finds them.
        """
        raw = np.frombuffer(buf, dtype=np.uint8, count=end)
        if not self._fast_walk or end < self.FAST_WALK_MIN_BYTES:
            starts, pos = self._walk_pcap_slow(buf, 0, end, limit)
            return starts, _gather(raw, starts, 16), pos
        hlen = self._record_header_len
        cap_field = self._cap_field
        cap_at = struct.Struct(self._order + "I").unpack_from
        u2 = self._order + "u2"
        halves = (raw[: end & ~1].view(u2), raw[1 : 1 + ((end - 1) & ~1)].view(u2))
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        pos = 0
        window = self._walk_window
        poor = 0
        while pos + hlen <= end:
            cap = cap_at(buf, pos + cap_field)[0]
            if cap > limit or pos + hlen + cap > end:
                break  # the record at pos ends the walk (the caller tells which way)
            if poor >= self.FAST_WALK_POOR_STEPS or end - pos < self.FAST_WALK_MIN_BYTES:
                starts, pos = self._walk_pcap_slow(buf, pos, end, limit)
                parts.append((starts, _gather(raw, starts, 16)))
                break
            stop = min(end, pos + window)
            proven, headers, nxt = self._walk_pcap_fast(raw, halves, pos, stop, end, limit)
            parts.append((proven, headers))
            if (nxt - pos) * 2 < stop - pos:
                poor += 1
                window = self.FAST_WALK_FIRST_WINDOW
            else:
                window = min(window * 2, 1 << 40)
            pos = nxt
        self._walk_window = window
        if not parts:
            return np.zeros(0, dtype=np.int64), _gather(raw, np.zeros(0, dtype=np.int64), 16), pos
        if len(parts) == 1:
            return parts[0][0], parts[0][1], pos
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), pos

    def _walk_pcap_slow(
        self, buf: bytes | memoryview, pos: int, end: int, limit: int
    ) -> tuple[np.ndarray, int]:
        """The plain walk from the record at ``pos``: the starts of the records that end by ``end``
        up to the first with a caplen over ``limit``, and the start of the record after them."""
        hlen = self._record_header_len
        cap_field = self._cap_field
        cap_at = struct.Struct(self._order + "I").unpack_from
        starts = array("q")
        push = starts.append
        # the hot loop: one unpack per record, no per-packet objects, no bounds test. `at` is the
        # caplen field of the record at `at - cap_field`; an unpack past the buffer's end raises,
        # a record running past `end` ends the walk, and caplens over the limit are found afterwards
        # with numpy (records walked after one are discarded).
        at = pos + cap_field
        past = end + cap_field  # `at` of a record starting at `end`
        try:
            while True:
                nxt = at + hlen + cap_at(buf, at)[0]
                if nxt > past:
                    break
                push(at)
                at = nxt
        except struct.error:
            pass
        st = np.frombuffer(starts, dtype=np.int64) - cap_field
        if st.shape[0]:
            u4 = np.ndarray((len(buf) - 3,), self._order + "u4", buffer=buf, strides=(1,))
            over = np.flatnonzero(u4[st + cap_field] > limit)
            if over.shape[0]:
                return st[: over[0]], int(st[over[0]])
        return st, at - cap_field

    def _walk_pcap_fast(
        self, raw: np.ndarray, halves: tuple[np.ndarray, np.ndarray], pos: int, stop: int, end: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Records chained from the record at ``pos`` (whole in the buffer, caplen within ``limit``)
        that start before ``stop``, as far as numpy can prove the chain; the first 16 bytes of their
        headers; and the start of the record after the last one proven (it may still be good: the
        caller goes on from there).

        ``raw`` is the buffer's bytes, ``halves`` its 16-bit words (in the file's byte order) at even
        and at odd offsets.
        Every record returned ends by ``end`` and has a caplen within ``limit``, so the plain loop
        would have walked the same ones.
        """
        none = np.zeros(0, dtype=np.int64)
        nothing = none, _gather(raw, none, 16), pos
        hlen = self._record_header_len
        little = self._order == "<"
        hi_at = 2 if little else 0  # offset of ts_sec's high 16 bits in a record (an even one)
        hi = int(halves[pos & 1][(pos + hi_at) >> 1])
        last = min(stop, end - hlen + 1) - 1  # the last candidate start (its header is in the buffer)
        # Candidates: offsets p in pos..last whose ts_sec high half equals the record at pos's, word
        # j of halves[parity] being at offset parity + 2 * j
        found = []
        for parity in (0, 1):
            words = halves[parity]
            j0 = (pos + hi_at - parity + 1) >> 1
            j1 = (last + hi_at - parity) >> 1
            if j1 < j0:
                continue
            j = np.flatnonzero(words[j0 : j1 + 1] == hi)
            if j.shape[0] > (j1 - j0) // 4 + 64:
                # a common value of ts_sec's high half (0?) matching all over the payload: the work
                # below would cost more than the plain loop
                return nothing
            j = j.astype(np.int64, copy=False)  # in place from here: fewer temporaries
            j *= 2
            j += 2 * j0 + parity - hi_at
            found.append(j)
        cand = np.concatenate(found)
        cand.sort(kind="stable")  # two sorted runs: a merge
        # every candidate's header, as whole items: its caplen for the proof, then the proven ones' for
        # _pcap_batch, which need not go back to the buffer for them (a second pass of cache misses)
        headers = _gather(raw, cand, 16)
        cap = headers.view(self._order + "u4")[self._cap_field >> 2 :: 4].astype(np.int64)
        m = cand.shape[0]
        succ = cap + hlen
        succ += cand
        valid = cap <= limit
        valid &= succ <= end
        if not m or cand[0] != pos or not valid[0]:  # cannot happen for a record the caller checked
            return nothing
        proven, after = _prove_chain(cand, succ, valid)
        return _pick(cand, proven), _pick(headers, proven), after

    def _pcap_batch(self, buf: bytes | memoryview, st: np.ndarray, headers: np.ndarray) -> Batch:
        # the 16-byte record headers (_walk_pcap gathered them as whole items) read as 4 words
        hdr = headers.view(self._order + "u4").reshape(-1, 4)
        cap_col, wire_col = (3, 2) if self._lengths_swapped else (2, 3)
        n = st.shape[0]
        self.frames += n
        ts_ns = np.multiply(hdr[:, 0], 1_000_000_000, dtype=np.int64)
        if self._nsec:
            ts_ns += hdr[:, 1]
        else:
            ts_ns += np.multiply(hdr[:, 1], 1000, dtype=np.int64)
        return Batch(
            buf=buf,
            offsets=st + self._record_header_len,
            caplens=hdr[:, cap_col].astype(np.uint32),
            wirelens=hdr[:, wire_col].astype(np.uint32),
            ts_ns=ts_ns,
            linktypes=np.full(n, self.linktypes[0], dtype=np.uint16),
        )

    # -- pcapng -----------------------------------------------------------------------------------

    def _check_shb(self, head: bytes) -> None:
        """Validate the first Section Header Block enough to call the file pcapng (section 4.1)."""
        if len(head) < 16:
            raise CaptureError(f"{self.path}: truncated pcapng section header ({len(head)} bytes)")
        if _shb_order(head, 0) is None:
            raise CaptureError(
                f"{self.path}: not a pcap or pcapng capture file (bad pcapng byte-order magic)"
            )

    def _iter_pcapng(self) -> Iterator[Batch]:
        # Interfaces of every section, in order seen; a section's interface ids are indexes into its own
        # list (section 4.2), which starts at self._section_base in these global ones.
        self._snaplens: list[int] = []
        self._tsresol: list[int] = []
        self._tsoffset: list[int] = []
        self._section_base = 0
        batch_frames = self.batch_frames
        base = 0
        buf: bytes | memoryview = b""
        pos = 0
        need = 12
        order = "<"
        head_at = struct.Struct("<II").unpack_from
        while True:
            buf = self._read_chunk(buf, pos, need, base + len(buf))
            base += pos
            pos = 0
            end = len(buf)
            if end < need:
                if end:
                    self._stop(base, "file ends mid-block")
                else:
                    self.bytes_read = base
                    self._note_skipped()
                return
            starts = array("q")
            push = starts.append
            kind = -1  # block type of the frames in starts: a batch holds one kind only
            kind_min = 0
            remaining = batch_frames
            problem = None
            need = 12
            # runs of packet blocks are proven with numpy from fast_from on (see _walk_pcap for the
            # thresholds; _walk_blocks_fast for the proof)
            fast_from = 0 if self._fast_walk else end
            window = self.FAST_WALK_FIRST_WINDOW
            poor = 0
            raw = np.frombuffer(buf, dtype=np.uint8, count=end)
            while pos + 12 <= end:
                btype, blen = head_at(buf, pos)
                if btype == kind and kind_min <= blen <= MAX_BLOCK_LEN and not blen & 3:
                    # the hot path: another packet block like the previous one
                    if pos >= fast_from and (
                        poor >= self.FAST_WALK_POOR_STEPS or end - pos < self.FAST_WALK_MIN_BYTES
                    ):
                        fast_from = end
                    if pos < fast_from:
                        nxt = pos + blen
                        if nxt > end:
                            need = blen
                            break
                        push(pos)
                        pos = nxt
                        remaining -= 1
                    else:
                        stop = min(end, pos + window)
                        run, nxt = self._walk_blocks_fast(raw, pos, stop, end, kind, kind_min, order)
                        if (nxt - pos) * 2 < stop - pos:
                            poor += 1
                            window = self.FAST_WALK_FIRST_WINDOW
                        else:
                            window *= 2
                        if not run.shape[0]:
                            fast_from = pos + 1  # this block by the plain path
                            continue
                        if run.shape[0] > remaining:
                            nxt = int(run[remaining])
                            run = run[:remaining]
                        starts.frombytes(run.tobytes())
                        remaining -= run.shape[0]
                        pos = nxt
                    if not remaining:
                        problem = yield from self._flush(buf, starts, kind, order, base + pos)
                        starts = array("q")
                        push = starts.append
                        remaining = batch_frames
                        if problem:
                            break
                    continue
                if starts and btype in _BATCH_BOUNDARIES:
                    # A batch holds one kind of packet block and reads the interface table and byte
                    # order once, so it ends before another kind of packet block, an IDB or an SHB.
                    problem = yield from self._flush(buf, starts, kind, order, base + pos)
                    starts = array("q")
                    push = starts.append
                    remaining = batch_frames
                    if problem:
                        break
                if btype == BT_SHB:
                    shb_order = _shb_order(buf, pos)
                    if shb_order is None:
                        problem = (pos, "corrupt section header block: bad byte-order magic")
                        break
                    # the new section's byte order applies from its SHB on (section 4.1)
                    order = shb_order
                    head_at = struct.Struct(order + "II").unpack_from
                    blen = head_at(buf, pos)[1]
                if blen < 12 or blen & 3 or blen > MAX_BLOCK_LEN or blen < MIN_BLOCK_LEN.get(btype, 12):
                    # section 3.1: Block Total Length is a multiple of 4 and covers header and trailer
                    problem = (pos, f"corrupt block: type {btype:#x} has invalid length {blen}")
                    break
                if pos + blen > end:
                    need = blen
                    break
                if btype == BT_EPB or btype == BT_SPB or btype == BT_PB:
                    # a packet block of another kind than the batch so far (which was flushed above):
                    # the hot path takes it from here
                    kind = btype
                    kind_min = MIN_BLOCK_LEN[kind]
                    continue
                elif btype == BT_IDB or btype == BT_SHB:
                    if btype == BT_SHB:
                        major = struct.unpack_from(order + "H", buf, pos + 12)[0]
                        if major != 1:  # section 4.1: a reader must not read a major version it does not know
                            problem = (pos, f"unsupported pcapng version {major}")
                            break
                        self._section_base = len(self.linktypes)
                    else:
                        self._add_interface(buf, pos, blen, order)
                pos += blen
            if starts:
                # frames before a damaged block are still good; a damaged frame among them comes first
                problem = (yield from self._flush(buf, starts, kind, order, base + pos)) or problem
            if problem is not None:
                self._stop(base + problem[0], problem[1])
                return

    def _walk_blocks_fast(
        self, raw: np.ndarray, pos: int, stop: int, end: int, kind: int, kind_min: int, order: str
    ) -> tuple[np.ndarray, int]:
        """Packet blocks of type ``kind`` chained from the one at ``pos`` (which the hot path accepts)
        that start before ``stop``, as far as numpy can prove the chain; and the offset after the last.

        Every block returned passes the hot path's test (its type, a length of at least ``kind_min``,
        at most MAX_BLOCK_LEN, a multiple of 4, ending by ``end``), so the loop would have taken the
        same ones. Candidates are the 32-bit words equal to ``kind`` at pos's alignment (block lengths
        are multiples of 4); each links to the block its total length leads to (section 3.1).
        """
        none = np.zeros(0, dtype=np.int64)
        a = pos & 3
        words = raw[a : a + ((end - a) & ~3)].view(order + "u4")  # word i at offset a + 4 * i
        i0 = (pos - a) >> 2
        i1 = min((stop - a + 3) >> 2, words.shape[0] - 1)  # candidates i0 <= i < i1 (length word i + 1)
        if i1 <= i0:
            return none, pos
        i = np.flatnonzero(words[i0:i1] == kind)
        if i.shape[0] > (i1 - i0) // 4 + 64:  # more than blocks could be: payload full of the value
            return none, pos
        i += i0
        blen = words[i + 1].astype(np.int64)
        cand = i.astype(np.int64) * 4 + a  # int64 like the loop's array('q') on every platform
        succ = cand + blen
        valid = (blen >= kind_min) & (blen <= MAX_BLOCK_LEN) & ((blen & 3) == 0) & (succ <= end)
        if not cand.shape[0] or cand[0] != pos or not valid[0]:  # cannot happen for a block the loop took
            return none, pos
        proven, after = _prove_chain(cand, succ, valid)
        return _pick(cand, proven), after

    def _flush(
        self, buf: bytes | memoryview, starts: array, kind: int, order: str, consumed: int
    ) -> Generator[Batch, None, tuple[int, str] | None]:
        """Yield the batch of ``starts`` (if any frame in it is usable); return its problem, if any."""
        batch, problem = self._pcapng_batch(buf, starts, kind, order)
        if batch is not None:
            self.bytes_read = consumed
            yield batch
        return problem

    def _add_interface(self, buf: bytes | memoryview, pos: int, blen: int, order: str) -> None:
        """Record an Interface Description Block (section 4.2): link type, snaplen, time options."""
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        tsresol = DEFAULT_TSRESOL
        tsoffset = 0
        off = pos + 16
        stop = pos + blen - 4
        while off + 4 <= stop:
            code, olen = struct.unpack_from(order + "HH", buf, off)
            if code == OPT_ENDOFOPT or off + 4 + olen > stop:
                break
            if code == IF_TSRESOL and olen >= 1:
                tsresol = buf[off + 4]
            elif code == IF_TSOFFSET and olen == 8:
                tsoffset = struct.unpack_from(order + "q", buf, off + 4)[0]
            off += 4 + ((olen + 3) & ~3)  # option values are padded to 32 bits (section 3.5)
        self.linktypes.append(linktype)
        self._snaplens.append(snaplen)
        self._tsresol.append(tsresol)
        self._tsoffset.append(tsoffset)

    def _pcapng_batch(
        self, buf: bytes | memoryview, starts: array, kind: int, order: str
    ) -> tuple[Batch | None, tuple[int, str] | None]:
        """Gather the frames of one kind of packet block; stop at the first corrupt one.

        Returns the batch (None when nothing in it is usable) and, if a block was corrupt, its offset
        in ``buf`` and a description.
        """
        st = np.frombuffer(starts, dtype=np.int64)
        raw = np.frombuffer(buf, dtype=np.uint8)
        u4 = order + "u4"
        base = self._section_base
        nif = len(self.linktypes) - base
        data_at = PACKET_DATA_AT[kind]
        if kind == BT_SPB:
            # section 4.4: no interface id (it is interface 0), no timestamp; the captured length is
            # the original length cut at interface 0's snaplen and at the block's own body
            hdr = _gather(raw, st, 12).view(u4).reshape(-1, 3)
            blen = hdr[:, 1].astype(np.int64)
            wire = hdr[:, 2].astype(np.int64)
            local = np.zeros(st.shape[0], dtype=np.int64)
            cap = np.minimum(wire, blen - 16)
            if nif and self._snaplens[base]:
                cap = np.minimum(cap, self._snaplens[base])
            ticks = None
        else:
            hdr = _gather(raw, st, 28).view(u4).reshape(-1, 7)
            blen = hdr[:, 1].astype(np.int64)
            if kind == BT_PB:
                # appendix A: a 16-bit interface id followed by a 16-bit drops count
                local = hdr[:, 2].astype(np.int64)
                local = (local & 0xFFFF) if order == "<" else (local >> 16)
            else:
                local = hdr[:, 2].astype(np.int64)
            ticks = (hdr[:, 3].astype(np.uint64) << np.uint64(32)) | hdr[:, 4].astype(np.uint64)
            # the Batch's own uint32 columns; the length checks below compare them with int64s exactly
            cap = hdr[:, 5].copy()
            wire = hdr[:, 6].copy()
        known = local < nif
        gidx = np.where(known, local + base, 0)
        limits = np.array([max_caplen(lt) for lt in self.linktypes] or [MAXIMUM_SNAPLEN], dtype=np.int64)
        # The captured data must fit in the block (sections 4.3, 4.4) and stay under libpcap's maximum.
        bad = (cap > blen - (data_at + 4)) | (known & (cap > limits[gidx]))
        problem = None
        if bad.any():
            first = int(np.argmax(bad))
            problem = (
                int(st[first]),
                (
                    f"corrupt packet block: caplen {int(cap[first])} does not fit its "
                    f"{int(blen[first])}-byte block or exceeds the maximum"
                ),
            )
            st, local, gidx, cap, wire, known = (a[:first] for a in (st, local, gidx, cap, wire, known))
            if ticks is not None:
                ticks = ticks[:first]
        if not known.all():
            # Both libpcap and wiretap give up on the file here; we drop just these frames.
            self.skipped += int((~known).sum())
            st, gidx, cap, wire = st[known], gidx[known], cap[known], wire[known]
            if ticks is not None:
                ticks = ticks[known]
        n = st.shape[0]
        if n == 0:
            return None, problem
        first_if = int(gidx[0])
        one_if = bool((gidx == first_if).all())  # one interface (the common case): no np.unique, no masks
        if ticks is None:
            ts_ns = np.zeros(n, dtype=np.int64)
        elif one_if:
            ts_ns = _ticks_to_ns(ticks, self._tsresol[first_if], self._tsoffset[first_if])
        else:
            ts_ns = np.empty(n, dtype=np.int64)
            for g in np.unique(gidx):
                sel = gidx == g
                ts_ns[sel] = _ticks_to_ns(ticks[sel], self._tsresol[g], self._tsoffset[g])
        if one_if:
            linktypes = np.full(n, self.linktypes[first_if], dtype=np.uint16)
        else:
            linktypes = np.array(self.linktypes, dtype=np.uint16)[gidx]
        self.frames += n
        return (
            Batch(
                buf=buf,
                offsets=st + data_at,
                caplens=cap.astype(np.uint32, copy=False),
                wirelens=wire.astype(np.uint32, copy=False),
                ts_ns=ts_ns,
                linktypes=linktypes,
            ),
            problem,
        )


def _gather(raw: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes of raw from each start (each within raw), gathered as whole items (a memcpy each)."""
    if raw.shape[0] < width:  # no span fits: only an empty gather can succeed
        return raw[starts[:, None] + np.arange(width)]
    spans = np.ndarray(buffer=raw, dtype=np.dtype((np.void, width)), shape=(raw.shape[0] - width + 1,), strides=(1,))
    return spans[starts]


def _references(pool: list[np.ndarray], i: int) -> int:
    """sys.getrefcount of pool[i], taken the same way every time (see _IDLE_REFERENCES)."""
    return sys.getrefcount(pool[i])


# what _references gives for an array only the pool holds (the interpreter's own temporary references
# differ between versions: measured, not assumed)
_IDLE_REFERENCES = _references([np.empty(0, dtype=np.uint8)], 0)


def _pick(values: np.ndarray, which: slice | list[slice] | np.ndarray) -> np.ndarray:
    """The elements of values that _prove_chain's ``which`` names (a few runs: copied a run at a time)."""
    if isinstance(which, list):
        return np.concatenate([values[run] for run in which])
    return values[which]


def _prove_chain(
    cand: np.ndarray, succ: np.ndarray, valid: np.ndarray
) -> tuple[slice | list[slice] | np.ndarray, int]:
    """The chain of candidates from candidate 0: 0, then the candidate at succ[0], and so on while the
    candidate is valid; returns which candidates they are (for _pick: a slice, a few, or a mask, so
    that ``cand`` and anything parallel to it can be picked alike) and the succ of the last (where the
    chain leaves them).

    ``cand``: candidate offsets, sorted, cand[0] valid; ``succ``: where each one's record or block ends;
    ``valid``: whether the walk accepts it. Pointer doubling over the "breaks", so numpy work only.
    """
    m = cand.shape[0]
    # Candidate u leads to u + 1 where its record ends at the next candidate's start (both records
    # acceptable). The others ("breaks") lead wherever their record ends, if that is a candidate.
    step = np.zeros(m, dtype=bool)
    step[:-1] = (succ[:-1] == cand[1:]) & valid[:-1] & valid[1:]
    brk = np.flatnonzero(~step)  # includes m - 1
    nb = brk.shape[0]
    to = succ[brk]
    target = np.searchsorted(cand, to)
    near = np.minimum(target, m - 1)
    ok = valid[brk] & (target < m) & (cand[near] == to) & valid[near]
    # break b leads through target[b] and the steps after it to the next break: link[b]
    link = np.full(nb + 1, nb, dtype=np.intp)
    link[:nb][ok] = np.searchsorted(brk, target[ok])
    # Pointer doubling from break 0 (the first on the way from candidate 0): jumps[k][b] is 2**k
    # breaks on from b, nb past the end; the path meets nb within 2**K breaks.
    jumps = [link]
    while jumps[-1][0] != nb:
        jumps.append(jumps[-1][jumps[-1]])
    path = np.zeros(1, dtype=np.intp)
    for jump in reversed(jumps[:-1]):
        path = np.stack([path, jump[path]], axis=1).ravel()  # the breaks 0 .. 2**K - 1 on, in order
    path = path[: int(np.count_nonzero(path < nb))]
    # the records proven: each break on the path and the steps leading to it
    ends = brk[path]
    begins = np.empty_like(ends)
    begins[0] = 0
    begins[1:] = target[path[:-1]]
    after = int(succ[ends[-1]])
    if ends.shape[0] == 1:
        return slice(0, int(ends[0]) + 1), after
    if ends.shape[0] <= 64:
        return [slice(b, e + 1) for b, e in zip(begins.tolist(), ends.tolist())], after
    mark = np.zeros(m + 1, dtype=np.int32)
    mark[begins] = 1
    mark[ends + 1] -= 1
    return np.cumsum(mark[:m]) > 0, after


def _shb_order(buf: bytes | memoryview, pos: int) -> str | None:
    """Byte order of the section whose SHB starts at pos, from its byte-order magic (section 4.1)."""
    bom = struct.unpack_from("<I", buf, pos + 8)[0]
    if bom == PCAPNG_BYTE_ORDER_MAGIC:
        return "<"
    if bom == 0x4D3C2B1A:  # the magic written big-endian
        return ">"
    return None


def _ticks_to_ns(ticks: np.ndarray, tsresol: int, tsoffset: int) -> np.ndarray:
    """Nanoseconds since the epoch from pcapng timestamp units (section 4.2, if_tsresol/if_tsoffset).

    if_tsresol: the high bit clear means units of 10**-v seconds, set means 2**-(v & 0x7f) seconds.
    """
    exp = tsresol & 0x7F
    if tsresol & 0x80:
        if exp > 30:  # keep (fraction * 1e9) inside 64 bits: drop the sub-nanosecond bits first
            shift = exp - 30
            ticks = ticks >> np.uint64(shift) if shift < 64 else np.zeros_like(ticks)
            exp = 30
        sec = ticks >> np.uint64(exp)
        frac = ticks & np.uint64((1 << exp) - 1)
        ns = sec * np.uint64(1_000_000_000) + ((frac * np.uint64(1_000_000_000)) >> np.uint64(exp))
    elif exp <= 9:
        ns = ticks * np.uint64(10 ** (9 - exp))
    elif exp - 9 < 20:
        ns = ticks // np.uint64(10 ** (exp - 9))
    else:
        ns = np.zeros_like(ticks)
    return ns.astype(np.int64) + np.int64(tsoffset * 1_000_000_000)


def open_capture(
    path: str, batch_frames: int = DEFAULT_BATCH_FRAMES, chunk_size: int = CHUNK_SIZE
) -> CaptureReader:
    """Open a pcap or pcapng file, recognised by its magic number (never by its name).

    Raises CaptureError, naming the file, when it is missing, unreadable, a directory, empty, or not a
    capture file; damage later in the file is reported through ``truncated``/``warning`` instead.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        # Linux opens a directory read-only without complaint; only reading it fails (EISDIR)
        if stat.S_ISDIR(st.st_mode):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        try:
            head = os.pread(fd, PCAP_FILE_HEADER_LEN, 0)
        except OSError as e:
            raise CaptureError(f"{path}: cannot read: {e.strerror}") from None
        if not head:
            raise CaptureError(f"{path}: empty file, not a capture file")
        magic = struct.unpack_from("<I", head.ljust(4, b"\0"))[0]
        known = (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAP_MAGIC_KUZNETZOV)
        if len(head) < 4 or (
            magic != BT_SHB and magic not in known and struct.unpack_from(">I", head)[0] not in known
        ):
            raise CaptureError(f"{path}: not a pcap or pcapng capture file")
        return CaptureReader(path, fd, st.st_size, head, batch_frames, chunk_size)
    except BaseException:
        os.close(fd)
        raise
