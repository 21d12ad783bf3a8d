"""The top-talkers dashboard: a Snapshot on a full screen, refreshed on the capture's interval tick.

Renderables (`Dashboard`, `Header`, `MainView`, `Breakdown`, ...) take a Snapshot and a `UIState` and
nothing else; the data side never knows the screen exists. `LiveScreen` is driven by the parent of
`pktscope live` (its interval tick and its poll between worker messages): workers are other processes,
so capture never waits for the screen. `SummaryLines` is the plain-text stand-in when stdout is not a
terminal; `show_capture` puts a finished `read` on the same screen.
"""

from __future__ import annotations

import collections
import copy
import heapq
import os
import queue
import select
import signal
import socket
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, Self

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pktscope.analyzers.flows import NS, Flow
from pktscope.analyzers.snapshot import BYTES, PKTS, RECV_B, RECV_P, SENT_B, SENT_P, Snapshot
from pktscope.app.report import format_address, human_bytes, service_name
from pktscope.decoders import protocols as p

VIEWS = ("hosts", "conversations", "ports")
SORTS = ("bytes", "packets", "rate")
HISTORY = 60  # sparkline samples: the last minute at the default 1 s interval
SPARK_BARS = "▁▂▃▄▅▆▇█"
SHARE_BAR = 8  # cells of the share bar
BOTTOM_ROWS = 5  # rows of the protocol and port tables under the main view
WIDE_WIDTH = 100  # from this many columns the tables show every column
WIDE, NARROW, COMPACT = "wide", "narrow", "compact"  # table column sets (COMPACT: the tables under the main one)
BOTTOM_MIN_HEIGHT = 22  # below this many lines the screen keeps only the header, main view and keys
POLL_S = 0.1  # how often `read --tui` looks at the keyboard when no key comes
RESOLVE_CACHE = 4096  # reverse-DNS answers kept (least recently shown evicted first)
RESOLVE_TIMEOUT_S = 2.0  # a lookup still pending after this shows the address (and is not asked again)
RESOLVE_QUEUE = 256  # lookups waiting; more are dropped and asked again on a later redraw
RESOLVE_THREADS = 2

_FLAG = {name: 1 << bit for bit, name in enumerate(p.TCP_FLAG_NAMES)}  # TCP flag bits (RFC 9293 §3.1)

HELP = (
    ("q", "quit: stop the capture, close the screen, print the final report"),
    ("p", "pause the display (capture goes on)"),
    ("s", "sort by bytes, packets or current rate"),
    ("v", "main view: hosts, conversations, ports"),
    ("n", "name resolution (reverse DNS in the background) on/off"),
    ("h", "this help (any key closes it)"),
)


# --- units ----------------------------------------------------------------------------------------------


def _si(value: float, units: tuple[str, ...]) -> str:
    for unit in units:
        if abs(value) < 1000 or unit == units[-1]:
            return f"{value:.0f} {unit}" if unit == units[0] else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} {units[-1]}"


def human_bits(bits_per_s: float) -> str:
    """A bit rate in decimal units (bit/s, kbit/s, Mbit/s, ...), as links are rated."""
    return _si(bits_per_s, ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"))


def human_pps(pps: float) -> str:
    """A packet rate: pkt/s, kpkt/s, Mpkt/s."""
    return _si(pps, ("pkt/s", "kpkt/s", "Mpkt/s", "Gpkt/s"))


def human_count(n: float) -> str:
    """A count in a narrow column: 950, 12.3k, 4.1M."""
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000 or unit == "G":
            return f"{n:.0f}" if not unit else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}G"


def human_duration(seconds: float) -> str:
    """A duration as 0.3s, 42s, 3m05s or 2h01m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def tcp_state(flags_ab: int, flags_ba: int) -> str:
    """The state a TCP conversation's flags show: syn, estab, fin (one side closed), closed, reset."""
    both = flags_ab | flags_ba
    if both & _FLAG["RST"]:
        return "reset"
    if flags_ab & _FLAG["FIN"] and flags_ba & _FLAG["FIN"]:
        return "closed"
    if both & _FLAG["FIN"]:
        return "fin"
    if both & _FLAG["SYN"] and not (flags_ab & _FLAG["SYN"] and flags_ba & _FLAG["SYN"]):
        return "syn"
    if both & (_FLAG["SYN"] | _FLAG["ACK"]):
        return "estab"  # a full handshake, or ACKs of a connection that began before the capture
    return "-"


