"""Flows, fragments and the Snapshot, fed with decoded frames built here (so every count is known)."""

from __future__ import annotations

import ipaddress
import struct

import numpy as np
import pytest

from pktscope.analyzers.analysis import Analysis
from pktscope.analyzers.flows import END_ACTIVE, END_EOF, END_EVICTED, END_IDLE, Flow, FlowTable
from pktscope.analyzers.snapshot import Snapshot, top_flows
from pktscope.capture.batch import Batch
from pktscope.decoders.reference import decode_batch

ETHERNET = 1
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
TCP, UDP = 6, 17
SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08


def mapped(addr: str) -> bytes:
    """The 16-byte address column value of an IPv4 address."""
    return ipaddress.IPv6Address(f"::ffff:{addr}").packed


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, mf: bool = False, offset: int = 0) -> bytes:
    flags_off = (0x2000 if mf else 0) | (offset // 8)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_off, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + payload


def ether(ip: bytes, vlan: int | None = None) -> bytes:
    macs = bytes.fromhex("020000000002020000000001")
    if vlan is None:
        return macs + b"\x08\x00" + ip
    return macs + struct.pack("!HHH", 0x8100, vlan, 0x0800) + ip


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, data: bytes = b"", vlan: int | None = None) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + data
    return ether(ipv4(src, dst, TCP, seg), vlan)


def udp(src: str, sport: int, dst: str, dport: int, data: bytes = b"", vlan: int | None = None) -> bytes:
    return ether(ipv4(src, dst, UDP, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data), vlan)


Packet = tuple[float, bytes]  # (seconds after T0, frame)


def batch(packets: list[Packet]) -> Batch:
    return Batch.from_frames([f for _, f in packets], [T0 + round(t * NS) for t, _ in packets], ETHERNET)


def analyse(packets: list[Packet], batch_size: int | None = None, now_ns: int | None = None,
            **options: float) -> tuple[Snapshot, list[Flow]]:
    """Run an Analysis over the packets in batches of batch_size (all at once for None), finished at
    `now_ns` (None: the last packet's time).

    Returns the final Snapshot and every flow that ended, in the order they ended."""
    flows: list[Flow] = []
    analysis = Analysis(on_flow_end=flows.append, top=1000, **options)
    size = batch_size or max(len(packets), 1)
    for i in range(0, len(packets), size):
        analysis.feed(decode_batch(batch(packets[i : i + size])))
    return analysis.finish(now_ns), flows


def flow_tuple(f: Flow) -> tuple:
    return (f.a_addr, f.a_port, f.b_addr, f.b_port, f.proto, f.vlan, f.first_ns, f.last_ns, f.packets_ab,
            f.bytes_ab, f.packets_ba, f.bytes_ba, f.flags_ab, f.flags_ba, f.end_reason)


def snapshot_view(s: Snapshot) -> dict:
    """Everything a Snapshot reports, in a comparable form."""
    return {
        "totals": (s.packets, s.bytes, s.captured_bytes, s.first_ns, s.last_ns),
        "linktypes": s.linktypes, "status": s.status, "l2": s.l2, "l3": s.l3, "l4": s.l4,
        "hosts": s.hosts, "ports": s.ports, "conv_keys": s.conv_keys,
        "flows": (s.flows_total, s.flow_evictions, s.flow_end_reasons),
        "top_flows": sorted(flow_tuple(f) for f in s.top_flows),
    }


def tcp_session(client: str, server: str, start: float = 0.0) -> list[Packet]:
    """A TCP connection: handshake, a request, a two-segment response, the close."""
    c, s = (client, 40000), (server, 80)
    steps = [
        (c, s, SYN, b""), (s, c, SYN | ACK, b""), (c, s, ACK, b""), (c, s, PSH | ACK, b"GET / HTTP/1.0\r\n\r\n"),
        (s, c, ACK, b"x" * 1000), (s, c, PSH | ACK, b"y" * 300), (c, s, ACK, b""),
        (c, s, FIN | ACK, b""), (s, c, FIN | ACK, b""), (c, s, ACK, b""),
    ]
    return [(start + 0.01 * i, tcp(a[0], a[1], b[0], b[1], fl, data)) for i, (a, b, fl, data) in enumerate(steps)]


# --- flows -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("client", "server"), [("10.0.0.1", "10.0.0.2"), ("10.0.0.9", "10.0.0.2")],
                         ids=["client-lower", "client-higher"])
def test_tcp_session_is_one_flow_with_the_initiator_as_a(client: str, server: str) -> None:
    packets = tcp_session(client, server)
    snap, flows = analyse(packets)
    assert len(flows) == 1 and snap.flows_total == 1
    f = flows[0]
    assert (f.a_addr, f.a_port, f.b_addr, f.b_port) == (mapped(client), 40000, mapped(server), 80)
    assert (f.proto, f.ip_version, f.vlan, f.end_reason) == (TCP, 4, 0, END_EOF)
    from_client = [fr for _, fr in packets if fr[26:30] == ipaddress.IPv4Address(client).packed]
    from_server = [fr for _, fr in packets if fr[26:30] == ipaddress.IPv4Address(server).packed]
    assert (f.packets_ab, f.packets_ba) == (len(from_client), len(from_server)) == (6, 4)
    assert (f.bytes_ab, f.bytes_ba) == (sum(map(len, from_client)), sum(map(len, from_server)))
    assert f.flags_ab == SYN | ACK | PSH | FIN  # the client's SYN, ACKs, request, FIN
    assert f.flags_ba == SYN | ACK | PSH | FIN
    assert (f.first_ns, f.last_ns) == (T0, T0 + round(0.09 * NS))
    assert snap.conversations() == {"ipv4": 1, "ipv6": 0, "tcp": 1, "udp": 0}


def test_first_packet_from_the_responder_makes_it_a() -> None:
    # a capture that starts mid-flow: A is whoever sent the first packet seen
    packets = tcp_session("10.0.0.1", "10.0.0.2")[4:]  # from the server's first response on
    from_server = sum(fr[26:30] == ipaddress.IPv4Address("10.0.0.2").packed for _, fr in packets)
    _, flows = analyse(packets)
    assert len(flows) == 1
    assert (flows[0].a_addr, flows[0].a_port) == (mapped("10.0.0.2"), 80)
    assert (flows[0].packets_ab, flows[0].packets_ba) == (from_server, len(packets) - from_server) == (3, 3)


