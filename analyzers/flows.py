"""The flow table: bidirectional flows with per-direction counters, timeouts in packet time, a size cap.

A flow is keyed by (IP version, VLAN, protocol, and the unordered pair of (address, port) endpoints).
Endpoint A is the source of the first packet seen, so "a->b" reads as "initiator -> responder".
Work is done a batch at a time: rows are grouped by flow key with numpy, cut into segments where a
flow was idle longer than the idle timeout, summed per segment, and the segments are merged into the
live flows as numpy arrays (struct of arrays, one slot per live flow, found through a sorted key index).
`Flow` objects are built only for flows that end and for the live flows a caller asks for.

The result is the one of walking the segments one by one in order of their last packet, each added to
its flow (`live` kept in least-recently-updated order): a flow idle longer than the idle timeout ends
before the segment starts a new one; a segment that would take its flow past the active timeout is
cut at the packet that does; a new flow beyond `max_flows` evicts the least recently updated one; after
the batch, flows idle at the batch's last timestamp end, taken from the least recently updated on. The
segments are applied a run at a time; a run whose evictions would hit a flow that the same run updates
is split until they no longer do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pktscope.analyzers.keys import combine, endpoint_keys, grouping_order, stable_order
from pktscope.decoders.columns import DEPTH_NETWORK, take_rows

NS = 1_000_000_000
DEFAULT_IDLE_TIMEOUT = 120.0  # seconds, as nfstream's default and common NetFlow exporters
DEFAULT_ACTIVE_TIMEOUT = 1800.0
DEFAULT_MAX_FLOWS = 1_000_000

END_IDLE = "idle"
END_ACTIVE = "active"
END_EVICTED = "evicted"
END_EOF = "end"

# one live flow (a slot); counters in the key's canonical orientation: "lo" is the end with the
# smaller endpoint key, `a_is_lo` tells whether A (the first packet's source) is that end
_SLOT_DTYPE = np.dtype([
    ("key", "<u8"), ("first_ns", "<i8"), ("last_ns", "<i8"),
    ("pk_lo", "<i8"), ("by_lo", "<i8"), ("pk_hi", "<i8"), ("by_hi", "<i8"),
    ("fl_lo", "u1"), ("fl_hi", "u1"), ("a_is_lo", "?"),
    ("ip_version", "u1"), ("proto", "u1"), ("vlan", "<u2"), ("a_port", "<u2"), ("b_port", "<u2"),
    ("a_addr", "u1", (16,)), ("b_addr", "u1", (16,)),
])
# whole records move through a void view: fancy indexing a structured dtype with sub-array fields
# copies field by field, several times slower
_SLOT_BYTES = np.dtype((np.void, _SLOT_DTYPE.itemsize))
_SUMS = ("pk_lo", "by_lo", "pk_hi", "by_hi")
_FLAGS = ("fl_lo", "fl_hi")
_NEVER = np.iinfo(np.int64).max
END_REASONS = (END_IDLE, END_ACTIVE, END_EVICTED, END_EOF)  # end reason codes 0, 1, 2, 3
_IDLE, _EOF = 0, 3


def _take(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """records[index] for slot records (a copy)."""
    return records.view(_SLOT_BYTES)[index].view(_SLOT_DTYPE)


def take_records(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """records[index] for slot records (a copy; whole records, not field by field)."""
    return _take(records, index)


def _put(records: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """records[index] = values for slot records."""
    records.view(_SLOT_BYTES)[index] = values.view(_SLOT_BYTES)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """np.concatenate for slot records."""
    return np.concatenate([part.view(_SLOT_BYTES) for part in parts]).view(_SLOT_DTYPE)


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


def _flows(states: np.ndarray, reasons: np.ndarray | str) -> list[Flow]:
    """Flow objects of slot records (`_SLOT_DTYPE`), with their end reasons (codes, see `END_REASONS`)."""
    n = len(states)
    if n == 0:
        return []
    reasons = [reasons] * n if isinstance(reasons, str) else [END_REASONS[r] for r in reasons.tolist()]
    a_lo = states["a_is_lo"]
    cols = [states[name].tolist() for name in ("key", "ip_version", "proto", "vlan")]
    a_addr = np.ascontiguousarray(states["a_addr"]).tobytes()
    b_addr = np.ascontiguousarray(states["b_addr"]).tobytes()
    ab = [np.where(a_lo, states[lo], states[hi]).tolist()
          for lo, hi in (("pk_lo", "pk_hi"), ("by_lo", "by_hi"))]
    ba = [np.where(a_lo, states[hi], states[lo]).tolist()
          for lo, hi in (("pk_lo", "pk_hi"), ("by_lo", "by_hi"))]
    fl_ab = np.where(a_lo, states["fl_lo"], states["fl_hi"]).tolist()
    fl_ba = np.where(a_lo, states["fl_hi"], states["fl_lo"]).tolist()
    return [
        Flow(key, ipv, proto, vlan, a_addr[16 * i : 16 * i + 16], a_port, b_addr[16 * i : 16 * i + 16], b_port,
             first, last, pab, bab, pba, bba, fab, fba, reason, lo)
        for i, (key, ipv, proto, vlan, a_port, b_port, first, last, pab, bab, pba, bba, fab, fba, reason, lo)
        in enumerate(zip(*cols, states["a_port"].tolist(), states["b_port"].tolist(), states["first_ns"].tolist(),
                         states["last_ns"].tolist(), ab[0], ab[1], ba[0], ba[1], fl_ab, fl_ba, reasons,
                         a_lo.tolist()))
    ]


def flows_of(states: np.ndarray, reasons: np.ndarray) -> list[Flow]:
    """Flow objects of ended flows' slot records and reason codes (`FlowTable.drain_records`)."""
    return _flows(states, reasons)