def sparkline(values: Iterable[float], width: int) -> str:
    """The last `width` values as block characters scaled to their maximum."""
    vals = list(values)[-width:]
    top = max(vals, default=0.0)
    if top <= 0:
        return SPARK_BARS[0] * len(vals)
    last = len(SPARK_BARS) - 1
    return "".join(SPARK_BARS[min(last, int(v / top * last + 0.5))] for v in vals)


def share_bar(fraction: float, cells: int = SHARE_BAR) -> Text:
    """A share of all traffic as a bar of `cells` cells and a percentage."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = int(fraction * cells * 8 + 0.5)
    bar = "█" * (eighths // 8) + (" ▏▎▍▌▋▊▉"[eighths % 8] if eighths % 8 else "")
    return Text.assemble((bar.ljust(cells), "green"), f" {100 * fraction:3.0f}%")


# --- reverse DNS -----------------------------------------------------------------------------------------


def reverse_lookup(addr: bytes) -> str | None:
    """The PTR name of an address (a 16-byte column value), or None."""
    try:
        return socket.getnameinfo((format_address(addr), 0), socket.NI_NAMEREQD)[0]
    except (OSError, UnicodeError):
        return None


class Resolver:
    """Reverse DNS off the capture and render paths: lookups on daemon threads, a bounded LRU of answers.

    `name` never blocks: it answers from the cache or queues the lookup and returns None (the caller
    shows the address). getnameinfo has no timeout of its own, so a lookup pending longer than
    `timeout` is given up on (the address stays shown, and it is not asked again).
    """

    def __init__(self, lookup: Callable[[bytes], str | None] = reverse_lookup, size: int = RESOLVE_CACHE,
                 timeout: float = RESOLVE_TIMEOUT_S, threads: int = RESOLVE_THREADS) -> None:
        self.lookup = lookup
        self.size = size
        self.timeout = timeout
        self.cache: collections.OrderedDict[bytes, str | None] = collections.OrderedDict()
        self.pending: dict[bytes, float] = {}
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=RESOLVE_QUEUE)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, name="pktscope-resolver", daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def name(self, addr: bytes) -> str | None:
        """The name of `addr` if known; otherwise ask for it in the background and return None."""
        now = time.monotonic()
        with self.lock:
            if addr in self.cache:
                self.cache.move_to_end(addr)
                return self.cache[addr]
            asked = self.pending.get(addr)
            if asked is None:
                try:
                    self.queue.put_nowait(addr)
                    self.pending[addr] = now
                except queue.Full:
                    pass
            elif now - asked > self.timeout:
                self._store(addr, None)
        return None

    def _store(self, addr: bytes, name: str | None) -> None:
        self.pending.pop(addr, None)
        self.cache[addr] = name
        self.cache.move_to_end(addr)
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)

    def _work(self) -> None:
        while (addr := self.queue.get()) is not None:
            name = self.lookup(addr)
            with self.lock:
                if addr in self.pending:  # not given up on meanwhile
                    self._store(addr, name)

    def close(self) -> None:
        """Let the threads end (one still in a lookup ends when it returns; they are daemons)."""
        for _ in self.threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break


# --- UI state -------------------------------------------------------------------------------------------


@dataclass
class Rates:
    """Rates derived from successive snapshots (live) or from a finished capture's duration (read)."""

    pps: float | None = None  # current (the last interval); None before the second sample or offline
    bps: float | None = None  # bits/s
    avg_pps: float = 0.0
    avg_bps: float = 0.0
    hosts: dict[bytes, float] = field(default_factory=dict)  # bits/s, sent + received
    flows: dict[tuple[int, int], float] = field(default_factory=dict)  # (flow key, first_ns) -> bits/s
    ports: dict[tuple[int, int], float] = field(default_factory=dict)
    history: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY))  # (pkt/s, bit/s)
    history_span: float | None = None  # seconds the history covers when it is not one sample a tick


def _flow_id(f: Flow) -> tuple[int, int]:
    return (f.key, f.first_ns)


def _host_bytes(v: list[int]) -> int:
    return v[SENT_B] + v[RECV_B]


