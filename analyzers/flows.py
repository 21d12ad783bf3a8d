"""The flow table: bidirectional flows with per-direction counters, timeouts in packet time, a size cap.

A flow is keyed by (IP version, VLAN, protocol, and the unordered pair of (address, port) endpoints).
Endpoint A is the source of the first packet seen, so "a->b" reads as "initiator -> responder".
Work is done a batch at a time: rows are grouped by flow key with numpy, cut into segments where a
flow was idle longer than the idle timeout, summed per segment, and only segments reach Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pktscope.analyzers.keys import combine, endpoint_keys
from pktscope.decoders.columns import DEPTH_NETWORK

NS = 1_000_000_000
DEFAULT_IDLE_TIMEOUT = 120.0  # seconds, as nfstream's default and common NetFlow exporters
DEFAULT_ACTIVE_TIMEOUT = 1800.0
DEFAULT_MAX_FLOWS = 1_000_000

END_IDLE = "idle"
END_ACTIVE = "active"
END_EVICTED = "evicted"
END_EOF = "end"


@dataclass(slots=True)
class Flow:
    """One bidirectional flow."""

    key: int
    ip_version: int
    proto: int
    vlan: int
    a_addr: bytes  # 16 bytes, IPv4-mapped for IPv4
    a_port: int
    b_addr: bytes
    b_port: int
    first_ns: int
    last_ns: int
    packets_ab: int = 0
    bytes_ab: int = 0
    packets_ba: int = 0
    bytes_ba: int = 0
    flags_ab: int = 0
    flags_ba: int = 0
    end_reason: str = ""
    a_is_lo: bool = True  # whether A is the canonical "lo" end of the key (orientation of batch sums)

    @property
    def packets(self) -> int:
        return self.packets_ab + self.packets_ba

    @property
    def bytes(self) -> int:
        return self.bytes_ab + self.bytes_ba


class FlowTable:
    """Live flows, bounded; flows that end are appended to `ended` for the caller to drain."""

    def __init__(
        self,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
    ) -> None:
        self.idle_ns = int(idle_timeout * NS)
        self.active_ns = int(active_timeout * NS)
        self.max_flows = max_flows
        self.live: dict[int, Flow] = {}  # kept in least-recently-updated order
        self.ended: list[Flow] = []
        self.evictions = 0
        self.created = 0
        self.now_ns = 0
        self._rows: np.ndarray | None = None  # the IP rows of the batch being accounted

    def update(self, cols: np.ndarray, src_key: np.ndarray | None = None,
               dst_key: np.ndarray | None = None) -> None:
        """Account every IP row of a Columns batch.

        `src_key`/`dst_key`, when given, are `endpoint_keys` of the IP rows' (address, port) ends,
        already computed by the caller for other counters.
        """
        ip = (cols["ip_version"] != 0) & (cols["depth"] >= DEPTH_NETWORK)
        rows = cols[ip] if not ip.all() else cols
        if len(rows) == 0:
            return
        if src_key is None or dst_key is None:
            src_key = endpoint_keys(rows["src"], rows["sport"])
            dst_key = endpoint_keys(rows["dst"], rows["dport"])
        forward = src_key <= dst_key  # the row goes from the canonical "lo" end to "hi"
        meta = (rows["ip_version"].astype(np.uint64) << np.uint64(24)) | (
            rows["proto"].astype(np.uint64) << np.uint64(16)) | rows["vlan"].astype(np.uint64)
        keys = combine(np.minimum(src_key, dst_key), np.maximum(src_key, dst_key), meta)
        ts = rows["ts_ns"]
        order = np.lexsort((ts, keys))
        k = keys[order]
        t = ts[order]
        starts = np.ones(len(k), dtype=bool)
        starts[1:] = (k[1:] != k[:-1]) | ((t[1:] - t[:-1]) > self.idle_ns)
        seg = np.flatnonzero(starts)
        fwd = forward[order]
        size = rows["wire_len"][order].astype(np.int64)
        flags = rows["tcp_flags"][order]
        pk_f = np.add.reduceat(fwd.astype(np.int64), seg)
        by_f = np.add.reduceat(np.where(fwd, size, 0), seg)
        pk_all = np.diff(np.append(seg, len(k)))
        by_all = np.add.reduceat(size, seg)
        fl_f = np.bitwise_or.reduceat(np.where(fwd, flags, 0), seg)
        fl_b = np.bitwise_or.reduceat(np.where(fwd, 0, flags), seg)
        last_idx = np.append(seg[1:], len(k)) - 1
        first_ts = t[seg]
        last_ts = t[last_idx]
        # walk segments in order of their last packet, so that the live table stays in
        # least-recently-seen order (idle expiry and eviction read it from the front); Python sees
        # plain ints, one segment (a flow's packets in this batch) at a time
        walk = np.argsort(last_ts, kind="stable")
        seg_w = seg[walk]
        self._rows = rows
        live = self.live
        idle_ns = self.idle_ns
        active_ns = self.active_ns
        for s, key, row, first_fwd, t0, t1, a, b, c, d, e, f in zip(
            walk.tolist(), k[seg_w].tolist(), order[seg_w].tolist(), fwd[seg_w].tolist(),
            first_ts[walk].tolist(), last_ts[walk].tolist(), pk_f[walk].tolist(), by_f[walk].tolist(),
            (pk_all - pk_f)[walk].tolist(), (by_all - by_f)[walk].tolist(), fl_f[walk].tolist(),
            fl_b[walk].tolist(),
        ):
            flow = live.get(key)
            reach = flow.first_ns if flow is not None and t0 - flow.last_ns <= idle_ns else t0
            if t1 - reach > active_ns:
                # the flow passes its active timeout inside this segment: cut it exactly there
                self._per_packet(rows, order[int(seg[s]) : int(last_idx[s]) + 1], keys, forward)
                continue
            self._add(key, row, first_fwd, t0, t1, a, b, c, d, e, f)
        self._rows = None
        self.now_ns = max(self.now_ns, int(ts.max()))
        self._expire_idle()

    def _per_packet(self, rows: np.ndarray, idx: np.ndarray, keys: np.ndarray, forward: np.ndarray) -> None:
        # the rare segment longer than the active timeout: one packet at a time, exactly
        for i in idx.tolist():
            row = rows[i]
            f = bool(forward[i])
            size = int(row["wire_len"])
            flags = int(row["tcp_flags"])
            ts = int(row["ts_ns"])
            self._add(int(keys[i]), i, f, ts, ts, int(f), size if f else 0, int(not f),
                      0 if f else size, flags if f else 0, 0 if f else flags)

    def _add(self, key: int, index: int, first_forward: bool, first_ns: int, last_ns: int,
             pk_lo: int, by_lo: int, pk_hi: int, by_hi: int, fl_lo: int, fl_hi: int) -> None:
        """Add a segment's sums (lo/hi orientation) to its flow; `index` is its first row in `_rows`."""
        flow = self.live.pop(key, None)
        if flow is not None and (first_ns - flow.last_ns > self.idle_ns):
            self._end(flow, END_IDLE)
            flow = None
        if flow is not None and (last_ns - flow.first_ns > self.active_ns):
            self._end(flow, END_ACTIVE)
            flow = None
        if flow is None:
            row = self._rows[index]
            flow = Flow(
                key=key, ip_version=int(row["ip_version"]), proto=int(row["proto"]), vlan=int(row["vlan"]),
                a_addr=row["src"].tobytes(), a_port=int(row["sport"]),
                b_addr=row["dst"].tobytes(), b_port=int(row["dport"]),
                first_ns=first_ns, last_ns=last_ns,
            )
            # A is the first packet's source: "lo" counters are A's when that packet went lo -> hi
            flow.a_is_lo = first_forward
            self.created += 1
        if flow.a_is_lo:  # the batch sums are lo/hi; the flow's are A/B
            flow.packets_ab += pk_lo
            flow.bytes_ab += by_lo
            flow.flags_ab |= fl_lo
            flow.packets_ba += pk_hi
            flow.bytes_ba += by_hi
            flow.flags_ba |= fl_hi
        else:
            flow.packets_ab += pk_hi
            flow.bytes_ab += by_hi
            flow.flags_ab |= fl_hi
            flow.packets_ba += pk_lo
            flow.bytes_ba += by_lo
            flow.flags_ba |= fl_lo
        flow.first_ns = min(flow.first_ns, first_ns)
        flow.last_ns = max(flow.last_ns, last_ns)
        self.live[key] = flow
        if len(self.live) > self.max_flows:
            oldest = next(iter(self.live))
            self._end(self.live.pop(oldest), END_EVICTED)
            self.evictions += 1

    def _end(self, flow: Flow, reason: str) -> None:
        flow.end_reason = reason
        self.ended.append(flow)

    def _expire_idle(self) -> None:
        limit = self.now_ns - self.idle_ns
        while self.live:
            key = next(iter(self.live))
            flow = self.live[key]
            if flow.last_ns >= limit:
                break
            del self.live[key]
            self._end(flow, END_IDLE)

    def flush(self) -> None:
        """End every live flow (end of capture)."""
        for flow in self.live.values():
            self._end(flow, END_EOF)
        self.live.clear()

    def drain(self) -> list[Flow]:
        """Take the flows that ended since the last drain."""
        ended, self.ended = self.ended, []
        return ended
