"""The reference decoder on real frame bytes, one test per protocol and link type.

Each frame below was built byte by byte (struct, correct checksums) and written to a one-frame pcap with
its link type; the comment above it is `TZ=UTC tcpdump -XX -nn -r` of that file (tcpdump 4.99.3), so the
bytes can be checked by eye. Expected values come from how the frame was built; tshark, when installed,
is asked about the same frames as a second opinion.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from pktscope.decoders.columns import (
    DEPTH_LINK,
    DEPTH_NETWORK,
    DEPTH_TRANSPORT,
    ENCAP_QINQ,
    ENCAP_VLAN,
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    STATUS_MALFORMED,
    STATUS_OK,
    STATUS_TRUNCATED,
    STATUS_UNSUPPORTED,
)
from pktscope.decoders.reference import decode_frame

TSHARK = shutil.which("tshark")

# fmt: off
# tcpdump -XX -nn -r eth_ipv4_tcp_syn.pcap  (link type 1)
# 22:13:20.250000 IP 192.0.2.1.49152 > 198.51.100.2.80: Flags [SEW], seq 1000, win 64240, options [mss 1460,sackOK,TS val 12345 ecr 0,nop,wscale 7], length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  003c 1c46 4000 4006 323f c000 0201 c633  .<.F@.@.2?.....3
#   0x0020:  6402 c000 0050 0000 03e8 0000 0000 a0c2  d....P..........
#   0x0030:  faf0 6ba6 0000 0204 05b4 0402 080a 0000  ..k.............
#   0x0040:  3039 0000 0000 0103 0307                 09........
ETH_IPV4_TCP_SYN = bytes.fromhex(
    "02000000000202000000000108004500003c1c4640004006323fc0000201c633"
    "6402c0000050000003e800000000a0c2faf06ba60000020405b40402080a0000"
    "30390000000001030307"
)

# tcpdump -XX -nn -r eth_ipv4_tcp_fin_psh_ack_urg.pcap  (link type 1)
# 22:13:20.250000 IP 198.51.100.2.80 > 192.0.2.1.49152: Flags [FP.U], seq 5000:5019, ack 1001, win 64240, urg 1, length 19: HTTP: HTTP/1.1 200 OK
#   0x0000:  0200 0000 0001 0200 0000 0002 0800 4500  ..............E.
#   0x0010:  003b 0101 4000 4006 4d85 c633 6402 c000  .;..@.@.M..3d...
#   0x0020:  0201 0050 c000 0000 1388 0000 03e9 5039  ...P..........P9
#   0x0030:  faf0 26db 0001 4854 5450 2f31 2e31 2032  ..&...HTTP/1.1.2
#   0x0040:  3030 204f 4b0d 0a0d 0a                   00.OK....
ETH_IPV4_TCP_FIN_PSH_ACK_URG = bytes.fromhex(
    "02000000000102000000000208004500003b0101400040064d85c6336402c000"
    "02010050c00000001388000003e95039faf026db0001485454502f312e312032"
    "3030204f4b0d0a0d0a"
)

# tcpdump -XX -nn -r vlan_ipv4_tcp_rst.pcap  (link type 1)
# 22:13:20.250000 IP 10.1.1.1.22 > 10.1.1.2.50000: Flags [R], seq 7, win 64240, length 0
#   0x0000:  0200 0000 0002 0200 0000 0001 8100 a064  ...............d
#   0x0010:  0800 4500 0028 1c46 4000 4006 0886 0a01  ..E..(.F@.@.....
#   0x0020:  0101 0a01 0102 0016 c350 0000 0007 0000  .........P......
#   0x0030:  0000 5004 faf0 db7d 0000                 ..P....}..
VLAN_IPV4_TCP_RST = bytes.fromhex(
    "0200000000020200000000018100a0640800450000281c464000400608860a01"
    "01010a0101020016c35000000007000000005004faf0db7d0000"
)

# tcpdump -XX -nn -r qinq_ipv4_udp.pcap  (link type 1)
# 22:13:20.250000 IP 10.2.0.1.33333 > 10.2.0.53.53: 4660+ A? example.com. (29)
#   0x0000:  0200 0000 0002 0200 0000 0001 88a8 00c8  ................
#   0x0010:  8100 012c 0800 4500 0039 1c46 4000 4011  ...,..E..9.F@.@.
#   0x0020:  0a35 0a02 0001 0a02 0035 8235 0035 0025  .5.......5.5.5.%
#   0x0030:  875e 1234 0100 0001 0000 0000 0000 0765  .^.4...........e
#   0x0040:  7861 6d70 6c65 0363 6f6d 0000 0100 01    xample.com.....
QINQ_IPV4_UDP = bytes.fromhex(
    "02000000000202000000000188a800c88100012c0800450000391c4640004011"
    "0a350a0200010a020035823500350025875e1234010000010000000000000765"
    "78616d706c6503636f6d0000010001"
)

# tcpdump -XX -nn -r eth_arp_request.pcap  (link type 1)
# 22:13:20.250000 ARP, Request who-has 192.0.2.254 tell 192.0.2.1, length 46
#   0x0000:  ffff ffff ffff 0200 0000 0001 0806 0001  ................
#   0x0010:  0800 0604 0001 0200 0000 0001 c000 0201  ................
#   0x0020:  0000 0000 0000 c000 02fe 0000 0000 0000  ................
#   0x0030:  0000 0000 0000 0000 0000 0000            ............
ETH_ARP_REQUEST = bytes.fromhex(
    "ffffffffffff02000000000108060001080006040001020000000001c0000201"
    "000000000000c00002fe000000000000000000000000000000000000"
)

# tcpdump -XX -nn -r eth_ipv4_options_udp.pcap  (link type 1)
# 22:13:20.250000 IP 10.3.0.1.5000 > 224.0.0.22.6000: UDP, length 7
#   0x0000:  0100 5e00 0016 0200 0000 0001 0800 4900  ..^...........I.
#   0x0010:  0033 1c46 4000 0111 d04a 0a03 0001 e000  .3.F@....J......
#   0x0020:  0016 9404 0000 070b 0400 0000 0000 0000  ................
#   0x0030:  0000 1388 1770 000f 2475 6f70 7469 6f6e  .....p..$uoption
#   0x0040:  73                                       s
ETH_IPV4_OPTIONS_UDP = bytes.fromhex(
    "01005e0000160200000000010800490000331c4640000111d04a0a030001e000"
    "001694040000070b0400000000000000000013881770000f24756f7074696f6e"
    "73"
)

# tcpdump -XX -nn -r eth_ipv4_frag_first.pcap  (link type 1)
# 22:13:20.250000 IP 10.4.0.1.40000 > 10.4.0.2.40001: UDP, length 192
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  007c 4242 2000 4011 0425 0a04 0001 0a04  .|BB..@..%......
#   0x0020:  0002 9c40 9c41 00c8 edad 0001 0203 0405  ...@.A..........
#   0x0030:  0607 0809 0a0b 0c0d 0e0f 1011 1213 1415  ................
#   0x0040:  1617 1819 1a1b 1c1d 1e1f 2021 2223 2425  ...........!"#$%
#   0x0050:  2627 2829 2a2b 2c2d 2e2f 3031 3233 3435  &'()*+,-./012345
#   0x0060:  3637 3839 3a3b 3c3d 3e3f 4041 4243 4445  6789:;<=>?@ABCDE
#   0x0070:  4647 4849 4a4b 4c4d 4e4f 5051 5253 5455  FGHIJKLMNOPQRSTU
#   0x0080:  5657 5859 5a5b 5c5d 5e5f                 VWXYZ[\]^_
ETH_IPV4_FRAG_FIRST = bytes.fromhex(
    "02000000000202000000000108004500007c42422000401104250a0400010a04"
    "00029c409c4100c8edad000102030405060708090a0b0c0d0e0f101112131415"
    "161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435"
    "363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455"
    "565758595a5b5c5d5e5f"
)

# tcpdump -XX -nn -r eth_ipv4_frag_later.pcap  (link type 1)
# 22:13:20.250000 IP 10.4.0.1 > 10.4.0.2: ip-proto-17
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0074 4242 000d 4011 2420 0a04 0001 0a04  .tBB..@.$.......
#   0x0020:  0002 6061 6263 6465 6667 6869 6a6b 6c6d  ..`abcdefghijklm
#   0x0030:  6e6f 7071 7273 7475 7677 7879 7a7b 7c7d  nopqrstuvwxyz{|}
#   0x0040:  7e7f 8081 8283 8485 8687 8889 8a8b 8c8d  ~...............
#   0x0050:  8e8f 9091 9293 9495 9697 9899 9a9b 9c9d  ................
#   0x0060:  9e9f a0a1 a2a3 a4a5 a6a7 a8a9 aaab acad  ................
#   0x0070:  aeaf b0b1 b2b3 b4b5 b6b7 b8b9 babb bcbd  ................
#   0x0080:  bebf                                     ..
ETH_IPV4_FRAG_LATER = bytes.fromhex(
    "0200000000020200000000010800450000744242000d401124200a0400010a04"
    "0002606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d"
    "7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d"
    "9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbd"
    "bebf"
)

# tcpdump -XX -nn -r eth_ipv6_ext_chain_ah_udp.pcap  (link type 1)
# 22:13:20.250000 IP6 2001:db8::1 > 2001:db8::2: HBH DSTOPT RT6 (len=2, type=2, segleft=0, [0]2001:db8::99) frag (0|56) AH(spi=0x00001000,seq=0x1,icv=0x000000000000000000000000): 546 > 547: dhcp6 solicit
#   0x0000:  3333 0001 0002 0200 0000 0001 86dd 6000  33............`.
#   0x0010:  0000 0068 0040 2001 0db8 0000 0000 0000  ...h.@..........
#   0x0020:  0000 0000 0001 2001 0db8 0000 0000 0000  ................
#   0x0030:  0000 0000 0002 3c00 0502 0000 0100 2b00  ......<.......+.
#   0x0040:  0104 0000 0000 2c02 0200 0000 0000 2001  ......,.........
#   0x0050:  0db8 0000 0000 0000 0000 0000 0099 3300  ..............3.
#   0x0060:  0001 dead beef 1104 0000 0000 1000 0000  ................
#   0x0070:  0001 0000 0000 0000 0000 0000 0000 0222  ..............."
#   0x0080:  0223 0020 9ef3 0100 0001 0000 0000 0000  .#..............
#   0x0090:  0000 0000 0000 0000 0000 0000 0000       ..............
ETH_IPV6_EXT_CHAIN_AH_UDP = bytes.fromhex(
    "33330001000202000000000186dd600000000068004020010db8000000000000"
    "00000000000120010db80000000000000000000000023c000502000001002b00"
    "0104000000002c0202000000000020010db80000000000000000000000993300"
    "0001deadbeef1104000000001000000000010000000000000000000000000222"
    "022300209ef3010000010000000000000000000000000000000000000000"
)

# tcpdump -XX -nn -r eth_ipv6_frag_later.pcap  (link type 1)
# 22:13:20.250000 IP6 2001:db8::1 > 2001:db8::2: frag (1232|64)
#   0x0000:  3333 0001 0002 0200 0000 0001 86dd 6000  33............`.
#   0x0010:  0000 0048 2c40 2001 0db8 0000 0000 0000  ...H,@..........
#   0x0020:  0000 0000 0001 2001 0db8 0000 0000 0000  ................
#   0x0030:  0000 0000 0002 3300 04d0 dead beef 0000  ......3.........
#   0x0040:  0000 0000 0000 0000 0000 0000 0000 0000  ................
#   0x0050:  0000 0000 0000 0000 0000 0000 0000 0000  ................
#   0x0060:  0000 0000 0000 0000 0000 0000 0000 0000  ................
#   0x0070:  0000 0000 0000 0000 0000 0000 0000       ..............
ETH_IPV6_FRAG_LATER = bytes.fromhex(
    "33330001000202000000000186dd6000000000482c4020010db8000000000000"
    "00000000000120010db8000000000000000000000002330004d0deadbeef0000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000"
)

# tcpdump -XX -nn -r eth_ipv4_icmp_echo.pcap  (link type 1)
# 22:13:20.250000 IP 192.0.2.1 > 192.0.2.7: ICMP echo request, id 4660, seq 1, length 40
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  003c 1c46 4000 4001 9a72 c000 0201 c000  .<.F@.@..r......
#   0x0020:  0207 0800 3b27 1234 0001 6162 6364 6566  ....;'.4..abcdef
#   0x0030:  6768 696a 6b6c 6d6e 6f70 7172 7374 7576  ghijklmnopqrstuv
#   0x0040:  7761 6263 6465 6667 6869                 wabcdefghi
ETH_IPV4_ICMP_ECHO = bytes.fromhex(
    "02000000000202000000000108004500003c1c46400040019a72c0000201c000"
    "020708003b27123400016162636465666768696a6b6c6d6e6f70717273747576"
    "77616263646566676869"
)

# tcpdump -XX -nn -r eth_ipv6_icmpv6_echo.pcap  (link type 1)
# 22:13:20.250000 IP6 fe80::1 > fe80::2: ICMP6, echo request, id 1911, seq 3, length 13
#   0x0000:  0200 0000 0002 0200 0000 0001 86dd 6000  ..............`.
#   0x0010:  0000 000d 3a40 fe80 0000 0000 0000 0000  ....:@..........
#   0x0020:  0000 0000 0001 fe80 0000 0000 0000 0000  ................
#   0x0030:  0000 0000 0002 8000 6668 0777 0003 7069  ........fh.w..pi
#   0x0040:  6e67 36                                  ng6
ETH_IPV6_ICMPV6_ECHO = bytes.fromhex(
    "02000000000202000000000186dd60000000000d3a40fe800000000000000000"
    "000000000001fe80000000000000000000000000000280006668077700037069"
    "6e6736"
)

# tcpdump -XX -nn -r eth_ipv4_sctp_init.pcap  (link type 1)
# 22:13:20.250000 IP 10.5.0.1.2905 > 10.5.0.2.2905: sctp (1) [INIT] [init tag: 287454020] [rwnd: 65535] [OS: 10] [MIS: 10] [init TSN: 1432778632]
#   0x0000:  0200 0000 0002 0200 0000 0001 0800 4500  ..............E.
#   0x0010:  0034 1c46 4000 4084 09f4 0a05 0001 0a05  .4.F@.@.........
#   0x0020:  0002 0b59 0b59 0000 0000 edb2 ec27 0100  ...Y.Y.......'..
#   0x0030:  0014 1122 3344 0000 ffff 000a 000a 5566  ..."3D........Uf
#   0x0040:  7788                                     w.
ETH_IPV4_SCTP_INIT = bytes.fromhex(
    "0200000000020200000000010800450000341c464000408409f40a0500010a05"
    "00020b590b5900000000edb2ec2701000014112233440000ffff000a000a5566"
    "7788"
)

# tcpdump -XX -nn -r sll_ipv4_udp.pcap  (link type 113)
# 22:13:20.250000 IP 10.6.0.1.1234 > 10.6.0.2.5678: UDP, length 3
#   0x0000:  0004 0001 0006 0200 0000 0001 0000 0800  ................
#   0x0010:  4500 001f 1c46 4000 4011 0a7a 0a06 0001  E....F@.@..z....
#   0x0020:  0a06 0002 04d2 162e 000b f15c 736c 6c    ...........\sll
SLL_IPV4_UDP = bytes.fromhex(
    "000400010006020000000001000008004500001f1c46400040110a7a0a060001"
    "0a06000204d2162e000bf15c736c6c"
)

# tcpdump -XX -nn -r sll2_ipv6_tcp.pcap  (link type 276)
# 22:13:20.250000 ?     In  IP6 2001:db8:1::1.443 > 2001:db8:1::2.51000: Flags [.], ack 2, win 64240, length 0
#   0x0000:  86dd 0000 0000 03e8 0001 0006 0200 0000  ................
#   0x0010:  0002 0000 6000 0000 0014 0640 2001 0db8  ....`......@....
#   0x0020:  0001 0000 0000 0000 0000 0001 2001 0db8  ................
#   0x0030:  0001 0000 0000 0000 0000 0002 01bb c738  ...............8
#   0x0040:  0000 0001 0000 0002 5010 faf0 9076 0000  ........P....v..
SLL2_IPV6_TCP = bytes.fromhex(
    "86dd0000000003e8000100060200000000020000600000000014064020010db8"
    "00010000000000000000000120010db800010000000000000000000201bbc738"
    "00000001000000025010faf090760000"
)

# tcpdump -XX -nn -r raw_ipv4_icmp.pcap  (link type 101)
# 22:13:20.250000 IP 192.0.2.1 > 192.0.2.7: ICMP echo request, id 4660, seq 1, length 40
#   0x0000:  4500 003c 1c46 4000 4001 9a72 c000 0201  E..<.F@.@..r....
#   0x0010:  c000 0207 0800 3b27 1234 0001 6162 6364  ......;'.4..abcd
#   0x0020:  6566 6768 696a 6b6c 6d6e 6f70 7172 7374  efghijklmnopqrst
#   0x0030:  7576 7761 6263 6465 6667 6869            uvwabcdefghi
RAW_IPV4_ICMP = bytes.fromhex(
    "4500003c1c46400040019a72c0000201c000020708003b271234000161626364"
    "65666768696a6b6c6d6e6f7071727374757677616263646566676869"
)

# tcpdump -XX -nn -r raw_ipv6_udp.pcap  (link type 101)
# 22:13:20.250000 IP6 2001:db8:2::1.4000 > 2001:db8:2::2.4001: UDP, length 4
#   0x0000:  6000 0000 000c 1140 2001 0db8 0002 0000  `......@........
#   0x0010:  0000 0000 0000 0001 2001 0db8 0002 0000  ................
#   0x0020:  0000 0000 0000 0002 0fa0 0fa1 000c 9b84  ................
#   0x0030:  7261 7736                                raw6
RAW_IPV6_UDP = bytes.fromhex(
    "60000000000c114020010db800020000000000000000000120010db800020000"
    "00000000000000020fa00fa1000c9b8472617736"
)

# tcpdump -XX -nn -r ipv4_udp.pcap  (link type 228)
# 22:13:20.250000 IP 10.7.0.1.1111 > 10.7.0.2.2222: UDP, length 4
#   0x0000:  4500 0020 1c46 4000 4011 0a77 0a07 0001  E....F@.@..w....
#   0x0010:  0a07 0002 0457 08ae 000c ff1b 6970 7634  .....W......ipv4
IPV4_UDP = bytes.fromhex(
    "450000201c46400040110a770a0700010a070002045708ae000cff1b69707634"
)

# tcpdump -XX -nn -r ipv6_udp.pcap  (link type 229)
# 22:13:20.250000 IP6 2001:db8:3::1.3333 > 2001:db8:3::2.4444: UDP, length 4
#   0x0000:  6000 0000 000c 1140 2001 0db8 0003 0000  `......@........
#   0x0010:  0000 0000 0000 0001 2001 0db8 0003 0000  ................
#   0x0020:  0000 0000 0000 0002 0d05 115c 000c a653  ...........\...S
#   0x0030:  6970 7636                                ipv6
IPV6_UDP = bytes.fromhex(
    "60000000000c114020010db800030000000000000000000120010db800030000"
    "00000000000000020d05115c000ca65369707636"
)

# tcpdump -XX -nn -r null_le_ipv4_tcp.pcap  (link type 0)
# 22:13:20.250000 IP 127.0.0.1.5000 > 127.0.0.1.6000: Flags [S], seq 9, win 64240, length 0
#   0x0000:  0200 0000 4500 0028 1c46 4000 4006 2088  ....E..(.F@.@...
#   0x0010:  7f00 0001 7f00 0001 1388 1770 0000 0009  ...........p....
#   0x0020:  0000 0000 5002 faf0 8bee 0000            ....P.......
NULL_LE_IPV4_TCP = bytes.fromhex(
    "02000000450000281c464000400620887f0000017f0000011388177000000009"
    "000000005002faf08bee0000"
)

# tcpdump -XX -nn -r null_be_ipv4_tcp.pcap  (link type 0)
# 22:13:20.250000 IP 127.0.0.1.5000 > 127.0.0.1.6000: Flags [S], seq 9, win 64240, length 0
#   0x0000:  0000 0002 4500 0028 1c46 4000 4006 2088  ....E..(.F@.@...
#   0x0010:  7f00 0001 7f00 0001 1388 1770 0000 0009  ...........p....
#   0x0020:  0000 0000 5002 faf0 8bee 0000            ....P.......
NULL_BE_IPV4_TCP = bytes.fromhex(
    "00000002450000281c464000400620887f0000017f0000011388177000000009"
    "000000005002faf08bee0000"
)

# tcpdump -XX -nn -r null_le_ipv6_udp.pcap  (link type 0)
# 22:13:20.250000 IP6 ::1.9998 > ::1.9999: UDP, length 5
#   0x0000:  1e00 0000 6000 0000 000d 1140 0000 0000  ....`......@....
#   0x0010:  0000 0000 0000 0000 0000 0001 0000 0000  ................
#   0x0020:  0000 0000 0000 0000 0000 0001 270e 270f  ............'.'.
#   0x0030:  000d a0d3 6e75 6c6c 36                   ....null6
NULL_LE_IPV6_UDP = bytes.fromhex(
    "1e00000060000000000d11400000000000000000000000000000000100000000"
    "000000000000000000000001270e270f000da0d36e756c6c36"
)

# tcpdump -XX -nn -r loop_ipv6_udp.pcap  (link type 108)
# 22:13:20.250000 IP6 ::1.9998 > ::1.9999: UDP, length 5
#   0x0000:  0000 0018 6000 0000 000d 1140 0000 0000  ....`......@....
#   0x0010:  0000 0000 0000 0000 0000 0001 0000 0000  ................
#   0x0020:  0000 0000 0000 0000 0000 0001 270e 270f  ............'.'.
#   0x0030:  000d a0d3 6e75 6c6c 36                   ....null6
LOOP_IPV6_UDP = bytes.fromhex(
    "0000001860000000000d11400000000000000000000000000000000100000000"
    "000000000000000000000001270e270f000da0d36e756c6c36"
)

# tcpdump -XX -nn -r loop_ipv4_tcp.pcap  (link type 108)
# 22:13:20.250000 IP 127.0.0.1.7000 > 127.0.0.2.8000: Flags [P.], seq 1:2, ack 1, win 64240, length 1
#   0x0000:  0000 0002 4500 0029 1c46 4000 4006 2086  ....E..).F@.@...
#   0x0010:  7f00 0001 7f00 0002 1b58 1f40 0000 0001  .........X.@....
#   0x0020:  0000 0001 5018 faf0 043d 0000 78         ....P....=..x
LOOP_IPV4_TCP = bytes.fromhex(
    "00000002450000291c464000400620867f0000017f0000021b581f4000000001"
    "000000015018faf0043d000078"
)

# fmt: on

ETHERNET = 1
LINUX_SLL = 113
LINUX_SLL2 = 276
RAW = 101
IPV4 = 228
IPV6 = 229
NULL = 0
LOOP = 108
USER0 = 147  # LINKTYPE_USER0: reserved for private use, which pktscope cannot know

# header sizes, to say where each frame's last decoded header ends
ETH, TAG, SLL, SLL2, FAMILY = 14, 4, 16, 20, 4
IP4, IP6, TCP, UDP, SCTP_COMMON, ARP_IPV4 = 20, 40, 20, 8, 12, 28
ICMP_COMMON = 4  # type, code, checksum (RFC 792, RFC 4443 section 2.1): what every ICMP message has


@dataclass(frozen=True)
class Case:
    """A frame, its link type, what it holds (from how it was built) and where its headers end."""

    frame: bytes
    linktype: int
    header_len: int  # bytes up to the end of the deepest header the decoder reads
    src: str | None = None
    dst: str | None = None
    want: dict[str, int] = field(default_factory=dict)


def v4(**kw: int) -> dict[str, int]:
    return {"ethertype": 0x0800, "ip_version": 4, "depth": DEPTH_TRANSPORT, **kw}


def v6(**kw: int) -> dict[str, int]:
    return {"ethertype": 0x86DD, "ip_version": 6, "depth": DEPTH_TRANSPORT, **kw}


SYN, FIN, RST, PSH, ACK, URG, ECE, CWR = 0x02, 0x01, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
NOFRAG = {"frag": FRAG_NONE, "more_frags": 0, "frag_offset": 0, "frag_len": 0, "ip_id": 0}

CASES: dict[str, Case] = {
    "ethernet-tcp-syn": Case(ETH_IPV4_TCP_SYN, ETHERNET, ETH + IP4 + TCP + 20, "192.0.2.1", "198.51.100.2",
                             v4(proto=6, sport=49152, dport=80, tcp_flags=SYN | ECE | CWR, vlan=0, encap=0,
                                **NOFRAG)),
    "ethernet-tcp-fin-psh-ack-urg": Case(ETH_IPV4_TCP_FIN_PSH_ACK_URG, ETHERNET, ETH + IP4 + TCP,
                                         "198.51.100.2", "192.0.2.1",
                                         v4(proto=6, sport=80, dport=49152, tcp_flags=FIN | PSH | ACK | URG)),
    "802.1q": Case(VLAN_IPV4_TCP_RST, ETHERNET, ETH + TAG + IP4 + TCP, "10.1.1.1", "10.1.1.2",
                   v4(proto=6, sport=22, dport=50000, tcp_flags=RST, vlan=100, encap=ENCAP_VLAN)),
    "802.1ad-qinq": Case(QINQ_IPV4_UDP, ETHERNET, ETH + 2 * TAG + IP4 + UDP, "10.2.0.1", "10.2.0.53",
                         v4(proto=17, sport=33333, dport=53, tcp_flags=0, vlan=200, encap=ENCAP_VLAN | ENCAP_QINQ)),
    "arp": Case(ETH_ARP_REQUEST, ETHERNET, ETH + ARP_IPV4, None, None,
                {"ethertype": 0x0806, "ip_version": 0, "depth": DEPTH_NETWORK, "proto": 0, "sport": 0, "dport": 0}),
    "ipv4-options": Case(ETH_IPV4_OPTIONS_UDP, ETHERNET, ETH + IP4 + 16 + UDP, "10.3.0.1", "224.0.0.22",
                         v4(proto=17, sport=5000, dport=6000, **NOFRAG)),
    "ipv4-first-fragment": Case(ETH_IPV4_FRAG_FIRST, ETHERNET, ETH + IP4 + UDP, "10.4.0.1", "10.4.0.2",
                                v4(proto=17, sport=40000, dport=40001, frag=FRAG_FIRST, more_frags=1,
                                   frag_offset=0, frag_len=104, ip_id=0x4242)),
    "ipv4-later-fragment": Case(ETH_IPV4_FRAG_LATER, ETHERNET, ETH + IP4, "10.4.0.1", "10.4.0.2",
                                v4(proto=17, sport=0, dport=0, depth=DEPTH_NETWORK, frag=FRAG_LATER, more_frags=0,
                                   frag_offset=104, frag_len=96, ip_id=0x4242)),
    # hop-by-hop 8 + destination options 8 + routing type 2 24 + fragment 8 + AH 24, then UDP
    "ipv6-extension-chain": Case(ETH_IPV6_EXT_CHAIN_AH_UDP, ETHERNET, ETH + IP6 + 8 + 8 + 24 + 8 + 24 + UDP,
                                 "2001:db8::1", "2001:db8::2",
                                 v6(proto=17, sport=546, dport=547, frag=FRAG_FIRST, more_frags=1, frag_offset=0,
                                    frag_len=24 + UDP + 24, ip_id=0xDEADBEEF)),
    "ipv6-later-fragment": Case(ETH_IPV6_FRAG_LATER, ETHERNET, ETH + IP6 + 8, "2001:db8::1", "2001:db8::2",
                                v6(proto=51, sport=0, dport=0, depth=DEPTH_NETWORK, frag=FRAG_LATER, more_frags=0,
                                   frag_offset=1232, frag_len=64, ip_id=0xDEADBEEF)),
    "icmp": Case(ETH_IPV4_ICMP_ECHO, ETHERNET, ETH + IP4 + ICMP_COMMON, "192.0.2.1", "192.0.2.7",
                 v4(proto=1, sport=0, dport=0, tcp_flags=0)),
    "icmpv6": Case(ETH_IPV6_ICMPV6_ECHO, ETHERNET, ETH + IP6 + ICMP_COMMON, "fe80::1", "fe80::2",
                   v6(proto=58, sport=0, dport=0)),
    "sctp": Case(ETH_IPV4_SCTP_INIT, ETHERNET, ETH + IP4 + SCTP_COMMON, "10.5.0.1", "10.5.0.2",
                 v4(proto=132, sport=2905, dport=2905)),
    "linux-sll": Case(SLL_IPV4_UDP, LINUX_SLL, SLL + IP4 + UDP, "10.6.0.1", "10.6.0.2",
                      v4(proto=17, sport=1234, dport=5678)),
    "linux-sll2": Case(SLL2_IPV6_TCP, LINUX_SLL2, SLL2 + IP6 + TCP, "2001:db8:1::1", "2001:db8:1::2",
                       v6(proto=6, sport=443, dport=51000, tcp_flags=ACK)),
    "raw-ipv4": Case(RAW_IPV4_ICMP, RAW, IP4 + ICMP_COMMON, "192.0.2.1", "192.0.2.7", v4(proto=1)),
    "raw-ipv6": Case(RAW_IPV6_UDP, RAW, IP6 + UDP, "2001:db8:2::1", "2001:db8:2::2",
                     v6(proto=17, sport=4000, dport=4001)),
    "ipv4": Case(IPV4_UDP, IPV4, IP4 + UDP, "10.7.0.1", "10.7.0.2", v4(proto=17, sport=1111, dport=2222)),
    "ipv6": Case(IPV6_UDP, IPV6, IP6 + UDP, "2001:db8:3::1", "2001:db8:3::2", v6(proto=17, sport=3333, dport=4444)),
    "null-little-endian": Case(NULL_LE_IPV4_TCP, NULL, FAMILY + IP4 + TCP, "127.0.0.1", "127.0.0.1",
                               v4(proto=6, sport=5000, dport=6000, tcp_flags=SYN)),
    "null-big-endian": Case(NULL_BE_IPV4_TCP, NULL, FAMILY + IP4 + TCP, "127.0.0.1", "127.0.0.1",
                            v4(proto=6, sport=5000, dport=6000, tcp_flags=SYN)),
    "null-ipv6-macos": Case(NULL_LE_IPV6_UDP, NULL, FAMILY + IP6 + UDP, "::1", "::1",
                            v6(proto=17, sport=9998, dport=9999)),
    "loop-ipv6": Case(LOOP_IPV6_UDP, LOOP, FAMILY + IP6 + UDP, "::1", "::1", v6(proto=17, sport=9998, dport=9999)),
    "loop-ipv4": Case(LOOP_IPV4_TCP, LOOP, FAMILY + IP4 + TCP, "127.0.0.1", "127.0.0.2",
                      v4(proto=6, sport=7000, dport=8000, tcp_flags=PSH | ACK)),
}


def address(text: str | None) -> bytes:
    """The 16-byte address column value for an address (IPv4 mapped), or zeros for None."""
    if text is None:
        return bytes(16)
    ip = ipaddress.ip_address(text)
    return (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip).packed


def decoded(case: Case, caplen: int | None = None, cut: bool = True) -> np.void:
    """The one row of Columns for the case's frame, optionally cut to caplen bytes."""
    frame = case.frame if caplen is None else case.frame[:caplen]
    cols = decode_frame(frame, case.linktype, len(case.frame) if cut else len(frame))
    assert cols.shape == (1,)
    return cols[0]