def flow_sizes(states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bytes, packets and first_ns of flows' slot records: what `top_candidates` ranks them by."""
    return states["by_lo"] + states["by_hi"], states["pk_lo"] + states["pk_hi"], states["first_ns"]


def top_candidates(nbytes: np.ndarray, packets: np.ndarray, first_ns: np.ndarray, limit: int) -> np.ndarray:
    """Which flows rank at or above the `limit`-th by (bytes, packets, first_ns) or by (packets, bytes,
    first_ns), ties included (a bool per flow): `snapshot.top_flows` of them, in their order, equals
    `top_flows` of all."""
    n = len(nbytes)
    if n <= limit:
        return np.ones(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    if limit <= 0:
        return keep
    for major, minor in ((nbytes, packets), (packets, nbytes)):
        cut = np.partition(major, n - limit)[n - limit]  # the limit-th largest
        near = np.flatnonzero(major >= cut)  # a superset: ties on the major key may be many
        order = np.lexsort((first_ns[near], minor[near], major[near]))
        at = near[order[len(near) - limit]]  # the limit-th by the whole ranking
        m, s, t = major[at], minor[at], first_ns[at]
        keep[near] |= (major[near] > m) | ((major[near] == m) & (
            (minor[near] > s) | ((minor[near] == s) & (first_ns[near] >= t))))
    return keep


class LiveFlows(Mapping[int, Flow]):
    """A read-only view of the live flows by key, in least-recently-updated order (Flows built on access)."""

    def __init__(self, table: FlowTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return len(self._table._lru)

    def __iter__(self) -> Iterator[int]:
        t = self._table
        return iter(t._slots["key"][t._lru].tolist())

    def __getitem__(self, key: int) -> Flow:
        slot = self._table._slot_of(np.array([key], dtype=np.uint64))[0]
        if slot < 0:
            raise KeyError(key)
        return _flows(_take(self._table._slots, np.array([slot])), "")[0]

    def values(self) -> list[Flow]:  # type: ignore[override]
        t = self._table
        return _flows(_take(t._slots, t._lru), "")


class _Segments:
    """One batch's segments in order of their last packet (walk order); and its rows sorted by (flow key,
    time), which a batch accounted from its flow groups builds only when a segment is cut (`rows`)."""

    __slots__ = (
        "_make_rows",
        "by_key",
        "end",
        "flags",
        "fwd",
        "fwd0",
        "k",
        "key",
        "order",
        "row0",
        "size",
        "start",
        "sums",
        "t",
        "t0",
        "t1",
        "t_max",
        "walk",
    )

    def __init__(self, start: np.ndarray, end: np.ndarray, key: np.ndarray, t0: np.ndarray, t1: np.ndarray,
                 row0: np.ndarray, fwd0: np.ndarray, sums: dict[str, np.ndarray], walk: np.ndarray,
                 by_key: np.ndarray, t_max: int) -> None:
        self.start = start  # per segment (walk order): first sorted position
        self.end = end  # one past the last
        self.key = key
        self.t0 = t0
        self.t1 = t1
        self.row0 = row0  # the segment's first row (a row of the batch)
        self.fwd0 = fwd0  # whether that row goes lo -> hi
        self.sums = sums  # per segment (walk order): pk_lo, by_lo, pk_hi, by_hi, fl_lo, fl_hi
        self.walk = walk  # walk position -> position in key order
        self.by_key = by_key  # the segments' walk positions in key order (ties: time order, so walk order)
        self.t_max = t_max  # the batch's last timestamp
        # the rows sorted by (key, time): keys, timestamps, lo -> hi, sizes, flags, batch row of each
        self.k = self.t = self.fwd = self.size = self.flags = self.order = None
        self._make_rows = None

    def rows(self) -> None:
        """Fill in the sorted rows (k, t, fwd, size, flags, order) if they are not there yet."""
        if self.k is None:
            other = self._make_rows()
            self.k, self.t, self.fwd, self.size, self.flags, self.order = (
                other.k, other.t, other.fwd, other.size, other.flags, other.order)


class _Runs:
    """Runs of consecutive elements of `values[order]` (a flow's groups in key order, `starts` where each
    run begins), reduced run by run: the values are gathered through `order` by the reductions, not sorted
    first.

    A flow is one or two groups as a rule (its two directions): then a run's reduction is its first value,
    combined with its second where there is one, a few gathers in place of `ufunc.reduceat`, which pays
    per run and costs several times more. Longer runs (a flow whose packets differ in their link headers,
    a key collision) go through reduceat."""

    def __init__(self, starts: np.ndarray, n: int, order: np.ndarray | None = None) -> None:
        self.starts = starts
        self.order = np.arange(n) if order is None else order
        self.sizes = np.diff(starts, append=n)
        self.pairs = bool(self.sizes.max() <= 2)
        self.two = np.flatnonzero(self.sizes == 2)  # the runs of two...
        self.first = self.order[starts]  # ...each run's first element...
        self.second = self.order[starts[self.two] + 1]  # ...and their second ones (indices into values)

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """`ufunc.reduceat(values[order], starts)`."""
        if not self.pairs:
            return ufunc.reduceat(values[self.order], self.starts)
        out = values[self.first]
        out[self.two] = ufunc(out[self.two], values[self.second])
        return out

    def argmin(self, values: np.ndarray) -> np.ndarray:
        """The element of each run with the smallest value (values distinct within a run), as an index
        into `values`."""
        if not self.pairs:
            ordered = values[self.order]
            run_min = np.repeat(np.minimum.reduceat(ordered, self.starts), self.sizes)
            return self.order[np.flatnonzero(ordered == run_min)]
        at = self.first.copy()
        later = values[self.second] < values[at[self.two]]
        at[self.two[later]] = self.second[later]
        return at


class FlowGroups(Protocol):
    """A batch's IP rows in groups of one directed flow tuple, per group: the flow key, whether the
    tuple goes lo -> hi, its first and last rows, packets, bytes, TCP flags (OR), and the group of each row."""

    key: np.ndarray
    fwd: np.ndarray
    first: np.ndarray
    last: np.ndarray
    packets: np.ndarray
    bytes: np.ndarray
    flags: np.ndarray

    def row_groups(self) -> np.ndarray: ...


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
        self._ended: list[tuple[np.ndarray, np.ndarray]] = []  # slot records of ended flows, reason codes
        self.evictions = 0
        self.created = 0
        self.now_ns = 0
        self._slots = np.zeros(1024, dtype=_SLOT_DTYPE)
        self._top = 0  # slots below are in use or free
        self._free = np.zeros(0, dtype=np.int64)
        self._index_keys = np.zeros(0, dtype=np.uint64)  # live keys, sorted
        self._index_slots = np.zeros(0, dtype=np.int64)
        self._lru = np.zeros(0, dtype=np.int64)  # live slots, least recently updated first
        self._rows: np.ndarray | None = None  # the IP rows of the batch being accounted
        self._rowmap: np.ndarray | None = None  # or, when given, their rows in it
        # what `report_live` has reported of each live slot's sums (_SUMS), once it is first called; and
        # the slot records and reported sums of the flows that ended since (see `drain_released`)
        self._reported: np.ndarray | None = None
        self._released: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def live(self) -> LiveFlows:
        """The live flows by key, least recently updated first."""
        return LiveFlows(self)

    # -- batches ----------------------------------------------------------------------------------

    def update(self, cols: np.ndarray, src_key: np.ndarray | None = None,
               dst_key: np.ndarray | None = None) -> None:
        """Account every IP row of a Columns batch.

        `src_key`/`dst_key`, when given, are `endpoint_keys` of the rows' (address, port) ends, already
        computed by the caller for other counters; the caller then gives IP rows only.
        """
        rows = cols
        if src_key is None or dst_key is None:
            ip = (cols["ip_version"] != 0) & (cols["depth"] >= DEPTH_NETWORK)
            rows = cols if ip.all() else take_rows(cols, ip)
            src_key = endpoint_keys(rows["src"], rows["sport"])
            dst_key = endpoint_keys(rows["dst"], rows["dport"])
        if len(rows) == 0:
            return
        meta = (rows["ip_version"].astype(np.uint64) << np.uint64(24)) | (
            rows["proto"].astype(np.uint64) << np.uint64(16)) | rows["vlan"].astype(np.uint64)
        keys = combine(np.minimum(src_key, dst_key), np.maximum(src_key, dst_key), meta)
        seg = self._segments(keys, src_key <= dst_key, np.ascontiguousarray(rows["ts_ns"]),
                             rows["wire_len"].astype(np.int64), np.ascontiguousarray(rows["tcp_flags"]))
        self._run(seg, rows, None)

    def update_groups(self, cols: np.ndarray, rowmap: np.ndarray | None, ts: np.ndarray, size: np.ndarray,
                      flags: Callable[[], np.ndarray], groups: FlowGroups) -> None:
        """Account IP rows given as groups of rows with one directed flow tuple (see `FlowGroups`).

        The rows are `cols[rowmap]` (`cols` itself for None); `ts` and `size` (wire length, int64) are
        theirs, and `flags()` makes their TCP flags (called only if the rows are sorted). When the batch's
        time runs forward and spans no more than the idle timeout, no flow has an idle gap in it: its
        segments are its flows, summed from the groups, and rows are sorted only if a segment is cut by
        the active timeout.
        """
        n = len(ts)
        if n == 0:
            return
        forward = bool((ts[1:] >= ts[:-1]).all())
        if forward and int(ts[-1]) - int(ts[0]) <= self.idle_ns:
            seg = self._segments_of_groups(ts, groups)

            def make_rows() -> _Segments:
                gid = groups.row_groups()
                return self._segments(groups.key[gid], groups.fwd[gid], ts, size, flags())

            seg._make_rows = make_rows
        else:
            gid = groups.row_groups()
            seg = self._segments(groups.key[gid], groups.fwd[gid], ts, size, flags())
        self._run(seg, cols, rowmap)

    def _run(self, seg: _Segments, rows: np.ndarray, rowmap: np.ndarray | None) -> None:
        self._rows = rows
        self._rowmap = rowmap
        m = len(seg.key)
        at, run = 0, m
        while at < m:
            stop = min(m, at + run)
            fits = self._apply(seg, at, stop)
            if fits == stop - at:
                at, run = stop, min(m, 2 * run)
            else:  # evictions would reach a flow this run updates: the longest run that is safe
                run = fits
        self._rows = self._rowmap = None
        self.now_ns = max(self.now_ns, seg.t_max)
        self._expire_idle()

    def _segments(self, keys: np.ndarray, forward: np.ndarray, ts: np.ndarray, size: np.ndarray,
                  flags: np.ndarray) -> _Segments:
        """The segments of rows with flow keys `keys`, `forward` where a row goes from the canonical "lo"
        end to "hi", timestamps `ts`, wire lengths `size` (int64) and TCP `flags` (contiguous arrays)."""
        order = None
        if len(ts) < 2 or (ts[1:] >= ts[:-1]).all():
            order = grouping_order(keys)
        if order is None:
            order = np.lexsort((ts, keys))
        k = keys[order]
        t = ts[order]
        n = len(k)
        starts = np.ones(n, dtype=bool)
        starts[1:] = (k[1:] != k[:-1]) | ((t[1:] - t[:-1]) > self.idle_ns)
        first = np.flatnonzero(starts)
        last = np.append(first[1:], n) - 1
        fwd = forward[order]
        size = size[order]
        flags = flags[order]
        pk_lo = np.add.reduceat(fwd.astype(np.int64), first)
        by_all = np.add.reduceat(size, first)
        by_lo = np.add.reduceat(size * fwd, first)
        sums = {
            "pk_lo": pk_lo, "by_lo": by_lo, "pk_hi": (last - first + 1) - pk_lo, "by_hi": by_all - by_lo,
            "fl_lo": np.bitwise_or.reduceat(np.where(fwd, flags, 0), first),
            "fl_hi": np.bitwise_or.reduceat(np.where(fwd, 0, flags), first),
        }
        # segments in order of their last packet: the order the live table is updated in
        walk = stable_order(t[last])
        by_key = np.empty_like(walk)
        by_key[walk] = np.arange(len(walk))
        head = first[walk]
        seg = _Segments(start=head, end=last[walk] + 1, key=k[head], t0=t[head], t1=t[last[walk]], row0=order[head],
                        fwd0=fwd[head], sums={name: v[walk] for name, v in sums.items()}, walk=walk, by_key=by_key,
                        t_max=int(t.max()))
        seg.k, seg.t, seg.fwd, seg.size, seg.flags, seg.order = k, t, fwd, size, flags, order
        return seg

    def _segments_of_groups(self, ts: np.ndarray, g: FlowGroups) -> _Segments:
        """`_segments` of a batch whose time runs forward over no more than the idle timeout: each flow
        is one segment, summed from its groups (its one or two directions, more on a key collision)."""
        ko = stable_order(g.key)
        ks = g.key[ko]
        change = np.empty(len(ks), dtype=bool)
        change[:1] = True
        np.not_equal(ks[1:], ks[:-1], out=change[1:])
        fs = np.flatnonzero(change)  # the flows' first groups, flows in key order
        fw, cnt, nbytes, fl, first = g.fwd, g.packets, g.bytes, g.flags, g.first
        # the groups' values are not sorted into key order: the reductions gather them through `ko`
        runs = _Runs(fs, len(ks), ko)
        row0 = runs.reduce(np.minimum, first)  # a flow's first row is its groups' first
        row1 = runs.reduce(np.maximum, g.last)
        # the counters summed per flow and the flags of each direction (lo -> hi in the low byte, hi -> lo
        # in the high byte) ORed per flow; the lo -> hi groups picked by products with `fw`, not np.where,
        # which branches on its mask, and the groups' directions follow no pattern (several times slower)
        pk_lo = runs.reduce(np.add, cnt * fw)
        by_lo = runs.reduce(np.add, nbytes * fw)
        packets = runs.reduce(np.add, cnt)
        nbytes = runs.reduce(np.add, nbytes)
        both = runs.reduce(np.bitwise_or, fl.astype(np.uint16) << (np.uint16(8) * ~fw))
        fwd0 = fw[runs.argmin(first)]  # the direction of the group of each flow's first row
        t1 = ts[row1]
        walk = stable_order(t1)
        by_key = np.empty_like(walk)
        by_key[walk] = np.arange(len(walk))
        end = np.cumsum(packets)  # the flows' rows sorted by (key, time): consecutive in key order
        packets, nbytes, pk_lo, by_lo, both = packets[walk], nbytes[walk], pk_lo[walk], by_lo[walk], both[walk]
        sums = {"pk_lo": pk_lo, "by_lo": by_lo, "pk_hi": packets - pk_lo, "by_hi": nbytes - by_lo,
                "fl_lo": (both & 0xFF).astype(np.uint8), "fl_hi": (both >> 8).astype(np.uint8)}
        end = end[walk]
        return _Segments(start=end - packets, end=end, key=ks[fs][walk], t0=ts[row0][walk], t1=t1[walk],
                         row0=row0[walk], fwd0=fwd0[walk], sums=sums, walk=walk, by_key=by_key,
                         t_max=int(ts[-1]))

    def _slot_of(self, keys: np.ndarray) -> np.ndarray:
        """The live slot of each key, -1 for none."""
        return self._lookup(keys)[0]

    def _lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The live slot of each key (-1 for none) and its position in the key index (where it is or
        would be inserted)."""
        ik = self._index_keys
        pos = np.searchsorted(ik, keys)
        pos_in = np.minimum(pos, max(len(ik) - 1, 0))
        found = (pos < len(ik)) & (ik[pos_in] == keys) if len(ik) else np.zeros(len(keys), dtype=bool)
        return np.where(found, self._index_slots[pos_in] if len(ik) else -1, -1), pos

    def _apply(self, seg: _Segments, a: int, b: int) -> int:
        """Merge segments a..b-1 (walk order) into the live flows and return b - a; or, when that run's
        evictions would reach a flow the run itself updates, do nothing and return the length of a
        shorter run (at least 1) that is safe."""
        m = b - a
        key = seg.key[a:b]
        t0 = seg.t0[a:b]
        t1 = seg.t1[a:b]
        # the previous segment of the same key in this run (they are in time order), -1 for none
        whole = a == 0 and b == len(seg.key)
        by_key = seg.by_key if whole else stable_order(key)
        same = key[by_key[1:]] == key[by_key[:-1]]
        prev = np.full(m, -1, dtype=np.int64)
        prev[by_key[1:][same]] = by_key[:-1][same]
        is_last = np.ones(m, dtype=bool)
        is_last[by_key[:-1][same]] = False
        head = prev < 0
        # looked up in key order when the run is the whole batch: sorted lookups stay in the cache
        if whole:
            slot_in_key_order, index_at = self._lookup(key[by_key])
            slot0 = np.where(head, slot_in_key_order[seg.walk], -1)
        else:
            slot0 = np.where(head, self._slot_of(key), -1)
        found = slot0 >= 0
        old = _take(self._slots, np.maximum(slot0, 0))
        idle_gap = found & (t0 - old["last_ns"] > self.idle_ns)
        cont = found & ~idle_gap
        reach = np.where(cont, old["first_ns"], t0)
        cut = t1 - reach > self.active_ns  # cut where the active timeout falls
        later = np.flatnonzero(~head)
        back = prev[later]
        stuck = cont[back] & ~cut[back] & (t0[later] - old["last_ns"][back] <= self.idle_ns)
        if stuck.any():
            # a live flow whose last packet is later than this run's (timestamps going back across
            # batches) is not idle at the key's next segment: that segment goes in the next run
            return int(later[stuck][0])

        # evictions: the c-th new key of the run evicts once the table is over its cap
        live_n = len(self._lru)
        new_key = np.flatnonzero(head & ~found)
        spare = self.max_flows - live_n
        evict_at = new_key[spare:] if len(new_key) > spare else new_key[:0]
        victims = self._victims(slot0[found], np.flatnonzero(found), evict_at)
        if isinstance(victims, int):
            return victims

        # pieces: a segment is one piece, or several where the active timeout cuts it
        piece_seg = np.arange(m, dtype=np.int64)
        piece_sub = np.zeros(m, dtype=np.int64)  # 0 for a segment's first piece, 2, 3, ... for cuts
        piece_start = seg.start[a:b].copy()
        piece_end = seg.end[a:b].copy()
        piece_cont = cont.copy()  # the first piece continues the flow live before the run
        ends_old_active = np.zeros(m, dtype=bool)  # the live flow ends active at the first packet
        sums = {name: v[a:b] for name, v in seg.sums.items()}
        cuts = np.flatnonzero(cut)
        if len(cuts):
            seg.rows()
            extra = self._cut(seg, cuts, a, cont, old["first_ns"], piece_end, ends_old_active, sums)
            piece_cont &= ~ends_old_active
            piece_seg = np.concatenate([piece_seg, extra[0]])
            piece_sub = np.concatenate([piece_sub, extra[1]])
            piece_start = np.concatenate([piece_start, extra[2]])
            piece_end = np.concatenate([piece_end, extra[3]])
            piece_cont = np.concatenate([piece_cont, np.zeros(len(extra[0]), dtype=bool)])
            sums = {name: np.concatenate([v, extra[4][name]]) for name, v in sums.items()}
            p_order = np.lexsort((piece_sub, piece_seg))
            piece_seg, piece_sub, piece_start, piece_end, piece_cont = (
                piece_seg[p_order], piece_sub[p_order], piece_start[p_order], piece_end[p_order],
                piece_cont[p_order])
            sums = {name: v[p_order] for name, v in sums.items()}
        n_pieces = len(piece_seg)
        if len(cuts):
            first_piece = np.searchsorted(piece_seg, np.arange(m))  # of each segment
            last_piece = np.append(first_piece[1:], n_pieces) - 1
        else:
            last_piece = piece_seg  # a segment is a piece

        # the state each piece leaves its flow in: without cuts a piece is a segment, and the live flows'
        # records (`old`) are the state of those that continue, updated in place
        gone_old = np.flatnonzero(idle_gap | ends_old_active)  # live flows ended by their own segment
        gone_state = _take(old, gone_old)
        state = old if not len(cuts) else np.zeros(n_pieces, dtype=_SLOT_DTYPE)
        fresh = ~piece_cont
        if len(cuts):  # pieces from the sorted rows
            p_row0, p_key, p_fwd = seg.order[piece_start], seg.k[piece_start], seg.fwd[piece_start]
            p_t0, p_t1 = seg.t[piece_start], seg.t[piece_end - 1]
        else:  # a piece is a segment
            p_row0, p_key, p_fwd = seg.row0[a:b], seg.key[a:b], seg.fwd0[a:b]
            p_t0, p_t1 = seg.t0[a:b], seg.t1[a:b]
        at_rows = p_row0[fresh]
        rows = take_rows(self._rows, at_rows if self._rowmap is None else self._rowmap[at_rows])
        f = np.zeros(len(at_rows), dtype=_SLOT_DTYPE)
        f["key"] = p_key[fresh]
        f["ip_version"] = rows["ip_version"]
        f["proto"] = rows["proto"]
        f["vlan"] = rows["vlan"]
        f["a_addr"] = rows["src"]
        f["a_port"] = rows["sport"]
        f["b_addr"] = rows["dst"]
        f["b_port"] = rows["dport"]
        f["a_is_lo"] = p_fwd[fresh]
        f["first_ns"] = p_t0[fresh]
        f["last_ns"] = p_t1[fresh]
        _put(state, fresh, f)
        kept = np.flatnonzero(piece_cont)
        if not len(cuts):  # (a new flow's first and last are its piece's)
            first_ns, last_ns = state["first_ns"], state["last_ns"]
            np.minimum(first_ns, p_t0, out=first_ns)
            np.maximum(last_ns, p_t1, out=last_ns)
        elif len(kept):
            c = _take(old, piece_seg[kept])
            c["first_ns"] = np.minimum(c["first_ns"], p_t0[kept])
            c["last_ns"] = np.maximum(c["last_ns"], p_t1[kept])
            _put(state, kept, c)
        for name in _SUMS:
            state[name] += sums[name]
        for name in _FLAGS:
            state[name] |= sums[name].astype(np.uint8)
        self.created += int(fresh.sum())

        # flows that end in the run, in the order they end
        ev_pos: list[np.ndarray] = []
        ev_sub: list[np.ndarray] = []
        ev_state: list[np.ndarray] = []
        ev_reason: list[np.ndarray] = []
        ev_pos.append(gone_old)
        ev_sub.append(np.zeros(len(gone_old), dtype=np.int64))
        ev_state.append(gone_state)
        ev_reason.append(np.where(idle_gap[gone_old], 0, 1))
        later = np.flatnonzero(~head)  # a later segment of a key ends the previous one, idle
        ev_pos.append(later)
        ev_sub.append(np.zeros(len(later), dtype=np.int64))
        ev_state.append(_take(state, last_piece[prev[later]]))
        ev_reason.append(np.zeros(len(later), dtype=np.int64))
        cut_pieces = np.flatnonzero(piece_sub > 0)  # an active cut ends the piece before it
        ev_pos.append(piece_seg[cut_pieces])
        ev_sub.append(piece_sub[cut_pieces])
        ev_state.append(_take(state, cut_pieces - 1))
        ev_reason.append(np.ones(len(cut_pieces), dtype=np.int64))
        if len(evict_at):
            ev_pos.append(evict_at)
            ev_sub.append(np.ones(len(evict_at), dtype=np.int64))
            ev_state.append(_take(self._slots, victims))
            ev_reason.append(np.full(len(evict_at), 2, dtype=np.int64))
            self.evictions += len(evict_at)
        parts = [i for i, p in enumerate(ev_pos) if len(p)]
        if len(parts) == 1:
            i = parts[0]
            e_order = np.lexsort((ev_sub[i], ev_pos[i]))
            self._end(_take(ev_state[i], e_order), ev_reason[i][e_order])
        elif parts:
            e_order = np.lexsort((np.concatenate([ev_sub[i] for i in parts]), np.concatenate([ev_pos[i] for i in parts])))
            reasons = np.concatenate([ev_reason[i] for i in parts])[e_order]
            states = _take(_join([ev_state[i] for i in parts]), e_order)
            self._end(states, reasons)

        # the live table after the run: every key of the run lives on in its last piece
        finals = np.flatnonzero(is_last)  # segments, in walk order
        final_piece = last_piece[finals]
        final_slot = np.full(len(finals), -1, dtype=np.int64)
        head_of = finals.copy()  # the key's first segment in the run
        while True:
            back = prev[head_of]
            if (back < 0).all():
                break
            head_of = np.where(back >= 0, back, head_of)
        reused = piece_cont[final_piece]
        final_slot[reused] = slot0[head_of[reused]]
        victim_keys = self._slots["key"][victims]
        # slots of live flows that ended (replaced by a new flow of their key, or evicted) are free again
        retired = np.concatenate([slot0[gone_old], victims])
        ended_cont = np.flatnonzero(cont & ~ends_old_active)
        lives_on = np.zeros(m, dtype=bool)  # (np.isin, without its sort)
        lives_on[head_of[reused]] = True
        ended_cont = ended_cont[~lives_on[ended_cont]]
        retired = np.concatenate([retired, slot0[ended_cont]])
        self._release(retired)
        self._free = np.concatenate([self._free, retired])
        fresh_final = np.flatnonzero(~reused)
        final_slot[fresh_final] = self._alloc(len(fresh_final))
        _put(self._slots, final_slot, state if len(final_piece) == n_pieces else _take(state, final_piece))
        touched = np.zeros(self._top, dtype=bool)
        touched[slot0[found]] = True
        touched[victims] = True
        lru = self._lru
        # np.compress, not a boolean index: numpy's boolean index branches on every element, and which
        # live flows a batch touches follows no pattern (~4 times slower at half of them)
        self._lru = np.concatenate([np.compress(~touched[lru], lru), final_slot])
        # the key index: evicted keys leave, the run's keys point at their final slots (those that
        # continue a live flow in its slot are there already)
        if whole:  # the run's keys in key order: the index lookups stay in the cache
            final_at = np.full(m, -1, dtype=np.int64)
            final_at[finals] = np.arange(len(finals))
            last_of_key = np.flatnonzero(is_last[by_key])  # key order positions
            in_key_order = final_at[by_key[last_of_key]]
            moved = ~reused[in_key_order]
            in_key_order = in_key_order[moved]
            # their places in the index, found by the run's lookup (a key's segments share the place)
            self._reindex(victim_keys, key[finals][in_key_order], final_slot[in_key_order],
                          index_at[last_of_key[moved]])
        else:
            self._reindex(victim_keys, key[finals][~reused], final_slot[~reused])
        return m

    def _victims(self, found_slots: np.ndarray, found_at: np.ndarray, evict_at: np.ndarray) -> np.ndarray | int:
        """The slots evicted at positions `evict_at` of a run, least recently updated first; or, when one
        of them would be a flow the run updates, the length of the run before that eviction (at least 1)."""
        e = len(evict_at)
        if e == 0:
            return np.zeros(0, dtype=np.int64)
        lru = self._lru
        touch = np.full(self._top, _NEVER, dtype=np.int64)
        touch[found_slots] = found_at
        t = touch[lru]
        untouched = t == _NEVER
        u = np.flatnonzero(untouched)
        safe = _NEVER
        if len(u) < e:
            safe = int(evict_at[len(u)])  # that eviction would take a flow updated in the run
            e = len(u)
        if e:
            # a flow updated by the run, ahead of the last victim in the LRU order, must have moved to
            # the back (been updated) before the eviction that would otherwise take it
            ahead = np.flatnonzero(~untouched[: u[e - 1]])
            if len(ahead):
                number = np.cumsum(untouched)[ahead]  # untouched flows ahead of it: its eviction's number
                taken = t[ahead] > evict_at[number]
                if taken.any():
                    safe = min(safe, int(evict_at[number[taken]].min()))
        if safe != _NEVER:
            return max(safe, 1)
        return lru[u[:e]]

    def _cut(self, seg: _Segments, cuts: np.ndarray, a: int, cont: np.ndarray, old_first: np.ndarray,
             piece_end: np.ndarray, ends_old_active: np.ndarray, sums: dict[str, np.ndarray]) -> tuple:
        """Cut the segments that pass the active timeout at the packets that do (packet-time exact)."""
        t = seg.t
        active = self.active_ns
        e_seg: list[int] = []
        e_sub: list[int] = []
        e_start: list[int] = []
        e_end: list[int] = []
        for j in cuts.tolist():
            s, e = int(seg.start[a + j]), int(seg.end[a + j])
            bounds = [s]
            if cont[j]:
                first = int(old_first[j])
                if int(t[s]) - first > active:
                    ends_old_active[j] = True
                    first = int(t[s])
                else:
                    first = min(first, int(t[s]))
            else:
                first = int(t[s])
            at = s
            while True:
                at = s + int(np.searchsorted(t[s:e], first + active, side="right"))
                if at >= e:
                    break
                bounds.append(at)
                first = int(t[at])
            bounds.append(e)
            piece_end[j] = bounds[1]
            for i in range(1, len(bounds) - 1):
                e_seg.append(j)
                e_sub.append(i + 1)
                e_start.append(bounds[i])
                e_end.append(bounds[i + 1])
        starts = np.array(e_start, dtype=np.int64)
        ends = np.array(e_end, dtype=np.int64)
        # re-sum the cut segments' pieces (first pieces in place, the others appended), over their rows only
        all_starts = np.concatenate([seg.start[a + cuts], starts])
        all_ends = np.concatenate([piece_end[cuts], ends])
        lengths = all_ends - all_starts
        at = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=at[1:])
        rows = np.repeat(all_starts - at, lengths) + np.arange(int(lengths.sum()))
        fwd, size, flags = seg.fwd[rows], seg.size[rows], seg.flags[rows]
        pk_lo = np.add.reduceat(fwd.astype(np.int64), at)
        by_all = np.add.reduceat(size, at)
        by_lo = np.add.reduceat(np.where(fwd, size, 0), at)
        new = {"pk_lo": pk_lo, "by_lo": by_lo, "pk_hi": lengths - pk_lo, "by_hi": by_all - by_lo,
               "fl_lo": np.bitwise_or.reduceat(np.where(fwd, flags, 0), at),
               "fl_hi": np.bitwise_or.reduceat(np.where(fwd, 0, flags), at)}
        k = len(cuts)
        for name, values in sums.items():
            values = values.copy()
            values[cuts] = new[name][:k]
            sums[name] = values
        extra_sums = {name: v[k:] for name, v in new.items()}
        return (np.array(e_seg, dtype=np.int64), np.array(e_sub, dtype=np.int64), starts, ends, extra_sums)

    # -- the live table's storage -----------------------------------------------------------------

    def _alloc(self, n: int) -> np.ndarray:
        """n free slots (reused first, then new ones; the storage grows as needed)."""
        take = min(n, len(self._free))
        got = self._free[len(self._free) - take :]
        self._free = self._free[: len(self._free) - take]
        more = n - take
        if self._top + more > len(self._slots):
            grown = np.zeros(max(2 * len(self._slots), self._top + more), dtype=_SLOT_DTYPE)
            grown.view(_SLOT_BYTES)[: self._top] = self._slots[: self._top].view(_SLOT_BYTES)  # (whole records)
            self._slots = grown
        fresh = np.arange(self._top, self._top + more, dtype=np.int64)
        self._top += more
        return np.concatenate([got, fresh])

    def _reindex(self, gone: np.ndarray, keys: np.ndarray, slots: np.ndarray, at: np.ndarray | None = None) -> None:
        """Remove `gone` keys from the index, then point `keys` at `slots` (adding the new ones).

        `at`, when given, are the keys' `_lookup` positions in the index before the removals, the keys
        distinct and ascending: without removals, they are where the new keys go (no search, no sort).
        """
        ik, islot = self._index_keys, self._index_slots
        if len(gone):
            keep = np.ones(len(ik), dtype=bool)
            keep[np.searchsorted(ik, gone)] = False
            ik, islot = ik[keep], islot[keep]
            at = None
        pos = np.searchsorted(ik, keys) if at is None else at
        pos_in = np.minimum(pos, max(len(ik) - 1, 0))
        known = (pos < len(ik)) & (ik[pos_in] == keys) if len(ik) else np.zeros(len(keys), dtype=bool)
        islot[pos[known]] = slots[known]
        add = np.flatnonzero(~known)
        if len(add):
            new_keys, new_slots = keys[add], slots[add]
            if at is None:
                order = np.argsort(new_keys)
                new_keys, new_slots = new_keys[order], new_slots[order]
                where = np.searchsorted(ik, new_keys)
            else:
                where = pos[add]
            # both arrays merged through one mask (np.insert, called twice, would sort the places twice)
            where += np.arange(len(add))
            old = np.ones(len(ik) + len(add), dtype=bool)
            old[where] = False
            merged_keys = np.empty(len(old), dtype=np.uint64)
            merged_keys[where] = new_keys
            merged_keys[old] = ik
            merged_slots = np.empty(len(old), dtype=np.int64)
            merged_slots[where] = new_slots
            merged_slots[old] = islot
            ik, islot = merged_keys, merged_slots
        self._index_keys, self._index_slots = ik, islot

    def _remove(self, slots: np.ndarray) -> None:
        """Take live slots out of the table (their flows have ended)."""
        if len(slots) == len(self._index_keys):  # (distinct live slots) every live flow: the index empties
            self._index_keys = self._index_keys[:0]
            self._index_slots = self._index_slots[:0]
        else:
            gone = self._slots["key"][slots]
            keep = np.ones(len(self._index_keys), dtype=bool)
            keep[np.searchsorted(self._index_keys, gone)] = False
            self._index_keys = self._index_keys[keep]
            self._index_slots = self._index_slots[keep]
        self._release(slots)
        self._free = np.concatenate([self._free, slots])

    # -- what was reported of the live flows ------------------------------------------------------

    def report_live(self) -> tuple[np.ndarray, np.ndarray]:
        """The live flows whose sums grew since the last call, as slot records, and by how much (an int64
        row of pk_lo, by_lo, pk_hi, by_hi each); the sums are then taken as reported.

        With `drain_released`, a caller counting what flows carried (talkers) counts each packet once:
        the ended flows' whole sums (`drain_records`), less what was reported of them while they lived.
        """
        if self._reported is None or len(self._reported) < len(self._slots):
            grown = np.zeros((len(self._slots), len(_SUMS)), dtype=np.int64)
            if self._reported is not None:
                grown[: len(self._reported)] = self._reported
            self._reported = grown
        lru = self._lru
        sums = np.stack([self._slots[name][lru] for name in _SUMS], axis=1)
        grew = sums - self._reported[lru]
        changed = np.flatnonzero(grew.any(axis=1))
        slots = lru[changed]
        self._reported[slots] = sums[changed]
        return _take(self._slots, slots), grew[changed]

    def _release(self, slots: np.ndarray) -> None:
        """Slots whose flows ended: what was reported of them is kept for `drain_released`, then cleared."""
        if self._reported is None:  # (nothing reported yet)
            return
        slots = slots[slots < len(self._reported)]
        reported = self._reported[slots]
        shown = np.flatnonzero(reported.any(axis=1))
        if len(shown):
            self._released.append((_take(self._slots, slots[shown]), reported[shown]))
            self._reported[slots[shown]] = 0

    def drain_released(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Take the flows that ended since the last drain having been reported live (`report_live`): their
        slot records and the sums reported of them."""
        released, self._released = self._released, []
        return released

    def _expire_idle(self) -> None:
        lru = self._lru
        if not len(lru):
            return
        # the idle flows are a prefix of `live` (up to the first flow that is not): looked for in
        # prefixes of growing length, as a rule the first flow alone
        since = self.now_ns - self.idle_ns
        last_ns = self._slots["last_ns"]
        stop, size = 0, 1
        while stop < len(lru):
            busy = last_ns[lru[stop : stop + size]] >= since
            if busy.any():
                stop += int(np.argmax(busy))
                break
            stop += len(busy)
            size *= 4
        if stop:
            done = lru[:stop]
            self._end(_take(self._slots, done), np.full(len(done), _IDLE, dtype=np.int64))
            self._remove(done)
            self._lru = lru[stop:]

    def top(self, limit: int) -> list[Flow]:
        """The live flows that can be among the `limit` largest by bytes or by packets, least recently
        updated first: what `snapshot.top_flows` needs of them, without building every live Flow.

        Every flow ranked at or above the `limit`-th by (bytes, packets, first_ns) or by (packets, bytes,
        first_ns) is kept, ties included, in the order of `live`: so `top_flows` of these equals
        `top_flows` of all live flows.
        """
        lru = self._lru
        s = self._slots
        keep = top_candidates(s["by_lo"][lru] + s["by_hi"][lru], s["pk_lo"][lru] + s["pk_hi"][lru],
                              s["first_ns"][lru], limit)
        return _flows(_take(s, lru[keep]), "")

    def flush(self, now_ns: int | None = None) -> None:
        """End every live flow (end of capture, or of a live run).

        At `now_ns` (default: the last packet's time), flows idle longer than the idle timeout end as
        'idle', as they would have had the clock run on with more packets; the others end as 'end'. A
        live worker passes the wall clock at stop: its own last packet may be long before the other
        workers' last ones, and the whole capture would have expired its idle flows.
        """
        if now_ns is not None and now_ns > self.now_ns:
            self.now_ns = now_ns
            self._expire_idle()
        lru = self._lru
        self._end(_take(self._slots, lru), np.full(len(lru), _EOF, dtype=np.int64))
        self._remove(lru)
        self._lru = lru[:0]

    def drain(self) -> list[Flow]:
        """Take the flows that ended since the last drain."""
        states, reasons = self.drain_records()
        return _flows(states, reasons)

    def drain_records(self) -> tuple[np.ndarray, np.ndarray]:
        """Take the flows that ended since the last drain as slot records (`_SLOT_DTYPE`) and end reason
        codes (see `END_REASONS`), in the order they ended: `flows_of` makes Flows of those wanted."""
        parts, self._ended = self._ended, []
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.zeros(0, dtype=_SLOT_DTYPE), np.zeros(0, dtype=np.int64)
        return _join([states for states, _ in parts]), np.concatenate([reasons for _, reasons in parts])

    def _end(self, states: np.ndarray, reasons: np.ndarray) -> None:
        if len(states):
            self._ended.append((states, reasons))
