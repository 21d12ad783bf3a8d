"""Live capture from one AF_PACKET socket with a TPACKET_V3 RX ring, one Batch per ring block.

The kernel fills fixed-size blocks with frames and hands a block to user space when it is full or
when its retire timeout fires (Documentation/networking/packet_mmap.rst, "TPACKET_V3"). `PacketRing`
copies the used part of each ready block into a `bytes` (one memcpy, far cheaper than the per-frame
work after it), gives the block straight back to the kernel, and describes the frames with numpy
arrays. So `Batch.buf` is owned by the Batch: it stays valid after the next read and after close, and
it can be sent to another process as is.

Set-up order, and why (af_packet.c; measured facts in DESIGN.md):
  1. socket(AF_PACKET, SOCK_RAW, 0): with protocol 0 no protocol hook is registered, so nothing is
     queued to the socket until bind() names a protocol;
  2. PACKET_VERSION = TPACKET_V3 before the ring (a V1 socket silently accepts a tpacket_req3);
  3. SO_ATTACH_FILTER before bind, so the first frame queued has passed the filter. With fanout the
     filter attached first rejects everything: between bind() and PACKET_FANOUT the socket would
     otherwise receive every frame on its own, and the same frame would also reach another member of
     the group. The real filter replaces it once the socket has joined the group. An eBPF filter
     (SO_ATTACH_BPF) takes the real filter's place at the same point;
  4. PACKET_RX_RING (tpacket_req3) and mmap;
  5. bind((ifname, ETH_P_ALL));
  6. PACKET_FANOUT (needs a bound socket with a protocol);
  7. PACKET_ADD_MEMBERSHIP PACKET_MR_PROMISC: a membership belongs to the socket, so the kernel drops
     the interface's promiscuity count when the socket closes, also when the process is killed.

Frame timestamps are the kernel's software receive times, in nanoseconds (TPACKET_V3 gives tp_nsec).
Frames whose VLAN tag the kernel moved to metadata (TP_STATUS_VLAN_VALID) get the 802.1Q tag put back
into the bytes, as libpcap does, so a Batch holds what tcpdump would write.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Self

import numpy as np

from pktscope.bpf import classic
from pktscope.capture import kernel
from pktscope.capture.batch import Batch

DEFAULT_SNAPLEN = 262144  # tcpdump's default -s
DEFAULT_BLOCK_SIZE = 1 << 20  # holds a full-snaplen frame (64 KiB GSO frames on veth/lo) several times over
# Ring per socket (one socket per worker). The ring is what absorbs a worker's stalls: on a busy box the
# worker waits for a CPU (bench/README.md: 0.7-4.8 s of run-queue wait in a 3 s flood) while the kernel
# keeps filling blocks. A 64-byte frame takes 144 bytes of a block, so at the ≈750k frames/s one worker
# keeps up with, 32 MiB held ≈0.3 s and lost up to 27% of a flood; 128 MiB holds ≈930k such frames, ≈1.2 s
# (≈3 s per worker when two share the load), 256 MiB lost nothing in any run. The ring is kernel memory
# that cannot be swapped, so the default is capped to a share of RAM on small machines.
DEFAULT_RING_MB = 128
RING_RAM_SHARE = 16  # all workers' rings together take at most 1/16 of physical memory by default
MIN_DEFAULT_RING_MB = 8
DEFAULT_BLOCK_TIMEOUT_MS = 50  # a partly filled block reaches user space after at most this long
DEFAULT_READ_TIMEOUT = 0.25  # seconds read() waits for a block when none is ready

_BLOCK_HEAD = struct.Struct("=III")  # num_pkts, offset_to_first_pkt, blk_len (tpacket_hdr_v1 bytes 12..24)
_U32 = struct.Struct("=I")
_VLAN_TAG_LEN = 4
_ETH_P_8021Q = 0x8100


class LiveCaptureError(Exception):
    """Live capture cannot start or go on for a reason the user can fix; the message is one line."""


class FanoutGroup(NamedTuple):
    """A PACKET_FANOUT group: sockets sharing one id on one interface split its frames by `mode`."""

    group_id: int  # 0..65535, per network namespace
    mode: str | int = "hash"  # a name of kernel.FANOUT_MODES or a PACKET_FANOUT_* value
    flags: int = 0  # PACKET_FANOUT_FLAG_* bits


@dataclass(frozen=True, slots=True)
class RingStats:
    """Kernel counters of one socket (tpacket_stats_v3), totals since the socket was opened.

    `packets` counts every frame that passed the filter, including the dropped ones (af_packet.c);
    frames the filter rejected are not counted anywhere.
    """

    packets: int = 0
    drops: int = 0
    freeze_q_cnt: int = 0  # times the ring was full and the kernel froze the queue

    def __add__(self, other: RingStats) -> RingStats:
        return RingStats(
            self.packets + other.packets, self.drops + other.drops, self.freeze_q_cnt + other.freeze_q_cnt
        )

    def __sub__(self, other: RingStats) -> RingStats:
        return RingStats(
            self.packets - other.packets, self.drops - other.drops, self.freeze_q_cnt - other.freeze_q_cnt
        )


def _privilege_message() -> str:
    python = os.path.realpath(sys.executable)
    # Measured on Linux 6.18: the ring, fanout and the promiscuous membership need only CAP_NET_RAW.
    return f"capturing needs CAP_NET_RAW: run as root or `setcap cap_net_raw+eip {python}`"


def _ifreq(ifname: str) -> bytearray:
    req = bytearray(kernel.IFREQ_SIZE)
    name = ifname.encode()
    req[: len(name)] = name
    return req


def interface_info(sock: socket.socket, ifname: str) -> tuple[int, int, int]:
    """(ifindex, flags, ARPHRD type) of an interface in the socket's network namespace."""
    name = ifname.encode()
    if not name or len(name) >= kernel.IFNAMSIZ or b"\0" in name or b"/" in name:
        raise LiveCaptureError(f"no such interface: {ifname}")
    values = []
    for request, fmt in (
        (kernel.SIOCGIFINDEX, "=i"),
        (kernel.SIOCGIFFLAGS, "=H"),
        (kernel.SIOCGIFHWADDR, "=H"),
    ):
        req = _ifreq(ifname)
        try:
            fcntl.ioctl(sock.fileno(), request, req)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise LiveCaptureError(f"no such interface: {ifname}") from None
            raise
        values.append(struct.unpack_from(fmt, req, kernel.IFNAMSIZ)[0])
    return values[0], values[1], values[2]


