"""Classic BPF: tcpdump expressions compiled by libpcap, attached to sockets, run offline.

libpcap (the copy inside the pcapy-ng wheel, 1.9.1) compiles the expression against a dead handle,
so the program is the one tcpdump would build for a capture file of that link type. Two consequences
on a live Linux socket, where libpcap itself would emit special loads instead (pcap-linux.c):
  * `vlan` tests read the tag from the frame bytes, but the kernel has already moved the tag into
    skb metadata, so they never match live traffic on an interface with VLAN offload;
  * `inbound` / `outbound` use the SKF_AD_PKTTYPE ancillary load: they work in the kernel, while the
    offline `CompiledFilter.matches` cannot evaluate them (libpcap's userland interpreter rejects them).
"""

from __future__ import annotations

import ctypes
import socket
from dataclasses import dataclass, field

import numpy as np
import pcapy

from pktscope.capture import kernel, linktypes
from pktscope.capture.batch import Batch

BpfInstruction = tuple[int, int, int, int]  # (code, jt, jf, k) as in struct sock_filter

BPF_RET_K = 0x06  # BPF_RET | BPF_K (linux/bpf_common.h): return the constant k
BPF_MAXINSNS = 4096  # linux/bpf_common.h: the kernel rejects longer classic programs
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF  # pcap/pcap.h: makes `ip broadcast` fail with a clear message
DEFAULT_SNAPLEN = 262144  # tcpdump's default -s

# libpcap's pcap_open_dead() takes a DLT_ value; the LINKTYPE_ values in files differ for raw IP.
_LINKTYPE_TO_DLT: dict[int, int] = {
    linktypes.LINKTYPE_ETHERNET: pcapy.DLT_EN10MB,
    linktypes.LINKTYPE_RAW: pcapy.DLT_RAW,
    linktypes.LINKTYPE_LINUX_SLL: pcapy.DLT_LINUX_SLL,
    linktypes.LINKTYPE_NULL: pcapy.DLT_NULL,
    linktypes.LINKTYPE_LOOP: pcapy.DLT_LOOP,
}


class FilterError(Exception):
    """A filter the user gave cannot be compiled or attached; the message is one line for the user."""


class SockFilter(ctypes.Structure):
    """struct sock_filter (linux/filter.h)."""

    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    """struct sock_fprog (linux/filter.h): the SO_ATTACH_FILTER argument."""

    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


@dataclass(frozen=True)
class CompiledFilter:
    """A tcpdump expression and its classic BPF program, usable in the kernel and offline."""

    expression: str
    linktype: int
    snaplen: int
    instructions: tuple[BpfInstruction, ...]
    _program: pcapy.BPFProgram = field(repr=False, compare=False)

    def matches(self, frame: bytes) -> bool:
        """Whether the program accepts this frame (run by libpcap's userland interpreter)."""
        return self._program.filter(frame) != 0

    def match_batch(self, batch: Batch) -> np.ndarray:
        """A bool per frame of the batch: accepted by the program."""
        view = memoryview(batch.buf)
        out = np.zeros(len(batch), dtype=bool)
        run = self._program.filter
        for i, (start, length) in enumerate(zip(batch.offsets.tolist(), batch.caplens.tolist(), strict=True)):
            out[i] = run(bytes(view[start : start + length])) != 0
        return out


def compile_filter(
    expression: str,
    linktype: int = linktypes.LINKTYPE_ETHERNET,
    snaplen: int = DEFAULT_SNAPLEN,
    optimize: bool = True,
    netmask: int = PCAP_NETMASK_UNKNOWN,
) -> CompiledFilter:
    """Compile a tcpdump expression for frames of `linktype`; accepted frames are cut to `snaplen`."""
    dlt = _LINKTYPE_TO_DLT.get(linktype, linktype)
    try:
        program = pcapy.compile(dlt, snaplen, expression, int(optimize), netmask)
    except pcapy.PcapError as exc:
        raise FilterError(f"bad filter expression {expression!r}: {exc}") from None
    instructions = tuple(tuple(int(v) for v in insn) for insn in program.get_bpf())
    if len(instructions) > BPF_MAXINSNS:
        raise FilterError(
            f"filter expression {expression!r} compiles to {len(instructions)} instructions; "
            f"the kernel accepts at most {BPF_MAXINSNS}"
        )
    return CompiledFilter(expression, linktype, snaplen, instructions, program)


def accept_all(snaplen: int = DEFAULT_SNAPLEN) -> list[BpfInstruction]:
    """A program that keeps every frame, cut to snaplen: how a ring socket gets a snap length."""
    return [(BPF_RET_K, 0, 0, snaplen)]


def reject_all() -> list[BpfInstruction]:
    """A program that drops every frame (held while a socket is bound but not yet fully set up)."""
    return [(BPF_RET_K, 0, 0, 0)]


def with_snaplen(program: list[BpfInstruction] | tuple[BpfInstruction, ...], snaplen: int) -> list[BpfInstruction]:
    """The program with every non-zero `ret #k` lowered to at most snaplen.

    The accept value of a socket filter is the number of bytes the kernel keeps, so this is where a
    ring socket's snap length lives (libpcap compiles the snaplen it was given into these returns).
    """
    return [
        (code, jt, jf, min(k, snaplen)) if code == BPF_RET_K and k != 0 else (code, jt, jf, k)
        for code, jt, jf, k in program
    ]


def attach_filter(sock: socket.socket, program: list[BpfInstruction] | tuple[BpfInstruction, ...]) -> None:
    """Attach (or replace) the socket's classic BPF filter with SO_ATTACH_FILTER."""
    if not program:
        raise FilterError("empty BPF program")
    if len(program) > BPF_MAXINSNS:
        raise FilterError(f"BPF program has {len(program)} instructions; the kernel accepts at most {BPF_MAXINSNS}")
    insns = (SockFilter * len(program))(*(SockFilter(c, jt, jf, k) for c, jt, jf, k in program))
    # The kernel copies the instructions during the call, so `insns` only has to live until it returns.
    fprog = SockFprog(len(program), ctypes.cast(insns, ctypes.POINTER(SockFilter)))
    try:
        sock.setsockopt(kernel.SOL_SOCKET, kernel.SO_ATTACH_FILTER, bytes(fprog))
    except OSError as exc:
        # EINVAL: the verifier (sk_chk_filter) refused it; ENOMEM: over net.core.optmem_max.
        raise FilterError(f"kernel refused the BPF program ({len(program)} instructions): {exc.strerror}") from None
