"""Analysis: Columns in, Snapshot out. Keeps the state of one capture (or one live worker)."""

from __future__ import annotations

import copy
import gc
import heapq
from collections.abc import Callable

import numpy as np

from pktscope.analyzers.fields import Fields, group_rows, tuple_words
from pktscope.analyzers.flows import (
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FLOWS,
    END_REASONS,
    Flow,
    FlowTable,
    flow_sizes,
    flows_of,
    take_records,
    top_candidates,
)
from pktscope.analyzers.fragments import FragmentTracker
from pktscope.analyzers.keys import combine, endpoint_keys, extend, pair_keys
from pktscope.analyzers.snapshot import Snapshot, top_flows
from pktscope.capture.batch import Batch
from pktscope.capture.linktypes import linktype_name
from pktscope.decoders import protocols as p
from pktscope.decoders.columns import (
    DEPTH_LINK,
    DEPTH_NETWORK,
    DEPTH_TRANSPORT,
    ENCAP_LLC,
    ENCAP_MPLS,
    ENCAP_PPPOE,
    ENCAP_QINQ,
    ENCAP_VLAN,
    FRAG_NONE,
    STATUS_NAMES,
    STATUS_OK,
    take_rows,
)
from pktscope.decoders.tunnels import (
    ETH_P_MACSEC,
    IP_PROTO_TUNNELS,
    UDP_TUNNEL_PORTS,
    tunnel_layers,
    tunnel_rows,
)

_ENCAP_NAMES = ((ENCAP_VLAN, "802.1Q"), (ENCAP_QINQ, "802.1ad (QinQ)"), (ENCAP_MPLS, "MPLS"),
                (ENCAP_PPPOE, "PPPoE"), (ENCAP_LLC, "802.2 LLC"))
_PORT_PROTOS = (p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP)


# the ports tally counts in a table indexed by (the protocol's place here) << 16 | port
_PORT_SLOT = np.full(256, len(_PORT_PROTOS), dtype=np.int64)
_PORT_SLOT[list(_PORT_PROTOS)] = np.arange(len(_PORT_PROTOS))
_NO_PORT = len(_PORT_PROTOS) << 16  # the bin of rows without a service port

# what a flow tuple says about a tunnel (a superset of `tunnel_rows`): 1 a tunnel protocol, 2 UDP (the
# ports tell)
_TUNNEL_KIND = np.zeros(256, dtype=np.uint8)
_TUNNEL_KIND[list(IP_PROTO_TUNNELS)] = 1
_TUNNEL_KIND[p.IPPROTO_UDP] = 2
_TUNNEL_PORT = np.zeros(1 << 16, dtype=bool)
_TUNNEL_PORT[UDP_TUNNEL_PORTS] = True

_M16 = np.uint64(0xFFFF)
_ENCAP_BITS = 5  # the encap bits that have a name (_ENCAP_NAMES)
assert all(bit < 1 << _ENCAP_BITS for bit, _ in _ENCAP_NAMES)


