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
)
from pktscope.analyzers.fragments import FragmentTracker
from pktscope.analyzers.keys import endpoint_keys, pair_keys
from pktscope.analyzers.snapshot import Snapshot, top_flows
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
)

_ENCAP_NAMES = ((ENCAP_VLAN, "802.1Q"), (ENCAP_QINQ, "802.1ad (QinQ)"), (ENCAP_MPLS, "MPLS"),
                (ENCAP_PPPOE, "PPPoE"), (ENCAP_LLC, "802.2 LLC"))
_PORT_PROTOS = (p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP)


def _grouped(keys: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, the index of a representative row, packets and bytes per key."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    packets = np.bincount(inverse, minlength=len(uniq))
    nbytes = np.bincount(inverse, weights=sizes, minlength=len(uniq)).astype(np.int64)
    return uniq, first, packets, nbytes


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

    def feed(self, cols: np.ndarray) -> None:
        """Account one decoded batch."""
        if len(cols) == 0:
            return
        s = self.snap
        wire = cols["wire_len"].astype(np.int64)
        s.packets += len(cols)
        s.bytes += int(wire.sum())
        s.captured_bytes += int(cols["cap_len"].sum(dtype=np.int64))
        ts = cols["ts_ns"]
        lo, hi = int(ts.min()), int(ts.max())
        s.first_ns = lo if s.first_ns is None else min(s.first_ns, lo)
        s.last_ns = hi if s.last_ns is None else max(s.last_ns, hi)
        status = np.bincount(cols["status"], minlength=len(STATUS_NAMES))
        for code, count in enumerate(status.tolist()):
            if count and code != STATUS_OK:
                s.status[STATUS_NAMES[code]] = s.status.get(STATUS_NAMES[code], 0) + count

        completed = self.fragments.process(cols)  # fills later fragments' ports first
        self._protocols(cols, wire)
        self._conversations(cols, completed)
        ip = cols[(cols["ip_version"] != 0) & (cols["depth"] >= DEPTH_NETWORK)]
        if len(ip):
            self._hosts(ip)
            self._ports(ip)
        self.flows.update(cols)
        self._collect_ended()

    def _protocols(self, cols: np.ndarray, wire: np.ndarray) -> None:
        s = self.snap
        uniq, _, pk, by = _grouped(cols["linktype"], wire)
        for link, count in zip(uniq.tolist(), pk.tolist()):
            s.linktypes[link] = s.linktypes.get(link, 0) + count
        _count_into(s.l2, [linktype_name(v) for v in uniq.tolist()], pk, by)
        encap = cols["encap"]
        for bit, name in _ENCAP_NAMES:
            tagged = (encap & bit) != 0
            if tagged.any():
                _count_into(s.l2, [name], np.array([tagged.sum()]), np.array([wire[tagged].sum()]))
        linked = cols["depth"] >= DEPTH_LINK
        if linked.any():
            et = cols["ethertype"][linked]
            uniq, _, pk, by = _grouped(et, wire[linked])
            _count_into(s.l3, [p.ethertype_name(v) if v else "none" for v in uniq.tolist()], pk, by)
        ip = (cols["ip_version"] != 0) & (cols["depth"] >= DEPTH_NETWORK)
        if ip.any():
            uniq, _, pk, by = _grouped(cols["proto"][ip], wire[ip])
            _count_into(s.l4, [p.ip_proto_name(v) for v in uniq.tolist()], pk, by)

    def _conversations(self, cols: np.ndarray, completed: np.ndarray) -> None:
        conv = self.snap.conv_keys
        for version, name in ((4, "ipv4"), (6, "ipv6")):
            rows = cols[(cols["ip_version"] == version) & (cols["depth"] >= DEPTH_NETWORK)]
            if len(rows):
                conv[name].update(np.unique(pair_keys(endpoint_keys(rows["src"]),
                                                      endpoint_keys(rows["dst"]))).tolist())
        whole = cols[(cols["depth"] >= DEPTH_TRANSPORT) & (cols["frag"] == FRAG_NONE)]
        if len(completed):
            whole = np.concatenate([whole, completed])
        for proto, name in ((p.IPPROTO_TCP, "tcp"), (p.IPPROTO_UDP, "udp")):
            rows = whole[whole["proto"] == proto]
            if len(rows):
                keys = pair_keys(endpoint_keys(rows["src"], rows["sport"]),
                                 endpoint_keys(rows["dst"], rows["dport"]))
                conv[name].update(np.unique(keys).tolist())

    def _hosts(self, ip: np.ndarray) -> None:
        hosts = self.snap.hosts
        wire = ip["wire_len"].astype(np.int64)
        for column, (pi, bi) in (("src", (0, 1)), ("dst", (2, 3))):
            _uniq, first, pk, by = _grouped(endpoint_keys(ip[column]), wire)
            addrs = ip[column][first]
            for j, (count, size) in enumerate(zip(pk.tolist(), by.tolist())):
                addr = addrs[j].tobytes()
                entry = hosts.get(addr)
                if entry is None:
                    entry = hosts[addr] = [0, 0, 0, 0]
                entry[pi] += count
                entry[bi] += size

    def _ports(self, ip: np.ndarray) -> None:
        # the service side of a conversation is taken to be its lower port (well-known < ephemeral)
        rows = ip[np.isin(ip["proto"], _PORT_PROTOS) & ((ip["sport"] != 0) | (ip["dport"] != 0))]
        if len(rows) == 0:
            return
        port = np.minimum(rows["sport"], rows["dport"]).astype(np.int64)
        key = (rows["proto"].astype(np.int64) << 16) | port
        uniq, _, pk, by = _grouped(key, rows["wire_len"].astype(np.int64))
        _count_into(self.snap.ports, [(k >> 16, k & 0xFFFF) for k in uniq.tolist()], pk, by)

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
        self._ended = top_flows(self._ended + ended, s.top_limit)

    def finish(self) -> Snapshot:
        """End every live flow and return the final Snapshot."""
        self.flows.flush()
        self._collect_ended()
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """The Snapshot so far (live flows included in the top flows)."""
        s = self.snap
        s.flows_live = len(self.flows.live)
        s.flow_evictions = self.flows.evictions - self._evictions_taken
        s.top_flows = top_flows(self._ended + list(self.flows.live.values()), s.top_limit)
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
