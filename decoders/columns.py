"""Columns: the decoded form of a Batch, one numpy row per frame."""

from __future__ import annotations

import numpy as np

from pktscope.capture.batch import Batch

# decode status of a frame: how far decoding got and why it stopped
STATUS_OK = 0
STATUS_TRUNCATED = 1  # a header runs past the captured bytes of a frame cut by the snaplen
STATUS_MALFORMED = 2  # a header is invalid, or runs past the end of a frame that was not cut
STATUS_UNSUPPORTED = 3  # link type pktscope does not decode: counted, not analysed
STATUS_NAMES = ("ok", "truncated", "malformed", "unsupported")

# depth: the deepest header decoded in full
DEPTH_NONE = 0
DEPTH_LINK = 1
DEPTH_NETWORK = 2  # IPv4/IPv6 header (with IPv6 extension headers) or ARP
DEPTH_TRANSPORT = 3  # TCP/UDP/SCTP/ICMP header

# fragment state of an IP packet
FRAG_NONE = 0
FRAG_FIRST = 1  # offset 0 with more-fragments set: carries the transport header
FRAG_LATER = 2  # offset > 0: no transport header

# encapsulation bits seen between the link header and IP
ENCAP_VLAN = 1  # 802.1Q tag
ENCAP_QINQ = 2  # two or more tags (802.1ad / QinQ)
ENCAP_MPLS = 4
ENCAP_PPPOE = 8
ENCAP_LLC = 16  # 802.3 length field with 802.2 LLC/SNAP

COLUMNS_DTYPE = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("wire_len", "<u4"),
        ("cap_len", "<u4"),
        ("linktype", "<u2"),
        ("ethertype", "<u2"),  # network protocol after tags; 0x0800/0x86dd for IP on any link type
        ("vlan", "<u2"),  # outer 802.1Q/802.1ad VLAN id; 0 when untagged
        ("encap", "u1"),  # ENCAP_* bits
        ("ip_version", "u1"),  # 4, 6, or 0 when the frame holds no IP header
        ("proto", "u1"),  # IP protocol after IPv6 extension headers and AH
        ("tcp_flags", "u1"),
        ("src", "u1", (16,)),  # IPv6 address, or IPv4-mapped (::ffff:a.b.c.d)
        ("dst", "u1", (16,)),
        ("sport", "<u2"),  # TCP/UDP/SCTP ports; 0 where the protocol has none
        ("dport", "<u2"),
        ("frag", "u1"),  # FRAG_*
        ("more_frags", "u1"),
        ("frag_offset", "<u4"),  # bytes
        ("frag_len", "<u4"),  # payload bytes of this fragment as sent (from the IP length fields)
        ("ip_id", "<u4"),  # IPv4 identification or IPv6 fragment id
        ("depth", "u1"),  # DEPTH_*
        ("status", "u1"),  # STATUS_*
    ]
)

V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

# wire_len and cap_len as one little-endian word
_LENGTHS = np.dtype({"names": ["w"], "formats": ["<u8"], "offsets": [COLUMNS_DTYPE.fields["wire_len"][1]],
                     "itemsize": COLUMNS_DTYPE.itemsize})
if COLUMNS_DTYPE.fields["cap_len"][1] != COLUMNS_DTYPE.fields["wire_len"][1] + 4 or not np.little_endian:
    raise RuntimeError("fill_batch_fields writes wire_len and cap_len as one little-endian word")


def batch_columns(batch: Batch) -> np.ndarray:
    """Zeroed Columns for a Batch, with the fields every decoder takes from it (time, lengths, link type)."""
    cols = np.zeros(len(batch), dtype=COLUMNS_DTYPE)
    fill_batch_fields(cols, batch)
    return cols


def fill_batch_fields(cols: np.ndarray, batch: Batch) -> None:
    """Copy time, lengths and link type from a Batch into Columns rows (one row per frame)."""
    cols["ts_ns"] = batch.ts_ns
    # wire_len and cap_len side by side: one little-endian word (a strided pass fewer), put together
    # in a dense array of two columns (cheaper than widening, shifting and or-ing them)
    lengths = np.empty((len(cols), 2), dtype=np.uint32)
    lengths[:, 0] = batch.wirelens
    lengths[:, 1] = batch.caplens
    cols.view(_LENGTHS)["w"] = lengths.view("<u8")[:, 0]
    cols["linktype"] = batch.linktypes


def address_words(addresses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 16-byte address column as two big-endian uint64 words (for hashing and sorting)."""
    words = np.ascontiguousarray(addresses).view(">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def take_rows(cols: np.ndarray, index: np.ndarray) -> np.ndarray:
    """cols[index] (indices or a bool mask), a copy: whole rows moved through a void view.

    Fancy indexing a structured dtype with sub-array fields (src, dst) copies field by field,
    several times slower.
    """
    if index.dtype == bool:
        index = np.flatnonzero(index)
    return np.ascontiguousarray(cols).view(np.dtype((np.void, cols.dtype.itemsize)))[index].view(cols.dtype)
