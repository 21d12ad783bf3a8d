"""Protocol numbers and names, one table each.

Sources: IEEE 802 EtherType registry and linux/if_ether.h (ethertypes); IANA "Assigned Internet
Protocol Numbers" (IP protocols); IANA service names (well-known ports).
"""

ETH_P_IPV4 = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_PPPOE_DISC = 0x8863
ETH_P_PPPOE_SESS = 0x8864
ETH_P_8021AD = 0x88A8  # QinQ outer tag: same layout as 802.1Q
ETH_P_QINQ_OLD = 0x9100  # pre-standard QinQ outer tag
VLAN_ETHERTYPES = (ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD)

ETHERTYPE_NAMES: dict[int, str] = {
    ETH_P_IPV4: "IPv4",
    ETH_P_ARP: "ARP",
    0x8035: "RARP",
    ETH_P_IPV6: "IPv6",
    ETH_P_MPLS_UC: "MPLS",
    ETH_P_MPLS_MC: "MPLS",
    ETH_P_PPPOE_DISC: "PPPoE-discovery",
    ETH_P_PPPOE_SESS: "PPPoE",
    0x88CC: "LLDP",
    0x888E: "EAPOL",
    0x88F7: "PTP",
    0x8809: "slow-protocols",
    0x9000: "loopback",
    0x0842: "WoL",
    0x22F0: "AVTP",
    0x8137: "IPX",
    0x88E5: "MACsec",
    0x8902: "CFM",
}

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IGMP = 2
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

IP_PROTO_NAMES: dict[int, str] = {
    IPPROTO_ICMP: "ICMP",
    IPPROTO_IGMP: "IGMP",
    IPPROTO_IPIP: "IPIP",
    IPPROTO_TCP: "TCP",
    IPPROTO_UDP: "UDP",
    IPPROTO_IPV6: "IPv6-in-IP",
    IPPROTO_GRE: "GRE",
    IPPROTO_ESP: "ESP",
    IPPROTO_AH: "AH",
    IPPROTO_ICMPV6: "ICMPv6",
    IPPROTO_NONE: "IPv6-NoNxt",
    IPPROTO_SCTP: "SCTP",
    89: "OSPF",
    103: "PIM",
    112: "VRRP",
    115: "L2TP",
}

# (protocol, port) -> service name, for the ports table
SERVICE_NAMES: dict[tuple[int, int], str] = {
    **{(IPPROTO_TCP, p): n for p, n in {
        20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "domain", 80: "http",
        110: "pop3", 111: "sunrpc", 119: "nntp", 139: "netbios-ssn", 143: "imap", 179: "bgp",
        389: "ldap", 443: "https", 445: "microsoft-ds", 465: "submissions", 587: "submission",
        636: "ldaps", 993: "imaps", 995: "pop3s", 1433: "ms-sql-s", 1723: "pptp", 3306: "mysql",
        3389: "ms-wbt-server", 5060: "sip", 5432: "postgresql", 5900: "vnc", 6379: "redis",
        8080: "http-alt", 8443: "https-alt",
    }.items()},
    **{(IPPROTO_UDP, p): n for p, n in {
        53: "domain", 67: "bootps", 68: "bootpc", 69: "tftp", 123: "ntp", 137: "netbios-ns",
        138: "netbios-dgm", 161: "snmp", 162: "snmptrap", 443: "quic", 500: "isakmp", 514: "syslog",
        520: "rip", 546: "dhcpv6-client", 547: "dhcpv6-server", 1900: "ssdp", 2152: "gtp-u",
        3478: "stun", 4500: "ipsec-nat-t", 4789: "vxlan", 5060: "sip", 5353: "mdns", 5355: "llmnr",
        51820: "wireguard",
    }.items()},
    (IPPROTO_SCTP, 2905): "m3ua",
    (IPPROTO_SCTP, 3868): "diameter",
}

TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def ethertype_name(value: int) -> str:
    """Name of an EtherType, or its hex value."""
    if value <= 1500:
        return "802.3"
    return ETHERTYPE_NAMES.get(value, f"0x{value:04x}")


def ip_proto_name(value: int) -> str:
    """Name of an IP protocol number, or the number."""
    return IP_PROTO_NAMES.get(value, f"ip-proto-{value}")


def tcp_flags_text(flags: int) -> str:
    """TCP flags as tcpdump-like letters (S, F, R, P, ., U, E, W)."""
    letters = "FSRP.UEW"
    return "".join(letters[i] for i in (1, 0, 2, 3, 5, 6, 7, 4) if flags & (1 << i)) or "-"
