"""A Columns batch's fields as contiguous arrays, read out of the rows together, and its rows grouped
by flow tuple.

A Columns row is 78 bytes: reading one field of every row streams the whole batch through the cache,
whatever the field's width, so reading fields one at a time costs a pass each. Here the rows are read a
block at a time (a block stays in the cache) as a few 8-byte words, each written to its own contiguous
array; fields are then cut out of the words with shifts and masks, contiguous passes that cost a
fraction of a strided one.
"""

from __future__ import annotations

import numpy as np

from pktscope.decoders.columns import COLUMNS_DTYPE

_ITEM = COLUMNS_DTYPE.itemsize


def _at(name: str) -> int:
    return COLUMNS_DTYPE.fields[name][1]


# the words read from every row (little-endian, as the Columns fields are):
#   head: ts_ns | wire_len, cap_len | linktype, ethertype, vlan, encap, ip_version
#   addr: src (2 words) | dst (2 words) | sport, dport, frag, more_frags, 2 bytes of frag_offset
#   and two 2-byte words: proto, tcp_flags | depth, status
_HEAD, _ADDR, _PROTO, _DEPTH = _at("ts_ns"), _at("src"), _at("proto"), _at("depth")
_LAYOUT = {
    "ts_ns": _HEAD, "wire_len": _HEAD + 8, "cap_len": _HEAD + 12, "linktype": _HEAD + 16, "ethertype": _HEAD + 18,
    "vlan": _HEAD + 20, "encap": _HEAD + 22, "ip_version": _HEAD + 23, "proto": _PROTO, "tcp_flags": _PROTO + 1,
    "src": _ADDR, "dst": _ADDR + 16, "sport": _ADDR + 32, "dport": _ADDR + 34, "frag": _ADDR + 36,
    "depth": _DEPTH, "status": _DEPTH + 1,
}
if any(_at(name) != offset for name, offset in _LAYOUT.items()) or _ADDR + 40 > _ITEM or _DEPTH + 2 > _ITEM:
    raise ImportError("analyzers/fields.py: the Columns layout changed; update the words read from a row")

_BLOCK = 4096  # rows read at a time: 320 KB of rows, in the cache while their words are copied out
_M8 = np.uint64(0xFF)
_M16 = np.uint64(0xFFFF)
_M32 = np.uint64(0xFFFFFFFF)


def _u64(v: int) -> np.uint64:
    return np.uint64(v)


class Fields:
    """The fields of a batch's rows that the analyzers read, as contiguous arrays (one pass over the rows).

    `cols` must be C-contiguous. Words: `ts` (int64), `lens` (wire_len | cap_len << 32), `link` (linktype |
    ethertype << 16 | vlan << 32 | encap << 48 | ip_version << 56), `s0, s1, d0, d1` (the addresses'
    bytes as little-endian words), `ports` (sport | dport << 16 | frag << 32 | ...), `pf` (proto |
    tcp_flags << 8), `ds` (depth | status << 8).
    """

    __slots__ = ("d0", "d1", "ds", "lens", "link", "pf", "ports", "s0", "s1", "ts")

    def __init__(self, cols: np.ndarray) -> None:
        n = len(cols)
        words = np.empty((8, n), dtype=np.uint64)
        halves = np.empty((2, n), dtype=np.uint16)
        if n:
            head = np.ndarray((n, 3), dtype="<u8", buffer=cols, offset=_HEAD, strides=(_ITEM, 8))
            addr = np.ndarray((n, 5), dtype="<u8", buffer=cols, offset=_ADDR, strides=(_ITEM, 8))
            proto = np.ndarray((n,), dtype="<u2", buffer=cols, offset=_PROTO, strides=(_ITEM,))
            depth = np.ndarray((n,), dtype="<u2", buffer=cols, offset=_DEPTH, strides=(_ITEM,))
            for i in range(0, n, _BLOCK):
                j = min(n, i + _BLOCK)
                words[:3, i:j] = head[i:j].T
                words[3:, i:j] = addr[i:j].T
                halves[0, i:j] = proto[i:j]
                halves[1, i:j] = depth[i:j]
        self.ts = words[0].view(np.int64)
        self.lens, self.link, self.s0, self.s1, self.d0, self.d1, self.ports = words[1:]
        self.pf, self.ds = halves

    def reread_ports(self, cols: np.ndarray, rows: np.ndarray) -> None:
        """Read the ports word of some rows again (the fragment tracker filled their ports)."""
        word = np.ndarray((len(cols),), dtype="<u8", buffer=cols, offset=_ADDR + 32, strides=(_ITEM,))
        self.ports[rows] = word[rows]

    def take(self, rows: np.ndarray) -> Fields:
        """The fields of some rows (indices)."""
        out = Fields.__new__(Fields)
        for name in Fields.__slots__:
            setattr(out, name, getattr(self, name)[rows])
        return out

    # fields cut out of the words
    def wire(self) -> np.ndarray:
        return (self.lens & _M32).view(np.int64)

    def cap_sum(self) -> int:
        return int((self.lens >> _u64(32)).sum())

    def depth(self) -> np.ndarray:
        return self.ds & np.uint16(0xFF)

    def status(self) -> np.ndarray:
        return self.ds >> np.uint16(8)

    def ip_version(self) -> np.ndarray:
        return self.link >> _u64(56)

    def frag(self) -> np.ndarray:
        return (self.ports >> _u64(32)) & _M8

    def flags(self) -> np.ndarray:
        return (self.pf >> np.uint16(8)).astype(np.uint8)

    def ethertype(self) -> np.ndarray:
        return (self.link >> _u64(16)) & _M16


