"""Tunnels: the packets that frames carry inside them, as a Batch of their own.

Columns stay one row per frame, on the outer layer (flows, talkers and protocols see only that). Conversation
counting also looks inside, because tshark does: its IP, TCP and UDP taps run on every layer it dissects, so a
GRE or VXLAN frame counts its outer and its inner conversations both. `inner_frames` finds the tunnel frames of
a decoded Batch from their Columns, re-walks each one's headers with the reference decoder (for the offset
where its transport header starts), opens the tunnel header the way tshark's dissector does, and returns the
carried packets as a new Batch: LINKTYPE_RAW or LINKTYPE_IPV6 for IP payloads, LINKTYPE_ETHERNET for Ethernet
payloads (and for other EtherTypes, behind a zeroed MAC header). `tunnel_layers` repeats that for tunnels inside
tunnels, up to MAX_DEPTH levels.

A tunnel header that is cut short, bogus or fuzzed just yields no inner packet: nothing here raises on frame
bytes. Fragmented outer packets are opened from their first fragment (which holds the tunnel header), where
tshark opens the reassembled datagram; datagrams that never complete are the difference.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import numpy as np

from pktscope.capture import linktypes as lt
from pktscope.capture.batch import Batch
from pktscope.decoders import decode_batch, reference
from pktscope.decoders import protocols as p
from pktscope.decoders.columns import DEPTH_LINK, DEPTH_NETWORK, DEPTH_TRANSPORT, FRAG_LATER, take_rows

MAX_DEPTH = 4  # tunnels inside tunnels opened, at most
_MAX_LABELS = 8  # MPLS labels / GTP extension headers followed (fuzzed frames repeat them)
_U16 = struct.Struct("!H")
_ZERO_MACS = bytes(12)
_NO_PREFIX = b""

ETH_P_TEB = 0x6558  # transparent Ethernet bridging (RFC 1701; NVGRE RFC 7637, Geneve RFC 8926)
ETH_P_ERSPAN = 0x88BE  # ERSPAN type I and II (draft-foschiano-erspan)
ETH_P_ERSPAN3 = 0x22EB  # ERSPAN type III
ETH_P_PPP = 0x880B  # PPP in enhanced GRE (PPTP, RFC 2637)
ETH_P_NSH = 0x894F  # Network Service Header (RFC 8300)
ETH_P_MACSEC = 0x88E5  # IEEE 802.1AE

IPPROTO_ETHERIP = 97  # RFC 3378
IPPROTO_MPLS = 137  # MPLS in IP, RFC 4023
IP_PROTO_TUNNELS = (p.IPPROTO_IPIP, p.IPPROTO_IPV6, p.IPPROTO_GRE, IPPROTO_ETHERIP, IPPROTO_MPLS)

UDP_L2TP = 1701  # RFC 2661
UDP_GTP_U = 2152  # 3GPP TS 29.281
UDP_TEREDO = 3544  # RFC 4380
UDP_LISP_DATA = 4341  # RFC 9300
UDP_LISP_CONTROL = 4342  # RFC 9301 (the Encapsulated Control Message carries an IP packet)
UDP_VXLAN = 4789  # RFC 7348
UDP_VXLAN_GPE = 4790  # draft-ietf-nvo3-vxlan-gpe
UDP_GENEVE = 6081  # RFC 8926
UDP_MPLS = 6635  # RFC 7510

# UDP ports below 6636 that tshark 4.0.17 hands to a dissector (`tshark -G decodes`, table udp.port). tshark
# tries a datagram's lower port first, then the higher (packet-udp.c decode_udp_ports): a tunnel port is the
# tunnel only when the other port is higher or not in this table.
TSHARK_UDP_PORTS = frozenset((
    7, 13, 19, 37, 49, 53, 67, 68, 69, 88, 111, 123, 137, 138, 161, 162, 173, 177, 213, 269, 319, 320, 389, 427,
    434, 464, 473, 496, 500, 502, 513, 514, 520, 521, 524, 525, 539, 546, 547, 573, 623, 631, 646, 654, 664, 698,
    699, 701, 750, 853, 854, 910, 921, 925, 1001, 1044, 1052, 1069, 1089, 1090, 1091, 1101, 1113, 1153, 1194,
    1293, 1547, 1628, 1629, 1645, 1646, 1700, 1701, 1718, 1719, 1745, 1755, 1812, 1813, 1900, 1985, 2029, 2048,
    2055, 2067, 2099, 2123, 2152, 2157, 2190, 2221, 2222, 2231, 2246, 2268, 2269, 2313, 2345, 2424, 2427, 2428,
    2727, 2887, 2944, 2945, 2948, 2949, 2960, 3000, 3121, 3130, 3205, 3222, 3250, 3333, 3343, 3357, 3386, 3389,
    3452, 3455, 3478, 3483, 3503, 3540, 3544, 3567, 3622, 3671, 3784, 3785, 3792, 3799, 3804, 3819, 3863, 3956,
    4000, 4011, 4058, 4305, 4306, 4307, 4341, 4342, 4500, 4533, 4534, 4551, 4555, 4556, 4569, 4665, 4672, 4713,
    4729, 4739, 4754, 4784, 4789, 4790, 4791, 4991, 5000, 5001, 5031, 5050, 5060, 5072, 5094, 5246, 5247, 5264,
    5265, 5350, 5351, 5353, 5355, 5404, 5405, 5436, 5555, 5567, 5678, 5683, 5684, 5868, 6060, 6073, 6081, 6084,
    6087, 6118, 6160, 6343, 6543, 6635,
))

# an inner packet: its link type, bytes put in front (a synthetic header), and where it lies in the frame
Inner = tuple[int, bytes, int, int]
Opener = Callable[[bytes, int, int], Inner | None]


# --- what a tunnel carries ---------------------------------------------------------------------------------

def _ip(frame: bytes, start: int, end: int) -> Inner | None:
    # tshark's "ip" dissector takes the version from the first nibble: IPv6 behind a v4 label is IPv6
    return (lt.LINKTYPE_RAW, _NO_PREFIX, start, end) if start < end else None


def _ipv6(frame: bytes, start: int, end: int) -> Inner | None:
    return (lt.LINKTYPE_IPV6, _NO_PREFIX, start, end) if start < end else None


def _ip_by_version(frame: bytes, start: int, end: int) -> Inner | None:
    """An IP packet told by its first nibble, anything else is data (LISP, GTP-U, MPLS payloads)."""
    if start >= end:
        return None
    version = frame[start] >> 4
    if version == 4:
        return _ip(frame, start, end)
    if version == 6:
        return _ipv6(frame, start, end)
    return None


def _ethernet(frame: bytes, start: int, end: int) -> Inner | None:
    return (lt.LINKTYPE_ETHERNET, _NO_PREFIX, start, end) if start < end else None


def _by_ethertype(etype: int, frame: bytes, start: int, end: int) -> Inner | None:
    """A payload named by an EtherType (GRE, Geneve, MACsec), as tshark's ethertype table dispatches it."""
    if start >= end:
        return None
    if etype == p.ETH_P_IPV4:
        return _ip(frame, start, end)
    if etype == p.ETH_P_IPV6:
        return _ipv6(frame, start, end)
    if etype == ETH_P_TEB:
        return _ethernet(frame, start, end)
    if etype == ETH_P_NSH:
        return _nsh(frame, start, end)
    if etype in reference.ETHERTYPE_DECODERS:  # VLAN, MPLS, PPPoE, ARP: the decoder's own tables
        return (lt.LINKTYPE_ETHERNET, _ZERO_MACS + _U16.pack(etype), start, end)
    return None