def gapped(gap: float) -> list[Packet]:
    """Three packets of one UDP flow, then a silence of `gap` seconds, then two more."""
    frame = udp("10.1.0.1", 5000, "10.1.0.2", 6000, b"hello")
    back = udp("10.1.0.2", 6000, "10.1.0.1", 5000, b"hi")
    return [(0.0, frame), (1.0, back), (2.0, frame), (2.0 + gap, frame), (3.0 + gap, back)]


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_idle_timeout_splits_a_flow_silent_longer(batch_size: int | None) -> None:
    snap, flows = analyse(gapped(10.001), batch_size, idle_timeout=10.0)
    assert [(f.packets, f.end_reason) for f in sorted(flows, key=lambda f: f.first_ns)] == [(3, END_IDLE),
                                                                                            (2, END_EOF)]
    assert snap.flows_total == 2
    assert snap.conversations()["udp"] == 1  # conversations have no timeout, as in tshark


@pytest.mark.parametrize("batch_size", [None, 1, 2])
def test_idle_timeout_keeps_a_flow_silent_just_under(batch_size: int | None) -> None:
    snap, flows = analyse(gapped(9.999), batch_size, idle_timeout=10.0)
    assert [(f.packets, f.end_reason) for f in flows] == [(5, END_EOF)]
    assert snap.flows_total == 1


def steady(seconds: int, every: int) -> list[Packet]:
    frame = udp("10.2.0.1", 7000, "10.2.0.2", 7001, b"tick")
    return [(float(t), frame) for t in range(0, seconds + 1, every)]


ACTIVE_TIMEOUT_ACROSS_BATCHES = (
    "analyzers/flows.py FlowTable._add: a segment from a later batch that takes a live flow past the active "
    "timeout moves whole to a new flow (flow 0..15 s ends, 20..35 s starts) instead of being cut at the "
    "timeout the way update() cuts a segment inside one batch (_per_packet)"
)


@pytest.mark.parametrize("batch_size", [None, 1, 4])
def test_active_timeout_splits_a_long_flow(batch_size: int | None) -> None:
    # a packet every 5 s from 0 to 100 s, active timeout 30 s: a flow may span at most 30 s, so
    # 0..30, 35..65, 70..100 (7 packets each); the idle timeout (60 s) never fires
    _, flows = analyse(steady(100, 5), batch_size, idle_timeout=60.0, active_timeout=30.0)
    got = [((f.first_ns - T0) // NS, (f.last_ns - T0) // NS, f.packets, f.end_reason) for f in flows]
    assert got == [(0, 30, 7, END_ACTIVE), (35, 65, 7, END_ACTIVE), (70, 100, 7, END_EOF)]


def many_flows(n: int) -> list[Packet]:
    """n UDP flows, flow i sending i + 1 packets, one packet per 10 ms in flow order."""
    packets = []
    t = 0.0
    for i in range(n):
        for _ in range(i + 1):
            packets.append((t, udp("10.3.0.1", 10000 + i, "10.3.0.2", 53, bytes(i))))
            t += 0.01
    return packets


def test_max_flows_caps_live_flows_and_counts_evictions() -> None:
    table = FlowTable(max_flows=4)
    table.update(decode_batch(batch(many_flows(10))))
    assert len(table.live) == 4
    assert table.evictions == 6
    ended = table.drain()
    assert [f.end_reason for f in ended] == [END_EVICTED] * 6
    # least recently seen go first: the six oldest flows, the four newest stay
    assert sorted(f.a_port for f in ended) == list(range(10000, 10006))
    assert sorted(f.a_port for f in table.live.values()) == list(range(10006, 10010))

    snap, flows = analyse(many_flows(10), max_flows=4)
    assert (snap.flows_total, snap.flow_evictions) == (10, 6)
    assert snap.flow_end_reasons == {END_EVICTED: 6, END_EOF: 4}
    assert sum(f.packets for f in flows) == snap.packets == 55


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 100])
def test_top_live_flows_rank_as_all_live_flows(limit: int) -> None:
    # flows of equal sizes (ties on bytes and packets) beside unequal ones
    packets = [(i * 0.001, udp("10.4.0.1", 20000 + i % 7, "10.4.0.2", 53, bytes(8 * (i % 3)))) for i in range(60)]
    packets += [(1.0 + i * 0.001, udp("10.4.0.3", 30000 + i, "10.4.0.4", 53, b"x")) for i in range(9)]
    table = FlowTable()
    table.update(decode_batch(batch(packets)))
    every = list(table.live.values())
    chosen = table.top(limit)
    assert len(chosen) < len(every) or limit >= len(every)
    assert [flow_tuple(f) for f in top_flows(chosen, limit)] == [flow_tuple(f) for f in top_flows(every, limit)]


def test_flush_at_a_later_clock_ends_idle_flows_as_idle() -> None:
    table = FlowTable(idle_timeout=10.0)
    table.update(decode_batch(batch(tcp_session("10.0.0.1", "10.0.0.2") + tcp_session("10.0.0.3", "10.0.0.2", 15.0))))
    table.flush(now_ns=table.now_ns + 5 * NS)
    assert [f.end_reason for f in table.drain()] == [END_IDLE, END_EOF]


def test_vlan_distinguishes_flows() -> None:
    packets = [(0.0, udp("10.4.0.1", 1000, "10.4.0.2", 2000, vlan=10)),
               (0.1, udp("10.4.0.1", 1000, "10.4.0.2", 2000, vlan=20)),
               (0.2, udp("10.4.0.2", 2000, "10.4.0.1", 1000, vlan=10)),
               (0.3, udp("10.4.0.1", 1000, "10.4.0.2", 2000))]
    snap, flows = analyse(packets)
    assert sorted((f.vlan, f.packets_ab, f.packets_ba) for f in flows) == [(0, 1, 0), (10, 1, 1), (20, 1, 0)]
    assert snap.flows_total == 3


# --- batch boundaries ------------------------------------------------------------------------------