# odd 64-bit constants (from xxhash and murmur3)
_H = [np.uint64(c) for c in (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                             0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)]


def tuple_words(f: Fields) -> list[np.ndarray]:
    """A directed flow tuple per row, with the row's link type, EtherType and encapsulation bits, as six
    words, the bits moved in one to one.

    The address words' second halves are regrouped so that an IPv4 pair (the last four bytes of each
    IPv4-mapped address) fills one word: a product spreads a word's bits upwards only, so two 32-bit
    halves multiplied apart and xored would meet in 32 bits and collide at some 10^4 pairs. The other
    words: the ports and protocol, the link word (link type, EtherType, VLAN, encap, IP version), the
    first halves (zero for IPv4) and the rest of the second halves (constant for IPv4).
    """
    hi = f.s1 >> _u64(32)
    hi |= f.d1 & ~_M32
    lo = f.s1 & _M32
    lo |= f.d1 << _u64(32)
    pp = f.ports & _M32
    pp |= (f.pf & np.uint16(0xFF)).astype(np.uint64) << _u64(32)
    return [hi, pp, f.link, f.s0, f.d0, lo]


def tuple_hash(words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row's words, for grouping only: the groups are checked word by word after
    (`group_rows`), so a collision costs time, never a wrong group."""
    with np.errstate(over="ignore"):
        h = words[0] * _H[0]
        for word, mult in zip(words[1:], _H[1:]):
            h ^= word * mult
        h ^= h >> _u64(32)
        h *= _H[6]
        h ^= h >> _u64(29)
    return h


def group_rows(words: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal words together: (order, starts), `order` listing the rows group by group and each
    group's rows in row order, `starts` where each group begins in it. Groups are exact: rows of a group
    have every word equal, rows of different groups differ in some word.

    The row index replaces the hash's low bits and the values are sorted once: a group is a run of equal
    high bits, its rows in row order, found without gathering the hashes again. The words are checked
    after, and should two tuples share the high bits the rows are grouped as `_group_rows_sorted` does.
    """
    n = len(words[0])
    words = [w for w in words if n and not _constant(w)] or words[:1]  # constant words tell nothing
    h = tuple_hash(words)
    bits = max(int(n - 1).bit_length(), 1)
    if bits > 32:
        return _group_rows_sorted(words, h)
    low = _u64((1 << bits) - 1)
    packed = h & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).view(np.intp)  # (below 2^32: the same values, no copy)
    packed >>= _u64(bits)
    change = np.empty(n, dtype=bool)
    change[:1] = True
    np.not_equal(packed[1:], packed[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    if _split(words, order, starts):
        return _group_rows_sorted(words, h)
    return order, starts


def _constant(word: np.ndarray) -> bool:
    """Whether every value of `word` is its first: the first few rows are looked at alone before the
    whole (a word that varies does so in them as a rule, and a whole pass costs ~100 times more)."""
    return bool((word[:64] == word[0]).all()) and bool((word == word[0]).all())


def _split(words: list[np.ndarray], order: np.ndarray, starts: np.ndarray) -> bool:
    """Whether rows listed by `order` in groups beginning at `starts` differ in some word within a group."""
    n = len(order)
    # bools, not the words' xors: an eighth of the bytes written and read again
    diff = np.zeros(max(n - 1, 0), dtype=bool)
    step = np.empty_like(diff)
    ws = np.empty(n, dtype=np.uint64)
    for word in words:
        # mode "clip": with `out` and the default mode "raise", numpy gathers into a buffer first and
        # copies it over (twice the time); the indices are valid, so clipping changes nothing
        np.take(word, order, out=ws, mode="clip")
        np.not_equal(ws[1:], ws[:-1], out=step)
        diff |= step
    diff[starts[1:] - 1] = False  # a row and the one before it in another group may differ
    return bool(diff.any())


def _group_rows_sorted(words: list[np.ndarray], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`group_rows` through a stable order of the whole hashes, then of the words themselves on a collision."""
    from pktscope.analyzers.keys import grouping_order

    n = len(words[0])
    order = grouping_order(h)
    if order is None:
        order = np.argsort(h, kind="stable")
    hs = h[order]
    change = np.empty(n, dtype=bool)
    change[:1] = True
    np.not_equal(hs[1:], hs[:-1], out=change[1:])
    if _split(words, order, np.flatnonzero(change)):  # a hash collision: group by the words themselves
        order = np.lexsort(words[::-1])
        change[1:] = False
        for word in words:
            ws = word[order]
            change[1:] |= ws[1:] != ws[:-1]
    return order, np.flatnonzero(change)