@pytest.mark.parametrize("name", CASES)
def test_decoded_columns(name: str) -> None:
    case = CASES[name]
    row = decoded(case)
    got = {k: int(row[k]) for k in case.want}
    assert got == case.want
    assert row["src"].tobytes() == address(case.src)
    assert row["dst"].tobytes() == address(case.dst)
    assert int(row["status"]) == STATUS_OK
    assert int(row["linktype"]) == case.linktype
    assert int(row["wire_len"]) == int(row["cap_len"]) == len(case.frame)


def test_frames_are_what_tcpdump_printed() -> None:
    """The hex literals are the frames of the dumps above them (first line of each dump checked)."""
    assert ETH_IPV4_TCP_SYN[:16] == bytes.fromhex("0200 0000 0002 0200 0000 0001 0800 4500".replace(" ", ""))
    assert struct.unpack("!HH", QINQ_IPV4_UDP[12:16]) == (0x88A8, 200)
    assert struct.unpack(">I", NULL_BE_IPV4_TCP[:4]) == struct.unpack("<I", NULL_LE_IPV4_TCP[:4]) == (2,)


def test_unknown_linktype_is_unsupported() -> None:
    row = decode_frame(ETH_IPV4_TCP_SYN, USER0)[0]
    assert int(row["status"]) == STATUS_UNSUPPORTED
    assert int(row["depth"]) == 0
    assert int(row["ip_version"]) == 0
    assert int(row["wire_len"]) == len(ETH_IPV4_TCP_SYN)


