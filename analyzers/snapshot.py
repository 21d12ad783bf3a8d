"""Snapshot: the mergeable summary that every presenter (tables, JSON, CSV, TUI) renders.

Offline and live analysis produce the same Snapshot. Live workers send snapshot *deltas*; the
parent absorbs them into one Snapshot, so counts add up and sets union.
"""

from __future__ import annotations

import gc
import heapq
from dataclasses import dataclass, field

import numpy as np

from pktscope.analyzers.flows import Flow
from pktscope.analyzers.keys import unique

# counter layouts (lists, so that absorbing adds element-wise)
PKTS, BYTES = 0, 1  # [packets, bytes]
SENT_P, SENT_B, RECV_P, RECV_B = 0, 1, 2, 3  # per host


def _add_counts(into: dict, other: dict) -> None:
    for key, values in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = list(values)
        else:
            for i, v in enumerate(values):
                mine[i] += v


class KeySet:
    """A set of uint64 keys (conversation keys) gathered as numpy arrays, a batch or a delta at a time.

    The parts are kept as they come and merged (one sort, duplicates dropped) when they outgrow the merged
    part, or when the keys are asked for: Python never touches a key (a capture has 10^5 conversations,
    and a set of ints costs a Python object each). Only the count is reported.
    """

    __slots__ = ("_merged", "_parts", "_pending")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._merged = 0
        if keys is not None:
            self.add(np.asarray(keys, dtype=np.uint64))

    def add(self, keys: np.ndarray) -> None:
        """Add uint64 keys (repeats allowed)."""
        if len(keys):
            self._parts.append(keys)
            self._pending += len(keys)
            if self._pending > max(4 * self._merged, 1 << 18):
                self._merge()

    def update(self, other: KeySet) -> None:
        """Add another set's keys."""
        for part in other._parts:
            self.add(part)

    def _merge(self) -> None:
        if len(self._parts) > 1 or self._pending > self._merged:  # parts added since the last merge
            self._parts = [unique(np.concatenate(self._parts))]
        self._merged = self._pending = len(self._parts[0]) if self._parts else 0

    def keys(self) -> np.ndarray:
        """The distinct keys, ascending."""
        self._merge()
        return self._parts[0] if self._parts else np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.keys())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeySet):
            return NotImplemented
        return bool(np.array_equal(self.keys(), other.keys()))

    def __repr__(self) -> str:
        return f"KeySet({self.keys().tolist()!r})"