def mixture() -> list[Packet]:
    """Interleaved traffic: two TCP sessions, a flow with an idle gap, a long flow, fragments, VLANs."""
    packets = tcp_session("10.0.0.1", "10.0.0.2", 0.0) + tcp_session("10.0.0.9", "10.0.0.2", 0.05)
    packets += [(t + 0.5, f) for t, f in gapped(15.0)]
    packets += [(t + 0.7, f) for t, f in steady(60, 3)]
    packets += [(0.3 + 0.001 * i, f) for i, f in enumerate(fragments("10.5.0.1", "10.5.0.2", 1))]
    packets += [(0.2 + 0.1 * v, udp("10.4.0.1", 1000, "10.4.0.2", 2000, vlan=v)) for v in range(1, 6)]
    return sorted(packets, key=lambda p: p[0])


IDLE_EXPIRY_ORDER = (
    "analyzers/flows.py FlowTable._expire_idle stops at the first live flow not idle, assuming `live` is "
    "ordered by last packet; but update() inserts a batch's segments in order of their FIRST packet, so a "
    "flow silent past the idle timeout, added after a long segment of the same batch, is not expired "
    "(it ends as 'end' instead of 'idle' in one batch, 'idle' in small batches)"
)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_batch_boundaries_do_not_change_the_counts(batch_size: int) -> None:
    options = {"idle_timeout": 10.0, "active_timeout": 20.0}
    whole = snapshot_view(analyse(mixture(), None, **options)[0])
    parts = snapshot_view(analyse(mixture(), batch_size, **options)[0])
    assert whole["totals"][0] == len(mixture())
    for key in whole.keys() - {"flows", "top_flows"}:
        assert parts[key] == whole[key], key
    assert whole["flows"][0] == 13  # 2 TCP sessions, 2 + 3 UDP flows cut by timeouts, 1 fragmented, 5 VLANs


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_batch_boundaries_do_not_change_the_flows(batch_size: int) -> None:
    options = {"idle_timeout": 10.0, "active_timeout": 20.0}
    whole, whole_flows = analyse(mixture(), None, **options)
    parts, part_flows = analyse(mixture(), batch_size, **options)
    assert whole.flow_end_reasons.keys() == {END_IDLE, END_ACTIVE, END_EOF}  # the mixture exercises them all
    assert sorted(map(flow_tuple, part_flows)) == sorted(map(flow_tuple, whole_flows))
    assert snapshot_view(parts) == snapshot_view(whole)


def test_batch_boundaries_do_not_change_the_flows_without_active_timeouts() -> None:
    # the mixture with nothing near the active timeout or the end-of-capture idle check
    packets = [p for p in mixture() if p[0] < 10.0]
    whole, whole_flows = analyse(packets, None, idle_timeout=10.0)
    for size in (1, 3, 7):
        parts, part_flows = analyse(packets, size, idle_timeout=10.0)
        assert sorted(map(flow_tuple, part_flows)) == sorted(map(flow_tuple, whole_flows)), size
        assert snapshot_view(parts) == snapshot_view(whole), size


def test_a_flow_silent_past_the_idle_timeout_ends_idle_in_one_batch() -> None:
    busy = [(float(t), udp("10.6.0.1", 1, "10.6.0.2", 2)) for t in range(31)]  # a packet a second, 0..30 s
    quiet = [(1.5, udp("10.6.0.3", 3, "10.6.0.4", 4)), (2.5, udp("10.6.0.3", 3, "10.6.0.4", 4))]
    _, flows = analyse(sorted(busy + quiet), None, idle_timeout=10.0)
    # at 30 s the quiet flow has been silent 27.5 s > 10 s: it ended idle, as it does in batches of 1
    assert {f.a_port: f.end_reason for f in flows} == {1: END_EOF, 3: END_IDLE}


# --- fragments ------------------------------------------------------------------------------------

def fragments(src: str, dst: str, ident: int) -> list[bytes]:
    """A 48-byte UDP datagram (port 5353 -> 53) sent as three IPv4 fragments of 16 bytes, in order."""
    datagram = struct.pack("!HHHH", 5353, 53, 48, 0) + bytes(range(40))
    return [ether(ipv4(src, dst, UDP, datagram[off : off + 16], ident, mf=off < 32, offset=off))
            for off in (0, 16, 32)]


def test_later_fragments_land_in_the_first_fragments_flow() -> None:
    snap, flows = analyse([(0.001 * i, f) for i, f in enumerate(fragments("10.5.0.1", "10.5.0.2", 7))])
    assert [(f.a_port, f.b_port, f.proto, f.packets) for f in flows] == [(5353, 53, UDP, 3)]
    assert snap.conversations() == {"ipv4": 1, "ipv6": 0, "tcp": 0, "udp": 1}


def test_incomplete_datagram_is_no_udp_conversation() -> None:
    first, _, last = fragments("10.5.0.1", "10.5.0.2", 7)
    snap, _ = analyse([(0.0, first), (0.1, last)])  # the middle fragment never came
    assert snap.conversations() == {"ipv4": 1, "ipv6": 0, "tcp": 0, "udp": 0}
    assert snap.packets == 2


def test_complete_datagram_counts_once() -> None:
    # two datagrams between the same ports, and a whole UDP packet of the same conversation
    frames = fragments("10.5.0.1", "10.5.0.2", 7) + fragments("10.5.0.1", "10.5.0.2", 8)
    frames.append(udp("10.5.0.2", 53, "10.5.0.1", 5353, b"reply"))
    snap, flows = analyse([(0.001 * i, f) for i, f in enumerate(frames)])
    assert snap.conversations()["udp"] == 1
    assert [(f.packets_ab, f.packets_ba) for f in flows] == [(6, 1)]


# --- Snapshot.absorb ------------------------------------------------------------------------------

def test_absorb_of_two_halves_equals_the_whole() -> None:
    # split as fanout workers do: by flow, so each flow is wholly in one half
    packets = mixture()
    frames = decode_batch(batch(packets))
    halves: tuple[list[Packet], list[Packet]] = ([], [])
    for (t, frame), row in zip(packets, frames):
        ports = sorted((int(row["sport"]), int(row["dport"])))
        halves[(ports[0] + ports[1] + int(row["vlan"])) % 2].append((t, frame))
    assert halves[0] and halves[1]
    options = {"idle_timeout": 10.0, "active_timeout": 20.0}
    whole, _ = analyse(packets, **options)
    merged = Snapshot(top_limit=1000)
    for half in halves:  # each half ends its flows at the merged clock, as live workers stop at one time
        merged.absorb(analyse(half, now_ns=whole.last_ns, **options)[0])
    assert snapshot_view(merged) == snapshot_view(whole)


