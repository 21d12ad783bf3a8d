"""The live benchmark: pktscope live against tcpdump -w /dev/null on the same generated traffic.

Makes two network namespaces joined by a veth (`pktscope-bench-<pid>-gen` / `-cap`, removed in
`finally`; no traffic leaves them). trafgen (Debian netsniff-ng) in `gen` sends 64-byte UDP/IPv4 frames
over 256 flows (source ports 39936..40191, so fanout hash spreads them) to `cap`'s MAC and a non-local
address, which `cap` drops without answering. For each rate (fixed rates, then trafgen's maximum, each
bounded by a frame count) and each consumer in `cap`:

  * pktscope live --workers 1 --json (full analysis; the final JSON line gives frames and kernel drops)
  * pktscope live --workers auto --json
  * tcpdump -w /dev/null (its exit lines give frames captured and dropped by the kernel)

the consumer starts, trafgen sends, the consumer gets SIGINT after a short settle. Its CPU time comes
from os.wait4's rusage: the whole process tree (pktscope joins its worker processes), start-up
included; the idle rows measure that with no traffic. /proc/PID/schedstat of the tree, read when
the consumer is ready and again before SIGINT, gives the CPU spent while frames flowed and how long
its processes waited on a run queue meanwhile (runnable, not running: the machine was busy).
Frames received by the veth come from the capture side's own counter
(/sys/class/net/IF/statistics/rx_packets, read inside `cap`).

    python3 bench/bench_live.py                      # 50k, 100k, 200k pps and max, 3 s each
    python3 bench/bench_live.py --rates 100000 max --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PREFIX = "pktscope-bench-"
IF_GEN, IF_CAP = "bgen0", "bcap0"
MAC_GEN, MAC_CAP = "02:00:be:00:00:01", "02:00:be:00:00:02"
MAX_RATE_FRAMES = 1_500_000  # the "max" run: about 3 s at trafgen's ~500k pps here
SETTLE_S = 0.5  # after the last frame: more than the ring's block timeout (50 ms) and tcpdump's
STEP_TIMEOUT = 30.0

# 64-byte frames (60 on the wire without FCS): Ethernet, IPv4 10.250.0.1 -> 10.250.0.99 (not cap's),
# UDP 39936+n -> 9, n counting 0..255 frame by frame, 18 bytes of zeros; csumip fills the IP checksum.
TRAFGEN_CONF = """{
  %(dst)s, %(src)s, c16(0x0800),
  0x45, 0x00, c16(46), c16(1), c16(0), 64, 17, csumip(14, 33),
  10, 250, 0, 1,  10, 250, 0, 99,
  c8(0x9c), dinc(0x00, 0xff, 1), c16(9), c16(26), c16(0),
  fill(0x00, 18),
}
"""


@dataclass
class Run:
    """What one consumer measured at one rate."""

    rate: str
    consumer: str
    sent: int = 0
    veth_rx: int = 0
    captured: int = 0
    drops: int = 0
    cpu_s: float = 0.0  # whole run, start-up included (os.wait4)
    traffic_cpu_s: float = 0.0  # while frames flowed (schedstat: from ready to SIGINT)
    runq_wait_s: float = 0.0  # time the consumer's processes were runnable but not running, meanwhile
    wall_s: float = 0.0
    worker_cpu_s: dict[int, float] = field(default_factory=dict)  # worker pid -> CPU s while frames flowed
    worker_packets: dict[int, int] = field(default_factory=dict)  # worker pid -> frames it analysed
    note: str = ""

    @property
    def worker_us_per_pkt(self) -> str:
        """Each worker's CPU µs per frame it analysed, while frames flowed (workers in index order)."""
        return ", ".join(f"{1e6 * self.worker_cpu_s.get(pid, 0.0) / n:.2f}" if n else "-"
                         for pid, n in self.worker_packets.items())

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.captured) / self.sent if self.sent else 0.0