@dataclass
class Snapshot:
    """What was seen: totals, breakdowns, talkers, conversation keys, top flows, counters."""

    packets: int = 0
    bytes: int = 0  # sum of wire lengths
    captured_bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    linktypes: dict[int, int] = field(default_factory=dict)  # link type -> packets
    status: dict[str, int] = field(default_factory=dict)  # "truncated"/"malformed"/"unsupported" -> frames
    l2: dict[str, list[int]] = field(default_factory=dict)  # name -> [packets, bytes]
    l3: dict[str, list[int]] = field(default_factory=dict)
    l4: dict[str, list[int]] = field(default_factory=dict)
    hosts: dict[bytes, list[int]] = field(default_factory=dict)  # address -> [sent p, sent B, recv p, recv B]
    ports: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (proto, port) -> [p, B]
    # tshark-style conversation keys (unordered pairs), over the whole capture, no timeouts
    conv_keys: dict[str, KeySet] = field(
        default_factory=lambda: {"ipv4": KeySet(), "ipv6": KeySet(), "tcp": KeySet(), "udp": KeySet()})
    flows_ended: int = 0
    flows_live: int = 0
    flow_evictions: int = 0
    flow_end_reasons: dict[str, int] = field(default_factory=dict)
    top_flows: list[Flow] = field(default_factory=list)  # the largest flows, ended or live
    top_limit: int = 100
    extra: dict[str, object] = field(default_factory=dict)  # source-specific: kernel counters, file info

    @property
    def flows_total(self) -> int:
        return self.flows_ended + self.flows_live

    def hold_hosts(self, addrs: np.ndarray, counts: np.ndarray) -> bool:
        """Take the talkers as arrays (uint8 rows of 16 address bytes, distinct; int64 rows of the four
        counts) if there are none yet, and return whether they were taken: `hosts` is made of them when
        it is first read. A report that only ranks them (`host_arrays`) never builds the dict, 10^5
        Python lists and bytes in a large capture."""
        if self.__dict__["_hosts"] or "_host_arrays" in self.__dict__:
            return False
        self.__dict__["_host_arrays"] = (addrs, counts)
        return True

    def host_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The talkers as `hold_hosts` took them, if `hosts` has not been made of them since."""
        return self.__dict__.get("_host_arrays")

    def conversations(self) -> dict[str, int]:
        """Conversation counts as tshark's -z conv,ip / conv,ipv6 / conv,tcp / conv,udp count them."""
        return {name: len(keys) for name, keys in self.conv_keys.items()}

    def absorb(self, other: Snapshot) -> None:
        """Add a delta (or another worker's snapshot) into this one, in place."""
        self.packets += other.packets
        self.bytes += other.bytes
        self.captured_bytes += other.captured_bytes
        if other.first_ns is not None:
            self.first_ns = other.first_ns if self.first_ns is None else min(self.first_ns, other.first_ns)
        if other.last_ns is not None:
            self.last_ns = other.last_ns if self.last_ns is None else max(self.last_ns, other.last_ns)
        for k, v in other.linktypes.items():
            self.linktypes[k] = self.linktypes.get(k, 0) + v
        for k, v in other.status.items():
            self.status[k] = self.status.get(k, 0) + v
        for mine, theirs in ((self.l2, other.l2), (self.l3, other.l3), (self.l4, other.l4),
                             (self.hosts, other.hosts), (self.ports, other.ports)):
            _add_counts(mine, theirs)
        for name, keys in other.conv_keys.items():
            self.conv_keys.setdefault(name, KeySet()).update(keys)
        self.flows_ended += other.flows_ended
        self.flows_live += other.flows_live
        self.flow_evictions += other.flow_evictions
        for k, v in other.flow_end_reasons.items():
            self.flow_end_reasons[k] = self.flow_end_reasons.get(k, 0) + v
        self.top_flows = top_flows(self.top_flows + other.top_flows, self.top_limit)


def _get_hosts(self: Snapshot) -> dict[bytes, list[int]]:
    held = self.__dict__.pop("_host_arrays", None)
    hosts = self.__dict__["_hosts"]
    if held is not None:
        addrs, counts = held
        # without the cyclic garbage collector meanwhile: the lists made here would set it off again and
        # again; they hold ints only (no cycles)
        enabled = gc.isenabled()
        gc.disable()
        try:
            hosts.update(zip(np.ascontiguousarray(addrs).view("V16").ravel().tolist(), counts.tolist()))
        finally:
            if enabled:
                gc.enable()
    return hosts


def _set_hosts(self: Snapshot, hosts: dict[bytes, list[int]]) -> None:
    self.__dict__.pop("_host_arrays", None)
    self.__dict__["_hosts"] = hosts


# `hosts` stays a dataclass field (in __init__, ==, repr) read and written through a property: the talkers
# may be held as arrays (`hold_hosts`) until it is read
Snapshot.hosts = property(_get_hosts, _set_hosts)  # type: ignore[assignment]


def top_flows(flows: list[Flow], limit: int) -> list[Flow]:
    """The flows among the `limit` largest by bytes or by packets, largest bytes first."""
    by_bytes = heapq.nlargest(limit, flows, key=lambda f: (f.bytes, f.packets, f.first_ns))
    by_packets = heapq.nlargest(limit, flows, key=lambda f: (f.packets, f.bytes, f.first_ns))
    seen: dict[tuple[int, int], Flow] = {}
    for f in by_bytes + by_packets:
        # the same flow twice (a live flow in successive deltas): its counters only grow
        known = seen.get((f.key, f.first_ns))
        if known is None or f.packets > known.packets:
            seen[(f.key, f.first_ns)] = f
    return sorted(seen.values(), key=lambda f: (-f.bytes, -f.packets, f.first_ns))
