"""Analysis: Columns in, Snapshot out. Keeps the state of one capture (or one live worker)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from pktscope.analyzers.flows import (
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FLOWS,
    Flow,
    FlowTable,
    top_candidates,
)
from pktscope.analyzers.fragments import FragmentTracker
from pktscope.analyzers.keys import endpoint_keys, extend, groups, pair_keys, unique
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
from pktscope.decoders.tunnels import tunnel_layers, tunnel_rows

_ENCAP_NAMES = ((ENCAP_VLAN, "802.1Q"), (ENCAP_QINQ, "802.1ad (QinQ)"), (ENCAP_MPLS, "MPLS"),
                (ENCAP_PPPOE, "PPPoE"), (ENCAP_LLC, "802.2 LLC"))
_PORT_PROTOS = (p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP)


# the ports tally counts in a table indexed by (the protocol's place here) << 16 | port
_PORT_SLOT = np.full(256, len(_PORT_PROTOS), dtype=np.int64)
_PORT_SLOT[list(_PORT_PROTOS)] = np.arange(len(_PORT_PROTOS))
_NO_PORT = len(_PORT_PROTOS) << 16  # the bin of rows without a service port


def _counted(values: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct small non-negative integers (ascending), packets and bytes of each: bincounts, no sort."""
    values = values.astype(np.intp)  # one pass over a Columns field; bincount would convert twice
    if len(values) and (values == values[0]).all():  # one value (a file's link type): no bincount
        return values[:1], np.array([len(values)]), np.array([int(sizes.sum())])
    packets = np.bincount(values)
    nbytes = np.bincount(values, weights=sizes)
    uniq = np.flatnonzero(packets)
    return uniq, packets[uniq], nbytes[uniq].astype(np.int64)


class _KeySet:
    """A set of uint64 keys gathered a batch at a time as numpy arrays, handed over as one array on demand.

    A batch's keys are made unique and appended; the parts are merged (one sort) when they outgrow the
    merged part, so Python touches each key once per snapshot rather than once per batch.
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._merged = 0

    def add(self, keys: np.ndarray) -> None:
        keys = unique(keys)
        self._parts.append(keys)
        self._pending += len(keys)
        if self._pending > max(4 * self._merged, 1 << 18):
            self._merge()

    def _merge(self) -> None:
        if len(self._parts) > 1:
            self._parts = [unique(np.concatenate(self._parts))]
        self._merged = self._pending = len(self._parts[0]) if self._parts else 0

    def take(self) -> np.ndarray:
        """The distinct keys (ascending) since the last take; then start afresh."""
        self._merge()
        taken = self._parts[0] if self._parts else np.zeros(0, dtype=np.uint64)
        self._parts = []
        self._merged = self._pending = 0
        return taken


class _Counters:
    """Rows of int64 counters and a label, keyed by uint64: rows in arrival order, found through a sorted index.

    A batch's (unique) keys are looked up with one searchsorted: counts of known keys are added in place,
    new keys get rows at the end and a place in the index. Nothing is merged later: taking the counters
    is reading the arrays.
    """

    def __init__(self, width: int, label_width: int) -> None:
        self._width = width
        self._label_width = label_width
        self._reset()

    def _reset(self) -> None:
        self._index = np.zeros(0, dtype=np.uint64)  # the keys, ascending
        self._rows = np.zeros(0, dtype=np.int64)  # the row of each
        self._counts = np.zeros((1024, self._width), dtype=np.int64)
        self._labels = np.zeros((1024, self._label_width), dtype=np.uint8)
        self._used = 0

    def add(self, keys: np.ndarray, counts: np.ndarray, labels: np.ndarray) -> None:
        """Add `counts` under `keys` (unique, ascending); `labels` are kept for keys not seen before."""
        index = self._index
        pos = np.searchsorted(index, keys)
        if len(index):
            rows = self._rows[np.minimum(pos, len(index) - 1)]
            found = index[np.minimum(pos, len(index) - 1)] == keys
        else:
            rows = pos
            found = np.zeros(len(keys), dtype=bool)
        if not found.all():
            new = np.flatnonzero(~found)
            fresh = np.arange(self._used, self._used + len(new))
            self._used += len(new)
            if self._used > len(self._counts):
                size = max(2 * len(self._counts), self._used)
                self._counts = np.concatenate([self._counts, np.zeros((size - len(self._counts), self._width),
                                                                      dtype=np.int64)])
                self._labels = np.concatenate([self._labels, np.zeros((size - len(self._labels), self._label_width),
                                                                      dtype=np.uint8)])
            self._labels[fresh] = labels[new]
            rows = rows.copy()
            rows[new] = fresh
            self._index = np.insert(index, pos[new], keys[new])
            self._rows = np.insert(self._rows, pos[new], fresh)
        self._counts[rows] += counts

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys (ascending), their counters and labels since the last take; then start afresh."""
        taken = self._index, self._counts[self._rows], self._labels[self._rows]
        self._reset()
        return taken


