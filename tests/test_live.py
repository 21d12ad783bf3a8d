"""`pktscope live` end to end: the real command in namespace b, real traffic from namespace a, checked
against what was sent and against tcpdump capturing the same traffic at the same time.

Every pktscope run is a subprocess (`python -m pktscope live veth-b ... --json`) started with its own
session, so that its workers can be found (`pgrep -g`) and killed with it. Traffic starts only after
its "ready" line (and tcpdump's "listening on" line). UDP goes to `veth_rig.blackhole4`, which b's MAC
receives and b drops without answering, so the link carries exactly what a test sends.
Every wait has a timeout, every send loop is bounded, every process is killed in `finally`.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import netns
import pytest

REPO = Path(__file__).resolve().parent.parent  # an unprivileged `python -m pktscope` finds it from here only
STEP_TIMEOUT = 20.0  # any single wait (ready line, final line, exit)
SETTLE = 0.4  # after the last frame is sent: more than the ring's block timeout, so blocks have retired


# --- processes ----------------------------------------------------------------------------------------


class Lines:
    """Lines of a pipe, read by a daemon thread, so that every wait for one can time out."""

    def __init__(self, pipe: IO[str]) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._t = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._t.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.q.put(line)
        self.q.put(None)

    def next(self, timeout: float = STEP_TIMEOUT) -> str | None:
        """The next line, or None at end of file; TimeoutError when none comes in time."""
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line in {timeout}s; seen so far: {self.seen[-5:]}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float = STEP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"end of output before {pattern!r}; seen: {self.seen[-10:]}")
            if re.search(pattern, line):
                return line

    def rest(self, timeout: float = STEP_TIMEOUT) -> list[str]:
        """All remaining lines up to end of file."""
        out = []
        deadline = time.monotonic() + timeout
        while (line := self.next(max(0.01, deadline - time.monotonic()))) is not None:
            out.append(line)
        return out


class Live:
    """One `pktscope live` run in namespace b."""

    def __init__(self, rig: netns.VethRig, args: list[str], expression: str | None = None) -> None:
        # EXPRESSION right after IFACE: argparse takes no positional words after the options
        argv = [sys.executable, "-m", "pktscope", "live", rig.if_b, *([expression] if expression else []),
                *args, "--json"]
        self.proc = rig.popen("b", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
        self.pgid = self.proc.pid  # `ip netns exec` execs the command: same pid, own session and group
        self.out = Lines(self.proc.stdout)  # type: ignore[arg-type]
        self.err = Lines(self.proc.stderr)  # type: ignore[arg-type]
        self.ready: dict[str, Any] = {}

    def wait_ready(self) -> dict[str, Any]:
        line = self.out.next()
        assert line is not None, f"pktscope exited before ready: {self.err.rest(5)}"
        self.ready = json.loads(line)
        assert self.ready["event"] == "ready", line
        return self.ready

    def group_pids(self) -> list[int]:
        return group_pids(self.pgid)

    def stop(self, sig: int = signal.SIGINT) -> dict[str, Any]:
        """Send `sig`, wait for the exit; return the final JSON line (exit status must be 0)."""
        self.proc.send_signal(sig)
        return self.finish()

    def finish(self) -> dict[str, Any]:
        lines = self.out.rest()
        rc = self.proc.wait(timeout=STEP_TIMEOUT)
        err = "".join(self.err.rest(5))
        assert rc == 0, f"exit status {rc}: {err}"
        docs = [json.loads(line) for line in lines]
        assert docs and docs[-1]["event"] == "final", f"no final line: {lines[-3:]} {err}"
        assert all(d["event"] == "interval" for d in docs[:-1])
        return docs[-1]

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def group_pids(pgid: int) -> list[int]:
    """Living (not zombie) processes of process group `pgid`."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], check=False, capture_output=True, text=True, timeout=10).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            pids.append(pid)
    return pids


