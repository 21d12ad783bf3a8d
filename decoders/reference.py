"""The reference decoder: every frame of a Batch through dpkt, one at a time, into Columns.

This is the slow path that takes any frame, however odd: dispatch is by data tables (link type ->
decoder, EtherType -> decoder, IP protocol -> decoder, as gopacket does), and each layer's header is
read by dpkt where dpkt reads it without guessing (IPv4, TCP, UDP, ICMP, ICMPv6, ARP, SLL, SLL2, VLAN
tags). Where dpkt would decode too eagerly or raise on the whole packet for one bad byte deep inside
(IPv6 extension chains, SCTP chunks), the fixed header is read with struct. A frame never raises:
decoding stops at the first header that does not fit or does not make sense, and the row says how far
it got (`depth`) and why it stopped (`status`).
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from collections.abc import Callable
from types import ModuleType

import numpy as np

from pktscope.capture import linktypes as lt
from pktscope.capture.batch import Batch
from pktscope.decoders import protocols as p
from pktscope.decoders.columns import (
    COLUMNS_DTYPE,
    DEPTH_LINK,
    DEPTH_NETWORK,
    DEPTH_NONE,
    DEPTH_TRANSPORT,
    ENCAP_LLC,
    ENCAP_MPLS,
    ENCAP_PPPOE,
    ENCAP_QINQ,
    ENCAP_VLAN,
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    STATUS_MALFORMED,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNSUPPORTED,
    V4_MAPPED_PREFIX,
    batch_columns,
)


def _lazy_module(name: str) -> ModuleType:
    """`name`, loaded on first attribute access (importlib's LazyLoader).

    dpkt costs ~35 ms of start-up and only frames the vectorized decoder is unsure about, and the
    tunnels it opens, need it: a capture of plain TCP/UDP never loads it.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dpkt = _lazy_module("dpkt")

_ZERO16 = bytes(16)
_MAX_TAGS = 8  # VLAN tags / MPLS labels followed before giving up (fuzzed frames repeat them forever)
_MAX_EXT_HEADERS = 16
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class _Row:
    """One frame's decoded fields while its layers are walked."""

    __slots__ = (
        "caplen",
        "depth",
        "dport",
        "dst",
        "encap",
        "ethertype",
        "frag",
        "frag_len",
        "frag_offset",
        "ip_id",
        "ip_version",
        "jumbo",
        "l4_len",
        "more_frags",
        "payload_offset",
        "proto",
        "sport",
        "src",
        "status",
        "tags",
        "tcp_flags",
        "vlan",
        "wirelen",
    )

    def __init__(self, caplen: int, wirelen: int) -> None:
        self.caplen = caplen
        self.wirelen = wirelen
        self.ethertype = 0
        self.vlan = 0
        self.encap = 0
        self.ip_version = 0
        self.proto = 0
        self.tcp_flags = 0
        self.src = _ZERO16
        self.dst = _ZERO16
        self.sport = 0
        self.dport = 0
        self.frag = FRAG_NONE
        self.more_frags = 0
        self.frag_offset = 0
        self.frag_len = 0
        self.ip_id = 0
        self.depth = DEPTH_NONE
        self.status = STATUS_OK
        self.tags = 0
        self.jumbo = False  # an IPv6 jumbogram (RFC 2675)
        self.l4_len = 0  # transport bytes as the IP header reports them (not as captured)
        # where the last layer walked hands over in the frame: the network header once an EtherType is
        # known, the transport header once IP's headers are walked (tunnels.py opens what follows);
        # transient, not a column
        self.payload_offset = 0

    def short(self) -> None:
        """A header runs past the captured bytes: truncated by the snaplen, or malformed if not cut."""
        self.status = STATUS_TRUNCATED if self.caplen < self.wirelen else STATUS_MALFORMED

    def bad(self) -> None:
        self.status = STATUS_MALFORMED


Decoder = Callable[[_Row, bytes], None]


# --- link layer -------------------------------------------------------------------------------

def _ethernet(r: _Row, buf: bytes) -> None:
    if len(buf) < 14:
        r.short()
        return
    r.depth = DEPTH_LINK
    etype = _U16.unpack_from(buf, 12)[0]
    if etype > 1500:
        _ethertype(r, etype, buf[14:])
        return
    # 802.3 length field: only LLC/SNAP frames carry an EtherType (RFC 1042)
    r.encap |= ENCAP_LLC
    if buf[14:17] == b"\xaa\xaa\x03" and len(buf) >= 22:
        _ethertype(r, _U16.unpack_from(buf, 20)[0], buf[22:])


def _sll(r: _Row, buf: bytes) -> None:
    # https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL.html
    try:
        sll = dpkt.sll.SLL(buf)
    except dpkt.UnpackError:
        r.short()
        return
    r.depth = DEPTH_LINK
    if sll.ethtype > 1500:
        _ethertype(r, sll.ethtype, buf[16:])


def _sll2(r: _Row, buf: bytes) -> None:
    # https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html
    try:
        sll2 = dpkt.sll2.SLL2(buf)
    except dpkt.UnpackError:
        r.short()
        return
    r.depth = DEPTH_LINK
    if sll2.ethtype > 1500:
        _ethertype(r, sll2.ethtype, buf[20:])


def _raw(r: _Row, buf: bytes) -> None:
    r.depth = DEPTH_LINK
    if not buf:
        r.short()
        return
    version = buf[0] >> 4
    if version == 4:
        _ethertype(r, p.ETH_P_IPV4, buf)
    elif version == 6:
        _ethertype(r, p.ETH_P_IPV6, buf)
    else:
        r.bad()


def _raw_ipv4(r: _Row, buf: bytes) -> None:
    r.depth = DEPTH_LINK
    _ethertype(r, p.ETH_P_IPV4, buf)


def _raw_ipv6(r: _Row, buf: bytes) -> None:
    r.depth = DEPTH_LINK
    _ethertype(r, p.ETH_P_IPV6, buf)


# BSD address families for IPv6 differ per OS (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS); see
# https://www.tcpdump.org/linktypes/LINKTYPE_NULL.html
_AF_TO_ETHERTYPE = {2: p.ETH_P_IPV4, 24: p.ETH_P_IPV6, 28: p.ETH_P_IPV6, 30: p.ETH_P_IPV6}


def _null(r: _Row, buf: bytes) -> None:
    if len(buf) < 4:
        r.short()
        return
    r.depth = DEPTH_LINK
    family = int.from_bytes(buf[:4], "little")
    if family & 0xFFFF0000:  # written by a big-endian host: the family is in host byte order
        family = int.from_bytes(buf[:4], "big")
    _family(r, family, buf[4:])


def _loop(r: _Row, buf: bytes) -> None:
    if len(buf) < 4:
        r.short()
        return
    r.depth = DEPTH_LINK
    _family(r, int.from_bytes(buf[:4], "big"), buf[4:])


def _family(r: _Row, family: int, buf: bytes) -> None:
    etype = _AF_TO_ETHERTYPE.get(family)
    if etype is not None:
        _ethertype(r, etype, buf)


# --- between link and network ------------------------------------------------------------------

def _ethertype(r: _Row, etype: int, buf: bytes) -> None:
    r.ethertype = etype
    r.payload_offset = r.caplen - len(buf)  # link layers only ever cut headers off the front
    decoder = ETHERTYPE_DECODERS.get(etype)
    if decoder is not None:
        decoder(r, buf)


def _vlan(r: _Row, buf: bytes) -> None:
    if len(buf) < 4:
        r.short()
        return
    r.tags += 1
    if r.tags > _MAX_TAGS:
        r.bad()
        return
    tag = dpkt.ethernet.VLANtag8021Q(buf[:4])
    if r.encap & ENCAP_VLAN:
        r.encap |= ENCAP_QINQ
    else:
        r.encap |= ENCAP_VLAN
        r.vlan = tag.id
    _ethertype(r, tag.type, buf[4:])


def _mpls(r: _Row, buf: bytes) -> None:
    # RFC 3032 label stack; the payload type is not signalled, so guess from the first nibble as
    # tshark does for a bare label stack.
    r.encap |= ENCAP_MPLS
    off = 0
    for _ in range(_MAX_TAGS):
        if len(buf) < off + 4:
            r.short()
            return
        bottom = buf[off + 2] & 1
        off += 4
        if bottom:
            break
    else:
        r.bad()
        return
    if len(buf) > off:
        version = buf[off] >> 4
        if version == 4:
            _ethertype(r, p.ETH_P_IPV4, buf[off:])
        elif version == 6:
            _ethertype(r, p.ETH_P_IPV6, buf[off:])


_PPP_TO_ETHERTYPE = {0x0021: p.ETH_P_IPV4, 0x0057: p.ETH_P_IPV6}


def _pppoe_session(r: _Row, buf: bytes) -> None:
    # RFC 2516 section 4: 6-byte PPPoE header, then the 2-byte PPP protocol field
    r.encap |= ENCAP_PPPOE
    if len(buf) < 8:
        r.short()
        return
    etype = _PPP_TO_ETHERTYPE.get(_U16.unpack_from(buf, 6)[0])
    if etype is not None:
        _ethertype(r, etype, buf[8:])


def _arp(r: _Row, buf: bytes) -> None:
    try:
        arp = dpkt.arp.ARP(buf)
    except dpkt.UnpackError:
        r.short()
        return
    if len(buf) < 8 + 2 * (arp.hln + arp.pln):
        r.short()
        return
    r.depth = DEPTH_NETWORK


# --- network layer -------------------------------------------------------------------------------

def _ipv4(r: _Row, buf: bytes) -> None:
    if len(buf) < 20:
        r.short()
        return
    ihl = (buf[0] & 0x0F) * 4
    if buf[0] >> 4 != 4 or ihl < 20:
        r.bad()
        return
    if len(buf) < ihl:
        r.short()
        return
    ip = dpkt.ip.IP(buf[:ihl])  # header only: the payload is dispatched below, by our table
    total = ip.len
    if total and total < ihl:
        r.bad()
        return
    r.ip_version = 4
    r.src = V4_MAPPED_PREFIX + ip.src
    r.dst = V4_MAPPED_PREFIX + ip.dst
    r.proto = ip.p
    r.depth = DEPTH_NETWORK
    end = total if total else len(buf)  # a zero length is left by TCP segmentation offload
    payload = buf[ihl:end]
    r.l4_len = end - ihl
    if ip.mf or ip.offset:
        r.ip_id = ip.id
        r.more_frags = ip.mf
        r.frag_offset = ip.offset * 8
        r.frag_len = r.l4_len
        if ip.offset:
            r.frag = FRAG_LATER
            return
        # A first fragment whose payload was not all captured cannot be reassembled; tshark then
        # dissects it as a whole datagram (packet-ip.c: reassembly needs tvb_bytes_exist).
        r.frag = FRAG_FIRST if len(payload) >= r.l4_len else FRAG_NONE
    r.payload_offset += ihl
    _transport(r, ip.p, payload)


# IPv6 extension headers that carry a next-header field (RFC 8200 section 4; AH RFC 4302;
# mobility RFC 6275; HIP RFC 7401; shim6 RFC 5533)
_IPV6_EXT = frozenset({p.IPPROTO_HOPOPTS, p.IPPROTO_ROUTING, p.IPPROTO_FRAGMENT, p.IPPROTO_DSTOPTS,
                       p.IPPROTO_AH, 135, 139, 140})


def _ipv6(r: _Row, buf: bytes) -> None:
    if len(buf) < 40:
        r.short()
        return
    if buf[0] >> 4 != 6:
        r.bad()
        return
    plen = _U16.unpack_from(buf, 4)[0]
    nxt = buf[6]
    r.ip_version = 6
    r.src = bytes(buf[8:24])
    r.dst = bytes(buf[24:40])
    # DEPTH_NETWORK is reached only once the extension header chain has been walked: a frame whose
    # chain is cut or broken keeps its addresses (flows, talkers) but, as in tshark, is no IPv6
    # conversation.
    if plen == 0:
        # RFC 2675: a jumbogram says 0 and carries its length in a hop-by-hop option; segmentation
        # offload also leaves 0, which tshark accepts when no extension header follows.
        if nxt == p.IPPROTO_HOPOPTS:
            jumbo = _jumbo_length(buf)
            if jumbo is None:
                r.bad()
                return
            end = 40 + jumbo
            r.jumbo = True
        elif nxt in _IPV6_EXT:
            r.bad()
            return
        else:
            end = len(buf)
    else:
        end = 40 + plen
    buf = buf[:end]
    off = 40
    for _ in range(_MAX_EXT_HEADERS):
        if nxt not in _IPV6_EXT:
            break
        if len(buf) < off + 8 if nxt == p.IPPROTO_FRAGMENT else len(buf) < off + 2:
            r.proto = nxt
            r.short()
            return
        if nxt == p.IPPROTO_FRAGMENT:
            offset_m = _U16.unpack_from(buf, off + 2)[0]
            r.ip_id = _U32.unpack_from(buf, off + 4)[0]
            r.more_frags = offset_m & 1
            r.frag_offset = offset_m & 0xFFF8
            r.frag_len = end - (off + 8)
            nxt = buf[off]
            off += 8
            if r.frag_offset:
                r.frag = FRAG_LATER
                r.proto = nxt
                r.depth = DEPTH_NETWORK
                return
            if r.more_frags:
                r.frag = FRAG_FIRST if len(buf) >= end else FRAG_NONE
            else:  # an atomic fragment (RFC 6946): a whole datagram
                r.ip_id = r.frag_offset = r.frag_len = 0
            continue
        hdrlen = (buf[off + 1] + 2) * 4 if nxt == p.IPPROTO_AH else (buf[off + 1] + 1) * 8
        if len(buf) < off + hdrlen:
            r.proto = nxt
            r.short()
            return
        nxt = buf[off]
        off += hdrlen
    else:
        r.proto = nxt
        r.bad()
        return
    r.depth = DEPTH_NETWORK
    r.l4_len = end - off
    r.payload_offset += off
    _transport(r, nxt, buf[off:])


def _jumbo_length(buf: bytes) -> int | None:
    """The Jumbo Payload length from the hop-by-hop header at offset 40, if valid (RFC 2675)."""
    if len(buf) < 42:
        return None
    end = 40 + (buf[41] + 1) * 8
    off = 42
    while off + 2 <= min(end, len(buf)):
        kind = buf[off]
        if kind == 0:  # Pad1
            off += 1
            continue
        length = buf[off + 1]
        if kind == 0xC2 and length == 4 and off + 6 <= len(buf):
            value = _U32.unpack_from(buf, off + 2)[0]
            return value if value >= 65536 else None
        off += 2 + length
    return None


def _transport(r: _Row, proto: int, buf: bytes) -> None:
    r.proto = proto
    decoder = IP_PROTO_DECODERS.get(proto)
    if decoder is not None:
        decoder(r, buf)


def _ah(r: _Row, buf: bytes) -> None:
    # RFC 4302 section 2: AH's payload length counts 32-bit words minus 2
    if len(buf) < 12:
        r.short()
        return
    hdrlen = (buf[1] + 2) * 4
    if len(buf) < hdrlen:
        r.short()
        return
    r.l4_len -= hdrlen
    r.payload_offset += hdrlen
    _transport(r, buf[0], buf[hdrlen:])


# --- transport layer -----------------------------------------------------------------------------

def _tcp(r: _Row, buf: bytes) -> None:
    try:
        tcp = dpkt.tcp.TCP(buf)
    except dpkt.NeedData:
        r.short()
        return
    except dpkt.UnpackError:  # data offset below 5 words
        r.bad()
        return
    r.sport = tcp.sport
    r.dport = tcp.dport
    r.tcp_flags = tcp.flags & 0xFF
    if len(buf) < tcp.off * 4:  # options cut short: ports are known, the header is not complete
        r.short()
        return
    r.depth = DEPTH_TRANSPORT


def _udp(r: _Row, buf: bytes) -> None:
    try:
        udp = dpkt.udp.UDP(buf)
    except dpkt.UnpackError:
        r.short()
        return
    r.sport = udp.sport
    r.dport = udp.dport
    # RFC 768: the length counts the header, so under 8 is bogus (tshark's packet-udp.c then stops
    # before its conversation tap; a length past the payload is only flagged)
    if udp.ulen < 8 and not (udp.ulen == 0 and r.jumbo):  # 0 in a jumbogram: RFC 2675 section 4
        r.bad()
        return
    r.depth = DEPTH_TRANSPORT


def _sctp(r: _Row, buf: bytes) -> None:
    # RFC 9260 section 3.1 common header; dpkt.sctp would also parse every chunk and fail the whole
    # packet on one short chunk, so only the 12-byte common header is read here.
    if len(buf) < 12:
        r.short()
        return
    r.sport, r.dport = struct.unpack_from("!HH", buf)
    r.depth = DEPTH_TRANSPORT


def _icmp(r: _Row, buf: bytes) -> None:
    try:
        dpkt.icmp.ICMP(buf)
    except dpkt.UnpackError:
        r.short()
        return
    r.depth = DEPTH_TRANSPORT


def _icmp6(r: _Row, buf: bytes) -> None:
    try:
        dpkt.icmp6.ICMP6(buf)
    except dpkt.UnpackError:
        r.short()
        return
    r.depth = DEPTH_TRANSPORT


LINK_DECODERS: dict[int, Decoder] = {
    lt.LINKTYPE_ETHERNET: _ethernet,
    lt.LINKTYPE_LINUX_SLL: _sll,
    lt.LINKTYPE_LINUX_SLL2: _sll2,
    lt.LINKTYPE_RAW: _raw,
    12: _raw,
    14: _raw,
    lt.LINKTYPE_IPV4: _raw_ipv4,
    lt.LINKTYPE_IPV6: _raw_ipv6,
    lt.LINKTYPE_NULL: _null,
    lt.LINKTYPE_LOOP: _loop,
}

ETHERTYPE_DECODERS: dict[int, Decoder] = {
    p.ETH_P_IPV4: _ipv4,
    p.ETH_P_IPV6: _ipv6,
    p.ETH_P_ARP: _arp,
    p.ETH_P_8021Q: _vlan,
    p.ETH_P_8021AD: _vlan,  # QinQ: the same tag layout, another key
    p.ETH_P_QINQ_OLD: _vlan,
    p.ETH_P_MPLS_UC: _mpls,
    p.ETH_P_MPLS_MC: _mpls,
    p.ETH_P_PPPOE_SESS: _pppoe_session,
}

IP_PROTO_DECODERS: dict[int, Decoder] = {
    p.IPPROTO_TCP: _tcp,
    p.IPPROTO_UDP: _udp,
    p.IPPROTO_SCTP: _sctp,
    p.IPPROTO_ICMP: _icmp,
    p.IPPROTO_ICMPV6: _icmp6,
    p.IPPROTO_AH: _ah,
}

_SCALARS = ("wire_len", "cap_len", "linktype", "ethertype", "vlan", "encap", "ip_version", "proto",
            "tcp_flags", "sport", "dport", "frag", "more_frags", "frag_offset", "frag_len", "ip_id",
            "depth", "status")


def walk_frame(frame: bytes, linktype: int, wirelen: int | None = None) -> _Row:
    """One frame's headers walked as decode_batch walks them, with the transient `payload_offset`."""
    r = _Row(len(frame), len(frame) if wirelen is None else wirelen)
    decoder = LINK_DECODERS.get(linktype)
    if decoder is None:
        r.status = STATUS_UNSUPPORTED
    else:
        decoder(r, frame)
    return r


def decode_frame(frame: bytes, linktype: int, wirelen: int | None = None) -> np.ndarray:
    """Decode one frame into a one-row Columns array (tests, and the odd frame)."""
    batch = Batch.from_frames([frame], [0], linktype, None if wirelen is None else [wirelen])
    return decode_batch(batch)


def decode_batch(batch: Batch) -> np.ndarray:
    """Decode every frame of a Batch into Columns, one at a time through dpkt."""
    n = len(batch)
    cols = batch_columns(batch)
    buf = batch.buf
    rows = []
    srcs = []
    dsts = []
    offsets = batch.offsets.tolist()
    caplens = batch.caplens.tolist()
    wirelens = batch.wirelens.tolist()
    for i, link in enumerate(batch.linktypes.tolist()):
        r = _Row(caplens[i], wirelens[i])
        decoder = LINK_DECODERS.get(link)
        if decoder is None:
            r.status = STATUS_UNSUPPORTED
        else:
            start = offsets[i]
            decoder(r, bytes(buf[start : start + caplens[i]]))
        rows.append((r.ethertype, r.vlan, r.encap, r.ip_version, r.proto, r.tcp_flags, r.sport,
                     r.dport, r.frag, r.more_frags, r.frag_offset, r.frag_len, r.ip_id, r.depth,
                     r.status))
        srcs.append(r.src)
        dsts.append(r.dst)
    if n:
        fields = _SCALARS[3:]
        scalars = np.array(rows, dtype=[(f, COLUMNS_DTYPE.fields[f][0]) for f in fields])
        for f in fields:
            cols[f] = scalars[f]
        cols["src"] = np.frombuffer(b"".join(srcs), dtype=np.uint8).reshape(n, 16)
        cols["dst"] = np.frombuffer(b"".join(dsts), dtype=np.uint8).reshape(n, 16)
    return cols