def test_null_with_unknown_family_stops_at_the_link_layer() -> None:
    frame = struct.pack("<I", 99) + NULL_LE_IPV4_TCP[4:]  # 99 is no BSD address family
    row = decode_frame(frame, NULL)[0]
    assert (int(row["depth"]), int(row["ip_version"]), int(row["status"])) == (DEPTH_LINK, 0, STATUS_OK)


@pytest.mark.parametrize("name", CASES)
def test_cut_at_every_length(name: str) -> None:
    """Cut by the snaplen anywhere: never raises; inside a header it is `truncated` (or `malformed`
    when the same bytes were the whole frame); past the headers it decodes like the whole frame."""
    case = CASES[name]
    whole = decoded(case)
    keys = ("ethertype", "ip_version", "proto", "sport", "dport", "vlan")
    wrong = []
    for n in range(len(case.frame)):
        cut = decoded(case, n, cut=True)
        short = decoded(case, n, cut=False)
        if n < case.header_len:
            got = (int(cut["status"]), int(short["status"]))
            if got != (STATUS_TRUNCATED, STATUS_MALFORMED):
                wrong.append(f"{n} bytes: status (cut, not cut) = {got}")
            if int(cut["depth"]) >= int(whole["depth"]):
                wrong.append(f"{n} bytes: depth {int(cut['depth'])} though a header is cut")
        else:
            if int(cut["status"]) != STATUS_OK:
                wrong.append(f"{n} bytes (headers whole): status {int(cut['status'])}")
            if any(int(cut[k]) != int(whole[k]) for k in keys) or cut["src"].tobytes() != whole["src"].tobytes():
                wrong.append(f"{n} bytes (headers whole): fields differ from the whole frame")
    assert not wrong, f"{name} ({len(case.frame)} bytes, headers end at {case.header_len}):\n" + "\n".join(wrong)


