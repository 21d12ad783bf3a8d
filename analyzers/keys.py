"""Symmetric 64-bit keys for endpoints, address pairs and flows, computed a batch at a time."""

from __future__ import annotations

import numpy as np

from pktscope.decoders.columns import address_words

_M1 = np.uint64(0xFF51AFD7ED558CCD)  # murmur3 fmix64 constants
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def mix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer: a cheap bijective scramble of every bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _S33)  # a new array: the rest in place
        x *= _M1
        x ^= x >> _S33
        x *= _M2
        x ^= x >> _S33
        return x


def combine(*parts: np.ndarray) -> np.ndarray:
    """Order-dependent 64-bit hash of several uint64 columns."""
    with np.errstate(over="ignore"):
        h = mix64(parts[0].astype(np.uint64, copy=False) + _GOLD)  # 0 ^ x is x: the first part as is
        for part in parts[1:]:
            h = mix64(h ^ (part.astype(np.uint64, copy=False) + _GOLD))
    return h


def extend(keys: np.ndarray, part: np.ndarray) -> np.ndarray:
    """`combine(*parts, part)` from `keys` = `combine(*parts)`: one more column folded in."""
    with np.errstate(over="ignore"):
        return mix64(keys ^ (part.astype(np.uint64, copy=False) + _GOLD))


def endpoint_keys(addresses: np.ndarray, ports: np.ndarray | None = None) -> np.ndarray:
    """One 64-bit key per (address[, port])."""
    w0, w1 = address_words(addresses)
    if ports is None:
        return combine(w0, w1)
    return extend(combine(w0, w1), ports)


def pair_keys(a: np.ndarray, b: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Unordered pair keys: the same for (a, b) and (b, a), different for different pairs.

    Endpoint keys are ordered before combining, so the key is symmetric without losing the
    distinction between the two ends.
    """
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    if extra is None:
        return combine(lo, hi)
    return combine(lo, hi, extra.astype(np.uint64))


def grouping_order(keys: np.ndarray) -> np.ndarray | None:
    """A stable argsort of 64-bit keys (rows of a key together, in row order), or None if not found cheaply.

    The row index replaces the keys' low bits and the values are sorted (several times faster than a
    stable argsort); that groups each key's rows in row order unless two keys share their high bits,
    which the check after the sort catches.
    """
    bits = max(int(len(keys) - 1).bit_length(), 1)
    if bits > 32:
        return None
    low = np.uint64((1 << bits) - 1)
    packed = (keys & ~low) | np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.int64)
    k = keys[order]
    if not (k[1:] >= k[:-1]).all():
        return None
    return order


def stable_order(values: np.ndarray) -> np.ndarray:
    """`np.argsort(values, kind="stable")` of integers, through one plain sort where it can.

    numpy's stable sort of 64-bit integers is a merge sort, several times slower than its plain sort:
    when the values' range leaves room for the row index in the low bits of a uint64, the values
    (less their minimum) are shifted over it and sorted; else `grouping_order` (hash keys), else the
    stable argsort.
    """
    n = len(values)
    if n < 2:
        return np.arange(n, dtype=np.intp)
    bits = int(n - 1).bit_length()
    low = int(values.min())
    span = int(values.max()) - low
    if span.bit_length() + bits <= 64:
        with np.errstate(over="ignore"):
            packed = (values - values.dtype.type(low)).astype(np.uint64) << np.uint64(bits)
        packed |= np.arange(n, dtype=np.uint64)
        packed.sort()
        return (packed & np.uint64((1 << bits) - 1)).astype(np.intp)
    order = grouping_order(values) if values.dtype == np.uint64 else None
    return order if order is not None else np.argsort(values, kind="stable")


def groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of equal keys together: (order, starts, unique) with `keys[order]` sorted, row order kept
    within a key, `starts` the sorted positions where a key begins and `unique` the keys, ascending.

    What `np.unique(..., return_index=True)` finds, through one sort of the keys (several times faster).
    """
    order = grouping_order(keys)
    if order is None:
        order = np.argsort(keys, kind="stable")
    k = keys[order]
    change = np.empty(len(k), dtype=bool)
    change[:1] = True
    np.not_equal(k[1:], k[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    return order, starts, k[starts]


def unique(keys: np.ndarray) -> np.ndarray:
    """The distinct keys, ascending (np.unique through a plain sort)."""
    k = np.sort(keys)
    change = np.empty(len(k), dtype=bool)
    change[:1] = True
    np.not_equal(k[1:], k[:-1], out=change[1:])
    return k[change]