def assert_group_gone(pgid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := group_pids(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


@contextmanager
def live(rig: netns.VethRig, args: list[str], expression: str | None = None) -> Iterator[Live]:
    run = Live(rig, args, expression)
    try:
        yield run
    finally:
        run.kill()
        assert_group_gone(run.pgid)


class Tcpdump:
    """tcpdump -w in namespace b with the same expression; counts come from reading the file back.

    --immediate-mode: on SIGINT tcpdump stops without reading what is still in its ring's current block
    (a TPACKET_V3 block retires after its 1 s timeout), so without it the last second is lost. Immediate
    mode uses a TPACKET_V2 ring of snaplen-sized slots: a small -s and a larger -B keep bursts from dropping
    (every frame the tests send is shorter than 512 bytes).
    """

    def __init__(self, rig: netns.VethRig, path: Path, expression: str) -> None:
        self.rig, self.path = rig, path
        self.proc = rig.popen("b", ["tcpdump", "-i", rig.if_b, "-n", "-U", "--immediate-mode", "-s", "512", "-B", "16384", "-w", str(path), expression],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.err = Lines(self.proc.stderr)  # type: ignore[arg-type]
        self.err.wait_for("listening on")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=STEP_TIMEOUT)
        return len(read_pcap(self.path))


@contextmanager
def tcpdump(rig: netns.VethRig, path: Path, expression: str) -> Iterator[Tcpdump]:
    td = Tcpdump(rig, path, expression)
    try:
        yield td
    finally:
        if td.proc.poll() is None:
            td.proc.kill()
            td.proc.wait(timeout=10)


def read_pcap(path: Path | str, expression: str | None = None) -> list[str]:
    """`tcpdump -r` lines of a file; fails on any complaint (a truncated file, a bad header)."""
    argv = ["tcpdump", "-nn", "-r", str(path)] + ([expression] if expression else [])
    res = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"tcpdump -r {path}: {res.stderr}"
    noise = [ln for ln in res.stderr.splitlines() if not ln.startswith("reading from file")]
    assert not noise, f"tcpdump -r {path}: {noise}"
    return res.stdout.splitlines()


# --- traffic from namespace a -----------------------------------------------------------------------

# UDP for `seconds` (bounded also by `limit` datagrams), round-robin over a few source ports.
_UDP_FOR = """
import socket, sys, time
dst, dport, seconds, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
deadline = time.monotonic() + seconds
sent = 0
while sent < limit and time.monotonic() < deadline:
    socks[sent % 4].sendto(bytes(100), (dst, dport))
    sent += 1
    time.sleep(0.001)
print(sent)
"""

# A TCP server in b: accepts `n` connections, echoes what it reads, bounded by a 15 s deadline.
_TCP_SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("", int(sys.argv[1])))
srv.listen(16)
srv.settimeout(15)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    c, _ = srv.accept()
    c.settimeout(5)
    data = c.recv(4096)
    c.sendall(data)
    c.close()
"""

_TCP_CLIENT = """
import socket, sys
for i in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"x" * (100 + i))
    s.recv(4096)
    s.close()
"""


# ICMP / ICMPv6 echo requests over raw sockets (no ping here); b's kernel answers each; waits for the replies.
_PING = """
import socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(2)

def checksum(b):
    b += bytes(len(b) % 2)
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF

for seq in range(count):
    hdr = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x4242, seq) + b"pktscope" * 4
    if not v6:  # the kernel fills in the ICMPv6 checksum
        hdr = hdr[:2] + struct.pack("!H", checksum(hdr)) + hdr[4:]
    s.sendto(hdr, (dst, 0))
    s.recv(2048)