def _count_into(table: dict, names: list, packets: np.ndarray, nbytes: np.ndarray) -> None:
    for name, pk, by in zip(names, packets.tolist(), nbytes.tolist()):
        entry = table.get(name)
        if entry is None:
            table[name] = [pk, by]
        else:
            entry[0] += pk
            entry[1] += by


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
        self._hosts_tally = _Counters(4, 16)  # address key -> [sent p, sent B, recv p, recv B], address
        self._port_packets = np.zeros(_NO_PORT, dtype=np.int64)  # _PORT_SLOT[proto] << 16 | port
        self._port_bytes = np.zeros(_NO_PORT, dtype=np.int64)
        self._conv_tally = {name: _KeySet() for name in self.snap.conv_keys}
        self._inner_fragments = FragmentTracker()  # IP fragments inside tunnels (conversations only)

    def feed(self, cols: np.ndarray, batch: Batch | None = None) -> None:
        """Account one decoded batch; given the Batch too, conversations inside tunnels are counted."""
        if len(cols) == 0:
            return
        s = self.snap
        wire = cols["wire_len"].astype(np.int64)
        s.packets += len(cols)
        s.bytes += int(wire.sum())
        s.captured_bytes += int(cols["cap_len"].sum(dtype=np.int64))
        ts = np.ascontiguousarray(cols["ts_ns"])  # one pass over the rows, then two over a column
        lo, hi = int(ts.min()), int(ts.max())
        s.first_ns = lo if s.first_ns is None else min(s.first_ns, lo)
        s.last_ns = hi if s.last_ns is None else max(s.last_ns, hi)
        status = cols["status"]
        if (status != STATUS_OK).any():
            for code, count in enumerate(np.bincount(status, minlength=len(STATUS_NAMES)).tolist()):
                if count and code != STATUS_OK:
                    s.status[STATUS_NAMES[code]] = s.status.get(STATUS_NAMES[code], 0) + count

        completed = self.fragments.process(cols)  # fills later fragments' ports first
        depth = np.ascontiguousarray(cols["depth"])
        ip_rows = (cols["ip_version"] != 0) & (depth >= DEPTH_NETWORK)
        every_ip = bool(ip_rows.all())
        self._protocols(cols, wire, depth, ip_rows, every_ip)
        ip = cols if every_ip else take_rows(cols, ip_rows)
        ip_wire = wire if every_ip else wire[ip_rows]
        # endpoint keys, computed once per batch for conversations, talkers and flows
        src_host = endpoint_keys(ip["src"])
        dst_host = endpoint_keys(ip["dst"])
        src_end = extend(src_host, ip["sport"])
        dst_end = extend(dst_host, ip["dport"])
        self._conversations(ip, src_host, dst_host, src_end, dst_end, completed)
        if batch is not None:
            self._tunnel_conversations(batch, cols)
        if len(ip):
            self._hosts(ip, ip_wire, src_host, dst_host)
            self._ports(ip, ip_wire)
        self.flows.update(ip, src_end, dst_end)
        self._collect_ended()

    def _protocols(self, cols: np.ndarray, wire: np.ndarray, depth: np.ndarray, ip: np.ndarray,
                   every_ip: bool) -> None:
        s = self.snap
        uniq, pk, by = _counted(cols["linktype"], wire)
        for link, count in zip(uniq.tolist(), pk.tolist()):
            s.linktypes[link] = s.linktypes.get(link, 0) + count
        _count_into(s.l2, [linktype_name(v) for v in uniq.tolist()], pk, by)
        encap = np.ascontiguousarray(cols["encap"])
        if encap.any():  # counted per combination of bits (a handful), then summed per bit
            combos, pk, by = _counted(encap, wire)
            for bit, name in _ENCAP_NAMES:
                tagged = (combos & bit) != 0
                if tagged.any():
                    _count_into(s.l2, [name], np.array([pk[tagged].sum()]), np.array([by[tagged].sum()]))
        linked = depth >= DEPTH_LINK
        if linked.all():
            uniq, pk, by = _counted(cols["ethertype"], wire)
        elif linked.any():
            uniq, pk, by = _counted(cols["ethertype"][linked], wire[linked])
        if linked.any():
            _count_into(s.l3, [p.ethertype_name(v) if v else "none" for v in uniq.tolist()], pk, by)
        if every_ip:
            uniq, pk, by = _counted(cols["proto"], wire)
        elif ip.any():
            uniq, pk, by = _counted(cols["proto"][ip], wire[ip])
        if every_ip or ip.any():
            _count_into(s.l4, [p.ip_proto_name(v) for v in uniq.tolist()], pk, by)

    def _conversations(self, ip: np.ndarray, src_host: np.ndarray, dst_host: np.ndarray,
                       src_end: np.ndarray, dst_end: np.ndarray, completed: np.ndarray) -> None:
        """tshark's conversations: address pairs of IP rows, (address, port) pairs of whole TCP/UDP rows."""
        if len(ip):
            hosts = pair_keys(src_host, dst_host)
            version = ip["ip_version"]
            for v, name in ((4, "ipv4"), (6, "ipv6")):
                keys = hosts[version == v]
                if len(keys):
                    self._conv_tally[name].add(keys)
        whole = (ip["depth"] >= DEPTH_TRANSPORT) & (ip["frag"] == FRAG_NONE)
        if whole.all():  # no gathers in the common case
            proto = np.ascontiguousarray(ip["proto"])
            ends = pair_keys(src_end, dst_end)
        else:
            proto = ip["proto"][whole]
            ends = pair_keys(src_end[whole], dst_end[whole])
        if len(completed):
            proto = np.concatenate([proto, completed["proto"]])
            ends = np.concatenate([ends, pair_keys(endpoint_keys(completed["src"], completed["sport"]),
                                                   endpoint_keys(completed["dst"], completed["dport"]))])
        for number, name in ((p.IPPROTO_TCP, "tcp"), (p.IPPROTO_UDP, "udp")):
            keys = ends[proto == number]
            if len(keys):
                self._conv_tally[name].add(keys)

    def _tunnel_conversations(self, batch: Batch, cols: np.ndarray) -> None:
        """tshark's conversations of the packets inside tunnels (GRE, VXLAN, IP in IP, ...), by the same rules."""
        if len(tunnel_rows(cols)) == 0:
            return
        for _inner, inner_cols in tunnel_layers(batch, cols):
            completed = self._inner_fragments.process(inner_cols)
            ip = take_rows(inner_cols, (inner_cols["ip_version"] != 0) & (inner_cols["depth"] >= DEPTH_NETWORK))
            src_host = endpoint_keys(ip["src"])
            dst_host = endpoint_keys(ip["dst"])
            self._conversations(ip, src_host, dst_host, extend(src_host, ip["sport"]),
                                extend(dst_host, ip["dport"]), completed)

    def _hosts(self, ip: np.ndarray, wire: np.ndarray, src_host: np.ndarray, dst_host: np.ndarray) -> None:
        for column, keys, sent in (("src", src_host, True), ("dst", dst_host, False)):
            order, starts, uniq = groups(keys)
            counts = np.zeros((len(uniq), 4), dtype=np.int64)
            counts[:, 0 if sent else 2] = np.diff(starts, append=len(keys))
            counts[:, 1 if sent else 3] = np.add.reduceat(wire[order], starts)
            self._hosts_tally.add(uniq, counts, ip[column][order[starts]])

    def _ports(self, ip: np.ndarray, wire: np.ndarray) -> None:
        # the service side of a conversation is taken to be its lower port (well-known < ephemeral)
        sport, dport = ip["sport"], ip["dport"]
        slot = _PORT_SLOT[ip["proto"]]
        counted = np.flatnonzero((slot < len(_PORT_PROTOS)) & ((sport != 0) | (dport != 0)))
        index = (slot[counted] << 16) | np.minimum(sport[counted], dport[counted])
        np.add.at(self._port_packets, index, 1)  # unbuffered adds into the table: numpy 2 makes them cheap
        np.add.at(self._port_bytes, index, wire[counted])

    def _fold_tallies(self) -> None:
        """Move the numpy tallies into the Snapshot's dicts (once per snapshot, not per batch)."""
        s = self.snap
        _keys, counts, addrs = self._hosts_tally.take()
        hosts = s.hosts
        packed = np.ascontiguousarray(addrs).tobytes()
        found = zip([packed[i : i + 16] for i in range(0, len(packed), 16)], counts.tolist())
        if not hosts:
            hosts.update(found)
        for addr, row in found:  # (nothing left after the update)
            entry = hosts.get(addr)
            if entry is None:
                hosts[addr] = row
            else:
                for j in range(4):
                    entry[j] += row[j]
        seen = np.flatnonzero(self._port_packets)
        if len(seen):
            _count_into(s.ports, [(_PORT_PROTOS[k >> 16], k & 0xFFFF) for k in seen.tolist()],
                        self._port_packets[seen], self._port_bytes[seen])
            self._port_packets[seen] = 0
            self._port_bytes[seen] = 0
        for name, tally in self._conv_tally.items():
            keys = tally.take()
            if len(keys):
                s.conv_keys[name].update(keys.tolist())

    def _collect_ended(self) -> None:
        ended = self.flows.drain()
        if not ended:
            return
        s = self.snap
        s.flows_ended += len(ended)
        for f in ended:
            s.flow_end_reasons[f.end_reason] = s.flow_end_reasons.get(f.end_reason, 0) + 1
            if self.on_flow_end is not None:
                self.on_flow_end(f)
        limit = s.top_limit
        if len(ended) > 4 * limit:  # many (the end of a capture): rank them with numpy first
            keep = top_candidates(np.array([f.bytes for f in ended]), np.array([f.packets for f in ended]),
                                  np.array([f.first_ns for f in ended]), limit)
            ended = [f for f, kept in zip(ended, keep.tolist()) if kept]
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
