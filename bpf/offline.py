"""A tcpdump expression applied to captured frames in userspace (for `read FILE EXPRESSION`).

libpcap compiles the expression (pcapy-ng) once per link type, and libpcap's own BPF interpreter
runs it on each frame, so the verdicts are tcpdump's.
"""

from __future__ import annotations

import numpy as np
import pcapy
from pktscope.capture import linktypes as lt
from pktscope.capture.batch import Batch

SNAPLEN = 262144

# libpcap compiles for a DLT; files store LINKTYPE values, which differ only for raw IP
# (LINKTYPE_RAW 101 is DLT_RAW, 12 on Linux; see libpcap pcap-common.c linktype_to_dlt)
_LINKTYPE_TO_DLT = {lt.LINKTYPE_RAW: 12, 14: 12}


class FrameFilter:
    """A compiled filter expression; raises ValueError with libpcap's message if it does not compile."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._programs: dict[int, object] = {}
        self.unfilterable: set[int] = set()  # link types the expression cannot be compiled for
        self.program(lt.LINKTYPE_ETHERNET, strict=True)

    def program(self, linktype: int, strict: bool = False) -> object | None:
        """The compiled program for a link type (None where libpcap cannot compile it for that type)."""
        if linktype in self._programs:
            return self._programs[linktype]
        try:
            prog = pcapy.compile(_LINKTYPE_TO_DLT.get(linktype, linktype), SNAPLEN, self.expression, 1, 0)
        except pcapy.PcapError as exc:
            if strict:
                raise ValueError(f"bad filter expression {self.expression!r}: {exc}") from None
            prog = None
            self.unfilterable.add(linktype)
        self._programs[linktype] = prog
        return prog

    def accepts(self, batch: Batch) -> np.ndarray:
        """A boolean mask: which frames of the batch the expression accepts."""
        keep = np.zeros(len(batch), dtype=bool)
        buf = batch.buf
        offsets = batch.offsets.tolist()
        caplens = batch.caplens.tolist()
        for i, link in enumerate(batch.linktypes.tolist()):
            prog = self.program(link)
            if prog is not None:
                start = offsets[i]
                keep[i] = prog.filter(bytes(buf[start : start + caplens[i]])) != 0  # type: ignore[attr-defined]
        return keep
