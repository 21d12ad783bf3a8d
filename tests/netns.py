"""Throw-away network namespaces joined by a veth pair, for tests that need real traffic.

`VethRig` makes two namespaces (`pktscope-test-<pid>-<n>-a` / `-b`) with one veth between them,
IPv4 10.200.<n>.1/.2 and IPv6 fd00:200::1/::2, static neighbour entries and IPv6 autoconfiguration
switched off, so the link carries only the traffic a test sends (no ARP, NDP, DAD, router
solicitations or MLD reports racing with exact frame counts). Nothing is configured outside the two
namespaces, and `close()` deletes them; `sweep_stale()` removes namespaces left by dead test runs.

Code runs inside a namespace either as a subprocess (`rig.run("a", [...])`) or, for Python callables,
in a forked child that joins the namespace with setns(2) (`in_netns`), since Python 3.11's os module
has no setns.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

PREFIX = "pktscope-test-"
CLONE_NEWNET = 0x40000000  # linux/sched.h
_counter = 0
SETTLE_SECONDS = 1.0

# Addresses the rig assigns; only ever configured inside the rig's own namespaces.
IP6_A = "fd00:200::1"
IP6_B = "fd00:200::2"
MAC_A = "02:00:c8:00:00:01"
MAC_B = "02:00:c8:00:00:02"
IF_A = "veth-a"
IF_B = "veth-b"

# Set before the veth exists (net.ipv6.conf.default is copied into new interfaces) so the link is quiet.
_QUIET_SYSCTLS = (
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.dad_transmits=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv6.conf.default.addr_gen_mode=1",  # no link-local address, so no MLD report for its group
    "net.ipv6.conf.all.force_mld_version=2",
    "net.ipv6.conf.default.mldv2_unsolicited_report_interval=0",
    "net.ipv4.conf.default.arp_announce=2",
)


# Sends datagrams round-robin over the flows; bounded by the count and by a 20 s deadline.
_UDP_SENDER = """
import socket, sys, time
dst, dport, sport0, flows, per_flow, size = sys.argv[1], *map(int, sys.argv[2:])
family = socket.AF_INET6 if ":" in dst else socket.AF_INET
socks = []
for i in range(flows):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("", sport0 + i))
    socks.append(s)
payload = bytes(size)
deadline = time.monotonic() + 20
sent = 0
for _ in range(per_flow):
    for s in socks:
        s.sendto(payload, (dst, dport))
        sent += 1
    if time.monotonic() > deadline:
        break