def _counted(values: np.ndarray, sizes: np.ndarray,
             packets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct small non-negative integers (ascending), packets and bytes of each: bincounts, no sort.

    Per row (`sizes` bytes each), or per group of rows (`packets` rows of `sizes` bytes in all)."""
    values = values.astype(np.intp)
    if len(values) and (values == values[0]).all():  # one value (a link type): no bincount
        return values[:1], np.array([len(values) if packets is None else int(packets.sum())]), np.array(
            [int(sizes.sum())])
    if len(values):  # two values (IPv4 and IPv6 EtherTypes): the sums of one and of the other, no bincount
        other = values != values[0]
        second = values[int(np.argmax(other))]
        pk1 = pk0 = 0
        if not (other & (values != second)).any():
            pk1 = int(other.sum()) if packets is None else int(packets[other].sum())
            pk0 = (len(values) if packets is None else int(packets.sum())) - pk1
        if pk0 and pk1:  # (a value of no packets is left out: the bincounts' way)
            by1 = int(sizes[other].sum())
            by0 = int(sizes.sum()) - by1
            if second < values[0]:
                return np.array([second, values[0]]), np.array([pk1, pk0]), np.array([by1, by0])
            return np.array([values[0], second]), np.array([pk0, pk1]), np.array([by0, by1])
    seen = np.bincount(values, weights=packets)
    nbytes = np.bincount(values, weights=sizes)  # float64: exact below 2^53 bytes
    uniq = np.flatnonzero(seen)
    return uniq, seen[uniq].astype(np.int64), nbytes[uniq].astype(np.int64)


class _Groups:
    """A batch's IP rows grouped by directed flow tuple (address, port, address, port, IP version,
    protocol, VLAN) and link (link type, EtherType, encapsulation bits), and per group what the analyzers
    count: they count per group, not per row. A flow's direction is one group as a rule, more when its
    packets differ in their link headers (a flow key collision too makes groups of one key).

    `first`/`last` are the groups' first and last rows (indices into the IP rows); the tuple's fields
    (`version`, `proto`, `sport`, `dport`, `link` and the addresses' words) are their first rows';
    `packets`, `bytes` and `flags` (TCP, OR) their sums; endpoint keys and flow keys (`key`, `fwd`) as
    `keys` and `FlowTable` compute them per row.
    """

    def __init__(self, f: Fields, wire: np.ndarray) -> None:
        n = len(f.ts)
        self.n = n
        self.order, starts = group_rows(tuple_words(f))
        self.starts = starts
        self.first = self.order[starts]
        self.last = self.order[np.append(starts[1:], n) - 1]
        self.packets = np.diff(starts, append=n)
        # np.take: a fraction faster than fancy indexing; the flags' OR of the proto | flags << 8 words,
        # shifted after (an OR is bitwise), not of the flags cut out of every row first
        self.bytes = np.add.reduceat(np.take(wire, self.order), starts)
        self.flags = (np.bitwise_or.reduceat(np.take(f.pf, self.order), starts) >> np.uint16(8)).astype(np.uint8)
        first = self.first
        self.link = link = f.link[first]
        self.version = link >> np.uint64(56)
        self.proto = f.pf[first] & np.uint16(0xFF)
        ports = f.ports[first]
        self.sport = ports & np.uint64(0xFFFF)
        self.dport = (ports >> np.uint64(16)) & np.uint64(0xFFFF)
        self.src_words = f.s0[first], f.s1[first]  # the addresses' bytes as little-endian words
        self.dst_words = f.d0[first], f.d1[first]
        # `endpoint_keys` of the addresses: of their bytes as big-endian words
        self.src_host = combine(*(w.byteswap() for w in self.src_words))
        self.dst_host = combine(*(w.byteswap() for w in self.dst_words))
        self.src_end = extend(self.src_host, self.sport)
        self.dst_end = extend(self.dst_host, self.dport)
        self.fwd = self.src_end <= self.dst_end  # the tuple goes from the flow key's "lo" end to "hi"
        meta = (self.version << np.uint64(24)) | (self.proto.astype(np.uint64) << np.uint64(16)) | (
            (link >> np.uint64(32)) & np.uint64(0xFFFF))
        self.ends = pair_keys(self.src_end, self.dst_end)  # the conversation of the tuple's (address, port) pair
        self.key = extend(self.ends, meta)  # = combine(lo end, hi end, meta)

    def __len__(self) -> int:
        return len(self.starts)

    def any_row(self, rows: np.ndarray) -> np.ndarray:
        """Per group: whether any of its rows is among `rows` (a bool per IP row)."""
        if rows.all():
            return np.ones(len(self.starts), dtype=bool)
        return np.logical_or.reduceat(rows[self.order], self.starts)

    def row_groups(self) -> np.ndarray:
        """The group of each IP row."""
        gid = np.empty(self.n, dtype=np.intp)
        gid[self.order] = np.repeat(np.arange(len(self.starts)), self.packets)
        return gid


class _Talkers:
    """Sent and received packets and bytes per address, gathered a call at a time as numpy arrays and
    summed per address when taken: one grouping of every address given since the last take (exact, by
    the address's words: `group_rows`), rather than a lookup per call."""

    def __init__(self) -> None:
        self._words: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []

    def add(self, words: np.ndarray, counts: np.ndarray) -> None:
        """Count 16-byte addresses, given as rows of two little-endian uint64 words (repeats allowed): a
        row of counts each (int64: sent packets, sent bytes, received packets, received bytes)."""
        self._words.append(words)
        self._counts.append(counts)

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct addresses (uint8 rows of 16) since the last take and their counts summed; then
        start afresh."""
        if not self._words:
            return np.zeros((0, 16), dtype=np.uint8), np.zeros((0, 4), dtype=np.int64)
        words, counts = np.concatenate(self._words), np.concatenate(self._counts)
        self._words, self._counts = [], []
        order, starts = group_rows([np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])])
        # rows gathered whole (a void view, np.take on axis 0): fancy indexing goes element by element
        addrs = words.view("V16").ravel()[order[starts]].view(np.uint8).reshape(-1, 16)
        counts = np.take(counts, order, axis=0)
        # most addresses are one flow's end: the sums of the rest only (reduceat pays per group)
        sizes = np.diff(starts, append=len(order))
        sums = np.take(counts, starts, axis=0)
        more = np.flatnonzero(sizes > 1)
        if len(more):
            at = np.zeros(len(more), dtype=np.intp)
            np.cumsum(sizes[more][:-1], out=at[1:])
            sums[more] = np.add.reduceat(np.compress(np.repeat(sizes > 1, sizes), counts, axis=0), at, axis=0)
        return addrs, sums


def _sum_by(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[list[int], list[int], list[int]]:
    """`_counted` results (values, packets, bytes) summed per value, values ascending."""
    if len(parts) == 1:
        return parts[0][0].tolist(), parts[0][1].tolist(), parts[0][2].tolist()
    sums: dict[int, list[int]] = {}
    for values, packets, nbytes in parts:
        for v, pk, by in zip(values.tolist(), packets.tolist(), nbytes.tolist()):
            entry = sums.setdefault(v, [0, 0])
            entry[0] += pk
            entry[1] += by
    keys = sorted(sums)
    return keys, [sums[k][0] for k in keys], [sums[k][1] for k in keys]


def _count_into(table: dict, names: list, packets: np.ndarray | list[int], nbytes: np.ndarray | list[int]) -> None:
    if isinstance(packets, np.ndarray):
        packets, nbytes = packets.tolist(), np.asarray(nbytes).tolist()
    for name, pk, by in zip(names, packets, nbytes):
        entry = table.get(name)
        if entry is None:
            table[name] = [pk, by]
        else:
            entry[0] += pk
            entry[1] += by


def _reaches(top: list[Flow], limit: int, nbytes: np.ndarray, packets: np.ndarray, first_ns: np.ndarray) -> np.ndarray:
    """Which flows rank at or above the `limit`-th of `top` by (bytes, packets, first_ns) or by (packets,
    bytes, first_ns) (a bool per flow): the others can be in neither of `top_flows(top + them)`'s rankings."""
    reach = np.zeros(len(nbytes), dtype=bool)
    for major, minor, rank in ((nbytes, packets, lambda f: (f.bytes, f.packets, f.first_ns)),
                               (packets, nbytes, lambda f: (f.packets, f.bytes, f.first_ns))):
        m, k, t = heapq.nlargest(limit, map(rank, top))[-1]
        reach |= (major > m) | ((major == m) & ((minor > k) | ((minor == k) & (first_ns >= t))))
    return reach


class Analysis:
    """All analyzers of one capture: flows, talkers, ports, protocols, conversations."""

    def __init__(
        self,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
        top: int = 100,
        on_flow_end: Callable[[Flow], None] | None = None,
    ) -> None:
        self.flows = FlowTable(idle_timeout, active_timeout, max_flows)
        self.fragments = FragmentTracker()
        self.on_flow_end = on_flow_end
        self.snap = Snapshot(top_limit=top)
        self._ended: list[Flow] = []
        self._evictions_taken = 0
        self._talkers = _Talkers()
        self._port_packets = np.zeros(_NO_PORT, dtype=np.int64)  # _PORT_SLOT[proto] << 16 | port
        self._port_bytes = np.zeros(_NO_PORT, dtype=np.int64)
        self._l4_packets = np.zeros(256, dtype=np.int64)  # per IP protocol number
        self._l4_bytes = np.zeros(256, dtype=np.int64)
        self._inner_fragments = FragmentTracker()  # IP fragments inside tunnels (conversations only)

    def feed(self, cols: np.ndarray, batch: Batch | None = None) -> None:
        """Account one decoded batch; given the Batch too, conversations inside tunnels are counted.

        The rows' fields are read once (`Fields`); the IP rows are grouped by directed flow tuple once
        (`_Groups`) and link layers, conversations and flows are counted per group; talkers, ports and IP
        protocols from the flows (`_count_flows`).
        """
        if len(cols) == 0:
            return
        completed = None
        if not cols.flags.c_contiguous:
            completed = self.fragments.process(cols)  # fills later fragments' ports first
            cols = np.ascontiguousarray(cols)
        f = Fields(cols)
        s = self.snap
        wire = f.wire()
        s.packets += len(cols)
        s.bytes += int(wire.sum())
        s.captured_bytes += f.cap_sum()
        lo, hi = int(f.ts.min()), int(f.ts.max())
        s.first_ns = lo if s.first_ns is None else min(s.first_ns, lo)
        s.last_ns = hi if s.last_ns is None else max(s.last_ns, hi)
        status = f.status()
        if (status != STATUS_OK).any():
            for code, count in enumerate(np.bincount(status, minlength=len(STATUS_NAMES)).tolist()):
                if count and code != STATUS_OK:
                    s.status[STATUS_NAMES[code]] = s.status.get(STATUS_NAMES[code], 0) + count
        frag = f.frag()
        if completed is None:
            fragments = np.flatnonzero(frag != FRAG_NONE)
            completed = self.fragments.process(cols, fragments)  # fills later fragments' ports first
            if len(fragments):
                f.reread_ports(cols, fragments)

        depth = f.depth()
        ip_rows = (f.ip_version() != 0) & (depth >= DEPTH_NETWORK)
        every_ip = bool(ip_rows.all())
        ip_index = None if every_ip else np.flatnonzero(ip_rows)
        ip_f, ip_wire, ip_depth, ip_frag = f, wire, depth, frag
        if ip_index is not None:
            ip_f, ip_wire, ip_depth, ip_frag = f.take(ip_index), wire[ip_index], depth[ip_index], frag[ip_index]
        g = _Groups(ip_f, ip_wire) if len(ip_wire) else None
        ethertypes = self._protocols(f, wire, depth, ip_rows, g)
        self._conversations(g, (ip_depth >= DEPTH_TRANSPORT) & (ip_frag == FRAG_NONE), completed)
        if batch is not None and self._may_tunnel(g, ethertypes):
            self._tunnel_conversations(batch, cols)
        if g is not None:
            self.flows.update_groups(cols, ip_index, ip_f.ts, ip_wire, ip_f.flags, g)
        self._collect_ended()

    def _protocols(self, f: Fields, wire: np.ndarray, depth: np.ndarray, ip_rows: np.ndarray,
                   g: _Groups | None) -> list[int]:
        """Link types, encapsulations and EtherTypes (of the rows with a link header, returned): of the
        IP rows per group (they have a link header), of the others per row."""
        s = self.snap
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]] = []  # link, bytes, packets, linked
        if g is not None:
            parts.append((g.link, g.bytes, g.packets, np.ones(len(g), dtype=bool)))
        if not ip_rows.all():  # rows without IP
            rest = ~ip_rows
            parts.append((f.link[rest], wire[rest], None, depth[rest] >= DEPTH_LINK))
        links: list[tuple] = []
        encaps: list[tuple] = []
        ethertypes: list[tuple] = []
        for link, nbytes, packets, linked in parts:
            links.append(_counted(link & _M16, nbytes, packets))
            encap = (link >> np.uint64(48)) & np.uint64(0xFF)
            if encap.any():
                encaps.append(_counted(encap, nbytes, packets))
            if linked.all():
                ethertypes.append(_counted((link >> np.uint64(16)) & _M16, nbytes, packets))
            elif linked.any():
                ethertypes.append(_counted(((link >> np.uint64(16)) & _M16)[linked], nbytes[linked],
                                           None if packets is None else packets[linked]))
        uniq, pk, by = _sum_by(links)
        for link, count in zip(uniq, pk):
            s.linktypes[link] = s.linktypes.get(link, 0) + count
        _count_into(s.l2, [linktype_name(v) for v in uniq], pk, by)
        if encaps:  # counted per combination of bits (a handful), then summed per bit
            combos, pk, by = _sum_by(encaps)
            for bit, name in _ENCAP_NAMES:
                tagged = [i for i, c in enumerate(combos) if c & bit]
                if tagged:
                    _count_into(s.l2, [name], [sum(pk[i] for i in tagged)], [sum(by[i] for i in tagged)])
        if not ethertypes:
            return []
        uniq, pk, by = _sum_by(ethertypes)
        _count_into(s.l3, [p.ethertype_name(v) if v else "none" for v in uniq], pk, by)
        return uniq

    def _conversations(self, g: _Groups | None, whole: np.ndarray, completed: np.ndarray) -> None:
        """tshark's conversations: address pairs of IP rows, (address, port) pairs of whole TCP/UDP rows
        (`whole`, a bool per IP row) and of the datagrams reassembled from fragments (`completed`)."""
        proto = np.zeros(0, dtype=np.uint8)
        ends = np.zeros(0, dtype=np.uint64)
        if g is not None:
            hosts = pair_keys(g.src_host, g.dst_host)
            version = g.version
            for v, name in ((4, "ipv4"), (6, "ipv6")):
                # (np.compress: a boolean index branches on every element, slow on masks of no pattern)
                keys = np.compress(version == v, hosts)
                if len(keys):
                    self.snap.conv_keys[name].add(keys)
            with_whole = g.any_row(whole)
            proto = g.proto[with_whole]
            ends = g.ends[with_whole]
        self._add_ends(proto, ends, completed)

    def _add_ends(self, proto: np.ndarray, ends: np.ndarray, completed: np.ndarray) -> None:
        if len(completed):
            proto = np.concatenate([proto, completed["proto"]])
            ends = np.concatenate([ends, pair_keys(endpoint_keys(completed["src"], completed["sport"]),
                                                   endpoint_keys(completed["dst"], completed["dport"]))])
        for number, name in ((p.IPPROTO_TCP, "tcp"), (p.IPPROTO_UDP, "udp")):
            keys = np.compress(proto == number, ends)  # (as in `_conversations`)
            if len(keys):
                self.snap.conv_keys[name].add(keys)

    def _row_conversations(self, ip: np.ndarray, completed: np.ndarray) -> None:
        """`_conversations` of IP rows one by one (the packets inside tunnels: a few)."""
        if len(ip):
            src_host = endpoint_keys(ip["src"])
            dst_host = endpoint_keys(ip["dst"])
            hosts = pair_keys(src_host, dst_host)
            version = ip["ip_version"]
            for v, name in ((4, "ipv4"), (6, "ipv6")):
                keys = hosts[version == v]
                if len(keys):
                    self.snap.conv_keys[name].add(keys)
            whole = (ip["depth"] >= DEPTH_TRANSPORT) & (ip["frag"] == FRAG_NONE)
            ends = pair_keys(extend(src_host, ip["sport"])[whole], extend(dst_host, ip["dport"])[whole])
            self._add_ends(ip["proto"][whole], ends, completed)
        else:
            self._add_ends(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint64), completed)

    @staticmethod
    def _may_tunnel(g: _Groups | None, ethertypes: list[int]) -> bool:
        """Whether `tunnel_rows` may find a row: a tunnel protocol, UDP with a tunnel port, or MACsec."""
        if ETH_P_MACSEC in ethertypes:
            return True
        if g is None:
            return False
        kind = _TUNNEL_KIND[g.proto]
        if (kind == 1).any():
            return True
        udp = kind == 2
        return bool((udp & (_TUNNEL_PORT[g.sport] | _TUNNEL_PORT[g.dport])).any())

    def _tunnel_conversations(self, batch: Batch, cols: np.ndarray) -> None:
        """tshark's conversations of the packets inside tunnels (GRE, VXLAN, IP in IP, ...), by the same rules."""
        if len(tunnel_rows(cols)) == 0:
            return
        for _inner, inner_cols in tunnel_layers(batch, cols):
            completed = self._inner_fragments.process(inner_cols)
            ip = take_rows(inner_cols, (inner_cols["ip_version"] != 0) & (inner_cols["depth"] >= DEPTH_NETWORK))
            self._row_conversations(ip, completed)

    def _count_flows(self, states: np.ndarray, sums: np.ndarray | None = None) -> None:
        """Talkers, ports and IP protocols of flows (slot records) that carried `sums` (rows of pk_lo,
        by_lo, pk_hi, by_hi; default: the records' own).

        Counted from the flows rather than the packets' groups: a batch has 10^4 groups, the whole capture
        as many flows as a rule. The flows count every IP row once, as the groups do, and a flow's
        addresses, ports and protocol are those of each of its rows."""
        if not len(states):
            return
        if sums is None:
            sums = np.stack([states[name] for name in ("pk_lo", "by_lo", "pk_hi", "by_hi")], axis=1)
        # talkers: the "lo" end's address sent pk_lo packets of by_lo bytes to the "hi" end's, which sent
        # it the others
        a = np.ascontiguousarray(states["a_addr"]).view("<u8")  # (rows of two words)
        b = np.ascontiguousarray(states["b_addr"]).view("<u8")
        # the lo end's address and the hi end's: A's and B's swapped where B is lo (xored with a ^ b
        # masked, several times faster than np.where on a mask of no pattern)
        swap = a ^ b
        swap &= -(~states["a_is_lo"]).astype(np.uint64)[:, None]
        ends = np.concatenate([a ^ swap, b ^ swap])  # lo, then hi
        # (packets, bytes) sent, then received: by the lo end, then by the hi end
        there, back = sums[:, :2], sums[:, 2:]
        self._talkers.add(ends, np.concatenate([np.concatenate([there, back], axis=1),
                                                np.concatenate([back, there], axis=1)]))
        packets, nbytes = sums[:, 0] + sums[:, 2], sums[:, 1] + sums[:, 3]
        proto = states["proto"]
        np.add.at(self._l4_packets, proto, packets)
        np.add.at(self._l4_bytes, proto, nbytes)
        # the service side of a conversation is taken to be its lower port (well-known < ephemeral)
        a_port, b_port = states["a_port"].astype(np.int64), states["b_port"].astype(np.int64)
        slot = _PORT_SLOT[proto]
        counted = np.flatnonzero((slot < len(_PORT_PROTOS)) & ((a_port != 0) | (b_port != 0)))
        index = (slot[counted] << 16) | np.minimum(a_port[counted], b_port[counted])
        np.add.at(self._port_packets, index, packets[counted])
        np.add.at(self._port_bytes, index, nbytes[counted])

    def _fold_tallies(self) -> None:
        """Move the numpy tallies into the Snapshot's dicts (once per snapshot, not per batch).

        Without the cyclic garbage collector meanwhile: the many lists made here (a talker's counters)
        would set it off again and again, and it would walk every object each time it reaches the oldest
        generation; they hold ints only (no cycles)."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._fold()
        finally:
            if enabled:
                gc.enable()

    def _fold(self) -> None:
        s = self.snap
        # what the flows carried: the live flows' packets since the last fold, less what was reported of
        # the flows that ended meanwhile (the ended flows' whole sums are counted as they end)
        self._count_flows(*self.flows.report_live())
        for states, reported in self.flows.drain_released():
            self._count_flows(states, -reported)
        addrs, counts = self._talkers.take()
        moved = counts.any(axis=1)  # (a talker of flows reported live before, and quiet since: none)
        if not moved.all():
            counts, addrs = counts[moved], addrs[moved]
        if not s.hold_hosts(addrs, counts):  # (a first fold hands the arrays over as they are)
            hosts = s.hosts
            for addr, row in zip(np.ascontiguousarray(addrs).view("V16").ravel().tolist(), counts.tolist()):
                entry = hosts.get(addr)
                if entry is None:
                    hosts[addr] = row
                else:
                    for j in range(4):
                        entry[j] += row[j]
        seen = np.flatnonzero(self._l4_packets)
        if len(seen):
            _count_into(s.l4, [p.ip_proto_name(v) for v in seen.tolist()], self._l4_packets[seen],
                        self._l4_bytes[seen])
            self._l4_packets[seen] = 0
            self._l4_bytes[seen] = 0
        seen = np.flatnonzero(self._port_packets)
        if len(seen):
            _count_into(s.ports, [(_PORT_PROTOS[k >> 16], k & 0xFFFF) for k in seen.tolist()],
                        self._port_packets[seen], self._port_bytes[seen])
            self._port_packets[seen] = 0
            self._port_bytes[seen] = 0

    def _collect_ended(self) -> None:
        states, reasons = self.flows.drain_records()
        if not len(states):
            return
        self._count_flows(states)
        s = self.snap
        s.flows_ended += len(states)
        counts = np.bincount(reasons, minlength=len(END_REASONS))
        _, first = np.unique(reasons, return_index=True)
        for code in reasons[np.sort(first)].tolist():  # in the order the reasons first come
            name = END_REASONS[code]
            s.flow_end_reasons[name] = s.flow_end_reasons.get(name, 0) + int(counts[code])
        ended = None
        if self.on_flow_end is not None:
            ended = flows_of(states, reasons)
            for f in ended:
                self.on_flow_end(f)
        limit = s.top_limit
        nbytes, packets, first_ns = flow_sizes(states)
        keep = top_candidates(nbytes, packets, first_ns, limit) if len(states) > limit else np.ones(len(states), bool)
        if 0 < limit <= len(self._ended):  # nor can a flow below the limit-th of the top so far by both rankings
            keep &= _reaches(self._ended, limit, nbytes, packets, first_ns)
        keep = np.flatnonzero(keep)
        if not len(keep):  # nothing new in the top (top_flows of a top_flows result is itself)
            return
        if ended is not None:
            ended = [ended[i] for i in keep.tolist()]
        elif len(keep) == len(states):  # (every one: no copy)
            ended = flows_of(states, reasons)
        else:
            ended = flows_of(take_records(states, keep), reasons[keep])
        self._ended = top_flows(self._ended + ended, limit)

    def finish(self, now_ns: int | None = None) -> Snapshot:
        """End every live flow and return the final Snapshot.

        `now_ns` is the clock the flows end at (default: the last packet's time; see `FlowTable.flush`).
        """
        self.flows.flush(now_ns)
        self._collect_ended()
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """The Snapshot so far (live flows included in the top flows)."""
        self._fold_tallies()
        s = self.snap
        s.flows_live = len(self.flows.live)
        s.flow_evictions = self.flows.evictions - self._evictions_taken
        s.top_flows = top_flows(self._ended + self.flows.top(s.top_limit), s.top_limit)
        return s

    def take_delta(self) -> Snapshot:
        """What was seen since the last call, as a Snapshot to absorb elsewhere (live workers).

        Counts, breakdowns and conversation keys cover the interval only; `top_flows` holds the
        interval's ended flows and the current live ones (copies, so later updates don't leak in);
        `flows_live` is the current number of live flows, a gauge rather than a count.
        """
        s = self.snapshot()
        s.top_flows = [copy.copy(f) for f in s.top_flows]
        self._evictions_taken = self.flows.evictions
        self.snap = Snapshot(top_limit=s.top_limit)
        self._ended = []
        return s