def sh(*argv: str, check: bool = True, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


class Rig:
    """Two namespaces and one veth between them, created in __enter__, always removed in __exit__."""

    def __init__(self) -> None:
        tag = f"{PREFIX}{os.getpid()}"
        self.gen, self.cap = f"{tag}-gen", f"{tag}-cap"

    def __enter__(self) -> Self:
        try:
            for ns in (self.gen, self.cap):
                sh("ip", "netns", "add", ns)
                # no IPv6 on the link at all, so it carries only what trafgen sends (no NDP, MLD, RS)
                self.run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                         "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "link", "add", IF_GEN, "netns", self.gen, "address", MAC_GEN, "type", "veth",
               "peer", "name", IF_CAP, "netns", self.cap, "address", MAC_CAP)
            for ns, ifname, addr in ((self.gen, IF_GEN, "10.250.0.1/24"), (self.cap, IF_CAP, "10.250.0.2/24")):
                self.run(ns, "ip", "addr", "add", addr, "dev", ifname)
                self.run(ns, "ip", "link", "set", ifname, "multicast", "off", "arp", "off", "up")
            time.sleep(0.5)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.gen, self.cap):
            sh("ip", "netns", "del", ns, check=False)

    def argv(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, *argv: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return sh(*self.argv(ns, *argv), timeout=timeout)

    def rx_packets(self) -> int:
        return int(self.run(self.cap, "cat", f"/sys/class/net/{IF_CAP}/statistics/rx_packets").stdout)


def sweep_stale() -> None:
    """Remove bench namespaces whose creating process is gone (a run killed before its finally)."""
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            pid = name[len(PREFIX):].split("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                sh("ip", "netns", "del", name, check=False)


def wait_line(proc: subprocess.Popen[str], stream: str, pattern: str) -> str:
    """The first line of the process's stdout/stderr matching `pattern` (TimeoutError after STEP_TIMEOUT)."""
    pipe = getattr(proc, stream)
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.5)
        if ready:
            line = pipe.readline()
            if not line:
                break
            if re.search(pattern, line):
                return line
    raise TimeoutError(f"no {pattern!r} from {proc.args}")


def reap(proc: subprocess.Popen[str]) -> tuple[str, str, float]:
    """Stdout and stderr to the end, then the CPU seconds (user+sys) of the process and its children."""
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return out, err, usage.ru_utime + usage.ru_stime


def tree_schedstat(pid: int) -> tuple[float, float]:
    """(seconds on CPU, seconds waiting on a run queue) of a process and its descendants (/proc schedstat)."""
    on_cpu = waiting = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            ran, waited, _ = Path(f"/proc/{p}/schedstat").read_text().split()
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        on_cpu += int(ran) / 1e9
        waiting += int(waited) / 1e9
    return on_cpu, waiting


def children_cpu(pid: int) -> dict[int, float]:
    """Seconds on CPU of each direct child of a process (pktscope's workers), by pid."""
    out = {}
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return out
    for kid in kids:
        try:
            out[kid] = int(Path(f"/proc/{kid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return out


def consumer_argv(name: str, seconds_hint: float, extra: list[str]) -> list[str]:
    if name == "tcpdump":
        return ["tcpdump", "-i", IF_CAP, "-n", "-p", "-w", "/dev/null"]
    workers = name.split()[-1]
    return [PY, "-m", "pktscope", "live", IF_CAP, "--workers", workers, "--json",
            "--interval", str(max(1.0, seconds_hint)), *extra]


def trafgen_bytes(mac: str) -> str:
    """A MAC address as trafgen config bytes."""
    return ", ".join(f"0x{b}" for b in mac.split(":"))


def trafgen(rig: Rig, conf: str, rate: int | None, count: int) -> tuple[int, str]:
    """Send `count` frames at `rate` pps (None: as fast as trafgen goes); returns (frames sent, note)."""
    argv = ["trafgen", "--dev", IF_GEN, "--conf", conf, "--num", str(count), "--cpus", "1", "--no-sock-mem",
            "--notouch-irq"]
    if rate is not None:
        argv += ["--rate", f"{rate}pps"]
    res = rig.run(rig.gen, *argv, timeout=count / (rate or 100_000) + STEP_TIMEOUT)
    text = res.stdout + res.stderr
    match = re.search(r"(\d+) packets outgoing", text)
    return (int(match.group(1)) if match else 0), ("" if match else text.strip()[-80:])


def measure(rig: Rig, conf: str, rate: int | None, count: int, consumer: str, seconds: float,
            extra: list[str]) -> Run:
    run = Run("max" if rate is None else f"{rate // 1000}k", consumer)
    proc = subprocess.Popen(rig.argv(rig.cap, *consumer_argv(consumer, seconds, extra)), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if consumer == "tcpdump":
            wait_line(proc, "stderr", "listening on")
        else:
            wait_line(proc, "stdout", '"event": "ready"')
        rx0 = rig.rx_packets()
        cpu0, wait0 = tree_schedstat(proc.pid)
        kids0 = children_cpu(proc.pid)
        started = time.monotonic()
        if count:
            run.sent, run.note = trafgen(rig, conf, rate, count)
        else:
            time.sleep(seconds)
        run.wall_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        run.veth_rx = rig.rx_packets() - rx0
        cpu1, wait1 = tree_schedstat(proc.pid)
        run.worker_cpu_s = {pid: t - kids0.get(pid, 0.0) for pid, t in children_cpu(proc.pid).items()}
        run.traffic_cpu_s, run.runq_wait_s = cpu1 - cpu0, wait1 - wait0
        proc.send_signal(signal.SIGINT)
        out, err, run.cpu_s = reap(proc)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if consumer == "tcpdump":
        got = re.search(r"(\d+) packets captured", err)
        dropped = re.search(r"(\d+) packets dropped by kernel", err)
        if got and dropped:
            run.captured, run.drops = int(got.group(1)), int(dropped.group(1))
        else:
            run.note = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return run
    final = next((json.loads(ln) for ln in reversed(out.splitlines()) if '"final"' in ln), None)
    if final is None:
        run.note = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        return run
    run.captured = int(final["summary"]["packets"])
    run.drops = int(final["kernel"]["drops"])
    run.worker_packets = {int(w["pid"]): int(w["packets"]) for w in final.get("workers", []) if "pid" in w}
    return run


COLUMNS = ("rate", "consumer", "sent", "gen pps", "veth rx", "captured", "kernel drops", "loss %", "CPU s",
           "CPU µs/pkt", "traffic CPU µs/pkt", "worker CPU µs/pkt", "run-queue wait s", "note")


def rows(runs: list[Run]) -> list[tuple[str, ...]]:
    """One row per run; CPU per captured frame: of the whole run, and of the time frames flowed."""
    out = []
    for r in runs:
        per = 1e6 * r.cpu_s / r.captured if r.captured else 0.0
        net = 1e6 * r.traffic_cpu_s / r.captured if r.captured else 0.0
        pps = f"{r.sent / r.wall_s:,.0f}" if r.sent and r.wall_s else ""
        out.append((r.rate, r.consumer, f"{r.sent:,}", pps, f"{r.veth_rx:,}", f"{r.captured:,}", f"{r.drops:,}",
                    f"{r.loss_pct:.2f}", f"{r.cpu_s:.2f}", f"{per:.2f}" if r.captured else "",
                    f"{net:.2f}" if r.captured else "", r.worker_us_per_pkt, f"{r.runq_wait_s:.2f}", r.note))
    return out


def table(body: list[tuple[str, ...]]) -> Table:
    t = Table(title="pktscope live vs tcpdump -w /dev/null (64-byte UDP frames, 256 flows, over a veth)")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("rate", "consumer", "note") else "right")
    for row in body:
        t.add_row(*row)
    return t


def markdown(body: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", nargs="+", default=["50000", "100000", "200000", "max"],
                        help="frames per second, or 'max' (trafgen unthrottled)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each fixed-rate run")
    parser.add_argument("--pktscope-args", nargs="*", default=[], metavar="ARG",
                        help="more options for pktscope live (e.g. --ring-mb 128); give them as --pktscope-args=--ring-mb=128")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every consumer at every rate")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--consumers", nargs="+", default=["pktscope --workers 1", "pktscope --workers auto",
                                                           "tcpdump"],
                        help="any of: 'pktscope --workers N|auto', tcpdump")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_live: needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    for tool in ("trafgen", "tcpdump", "ip"):
        if shutil.which(tool) is None:
            print(f"bench_live: needs {tool} (apt-get install -y netsniff-ng tcpdump iproute2)", file=sys.stderr)
            return 2
    console = Console(width=180)
    load = os.getloadavg()
    console.print(f"{time.strftime('%Y-%m-%d %H:%M')}  {os.uname().release}  {os.cpu_count()} CPUs  "
                  f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    sweep_stale()
    runs: list[Run] = []
    with Rig() as rig, tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        conf = os.path.join(tmp, "udp64.cfg")
        Path(conf).write_text(TRAFGEN_CONF % {"dst": trafgen_bytes(MAC_CAP), "src": trafgen_bytes(MAC_GEN)})
        for consumer in args.consumers:  # start-up and idle cost, no traffic
            idle_run = measure(rig, conf, None, 0, consumer, args.seconds, args.pktscope_args)
            idle_run.rate = "idle"
            runs.append(idle_run)
        for rate_arg in args.rates:
            rate = None if rate_arg == "max" else int(rate_arg)
            count = MAX_RATE_FRAMES if rate is None else int(rate * args.seconds)
            for k in range(args.repeat):  # consumers interleaved, so a noisy minute hits all of them
                for consumer in args.consumers:
                    runs.append(measure(rig, conf, rate, count, consumer, args.seconds, args.pktscope_args))
                    if args.repeat > 1:
                        runs[-1].rate += f" #{k + 1}"
                    console.print(f"  {runs[-1]}", style="dim")
    body = rows(runs)
    console.print(table(body))
    if args.markdown:
        print(markdown(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
