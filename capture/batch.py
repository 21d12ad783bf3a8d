"""Batch: many captured frames at once, the unit that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Batch:
    """Frames held in one buffer, described by parallel arrays (one element per frame).

    Frame i is ``buf[offsets[i] : offsets[i] + caplens[i]]``. A Batch is a TPACKET_V3 block or a
    slice of a capture file; nothing downstream sees one packet at a time.
    """

    buf: bytes | bytearray | memoryview
    offsets: np.ndarray  # int64: start of each frame in buf
    caplens: np.ndarray  # uint32: bytes captured
    wirelens: np.ndarray  # uint32: bytes on the wire
    ts_ns: np.ndarray  # int64: nanoseconds since the Unix epoch
    linktypes: np.ndarray  # uint16: LINKTYPE_* value of each frame (pcapng interfaces differ)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def select(self, index: np.ndarray | slice) -> Batch:
        """The frames picked by `index` (a boolean mask, row numbers or a slice), sharing this buffer."""
        return Batch(self.buf, self.offsets[index], self.caplens[index], self.wirelens[index],
                     self.ts_ns[index], self.linktypes[index])

    def frame(self, i: int) -> bytes:
        """The captured bytes of frame i (a copy)."""
        start = int(self.offsets[i])
        return bytes(self.buf[start : start + int(self.caplens[i])])

    @classmethod
    def from_frames(
        cls,
        frames: list[bytes],
        ts_ns: list[int] | np.ndarray,
        linktype: int | list[int] | np.ndarray,
        wirelens: list[int] | np.ndarray | None = None,
    ) -> Batch:
        """Build a Batch by concatenating frames (tests, small inputs)."""
        caplens = np.fromiter((len(f) for f in frames), dtype=np.uint32, count=len(frames))
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            np.cumsum(caplens[:-1], out=offsets[1:])
        lt = np.broadcast_to(np.asarray(linktype, dtype=np.uint16), (len(frames),)).copy()
        wl = caplens.copy() if wirelens is None else np.asarray(wirelens, dtype=np.uint32)
        return cls(
            buf=b"".join(frames),
            offsets=offsets,
            caplens=caplens,
            wirelens=wl,
            ts_ns=np.asarray(ts_ns, dtype=np.int64),
            linktypes=lt,
        )
