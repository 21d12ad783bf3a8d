"""Shared pytest fixtures.

Live-capture fixtures (capture layer): `veth_rig` gives two throw-away network namespaces joined by a
veth pair (see tests/netns.py); tests using it skip, with the reason, when not root or without
`ip netns`. The namespaces are removed after each module, also when a test fails, and a
session finalizer checks that no `pktscope-test-` namespace is left behind.
Other fixtures may be appended below; keep each group's comment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import netns


@pytest.fixture(scope="session")
def netns_ready() -> Iterator[None]:
    """Skip unless namespaces can be made; clear leftovers of killed runs; check nothing is left after."""
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    netns.sweep_stale()
    yield
    left = [name for name in netns.list_test_namespaces() if name.startswith(f"{netns.PREFIX}{os.getpid()}-")]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def veth_rig(netns_ready: None) -> Iterator[netns.VethRig]:
    """Two namespaces joined by a veth pair, shared by one test module, always removed."""
    rig = netns.create_rig()
    try:
        yield rig
    finally:
        rig.close()