def _fanout_arg(fanout: FanoutGroup) -> int:
    mode = kernel.FANOUT_MODES.get(fanout.mode) if isinstance(fanout.mode, str) else fanout.mode
    if mode is None or not 0 <= fanout.group_id <= 0xFFFF:
        choices = ", ".join(kernel.FANOUT_MODES)
        raise LiveCaptureError(f"bad fanout group {tuple(fanout)}: id 0..65535, mode one of {choices}")
    # if_packet.h: the option value is id | (type | flags) << 16
    return fanout.group_id | ((mode | fanout.flags) << 16)


def _attach_bpf(sock: socket.socket, prog_fd: int) -> None:
    # SO_ATTACH_BPF replaces whatever filter the socket had (sk_attach_bpf swaps sk->sk_filter)
    try:
        sock.setsockopt(kernel.SOL_SOCKET, kernel.SO_ATTACH_BPF, prog_fd)
    except OSError as exc:
        raise LiveCaptureError(f"cannot attach eBPF program fd {prog_fd}: {exc.strerror}") from None


def default_ring_mb(workers: int) -> int:
    """The default ring size per worker in MiB: DEFAULT_RING_MB, less where RAM is small."""
    try:
        ram_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError):
        return DEFAULT_RING_MB
    share = ram_mb // (RING_RAM_SHARE * max(workers, 1))
    return max(MIN_DEFAULT_RING_MB, min(DEFAULT_RING_MB, share))