print(sent)
"""


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def list_test_namespaces() -> list[str]:
    """Namespaces whose names carry the test prefix."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def sweep_stale() -> None:
    """Delete test namespaces whose creating process is gone (a run killed before its finalizer)."""
    for name in list_test_namespaces():
        try:
            pid = int(name[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)


@dataclass
class VethRig:
    """Two namespaces, `a` and `b`, joined by veth-a <-> veth-b."""

    ns_a: str
    ns_b: str
    subnet: int  # the x in 10.200.x.0/24
    _children: list[subprocess.Popen[Any]] = field(default_factory=list)

    if_a = IF_A
    if_b = IF_B
    mac_a = MAC_A
    mac_b = MAC_B
    ip6_a = IP6_A
    ip6_b = IP6_B

    @property
    def ip4_a(self) -> str:
        return f"10.200.{self.subnet}.1"

    @property
    def ip4_b(self) -> str:
        return f"10.200.{self.subnet}.2"

    @property
    def blackhole4(self) -> str:
        """An address a's neighbour table sends to b's MAC; b (not a router) drops it without ICMP."""
        return f"10.200.{self.subnet}.99"

    blackhole6 = "fd00:200::99"

    def ns(self, side: str) -> str:
        """Namespace name of side 'a' or 'b'."""
        return {"a": self.ns_a, "b": self.ns_b}[side]

    def exec_argv(self, side: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def run(
        self, side: str, argv: Sequence[str], timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace and wait for it (bounded by `timeout`)."""
        return subprocess.run(
            self.exec_argv(side, argv), capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, side: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command inside a namespace; the rig kills it on close if it is still running."""
        proc = subprocess.Popen(self.exec_argv(side, argv), **kwargs)
        self._children.append(proc)
        return proc

    def python(
        self, side: str, code: str, *args: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet inside a namespace (sys.argv[1:] = args)."""
        return self.run(side, [sys.executable, "-c", code, *args], timeout=timeout)

    def wait_carrier(self, timeout: float = 5) -> None:
        """Wait until both ends report carrier (the second end to come up gives it to the first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [
                self.run(s, ["ip", "-o", "link", "show", i]).stdout for s, i in (("a", IF_A), ("b", IF_B))
            ]
            if all("NO-CARRIER" not in st and "LOWER_UP" in st for st in states):
                return
            time.sleep(0.05)
        raise TimeoutError("veth pair did not come up")

    def send_udp(
        self, side: str, dst: str, dport: int, sport0: int, flows: int, per_flow: int, size: int = 64
    ) -> int:
        """Send per_flow datagrams on each of `flows` source ports from `side`; returns how many were sent."""
        out = self.python(
            side, _UDP_SENDER, dst, str(dport), str(sport0), str(flows), str(per_flow), str(size)
        )
        return int(out.stdout.strip())

    def promiscuity(self, side: str) -> int:
        """The interface's promiscuity count as `ip -d link show` prints it."""
        out = self.run(side, ["ip", "-d", "link", "show", {"a": IF_A, "b": IF_B}[side]]).stdout
        return int(out.split(" promiscuity ")[1].split()[0])

    def close(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._children.clear()
        for name in (self.ns_a, self.ns_b):
            _ip("netns", "del", name, check=False)


def create_rig() -> VethRig:
    """Create the two namespaces and the veth; on any failure, remove what was made and re-raise."""
    global _counter
    _counter += 1
    tag = f"{PREFIX}{os.getpid()}-{_counter}"
    rig = VethRig(ns_a=f"{tag}-a", ns_b=f"{tag}-b", subnet=_counter % 250 + 1)
    try:
        for name in (rig.ns_a, rig.ns_b):
            _ip("netns", "add", name)
            rig.run("a" if name == rig.ns_a else "b", ["sysctl", "-qw", *_QUIET_SYSCTLS])
        _ip(
            "link",
            "add",
            IF_A,
            "netns",
            rig.ns_a,
            "address",
            MAC_A,
            "type",
            "veth",
            "peer",
            "name",
            IF_B,
            "netns",
            rig.ns_b,
            "address",
            MAC_B,
        )
        for side, ifname, ip4, ip6, peer_ip4, peer_ip6, peer_mac in (
            ("a", IF_A, rig.ip4_a, IP6_A, rig.ip4_b, IP6_B, MAC_B),
            ("b", IF_B, rig.ip4_b, IP6_B, rig.ip4_a, IP6_A, MAC_A),
        ):
            rig.run(side, ["ip", "link", "set", "lo", "up"])
            rig.run(side, ["ip", "addr", "add", f"{ip4}/24", "dev", ifname])
            rig.run(side, ["ip", "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad"])
            rig.run(
                side, ["ip", "neigh", "add", peer_ip4, "lladdr", peer_mac, "dev", ifname, "nud", "permanent"]
            )
            rig.run(
                side,
                ["ip", "-6", "neigh", "add", peer_ip6, "lladdr", peer_mac, "dev", ifname, "nud", "permanent"],
            )
            rig.run(side, ["ip", "link", "set", ifname, "multicast", "off", "up"])
        rig.run("a", ["ip", "neigh", "add", rig.blackhole4, "lladdr", MAC_B, "dev", IF_A, "nud", "permanent"])
        rig.run(
            "a",
            ["ip", "-6", "neigh", "add", rig.blackhole6, "lladdr", MAC_B, "dev", IF_A, "nud", "permanent"],
        )
        rig.wait_carrier()
        # The solicited-node MLD reports for the new IPv6 addresses leave right after the link comes up
        # (observed within 0.5 s; unaffected by the sysctls above); let them pass before a test counts.
        time.sleep(SETTLE_SECONDS)
    except BaseException:
        rig.close()
        raise
    return rig


# --- running Python callables inside a namespace -------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def setns(name: str) -> None:
    """Move the calling thread (use only in a single-threaded forked child) into namespace `name`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _child_main(ns: str, target: Callable[..., Any], conn: Connection, args: tuple[Any, ...]) -> None:
    setns(ns)
    try:
        result = target(conn, *args)
        conn.send(("result", result))
    except Exception as exc:  # noqa: BLE001 - any failure goes back to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@dataclass
class NetnsChild:
    """A forked child running `target(conn, *args)` inside a namespace; talk to it over `conn`."""

    process: multiprocessing.process.BaseProcess
    conn: Connection

    def expect(self, message: str, timeout: float = 10) -> None:
        """Wait for `message` (e.g. "ready") from the child, failing on its error or on timeout."""
        got = self.recv(timeout)
        if got != message:
            raise AssertionError(f"child sent {got!r}, expected {message!r}")

    def recv(self, timeout: float = 10) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no message from the child in {timeout}s")
        msg = self.conn.recv()
        if isinstance(msg, tuple) and msg and msg[0] == "error":
            raise RuntimeError(f"child failed: {msg[1]}")
        return msg

    def result(self, timeout: float = 30) -> Any:
        """The target's return value, once it has finished."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.1, deadline - time.monotonic()))
            if isinstance(msg, tuple) and msg and msg[0] == "result":
                self.process.join(timeout=10)
                return msg[1]

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def kill(self) -> None:
        if self.process.is_alive() and self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(timeout=10)
        self.conn.close()


def in_netns(ns: str, target: Callable[..., Any], *args: Any) -> NetnsChild:
    """Fork a child that enters namespace `ns` and runs `target(conn, *args)`, sending back its result."""
    parent_conn, child_conn = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_child_main, args=(ns, target, child_conn, args), daemon=True
    )
    process.start()
    child_conn.close()
    return NetnsChild(process, parent_conn)
