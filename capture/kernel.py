"""Linux constants for packet sockets that Python's `socket` module lacks, in one table.

Sources, cited per group below:
  if_packet.h  include/uapi/linux/if_packet.h (Linux 6.18; /usr/include/linux/if_packet.h here is older
               and lacks PACKET_FANOUT_FLAG_IGNORE_OUTGOING and PACKET_VNET_HDR_SZ)
  socket.h     include/uapi/asm-generic/socket.h
  if_arp.h     include/uapi/linux/if_arp.h
  sockios.h    include/uapi/linux/sockios.h
  packet_mmap  Documentation/networking/packet_mmap.rst
  libpcap      pcap-linux.c map_arphrd_to_dlt() (what tcpdump records for each ARPHRD_ type)
"""

from __future__ import annotations

import struct

from pktscope.capture import linktypes

# --- socket level and options (socket.h, if_packet.h) -------------------------------------------
SOL_PACKET = 263  # include/linux/socket.h
SOL_SOCKET = 1
SO_ATTACH_FILTER = 26  # socket.h: classic BPF, struct sock_fprog
SO_DETACH_FILTER = 27
SO_ATTACH_BPF = 50  # socket.h: eBPF program fd (BPF_PROG_TYPE_SOCKET_FILTER)
SO_LOCK_FILTER = 44

ETH_P_ALL = 0x0003  # if_ether.h: every protocol; the bind() protocol that makes a socket receive

# setsockopt(SOL_PACKET, ...) names (if_packet.h)
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_RECV_OUTPUT = 3
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_COPY_THRESH = 7
PACKET_AUXDATA = 8
PACKET_ORIGDEV = 9
PACKET_VERSION = 10
PACKET_HDRLEN = 11
PACKET_RESERVE = 12
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_VNET_HDR = 15
PACKET_TX_TIMESTAMP = 16
PACKET_TIMESTAMP = 17
PACKET_FANOUT = 18
PACKET_TX_HAS_OFF = 19
PACKET_QDISC_BYPASS = 20
PACKET_ROLLOVER_STATS = 21
PACKET_FANOUT_DATA = 22
PACKET_IGNORE_OUTGOING = 23
PACKET_VNET_HDR_SZ = 24

# enum tpacket_versions (if_packet.h)
TPACKET_V1 = 0
TPACKET_V2 = 1
TPACKET_V3 = 2

# PACKET_FANOUT modes: the low byte of the type_flags half (if_packet.h, packet_mmap "AF_PACKET fanout mode")
PACKET_FANOUT_HASH = 0  # by the skb flow hash: symmetric, so both directions of a flow meet in one socket
PACKET_FANOUT_LB = 1  # round robin
PACKET_FANOUT_CPU = 2  # by the CPU the frame arrived on
PACKET_FANOUT_ROLLOVER = 3  # fill one socket, then the next
PACKET_FANOUT_RND = 4  # random
PACKET_FANOUT_QM = 5  # by the recorded rx queue
PACKET_FANOUT_CBPF = 6  # a classic BPF program picks the socket (PACKET_FANOUT_DATA)
PACKET_FANOUT_EBPF = 7  # an eBPF program picks the socket (PACKET_FANOUT_DATA)
FANOUT_MODES: dict[str, int] = {
    "hash": PACKET_FANOUT_HASH,
    "lb": PACKET_FANOUT_LB,
    "cpu": PACKET_FANOUT_CPU,
    "rollover": PACKET_FANOUT_ROLLOVER,
    "random": PACKET_FANOUT_RND,
    "qm": PACKET_FANOUT_QM,
}
# flags OR-ed into the mode (if_packet.h)
PACKET_FANOUT_FLAG_ROLLOVER = 0x1000  # spill to another socket when ours is full
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000  # kernel picks an unused group id (id 0 given)
PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0x4000  # Linux >= 5.0, missing from older userspace headers
PACKET_FANOUT_FLAG_DEFRAG = 0x8000  # reassemble IP fragments before hashing, so fragments follow their flow

# packet_mreq.mr_type (if_packet.h)
PACKET_MR_MULTICAST = 0
PACKET_MR_PROMISC = 1
PACKET_MR_ALLMULTI = 2
PACKET_MR_UNICAST = 3

# sockaddr_ll.sll_pkttype (if_packet.h)
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4