@dataclass
class UIState:
    """What the screen shows besides the Snapshot: source, counters, rates, view, sort, toggles."""

    source: str  # "live eth0", "file trace.pcap"
    expression: str = ""
    workers: int | None = None
    uptime: float = 0.0
    kernel: tuple[int, int, int] | None = None  # packets passed, dropped, queue freezes
    view: str = VIEWS[0]
    sort: str = SORTS[0]
    paused: bool = False
    help: bool = False
    resolve: bool = False
    stopping: bool = False
    rates: Rates = field(default_factory=Rates)
    frozen: tuple[Snapshot, Rates] | None = None  # what a paused screen shows
    resolver: Resolver | None = None
    _prev: tuple[float, int, int, dict[bytes, int], dict[tuple[int, int], int], dict[Any, int]] | None = None

    def observe(self, snap: Snapshot, elapsed: float) -> None:
        """Take a live sample: current rates against the previous sample, averages since the start."""
        self.uptime = elapsed
        hosts = {a: _host_bytes(v) for a, v in snap.hosts.items()}
        flows = {_flow_id(f): f.bytes for f in snap.top_flows}
        ports = {k: v[BYTES] for k, v in snap.ports.items()}
        prev = self._prev or (0.0, 0, 0, {}, {}, {})
        dt = elapsed - prev[0]
        if dt > 0:
            r = self.rates
            r.pps = (snap.packets - prev[1]) / dt
            r.bps = 8 * (snap.bytes - prev[2]) / dt
            r.history.append((r.pps, r.bps))
            r.hosts = {a: 8 * (b - prev[3].get(a, 0)) / dt for a, b in hosts.items()}
            r.ports = {k: 8 * (b - prev[5].get(k, 0)) / dt for k, b in ports.items()}
            r.flows = {}
            for f in snap.top_flows:
                key = _flow_id(f)
                if key in prev[4]:
                    r.flows[key] = 8 * (f.bytes - prev[4][key]) / dt
                else:  # new in the top list: its average over its life so far, or over the interval
                    r.flows[key] = 8 * f.bytes / max(dt, (f.last_ns - f.first_ns) / NS)
        if elapsed > 0:
            self.rates.avg_pps = snap.packets / elapsed
            self.rates.avg_bps = 8 * snap.bytes / elapsed
        self._prev = (elapsed, snap.packets, snap.bytes, hosts, flows, ports)

    def observe_capture(self, snap: Snapshot, per_second: PerSecond | None = None) -> None:
        """Rates of a finished capture: everything averaged over the capture's (or the flow's) duration."""
        duration = (snap.last_ns - snap.first_ns) / NS if snap.first_ns is not None and snap.last_ns else 0.0
        self.uptime = duration
        span = max(duration, 1e-9)
        r = self.rates
        r.avg_pps, r.avg_bps = snap.packets / span, 8 * snap.bytes / span
        r.hosts = {a: 8 * _host_bytes(v) / span for a, v in snap.hosts.items()}
        r.ports = {k: 8 * v[BYTES] / span for k, v in snap.ports.items()}
        r.flows = {_flow_id(f): 8 * f.bytes / max((f.last_ns - f.first_ns) / NS, 1e-3) for f in snap.top_flows}
        if per_second is not None:
            r.history_span, samples = per_second.samples(HISTORY)
            r.history.extend(samples)

    def key(self, ch: str, snap: Snapshot) -> bool:
        """Act on one key press; returns whether the screen needs a redraw. `q` sets `stopping`."""
        if self.help:
            self.help = False
            return True
        if ch in "qQ":
            self.stopping = True
        elif ch == "p":
            self.paused = not self.paused
            self.frozen = (freeze(snap), copy.deepcopy(self.rates)) if self.paused else None
        elif ch == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif ch == "v":
            self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        elif ch == "n":
            self.resolve = not self.resolve
            if self.resolve and self.resolver is None:
                self.resolver = Resolver()
        elif ch in "h?":
            self.help = True
        else:
            return False
        return True

    def shown(self, snap: Snapshot) -> tuple[Snapshot, Rates]:
        """The snapshot and rates on screen: the live ones, or those frozen by `p`."""
        return self.frozen if self.paused and self.frozen else (snap, self.rates)

    def host(self, addr: bytes) -> str:
        """An address as shown: its reverse-DNS name once known and names are on, else the address."""
        if self.resolve and self.resolver is not None:
            name = self.resolver.name(addr)
            if name:
                return name
        return format_address(addr)

    def close(self) -> None:
        if self.resolver is not None:
            self.resolver.close()


