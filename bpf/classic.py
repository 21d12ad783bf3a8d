"""Classic BPF: tcpdump expressions compiled by libpcap, attached to sockets, run offline.

libpcap (the copy inside the pcapy-ng wheel, 1.9.1) compiles the expression against a dead handle,
so the program is the one tcpdump would build for a capture file of that link type. Two consequences
on a live Linux socket, where libpcap itself would emit special loads instead (pcap-linux.c):
  * `vlan` tests read the tag from the frame bytes, but the kernel has already moved the outer tag into
    skb metadata, so in the kernel they never match (`reads_vlan_tag` finds them; `pktscope live`
    then runs the program in its workers on the frames with the tag put back);
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
# Opcode pieces the VLAN detection below follows (linux/bpf_common.h, linux/filter.h)
# instruction classes (code & 0x07)
BPF_LD, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x02, 0x03, 0x04, 0x05, 0x06
BPF_LDH_ABS = 0x28  # BPF_LD | BPF_H | BPF_ABS
BPF_LD_MEM = 0x60  # BPF_LD | BPF_MEM
BPF_JA = 0x05  # BPF_JMP | BPF_JA
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_TXA = 0x87  # BPF_MISC | BPF_TXA
BPF_MODE_ABS, BPF_MODE_IND = 0x20, 0x40  # code & 0xe0
SKF_AD_OFF = 0xFFFFF000  # linux/filter.h: -4096, where the ancillary (skb metadata) loads start
ETHERTYPE_OFFSET = 12  # of an Ethernet header: after the two MAC addresses
# Tag protocol identifiers libpcap's gen_vlan() tests for (gencode.c): 802.1Q, 802.1ad, the old QinQ value
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
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


def reads_vlan_tag(program: list[BpfInstruction] | tuple[BpfInstruction, ...], linktype: int) -> bool:
    """Whether an Ethernet program tests the frame's EtherType for a VLAN tag (its verdict needs the tag).

    libpcap's offline `vlan` (gencode.c, gen_vlan_no_bpf_extensions) loads the halfword at offset 12
    and compares it with the VLAN TPIDs, then reads the rest of the frame 4 bytes further on. On a live
    socket the kernel has already moved the outer tag into skb metadata, so such a program never sees
    it. Following the accumulator from `ldh [12]` to a `jeq #TPID` (through scratch memory too, and
    along every jump: classic BPF jumps only forward, so one pass in order covers all paths) finds
    `vlan` wherever it sits in the expression, and also `ether proto 0x8100`, while a port or an
    address that happens to equal a TPID is not mistaken for one.
    """
    if linktype != linktypes.LINKTYPE_ETHERNET:
        return False
    n = len(program)
    # per instruction: can the accumulator / scratch slot hold the EtherType when it runs?
    acc_in = [False] * (n + 1)
    mem_in: list[frozenset[int]] = [frozenset()] * (n + 1)
    reached = [False] * (n + 1)
    reached[0] = True

    def flow(target: int, acc: bool, mem: frozenset[int]) -> None:
        if target < n:
            reached[target] = True
            acc_in[target] = acc_in[target] or acc
            mem_in[target] = mem_in[target] | mem

    for pc, (code, jt, jf, k) in enumerate(program):
        if not reached[pc]:
            continue
        acc, mem = acc_in[pc], mem_in[pc]
        cls = code & 0x07
        if cls == BPF_JMP:
            if code == BPF_JEQ_K and acc and k in VLAN_TPIDS:
                return True
            if code == BPF_JA:
                flow(pc + 1 + k, acc, mem)
            else:
                flow(pc + 1 + jt, acc, mem)
                flow(pc + 1 + jf, acc, mem)
            continue
        if cls == BPF_RET:
            continue
        if cls == BPF_LD:
            acc = (code == BPF_LDH_ABS and k == ETHERTYPE_OFFSET) or (code == BPF_LD_MEM and k in mem)
        elif cls == BPF_ST:
            mem = mem | {k} if acc else mem - {k}
        elif cls == BPF_STX:
            mem = mem - {k}
        elif cls == BPF_ALU or code == BPF_TXA:
            acc = False
        flow(pc + 1, acc, mem)
    return False


def uses_ancillary_loads(program: list[BpfInstruction] | tuple[BpfInstruction, ...]) -> bool:
    """Whether the program reads skb metadata (SKF_AD_*: `inbound`, `outbound`), which only the kernel has."""
    return any(
        code & 0x07 == BPF_LD and code & 0xE0 in (BPF_MODE_ABS, BPF_MODE_IND) and k >= SKF_AD_OFF
        for code, _, _, k in program
    )


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
