"""The maps of the eBPF socket filter: the blocklist (one LPM trie per address family) and the counters.

Blocklist keys are `struct bpf_lpm_trie_key` (bpf.h): a host-order u32 prefix length followed by the
address in network order, 4 bytes (IPv4) or 16 (IPv6). Each value is a u64: frames that prefix
blocked (added atomically by the program, so it is shared by all CPUs). `bpftool map dump pinned
.../block4` shows the same entries as raw bytes.

The counters are a PERCPU_ARRAY of four slots (ebpf.COUNTER_NAMES), each u64 packets + u64 bytes per
CPU; a lookup returns every possible CPU's copy, which `read_counters` adds up.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

from pktscope.bpf import syscall
from pktscope.bpf.ebpf import COUNTER_NAMES, COUNTER_VALUE, FilterMaps

MAX_PREFIXES = 65536  # per family; a trie allocates per entry (BPF_F_NO_PREALLOC), so the cap costs nothing

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCK4 = syscall.MapSpec("pks_block4", syscall.BPF_MAP_TYPE_LPM_TRIE, 4 + 4, 8, MAX_PREFIXES,
                         syscall.BPF_F_NO_PREALLOC)
BLOCK6 = syscall.MapSpec("pks_block6", syscall.BPF_MAP_TYPE_LPM_TRIE, 4 + 16, 8, MAX_PREFIXES,
                         syscall.BPF_F_NO_PREALLOC)
COUNTERS = syscall.MapSpec("pks_counters", syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, COUNTER_VALUE.size,
                           len(COUNTER_NAMES))
MAP_FILES = {"counters": COUNTERS, "block4": BLOCK4, "block6": BLOCK6}  # pin file name -> map


class PrefixError(ValueError):
    """A blocklist prefix the user gave is not an IPv4/IPv6 address or CIDR prefix; one line."""


def parse_prefix(text: str) -> Network:
    """An address or CIDR prefix (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`); host bits must be zero."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise PrefixError(f"bad prefix {text!r}: {exc}") from None


def lpm_key(net: Network) -> bytes:
    return struct.pack("=I", net.prefixlen) + net.network_address.packed


def _key_network(key: bytes) -> Network:
    prefixlen = struct.unpack_from("=I", key)[0]
    return ipaddress.ip_network((key[4:], prefixlen))


@dataclass
class FilterMapSet:
    """Open fds of one program's three maps; `close()` releases them (pins keep the maps alive)."""

    counters: int
    block4: int
    block6: int

    @classmethod
    def create(cls) -> FilterMapSet:
        fds: list[int] = []
        try:
            for spec in (COUNTERS, BLOCK4, BLOCK6):
                fds.append(spec.create())
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds)

    @classmethod
    def open_pinned(cls, directory: str) -> FilterMapSet:
        fds: list[int] = []
        try:
            for name in MAP_FILES:
                fds.append(syscall.obj_get(os.path.join(directory, name)))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds)

    def pin(self, directory: str) -> None:
        for name, fd in zip(MAP_FILES, (self.counters, self.block4, self.block6), strict=True):
            syscall.obj_pin(fd, os.path.join(directory, name))

    def fds(self) -> FilterMaps:
        return FilterMaps(self.counters, self.block4, self.block6)

    def close(self) -> None:
        for fd in (self.counters, self.block4, self.block6):
            if fd >= 0:
                os.close(fd)
        self.counters = self.block4 = self.block6 = -1

    def _trie(self, net: Network) -> int:
        return self.block4 if net.version == 4 else self.block6

    def block(self, net: Network) -> None:
        """Add a prefix (its hit count starts at 0; an existing prefix keeps its count)."""
        try:
            syscall.map_update(self._trie(net), lpm_key(net), bytes(8), syscall.BPF_NOEXIST)
        except syscall.BpfError as exc:
            if exc.errno != 17:  # EEXIST: already blocked
                raise

    def unblock(self, net: Network) -> bool:
        """Remove a prefix; False when it was not in the blocklist."""
        return syscall.map_delete(self._trie(net), lpm_key(net))

    def blocklist(self) -> list[tuple[Network, int]]:
        """(prefix, frames blocked by it) for every prefix, IPv4 first."""
        out: list[tuple[Network, int]] = []
        for fd, spec in ((self.block4, BLOCK4), (self.block6, BLOCK6)):
            for key in syscall.map_keys(fd, spec.key_size):
                value = syscall.map_lookup(fd, key, spec.value_size)
                if value is not None:
                    out.append((_key_network(key), struct.unpack("=Q", value)[0]))
        return sorted(out, key=lambda item: (item[0].version, item[0]))

    def read_counters(self) -> dict[str, dict[str, int]]:
        """{"seen"|"blocked"|"rejected"|"passed": {"packets", "bytes"}}, summed over every CPU."""
        cpus = syscall.possible_cpus()
        stride = (COUNTER_VALUE.size + 7) // 8 * 8
        out = {}
        for slot, name in enumerate(COUNTER_NAMES):
            raw = syscall.map_lookup(self.counters, struct.pack("=I", slot), stride * cpus) or b""
            packets = nbytes = 0
            for cpu in range(len(raw) // stride):
                p, b = COUNTER_VALUE.unpack_from(raw, cpu * stride)
                packets += p
                nbytes += b
            out[name] = {"packets": packets, "bytes": nbytes}
        return out
