"""Link-layer header types as stored in capture files.

Source: https://www.tcpdump.org/linktypes.html (LINKTYPE_* values, which is what pcap and pcapng
files hold; the DLT_* names are the ones tcpdump prints).
"""

LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in host byte order of the capturing machine
LINKTYPE_ETHERNET = 1  # DLT_EN10MB
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family in network byte order
LINKTYPE_LINUX_SLL = 113  # Linux cooked capture v1, 16-byte header
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # Linux cooked capture v2, 20-byte header

# Some old files store the platform DLT value for raw IP instead of LINKTYPE_RAW
# (12 on most systems, 14 on OpenBSD); libpcap maps both to DLT_RAW when reading.
LINKTYPE_RAW_ALIASES = (12, 14)

# name printed by tcpdump ("link-type EN10MB") for each value we know
LINKTYPE_NAMES: dict[int, str] = {
    LINKTYPE_NULL: "NULL",
    LINKTYPE_ETHERNET: "EN10MB",
    LINKTYPE_RAW: "RAW",
    12: "RAW",
    14: "RAW",
    LINKTYPE_LOOP: "LOOP",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
    9: "PPP",
    50: "PPP_SERIAL",
    105: "IEEE802_11",
    127: "IEEE802_11_RADIO",
    104: "C_HDLC",
    192: "PPI",
}


def linktype_name(value: int) -> str:
    """tcpdump's name for a link type, or the number when it has none we know."""
    return LINKTYPE_NAMES.get(value, str(value))