# --- the flow table against a plain model of its rules ---------------------------------------------

class DictFlowTable:
    """The flow table's rules, one segment at a time over a dict kept in least-recently-updated order.

    A segment is a flow's run of packets in a batch, split where it was idle longer than the idle
    timeout; segments are taken in order of their last packet; a segment that takes its flow past the
    active timeout is taken one packet at a time. FlowTable must end the same flows, in the same order.
    """

    def __init__(self, idle: float, active: float, max_flows: int) -> None:
        self.idle_ns, self.active_ns, self.max_flows = int(idle * NS), int(active * NS), max_flows
        self.live: dict[int, list] = {}
        self.ended: list[tuple] = []
        self.now_ns = 0

    def update(self, rows, keys) -> None:
        fwd = [bool(x) for x in keys[1]]
        key = keys[0].tolist()
        ts = rows["ts_ns"].tolist()
        order = sorted(range(len(rows)), key=lambda i: (key[i], ts[i]))
        segs: list[list[int]] = []
        for i in order:
            if segs and key[segs[-1][-1]] == key[i] and ts[i] - ts[segs[-1][-1]] <= self.idle_ns:
                segs[-1].append(i)
            else:
                segs.append([i])
        for seg in sorted(segs, key=lambda s: ts[s[-1]]):
            flow = self.live.get(key[seg[0]])
            t0, t1 = ts[seg[0]], ts[seg[-1]]
            reach = flow[0] if flow is not None and t0 - flow[1] <= self.idle_ns else t0
            parts = [[i] for i in seg] if t1 - reach > self.active_ns else [seg]
            for part in parts:
                self._add(rows, key, fwd, ts, part)
        self.now_ns = max(self.now_ns, max(ts))
        while self.live:
            k = next(iter(self.live))
            if self.live[k][1] >= self.now_ns - self.idle_ns:
                break
            self._end(self.live.pop(k), END_IDLE)

    def _add(self, rows, key, fwd, ts, part) -> None:
        k, t0, t1 = key[part[0]], ts[part[0]], ts[part[-1]]
        flow = self.live.pop(k, None)
        if flow is not None and t0 - flow[1] > self.idle_ns:
            self._end(flow, END_IDLE)
            flow = None
        if flow is not None and t1 - flow[0] > self.active_ns:
            self._end(flow, END_ACTIVE)
            flow = None
        if flow is None:
            r = rows[part[0]]
            flow = [t0, t1, k, fwd[part[0]], r["src"].tobytes(), int(r["sport"]), r["dst"].tobytes(),
                    int(r["dport"]), [0, 0], [0, 0], [0, 0]]  # packets, bytes, flags: [lo, hi]
        for i in part:
            side = 0 if fwd[i] else 1
            flow[8][side] += 1
            flow[9][side] += int(rows["wire_len"][i])
            flow[10][side] |= int(rows["tcp_flags"][i])
        flow[0], flow[1] = min(flow[0], t0), max(flow[1], t1)
        self.live[k] = flow
        if len(self.live) > self.max_flows:
            self._end(self.live.pop(next(iter(self.live))), END_EVICTED)

    def _end(self, flow: list, reason: str) -> None:
        a = 0 if flow[3] else 1  # the counters' side of A
        self.ended.append((flow[2], flow[4], flow[5], flow[6], flow[7], flow[0], flow[1], flow[8][a],
                           flow[9][a], flow[8][1 - a], flow[9][1 - a], flow[10][a], flow[10][1 - a], reason))


def table_tuple(f: Flow) -> tuple:
    return (f.key, f.a_addr, f.a_port, f.b_addr, f.b_port, f.first_ns, f.last_ns, f.packets_ab, f.bytes_ab,
            f.packets_ba, f.bytes_ba, f.flags_ab, f.flags_ba, f.end_reason)


def random_traffic(seed: int, n: int, flows: int) -> list[Packet]:
    """Packets of `flows` TCP/UDP flows in both directions, time mostly rising, sometimes going back."""
    import random

    rng = random.Random(seed)
    ends = [(f"10.7.{i // 200}.{i % 200 + 1}", 1000 + i, "10.8.0.1", 80 + i % 3, TCP if i % 2 else UDP)
            for i in range(flows)]
    packets, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(2.0) if rng.random() > 0.02 else -rng.uniform(0, 8)  # a clock jump back
        i = min(int(rng.paretovariate(1.0)) - 1, flows - 1)
        a, sport, b, dport, proto = ends[i]
        if rng.random() < 0.4:
            a, sport, b, dport = b, dport, a, sport
        data = bytes(rng.randrange(40))
        frame = tcp(a, sport, b, dport, rng.choice([SYN, ACK, PSH | ACK, FIN]), data) if proto == TCP else \
            udp(a, sport, b, dport, data)
        packets.append((max(t, 0.0), frame))
    return packets


@pytest.mark.parametrize(("seed", "idle", "active", "max_flows"), [
    (1, 120.0, 1800.0, 1_000_000), (2, 3.0, 10.0, 1_000_000), (3, 3.0, 10.0, 8), (4, 0.5, 2.0, 3),
    (5, 1.0, 4.0, 12), (6, 2.0, 5.0, 1), (7, 5.0, 30.0, 15)])
def test_flow_table_ends_the_flows_of_the_plain_model_in_its_order(seed: int, idle: float, active: float,
                                                                   max_flows: int) -> None:
    import random

    from pktscope.analyzers.keys import combine, endpoint_keys

    packets = random_traffic(seed, 1500, 60)
    cols = decode_batch(batch(packets))
    src = endpoint_keys(cols["src"], cols["sport"])
    dst = endpoint_keys(cols["dst"], cols["dport"])
    meta = (cols["ip_version"].astype("u8") << 24) | (cols["proto"].astype("u8") << 16) | cols["vlan"].astype("u8")
    keys = (combine(np.minimum(src, dst), np.maximum(src, dst), meta), src <= dst)
    table, model = FlowTable(idle, active, max_flows), DictFlowTable(idle, active, max_flows)
    rng = random.Random(seed)
    at = 0
    while at < len(packets):
        size = rng.choice([1, 2, 5, 17, 64, 300])
        part = slice(at, at + size)
        table.update(cols[part], src[part], dst[part])
        model.update(cols[part], (keys[0][part], keys[1][part]))
        at += size
        assert list(table.live) == list(model.live)  # the same live flows, least recently updated first
    table.flush()
    for flow in model.live.values():
        model._end(flow, END_EOF)
    got = [table_tuple(f) for f in table.drain()]
    assert {r for *_, r in got} >= ({END_IDLE, END_EOF} if max_flows > 100 else {END_EVICTED})
    assert got == model.ended
    assert table.evictions == sum(r == END_EVICTED for *_, r in got)


