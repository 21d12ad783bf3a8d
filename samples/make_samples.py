"""Write the sample captures in samples/: the README's demo file and one tiny file per link type.

Run ``python3 samples/make_samples.py``. The output is deterministic (fixed seeds, fixed timestamps, files
written with explicit byte order), so rebuilding gives byte-identical files and the committed captures can
be used as golden inputs by the tests.
"""

from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

HERE = Path(__file__).resolve().parent
LINKTYPE_DIR = HERE / "linktypes"

SEED = 20231114
# 2023-11-14T22:13:20Z: a fixed epoch so the files do not change with the clock
T0_NS = 1_700_000_000 * 1_000_000_000
CAPTURE_SECONDS = 60
SNAPLEN = 262144  # tcpdump's default snapshot length
CUT_SNAPLEN = 96  # the few frames of mixed.pcap captured with a short snaplen

# LINKTYPE_* values (https://www.tcpdump.org/linktypes.html); the readers keep theirs in
# capture/linktypes.py, these stay local so the generator does not depend on the code it tests.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IP = 0x0800
ETH_ARP = 0x0806
ETH_8021Q = 0x8100
ETH_8021AD = 0x88A8  # IEEE 802.1ad service tag, the outer tag of QinQ
ETH_IP6 = 0x86DD

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

# pcap magic numbers (https://www.tcpdump.org/manpages/pcap-savefile.5.html)
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D

# BSD loopback address families: AF_INET is 2 everywhere, AF_INET6 differs per OS
# (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS), which is why readers must accept all three.
AF_INET_BSD = 2
AF_INET6_BSD = (24, 28, 30)

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1448  # 1500 - IPv4 20 - TCP 20 - timestamps option 12
MSS6 = 1428


@dataclass(frozen=True)
class Host:
    """A machine on the captured segment, or one reached through the gateway."""

    ip: str
    mac: bytes

    @property
    def v6(self) -> bool:
        return ":" in self.ip

    @property
    def addr(self) -> bytes:
        return socket.inet_pton(socket.AF_INET6 if self.v6 else socket.AF_INET, self.ip)


def mac(text: str) -> bytes:
    """Six bytes from a colon-separated MAC address."""
    return bytes.fromhex(text.replace(":", ""))


BROADCAST = mac("ff:ff:ff:ff:ff:ff")
GATEWAY = Host("192.168.1.1", mac("00:1a:2b:3c:4d:01"))
CLIENTS = [Host(f"192.168.1.{10 + i}", mac(f"3c:22:fb:5e:71:{0x10 + i:02x}")) for i in range(12)]
# remote servers are reached through the gateway: their frames carry the gateway's MAC
SERVERS = {
    name: Host(ip, GATEWAY.mac)
    for name, ip in (
        ("web", "93.184.216.34"),
        ("cdn", "151.101.1.69"),
        ("git", "140.82.112.3"),
        ("search", "142.250.74.46"),
        ("api", "104.16.132.229"),
        ("ssh", "198.51.100.22"),
        ("dns", "8.8.8.8"),
        ("dns2", "1.1.1.1"),
        ("ntp", "162.159.200.1"),
        ("ntp2", "185.125.190.57"),
        ("isp", "100.64.0.1"),
        ("probe", "203.0.113.9"),
    )
}
V6_GATEWAY = Host("fe80::21a:2bff:fe3c:4d01", GATEWAY.mac)
V6_CLIENTS = [
    Host("2001:db8:1::10", CLIENTS[0].mac),
    Host("2001:db8:1::11", CLIENTS[1].mac),
    Host("fe80::3e22:fbff:fe5e:7112", CLIENTS[2].mac),
]
V6_SERVERS = {
    "web": Host("2606:2800:220:1:248:1893:25c8:1946", GATEWAY.mac),
    "dns": Host("2001:4860:4860::8888", GATEWAY.mac),
    "bulk": Host("2001:db8:2::80", GATEWAY.mac),
}
# VLAN 100 (802.1Q) and a provider-bridged QinQ segment (S-tag 200, C-tag 300)
VLAN_HOSTS = [Host("10.10.100.5", mac("52:54:00:aa:00:05")), Host("10.10.100.20", mac("52:54:00:aa:00:14"))]
QINQ_HOSTS = [Host("172.16.30.1", mac("52:54:00:bb:00:01")), Host("172.16.30.2", mac("52:54:00:bb:00:02"))]


@dataclass
class Record:
    """One captured frame: timestamp, captured bytes and the length it had on the wire."""

    ts_ns: int
    data: bytes
    wirelen: int


@dataclass
class Capture:
    """The frames of one sample file, kept in arrival order when written."""

    records: list[Record] = field(default_factory=list)

    def add(self, ts_ns: int, frame: bytes, snap: int | None = None) -> None:
        data = frame if snap is None else frame[:snap]
        self.records.append(Record(ts_ns, data, len(frame)))

    def sorted(self) -> list[Record]:
        # sort is stable, so frames generated at the same instant keep their causal order
        return sorted(self.records, key=lambda r: r.ts_ns)


# --- frame builders -------------------------------------------------------------------------------


def ether(src: Host | bytes, dst: Host | bytes, ethertype: int, payload: bytes,
          vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    """An Ethernet II frame, optionally with VLAN tags given outermost first as (tpid, tci)."""
    s = src.mac if isinstance(src, Host) else src
    d = dst.mac if isinstance(dst, Host) else dst
    tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in vlans)
    frame = d + s + tags + struct.pack("!H", ethertype) + payload
    # receivers see short frames padded to the 60-byte minimum (64 with the FCS the NIC strips)
    return frame.ljust(60, b"\x00")


def ip4(src: Host, dst: Host, proto: int, payload: dpkt.Packet | bytes, *, ttl: int = 64, ident: int = 0,
        df: bool = True, opts: bytes = b"", mf: bool = False, offset: int = 0) -> bytes:
    """An IPv4 packet; dpkt fills the lengths and the header, TCP and UDP checksums."""
    pkt = dpkt.ip.IP(src=src.addr, dst=dst.addr, p=proto, ttl=ttl, id=ident, data=payload, opts=opts)
    pkt.hl = 5 + len(opts) // 4
    pkt.df = int(df)
    pkt.mf = int(mf)
    pkt.offset = offset
    return bytes(pkt)