def freeze(snap: Snapshot) -> Snapshot:
    """A copy of what the dashboard shows of a snapshot (not the conversation key sets)."""
    return Snapshot(
        packets=snap.packets, bytes=snap.bytes, captured_bytes=snap.captured_bytes, first_ns=snap.first_ns,
        last_ns=snap.last_ns, linktypes=dict(snap.linktypes), status=dict(snap.status),
        l2={k: list(v) for k, v in snap.l2.items()}, l3={k: list(v) for k, v in snap.l3.items()},
        l4={k: list(v) for k, v in snap.l4.items()}, hosts={k: list(v) for k, v in snap.hosts.items()},
        ports={k: list(v) for k, v in snap.ports.items()}, flows_ended=snap.flows_ended,
        flows_live=snap.flows_live, flow_evictions=snap.flow_evictions,
        top_flows=[copy.copy(f) for f in snap.top_flows], top_limit=snap.top_limit, extra=dict(snap.extra),
    )


class PerSecond:
    """Packets and bytes per second of capture time (for the sparkline of `read --tui`)."""

    def __init__(self) -> None:
        self.packets: dict[int, int] = {}
        self.bytes: dict[int, int] = {}

    def add(self, cols: np.ndarray) -> None:
        """Count one decoded batch."""
        if len(cols) == 0:
            return
        secs, inverse = np.unique(cols["ts_ns"] // NS, return_inverse=True)
        pk = np.bincount(inverse, minlength=len(secs))
        by = np.bincount(inverse, weights=cols["wire_len"].astype(np.float64), minlength=len(secs))
        for s, n, b in zip(secs.tolist(), pk.tolist(), by.tolist()):
            self.packets[s] = self.packets.get(s, 0) + n
            self.bytes[s] = self.bytes.get(s, 0) + int(b)

    def samples(self, width: int) -> tuple[float, list[tuple[float, float]]]:
        """(seconds per sample, [(pkt/s, bit/s)]): every second of the capture in at most `width` samples."""
        if not self.packets:
            return 1.0, []
        first, last = min(self.packets), max(self.packets)
        seconds = last - first + 1
        per = max(1, -(-seconds // width))  # ceil: seconds folded into one sample
        n = -(-seconds // per)
        pk, by = [0.0] * n, [0.0] * n
        for s, count in self.packets.items():
            pk[(s - first) // per] += count
            by[(s - first) // per] += self.bytes[s]
        return float(per), [(pk[i] / per, 8 * by[i] / per) for i in range(n)]


# --- renderables -------------------------------------------------------------------------------------


def _table(title: str, columns: Iterable[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold cyan", box=None,
              padding=(0, 1, 0, 0), expand=True, show_edge=False)
    for i, (name, justify) in enumerate(columns):
        t.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",  # type: ignore[arg-type]
                     ratio=1 if i == 0 else None)
    return t


class Header:
    """Source, uptime, current and average rates, totals, kernel (and eBPF) counters, sparklines."""

    def __init__(self, snap: Snapshot, state: UIState) -> None:
        self.snap, self.state = snap, state

    @property
    def lines(self) -> int:
        return 5 + ("ebpf" in self.snap.extra)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snap, st = self.snap, self.state
        r = st.rates
        live = st.kernel is not None
        title = Text.assemble(("pktscope ", "bold"), (st.source, "bold cyan"))
        if st.expression:
            title.append(f"  filter: {st.expression}")
        if st.workers:
            title.append(f"  {st.workers} worker{'s' if st.workers > 1 else ''}")
        title.append(f"  {'up' if live else 'duration'} {human_duration(st.uptime)}")
        if st.paused:
            title.append("  PAUSED", "bold yellow reverse")
        if st.stopping:
            title.append("  stopping…", "bold yellow")
        rates = Text()
        if live:
            now = "-" if r.pps is None else f"{human_pps(r.pps)} {human_bits(r.bps or 0)}"
            rates.append("now ", "dim").append(now, "bold")
            rates.append("  avg ", "dim")
        else:
            rates.append("avg ", "dim")
        rates.append(f"{human_pps(r.avg_pps)} {human_bits(r.avg_bps)}")
        counters = Text()
        if st.kernel is not None:  # first, so that a narrow screen never crops the drops away
            passed, drops, freezes = st.kernel
            counters.append("kernel ", "dim").append(f"{passed:,} passed  ")
            counters.append(f"{drops:,} dropped", "bold white on red" if drops else "")
            counters.append(f"  {freezes:,} freezes  ")
        counters.append("total ", "dim").append(f"{snap.packets:,} pkts {human_bytes(snap.bytes)}  ")
        counters.append("flows ", "dim").append(f"{snap.flows_total:,}")
        bad = sum(snap.status.values())
        if bad:
            counters.append("  undecoded/truncated/malformed ", "dim").append(f"{bad:,}", "yellow")
        lines = [title, rates, counters]
        ebpf = snap.extra.get("ebpf")
        if isinstance(ebpf, dict):
            line = Text("ebpf ", "dim")
            for k, v in ebpf.items():
                if isinstance(v, dict):  # {"packets", "bytes"} per counter, summed over CPUs
                    text = f"{v.get('packets', 0):,} pkts {human_bytes(v.get('bytes', 0))}  "
                    line.append(f"{k} ", "dim").append(text, "yellow" if k == "blocked" and v.get("packets") else "")
                else:
                    line.append(f"{k} ", "dim").append(f"{v:,}  " if isinstance(v, int) else f"{v}  ")
            lines.append(line)
        span = "" if not r.history_span or r.history_span == 1 else f" ({r.history_span:g} s/bar)"
        for label, i, fmt, style in (("pkt/s", 0, human_pps, "green"), ("bit/s", 1, human_bits, "cyan")):
            vals = [h[i] for h in r.history]
            tail = f" max {fmt(max(vals))}{span}" if vals else ""
            width = max(10, min(HISTORY, options.max_width - 4 - len(label) - 1 - len(tail)))
            lines.append(Text(f"{label} ", "dim").append(sparkline(vals, width), style).append(tail, "dim"))
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        yield Panel(Group(*lines), box=box.ROUNDED, padding=(0, 1))


class MainView:
    """The main table: hosts, conversations or ports, as many rows as fit."""

    def __init__(self, snap: Snapshot, state: UIState) -> None:
        self.snap, self.state = snap, state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = max(1, (options.height or 20) - 2)  # the title and header lines
        mode = WIDE if options.max_width >= WIDE_WIDTH else NARROW
        view = {"hosts": host_table, "conversations": conversation_table, "ports": port_table}[self.state.view]
        yield view(self.snap, self.state, rows, mode)


def _ranked(items: Iterable[tuple[Any, Any]], rows: int, key: Callable[[tuple[Any, Any]], Any]) -> list:
    return heapq.nsmallest(rows, items, key=key)


def host_table(snap: Snapshot, st: UIState, rows: int, mode: str = WIDE) -> Table:
    """Top talkers by host: bytes and packets sent and received, current rate, share of all traffic."""
    rates = st.shown(snap)[1].hosts
    key = {"bytes": lambda kv: (-_host_bytes(kv[1]), kv[0]),
           "packets": lambda kv: (-(kv[1][SENT_P] + kv[1][RECV_P]), kv[0]),
           "rate": lambda kv: (-rates.get(kv[0], 0.0), -_host_bytes(kv[1]), kv[0])}[st.sort]
    cols = {WIDE: ["host", "sent", "received", "pkts out", "pkts in", "rate", "share"],
            NARROW: ["host", "sent", "received", "pkts", "rate", "share"],
            COMPACT: ["host", "bytes", "share"]}[mode]
    t = _table(f"Top talkers by {st.sort}", [(c, "left" if c in ("host", "share") else "right") for c in cols])
    total = max(snap.bytes, 1)
    for addr, v in _ranked(snap.hosts.items(), rows, key):
        cells = {"host": st.host(addr), "sent": human_bytes(v[SENT_B]), "received": human_bytes(v[RECV_B]),
                 "bytes": human_bytes(_host_bytes(v)), "pkts out": human_count(v[SENT_P]),
                 "pkts in": human_count(v[RECV_P]), "pkts": human_count(v[SENT_P] + v[RECV_P]),
                 "rate": human_bits(rates.get(addr, 0.0)),
                 "share": share_bar(_host_bytes(v) / total, SHARE_BAR if mode != COMPACT else SHARE_BAR // 2)}
        t.add_row(*(cells[c] for c in cols))
    return t


def _endpoint(st: UIState, f: Flow, addr: bytes, port: int) -> str:
    text = st.host(addr)
    if f.proto not in (p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP):
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def conversation_table(snap: Snapshot, st: UIState, rows: int, mode: str = WIDE) -> Table:
    """Top conversations: endpoints (A initiated), protocol, duration, volume, current rate, TCP state."""
    rates = st.shown(snap)[1].flows
    key = {"bytes": lambda f: (-f.bytes, -f.packets, f.first_ns),
           "packets": lambda f: (-f.packets, -f.bytes, f.first_ns),
           "rate": lambda f: (-rates.get(_flow_id(f), 0.0), -f.bytes, f.first_ns)}[st.sort]
    cols = [("A (initiator)", "left"), ("B", "left"), ("proto", "left"), ("state", "left"), ("dur", "right"),
            ("bytes", "right"), *([("pkts", "right")] if mode == WIDE else []), ("rate", "right")]
    t = _table(f"Top conversations by {st.sort}", cols)
    t.columns[1].ratio = 1
    for f in heapq.nsmallest(rows, snap.top_flows, key=key):
        proto = p.ip_proto_name(f.proto)
        state = tcp_state(f.flags_ab, f.flags_ba) if f.proto == p.IPPROTO_TCP else ""
        pkts = [human_count(f.packets)] if mode == WIDE else []
        t.add_row(_endpoint(st, f, f.a_addr, f.a_port), _endpoint(st, f, f.b_addr, f.b_port), proto,
                  Text(state, "red" if state == "reset" else ""),
                  human_duration((f.last_ns - f.first_ns) / NS), human_bytes(f.bytes), *pkts,
                  human_bits(rates.get(_flow_id(f), 0.0)))
    return t


def port_table(snap: Snapshot, st: UIState, rows: int, mode: str = WIDE) -> Table:
    """Top ports/services (a conversation's service is its lower port): volume, rate, share."""
    rates = st.shown(snap)[1].ports
    i = PKTS if st.sort == "packets" else BYTES
    key = {"rate": lambda kv: (-rates.get(kv[0], 0.0), -kv[1][BYTES], kv[0])}.get(
        st.sort, lambda kv: (-kv[1][i], kv[0]))
    cols = ["port", "service", "bytes", "share"] if mode == COMPACT else \
        ["port", "service", "packets", "bytes", "rate", "share"]
    t = _table(f"Top ports by {st.sort}", [(c, "right" if c in ("packets", "bytes", "rate") else "left")
                                             for c in cols])
    t.columns[1].ratio = 1
    total = max(snap.bytes, 1)
    for (proto, port), v in _ranked(snap.ports.items(), rows, key):
        cells = {"port": f"{port}/{p.ip_proto_name(proto).lower()}", "service": service_name(proto, port),
                 "packets": human_count(v[PKTS]), "bytes": human_bytes(v[BYTES]),
                 "rate": human_bits(rates.get((proto, port), 0.0)),
                 "share": share_bar(v[BYTES] / total, SHARE_BAR if mode != COMPACT else SHARE_BAR // 2)}
        t.add_row(*(cells[c] for c in cols))
    return t


def protocol_table(snap: Snapshot, st: UIState, rows: int, mode: str = WIDE) -> Table:
    """The protocol breakdown: transport protocols over IP, and what is not IP (ARP, ...)."""
    i = PKTS if st.sort == "packets" else BYTES
    entries = list(snap.l4.items()) + [(k, v) for k, v in snap.l3.items() if k not in ("IPv4", "IPv6")]
    cols = ["protocol", *(["packets"] if mode == WIDE else []), "bytes", "share"]
    t = _table(f"Protocols by {'packets' if i == PKTS else 'bytes'}",
               [(c, "right" if c in ("packets", "bytes") else "left") for c in cols])
    total = max(snap.packets if i == PKTS else snap.bytes, 1)
    for name, v in heapq.nsmallest(rows, entries, key=lambda kv: (-kv[1][i], kv[0])):
        cells = {"protocol": name, "packets": human_count(v[PKTS]), "bytes": human_bytes(v[BYTES]),
                 "share": share_bar(v[i] / total, SHARE_BAR // 2)}
        t.add_row(*(cells[c] for c in cols))
    return t


class Breakdown:
    """Under the main view: the protocol breakdown beside top ports (or top hosts in the ports view)."""

    def __init__(self, snap: Snapshot, state: UIState) -> None:
        self.snap, self.state = snap, state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = max(1, (options.height or BOTTOM_ROWS + 2) - 2)
        st = self.state
        grid = Table.grid(expand=True, padding=(0, 2))
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        other = host_table if st.view == "ports" else port_table
        mode = WIDE if options.max_width >= WIDE_WIDTH else COMPACT
        grid.add_row(protocol_table(self.snap, st, rows, mode), other(self.snap, st, rows, COMPACT))
        yield grid


class KeyLine:
    """The bottom line: the keys and the current view, sort and name mode."""

    def __init__(self, state: UIState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        st = self.state
        line = Text(no_wrap=True, overflow="ellipsis")
        for key, label in (("q", "quit"), ("p", "resume" if st.paused else "pause"), ("s", f"sort:{st.sort}"),
                           ("v", f"view:{st.view}"), ("n", f"names:{'on' if st.resolve else 'off'}"),
                           ("h", "help")):
            line.append(key, "bold reverse").append(f" {label}  ")
        yield line


class HelpPanel:
    """The key reference (`h`)."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan")
        t.add_column()
        for key, text in HELP:
            t.add_row(key, text)
        t.add_row("", "")
        t.add_row("", "rate: over the last interval (live), the whole capture (read)")
        t.add_row("", "share: bytes sent and received over all bytes")
        yield Panel(t, title="keys", title_align="left", box=box.ROUNDED)


class Dashboard:
    """The whole screen: header, main view, protocols and ports, keys; fits any size from 80x24 up."""

    def __init__(self, snap: Snapshot, state: UIState) -> None:
        self.snap, self.state = state.shown(snap)[0], state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        header = Header(self.snap, self.state)
        parts = [Layout(header, name="header", size=header.lines + 2)]
        if self.state.help:
            parts.append(Layout(HelpPanel(), name="help", ratio=1))
        else:
            parts.append(Layout(MainView(self.snap, self.state), name="main", ratio=1))
            if height >= BOTTOM_MIN_HEIGHT:
                parts.append(Layout(Breakdown(self.snap, self.state), name="bottom", size=BOTTOM_ROWS + 2))
        parts.append(Layout(KeyLine(self.state), name="keys", size=1))
        layout = Layout()
        layout.split_column(*parts)
        yield layout


def summary_line(snap: Snapshot, state: UIState) -> str:
    """One plain line per interval (no escape codes) for when stdout is not a terminal."""
    r = state.rates
    now = "-" if r.pps is None else f"{human_pps(r.pps)} {human_bits(r.bps or 0)}"
    parts = [f"{human_duration(state.uptime):>6}", f"{snap.packets:,} pkts {human_bytes(snap.bytes)}", f"now {now}"]
    if state.kernel is not None:
        parts.append(f"kernel drops {state.kernel[1]:,}")
    if snap.hosts:
        addr, v = min(snap.hosts.items(), key=lambda kv: (-_host_bytes(kv[1]), kv[0]))
        parts.append(f"top {format_address(addr)} {human_bytes(_host_bytes(v))}")
    return "  ".join(parts)


# --- terminal ------------------------------------------------------------------------------------------


class KeyReader:
    """Single key presses from the terminal in cbreak mode; the terminal's mode is restored on exit.

    cbreak keeps ISIG, so Ctrl-C still raises SIGINT (which stops a capture and reports, as without the
    screen). Does nothing when stdin is not a terminal.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        stream = sys.stdin if stream is None else stream
        try:
            self.fd: int | None = stream.fileno() if stream.isatty() else None
        except (OSError, ValueError):
            self.fd = None
        self.saved: list[Any] | None = None

    def __enter__(self) -> Self:
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None

    def read(self, timeout: float = 0.0) -> str:
        """The keys pressed so far (waiting up to `timeout` for one); escape sequences are dropped."""
        if self.fd is None:
            if timeout:
                time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        data = os.read(self.fd, 64).decode(errors="ignore")
        return "" if data.startswith("\x1b") else data


class Screen:
    """A full-screen rich `Live` redrawn on demand, with keys in cbreak mode and redraws on resize.

    Redraws happen on the caller's thread only (no `Live` refresh thread): the live snapshot is merged
    in place on that thread, and rendering it from another one would race with the merge.
    """

    def __init__(self, state: UIState, snap: Callable[[], Snapshot], console: Console | None = None) -> None:
        self.state = state
        self.snap = snap
        self.console = console or Console()
        self.keys = KeyReader()
        self.live = Live(console=self.console, screen=True, auto_refresh=False, redirect_stdout=False,
                         redirect_stderr=False)
        self.resized = False
        self._old_winch: Any = None

    def __enter__(self) -> Self:
        self.keys.__enter__()
        try:
            self._old_winch = signal.signal(signal.SIGWINCH, self._on_winch)
            self.live.start()
            self.draw()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.live.stop()
        finally:
            if self._old_winch is not None:
                signal.signal(signal.SIGWINCH, self._old_winch)
                self._old_winch = None
            self.keys.__exit__()
            self.state.close()

    def _on_winch(self, _signum: int, _frame: object) -> None:
        self.resized = True

    def draw(self) -> None:
        self.resized = False
        try:  # the terminal's size now: COLUMNS/LINES in the environment are a shell's stale copy
            self.console.size = os.get_terminal_size(self.console.file.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        self.live.update(Dashboard(self.snap(), self.state), refresh=True)

    def poll(self, timeout: float = 0.0) -> None:
        """Handle pressed keys and a resize; redraw if they changed anything."""
        redraw = self.resized
        for ch in self.keys.read(timeout):
            redraw = self.state.key(ch, self.snap()) or redraw
        if redraw:
            self.draw()


# --- the commands' hooks ----------------------------------------------------------------------------------


class CaptureRun(Protocol):
    """What the live views need of `pktscope live`'s parent (app.live.LiveRun)."""

    snap: Snapshot
    stop: Any  # a multiprocessing Event

    def kernel_totals(self) -> Any: ...


def _live_state(interface: str, expression: str, workers: int) -> UIState:
    return UIState(source=f"live {interface}", expression=expression, workers=workers, kernel=(0, 0, 0))


def _sample(run: CaptureRun, state: UIState, elapsed: float) -> None:
    k = run.kernel_totals()
    state.kernel = (k.packets, k.drops, k.freeze_q_cnt)
    state.observe(run.snap, elapsed)


class LiveScreen:
    """`pktscope live` on a terminal: the dashboard, redrawn every interval; `q` stops the capture."""

    def __init__(self, run: CaptureRun, interface: str, expression: str, workers: int) -> None:
        self.run = run
        self.state = _live_state(interface, expression, workers)
        self.screen = Screen(self.state, lambda: run.snap)

    def __enter__(self) -> Self:
        self.screen.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.screen.__exit__()

    def interval(self, elapsed: float) -> None:
        _sample(self.run, self.state, elapsed)
        if not self.state.paused:
            self.screen.draw()

    def poll(self) -> None:
        self.screen.poll()
        if self.state.stopping and not self.run.stop.is_set():
            self.run.stop.set()
            self.screen.draw()


class SummaryLines:
    """`pktscope live` without a terminal (or with --no-tui): one plain summary line per interval."""

    def __init__(self, run: CaptureRun, interface: str, expression: str, workers: int,
                 out: IO[str] | None = None) -> None:
        self.run = run
        self.state = _live_state(interface, expression, workers)
        self.out = out or sys.stdout

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def interval(self, elapsed: float) -> None:
        _sample(self.run, self.state, elapsed)
        self.out.write(summary_line(self.run.snap, self.state) + "\n")
        self.out.flush()

    def poll(self) -> None:
        return None


def live_view(run: CaptureRun, interface: str, expression: str, workers: int,
              no_tui: bool) -> LiveScreen | SummaryLines:
    """The dashboard when stdout is a terminal (and not --no-tui), else plain summary lines."""
    if not no_tui and sys.stdout.isatty():
        return LiveScreen(run, interface, expression, workers)
    return SummaryLines(run, interface, expression, workers)


def show_capture(snap: Snapshot, source: str, expression: str, per_second: PerSecond | None,
                 console: Console | None = None) -> None:
    """`read --tui`: the dashboard on a finished capture until `q` (or Ctrl-C)."""
    state = UIState(source=source, expression=expression)
    state.observe_capture(snap, per_second)
    try:
        with Screen(state, lambda: snap, console) as screen:
            while not state.stopping:
                screen.poll(POLL_S)
    except KeyboardInterrupt:
        pass