@pytest.mark.parametrize(("seed", "idle", "active", "max_flows"), [
    (1, 120.0, 1800.0, 1_000_000), (2, 3.0, 10.0, 1_000_000), (3, 3.0, 10.0, 8), (4, 0.5, 2.0, 3)])
def test_the_key_index_holds_every_live_flow_at_its_slot(seed: int, idle: float, active: float,
                                                         max_flows: int) -> None:
    # new keys go in at the places the run's lookup found for them (no search again), unless evictions
    # took keys out of the index first
    import random

    packets = random_traffic(seed, 1500, 60)
    cols = decode_batch(batch(packets))
    table = FlowTable(idle, active, max_flows)
    rng = random.Random(seed)
    at = 0
    while at < len(packets):
        size = rng.choice([1, 2, 5, 17, 64, 300])
        table.update(cols[at : at + size])
        at += size
        keys, slots = table._index_keys, table._index_slots
        assert (keys[1:] > keys[:-1]).all()
        assert sorted(keys.tolist()) == sorted(table.live)
        assert (table._slots["key"][slots] == keys).all()


def test_grouping_order_is_a_stable_argsort_even_when_keys_share_their_high_bits() -> None:
    from pktscope.analyzers.keys import grouping_order as _grouping_order

    rng = np.random.default_rng(3)
    keys = rng.integers(0, 2**64 - 1, 50, dtype=np.uint64, endpoint=True)[rng.integers(0, 50, 5000)]
    assert (_grouping_order(keys) == np.argsort(keys, kind="stable")).all()
    clash = np.array([5, 4, 5, 4], dtype=np.uint64)  # equal above the two index bits, interleaved
    order = _grouping_order(clash)
    assert order is None or (order == np.argsort(clash, kind="stable")).all()
    assert _grouping_order(np.array([4, 4, 5, 5], dtype=np.uint64)).tolist() == [0, 1, 2, 3]


# --- counting per group of rows against counting row by row ---------------------------------------

def arp(i: int) -> bytes:
    """An Ethernet ARP request (no IP: counted in the link and network layers only)."""
    return bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28) + bytes([i % 256])


def varied_traffic(seed: int, n: int, flows: int, monotone: bool) -> list[Packet]:
    """`random_traffic` with some packets VLAN-tagged (a flow's direction in two link headers), some
    IPv6-free ARP frames, and the clock running forward only if `monotone`."""
    import random

    rng = random.Random(seed)
    packets = []
    for t, frame in random_traffic(seed, n, flows):
        if rng.random() < 0.05:
            packets.append((t, arp(rng.randrange(1000))))
        if rng.random() < 0.1 and frame[12:14] == b"\x08\x00":  # the same packet behind an 802.1Q tag
            frame = frame[:12] + struct.pack("!HH", 0x8100, 7) + frame[12:]
        packets.append((t, frame))
    return sorted(packets, key=lambda p: p[0]) if monotone else packets


def row_by_row(packets: list[Packet], batch_size: int, idle: float, active: float, max_flows: int) -> tuple:
    """What Analysis counts, counted row by row in dicts, and the flows FlowTable.update (the row-by-row
    path) ends, in order."""
    from pktscope.capture.linktypes import linktype_name
    from pktscope.decoders import protocols as p

    table = FlowTable(idle, active, max_flows)
    hosts: dict[bytes, list[int]] = {}
    ports: dict[tuple[int, int], list[int]] = {}
    layers: dict[str, dict[str, list[int]]] = {"l2": {}, "l3": {}, "l4": {}}
    convs: dict[str, set] = {"ipv4": set(), "ipv6": set(), "tcp": set(), "udp": set()}

    def count(layer: str, name: str, size: int) -> None:
        entry = layers[layer].setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += size

    for i in range(0, len(packets), batch_size):
        cols = decode_batch(batch(packets[i : i + batch_size]))
        for row in cols:
            size = int(row["wire_len"])
            count("l2", linktype_name(int(row["linktype"])), size)
            if row["encap"] & 1:
                count("l2", "802.1Q", size)
            count("l3", p.ethertype_name(int(row["ethertype"])), size)
            if row["ip_version"] == 0:
                continue
            count("l4", p.ip_proto_name(int(row["proto"])), size)
            src, dst = row["src"].tobytes(), row["dst"].tobytes()
            for addr, side in ((src, 0), (dst, 2)):
                entry = hosts.setdefault(addr, [0, 0, 0, 0])
                entry[side] += 1
                entry[side + 1] += size
            sport, dport, proto = int(row["sport"]), int(row["dport"]), int(row["proto"])
            entry = ports.setdefault((proto, min(sport, dport)), [0, 0])
            entry[0] += 1
            entry[1] += size
            convs["ipv4" if row["ip_version"] == 4 else "ipv6"].add(frozenset((src, dst)))
            convs["tcp" if proto == TCP else "udp"].add(frozenset(((src, sport), (dst, dport))))
        table.update(cols)
    table.flush()
    return hosts, ports, layers, {name: len(keys) for name, keys in convs.items()}, table.drain()