def _mpls(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 3032 label stack; the payload is told by its first nibble, as reference._mpls does
    off = start
    for _ in range(_MAX_LABELS):
        if off + 4 > end:
            return None
        bottom = frame[off + 2] & 1
        off += 4
        if bottom:
            return _ip_by_version(frame, off, end)
    return None


def _ppp(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 1661: address/control FF 03 may be left out (RFC 1661 section 6.6), the protocol may be one byte
    off = start + 2 if frame[start : start + 2] == b"\xff\x03" else start
    if off >= end:
        return None
    if frame[off] & 1:
        proto, off = frame[off], off + 1
    elif off + 2 <= end:
        proto, off = _U16.unpack_from(frame, off)[0], off + 2
    else:
        return None
    if proto == 0x21:
        return _ip(frame, off, end)
    if proto == 0x57:
        return _ipv6(frame, off, end)
    return None


_NSH_NEXT: dict[int, Opener] = {1: _ip, 2: _ipv6, 3: _ethernet, 5: _mpls}  # RFC 8300 section 2.2


def _nsh(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 8300 section 2.2: the 6-bit length counts 4-byte words of the whole NSH header
    if start + 8 > end:
        return None
    length = (frame[start + 1] & 0x3F) * 4
    if length < 8:
        return None
    opener = _NSH_NEXT.get(frame[start + 3])
    return opener(frame, start + length, end) if opener is not None else None


# --- tunnel headers over IP ---------------------------------------------------------------------------------

def _gre(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 2784/2890; version 1 is PPTP's enhanced GRE (RFC 2637 section 4.1: key = length + call id, ack bit)
    if start + 4 > end:
        return None
    flags, etype = struct.unpack_from("!HH", frame, start)
    version = flags & 7
    if version > 1:
        return None
    off = start + 4
    if flags & 0xC000:  # checksum or routing present: checksum and offset words
        off += 4
    if flags & 0x2000:  # key
        off += 4
    if flags & 0x1000:  # sequence number
        off += 4
    if version == 1 and flags & 0x0080:  # acknowledgment number
        off += 4
    if flags & 0x4000:  # RFC 1701 source routing entries, up to a null one
        for _ in range(_MAX_LABELS):
            if off + 4 > end:
                return None
            sre_length = frame[off + 3]
            off += 4 + sre_length
            if sre_length == 0:
                break
        else:
            return None
    if off > end:
        return None
    if etype == ETH_P_ERSPAN:
        # type I has no sequence number and no ERSPAN header; type II's header is 8 bytes (packet-erspan.c)
        return _ethernet(frame, off + 8 if flags & 0x1000 else off, end)
    if etype == ETH_P_ERSPAN3:
        return _erspan3(frame, off, end)
    if etype == ETH_P_PPP:
        return _ppp(frame, off, end)
    if etype in (p.ETH_P_MPLS_UC, p.ETH_P_MPLS_MC):
        return _mpls(frame, off, end)
    return _by_ethertype(etype, frame, off, end)


def _erspan3(frame: bytes, start: int, end: int) -> Inner | None:
    # ERSPAN type III: 12-byte header, an 8-byte platform subheader when O (last bit) is set; frame type 0 is
    # Ethernet
    if start + 12 > end:
        return None
    word = _U16.unpack_from(frame, start + 10)[0]
    if (word >> 10) & 0x1F:
        return None
    return _ethernet(frame, start + 12 + (8 if word & 1 else 0), end)


def _etherip(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 3378: a 2-byte header (version 3), then an Ethernet frame
    return _ethernet(frame, start + 2, end)


_BY_IP_PROTO: dict[int, Opener] = {
    p.IPPROTO_IPIP: _ip,
    p.IPPROTO_IPV6: _ipv6,
    p.IPPROTO_GRE: _gre,
    IPPROTO_ETHERIP: _etherip,
    IPPROTO_MPLS: _mpls,
}


# --- tunnel headers over UDP --------------------------------------------------------------------------------

def _vxlan(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 7348: 8-byte header, then Ethernet
    return _ethernet(frame, start + 8, end)


_GPE_NEXT: dict[int, Opener] = {1: _ip, 2: _ipv6, 3: _ethernet, 4: _nsh, 5: _mpls}


def _vxlan_gpe(frame: bytes, start: int, end: int) -> Inner | None:
    # 8-byte header, the next protocol in its fourth byte (tshark's vxlan.next_proto table)
    if start + 8 > end:
        return None
    opener = _GPE_NEXT.get(frame[start + 3])
    return opener(frame, start + 8, end) if opener is not None else None


def _geneve(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 8926 section 3.4: options length in 4-byte words, protocol type is an EtherType
    if start + 8 > end:
        return None
    options = (frame[start] & 0x3F) * 4
    return _by_ethertype(_U16.unpack_from(frame, start + 2)[0], frame, start + 8 + options, end)


def _gtp_u(frame: bytes, start: int, end: int) -> Inner | None:
    # 3GPP TS 29.281 section 5: GTPv1 (PT set), message type 255 (T-PDU); sequence, N-PDU and next extension
    # header fields when any of E, S, PN is set; extension headers give their length in 4-byte words
    if start + 8 > end:
        return None
    flags = frame[start]
    if flags >> 5 != 1 or not flags & 0x10 or frame[start + 1] != 0xFF:
        return None
    off = start + 8
    if flags & 0x07:
        off += 4
        if off > end:
            return None
        ext = frame[off - 1] if flags & 0x04 else 0
        for _ in range(_MAX_LABELS):
            if not ext:
                break
            if off >= end or frame[off] == 0:
                return None
            off += frame[off] * 4
            if off > end:
                return None
            ext = frame[off - 1]
        else:
            return None
    if off >= end:
        return None
    # packet-gtp.c: 0x45..0x4e is IPv4 (a 20 to 56 byte header), 0x6_ is IPv6; anything else is taken as PPP
    first = frame[off]
    if 0x45 <= first <= 0x4E:
        return _ip(frame, off, end)
    if first >> 4 == 6:
        return _ipv6(frame, off, end)
    return None


def _l2tp(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 2661 section 3.1: L2TPv2 data messages (T clear) carry PPP; length (L), Ns/Nr (S) and offset (O)
    # fields are there when their bits are set
    if start + 6 > end:
        return None
    flags = _U16.unpack_from(frame, start)[0]
    if flags & 0x8000 or flags & 0x0F != 2:
        return None
    off = start + 2 + (2 if flags & 0x4000 else 0) + 4 + (4 if flags & 0x0800 else 0)
    if flags & 0x0200:
        if off + 2 > end:
            return None
        off += 2 + _U16.unpack_from(frame, off)[0]
    return _ppp(frame, off, end) if off < end else None


def _lisp_data(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 9300 section 5.1: 8-byte LISP header, then the IP packet
    return _ip_by_version(frame, start + 8, end)


def _lisp_control(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 9301 section 5.8: only the Encapsulated Control Message (type 8) carries a packet, after 4 bytes
    if start >= end or frame[start] >> 4 != 8:
        return None
    return _ip_by_version(frame, start + 4, end)


def _teredo(frame: bytes, start: int, end: int) -> Inner | None:
    # RFC 4380 section 5.1.1: an authentication indicator (type 1), then an origin indication (type 0, 8 bytes)
    off = start
    if off + 4 <= end and _U16.unpack_from(frame, off)[0] == 1:
        off += 4 + frame[off + 2] + frame[off + 3] + 9  # client id, authentication value, nonce, confirmation
    if off + 2 <= end and _U16.unpack_from(frame, off)[0] == 0:
        off += 8
    return _ipv6(frame, off, end)


_BY_UDP_PORT: dict[int, Opener] = {
    UDP_L2TP: _l2tp,
    UDP_GTP_U: _gtp_u,
    UDP_TEREDO: _teredo,
    UDP_LISP_DATA: _lisp_data,
    UDP_LISP_CONTROL: _lisp_control,
    UDP_VXLAN: _vxlan,
    UDP_VXLAN_GPE: _vxlan_gpe,
    UDP_GENEVE: _geneve,
    UDP_MPLS: _mpls,
}
UDP_TUNNEL_PORTS = np.array(sorted(_BY_UDP_PORT), dtype=np.uint16)


def _udp(frame: bytes, start: int, end: int) -> Inner | None:
    if start + 8 > end:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", frame, start)
    if 8 <= ulen < end - start:  # the payload ends where the UDP length says (packet-udp.c)
        end = start + ulen
    low, high = min(sport, dport), max(sport, dport)
    port = low if low in TSHARK_UDP_PORTS else high
    opener = _BY_UDP_PORT.get(port)
    return opener(frame, start + 8, end) if opener is not None else None


# --- below IP ------------------------------------------------------------------------------------------------

def _macsec(frame: bytes, start: int, end: int) -> Inner | None:
    # IEEE 802.1AE section 9.3: after the EtherType, 6 bytes of SecTAG (TCI/AN, short length, packet number),
    # 14 with the SCI (SC bit), and a 16-byte ICV at the end. Only
    # frames neither encrypted (E) nor changed (C) show their EtherType and payload; a short length (SL, 1..47)
    # gives the payload length; version bit set: not MACsec (packet-macsec.c)
    if start >= end:
        return None
    tci = frame[start]
    if tci & 0x80 or tci & 0x0C:
        return None
    sectag = 14 if tci & 0x20 else 6
    if end - start <= sectag + 16:
        return None
    short = frame[start + 1] & 0x3F
    data_end = start + sectag + short if short else end - 16
    data = start + sectag
    if data + 2 > min(data_end, end):
        return None
    return _by_ethertype(_U16.unpack_from(frame, data)[0], frame, data + 2, min(data_end, end))


def _open(frame: bytes, linktype: int, wirelen: int) -> Inner | None:
    """The packet a tunnel frame carries, or None."""
    r = reference.walk_frame(frame, linktype, wirelen)
    start = r.payload_offset
    if r.ethertype == ETH_P_MACSEC and r.depth == DEPTH_LINK:
        return _macsec(frame, start, len(frame))
    if r.ip_version == 0 or r.depth < DEPTH_NETWORK or r.frag == FRAG_LATER:
        return None
    end = min(len(frame), start + max(r.l4_len, 0))
    if r.proto == p.IPPROTO_UDP:
        return _udp(frame, start, end) if r.depth >= DEPTH_TRANSPORT else None
    opener = _BY_IP_PROTO.get(r.proto)
    return opener(frame, start, end) if opener is not None else None


# what a row's IP protocol says about a tunnel: 1 a tunnel protocol, 2 UDP (the ports tell)
_BY_PROTO = np.zeros(256, dtype=np.uint8)
_BY_PROTO[list(IP_PROTO_TUNNELS)] = 1
_BY_PROTO[p.IPPROTO_UDP] = 2
_IS_UDP_TUNNEL_PORT = np.zeros(1 << 16, dtype=bool)
_IS_UDP_TUNNEL_PORT[UDP_TUNNEL_PORTS] = True


def tunnel_rows(cols: np.ndarray) -> np.ndarray:
    """Indices of the rows that may carry a tunnel: IP protocols, UDP ports and EtherTypes of tunnels."""
    # two passes over the whole batch (protocol, EtherType); the other fields only for the candidates
    kind = _BY_PROTO[cols["proto"]]
    rows = np.flatnonzero(kind)
    if len(rows):
        c = take_rows(cols, rows)
        kind = kind[rows]
        network = (c["ip_version"] != 0) & (c["depth"] >= DEPTH_NETWORK) & (c["frag"] != FRAG_LATER)
        udp = (kind == 2) & (c["depth"] >= DEPTH_TRANSPORT)
        udp &= _IS_UDP_TUNNEL_PORT[c["sport"]] | _IS_UDP_TUNNEL_PORT[c["dport"]]
        rows = rows[network & (udp | (kind == 1))]
    macsec = np.flatnonzero(cols["ethertype"] == ETH_P_MACSEC)
    if len(macsec):
        macsec = macsec[cols["depth"][macsec] == DEPTH_LINK]
        rows = np.union1d(rows, macsec)
    return rows


def inner_frames(batch: Batch, cols: np.ndarray) -> tuple[Batch, np.ndarray]:
    """The packets carried by the tunnel frames of a Batch (decoded as `cols`), and each one's parent row.

    An inner packet keeps its parent's timestamp; its wire length is its captured length plus what the
    snaplen cut off the parent, so a cut inner packet decodes as truncated rather than malformed.
    """
    frames: list[bytes] = []
    parents: list[int] = []
    links: list[int] = []
    wires: list[int] = []
    linktypes = batch.linktypes
    for i in tunnel_rows(cols).tolist():
        frame = batch.frame(i)
        wirelen = int(batch.wirelens[i])
        try:
            inner = _open(frame, int(linktypes[i]), wirelen)
        except (IndexError, struct.error):  # a tunnel header cut short where a check was missed: no packet
            inner = None
        if inner is None:
            continue
        link, prefix, start, end = inner
        body = prefix + frame[start:end]
        frames.append(body)
        parents.append(i)
        links.append(link)
        wires.append(len(body) + max(wirelen - len(frame), 0))
    parent = np.array(parents, dtype=np.int64)
    return Batch.from_frames(frames, batch.ts_ns[parent], links, wires), parent


def tunnel_layers(batch: Batch, cols: np.ndarray, max_depth: int = MAX_DEPTH) -> Iterator[tuple[Batch, np.ndarray]]:
    """Each level of packets inside tunnels, outermost first, as a Batch and its decoded Columns."""
    for _ in range(max_depth):
        batch, _parent = inner_frames(batch, cols)
        if len(batch) == 0:
            return
        cols = decode_batch(batch)
        yield batch, cols