"""


def send_udp(rig: netns.VethRig, dport: int, sport0: int, flows: int, per_flow: int, size: int = 64) -> int:
    sent = rig.send_udp("a", rig.blackhole4, dport, sport0, flows, per_flow, size)
    assert sent == flows * per_flow
    time.sleep(SETTLE)
    return sent


def mixed_traffic(rig: netns.VethRig, tcp_port: int, udp_port: int) -> None:
    """UDP, TCP (connections to a server in b) and ICMP/ICMPv6 echo, a few dozen frames each."""
    server = rig.popen("b", [sys.executable, "-c", _TCP_SERVER, str(tcp_port), "5"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        Lines(server.stdout).wait_for("listening")  # type: ignore[arg-type]
        rig.send_udp("a", rig.blackhole4, udp_port, 41000, 3, 10, 80)
        rig.send_udp("a", rig.ip6_b, udp_port + 1, 41100, 2, 5, 60)  # b answers: ICMPv6 port unreachable
        rig.python("a", _TCP_CLIENT, rig.ip4_b, str(tcp_port), "5")
        rig.python("a", _PING, rig.ip4_b, "4", timeout=10)
        rig.python("a", _PING, rig.ip6_b, "3", timeout=10)
        server.wait(timeout=STEP_TIMEOUT)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    time.sleep(SETTLE)


def packets(doc: dict[str, Any]) -> int:
    return int(doc["summary"]["packets"])


def udp_sport(line: str) -> int:
    """Source port of a `tcpdump -nn` line `... IP 10.200.1.1.40000 > 10.200.1.99.5000: UDP ...`."""
    m = re.search(r" IP \d+\.\d+\.\d+\.\d+\.(\d+) > ", line)
    assert m, line
    return int(m.group(1))


# --- tests ----------------------------------------------------------------------------------------------


def test_exact_count_matches_sent_and_tcpdump(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expr = "udp and dst port 5101"
    with tcpdump(veth_rig, tmp_path / "td.pcap", expr) as td, live(veth_rig, [], expr) as run:
        ready = run.wait_ready()
        assert ready["workers"] == 1 and ready["filter"] == expr and ready["linktype"]
        sent = send_udp(veth_rig, 5101, 40000, 10, 50)
        final = run.stop()
        seen_by_tcpdump = td.stop()
    assert packets(final) == sent == 500
    assert seen_by_tcpdump == sent
    assert final["kernel"]["packets"] == sent and final["kernel"]["drops"] == 0
    worker_pid = final["workers"][0].pop("pid")  # the worker process, a child of pktscope's
    assert isinstance(worker_pid, int) and worker_pid > 0 and worker_pid != run.proc.pid
    assert final["workers"] == [{"worker": 0, "packets": sent, "kernel_packets": sent, "kernel_drops": 0}]
    assert run.group_pids() == []


def test_two_workers_hash_split_flows(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expr = "udp and dst port 5102"
    cap = tmp_path / "cap.pcap"
    with tcpdump(veth_rig, tmp_path / "td.pcap", expr) as td, \
            live(veth_rig, ["--workers", "2", "--fanout", "hash", "-w", str(cap)], expr) as run:
        assert run.wait_ready()["workers"] == 2
        assert len(run.group_pids()) == 3  # the parent and two workers
        sent = send_udp(veth_rig, 5102, 42000, 64, 4)
        final = run.stop()
        seen_by_tcpdump = td.stop()
    assert sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "cap*"))) == ["cap.w0.pcap", "cap.w1.pcap"]
    ports = [[udp_sport(ln) for ln in read_pcap(tmp_path / f"cap.w{i}.pcap")] for i in (0, 1)]
    flows = [set(p) for p in ports]
    assert flows[0] and flows[1], "hash fanout put every flow on one worker"
    assert not flows[0] & flows[1], f"flows seen by both workers: {sorted(flows[0] & flows[1])}"
    assert flows[0] | flows[1] == set(range(42000, 42064))
    assert len(ports[0]) + len(ports[1]) == sent == 256
    by_worker = {w["worker"]: w["packets"] for w in final["workers"]}
    assert by_worker == {0: len(ports[0]), 1: len(ports[1])}
    assert packets(final) == sent == seen_by_tcpdump
    assert final["kernel"]["packets"] == sent and final["kernel"]["drops"] == 0


EXPRESSIONS = ["tcp", "icmp or icmp6", "udp and not dst port 5104", "ip6", "tcp[tcpflags] & tcp-syn != 0 or icmp"]


def test_expression_passes_what_tcpdump_passes(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    runs: list[Live] = []
    dumps: list[Tcpdump] = []
    try:
        for i, expr in enumerate(EXPRESSIONS):
            dumps.append(Tcpdump(veth_rig, tmp_path / f"td{i}.pcap", expr))
            runs.append(Live(veth_rig, [], expr))
        for run in runs:
            run.wait_ready()
        mixed_traffic(veth_rig, tcp_port=5103, udp_port=5104)
        finals = [run.stop() for run in runs]
        counts = [td.stop() for td in dumps]
    finally:
        for run in runs:
            run.kill()
        for td in dumps:
            if td.proc.poll() is None:
                td.proc.kill()
                td.proc.wait(timeout=10)
    got = {expr: packets(f) for expr, f in zip(EXPRESSIONS, finals)}
    want = dict(zip(EXPRESSIONS, counts))
    assert got == want
    assert all(n > 0 for n in want.values()), want  # every expression matched some of the traffic
    for run in runs:
        assert_group_gone(run.pgid)


def test_write_reads_back_and_rotates(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expr = "udp and dst port 5105"
    cap = tmp_path / "rot.pcap"
    with live(veth_rig, ["-w", str(cap), "-C", "0.02"], expr) as run:
        run.wait_ready()
        sent = send_udp(veth_rig, 5105, 43000, 4, 50, size=500)  # ~108 kB of frames: several 20 kB files
        final = run.stop()
    files = sorted(glob.glob(str(tmp_path / "rot.pcap*")))
    assert len(files) >= 3, files
    frames = [len(read_pcap(f)) for f in files]
    assert all(n > 0 for n in frames), dict(zip(files, frames))
    assert sum(frames) == packets(final) == sent == 200
    assert all(os.path.getsize(f) < 20_000 + 600 for f in files)  # a file takes records until it exceeds -C


def test_promisc_raised_while_capturing_and_restored(veth_rig: netns.VethRig) -> None:
    before = veth_rig.promiscuity("b")
    with live(veth_rig, ["--promisc", "--workers", "2"], "udp and dst port 5106") as run:
        run.wait_ready()
        assert veth_rig.promiscuity("b") > before
        final = run.stop(signal.SIGTERM)
    assert packets(final) == 0
    assert veth_rig.promiscuity("b") == before


def test_promisc_restored_after_sigkill_of_the_group(veth_rig: netns.VethRig) -> None:
    before = veth_rig.promiscuity("b")
    with live(veth_rig, ["--promisc", "--workers", "2"], "udp and dst port 5107") as run:
        run.wait_ready()
        pids = run.group_pids()
        assert len(pids) == 3, pids
        assert veth_rig.promiscuity("b") > before
        os.killpg(run.pgid, signal.SIGKILL)
        assert run.proc.wait(timeout=10) == -signal.SIGKILL
        assert_group_gone(run.pgid)
        left = [p for p in pids if p in group_pids(run.pgid) or _alive(p)]
        assert not left, f"left behind: {left}"
    deadline = time.monotonic() + 5
    while veth_rig.promiscuity("b") != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert veth_rig.promiscuity("b") == before


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigint_mid_run(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expr = "udp and dst port 5108"
    cap = tmp_path / "mid.pcap"
    with live(veth_rig, ["--workers", "2", "-w", str(cap), "--interval", "0.2"], expr) as run:
        run.wait_ready()
        sender = veth_rig.popen("a", [sys.executable, "-c", _UDP_FOR, veth_rig.blackhole4, "5108", "3", "3000"],
                                stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.8)
            assert sender.poll() is None, "the sender finished before the interrupt"
            final = run.stop(signal.SIGINT)
            sender.wait(timeout=10)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait(timeout=10)
        assert_group_gone(run.pgid)
    assert packets(final) > 0
    files = sorted(glob.glob(str(tmp_path / "mid*")))
    assert [os.path.basename(f) for f in files] == ["mid.w0.pcap", "mid.w1.pcap"]
    assert sum(len(read_pcap(f)) for f in files) == packets(final)
    assert final["kernel"]["drops"] == 0


def test_count_stops_at_exactly_count(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    expr = "udp and dst port 5109"
    cap = tmp_path / "c.pcap"
    with live(veth_rig, ["-c", "100", "-w", str(cap)], expr) as run:
        run.wait_ready()
        send_udp(veth_rig, 5109, 44000, 3, 100)
        final = run.finish()  # stops by itself
    assert packets(final) == 100
    assert len(read_pcap(cap)) == 100


def test_count_with_two_workers(veth_rig: netns.VethRig) -> None:
    with live(veth_rig, ["-c", "100", "--workers", "2"], "udp and dst port 5110") as run:
        run.wait_ready()
        send_udp(veth_rig, 5110, 45000, 30, 10)
        final = run.finish()
    assert packets(final) == 100
    assert sum(w["packets"] for w in final["workers"]) == 100


def _bad_run(veth_rig: netns.VethRig, argv: list[str], prefix: list[str] | None = None) -> str:
    proc = veth_rig.popen("b", [*(prefix or []), sys.executable, "-m", "pktscope", "live", *argv, "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          cwd=REPO)
    try:
        out, err = proc.communicate(timeout=STEP_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert_group_gone(proc.pid)
    assert proc.returncode == 2, (proc.returncode, out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktscope: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "want"),
    [
        ("no-such-interface", "no such interface"),
        ("bad-expression", ""),
        ("proc-path", "cannot write"),
        ("missing-directory", "cannot write"),
    ],
)
def test_bad_input(veth_rig: netns.VethRig, tmp_path: Path, case: str, want: str) -> None:
    argv = {
        "no-such-interface": ["nosuch0"],
        "bad-expression": [veth_rig.if_b, "udp and and port"],
        "proc-path": [veth_rig.if_b, "-w", "/proc/x/y.pcap"],
        "missing-directory": [veth_rig.if_b, "-w", str(tmp_path / "nodir" / "x.pcap")],
    }[case]
    message = _bad_run(veth_rig, argv)
    assert want in message, message


def _unprivileged_prefix() -> list[str]:
    """A command prefix that runs without CAP_NET_RAW, or skip with the reason."""
    reasons = []
    for prefix in (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
                   ["capsh", "--drop=cap_net_raw", "--"]):
        probe_argv = [*prefix, sys.executable, "-c", "import pktscope.app.live"]
        if prefix[0] == "capsh":
            probe_argv = [*prefix, "-c", f"{sys.executable} -c 'import pktscope.app.live'"]
        try:
            res = subprocess.run(probe_argv, cwd=REPO, check=False, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{prefix[0]}: {exc}")
            continue
        if res.returncode == 0:
            return prefix
        reasons.append(f"{prefix[0]}: {res.stderr.strip()[-200:]}")
    pytest.skip(f"cannot run pktscope without CAP_NET_RAW here: {reasons}")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_missing_cap_net_raw(veth_rig: netns.VethRig, workers: str) -> None:
    prefix = _unprivileged_prefix()
    if prefix[0] == "capsh":
        cmd = f"{sys.executable} -m pktscope live {veth_rig.if_b} --workers {workers} --json"
        proc = veth_rig.run("b", [*prefix, "-c", cmd], timeout=STEP_TIMEOUT, check=False)
        assert proc.returncode == 2, proc
        message = proc.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
    else:
        message = _bad_run(veth_rig, [veth_rig.if_b, "--workers", workers], prefix)
    assert "CAP_NET_RAW" in message, message


def test_write_failure_mid_run(veth_rig: netns.VethRig) -> None:
    """-w /dev/full: the first frame's write fails (ENOSPC); one line, exit 2, no worker left.
    (One worker only: with several, FILE.wN would be created next to /dev/full.)"""
    run = Live(veth_rig, ["-w", "/dev/full"], "udp and dst port 5111")
    try:
        run.wait_ready()
        send_udp(veth_rig, 5111, 46000, 2, 5)
        rc = run.proc.wait(timeout=STEP_TIMEOUT)
        err = run.err.rest(5)
        assert rc == 2, (rc, err)
        assert len(err) == 1 and err[0].startswith("pktscope: ") and "/dev/full" in err[0], err
        assert all(json.loads(ln)["event"] != "final" for ln in run.out.rest(5))
    finally:
        run.kill()
    assert_group_gone(run.pgid)
