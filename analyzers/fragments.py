"""IP fragments, counted with their datagram.

Only the first fragment of a datagram carries the transport header. The tracker copies its ports to
the later fragments (so every fragment lands in the datagram's flow) and reports when a datagram is
complete, which is when tshark, reassembling by default, sees its transport header.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pktscope.decoders.columns import DEPTH_TRANSPORT, FRAG_FIRST, FRAG_NONE


@dataclass(slots=True)
class _Datagram:
    first: np.ndarray | None = None  # the first fragment's row (a copy), once seen
    pieces: dict[int, int] = field(default_factory=dict)  # offset -> length
    total: int | None = None  # datagram payload length, known from the last fragment


class FragmentTracker:
    """Datagram reassembly state, bounded to `max_pending` incomplete datagrams (oldest go first)."""

    def __init__(self, max_pending: int = 65536) -> None:
        self.max_pending = max_pending
        self.pending: dict[tuple, _Datagram] = {}
        self.evicted = 0
        self.completed = 0

    def process(self, cols: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Fill later fragments' ports in place; return the first-fragment rows of datagrams completed.

        `rows`, when given, are the indices of the fragment rows (`frag` not FRAG_NONE), found by the caller.
        """
        idx = np.flatnonzero(cols["frag"] != FRAG_NONE) if rows is None else rows
        done: list[np.ndarray] = []
        for i in idx.tolist():
            row = cols[i]
            key = (int(row["ip_version"]), row["src"].tobytes(), row["dst"].tobytes(),
                   int(row["proto"]), int(row["ip_id"]))
            dg = self.pending.get(key)
            if dg is None:
                dg = self.pending[key] = _Datagram()
                if len(self.pending) > self.max_pending:
                    del self.pending[next(iter(self.pending))]
                    self.evicted += 1
            if row["frag"] == FRAG_FIRST:
                dg.first = row.copy()
            elif dg.first is not None:
                row["sport"] = dg.first["sport"]
                row["dport"] = dg.first["dport"]
            offset = int(row["frag_offset"])
            dg.pieces[offset] = max(dg.pieces.get(offset, 0), int(row["frag_len"]))
            if not row["more_frags"]:
                dg.total = offset + int(row["frag_len"])
            if dg.first is not None and dg.total is not None and self._covered(dg):
                del self.pending[key]
                self.completed += 1
                if dg.first["depth"] >= DEPTH_TRANSPORT:
                    done.append(dg.first)
        if not done:
            return cols[:0]
        return np.array(done, dtype=cols.dtype)

    @staticmethod
    def _covered(dg: _Datagram) -> bool:
        end = 0
        for offset in sorted(dg.pieces):
            if offset > end:
                return False
            end = max(end, offset + dg.pieces[offset])
        return dg.total is not None and end >= dg.total