def _frame_heads(block: bytes, count: int, first: int) -> np.ndarray:
    """The offsets of a block's `count` tpacket3_hdr, the first at `first`.

    tp_next_offset chains them, a sequential walk. But the kernel lays the frames out back to back, each
    taking ALIGN(tp_mac + tp_snaplen, 8) bytes (af_packet.c, prb_fill_curr_block; blk_len is a multiple
    of 8, V3_ALIGNMENT), so under a flood of equal-sized frames every step is the same: that guess is
    checked against every tp_next_offset at once, and the walk in Python (≈0.15 µs a frame) only
    continues from the first frame where it fails.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    w32 = np.frombuffer(block, dtype=np.uint32, count=len(block) // 4)
    step = int(w32[first >> 2])
    known = 1  # frames whose offset is known: the first
    if count > 1 and step > 0 and step % 8 == 0 and first + (count - 1) * step + 4 <= len(block):
        heads = first + step * np.arange(count, dtype=np.int64)
        for upto in (min(count - 1, 32), count - 1):  # a short probe first: mixed sizes fail it at once
            wrong = np.flatnonzero(w32[heads[:upto] >> 2] != step)
            if len(wrong):
                known = int(wrong[0]) + 1
                break
        else:
            return heads
    rest = [0] * (count - known)
    h = first + (known - 1) * step  # the last frame known; the walk goes on from its successor
    h += int(w32[h >> 2])
    words = memoryview(block).cast("I")
    for i in range(count - known):
        rest[i] = h
        h += words[h >> 2]
    words.release()
    start = first + step * np.arange(known, dtype=np.int64)
    return np.concatenate([start, np.array(rest, dtype=np.int64)])


class PacketRing:
    """One AF_PACKET socket on one interface with a TPACKET_V3 RX ring, read as Batches.

    Open it with `PacketRing.open(...)`; use as a context manager or call `close()`.
    """

    def __init__(
        self,
        sock: socket.socket,
        ring: mmap.mmap,
        ifname: str,
        ifindex: int,
        arphrd: int,
        linktype: int,
        snaplen: int,
        block_size: int,
        block_count: int,
    ) -> None:
        self._sock = sock
        self._ring = ring
        self.ifname = ifname
        self.ifindex = ifindex
        self.arphrd = arphrd
        self.linktype = linktype
        self.snaplen = snaplen
        self.block_size = block_size
        self.block_count = block_count
        self._next_block = 0
        self._totals = RingStats()
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self._vlan_ok = linktype == 1  # tags are only re-inserted into Ethernet frames

    @classmethod
    def open(
        cls,
        ifname: str,
        snaplen: int = DEFAULT_SNAPLEN,
        ring_mb: int = DEFAULT_RING_MB,
        block_size: int = DEFAULT_BLOCK_SIZE,
        block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS,
        fanout: FanoutGroup | tuple[int, str | int, int] | None = None,
        promisc: bool = False,
        classic_bpf: list[classic.BpfInstruction] | tuple[classic.BpfInstruction, ...] | None = None,
        bpf_fd: int | None = None,
    ) -> PacketRing:
        """Open a capture socket on `ifname` in the caller's network namespace.

        `classic_bpf` is a classic BPF program ((code, jt, jf, k) tuples, see `bpf.classic`); its accept
        values are lowered to `snaplen`, which is how the kernel learns the snap length. `ring_mb` MiB
        are split into blocks of `block_size` bytes (a multiple of the page size, able to hold one
        frame of `snaplen` bytes).

        `bpf_fd` is a loaded eBPF socket filter (bpf.pins.PinnedFilter) attached instead of `classic_bpf`,
        at the same point: its return value is the snap length, so it must cap it itself.
        """
        page = mmap.PAGESIZE
        if block_size <= 0 or block_size % page:
            raise LiveCaptureError(
                f"bad ring size: block size {block_size} is not a multiple of the page size {page}"
            )
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise LiveCaptureError(f"bad snap length {snaplen}")
        if block_size < snaplen + kernel.BLOCK_DESC_LEN + kernel.TPACKET3_FRAME_OVERHEAD:
            raise LiveCaptureError(
                f"bad ring size: block size {block_size} cannot hold one {snaplen}-byte frame; "
                f"use a block of at least {snaplen + kernel.BLOCK_DESC_LEN + kernel.TPACKET3_FRAME_OVERHEAD} bytes "
                "rounded up to the page size, or a smaller snap length"
            )
        block_count = (ring_mb << 20) // block_size
        if block_count < 1:
            raise LiveCaptureError(f"bad ring size: {ring_mb} MiB holds no block of {block_size} bytes")
        program = classic.with_snaplen(
            classic_bpf if classic_bpf is not None else classic.accept_all(snaplen), snaplen
        )
        group = FanoutGroup(*fanout) if fanout is not None else None
        fanout_arg = _fanout_arg(group) if group is not None else None

        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveCaptureError(_privilege_message()) from None
        ring: mmap.mmap | None = None
        try:
            ifindex, flags, arphrd = interface_info(sock, ifname)
            if not flags & kernel.IFF_UP:
                raise LiveCaptureError(
                    f"interface is down: {ifname} (bring it up with `ip link set {ifname} up`)"
                )
            linktype = kernel.ARPHRD_TO_LINKTYPE.get(arphrd)
            if linktype is None:
                raise LiveCaptureError(
                    f"cannot capture on {ifname}: its link type (ARPHRD {arphrd}) needs cooked capture, not supported yet"
                )
            sock.setsockopt(kernel.SOL_PACKET, kernel.PACKET_VERSION, kernel.TPACKET_V3)
            if group is not None or bpf_fd is None:
                try:
                    classic.attach_filter(sock, classic.reject_all() if group is not None else program)
                except classic.FilterError as exc:
                    raise LiveCaptureError(str(exc)) from None
            else:
                _attach_bpf(sock, bpf_fd)
            frame_size = 2048  # V3 packs frames by their length; tp_frame_size only has to divide the block
            req = kernel.TPACKET_REQ3.pack(
                block_size,
                block_count,
                frame_size,
                block_count * (block_size // frame_size),
                block_timeout_ms,
                0,
                0,
            )
            try:
                sock.setsockopt(kernel.SOL_PACKET, kernel.PACKET_RX_RING, req)
            except OSError as exc:
                if exc.errno == errno.ENOMEM:
                    raise LiveCaptureError(
                        f"bad ring size: the kernel could not allocate {ring_mb} MiB"
                    ) from None
                if exc.errno == errno.EINVAL:
                    raise LiveCaptureError(
                        f"bad ring size: kernel refused {block_count} blocks of {block_size} bytes"
                    ) from None
                raise
            ring = mmap.mmap(
                sock.fileno(), block_size * block_count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
            try:
                sock.bind((ifname, kernel.ETH_P_ALL))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise LiveCaptureError(f"no such interface: {ifname}") from None
                raise
            if group is not None:
                try:
                    sock.setsockopt(kernel.SOL_PACKET, kernel.PACKET_FANOUT, fanout_arg)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:
                        raise LiveCaptureError(
                            f"fanout group {group.group_id} is in use with another mode, flags or interface"
                        ) from None
                    if exc.errno == errno.ENOSPC:
                        raise LiveCaptureError(f"fanout group {group.group_id} is full") from None
                    raise
                if bpf_fd is not None:
                    _attach_bpf(sock, bpf_fd)
                else:
                    try:
                        classic.attach_filter(sock, program)
                    except classic.FilterError as exc:
                        raise LiveCaptureError(str(exc)) from None
            if promisc:
                mreq = kernel.PACKET_MREQ.pack(ifindex, kernel.PACKET_MR_PROMISC, 0, b"")
                try:
                    sock.setsockopt(kernel.SOL_PACKET, kernel.PACKET_ADD_MEMBERSHIP, mreq)
                except PermissionError:
                    raise LiveCaptureError(_privilege_message()) from None
        except BaseException:
            if ring is not None:
                ring.close()
            sock.close()
            raise
        return cls(sock, ring, ifname, ifindex, arphrd, linktype, snaplen, block_size, block_count)

    # --- reading ------------------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's descriptor, for callers that poll several sources."""
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def read(self, timeout: float | None = DEFAULT_READ_TIMEOUT) -> list[Batch]:
        """The Batches of all blocks ready now, waiting up to `timeout` seconds (None: forever) for one.

        Returns an empty list when nothing arrived in time. Each block goes back to the kernel before
        this returns.
        """
        ring = self._ring
        if not self._block_ready(self._next_block):
            events = self._poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
            if any(ev & select.POLLERR for _, ev in events):
                self._raise_socket_error()
        batches: list[Batch] = []
        for _ in range(self.block_count):
            index = self._next_block
            start = index * self.block_size
            if not _U32.unpack_from(ring, start + kernel.BLOCK_STATUS_OFFSET)[0] & kernel.TP_STATUS_USER:
                break
            num_pkts, first, blk_len = _BLOCK_HEAD.unpack_from(ring, start + 12)
            block = ring[start : start + blk_len] if num_pkts else b""
            _U32.pack_into(ring, start + kernel.BLOCK_STATUS_OFFSET, kernel.TP_STATUS_KERNEL)
            self._next_block = (index + 1) % self.block_count
            if num_pkts:
                batches.append(self._parse_block(block, num_pkts, first))
        return batches

    def __iter__(self) -> Iterator[Batch]:
        """Batches until the ring is closed (from another thread) or the interface goes away."""
        while not self.closed:
            yield from self.read()

    def _block_ready(self, index: int) -> bool:
        status = _U32.unpack_from(self._ring, index * self.block_size + kernel.BLOCK_STATUS_OFFSET)[0]
        return bool(status & kernel.TP_STATUS_USER)

    def _raise_socket_error(self) -> None:
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
            what = "went down" if code == errno.ENETDOWN else "was removed"
            raise LiveCaptureError(f"interface {what}: {self.ifname}")
        if code:
            raise LiveCaptureError(f"capture on {self.ifname} failed: {os.strerror(code)}")

    def _parse_block(self, block: bytes, count: int, first: int) -> Batch:
        # the frames' header offsets (_frame_heads), then every other field gathered for all frames at once
        hdr = _frame_heads(block, count, first)
        w32 = np.frombuffer(block, dtype=np.uint32)
        w = hdr >> 2
        sec = w32[w + 1].astype(np.int64)
        nsec = w32[w + 2].astype(np.int64)
        caplens = w32[w + 3].copy()
        wirelens = w32[w + 4].copy()
        status = w32[w + 5]
        mac = np.frombuffer(block, dtype=np.uint16)[(hdr >> 1) + 12].astype(np.int64)
        offsets = hdr + mac
        ts_ns = sec * 1_000_000_000 + nsec
        linktypes = np.full(count, self.linktype, dtype=np.uint16)
        buf: bytes = block
        if self._vlan_ok and (status & kernel.TP_STATUS_VLAN_VALID).any():
            buf, offsets, caplens, wirelens = _reinsert_vlan_tags(
                block, hdr, offsets, caplens, wirelens, status
            )
        return Batch(buf, offsets, caplens, wirelens, ts_ns, linktypes)

    # --- control ------------------------------------------------------------------------------------

    def stats(self) -> RingStats:
        """Kernel counters, totals since open (the kernel resets them on every read; we add them up)."""
        raw = self._sock.getsockopt(kernel.SOL_PACKET, kernel.PACKET_STATISTICS, kernel.TPACKET_STATS_V3.size)
        self._totals = self._totals + RingStats(*kernel.TPACKET_STATS_V3.unpack(raw))
        return self._totals

    def set_filter(self, program: list[classic.BpfInstruction] | tuple[classic.BpfInstruction, ...]) -> None:
        """Replace the classic BPF filter; accept values are lowered to the ring's snaplen."""
        classic.attach_filter(self._sock, classic.with_snaplen(program, self.snaplen))

    def attach_bpf(self, prog_fd: int) -> None:
        """Attach a loaded eBPF socket filter (SO_ATTACH_BPF), replacing the classic filter.

        The program's return value is the number of bytes kept, so it decides the snap length too.
        """
        _attach_bpf(self._sock, prog_fd)

    def close(self) -> None:
        """Unmap the ring and close the socket (which also ends its promiscuous membership)."""
        if not self._ring.closed:
            self._ring.close()
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PacketRing({self.ifname!r}, linktype={self.linktype}, snaplen={self.snaplen}, "
            f"blocks={self.block_count}x{self.block_size})"
        )