# --- tshark as a second opinion ---------------------------------------------------------------------

TSHARK_FIELDS = ("ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "udp.srcport",
                 "udp.dstport", "sctp.srcport", "sctp.dstport", "ieee8021ad.id", "vlan.id", "ip.proto",
                 "tcp.flags", "ip.flags.mf", "ip.frag_offset", "ip.id", "ipv6.fraghdr.ident",
                 "ipv6.fraghdr.offset", "ipv6.fraghdr.more", "eth.type", "vlan.etype", "sll.etype")


def pcapng(frames: list[tuple[int, bytes]]) -> bytes:
    """A pcapng file (one interface per link type) holding the frames, for tshark."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    interfaces: dict[int, int] = {}
    for linktype, _ in frames:
        if linktype not in interfaces:
            interfaces[linktype] = len(interfaces)
            out += block(1, struct.pack("<HHI", linktype, 0, 0))
    for i, (linktype, frame) in enumerate(frames):
        ts = (1_700_000_000 + i) * 1_000_000
        out += block(6, struct.pack("<IIIII", interfaces[linktype], ts >> 32, ts & 0xFFFFFFFF, len(frame),
                                    len(frame)) + frame)
    return out


@pytest.fixture(scope="module")
def tshark_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """tshark's fields for every case, one tshark run (reassembly off: each frame on its own)."""
    if TSHARK is None:
        pytest.skip("tshark is not installed: no second opinion on the decoded fields")
    path: Path = tmp_path_factory.mktemp("tshark") / "frames.pcapng"
    path.write_bytes(pcapng([(c.linktype, c.frame) for c in CASES.values()]))
    cmd = [TSHARK, "-n", "-r", str(path), "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE",
           "-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    lines = out.splitlines()
    assert len(lines) == len(CASES), out
    # every occurrence, comma-separated: the first of a field is the outermost header's
    return {name: dict(zip(TSHARK_FIELDS, line.split("|"))) for name, line in zip(CASES, lines)}


def first(value: str) -> str:
    return value.split(",")[0]


def last(value: str) -> str:
    return value.split(",")[-1]


@pytest.mark.parametrize("name", CASES)
def test_agrees_with_tshark(name: str, tshark_rows: dict[str, dict[str, str]]) -> None:
    t = tshark_rows[name]
    row = decoded(CASES[name])
    src = t["ip.src"] or t["ipv6.src"] or None
    dst = t["ip.dst"] or t["ipv6.dst"] or None
    assert row["src"].tobytes() == address(src)
    assert row["dst"].tobytes() == address(dst)
    for proto in ("tcp", "udp", "sctp"):
        if t[f"{proto}.srcport"]:
            assert (int(row["sport"]), int(row["dport"])) == (int(t[f"{proto}.srcport"]), int(t[f"{proto}.dstport"]))
    if t["ip.proto"]:
        assert int(row["proto"]) == int(t["ip.proto"])
    if t["tcp.flags"]:
        assert int(row["tcp_flags"]) == int(t["tcp.flags"], 16) & 0xFF
    outer_vlan = first(t["ieee8021ad.id"] or t["vlan.id"])
    assert int(row["vlan"]) == (int(outer_vlan) if outer_vlan else 0)
    etype = last(t["vlan.etype"] or t["eth.type"] or t["sll.etype"])  # the EtherType after the tags
    if etype:  # tshark names one only where the link header carries it
        assert int(row["ethertype"]) == int(etype, 16)
    if t["ip.flags.mf"] and (t["ip.flags.mf"] == "1" or t["ip.frag_offset"] != "0"):
        assert int(row["more_frags"]) == int(t["ip.flags.mf"])
        assert int(row["frag_offset"]) == int(t["ip.frag_offset"]) * 8  # tshark 4.0 counts 8-byte units
        assert int(row["ip_id"]) == int(t["ip.id"], 16)
    if t["ipv6.fraghdr.ident"]:
        assert int(row["ip_id"]) == int(t["ipv6.fraghdr.ident"], 16)
        assert int(row["more_frags"]) == int(t["ipv6.fraghdr.more"])
        assert int(row["frag_offset"]) == int(t["ipv6.fraghdr.offset"]) * 8
