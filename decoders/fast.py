"""The fast decoder: the common frames of a Batch decoded a column at a time with numpy.

Two vectorized paths, then dpkt. The plain path (`_decode_plain`) takes the frames nearly every capture
is made of: Ethernet with at most one 802.1Q tag, SLL, SLL2, BSD loopback or raw IP; IPv4 without options or
fragmentation or IPv6 without extension headers; TCP, UDP, SCTP, ICMP or a protocol pktscope does not
open. It gathers one window of header bytes per frame, reads fields from fixed columns of it and writes
each Columns row as a few wide words, a slice of the batch at a time so the slice stays in cache.
Every other frame goes to the general path (`_decode_general`): header bytes gathered in three windows
(link, network, transport) at per-frame offsets, any supported link type, two VLAN tags, ARP, IPv4
options and fragments. What that path is not sure about (cut or bogus header, LLC, MPLS, PPPoE, three
VLAN tags, IPv6 extension headers, AH, IPv4 header errors) goes through `reference.decode_batch`.
Each path's rows are merged back in place, so the result is the reference decoder's Columns row for
row (tests/test_fast_decoder.py proves it on the corpus, the samples, every snaplen cut and the plain
path's edges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pktscope.capture import linktypes as lt
from pktscope.capture.batch import Batch
from pktscope.decoders import protocols as p
from pktscope.decoders import reference
from pktscope.decoders.columns import (
    COLUMNS_DTYPE,
    DEPTH_LINK,
    DEPTH_NETWORK,
    DEPTH_TRANSPORT,
    ENCAP_QINQ,
    ENCAP_VLAN,
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    STATUS_UNSUPPORTED,
    batch_columns,
    fill_batch_fields,
)

LINK_WINDOW = 24  # Ethernet with two VLAN tags (22 bytes), SLL2 (20), SLL (16), NULL/LOOP (4)
NETWORK_WINDOW = 40  # the IPv6 header; IPv4's fixed 20 bytes and ARP's 28 fit too
TRANSPORT_WINDOW = 14  # TCP up to its flags byte; UDP (8), SCTP common header (12), ICMP (4)

# header lengths read by the reference decoder's dpkt classes (dpkt 1.9: __hdr__ sizes)
_ETH_LEN = 14
_VLAN_LEN = 4
_SLL_LEN = 16
_SLL2_LEN = 20
_AF_LEN = 4
_ARP_LEN = 28
_IPV4_MIN = 20
_IPV6_LEN = 40
_TCP_MIN = 20
_UDP_LEN = 8
_SCTP_LEN = 12
_ICMP_LEN = 4

_RAW_LINKS = (lt.LINKTYPE_RAW, *lt.LINKTYPE_RAW_ALIASES)


def _table(values: object, size: int = 1 << 16) -> np.ndarray:
    """A lookup table: `table[v]` is whether v is one of `values` (cheaper than np.isin per batch)."""
    table = np.zeros(size, dtype=bool)
    table[list(values)] = True  # type: ignore[call-overload]
    return table


_KNOWN_LINKS = _table(reference.LINK_DECODERS)
_VLAN_TYPES = _table(p.VLAN_ETHERTYPES)
# EtherTypes whose frames always take the reference path (a label stack or PPP header to walk)
_SLOW_ETHERTYPES = _table([*p.VLAN_ETHERTYPES, p.ETH_P_MPLS_UC, p.ETH_P_MPLS_MC, p.ETH_P_PPPOE_SESS])
_IPV6_EXT = _table(reference._IPV6_EXT, 256)
# ::ffff:0:0/96 (IPv4-mapped) as the third 32-bit word of an address, in memory order
_V4_MAPPED_WORD = np.frombuffer(b"\x00\x00\xff\xff", dtype=np.uint32)[0]


@dataclass
class DecodeStats:
    """Frames decoded so far, and how many of them went through the reference decoder."""

    frames: int = 0
    reference: int = 0


stats = DecodeStats()


def _windows(raw: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """`width` bytes of raw from each start, one row per start (past the end of raw: zeros).

    Bytes past a frame's captured length belong to the next record: callers check lengths.
    """
    n = raw.shape[0]
    if n >= width and (not starts.shape[0] or int(starts.max()) <= n - width):  # no window past the end
        return _spans(raw, width)[starts].view(np.uint8).reshape(-1, width)
    if n >= width:
        out = _spans(raw, width)[np.minimum(starts, n - width)].view(np.uint8).reshape(-1, width)
    else:
        out = np.zeros((starts.shape[0], width), dtype=np.uint8)
    tail = np.flatnonzero(starts > n - width)  # windows running past the buffer (its last frames)
    if tail.shape[0]:
        lo = int(min(starts[tail].min(), n))
        padded = np.concatenate([raw[lo:], np.zeros(width, dtype=np.uint8)])
        out[tail] = _spans(padded, width)[np.minimum(starts[tail], n) - lo].view(np.uint8).reshape(-1, width)
    return out


def _spans(raw: np.ndarray, width: int) -> np.ndarray:
    """Every `width`-byte span of raw as one void item (spans overlap: stride 1).

    Gathering whole items copies a span at a time, where a (n, width) byte view copies byte by byte.
    """
    return np.ndarray(buffer=raw, dtype=np.dtype((np.void, width)), shape=(raw.shape[0] - width + 1,),
                      strides=(1,))


def _u16(rows: np.ndarray, col: int) -> np.ndarray:
    """The big-endian 16-bit field at byte `col` of each row (windows are contiguous, fields even)."""
    if col & 1 or rows.shape[1] & 1 or not rows.flags.c_contiguous:
        return (rows[:, col].astype(np.int32) << 8) | rows[:, col + 1]
    return rows.view(">u2")[:, col >> 1].astype(np.int32)


def _u32le(rows: np.ndarray, col: int) -> np.ndarray:
    return rows[:, col : col + 4].copy().view("<u4")[:, 0].astype(np.int64)


def _u32be(rows: np.ndarray, col: int) -> np.ndarray:
    return rows[:, col : col + 4].copy().view(">u4")[:, 0].astype(np.int64)


def _family_ethertype(family: np.ndarray) -> np.ndarray:
    """BSD address family -> EtherType (reference._AF_TO_ETHERTYPE), 0 when unknown."""
    et = np.zeros(family.shape, dtype=np.int32)
    for af, etype in reference._AF_TO_ETHERTYPE.items():
        et[family == af] = etype
    return et


# --- the plain path -----------------------------------------------------------------------------
# Most frames are a link header (Ethernet with one 802.1Q tag at most, SLL, SLL2, NULL/LOOP or none), an IPv4
# header without options or fragmentation or an IPv6 header without extension headers, then a TCP,
# UDP, SCTP or ICMP header (or an IP protocol pktscope does not open), all whole inside the captured
# bytes. Those rows are decoded here from one window per frame and written into Columns a few wide
# words at a time; every other frame goes through `_decode_general` below.

PLAIN_CHUNK = 16384  # rows decoded at a time

# row words written by the plain path (offsets in COLUMNS_DTYPE; see _check_layout)
_W18 = np.dtype({"names": ["w"], "formats": ["<u8"], "offsets": [18], "itemsize": COLUMNS_DTYPE.itemsize})
_A34 = np.dtype({"names": ["w"], "formats": ["<u8"], "offsets": [34], "itemsize": COLUMNS_DTYPE.itemsize})
_A50 = np.dtype({"names": ["w"], "formats": ["<u8"], "offsets": [50], "itemsize": COLUMNS_DTYPE.itemsize})
_ADDR = np.dtype({"names": ["w"], "formats": ["V32"], "offsets": [26], "itemsize": COLUMNS_DTYPE.itemsize})
_PORTS = np.dtype({"names": ["w"], "formats": ["<u4"], "offsets": [58], "itemsize": COLUMNS_DTYPE.itemsize})
_DEPTH = np.dtype({"names": ["w"], "formats": ["<u2"], "offsets": [76], "itemsize": COLUMNS_DTYPE.itemsize})


def _check_layout() -> None:
    """The words above cover these fields, in this order, at these offsets (COLUMNS_DTYPE must not move)."""
    want = {"ethertype": (18, "<u2"), "vlan": (20, "<u2"), "encap": (22, "u1"), "ip_version": (23, "u1"),
            "proto": (24, "u1"), "tcp_flags": (25, "u1"), "src": (26, ("u1", (16,))), "dst": (42, ("u1", (16,))),
            "sport": (58, "<u2"), "dport": (60, "<u2"), "depth": (76, "u1"), "status": (77, "u1")}
    fields = COLUMNS_DTYPE.fields
    if any(fields[k][1] != at or fields[k][0] != np.dtype(dt) for k, (at, dt) in want.items()) or not np.little_endian:
        raise RuntimeError("the plain path writes little-endian words at fixed offsets of COLUMNS_DTYPE")


_check_layout()

# per IP protocol: the transport bytes a plain frame must have captured (AH: never plain); the ones
# that need 8 or more have ports (TCP, UDP, SCTP) and any that needs some is decoded to DEPTH_TRANSPORT
_NEED = np.zeros(256, dtype=np.int32)
_NEED[[p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP, p.IPPROTO_ICMP, p.IPPROTO_ICMPV6, p.IPPROTO_AH]] = (
    _TCP_MIN, _UDP_LEN, _SCTP_LEN, _ICMP_LEN, _ICMP_LEN, 1 << 20)
assert (_NEED[[p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP]] >= _UDP_LEN).all()
assert (_NEED[[p.IPPROTO_ICMP, p.IPPROTO_ICMPV6]] < _UDP_LEN).all()
# the first 8 bytes of an IPv4 header as a little-endian word: version/IHL, and flags + fragment
# offset but DF; plain when they read 0x45 and 0
_V4_PLAIN_MASK = np.uint64(0xFF3F_0000_0000_00FF)
_V4_MAPPED_HI = np.uint64(0xFFFF0000)  # bytes 8-11 of ::ffff:a.b.c.d as the low half of a word (memory order)
_HIGH_HALF = np.uint64(0xFFFF_FFFF_0000_0000)


def _col(g: np.ndarray, col: int, dtype: str = "u1") -> np.ndarray:
    """The `dtype` field at byte `col` of each row of the C-contiguous window matrix g (a view, unaligned)."""
    return np.ndarray((g.shape[0],), np.dtype(dtype), buffer=g, offset=col, strides=(g.strides[0],))


def _transport(g: np.ndarray, at: int, proto: np.ndarray, payload: np.ndarray) -> tuple:
    """The transport header at byte `at` of each row: whether the plain path decodes it whole, and the
    row's ports word (sport, dport), TCP flags and depth.

    payload: transport bytes captured up to the IP length; negative when the IP header itself was cut
    or its length field is shorter than the header, which no protocol passes (_NEED is never negative).
    """
    need = _NEED.take(proto)  # take: a fraction of the time of fancy indexing by a uint8 array
    ok = payload >= need
    tcp = proto == p.IPPROTO_TCP
    flags = _col(g, at + 13) * tcp.view(np.uint8)
    if tcp.any():
        data_off = _col(g, at + 12) >> 2 & 0x3C  # the high nibble counts 32-bit words
        ok &= ~tcp | ((data_off >= _TCP_MIN) & (payload >= data_off))
    udp = proto == p.IPPROTO_UDP
    if udp.any():
        ok &= ~udp | (_col(g, at + 4, ">u2") >= _UDP_LEN)
    word = _col(g, at, ">u4").astype(np.uint32)  # sport << 16 | dport: the row wants them swapped
    ports = word >> np.uint32(16)  # in place from here: fewer temporaries
    word <<= np.uint32(16)
    ports |= word
    ports *= need >= _UDP_LEN
    depth = (need != 0).view(np.uint8) + np.uint16(DEPTH_NETWORK)
    return ok, ports, flags, depth


def _ip_rows(g: np.ndarray, link: int, etype: np.ndarray, avail: np.ndarray) -> tuple:
    """The plain rows among those of window matrix g whose network header starts at byte `link`.

    etype: the EtherType each row's link header names; avail: bytes captured from the network header
    on. Returns the mask of plain rows and their row words (word 18: ethertype .. tcp_flags; the
    IPv4-mapped address halves; ports; depth), and the IPv6 rows with their 32 address bytes.
    """
    # IPv4: version 4, IHL 5, neither more-fragments nor an offset; the transport check also proves
    # the 20 bytes captured and a total length of 0 (segmentation offload) or at least 20
    plain = (_col(g, link, "<u8") & _V4_PLAIN_MASK) == 0x45
    plain &= etype == p.ETH_P_IPV4
    total = _col(g, link + 2, ">u2").astype(np.int32)
    payload = np.where(total != 0, total, avail)
    np.minimum(payload, avail, out=payload)
    payload -= _IPV4_MIN
    proto = _col(g, link + 9).copy()
    ok, ports, flags, depth = _transport(g, link + _IPV4_MIN, proto, payload)
    plain &= ok
    w18 = etype.astype(np.uint64) | np.uint64(4 << 40)
    w18 |= proto.astype(np.uint64) << np.uint64(48)
    w18 |= flags.astype(np.uint64) << np.uint64(56)
    addrs = _col(g, link + 12, "<u8").copy()  # source and destination (read from g once, for both words)
    a34 = addrs << np.uint64(32)
    a34 |= _V4_MAPPED_HI
    a50 = addrs & _HIGH_HALF
    a50 |= _V4_MAPPED_HI

    # IPv6 without extension headers: the few rows that have it, apart
    i6 = np.flatnonzero(etype == p.ETH_P_IPV6)
    addr6 = None
    if i6.shape[0]:
        h = g[i6]
        av6 = avail[i6]
        nxt = _col(h, link + 6).copy()
        plen = _col(h, link + 4, ">u2").astype(np.int32)
        ok6 = (_col(h, link) >> 4 == 6) & ~_IPV6_EXT.take(nxt)  # 40 bytes captured: see _transport
        payload6 = np.minimum(av6, np.where(plen != 0, plen + _IPV6_LEN, av6)) - _IPV6_LEN
        ok, ports[i6], fl6, depth[i6] = _transport(h, link + _IPV6_LEN, nxt, payload6)
        plain[i6] = ok6 & ok
        w6 = etype[i6].astype(np.uint64) | np.uint64(6 << 40)
        w6 |= nxt.astype(np.uint64) << np.uint64(48)
        w6 |= fl6.astype(np.uint64) << np.uint64(56)
        w18[i6] = w6
        addr6 = np.ascontiguousarray(h[:, link + 8 : link + 40]).view("V32")[:, 0]
    return plain, w18, a34, a50, ports, depth, i6, addr6


# link type -> (first frame byte gathered, window width, EtherType offset or None, network header offset)
_PLAIN_LINKS = {
    lt.LINKTYPE_ETHERNET: (8, 64, 12, _ETH_LEN),  # 8 + 64 bytes: a tag, IPv6 and 14 transport bytes
    lt.LINKTYPE_LINUX_SLL: (8, 64, 14, _SLL_LEN),
    lt.LINKTYPE_LINUX_SLL2: (0, 80, 0, _SLL2_LEN),
    lt.LINKTYPE_IPV4: (0, 64, None, 0),
    lt.LINKTYPE_IPV6: (0, 64, None, 0),
    **{code: (0, 64, None, 0) for code in _RAW_LINKS},
    lt.LINKTYPE_NULL: (0, 64, None, _AF_LEN),
    lt.LINKTYPE_LOOP: (0, 64, None, _AF_LEN),
}
# BSD address family (below 256; any other: 255) -> EtherType, 0 when unknown
_AF_ETHERTYPES = np.zeros(256, dtype=np.uint16)
_AF_ETHERTYPES[list(reference._AF_TO_ETHERTYPE)] = list(reference._AF_TO_ETHERTYPE.values())


def _decode_plain(batch: Batch, linktype: int, raw: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """Decode the plain frames of a Batch of one link type into cols; which rows it did (None: all)."""
    n = len(batch)
    skip, width, et_at, l3 = _PLAIN_LINKS[linktype]
    starts = batch.offsets.astype(np.int64, copy=False)
    g = _windows(raw[skip:], starts, width)  # from byte `skip` of each frame, with no shifted copy of starts
    link = l3 - skip  # where the network header starts in g
    avail = batch.caplens.astype(np.int32) - l3  # caplens fit in 31 bits (the largest snaplen is 2**18)
    if et_at is not None:
        etype = _col(g, et_at - skip, ">u2").astype(np.uint16)
    elif linktype in (lt.LINKTYPE_NULL, lt.LINKTYPE_LOOP):  # BSD loopback: a 4-byte address family
        family = _col(g, 0, ">u4").astype(np.uint32)
        if linktype == lt.LINKTYPE_NULL:  # in the capturing machine's byte order: little-endian unless
            little = _col(g, 0, "<u4").astype(np.uint32)  # that has bits in the high half
            family = np.where(little & np.uint32(0xFFFF0000), family, little)
        etype = _AF_ETHERTYPES.take(np.minimum(family, np.uint32(255)))
    elif linktype in _RAW_LINKS:  # raw IP, the version from the first nibble
        etype = np.where(_col(g, link) >> 4 == 6, np.uint16(p.ETH_P_IPV6), np.uint16(p.ETH_P_IPV4))
    else:  # LINKTYPE_IPV4 / LINKTYPE_IPV6: the link type names the version (the IP checks must agree)
        etype = np.full(n, p.ETH_P_IPV4 if linktype == lt.LINKTYPE_IPV4 else p.ETH_P_IPV6, dtype=np.uint16)
    tagged = None
    if linktype == lt.LINKTYPE_ETHERNET:
        tagged = np.flatnonzero((etype == p.ETH_P_8021Q) | (etype == p.ETH_P_8021AD) | (etype == p.ETH_P_QINQ_OLD))
        if tagged.shape[0]:  # one 802.1Q tag: its EtherType, and the network header moved up to `link`
            h = g[tagged]
            etype[tagged] = _col(h, link + 2, ">u2")
            tci = _col(h, link, ">u2").astype(np.uint64) & np.uint64(0x0FFF)
            g[tagged, link : width - _VLAN_LEN] = h[:, link + _VLAN_LEN :]
            avail[tagged] -= _VLAN_LEN
    plain, w18, a34, a50, ports, depth, i6, addr6 = _ip_rows(g, link, etype, avail)
    if tagged is not None and tagged.shape[0]:
        w18[tagged] |= (tci << np.uint64(16)) | np.uint64(ENCAP_VLAN << 32)
    cols.view(_W18)["w"] = w18
    cols.view(_A34)["w"] = a34
    cols.view(_A50)["w"] = a50
    cols.view(_PORTS)["w"] = ports
    cols.view(_DEPTH)["w"] = depth
    if addr6 is not None:
        cols.view(_ADDR)["w"][i6] = addr6
    return None if plain.all() else plain


def decode_batch_fast(batch: Batch) -> np.ndarray:
    """Decode every frame of a Batch into Columns: numpy for the common frames, dpkt for the rest."""
    n = len(batch)
    stats.frames += n
    if n == 0:
        return batch_columns(batch)
    raw = np.frombuffer(batch.buf, dtype=np.uint8)
    linktypes = batch.linktypes
    linktype = int(linktypes[0])
    if (linktypes == linktype).all():
        return _decode_link(batch, linktype, raw)
    # several link types (pcapng interfaces): each one's frames apart, then back in place
    cols = np.empty(n, dtype=COLUMNS_DTYPE)
    for code in np.unique(linktypes).tolist():
        rows = np.flatnonzero(linktypes == code)
        _rows(cols)[rows] = _rows(_decode_link(batch.select(rows), code, raw))
    return cols


def _decode_link(batch: Batch, linktype: int, raw: np.ndarray) -> np.ndarray:
    """Decode a Batch whose frames all have one link type: the plain path first, then the others."""
    n = len(batch)
    if linktype not in _PLAIN_LINKS:
        return _decode_general(batch, raw, batch_columns(batch))
    cols = np.empty(n, dtype=COLUMNS_DTYPE)
    rest = []
    # a slice at a time (equal ones), so that its window matrix and Columns rows stay in the CPU cache
    # between passes
    size = -(-n // -(-n // PLAIN_CHUNK))
    for start in range(0, n, size):
        part = batch if size == n else batch.select(slice(start, start + size))
        out = cols[start : start + size]
        out.view(np.uint8).fill(0)
        fill_batch_fields(out, part)
        done = _decode_plain(part, linktype, raw, out)
        if done is not None:
            rest.append(np.flatnonzero(~done) + start)
    if not rest:
        return cols
    redo = np.concatenate(rest)
    if redo.shape[0] == n:  # the plain path's words are garbage on these rows: start again from zeros
        return _decode_general(batch, raw, batch_columns(batch))
    part = batch.select(redo)
    _rows(cols)[redo] = _rows(_decode_general(part, raw, batch_columns(part)))
    return cols


def _rows(cols: np.ndarray) -> np.ndarray:
    """Columns rows as opaque void items: gathers and scatters copy whole rows, not field by field."""
    return cols.view(np.dtype((np.void, cols.dtype.itemsize)))


def _decode_general(batch: Batch, raw: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Every frame the plain path left: any link type, tags, IP options, fragments; dpkt for the odd."""
    n = len(batch)
    off = batch.offsets.astype(np.int64)
    cap = batch.caplens.astype(np.int64)
    link = batch.linktypes

    slow = np.zeros(n, dtype=bool)
    unsupported = ~_KNOWN_LINKS[link]
    cols["status"][unsupported] = STATUS_UNSUPPORTED

    # --- link layer: where the network header starts and what it is ---------------------------
    lk = _windows(raw, off, LINK_WINDOW)
    l3 = np.zeros(n, dtype=np.int64)
    etype = np.zeros(n, dtype=np.int32)
    vlan = np.zeros(n, dtype=np.int32)
    encap = np.zeros(n, dtype=np.uint8)

    eth = link == lt.LINKTYPE_ETHERNET
    if eth.any():
        slow |= eth & (cap < _ETH_LEN)
        t0 = _u16(lk, 12)
        tag1 = eth & _VLAN_TYPES[t0]
        t1 = _u16(lk, 16)
        tag2 = tag1 & _VLAN_TYPES[t1]
        t2 = _u16(lk, 20)
        slow |= (tag1 & (cap < _ETH_LEN + _VLAN_LEN)) | (tag2 & (cap < _ETH_LEN + 2 * _VLAN_LEN))
        slow |= eth & ~tag1 & (t0 <= 1500)  # 802.3 length field: LLC/SNAP
        et = np.where(tag2, t2, np.where(tag1, t1, t0))
        etype[eth] = et[eth]
        l3[eth] = _ETH_LEN
        l3[tag1] += _VLAN_LEN
        l3[tag2] += _VLAN_LEN
        vlan[tag1] = _u16(lk, 14)[tag1] & 0x0FFF
        encap[tag1] = ENCAP_VLAN
        encap[tag2] |= ENCAP_QINQ
    for code, hlen, col in ((lt.LINKTYPE_LINUX_SLL, _SLL_LEN, 14), (lt.LINKTYPE_LINUX_SLL2, _SLL2_LEN, 0)):
        sll = link == code
        if sll.any():
            slow |= sll & (cap < hlen)
            et = _u16(lk, col)
            etype[sll] = np.where(et > 1500, et, 0)[sll]
            l3[sll] = hlen
    raw_ip = np.isin(link, _RAW_LINKS)
    if raw_ip.any():
        version = lk[:, 0] >> 4
        slow |= raw_ip & ((cap == 0) | ((version != 4) & (version != 6)))
        etype[raw_ip] = np.where(version == 6, p.ETH_P_IPV6, p.ETH_P_IPV4)[raw_ip]
    etype[link == lt.LINKTYPE_IPV4] = p.ETH_P_IPV4
    etype[link == lt.LINKTYPE_IPV6] = p.ETH_P_IPV6
    for code in (lt.LINKTYPE_NULL, lt.LINKTYPE_LOOP):
        bsd = link == code
        if bsd.any():
            slow |= bsd & (cap < _AF_LEN)
            family = _u32be(lk, 0)
            if code == lt.LINKTYPE_NULL:  # host byte order of the capturing machine
                le = _u32le(lk, 0)
                family = np.where(le & 0xFFFF0000, family, le)
            etype[bsd] = _family_ethertype(family)[bsd]
            l3[bsd] = _AF_LEN
    slow |= _SLOW_ETHERTYPES[etype]
    slow &= ~unsupported
    live = ~slow & ~unsupported
    depth = np.where(live, DEPTH_LINK, 0).astype(np.uint8)
    cols["ethertype"] = etype
    cols["vlan"] = vlan
    cols["encap"] = encap

    # --- network layer ---------------------------------------------------------------------------
    is4 = live & (etype == p.ETH_P_IPV4)
    is6 = live & (etype == p.ETH_P_IPV6)
    isarp = live & (etype == p.ETH_P_ARP)
    net = np.flatnonzero(is4 | is6 | isarp)
    whole = net.shape[0] == n  # every frame has a network header (the common case): no gathers
    l3_at = off + l3 if whole else off[net] + l3[net]
    avail = cap - l3 if whole else cap[net] - l3[net]  # bytes captured from the network header on
    nw = _windows(raw, l3_at, NETWORK_WINDOW)
    v4 = is4 if whole else is4[net]
    v6 = is6 if whole else is6[net]
    arp = isarp if whole else isarp[net]
    bad = np.zeros(net.shape[0], dtype=bool)
    ok_net = np.zeros(net.shape[0], dtype=bool)

    version = nw[:, 0] >> 4
    ihl = (nw[:, 0] & 0x0F).astype(np.int64) * 4
    total = _u16(nw, 2).astype(np.int64)
    bad |= v4 & ((avail < _IPV4_MIN) | (version != 4) | (ihl < _IPV4_MIN) | (avail < ihl))
    bad |= v4 & (total != 0) & (total < ihl)
    plen6 = _u16(nw, 4).astype(np.int64)
    next6 = nw[:, 6].astype(np.int32)
    bad |= v6 & ((avail < _IPV6_LEN) | (version != 6) | _IPV6_EXT[next6])
    bad |= arp & ((avail < _ARP_LEN) | (avail < 8 + 2 * (nw[:, 4].astype(np.int64) + nw[:, 5])))
    ok_net = ~bad
    ok4 = v4 & ok_net
    ok6 = v6 & ok_net

    hdr = np.where(v4, ihl, _IPV6_LEN)
    end = np.where(v4, np.where(total != 0, total, avail), np.where(plen6 != 0, _IPV6_LEN + plen6, avail))
    l4_len = end - hdr
    payload = np.maximum(np.minimum(avail, end) - hdr, 0)  # transport bytes captured, up to the IP length
    proto = np.where(v4, nw[:, 9], next6).astype(np.uint8)
    proto[arp] = 0

    ff = _u16(nw, 6)
    mf = np.where(v4, (ff >> 13) & 1, 0)
    fo = np.where(v4, ff & 0x1FFF, 0).astype(np.int64) * 8
    fragmented = ok4 & ((mf != 0) | (fo != 0))
    later = fragmented & (fo != 0)
    first = fragmented & ~later & (payload >= l4_len)

    # addresses as four 32-bit words in memory order: IPv6 words 2-5 / 6-9 of the header, IPv4
    # words 3 / 4 behind the mapped prefix
    words = nw.view(np.uint32)
    addr = np.zeros((net.shape[0], 2, 4), dtype=np.uint32)
    addr[:, :, 2] = np.where(ok4, _V4_MAPPED_WORD, np.uint32(0))[:, None]
    addr[:, :, 3] = np.where(ok4[:, None], words[:, 3:5], np.uint32(0))
    i6 = np.flatnonzero(ok6)
    if i6.shape[0]:
        addr[i6] = words[i6, 2:10].reshape(-1, 2, 4)
    addr = addr.view(np.uint8)

    # --- transport layer -------------------------------------------------------------------------
    ip_ok = ok4 | ok6
    tr = ip_ok & ~later
    tw = _windows(raw, l3_at + hdr, TRANSPORT_WINDOW)
    is_tcp = tr & (proto == p.IPPROTO_TCP)
    is_udp = tr & (proto == p.IPPROTO_UDP)
    is_sctp = tr & (proto == p.IPPROTO_SCTP)
    is_icmp = tr & ((proto == p.IPPROTO_ICMP) | (proto == p.IPPROTO_ICMPV6))
    data_off = (tw[:, 12] >> 4).astype(np.int64) * 4
    bad |= is_tcp & ((payload < _TCP_MIN) | (data_off < _TCP_MIN) | (payload < data_off))
    bad |= is_udp & ((payload < _UDP_LEN) | (_u16(tw, 4) < _UDP_LEN))
    bad |= is_sctp & (payload < _SCTP_LEN)
    bad |= is_icmp & (payload < _ICMP_LEN)
    bad |= tr & (proto == p.IPPROTO_AH)
    ported = (is_tcp | is_udp | is_sctp) & ~bad
    transport = (ported | is_icmp) & ~bad

    net_depth = np.where(transport, DEPTH_TRANSPORT, np.where(ip_ok | arp, DEPTH_NETWORK, DEPTH_LINK))
    depth[net] = net_depth
    slow[net] = bad

    fields = [
        ("ip_version", np.where(ok4, 4, np.where(ok6, 6, 0))),
        ("proto", np.where(ip_ok, proto, 0)),
        ("tcp_flags", np.where(is_tcp & ~bad, tw[:, 13], 0)),
        ("sport", np.where(ported, _u16(tw, 0), 0)),
        ("dport", np.where(ported, _u16(tw, 2), 0)),
    ]
    if fragmented.any():  # the columns start zeroed: without fragments these stay so
        fields += [
            ("frag", np.where(later, FRAG_LATER, np.where(first, FRAG_FIRST, FRAG_NONE))),
            ("more_frags", np.where(fragmented, mf, 0)),
            ("frag_offset", np.where(fragmented, fo, 0)),
            ("frag_len", np.where(fragmented, l4_len, 0)),
            ("ip_id", np.where(fragmented, _u16(nw, 4), 0)),
        ]
    for name, values in fields:
        if whole:
            cols[name] = values
        else:
            cols[name][net] = values
    if whole:
        cols["src"] = addr[:, 0]
        cols["dst"] = addr[:, 1]
    else:
        cols["src"][net] = addr[:, 0]
        cols["dst"][net] = addr[:, 1]
    cols["depth"] = depth

    # --- everything else: the reference decoder, merged back in place ----------------------------
    redo = np.flatnonzero(slow)
    if redo.shape[0]:
        stats.reference += redo.shape[0]
        cols[redo] = reference.decode_batch(batch.select(redo))
    return cols
