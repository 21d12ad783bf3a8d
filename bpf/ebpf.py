"""The eBPF socket filter of `pktscope live --ebpf/--block`: blocklist, counters and the tcpdump expression.

One BPF_PROG_TYPE_SOCKET_FILTER program, built here instruction by instruction (no compiler at run time):

  1. count the frame as *seen* (PERCPU_ARRAY `counters`, key SEEN: packets and bytes);
  2. blocklist: find the IPv4 or IPv6 header behind 0, 1 or 2 802.1Q/802.1ad tags still in the frame
     bytes, look the source and then the destination address up in the LPM trie of its family; a hit
     adds one to that prefix's value, counts the frame as *blocked* and returns 0 (dropped before the
     socket queues it);
  3. the tcpdump expression: libpcap's classic BPF translated to eBPF as the kernel's own
     bpf_convert_filter() does (net/core/filter.c): A is R0, X is R7, M[] lives on the stack, packet
     loads are BPF_LD_ABS/BPF_LD_IND; every `ret #k` stores k and jumps to
  4. the common exit: count *rejected* (0) or *passed* (non-zero), return the value (bytes kept, as
     with classic filters: at most the snap length).

Where a socket filter sees the frame. On an AF_PACKET socket, packet_rcv()/tpacket_rcv() push
skb->data back to the MAC header before running the filter, so skb->len is the frame's length and
the first byte is the destination MAC. The outer VLAN tag is no longer in the bytes: the receive path
moved it to skb metadata (skb->vlan_present / vlan_tci, hardware offload or skb_vlan_untag()), and a
second (inner) tag stays in the bytes. Under BPF_PROG_TEST_RUN (net/bpf/test_run.c) eth_type_trans()
has pulled the 14-byte Ethernet header, so skb->data is the network header and skb->len is 14 short,
while tags stay in the bytes. To be exact in both places every packet load here is relative to the
MAC header (offset SKF_LL_OFF + k, which the kernel resolves against skb_mac_header() whatever
skb->data is), and the frame length is skb->len + `len_adjust` (0 on a socket, 14 under test run).

The counters' bytes are that frame length: on a socket, without the outer VLAN tag the kernel moved
to metadata (4 bytes fewer than tcpdump shows for such a frame).

Classic BPF returns 0 when a load falls beyond the frame; an eBPF LD_ABS that fails instead ends the
program with 0 at once, past the counters. So every load is preceded by a bounds check against the
frame length that jumps to the common exit with 0: the frame is counted as rejected and the verdict
is the classic one.

Constants from include/uapi/linux/bpf.h, bpf_common.h and filter.h (SKF_*), Linux 6.18.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pktscope.bpf.classic import BpfInstruction

# --- opcode fields (bpf_common.h; eBPF additions from bpf.h) -------------------------------------
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
JMP32, ALU64 = 0x06, 0x07  # eBPF reuses the classic RET/MISC class numbers
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, ABS, IND, MEM, LEN, MSH, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0
K, X = 0x00, 0x08
OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_OR, OP_AND, OP_LSH, OP_RSH, OP_NEG, OP_MOD, OP_XOR, OP_MOV, OP_END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xD0)
JA, JEQ, JGT, JGE, JSET, JNE, CALL, EXIT, JLT, JLE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x80, 0x90, 0xA0, 0xB0
TO_BE = 0x08  # BPF_END source bit: convert to big endian (a swap on little-endian hosts)
RVAL_A = 0x10  # classic BPF_RET | BPF_A
TAX, TXA = 0x00, 0x80  # classic BPF_MISC ops
PSEUDO_MAP_FD = 1  # src_reg of a BPF_LD_IMM64 holding a map fd

# registers (the kernel's bpf_convert_filter uses the same roles: A=R0, X=R7, CTX=R6)
R0, R1, R2, R6, R7, R8, R9, R10 = 0, 1, 2, 6, 7, 8, 9, 10
REG_A, REG_X, REG_CTX, REG_LEN, REG_RET, FP = R0, R7, R6, R8, R9, R10

# helpers (bpf.h enum bpf_func_id)
FN_MAP_LOOKUP_ELEM = 1
FN_GET_PRANDOM_U32 = 7
FN_GET_SMP_PROCESSOR_ID = 8

# filter.h: negative load offsets
SKF_AD_OFF = -0x1000
SKF_LL_OFF = -0x200000
MAX_LOAD_OFFSET = 0x100000  # larger offsets would read as SKF_NET_OFF ones; no frame is that long

# struct __sk_buff field offsets (bpf.h)
SKB_LEN, SKB_PKT_TYPE, SKB_MARK, SKB_QUEUE_MAPPING, SKB_PROTOCOL = 0, 4, 8, 12, 16
SKB_VLAN_PRESENT, SKB_VLAN_TCI, SKB_VLAN_PROTO, SKB_IFINDEX, SKB_HASH = 20, 24, 28, 40, 68

# Classic ancillary loads (filter.h SKF_AD_*) this translator knows: offset -> (__sk_buff field, be16)
_ANCILLARY_FIELDS: dict[int, tuple[int, bool]] = {
    0: (SKB_PROTOCOL, True),  # SKF_AD_PROTOCOL: ntohs(skb->protocol)
    4: (SKB_PKT_TYPE, False),  # SKF_AD_PKTTYPE (libpcap's inbound/outbound)
    8: (SKB_IFINDEX, False),  # SKF_AD_IFINDEX
    20: (SKB_MARK, False),  # SKF_AD_MARK
    24: (SKB_QUEUE_MAPPING, False),  # SKF_AD_QUEUE
    32: (SKB_HASH, False),  # SKF_AD_RXHASH
    44: (SKB_VLAN_TCI, False),  # SKF_AD_VLAN_TAG
    48: (SKB_VLAN_PRESENT, False),  # SKF_AD_VLAN_TAG_PRESENT
    60: (SKB_VLAN_PROTO, True),  # SKF_AD_VLAN_TPID
}
_ANCILLARY_CALLS = {36: FN_GET_SMP_PROCESSOR_ID, 56: FN_GET_PRANDOM_U32}  # SKF_AD_CPU, SKF_AD_RANDOM

# Counter slots of the PERCPU_ARRAY (value: u64 packets, u64 bytes)
SEEN, BLOCKED, REJECTED, PASSED = 0, 1, 2, 3
COUNTER_NAMES = ("seen", "blocked", "rejected", "passed")
COUNTER_VALUE = struct.Struct("=QQ")

# Stack frame (offsets from R10): M[0..15], the LPM key {u32 prefixlen; u8 addr[16]}, the counter key
_MEM_BASE = -64
_LPM_KEY = -88
_COUNTER_KEY = -92

ETH_HLEN = 14
_ETH_P_IP, _ETH_P_IPV6, _ETH_P_8021Q, _ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
_VLAN_TAGS_IN_BYTES = 2  # tags still in the frame bytes the blocklist looks behind


class TranslationError(ValueError):
    """A classic program uses something the translator does not handle; the message is one line."""


@dataclass(frozen=True)
class FilterMaps:
    """File descriptors of the maps the program refers to (they are embedded at load time)."""

    counters: int
    block4: int
    block6: int


def encode(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: u8 code, u8 dst:4 src:4 (dst in the low nibble), s16 off, s32 imm."""
    if imm >= 1 << 31:
        imm -= 1 << 32
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class _Asm:
    """An instruction list with symbolic jump targets, resolved by `assemble()`."""

    def __init__(self) -> None:
        self.insns: list[list] = []  # [code, dst, src, off, imm, target label or None]
        self.labels: dict[object, int] = {}

    def emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
             to: object = None) -> None:
        self.insns.append([code, dst, src, off, imm, to])

    def label(self, name: object) -> None:
        self.labels[name] = len(self.insns)

    def jump(self, to: object) -> None:
        self.emit(JMP | JA, to=to)

    def ld_map_fd(self, reg: int, fd: int) -> None:
        self.emit(LD | DW | IMM, reg, PSEUDO_MAP_FD, 0, fd)
        self.emit(0)

    def load_packet(self, size: int, offset: int, index_reg: int | None = None) -> None:
        """R0 = the frame's bytes at MAC header + offset (+ index_reg), in host order (LD_ABS/LD_IND)."""
        if index_reg is None:
            self.emit(LD | size | ABS, imm=SKF_LL_OFF + offset)
        else:
            self.emit(LD | size | IND, src=index_reg, imm=SKF_LL_OFF + offset)

    def _reachable(self) -> list[bool]:
        # The verifier refuses unreachable instructions; translated classic code and the shared
        # tails can leave some (a `reject` no load needs, a jump after a return).
        n = len(self.insns)
        seen = [False] * n
        todo = [0]
        while todo:
            pos = todo.pop()
            if pos >= n or seen[pos]:
                continue
            seen[pos] = True
            code, to = self.insns[pos][0], self.insns[pos][5]
            if code == LD | DW | IMM:
                seen[pos + 1] = True
                todo.append(pos + 2)
                continue
            if to is not None:
                todo.append(self.labels[to])
            if code not in (JMP | JA, JMP | EXIT):
                todo.append(pos + 1)
        return seen

    def assemble(self) -> bytes:
        keep = self._reachable()
        new_pos = [0] * (len(self.insns) + 1)
        count = 0
        for pos, kept in enumerate(keep):
            new_pos[pos] = count
            count += kept
        new_pos[len(self.insns)] = count
        kept_insns = [(new_pos[pos], insn) for pos, insn in enumerate(self.insns) if keep[pos]]
        out = []
        for pos, (code, dst, src, off, imm, to) in kept_insns:
            if to is not None:
                off = new_pos[self.labels[to]] - pos - 1
                if not -0x8000 <= off <= 0x7FFF:
                    raise TranslationError("program too long: a jump does not fit 16 bits")
            out.append(encode(code, dst, src, off, imm))
        return b"".join(out)