@pytest.mark.parametrize(("seed", "monotone", "idle", "active", "max_flows", "batch_size"), [
    (11, True, 1000.0, 4.0, 1_000_000, 400),  # time forward within the idle timeout: flows from groups, active cuts
    (12, True, 1000.0, 1800.0, 1_000_000, 1500),
    (13, True, 2.0, 6.0, 1_000_000, 300),  # batches longer than the idle timeout: rows sorted per batch
    (14, False, 3.0, 10.0, 1_000_000, 250),  # the clock going back
    (15, True, 1000.0, 5.0, 7, 200),  # evictions
    (16, False, 1.0, 4.0, 12, 64),
])
def test_counting_per_group_equals_counting_row_by_row(seed: int, monotone: bool, idle: float, active: float,
                                                       max_flows: int, batch_size: int) -> None:
    packets = varied_traffic(seed, 1500, 60, monotone)
    hosts, ports, layers, convs, flows = row_by_row(packets, batch_size, idle, active, max_flows)
    ended: list[Flow] = []
    analysis = Analysis(idle, active, max_flows, top=5, on_flow_end=ended.append)
    for i in range(0, len(packets), batch_size):
        analysis.feed(decode_batch(batch(packets[i : i + batch_size])))
    snap = analysis.finish()
    assert snap.hosts == hosts
    assert snap.ports == ports
    assert {"l2": snap.l2, "l3": snap.l3, "l4": snap.l4} == layers
    assert snap.conversations() == convs
    assert [table_tuple(f) for f in ended] == [table_tuple(f) for f in flows]
    assert [table_tuple(f) for f in snap.top_flows] == [table_tuple(f) for f in top_flows(flows, 5)]
    if max_flows < 100:
        assert snap.flow_evictions > 0


@pytest.mark.parametrize(("seed", "monotone", "idle", "active", "max_flows"), [
    (41, True, 3.0, 1800.0, 1_000_000), (42, False, 2.0, 4.0, 1_000_000), (43, True, 120.0, 1800.0, 9)])
def test_deltas_taken_between_batches_add_up_to_the_whole(seed: int, monotone: bool, idle: float, active: float,
                                                         max_flows: int) -> None:
    """A live worker's deltas, absorbed: its talkers are counted from its flows, the live ones as they
    grow and the ended ones less what was reported of them, so every packet is counted once."""
    packets = varied_traffic(seed, 1500, 40, monotone)
    whole = Analysis(idle, active, max_flows, top=1000)
    worker = Analysis(idle, active, max_flows, top=1000)
    merged = Snapshot(top_limit=1000)
    for i in range(0, len(packets), 70):
        cols = decode_batch(batch(packets[i : i + 70]))
        whole.feed(cols)
        worker.feed(cols)
        if i % 140 == 0:
            merged.absorb(worker.take_delta())
        elif i % 210 == 70:
            worker.snapshot()  # (a snapshot between deltas counts nothing twice)
    whole.finish()
    worker.finish()
    merged.absorb(worker.take_delta())
    assert merged.hosts and merged.flows_ended == whole.snap.flows_ended
    keep = ("totals", "linktypes", "status", "l2", "l3", "l4", "hosts", "ports", "conv_keys")
    view, expected = snapshot_view(merged), snapshot_view(whole.snap)
    assert {k: view[k] for k in keep} == {k: expected[k] for k in keep}


def fed_in_batches(packets: list, size: int = 300) -> tuple[dict, list]:
    """The snapshot and the ended flows (in order) of an analysis fed `size` frames at a time."""
    ended: list[Flow] = []
    analysis = Analysis(on_flow_end=ended.append, top=1000)
    for i in range(0, len(packets), size):
        analysis.feed(decode_batch(batch(packets[i : i + size])))
    return snapshot_view(analysis.finish()), [table_tuple(f) for f in ended]


def test_grouping_is_exact_when_the_hash_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    from pktscope.analyzers import fields

    packets = varied_traffic(21, 800, 40, True)

    expected = fed_in_batches(packets)
    # a hash of a few values: groups of many tuples, split by the word-by-word check
    monkeypatch.setattr(fields, "tuple_hash", lambda words: (words[0] & np.uint64(3)) << np.uint64(62))
    assert fed_in_batches(packets) == expected
    words = fields.tuple_words(fields.Fields(decode_batch(batch(packets))))
    order, starts = fields.group_rows(words)
    assert (order == np.lexsort(words[::-1])).all()
    tuples = [tuple(int(w[i]) for w in words) for i in order.tolist()]
    assert starts.tolist() == [i for i in range(len(tuples)) if i == 0 or tuples[i] != tuples[i - 1]]


def test_grouping_is_exact_when_hashes_share_their_high_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    from pktscope.analyzers import fields

    packets = varied_traffic(23, 900, 40, True)

    expected = fed_in_batches(packets)
    words = fields.tuple_words(fields.Fields(decode_batch(batch(packets))))
    plain = fields.group_rows(words)
    # hashes that differ in their low bits only: the packed sort sees one run of high bits
    monkeypatch.setattr(fields, "tuple_hash", lambda words: words[0] & np.uint64(0xFFFF))
    assert fed_in_batches(packets) == expected
    order, starts = fields.group_rows(words)
    tuples = [tuple(int(w[i]) for w in words) for i in order.tolist()]
    assert starts.tolist() == [i for i in range(len(tuples)) if i == 0 or tuples[i] != tuples[i - 1]]
    assert len(set(tuples)) == len(starts)  # a tuple's rows are all in its group
    groups = np.split(order, starts[1:])
    assert all((g[1:] > g[:-1]).all() for g in groups)  # in row order
    assert sorted(g.tolist() for g in groups) == sorted(g.tolist() for g in np.split(plain[0], plain[1][1:]))


def test_grouping_tells_rows_apart_by_a_word_that_varies_only_after_its_first_rows() -> None:
    from pktscope.analyzers import fields

    n = 1000
    late = np.zeros(n, dtype=np.uint64)
    late[700:] = 5  # constant over the first rows, which `_constant` looks at first
    same = np.full(n, 9, dtype=np.uint64)
    order, starts = fields.group_rows([same, late])
    assert starts.tolist() == [0, 700] or starts.tolist() == [0, 300]
    assert min(np.split(order, starts[1:]), key=len).tolist() == list(range(700, n))
    assert fields.group_rows([same, same])[1].tolist() == [0]  # every word constant: one group