# tp_status / block_status bits for RX rings (if_packet.h)
TP_STATUS_KERNEL = 0  # the kernel owns the block/frame
TP_STATUS_USER = 1 << 0  # user space owns it; hand it back by writing TP_STATUS_KERNEL
TP_STATUS_COPY = 1 << 1
TP_STATUS_LOSING = 1 << 2  # frames were dropped since the last PACKET_STATISTICS read
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_BLK_TMO = 1 << 5  # block retired by tp_retire_blk_tov, not because it was full
TP_STATUS_VLAN_TPID_VALID = 1 << 6
TP_STATUS_CSUM_VALID = 1 << 7

# --- structures, as struct formats (if_packet.h; native byte order, x86-64 layout) ---------------
TPACKET_ALIGNMENT = 16
# struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov, sizeof_priv, feature_req_word
TPACKET_REQ3 = struct.Struct("=7I")
# struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt
TPACKET_STATS_V3 = struct.Struct("=3I")
# struct packet_mreq: mr_ifindex, mr_type, mr_alen, mr_address[8]
PACKET_MREQ = struct.Struct("=iHH8s")
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1 from byte 8:
# block_status, num_pkts, offset_to_first_pkt, blk_len, seq_num (u64), ts_first_pkt, ts_last_pkt
BLOCK_DESC = struct.Struct("=IIIIIIQIIII")
BLOCK_STATUS_OFFSET = 8  # byte offset of block_status inside tpacket_block_desc
# struct tpacket3_hdr (48 bytes): next_offset, sec, nsec, snaplen, len, status, mac, net, then hv1
TPACKET3_HDR = struct.Struct("=IIIIIIHH")
TPACKET3_HDRLEN = 48 + 20  # TPACKET_ALIGN(sizeof(tpacket3_hdr)) + sizeof(sockaddr_ll), if_packet.h
# Room at the start of each block before the first frame: tpacket_block_desc aligned to 8 (af_packet.c
# BLK_PLUS_PRIV with tp_sizeof_priv 0).
BLOCK_DESC_LEN = 48
# Room the kernel puts before each frame's bytes: tpacket_rcv() sets netoff = TPACKET_ALIGN(TPACKET3_HDRLEN
# + max(16, mac header length)), 96 for Ethernet, 112 with one VLAN tag; a frame longer than
# block size - BLOCK_DESC_LEN - macoff is cut to fit (af_packet.c, "max_frame_len").
TPACKET3_FRAME_OVERHEAD = 128

# --- interface ioctls (sockios.h, if.h) -----------------------------------------------------------
SIOCGIFFLAGS = 0x8913
SIOCGIFHWADDR = 0x8927  # ifr_hwaddr.sa_family holds the ARPHRD_ type
SIOCGIFINDEX = 0x8933
IFNAMSIZ = 16
IFREQ_SIZE = 40  # struct ifreq on 64-bit: 16-byte name + 24-byte union
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100

# --- ARPHRD_ (if_arp.h) -> LINKTYPE_ recorded in files ---------------------------------------------
ARPHRD_ETHER = 1
ARPHRD_IEEE802 = 6
ARPHRD_PPP = 512
ARPHRD_RAWIP = 519
ARPHRD_TUNNEL = 768  # ipip
ARPHRD_TUNNEL6 = 769  # ip6tnl
ARPHRD_LOOPBACK = 772
ARPHRD_SIT = 776
ARPHRD_IPGRE = 778
ARPHRD_IEEE80211_RADIOTAP = 803
ARPHRD_IP6GRE = 823
ARPHRD_NONE = 0xFFFE  # tun, wireguard: no link header at all

# Types whose SOCK_RAW frames start with a header a capture file can name (libpcap map_arphrd_to_dlt).
# Loopback carries a zeroed Ethernet header. Types absent here (PPP, GRE, CAN, ...) need a cooked
# SOCK_DGRAM capture with a synthesised LINUX_SLL header, which this layer does not do yet.
ARPHRD_TO_LINKTYPE: dict[int, int] = {
    ARPHRD_ETHER: linktypes.LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: linktypes.LINKTYPE_ETHERNET,
    ARPHRD_NONE: linktypes.LINKTYPE_RAW,
    ARPHRD_RAWIP: linktypes.LINKTYPE_RAW,
    ARPHRD_TUNNEL: linktypes.LINKTYPE_RAW,
    ARPHRD_TUNNEL6: linktypes.LINKTYPE_RAW,
    ARPHRD_SIT: linktypes.LINKTYPE_RAW,
    ARPHRD_IEEE80211_RADIOTAP: 127,  # LINKTYPE_IEEE802_11_RADIOTAP (monitor-mode Wi-Fi)
}