def inet_checksum(data: bytes) -> int:
    return dpkt.in_cksum(data)


def ip6(src: Host, dst: Host, nxt: int, payload: bytes, *, hlim: int = 64, flow: int = 0) -> bytes:
    """An IPv6 packet around already-built payload bytes (extension headers included)."""
    return struct.pack("!IHBB", (6 << 28) | flow, len(payload), nxt, hlim) + src.addr + dst.addr + payload


def l4_v6(src: Host, dst: Host, proto: int, seg: dpkt.Packet) -> bytes:
    """Bytes of a TCP/UDP/ICMPv6 segment with its checksum over the IPv6 pseudo-header (RFC 8200 8.1).

    Computed here rather than by dpkt.ip6 because dpkt only does it when no extension header follows.
    """
    if isinstance(seg, dpkt.udp.UDP):
        seg.ulen = len(seg)
    seg.sum = 0
    body = bytes(seg)
    pseudo = src.addr + dst.addr + struct.pack("!IxxxB", len(body), proto)
    seg.sum = inet_checksum(pseudo + body) or 0xFFFF
    return bytes(seg)


def udp(sport: int, dport: int, data: bytes) -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(data), data=data)


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"", opts: bytes = b"",
        win: int | None = None) -> dpkt.tcp.TCP:
    # Linux: 64240 on the handshake, then a scaled window (502 << 7 is about 64 KiB)
    window = (64240 if flags & TCP_SYN else 502) if win is None else win
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
                        off=5 + len(opts) // 4, flags=flags, win=window, opts=opts, data=data)


def ip_frame(src: Host, dst: Host, proto: int, seg: dpkt.Packet | bytes, *,
             vlans: tuple[tuple[int, int], ...] = (), ttl: int = 64, ident: int = 0) -> bytes:
    """An Ethernet frame carrying seg over IPv4 or IPv6, chosen by the hosts' addresses."""
    if src.v6:
        body = l4_v6(src, dst, proto, seg) if isinstance(seg, dpkt.Packet) else seg
        return ether(src, dst, ETH_IP6, ip6(src, dst, proto, body, hlim=ttl), vlans)
    return ether(src, dst, ETH_IP, ip4(src, dst, proto, seg, ttl=ttl, ident=ident), vlans)


# --- conversations --------------------------------------------------------------------------------


class Ports:
    """Ephemeral ports handed out in Linux's default range (net.ipv4.ip_local_port_range)."""

    def __init__(self, rng: random.Random) -> None:
        self._next = 32768 + rng.randrange(2000)
        self._rng = rng

    def take(self) -> int:
        self._next += 1 + self._rng.randrange(40)
        return self._next