def test_snapshot_leaves_the_garbage_collector_as_it_was() -> None:
    import gc

    analysis = Analysis()
    analysis.feed(decode_batch(batch(varied_traffic(24, 200, 10, True))))
    assert gc.isenabled()
    analysis.snapshot()
    assert gc.isenabled()
    gc.disable()
    try:
        analysis.finish()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_fields_hold_the_rows_fields() -> None:
    from pktscope.analyzers.fields import Fields

    packets = varied_traffic(22, 5000, 50, False) + [(0.5, f) for f in fragments("10.5.0.1", "10.5.0.2", 3)]
    cols = decode_batch(batch(packets))
    f = Fields(cols)  # 5000+ rows: more than one block
    u = np.uint64
    assert (f.ts == cols["ts_ns"]).all() and (f.wire() == cols["wire_len"]).all()
    assert f.cap_sum() == int(cols["cap_len"].sum())
    assert ((f.link & u(0xFFFF)) == cols["linktype"]).all() and (f.ethertype() == cols["ethertype"]).all()
    assert (((f.link >> u(32)) & u(0xFFFF)) == cols["vlan"]).all() and (f.ip_version() == cols["ip_version"]).all()
    assert (((f.link >> u(48)) & u(0xFF)) == cols["encap"]).all()
    assert ((f.pf & 0xFF) == cols["proto"]).all() and (f.flags() == cols["tcp_flags"]).all()
    assert (np.stack([f.s0, f.s1], 1).astype("<u8").view(np.uint8) == cols["src"]).all()
    assert (np.stack([f.d0, f.d1], 1).astype("<u8").view(np.uint8) == cols["dst"]).all()
    assert ((f.ports & u(0xFFFF)) == cols["sport"]).all() and (((f.ports >> u(16)) & u(0xFFFF)) == cols["dport"]).all()
    assert (f.frag() == cols["frag"]).all() and (f.depth() == cols["depth"]).all()
    assert (f.status() == cols["status"]).all()


def test_a_strided_batch_counts_as_a_contiguous_one() -> None:
    packets = mixture()
    cols = decode_batch(batch(packets))
    whole = Analysis(top=1000)
    whole.feed(cols.copy())
    strided = Analysis(top=1000)
    strided.feed(cols[::2])
    strided.feed(cols[1::2])
    assert snapshot_view(strided.finish())["hosts"] == snapshot_view(whole.finish())["hosts"]
    assert strided.snap.packets == whole.snap.packets and strided.snap.conv_keys == whole.snap.conv_keys


def test_talkers_sum_every_address_exactly() -> None:
    from pktscope.analyzers import fields
    from pktscope.analyzers.analysis import _Talkers

    rng = np.random.default_rng(5)
    pool = rng.integers(0, 256, (3000, 16), dtype=np.uint8)
    pool[:1000, :12] = np.frombuffer(b"\0" * 10 + b"\xff\xff", dtype=np.uint8)  # IPv4-mapped: one constant word
    talkers, model = _Talkers(), {}
    for size in (10, 3000, 1, 20000):
        addrs = pool[rng.integers(0, len(pool), size)]
        counts = rng.integers(-5, 100, (size, 4))
        talkers.add(addrs.view("<u8"), counts)
        for a, c in zip((bytes(row) for row in addrs), counts.tolist()):
            entry = model.setdefault(a, [0, 0, 0, 0])
            for j in range(4):
                entry[j] += c[j]
    addrs, counts = talkers.take()
    assert dict(zip((bytes(a) for a in addrs), counts.tolist())) == model and len(addrs) == len(model)
    assert len(talkers.take()[0]) == 0
    # a hash of a few values: addresses apart all the same (grouped by their words, not their hash)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fields, "tuple_hash", lambda words: words[0] & np.uint64(1))
        talkers.add(pool.view("<u8"), np.ones((len(pool), 4), dtype=np.int64))
        addrs, counts = talkers.take()
    assert len(addrs) == len({bytes(a) for a in pool}) and (counts == 1).all()


def test_stable_order_is_a_stable_argsort() -> None:
    from pktscope.analyzers.keys import stable_order

    rng = np.random.default_rng(8)
    for values in (rng.integers(-5, 5, 1000), rng.integers(-(2**62), 2**62, 1000),
                   T0 + rng.integers(0, 50, 3000) * NS, np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]),
                   rng.integers(0, 2**64 - 1, 40, dtype=np.uint64, endpoint=True)[rng.integers(0, 40, 2000)],
                   np.zeros(0, dtype=np.int64), np.array([3])):
        assert (stable_order(values) == np.argsort(values, kind="stable")).all()


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_top_flows_of_small_limits_are_those_of_every_ended_flow(limit: int) -> None:
    packets = varied_traffic(31, 1200, 80, True)
    ended: list[Flow] = []
    analysis = Analysis(idle_timeout=2.0, active_timeout=5.0, top=limit, on_flow_end=ended.append)
    plain = Analysis(idle_timeout=2.0, active_timeout=5.0, top=limit)
    for i in range(0, len(packets), 50):
        analysis.feed(decode_batch(batch(packets[i : i + 50])))
        plain.feed(decode_batch(batch(packets[i : i + 50])))
    expected = [table_tuple(f) for f in top_flows(ended, limit)]
    assert [table_tuple(f) for f in analysis.finish().top_flows] == expected
    assert [table_tuple(f) for f in plain.finish().top_flows] == expected