def _reinsert_vlan_tags(
    block: bytes,
    hdr: np.ndarray,
    offsets: np.ndarray,
    caplens: np.ndarray,
    wirelens: np.ndarray,
    status: np.ndarray,
) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild a block's frames with the 802.1Q tag the kernel kept in tpacket3_hdr.hv1.

    libpcap does the same after the two MAC addresses (pcap-linux.c, VLAN_TAG_LEN), so frame bytes,
    lengths and BPF offsets match what tcpdump records.
    """
    w32 = np.frombuffer(block, dtype=np.uint32)
    w16 = np.frombuffer(block, dtype=np.uint16)
    parts: list[bytes] = []
    new_offsets = np.empty_like(offsets)
    pos = 0
    caplens = caplens.copy()
    wirelens = wirelens.copy()
    for i in range(len(hdr)):
        start = int(offsets[i])
        length = int(caplens[i])
        new_offsets[i] = pos
        if status[i] & kernel.TP_STATUS_VLAN_VALID and length >= 12:
            tci = int(w32[(int(hdr[i]) >> 2) + 8]) & 0xFFFF  # hv1.tp_vlan_tci at byte 32
            tpid = (
                int(w16[(int(hdr[i]) >> 1) + 18]) if status[i] & kernel.TP_STATUS_VLAN_TPID_VALID else 0
            )  # byte 36
            tag = struct.pack("!HH", tpid or _ETH_P_8021Q, tci)
            parts += (block[start : start + 12], tag, block[start + 12 : start + length])
            caplens[i] = length + _VLAN_TAG_LEN
            wirelens[i] += _VLAN_TAG_LEN
        else:
            parts.append(block[start : start + length])
        pos += int(caplens[i])
    return b"".join(parts), new_offsets, caplens, wirelens