def tcp_session(cap: Capture, rng: random.Random, t: int, client: Host, server: Host, cport: int,
                sport: int, exchanges: list[tuple[bytes, bytes]], *, rtt_ns: int,
                vlans: tuple[tuple[int, int], ...] = (), snap: int | None = None) -> int:
    """A full TCP connection: handshake, request/response exchanges, FIN both ways. Returns end time."""
    mss = MSS6 if client.v6 else MSS
    isn_c, isn_s = rng.getrandbits(32), rng.getrandbits(32)
    ident = {client: rng.getrandbits(16), server: rng.getrandbits(16)}
    ttl = {client: 64, server: 64 if server.mac != GATEWAY.mac else rng.choice((52, 54, 56, 117, 118))}
    half = rtt_ns // 2

    def ts_opt(now: int, echo: int) -> bytes:
        # NOP NOP TSopt (RFC 7323 3.2): what Linux puts on every segment once negotiated
        return b"\x01\x01" + struct.pack("!BBII", 8, 10, (now // 1_000_000) & 0xFFFFFFFF,
                                         (echo // 1_000_000) & 0xFFFFFFFF)

    def send(now: int, src: Host, dst: Host, seq: int, ack: int, flags: int, data: bytes = b"",
             opts: bytes | None = None) -> None:
        sp, dp = (cport, sport) if src is client else (sport, cport)
        o = ts_opt(now, now - half) if opts is None else opts
        seg = tcp(sp, dp, seq, ack, flags, data, o)
        ident[src] = (ident[src] + 1) & 0xFFFF
        frame = ip_frame(src, dst, IPPROTO_TCP, seg, vlans=vlans, ttl=ttl[src], ident=ident[src])
        cap.add(now, frame, snap)

    syn_opts = b"\x02\x04" + struct.pack("!H", mss + 12) + b"\x04\x02" + ts_opt(t, 0)[2:] + b"\x01\x03\x03\x07"
    send(t, client, server, isn_c, 0, TCP_SYN, opts=syn_opts)
    t += half
    send(t, server, client, isn_s, isn_c + 1, TCP_SYN | TCP_ACK, opts=syn_opts)
    t += half
    seq_c, seq_s = isn_c + 1, isn_s + 1
    send(t, client, server, seq_c, seq_s, TCP_ACK)

    for request, response in exchanges:
        t += 200_000 + rng.randrange(2_000_000)
        for i in range(0, len(request), mss):
            chunk = request[i:i + mss]
            send(t, client, server, seq_c, seq_s, TCP_ACK | TCP_PSH, chunk)
            seq_c += len(chunk)
            t += 20_000
        t += half
        send(t, server, client, seq_s, seq_c, TCP_ACK)
        t += 300_000 + rng.randrange(5_000_000)  # server think time
        unacked = 0
        for i in range(0, len(response), mss):
            chunk = response[i:i + mss]
            last = i + mss >= len(response)
            send(t, server, client, seq_s, seq_c, TCP_ACK | (TCP_PSH if last else 0), chunk)
            seq_s += len(chunk)
            unacked += 1
            t += 12_000 + rng.randrange(30_000)
            if unacked == 2 or last:  # delayed ACK: one ACK per two full segments (RFC 1122 4.2.3.2)
                send(t + half, client, server, seq_c, seq_s, TCP_ACK)
                unacked = 0
        t += half

    t += 1_000_000 + rng.randrange(20_000_000)
    send(t, client, server, seq_c, seq_s, TCP_FIN | TCP_ACK)
    t += half
    send(t, server, client, seq_s, seq_c + 1, TCP_FIN | TCP_ACK)
    t += half
    send(t, client, server, seq_c + 1, seq_s + 1, TCP_ACK)
    return t


def lorem(rng: random.Random, n: int) -> bytes:
    words = (b"packet", b"capture", b"flow", b"kernel", b"ring", b"socket", b"filter", b"frame",
             b"header", b"window", b"segment", b"route", b"network", b"buffer", b"latency")
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def http_exchange(rng: random.Random, host: str) -> tuple[bytes, bytes]:
    path = rng.choice(("/", "/index.html", "/api/v1/status", "/static/app.js", "/img/logo.png", "/news"))
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.4.0\r\nAccept: */*\r\n\r\n").encode()
    body = b"<html><body><p>" + lorem(rng, rng.randrange(200, 5000)) + b"</p></body></html>\n"
    head = (f"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return req, head + body


def tls_record(rng: random.Random, n: int) -> bytes:
    # TLS 1.2/1.3 application_data record (RFC 8446 5.1): content type 23, legacy version 0x0303
    return struct.pack("!BHH", 23, 0x0303, n) + rng.randbytes(n)


def ssh_packet(rng: random.Random, n: int) -> bytes:
    # after key exchange SSH packets are opaque: 4-byte length then ciphertext and MAC (RFC 4253 6)
    return struct.pack("!I", n) + rng.randbytes(n + 16)


def ssh_clear(payload: bytes) -> bytes:
    """An unencrypted SSH binary packet (RFC 4253 6): length, padding length, payload, padding."""
    pad = 4 + (-(4 + 1 + len(payload) + 4)) % 8  # total a multiple of 8, at least 4 bytes of padding
    return struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + bytes(pad)


def ssh_string(b: bytes) -> bytes:
    return struct.pack("!I", len(b)) + b


def ssh_handshake(rng: random.Random, server_banner: bytes) -> list[tuple[bytes, bytes]]:
    """Banners, KEXINIT, curve25519 ECDH and NEWKEYS (RFC 4253 7, RFC 5656 4): client/server turns."""
    lists = (b"curve25519-sha256", b"ssh-ed25519", b"chacha20-poly1305@openssh.com",
             b"chacha20-poly1305@openssh.com", b"hmac-sha2-256", b"hmac-sha2-256", b"none", b"none", b"", b"")
    kexinit = [ssh_clear(bytes([20]) + rng.randbytes(16) + b"".join(map(ssh_string, lists)) + bytes(5))
               for _ in range(2)]
    ecdh_init = ssh_clear(bytes([30]) + ssh_string(rng.randbytes(32)))
    hostkey = ssh_string(b"ssh-ed25519") + ssh_string(rng.randbytes(32))
    signature = ssh_string(b"ssh-ed25519") + ssh_string(rng.randbytes(64))
    ecdh_reply = ssh_clear(bytes([31]) + ssh_string(hostkey) + ssh_string(rng.randbytes(32))
                           + ssh_string(signature))
    newkeys = ssh_clear(bytes([21]))
    return [(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", server_banner), (kexinit[0], kexinit[1]),
            (ecdh_init, ecdh_reply + newkeys), (newkeys, ssh_packet(rng, 32))]


def dns_pair(cap: Capture, rng: random.Random, t: int, client: Host, resolver: Host, sport: int,
             name: str, qtype: int) -> int:
    """A DNS query and its answer (A or AAAA). Returns the time of the answer."""
    qid = rng.getrandbits(16)
    q = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    cap.add(t, ip_frame(client, resolver, IPPROTO_UDP, udp(sport, 53, bytes(q)), ident=rng.getrandbits(16)))
    answers = []
    for _ in range(rng.randrange(1, 4)):
        rr = dpkt.dns.DNS.RR(name=name, type=qtype, ttl=rng.randrange(30, 3600))
        if qtype == dpkt.dns.DNS_A:
            rr.ip = bytes((rng.choice((93, 104, 151, 172, 185)), rng.randrange(256), rng.randrange(256),
                           rng.randrange(1, 255)))
        else:
            rr.ip6 = bytes.fromhex("20010db8") + rng.randbytes(12)
        answers.append(rr)
    r = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA,
                     qd=q.qd, an=answers)
    t += 3_000_000 + rng.randrange(40_000_000)
    cap.add(t, ip_frame(resolver, client, IPPROTO_UDP, udp(53, sport, bytes(r)), ttl=117,
                        ident=rng.getrandbits(16)))
    return t


def ntp_timestamp(ns: int) -> bytes:
    # NTP era 0 starts 1900-01-01: 2208988800 s before the Unix epoch (RFC 5905 6)
    secs, frac = divmod(ns, 1_000_000_000)
    return struct.pack("!II", secs + 2_208_988_800, (frac << 32) // 1_000_000_000)


def ntp_pair(cap: Capture, rng: random.Random, t: int, client: Host, server: Host) -> None:
    sport = 123  # ntpd and chrony send from port 123
    # version 4, mode 3 (client); dpkt's defaults for the byte-string fields are ints, so give them all
    req = dpkt.ntp.NTP(flags=(4 << 3) | 3, id=bytes(4), update_time=bytes(8), originate_time=bytes(8),
                       receive_time=bytes(8), transmit_time=ntp_timestamp(t))
    cap.add(t, ip_frame(client, server, IPPROTO_UDP, udp(sport, 123, bytes(req)), ident=rng.getrandbits(16)))
    t2 = t + 8_000_000 + rng.randrange(20_000_000)
    resp = dpkt.ntp.NTP(flags=(4 << 3) | 4, stratum=3, interval=6, precision=-25 & 0xFF, delay=0x20,
                        dispersion=0x30, id=socket.inet_aton("10.21.8.1"),
                        update_time=ntp_timestamp(t - 60_000_000_000), originate_time=ntp_timestamp(t),
                        receive_time=ntp_timestamp(t2 - 4_000_000), transmit_time=ntp_timestamp(t2 - 3_990_000))
    cap.add(t2, ip_frame(server, client, IPPROTO_UDP, udp(123, sport, bytes(resp)), ttl=56,
                         ident=rng.getrandbits(16)))


def ping(cap: Capture, rng: random.Random, t: int, src: Host, dst: Host, count: int, *,
         vlans: tuple[tuple[int, int], ...] = (), opts_req: bytes = b"", opts_rep: bytes = b"") -> None:
    """ICMP (or ICMPv6) echo request/reply pairs, one per second like ping(8)."""
    ident = rng.getrandbits(16)
    rtt = 1_000_000 + rng.randrange(30_000_000)
    payload = struct.pack("!Q", t // 1000) + bytes(range(0x10, 0x38))  # Linux ping: timeval then 0x10..
    for seq in range(1, count + 1):
        for kind, (a, b), when, opts in (("req", (src, dst), t, opts_req), ("rep", (dst, src), t + rtt, opts_rep)):
            if src.v6:
                typ = dpkt.icmp6.ICMP6_ECHO_REQUEST if kind == "req" else dpkt.icmp6.ICMP6_ECHO_REPLY
                msg = dpkt.icmp6.ICMP6(type=typ, code=0, data=struct.pack("!HH", ident, seq) + payload)
                cap.add(when, ip_frame(a, b, IPPROTO_ICMPV6, msg, vlans=vlans))
            else:
                typ = dpkt.icmp.ICMP_ECHO if kind == "req" else dpkt.icmp.ICMP_ECHOREPLY
                msg = dpkt.icmp.ICMP(type=typ, data=dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=payload))
                pkt = ip4(a, b, IPPROTO_ICMP, msg, ttl=64, ident=rng.getrandbits(16), opts=opts)
                cap.add(when, ether(a, b, ETH_IP, pkt, vlans))
        t += 1_000_000_000 + rng.randrange(-200_000, 200_000)


def traceroute(cap: Capture, rng: random.Random, t: int, src: Host, dst: Host, hops: list[Host]) -> None:
    """UDP probes with rising TTL: time-exceeded from each router, then port unreachable from dst.

    Both ICMP errors quote the offending datagram (RFC 792; Linux quotes up to 576 bytes of it).
    """
    sport = 40000 + rng.randrange(20000)
    for ttl, hop in enumerate([*hops, dst], start=1):
        dport = 33434 + ttl - 1
        ident = rng.getrandbits(16)
        probe = ip4(src, dst, IPPROTO_UDP, udp(sport, dport, bytes(32)), ttl=ttl, ident=ident, df=False)
        cap.add(t, ether(src, GATEWAY, ETH_IP, probe))
        t += 2_000_000 + 3_000_000 * ttl
        if hop is dst:
            err = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_UNREACH, code=dpkt.icmp.ICMP_UNREACH_PORT,
                                 data=dpkt.icmp.ICMP.Unreach(data=probe))
        else:
            # the router quotes the probe as it arrived there: TTL 1, header checksum redone by earlier hops
            quoted = ip4(src, dst, IPPROTO_UDP, udp(sport, dport, bytes(32)), ttl=1, ident=ident, df=False)
            err = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_TIMEXCEED, code=dpkt.icmp.ICMP_TIMEXCEED_INTRANS,
                                 data=dpkt.icmp.ICMP.TimeExceed(data=quoted))
        reply = ip4(hop, src, IPPROTO_ICMP, err, ttl=255 - ttl, ident=rng.getrandbits(16), df=False)
        cap.add(t, ether(GATEWAY, src, ETH_IP, reply))
        t += 1_000_000


def arp_pair(cap: Capture, t: int, asker: Host, target: Host) -> None:
    req = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=asker.mac, spa=asker.addr, tha=bytes(6), tpa=target.addr)
    cap.add(t, ether(asker, BROADCAST, ETH_ARP, bytes(req)))
    rep = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REPLY, sha=target.mac, spa=target.addr, tha=asker.mac, tpa=asker.addr)
    cap.add(t + 180_000, ether(target, asker, ETH_ARP, bytes(rep)))


def neighbor_discovery(cap: Capture, t: int, asker: Host, target: Host) -> None:
    """ICMPv6 neighbor solicitation to the solicited-node group and the advertisement (RFC 4861 4.3, 4.4)."""
    group = Host("ff02::1:ff" + target.addr[13:].hex()[:2] + ":" + target.addr[14:].hex(), b"")
    group_mac = b"\x33\x33\xff" + target.addr[13:]  # RFC 2464 7: 33:33 + low 32 bits of the group
    ns = dpkt.icmp6.ICMP6(type=135, code=0, data=bytes(4) + target.addr + b"\x01\x01" + asker.mac)
    body = l4_v6(asker, group, IPPROTO_ICMPV6, ns)
    cap.add(t, ether(asker, group_mac, ETH_IP6, ip6(asker, group, IPPROTO_ICMPV6, body, hlim=255)))
    # flags: Solicited and Override; option 2 = target link-layer address
    na = dpkt.icmp6.ICMP6(type=136, code=0, data=struct.pack("!I", 0x60000000) + target.addr + b"\x02\x01"
                          + target.mac)
    body = l4_v6(target, asker, IPPROTO_ICMPV6, na)
    cap.add(t + 250_000, ether(target, asker, ETH_IP6, ip6(target, asker, IPPROTO_ICMPV6, body, hlim=255)))


def ipv4_fragments(cap: Capture, rng: random.Random, t: int, src: Host, dst: Host) -> None:
    """One 3000-byte UDP datagram sent as three fragments over a 1500-byte MTU (RFC 791 3.2)."""
    payload = lorem(rng, 3000)
    whole = ip4(src, dst, IPPROTO_UDP, udp(50123, 5001, payload), df=False)
    transport = whole[20:]  # UDP header with its checksum over the whole datagram, then the data
    ident = rng.getrandbits(16)
    step = 1480  # largest multiple of 8 that fits 1500 - 20
    for off in range(0, len(transport), step):
        part = transport[off:off + step]
        more = off + step < len(transport)
        pkt = ip4(src, dst, IPPROTO_UDP, part, ident=ident, df=False, mf=more, offset=off // 8)
        cap.add(t, ether(src, dst, ETH_IP, pkt))
        t += 40_000


def ipv6_fragments(cap: Capture, rng: random.Random, t: int, src: Host, dst: Host) -> None:
    """A 2400-byte UDP datagram in two IPv6 fragments for a 1280-byte path MTU (RFC 8200 4.5)."""
    transport = l4_v6(src, dst, IPPROTO_UDP, udp(50124, 5001, lorem(rng, 2400)))
    ident = rng.getrandbits(32)
    step = 1232  # 1280 - 40 (IPv6) - 8 (fragment header), a multiple of 8
    for off in range(0, len(transport), step):
        more = int(off + step < len(transport))
        frag = struct.pack("!BxHI", IPPROTO_UDP, off | more, ident)  # offset in 8-byte units sits <<3
        pkt = ip6(src, dst, IPPROTO_FRAGMENT, frag + transport[off:off + step])
        cap.add(t, ether(src, dst, ETH_IP6, pkt))
        t += 30_000


def ipv6_ext_headers(cap: Capture, rng: random.Random, t: int, src: Host, dst: Host, count: int) -> None:
    """UDP behind a hop-by-hop (router alert) and a destination options (tunnel limit) header."""
    # RFC 8200 4.3: next header, length in 8-octet units beyond the first; RFC 2711 router alert
    hbh = struct.pack("!BB", IPPROTO_DSTOPTS, 0) + b"\x05\x02\x00\x00" + b"\x01\x00"  # + PadN(0)
    # RFC 2473 6.6 tunnel encapsulation limit 4, then PadN of one byte
    dst_opts = struct.pack("!BB", IPPROTO_UDP, 0) + b"\x04\x01\x04" + b"\x01\x01\x00"
    for i in range(count):
        transport = l4_v6(src, dst, IPPROTO_UDP, udp(51000, 33000, lorem(rng, 40 + 10 * i)))
        pkt = ip6(src, dst, IPPROTO_HOPOPTS, hbh + dst_opts + transport, hlim=1)
        cap.add(t, ether(src, dst, ETH_IP6, pkt))
        t += 500_000_000


def sctp_packet(src: Host, dst: Host, sport: int, dport: int, vtag: int,
                chunks: list[tuple[int, int, bytes]]) -> bytes:
    """An SCTP packet (RFC 9260 3); chunks are (type, flags, value) and dpkt adds the CRC32c."""
    objs = []
    for ctype, flags, value in chunks:
        c = dpkt.sctp.Chunk(type=ctype, flags=flags, len=4 + len(value), data=value)
        c.padding = bytes(-len(value) % 4)  # chunks are padded to 4 bytes, not counted in len
        objs.append(c)
    pkt = dpkt.sctp.SCTP(sport=sport, dport=dport, vtag=vtag)
    pkt.chunks = objs
    return ip4(src, dst, IPPROTO_SCTP, bytes(pkt))


def sctp_association(cap: Capture, rng: random.Random, t: int, a: Host, b: Host) -> None:
    """INIT, INIT ACK, COOKIE ECHO, COOKIE ACK, DATA/SACK both ways, SHUTDOWN (RFC 9260 5.1, 9.2)."""
    pa, pb = 7777, 7777
    tag_a, tag_b = rng.getrandbits(32), rng.getrandbits(32)
    tsn_a, tsn_b = rng.getrandbits(32), rng.getrandbits(32)
    cookie = rng.randbytes(32)
    rtt = 400_000

    def init_body(tag: int, tsn: int) -> bytes:
        return struct.pack("!IIHHI", tag, 106496, 10, 65535, tsn)

    def data(tsn: int, text: bytes) -> tuple[int, int, bytes]:
        return (0, 0x03, struct.pack("!IHHI", tsn, 0, 0, 0) + text)  # B and E: an unfragmented message

    def sack(cum: int) -> tuple[int, int, bytes]:
        return (3, 0, struct.pack("!IIHH", cum, 106496, 0, 0))

    def add(src: Host, dst: Host, vtag: int, chunks: list[tuple[int, int, bytes]]) -> None:
        nonlocal t
        sp, dp = (pa, pb) if src is a else (pb, pa)
        cap.add(t, ether(src, dst, ETH_IP, sctp_packet(src, dst, sp, dp, vtag, chunks)))
        t += rtt

    add(a, b, 0, [(1, 0, init_body(tag_a, tsn_a))])
    add(b, a, tag_a, [(2, 0, init_body(tag_b, tsn_b) + struct.pack("!HH", 7, 4 + len(cookie)) + cookie)])
    add(a, b, tag_b, [(10, 0, cookie)])
    add(b, a, tag_a, [(11, 0, b"")])
    for i in range(3):
        add(a, b, tag_b, [data(tsn_a + i, b"hello over sctp %d" % i)])
        add(b, a, tag_a, [sack(tsn_a + i)])
        add(b, a, tag_a, [data(tsn_b + i, b"reply %d" % i)])
        add(a, b, tag_b, [sack(tsn_b + i)])
    add(a, b, tag_b, [(7, 0, struct.pack("!I", tsn_b + 2))])
    add(b, a, tag_a, [(8, 0, b"")])
    add(a, b, tag_b, [(14, 0, b"")])


def record_route_option(recorded: list[Host]) -> bytes:
    """IPv4 record route option (RFC 791 3.1, type 7) with room for nine addresses, then end-of-list."""
    slots = b"".join(h.addr for h in recorded).ljust(36, b"\x00")
    return struct.pack("!BBB", 7, 39, 4 + 4 * len(recorded)) + slots + b"\x00"


# --- mixed.pcap -------------------------------------------------------------------------------------


def build_mixed() -> list[Record]:
    """Traffic on a small LAN mirror port over a minute: the README's demo capture."""
    rng = random.Random(SEED)
    cap = Capture()
    ports = Ports(rng)
    span = CAPTURE_SECONDS * 1_000_000_000

    def at() -> int:
        return T0_NS + rng.randrange(span - 3_000_000_000)

    for client in CLIENTS:
        arp_pair(cap, T0_NS + rng.randrange(2_000_000_000), client, GATEWAY)
    for _ in range(6):
        a, b = rng.sample(CLIENTS, 2)
        arp_pair(cap, at(), a, b)

    web = [("web", "example.com"), ("cdn", "cdn.example.net"), ("api", "api.example.org"),
           ("search", "www.example.com")]
    for n in range(52):
        name, host = rng.choice(web)
        exchanges = [http_exchange(rng, host) for _ in range(rng.randrange(1, 4))]
        # sessions 5 and 17 were captured with a 96-byte snaplen: their full-size segments are cut
        tcp_session(cap, rng, at(), rng.choice(CLIENTS), SERVERS[name], ports.take(), 80, exchanges,
                    rtt_ns=rng.randrange(8, 60) * 1_000_000, snap=CUT_SNAPLEN if n in (5, 17) else None)
    for _ in range(40):
        exchanges = [(tls_record(rng, rng.randrange(80, 600)), tls_record(rng, rng.randrange(400, 4000)))
                     for _ in range(rng.randrange(1, 4))]
        tcp_session(cap, rng, at(), rng.choice(CLIENTS), SERVERS[rng.choice(("git", "cdn", "api", "search"))],
                    ports.take(), 443, exchanges, rtt_ns=rng.randrange(8, 60) * 1_000_000)
    for _ in range(5):
        exchanges = ssh_handshake(rng, b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.4\r\n") + [(ssh_packet(rng, 48), ssh_packet(rng, rng.randrange(64, 1200)))
                                for _ in range(rng.randrange(4, 10))]
        tcp_session(cap, rng, at(), rng.choice(CLIENTS), SERVERS["ssh"], ports.take(), 22, exchanges,
                    rtt_ns=rng.randrange(20, 90) * 1_000_000)

    names = ("example.com", "www.example.com", "cdn.example.net", "api.example.org", "github.com",
             "ntp.ubuntu.com", "mail.example.com", "pool.ntp.org", "updates.example.net")
    for _ in range(260):
        resolver = GATEWAY if rng.random() < 0.6 else SERVERS[rng.choice(("dns", "dns2"))]
        qtype = dpkt.dns.DNS_A if rng.random() < 0.7 else dpkt.dns.DNS_AAAA
        dns_pair(cap, rng, at(), rng.choice(CLIENTS), resolver, ports.take(), rng.choice(names), qtype)
    for _ in range(20):
        ntp_pair(cap, rng, at(), rng.choice(CLIENTS), SERVERS[rng.choice(("ntp", "ntp2"))])
    for _ in range(8):
        ping(cap, rng, at(), rng.choice(CLIENTS), SERVERS[rng.choice(("dns", "web", "dns2"))], 4)
    ping(cap, rng, at(), CLIENTS[3], CLIENTS[7], 3)
    traceroute(cap, rng, at(), CLIENTS[4], SERVERS["probe"], [GATEWAY, SERVERS["isp"]])
    for _ in range(3):
        # a probe to a closed UDP port answered by port unreachable
        src, dst = rng.sample(CLIENTS, 2)
        t = at()
        probe = ip4(src, dst, IPPROTO_UDP, udp(ports.take(), 9999, b"status?\n"), ident=rng.getrandbits(16))
        cap.add(t, ether(src, dst, ETH_IP, probe))
        err = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_UNREACH, code=dpkt.icmp.ICMP_UNREACH_PORT,
                             data=dpkt.icmp.ICMP.Unreach(data=probe))
        cap.add(t + 150_000, ether(dst, src, ETH_IP, ip4(dst, src, IPPROTO_ICMP, err, df=False)))

    # IPv6: TCP to a web server and a bulk host, DNS over IPv6, echo, neighbor discovery
    v6c = V6_CLIENTS
    for _ in range(8):
        exchanges = [(tls_record(rng, rng.randrange(80, 600)), tls_record(rng, rng.randrange(400, 3000)))]
        tcp_session(cap, rng, at(), v6c[rng.randrange(2)], V6_SERVERS["web"], ports.take(), 443, exchanges,
                    rtt_ns=rng.randrange(8, 40) * 1_000_000)
    tcp_session(cap, rng, at(), v6c[0], V6_SERVERS["bulk"], ports.take(), 80,
                [http_exchange(rng, "[2001:db8:2::80]")], rtt_ns=15_000_000)
    for _ in range(24):
        dns_pair(cap, rng, at(), v6c[rng.randrange(2)], V6_SERVERS["dns"], ports.take(), rng.choice(names),
                 dpkt.dns.DNS_AAAA)
    ping(cap, rng, at(), v6c[1], V6_SERVERS["dns"], 3)
    neighbor_discovery(cap, at(), v6c[2], V6_GATEWAY)
    neighbor_discovery(cap, at(), V6_GATEWAY, v6c[2])
    ipv6_fragments(cap, rng, at(), v6c[0], V6_SERVERS["bulk"])
    ipv6_ext_headers(cap, rng, at(), v6c[1], V6_SERVERS["bulk"], 3)

    # VLAN 100 with priority 5: an SSH session and syslog; QinQ: echo and a UDP flow
    vlan100 = ((ETH_8021Q, (5 << 13) | 100),)
    exchanges = ssh_handshake(rng, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") + [
        (ssh_packet(rng, 48), ssh_packet(rng, 300)) for _ in range(3)]
    tcp_session(cap, rng, at(), VLAN_HOSTS[0], VLAN_HOSTS[1], ports.take(), 22, exchanges, rtt_ns=400_000,
                vlans=vlan100)
    t = at()
    for i in range(5):
        msg = b"<30>Nov 14 22:13:%02d switch01 link up on port %d" % (i, i + 1)
        cap.add(t, ip_frame(VLAN_HOSTS[1], VLAN_HOSTS[0], IPPROTO_UDP, udp(514, 514, msg), vlans=vlan100))
        t += 2_000_000_000
    qinq = ((ETH_8021AD, 200), (ETH_8021Q, 300))
    ping(cap, rng, at(), QINQ_HOSTS[0], QINQ_HOSTS[1], 3, vlans=qinq)
    t = at()
    for i in range(6):
        a, b = (QINQ_HOSTS[0], QINQ_HOSTS[1]) if i % 2 == 0 else (QINQ_HOSTS[1], QINQ_HOSTS[0])
        sp, dp = (41000, 4789 + 1000) if i % 2 == 0 else (4789 + 1000, 41000)
        cap.add(t, ip_frame(a, b, IPPROTO_UDP, udp(sp, dp, lorem(rng, 100)), vlans=qinq))
        t += 100_000_000

    ipv4_fragments(cap, rng, at(), CLIENTS[5], CLIENTS[9])
    sctp_association(cap, rng, at(), CLIENTS[6], CLIENTS[8])
    # ping -R: the request carries an empty record-route option, the reply has two hops recorded
    ping(cap, rng, at(), CLIENTS[2], CLIENTS[10], 2, opts_req=record_route_option([]),
         opts_rep=record_route_option([CLIENTS[2], CLIENTS[10]]))
    return cap.sorted()


# --- link-type samples ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A packet of the link-type files: its IP bytes, Ethernet addressing and whether it was sent."""

    ts_ns: int
    ip: bytes
    src: Host
    dst: Host
    outgoing: bool

    @property
    def v6(self) -> bool:
        return self.ip[0] >> 4 == 6

    @property
    def ethertype(self) -> int:
        return ETH_IP6 if self.v6 else ETH_IP


def build_linktype_samples() -> list[Sample]:
    """Seven packets seen by 192.168.1.10: DNS, a TCP handshake, ICMPv6 echo, DNS over IPv6."""
    rng = random.Random(SEED + 1)
    me, me6 = CLIENTS[0], V6_CLIENTS[0]
    web, dns6 = SERVERS["web"], V6_SERVERS["dns"]
    # sub-microsecond parts make nanosecond files distinguishable from microsecond ones
    t = T0_NS + 123_456_789
    out: list[Sample] = []

    def add(ip: bytes, src: Host, dst: Host, outgoing: bool, dt: int) -> None:
        nonlocal t
        out.append(Sample(t, ip, src, dst, outgoing))
        t += dt

    q = dpkt.dns.DNS(id=0x1234, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name="example.com")])
    r = dpkt.dns.DNS(id=0x1234, op=dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA, qd=q.qd,
                     an=[dpkt.dns.DNS.RR(name="example.com", ttl=300, ip=web.addr)])
    add(ip4(me, GATEWAY, IPPROTO_UDP, udp(45678, 53, bytes(q)), ident=1), me, GATEWAY, True, 8_000_123)
    add(ip4(GATEWAY, me, IPPROTO_UDP, udp(53, 45678, bytes(r)), ident=2), GATEWAY, me, False, 1_000_001)
    isn = rng.getrandbits(32)
    syn_opts = b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07"
    add(ip4(me, web, IPPROTO_TCP, tcp(45680, 80, isn, 0, TCP_SYN, opts=syn_opts + b"\x00\x00"), ident=3),
        me, web, True, 21_000_077)
    isn_s = rng.getrandbits(32)
    add(ip4(web, me, IPPROTO_TCP, tcp(80, 45680, isn_s, isn + 1, TCP_SYN | TCP_ACK,
                                      opts=syn_opts + b"\x00\x00"), ident=4, ttl=56),
        web, me, False, 250_333)
    echo = struct.pack("!HH", 0x77, 1) + bytes(range(24))
    for typ, src, dst, outgoing in ((128, me6, dns6, True), (129, dns6, me6, False)):
        body = l4_v6(src, dst, IPPROTO_ICMPV6, dpkt.icmp6.ICMP6(type=typ, code=0, data=echo))
        add(ip6(src, dst, IPPROTO_ICMPV6, body), src, dst, outgoing, 12_000_009)
    q6 = dpkt.dns.DNS(id=0x4321, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name="example.com",
                                                                        type=dpkt.dns.DNS_AAAA)])
    add(ip6(me6, dns6, IPPROTO_UDP, l4_v6(me6, dns6, IPPROTO_UDP, udp(45690, 53, bytes(q6)))),
        me6, dns6, True, 0)
    return out


def sll_header(s: Sample) -> bytes:
    """Linux cooked capture v1 (https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL.html)."""
    pkttype = 4 if s.outgoing else 0  # PACKET_OUTGOING / PACKET_HOST
    sender = s.src.mac
    return struct.pack("!HHH", pkttype, 1, len(sender)) + sender.ljust(8, b"\x00") + struct.pack(
        "!H", s.ethertype)


def sll2_header(s: Sample) -> bytes:
    """Linux cooked capture v2 (https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html)."""
    pkttype = 4 if s.outgoing else 0
    ifindex = 2
    return struct.pack("!HHIHBB", s.ethertype, 0, ifindex, 1, pkttype, 6) + s.src.mac.ljust(8, b"\x00")


def eth_frame(s: Sample) -> bytes:
    # frames we sent are captured before the NIC pads them; received ones come padded
    frame = ether(s.src, s.dst, s.ethertype, s.ip)
    return frame if not s.outgoing else frame[:14 + len(s.ip)]


def write_pcap(path: Path, records: list[Record], linktype: int, *, nanosecond: bool = False,
               big_endian: bool = False, snaplen: int = SNAPLEN) -> None:
    """Write a classic pcap file (https://www.tcpdump.org/manpages/pcap-savefile.5.html).

    The byte order is explicit, not the host's as with dpkt.pcap.Writer, so the files are identical
    wherever they are generated.
    """
    bo = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    out = [struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for r in records:
        secs, frac = divmod(r.ts_ns, 1_000_000_000)
        frac = frac if nanosecond else frac // 1000
        out.append(struct.pack(bo + "IIII", secs, frac, len(r.data), r.wirelen) + r.data)
    path.write_bytes(b"".join(out))


# pcapng (draft-ietf-opsawg-pcapng): block types and option codes
PCAPNG_SHB, PCAPNG_IDB, PCAPNG_EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_HARDWARE, SHB_OS, SHB_USERAPPL = 2, 3, 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
EPB_FLAGS = 2


def pcapng_options(opts: list[tuple[int, bytes]]) -> bytes:
    """Options as code, length, value padded to 32 bits, closed by opt_endofopt."""
    out = b"".join(struct.pack("<HH", code, len(v)) + v + bytes(-len(v) % 4) for code, v in opts)
    return out + struct.pack("<HH", OPT_ENDOFOPT, 0) if opts else b""


def pcapng_block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)  # type, length before the body and the repeated length after it
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def write_pcapng_two_interfaces(path: Path, samples: list[Sample]) -> None:
    """A section with an Ethernet interface (µs) and a Linux cooked one (ns); packets alternate."""
    shb = struct.pack("<IHHq", PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1) + pcapng_options(
        [(SHB_HARDWARE, b"x86_64"), (SHB_OS, b"Linux 6.18"), (SHB_USERAPPL, b"pktscope make_samples.py")])
    # if_tsresol: 6 means 10^-6 s per tick (the default), 9 means 10^-9
    interfaces = ((LINKTYPE_ETHERNET, b"eth0", b"wired uplink", 6),
                  (LINKTYPE_LINUX_SLL, b"any", b"Linux cooked capture on all interfaces", 9))
    blocks = [pcapng_block(PCAPNG_SHB, shb)]
    for linktype, name, descr, resol in interfaces:
        idb = struct.pack("<HHI", linktype, 0, SNAPLEN) + pcapng_options(
            [(IF_NAME, name), (IF_DESCRIPTION, descr), (IF_TSRESOL, bytes([resol]))])
        blocks.append(pcapng_block(PCAPNG_IDB, idb))
    for i, s in enumerate(samples):
        ifid = i % 2
        data = eth_frame(s) if ifid == 0 else sll_header(s) + s.ip
        ticks = s.ts_ns // 1000 if interfaces[ifid][3] == 6 else s.ts_ns
        # epb_flags bits 0-1: 1 inbound, 2 outbound
        opts = [(EPB_FLAGS, struct.pack("<I", 2 if s.outgoing else 1))]
        if i == 0:
            opts.append((OPT_COMMENT, b"first packet: DNS query on eth0"))
        body = struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        blocks.append(pcapng_block(PCAPNG_EPB, body + data + bytes(-len(data) % 4) + pcapng_options(opts)))
    path.write_bytes(b"".join(blocks))


def write_linktype_files(samples: list[Sample]) -> None:
    LINKTYPE_DIR.mkdir(exist_ok=True)

    def recs(frames: list[tuple[Sample, bytes]]) -> list[Record]:
        return [Record(s.ts_ns, f, len(f)) for s, f in frames]

    v6_families = iter(AF_INET6_BSD * 3)

    def null_family(s: Sample) -> int:
        return next(v6_families) if s.v6 else AF_INET_BSD

    write_pcap(LINKTYPE_DIR / "en10mb.pcap", recs([(s, eth_frame(s)) for s in samples]), LINKTYPE_ETHERNET)
    write_pcap(LINKTYPE_DIR / "en10mb-ns-be.pcap", recs([(s, eth_frame(s)) for s in samples]),
               LINKTYPE_ETHERNET, nanosecond=True, big_endian=True)
    write_pcap(LINKTYPE_DIR / "linux_sll.pcap", recs([(s, sll_header(s) + s.ip) for s in samples]),
               LINKTYPE_LINUX_SLL)
    write_pcap(LINKTYPE_DIR / "linux_sll2.pcap", recs([(s, sll2_header(s) + s.ip) for s in samples]),
               LINKTYPE_LINUX_SLL2)
    write_pcap(LINKTYPE_DIR / "raw.pcap", recs([(s, s.ip) for s in samples]), LINKTYPE_RAW)
    write_pcap(LINKTYPE_DIR / "ipv4.pcap", recs([(s, s.ip) for s in samples if not s.v6]), LINKTYPE_IPV4)
    write_pcap(LINKTYPE_DIR / "ipv6.pcap", recs([(s, s.ip) for s in samples if s.v6]), LINKTYPE_IPV6)
    # NULL stores the family in the capturing host's byte order, i.e. the file's: one file of each order
    write_pcap(LINKTYPE_DIR / "null.pcap",
               recs([(s, struct.pack("<I", null_family(s)) + s.ip) for s in samples]), LINKTYPE_NULL)
    write_pcap(LINKTYPE_DIR / "null-be.pcap",
               recs([(s, struct.pack(">I", null_family(s)) + s.ip) for s in samples]), LINKTYPE_NULL,
               big_endian=True)
    # LOOP is always network byte order; OpenBSD's AF_INET6 is 24
    write_pcap(LINKTYPE_DIR / "loop.pcap",
               recs([(s, struct.pack(">I", 24 if s.v6 else AF_INET_BSD) + s.ip) for s in samples]),
               LINKTYPE_LOOP)
    write_pcapng_two_interfaces(LINKTYPE_DIR / "two-interfaces.pcapng", samples)


def main() -> None:
    write_pcap(HERE / "mixed.pcap", build_mixed(), LINKTYPE_ETHERNET)
    write_linktype_files(build_linktype_samples())


if __name__ == "__main__":
    main()