def _count(asm: _Asm, maps: FilterMaps, slot: int, tag: object) -> None:
    """counters[slot].packets += 1, .bytes += frame length (per CPU, so a plain add is enough)."""
    asm.emit(ST | MEM | W, FP, off=_COUNTER_KEY, imm=slot)
    asm.emit(ALU64 | OP_MOV | X, R2, FP)
    asm.emit(ALU64 | OP_ADD | K, R2, imm=_COUNTER_KEY)
    asm.ld_map_fd(R1, maps.counters)
    asm.emit(JMP | CALL, imm=FN_MAP_LOOKUP_ELEM)
    asm.emit(JMP | JEQ | K, R0, imm=0, to=tag)
    asm.emit(LDX | MEM | DW, R1, R0, 0)
    asm.emit(ALU64 | OP_ADD | K, R1, imm=1)
    asm.emit(STX | MEM | DW, R0, R1, 0)
    asm.emit(LDX | MEM | DW, R1, R0, 8)
    asm.emit(ALU64 | OP_ADD | X, R1, REG_LEN)
    asm.emit(STX | MEM | DW, R0, R1, 8)
    asm.label(tag)


def _blocklist(asm: _Asm, maps: FilterMaps) -> None:
    """Drop the frame when its IPv4/IPv6 source or destination is in the family's LPM trie."""
    done = "bl_done"
    asm.emit(JMP | JLT | K, REG_LEN, imm=ETH_HLEN, to=done)
    asm.load_packet(H, 12)
    asm.emit(ALU64 | OP_MOV | K, R7, imm=ETH_HLEN)  # R7: offset of the EtherType's successor (L3 start)
    for n in range(_VLAN_TAGS_IN_BYTES):
        tagged, untagged = ("bl_tagged", n), ("bl_untagged", n)
        asm.emit(JMP32 | JEQ | K, R0, imm=_ETH_P_8021Q, to=tagged)
        asm.emit(JMP32 | JEQ | K, R0, imm=_ETH_P_8021AD, to=tagged)
        asm.jump(untagged)
        asm.label(tagged)
        asm.emit(ALU64 | OP_MOV | X, R1, R7)
        asm.emit(ALU64 | OP_ADD | K, R1, imm=4)
        asm.emit(JMP | JGT | X, R1, REG_LEN, to=done)
        asm.load_packet(H, 2, index_reg=R7)  # the tag's inner EtherType
        asm.emit(ALU64 | OP_ADD | K, R7, imm=4)
        asm.label(untagged)
    asm.emit(JMP32 | JEQ | K, R0, imm=_ETH_P_IP, to="bl_v4")
    asm.emit(JMP32 | JEQ | K, R0, imm=_ETH_P_IPV6, to="bl_v6")
    asm.jump(done)
    for family, header, addr_offsets, words, fd in (
        ("bl_v4", 20, (12, 16), 1, maps.block4),
        ("bl_v6", 40, (8, 24), 4, maps.block6),
    ):
        asm.label(family)
        asm.emit(ALU64 | OP_MOV | X, R1, R7)
        asm.emit(ALU64 | OP_ADD | K, R1, imm=header)
        asm.emit(JMP | JGT | X, R1, REG_LEN, to=done)
        asm.emit(ST | MEM | W, FP, off=_LPM_KEY, imm=32 * words)  # prefixlen: the full address
        for addr in addr_offsets:
            for i in range(words):
                asm.load_packet(W, addr + 4 * i, index_reg=R7)
                asm.emit(ALU | OP_END | TO_BE, R0, imm=32)  # back to network order, as the trie keys are
                asm.emit(STX | MEM | W, FP, R0, _LPM_KEY + 4 + 4 * i)
            asm.emit(ALU64 | OP_MOV | X, R2, FP)
            asm.emit(ALU64 | OP_ADD | K, R2, imm=_LPM_KEY)
            asm.ld_map_fd(R1, fd)
            asm.emit(JMP | CALL, imm=FN_MAP_LOOKUP_ELEM)
            asm.emit(JMP | JNE | K, R0, imm=0, to="blocked")
        asm.jump(done)
    asm.label("blocked")
    asm.emit(ALU64 | OP_MOV | K, R1, imm=1)
    asm.emit(STX | ATOMIC | DW, R0, R1, 0, OP_ADD)  # the prefix's hit count (shared by all CPUs)
    _count(asm, maps, BLOCKED, "count_blocked")
    asm.emit(ALU64 | OP_MOV | K, R0, imm=0)
    asm.emit(JMP | EXIT)
    asm.label(done)


