"""decoders: a Batch of raw frames in, Columns out (numpy rows, one per frame)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from pktscope.capture.batch import Batch


def decode_batch(batch: Batch) -> np.ndarray:
    """Decode a Batch into Columns: the pipeline's entry point.

    The fast numpy path (`fast.py`) decodes the common frames and hands the others to the dpkt
    reference decoder (`reference.py`, the oracle both are tested against). Imported on first use, so
    that importing a sibling module (columns, protocols) stays cheap.
    """
    from pktscope.decoders.fast import decode_batch_fast

    return decode_batch_fast(batch)