def test_key_set_holds_the_distinct_keys_of_every_part() -> None:
    from pktscope.analyzers.snapshot import KeySet

    rng = np.random.default_rng(9)
    keys = KeySet()
    assert keys.keys().tolist() == [] and len(keys) == 0
    model: set[int] = set()
    halves = KeySet(), KeySet()
    for i, size in enumerate((1, 0, 5000, 300000, 7, 200000)):  # parts with repeats, some past the merge threshold
        part = rng.integers(0, 50000 if size < 100000 else 2**64 - 1, size, dtype=np.uint64, endpoint=True)
        part = np.concatenate([part, part[: size // 3]])
        keys.add(part)
        halves[i % 2].add(part)
        model.update(part.tolist())
    assert keys.keys().tolist() == sorted(model) and len(keys) == len(model)
    keys.add(np.array([5, 5, 3], dtype=np.uint64))  # a raw part after a merge
    assert len(keys) == len(model | {3, 5})
    halves[0].update(halves[1])  # (absorbing a delta)
    assert halves[0] == KeySet(np.array(sorted(model), dtype=np.uint64)) and halves[0] != keys
    assert KeySet(np.array([5, 5, 3], dtype=np.uint64)).keys().tolist() == [3, 5]  # one raw part alone


def test_counted_equals_bincounts_for_one_two_and_more_values() -> None:
    from pktscope.analyzers.analysis import _counted

    def reference(values: np.ndarray, sizes: np.ndarray, packets: np.ndarray | None) -> list:
        seen = np.bincount(values, weights=packets)
        nbytes = np.bincount(values, weights=sizes)
        uniq = np.flatnonzero(seen)
        return [uniq.tolist(), seen[uniq].astype(np.int64).tolist(), nbytes[uniq].astype(np.int64).tolist()]

    rng = np.random.default_rng(10)
    for choices in ([0x0800], [0x86DD, 0x0800], [0x0800, 0x86DD], [3, 0], [0x0800, 0x86DD, 0x8100], [7, 1, 7, 7]):
        for n in (1, 2, 50):
            values = np.array(choices * n, dtype=np.uint64)[:max(n, len(choices))]
            rng.shuffle(values)
            sizes = rng.integers(60, 1500, len(values))
            for packets in (None, rng.integers(1, 9, len(values)), rng.integers(0, 2, len(values))):
                got = [a.tolist() for a in _counted(values, sizes, packets)]
                want = reference(values.astype(np.intp), sizes, packets)
                if len(set(values.tolist())) == 1:  # one value: counted even with no packets
                    want = [values[:1].tolist(), [len(values) if packets is None else int(packets.sum())],
                            [int(sizes.sum())]]
                assert got == want, (choices, n, packets)


def test_flow_table_growth_keeps_the_live_records() -> None:
    from pktscope.analyzers.flows import _SLOT_DTYPE

    table = FlowTable()
    slots = table._alloc(1000)
    rng = np.random.default_rng(7)
    records = np.zeros(1000, dtype=_SLOT_DTYPE)
    records.view(np.uint8).reshape(1000, -1)[:] = rng.integers(0, 256, (1000, _SLOT_DTYPE.itemsize), dtype=np.uint8)
    table._slots[slots] = records
    more = table._alloc(5000)  # grows the storage
    assert len(table._slots) >= 6000 and len(np.unique(np.concatenate([slots, more]))) == 6000
    assert table._slots[:1000].tobytes() == records.tobytes()
    assert not table._slots[1000:].view(np.uint8).any()


def test_a_flushed_table_takes_flows_again() -> None:
    table = FlowTable(idle_timeout=10.0)
    table.update(decode_batch(batch(tcp_session("10.0.0.1", "10.0.0.2") + tcp_session("10.0.0.3", "10.0.0.2"))))
    table.flush()
    assert len(table.live) == 0 and len(table._index_keys) == 0 and len(table.drain()) == 2
    table.update(decode_batch(batch(tcp_session("10.0.0.1", "10.0.0.2", 100.0) + tcp_session("10.0.0.4", "10.0.0.2", 100.0))))
    assert len(table.live) == 2 and len(table._index_keys) == 2
    assert all(table.live[key].key == key for key in table.live)  # found through the index
    table.update(decode_batch(batch(tcp_session("10.0.0.1", "10.0.0.2", 200.0))))  # the first ends idle
    ended = table.drain()
    assert [f.end_reason for f in ended] == [END_IDLE, END_IDLE] and len(table.live) == 1


def test_hosts_held_as_arrays_read_and_rank_as_the_dict() -> None:
    from pktscope.app.report import _host_rows

    snap, _ = analyse(varied_traffic(31, 600, 40, True))
    assert snap.host_arrays() is not None  # a finished capture holds its talkers as arrays
    tops = (0, 1, 3, 7, 10**6)
    held = {(sort, top): _host_rows(snap, sort, top) for sort in ("bytes", "packets") for top in tops}
    assert snap.host_arrays() is not None  # ranking them did not make the dict
    hosts = snap.hosts
    assert snap.host_arrays() is None and len(hosts) > 7
    assert held == {(sort, top): _host_rows(snap, sort, top) for sort in ("bytes", "packets") for top in tops}
    # ties across the cut: the arrays rank as the dict does, ties by address
    rng = np.random.default_rng(5)
    addrs = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    counts = rng.integers(0, 3, (300, 4)).astype(np.int64)
    tied = Snapshot()
    assert tied.hold_hosts(addrs, counts) and not tied.hold_hosts(addrs, counts)  # (once, to an empty table)
    plain = Snapshot(hosts={bytes(a): c for a, c in zip(addrs.tolist(), counts.tolist())})
    for sort in ("bytes", "packets"):
        for top in (1, 10, 50, 299, 300):
            assert _host_rows(tied, sort, top) == _host_rows(plain, sort, top)
    assert tied == plain and tied.host_arrays() is None


def test_snapshots_taken_along_the_way_add_to_the_held_hosts() -> None:
    packets = varied_traffic(37, 800, 40, True)
    whole, _ = analyse(packets)
    analysis = Analysis(top=1000)
    for i in range(0, len(packets), 200):
        analysis.feed(decode_batch(batch(packets[i : i + 200])))
        analysis.snapshot()  # a first fold holds the arrays, the next ones add to the dict made of them
    assert analysis.finish().hosts == whole.hosts


@pytest.mark.parametrize("longest", [1, 2, 4])
@pytest.mark.parametrize("ordered", [False, True])
def test_runs_reduce_as_reduceat_and_find_each_runs_smallest(longest: int, ordered: bool) -> None:
    from pktscope.analyzers.flows import _Runs

    rng = np.random.default_rng(longest)
    sizes = rng.integers(1, longest + 1, 500)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n = int(sizes.sum())
    order = rng.permutation(n) if ordered else np.arange(n)  # the runs are of values[order]
    runs = _Runs(starts, n, order) if ordered else _Runs(starts, n)
    assert runs.pairs == (longest <= 2)
    values = rng.permutation(n).astype(np.int64)  # distinct
    flags = rng.integers(0, 1 << 16, n).astype(np.uint16)
    for ufunc, v in ((np.add, values), (np.minimum, values), (np.maximum, values), (np.bitwise_or, flags)):
        got = runs.reduce(ufunc, v)
        assert got.dtype == v.dtype and (got == ufunc.reduceat(v[order], starts)).all()
    smallest = [order[s + int(np.argmin(values[order][s : s + k]))] for s, k in zip(starts.tolist(), sizes.tolist())]
    assert runs.argmin(values).tolist() == smallest