def _reachable(program: Sequence[BpfInstruction]) -> list[bool]:
    """Which classic instructions some path reaches (the eBPF verifier refuses unreachable ones)."""
    seen = [False] * len(program)
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc >= len(program) or seen[pc]:
            continue
        seen[pc] = True
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        if cls == RET:
            continue
        if cls == JMP:
            todo.extend([pc + 1 + k] if code & 0xF0 == JA else [pc + 1 + jt, pc + 1 + jf])
        else:
            todo.append(pc + 1)
    return seen


def _packet_load(asm: _Asm, size: int, k: int, indexed: bool) -> None:
    nbytes = {W: 4, H: 2, B: 1}[size]
    if k >= MAX_LOAD_OFFSET:
        asm.jump("reject")
        return
    if indexed:
        asm.emit(ALU64 | OP_MOV | X, R1, REG_X)
        asm.emit(ALU64 | OP_ADD | K, R1, imm=k + nbytes)
        asm.emit(JMP | JGT | X, R1, REG_LEN, to="reject")
        asm.load_packet(size, k, index_reg=REG_X)
    else:
        asm.emit(JMP | JLT | K, REG_LEN, imm=k + nbytes, to="reject")
        asm.load_packet(size, k)


def _ancillary(asm: _Asm, code: int, k: int) -> None:
    what = k - (SKF_AD_OFF & 0xFFFFFFFF)
    if code & 0x18 == W and what in _ANCILLARY_FIELDS:
        field, be16 = _ANCILLARY_FIELDS[what]
        asm.emit(LDX | MEM | W, REG_A, REG_CTX, field)
        if be16:
            asm.emit(ALU | OP_END | TO_BE, REG_A, imm=16)
        return
    if code & 0x18 == W and what in _ANCILLARY_CALLS:
        asm.emit(JMP | CALL, imm=_ANCILLARY_CALLS[what])
        asm.emit(ALU | OP_MOV | X, REG_A, REG_A)  # to 32 bits, as classic A is
        return
    raise TranslationError(f"classic BPF ancillary load SKF_AD_OFF+{what} is not supported by the eBPF filter")


def _translate(asm: _Asm, program: Sequence[BpfInstruction]) -> None:
    """Classic BPF (code, jt, jf, k) -> eBPF, each classic pc starting at label ("c", pc)."""
    live = _reachable(program)
    asm.emit(ALU | OP_MOV | K, REG_A, imm=0)  # a mov, not A ^= A: R0 may still hold a map pointer here
    asm.emit(ALU | OP_MOV | K, REG_X, imm=0)
    used = sorted({k for (code, _, _, k), on in zip(program, live, strict=True)
                   if on and code in (LD | MEM, LDX | MEM) and k < 16})
    for k in used:  # classic scratch memory starts zeroed; eBPF's stack does not
        asm.emit(ST | MEM | W, FP, off=_MEM_BASE + 4 * k, imm=0)
    for pc, (code, jt, jf, k) in enumerate(program):
        asm.label(("c", pc))
        if not live[pc]:
            continue
        cls, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if cls == LD and mode in (ABS, IND):
            if mode == ABS and k >= (SKF_AD_OFF & 0xFFFFFFFF):
                _ancillary(asm, code, k)
            else:
                _packet_load(asm, size, k, mode == IND)
        elif cls in (LD, LDX) and mode == IMM:
            asm.emit(ALU | OP_MOV | K, REG_A if cls == LD else REG_X, imm=k)
        elif cls in (LD, LDX) and mode == LEN:
            asm.emit(ALU | OP_MOV | X, REG_A if cls == LD else REG_X, REG_LEN)
        elif cls in (LD, LDX) and mode == MEM and k < 16:
            asm.emit(LDX | MEM | W, REG_A if cls == LD else REG_X, FP, _MEM_BASE + 4 * k)
        elif code == LDX | B | MSH:  # X = 4 * (P[k] & 0xf); A survives in R9
            asm.emit(ALU64 | OP_MOV | X, REG_RET, REG_A)
            _packet_load(asm, B, k, False)
            asm.emit(ALU | OP_AND | K, REG_A, imm=0xF)
            asm.emit(ALU | OP_LSH | K, REG_A, imm=2)
            asm.emit(ALU | OP_MOV | X, REG_X, REG_A)
            asm.emit(ALU64 | OP_MOV | X, REG_A, REG_RET)
        elif cls in (ST, STX) and k < 16:
            asm.emit(STX | MEM | W, FP, REG_A if cls == ST else REG_X, _MEM_BASE + 4 * k)
        elif cls == ALU:
            op, src = code & 0xF0, code & X
            if op in (OP_DIV, OP_MOD) and src == X:  # classic returns 0 on division by a zero X
                asm.emit(JMP32 | JEQ | K, REG_X, imm=0, to="reject")
            if op == OP_NEG:
                asm.emit(ALU | OP_NEG, REG_A)
            elif op in (OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_OR, OP_AND, OP_LSH, OP_RSH, OP_MOD, OP_XOR):
                if src == K and op in (OP_DIV, OP_MOD) and k == 0:
                    raise TranslationError("classic BPF divides by the constant 0")
                asm.emit(ALU | op | src, REG_A, REG_X if src == X else 0, imm=k if src == K else 0)
            else:
                raise TranslationError(f"unknown classic BPF ALU instruction {code:#x}")
        elif cls == JMP:
            op, src = code & 0xF0, code & X
            if op == JA:
                asm.jump(("c", pc + 1 + k))
                continue
            if op not in (JEQ, JGT, JGE, JSET):
                raise TranslationError(f"unknown classic BPF jump {code:#x}")
            if jt == jf:
                asm.jump(("c", pc + 1 + jt))
                continue
            asm.emit(JMP32 | op | src, REG_A, REG_X if src == X else 0, imm=k if src == K else 0,
                     to=("c", pc + 1 + jt))
            asm.jump(("c", pc + 1 + jf))
        elif cls == RET:
            rval = code & 0x18
            if rval == K:
                asm.emit(ALU | OP_MOV | K, REG_RET, imm=k)
            elif rval == RVAL_A:
                asm.emit(ALU | OP_MOV | X, REG_RET, REG_A)
            else:
                raise TranslationError(f"unknown classic BPF return {code:#x}")
            asm.jump("exit")
        elif cls == MISC:
            if code & 0xF8 == TAX:
                asm.emit(ALU | OP_MOV | X, REG_X, REG_A)
            elif code & 0xF8 == TXA:
                asm.emit(ALU | OP_MOV | X, REG_A, REG_X)
            else:
                raise TranslationError(f"unknown classic BPF instruction {code:#x}")
        else:
            raise TranslationError(f"unknown classic BPF instruction {code:#x}")
    asm.label(("c", len(program)))
    asm.jump("reject")  # classic programs end in a return; this only ends the code if one does not


def build_program(program: Sequence[BpfInstruction], snaplen: int, maps: FilterMaps,
                  len_adjust: int = 0) -> bytes:
    """The socket filter as struct bpf_insn bytes: blocklist, then `program` (classic BPF), counters.

    `snaplen` caps the return value; `len_adjust` is added to skb->len to get the frame's length
    (0 on a packet socket, ETH_HLEN under BPF_PROG_TEST_RUN; see the module docstring).
    """
    if not program:
        raise TranslationError("empty classic BPF program")
    asm = _Asm()
    asm.emit(ALU64 | OP_MOV | X, REG_CTX, R1)
    asm.emit(LDX | MEM | W, REG_LEN, REG_CTX, SKB_LEN)
    if len_adjust:
        asm.emit(ALU64 | OP_ADD | K, REG_LEN, imm=len_adjust)
    _count(asm, maps, SEEN, "count_seen")
    _blocklist(asm, maps)
    _translate(asm, program)
    asm.label("reject")
    asm.emit(ALU64 | OP_MOV | K, REG_RET, imm=0)
    asm.label("exit")
    if snaplen < 1 << 31:
        asm.emit(JMP | JLE | K, REG_RET, imm=snaplen, to="exit_capped")
        asm.emit(ALU64 | OP_MOV | K, REG_RET, imm=snaplen)
    asm.label("exit_capped")
    asm.emit(JMP | JEQ | K, REG_RET, imm=0, to="exit_rejected")
    _count(asm, maps, PASSED, "count_passed")
    asm.jump("exit_return")
    asm.label("exit_rejected")
    _count(asm, maps, REJECTED, "count_rejected")
    asm.label("exit_return")
    asm.emit(ALU64 | OP_MOV | X, R0, REG_RET)
    asm.emit(JMP | EXIT)
    return asm.assemble()
