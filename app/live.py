"""`pktscope live`: worker processes on AF_PACKET rings in one fanout group, merged by the parent.

Each worker owns one socket, one TPACKET_V3 ring, one Analysis (and, with -w, its own pcap files);
it decodes and aggregates locally and sends Snapshot *deltas* to the parent each interval, never
packets. The parent absorbs them, adds the kernel counters, and renders.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from pktscope.analyzers.analysis import Analysis
from pktscope.analyzers.snapshot import Snapshot
from pktscope.app.cli import EXIT_OK, UserError
from pktscope.app.export import ExportTarget, FlowExporter, check_target, export_summary, open_exporter
from pktscope.bpf import syscall
from pktscope.bpf.classic import (
    DEFAULT_SNAPLEN,
    FilterError,
    accept_all,
    compile_filter,
    reads_vlan_tag,
    uses_ancillary_loads,
)
from pktscope.bpf.ebpf import TranslationError
from pktscope.bpf.maps import PrefixError, parse_prefix
from pktscope.bpf.pins import PinError, PinnedFilter, open_run
from pktscope.capture import kernel
from pktscope.capture.afpacket import FanoutGroup, LiveCaptureError, PacketRing, RingStats, default_ring_mb
from pktscope.capture.batch import Batch
from pktscope.capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW, linktype_name
from pktscope.capture.pcapwriter import PcapWriteError, PcapWriter
from pktscope.decoders import decode_batch

READY_TIMEOUT_S = 10.0
DRAIN_S = 0.3  # after stop: frames already in the ring's blocks are still read, for this long at most
PR_SET_PDEATHSIG = 1  # linux/prctl.h: a worker dies with its parent, even after SIGKILL


@dataclass(frozen=True)
class LiveConfig:
    """Everything a worker needs (picklable, sent to forked workers)."""

    interface: str
    program: tuple[tuple[int, int, int, int], ...]
    snaplen: int
    ring_mb: int
    workers: int
    pin: bool
    fanout_mode: str
    fanout_flags: int
    group_id: int
    promisc: bool
    write: str | None
    file_size_mb: float | None
    rotate_seconds: int | None
    file_count: int | None
    idle_timeout: float
    active_timeout: float
    max_flows: int
    top: int
    interval: float
    bpf_fd: int | None = None  # --ebpf/--block: the loaded socket filter, inherited by the forked workers
    export: ExportTarget | None = None  # --export: each worker has its own exporter (own socket or file)
    export_domain: int = 0
    export_rotate_mb: float = 100.0
    export_sockaddr: tuple[int, tuple[Any, ...]] | None = None  # resolved once, by the parent
    # The expression when it tests VLAN tags: run per frame in the workers, not the kernel (`_place_filter`)
    userspace_filter: str | None = None


def output_path(pattern: str, index: int, workers: int) -> str:
    """Worker `index`'s -w file: FILE itself with one worker, else FILE with `.wN` before its suffix."""
    if workers == 1:
        return pattern
    root, ext = os.path.splitext(pattern)
    return f"{root}.w{index}{ext}"


def interface_linktype(name: str) -> int:
    """The link type frames of an interface are captured with (from its ARPHRD type in sysfs)."""
    try:
        with open(f"/sys/class/net/{name}/type") as f:
            arphrd = int(f.read().strip())
    except (OSError, ValueError):
        return LINKTYPE_ETHERNET
    return kernel.ARPHRD_TO_LINKTYPE.get(arphrd, LINKTYPE_RAW)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reserve(remaining: Any, want: int) -> int:
    """Take up to `want` frames from the shared -c budget; returns how many this worker may keep."""
    with remaining.get_lock():
        take = min(want, remaining.value)
        remaining.value -= take
    return take


def _filtered(batch: Batch, keep: np.ndarray, snaplen: int) -> Batch:
    """The frames of `batch` the userspace filter kept, cut to the snap length the user asked for."""
    kept = batch.select(keep)
    return replace(kept, caplens=np.minimum(kept.caplens, snaplen).astype(np.uint32, copy=False))


def worker_exporter(cfg: LiveConfig, index: int) -> FlowExporter | None:
    """Worker `index`'s exporter: observation domain ID+index, jsonl file named as -w's (`.wN`)."""
    target = cfg.export
    if target is None:
        return None
    if target.scheme == "jsonl":
        target = ExportTarget("jsonl", path=output_path(target.path, index, cfg.workers))
    return open_exporter(target, cfg.export_domain + index, cfg.export_rotate_mb, cfg.export_sockaddr)


def _with_export(delta: Snapshot, exporter: FlowExporter | None) -> Snapshot:
    if exporter is not None:
        delta.extra["export"] = exporter.counts()  # the worker's totals so far, not a delta
    return delta


def worker_main(cfg: LiveConfig, index: int, conn: Connection, stop: Any, remaining: Any) -> None:
    """One capture worker: ring -> decode -> analysis; deltas to the parent every interval."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if cfg.pin:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    # A userspace filter must see whole frames, as the kernel's would; they are cut to -s after it.
    ring_snaplen = max(cfg.snaplen, DEFAULT_SNAPLEN) if cfg.userspace_filter else cfg.snaplen
    try:
        ring = PacketRing.open(cfg.interface, snaplen=ring_snaplen, ring_mb=cfg.ring_mb,
                               fanout=FanoutGroup(cfg.group_id, cfg.fanout_mode, cfg.fanout_flags),
                               promisc=cfg.promisc, classic_bpf=list(cfg.program),
                               bpf_fd=cfg.bpf_fd)
    except LiveCaptureError as exc:
        conn.send(("error", index, str(exc)))
        return
    try:
        exporter = worker_exporter(cfg, index)
    except OSError as exc:
        ring.close()
        conn.send(("error", index, str(exc)))
        return
    writer = None
    if cfg.write:
        writer = PcapWriter(output_path(cfg.write, index, cfg.workers), linktype=ring.linktype,
                            snaplen=cfg.snaplen, file_size_mb=cfg.file_size_mb,
                            rotate_seconds=cfg.rotate_seconds, file_count=cfg.file_count)
    analysis = Analysis(idle_timeout=cfg.idle_timeout, active_timeout=cfg.active_timeout,
                        max_flows=cfg.max_flows, top=cfg.top, on_flow_end=exporter)
    packets = 0
    match = compile_filter(cfg.userspace_filter, ring.linktype, cfg.snaplen).match_batch \
        if cfg.userspace_filter else None
    rejected = 0
    conn.send(("ready", index, ring.linktype))
    next_send = time.monotonic() + cfg.interval
    drain_until = None
    try:
        while True:
            if stop.is_set() and drain_until is None:
                drain_until = time.monotonic() + DRAIN_S
            batches = ring.read(timeout=0.05)
            for batch in batches:
                if match is not None:
                    keep = match(batch)
                    rejected += len(batch) - int(keep.sum())
                    batch = _filtered(batch, keep, cfg.snaplen)
                    if not len(batch):
                        continue
                if remaining is not None:
                    take = _reserve(remaining, len(batch))
                    if take < len(batch):
                        stop.set()
                        if take == 0:
                            break
                        batch = batch.select(slice(0, take))
                if writer is not None and not writer.finished:
                    writer.write(batch)
                analysis.feed(decode_batch(batch), batch)
                packets += len(batch)
            if exporter is not None:
                exporter.tick()
            now = time.monotonic()
            if drain_until is not None and (not batches or now >= drain_until):
                break
            if now >= next_send:
                if match is not None:
                    conn.send(("userspace_filter", index, rejected))
                conn.send(("delta", index, _with_export(analysis.take_delta(), exporter), ring.stats(), packets))
                next_send = now + cfg.interval
        analysis.finish(time.time_ns())  # the wall clock: see FlowTable.flush
        if exporter is not None:
            exporter.close()
        files = []
        if writer is not None:
            writer.close()
            files = writer.files
        if match is not None:
            conn.send(("userspace_filter", index, rejected))
        conn.send(("final", index, _with_export(analysis.take_delta(), exporter), ring.stats(), packets,
                   files))
    except PcapWriteError as exc:
        conn.send(("error", index, str(exc)))
    except OSError as exc:  # -w: disk full, file system gone, ... (the writer's os.write)
        target = output_path(cfg.write, index, cfg.workers) if cfg.write else cfg.interface
        conn.send(("error", index, f"cannot write {target}: {exc.strerror or exc}"))
    finally:
        ring.close()
        if writer is not None:
            try:
                writer.close()
            except OSError:
                pass  # already reported


class LiveRun:
    """The parent side: start workers, merge their deltas, stop them, report."""

    def __init__(self, cfg: LiveConfig, count: int | None) -> None:
        self.cfg = cfg
        ctx = mp.get_context("fork")
        self.stop = ctx.Event()
        self.remaining = ctx.Value("q", count) if count else None
        self.snap = Snapshot(top_limit=cfg.top)
        self.kernel: dict[int, RingStats] = {}
        self.worker_packets: dict[int, int] = {}
        self.worker_live: dict[int, int] = {}
        self.userspace_rejected: dict[int, int] = {}  # frames each worker's userspace filter dropped
        self.files: list[str] = []
        self.ebpf: PinnedFilter | None = None  # set by run_live with --ebpf/--block
        self.export: dict[int, dict[str, int]] = {}  # worker -> its exporter's counts
        self.errors: list[str] = []  # a worker's error during the run (the run stops; exit status 2)
        self.conns: dict[Connection, int] = {}
        self.procs: list[mp.process.BaseProcess] = []
        for i in range(cfg.workers):
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker_main, args=(cfg, i, child_end, self.stop, self.remaining),
                               name=f"pktscope-worker-{i}", daemon=True)
            proc.start()
            child_end.close()
            self.conns[parent_end] = i
            self.procs.append(proc)
        self.linktype = LINKTYPE_ETHERNET

    def _handle(self, msg: tuple) -> str | None:
        kind, index = msg[0], msg[1]
        if kind == "error":
            return str(msg[2])
        if kind == "ready":
            self.linktype = msg[2]
        if kind == "userspace_filter":
            self.userspace_rejected[index] = msg[2]
        if kind in ("delta", "final"):
            delta, stats, packets = msg[2], msg[3], msg[4]
            if "export" in delta.extra:
                self.export[index] = delta.extra.pop("export")  # type: ignore[assignment]
            self.snap.absorb(delta)
            self.refresh_ebpf()
            self.worker_live[index] = delta.flows_live
            self.snap.flows_live = sum(self.worker_live.values())
            self.kernel[index] = stats
            self.worker_packets[index] = packets
            if kind == "final":
                self.files.extend(msg[5])
        return None

    def wait_ready(self) -> None:
        """Block until every worker captures; a worker's error stops the run (UserError)."""
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(ready) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                self.shutdown()
                raise UserError("capture workers did not start in time")
            for conn in wait(list(self.conns), timeout=left):
                try:
                    msg = conn.recv()
                except EOFError:
                    self.shutdown()
                    raise UserError(f"capture worker {self.conns[conn]} exited before capturing") from None
                error = self._handle(msg)
                if error:
                    self.shutdown()
                    raise UserError(error)
                if msg[0] == "ready":
                    ready.add(msg[1])

    def run(self, duration: float | None, on_interval: Any, on_poll: Any = None) -> None:
        """Merge deltas until every worker sent its final one; stop at `duration` or on `self.stop`.

        `on_interval(elapsed)` runs every interval; `on_poll()` (the dashboard's keys) at least every 0.1 s.
        """
        started = time.monotonic()
        open_conns = dict(self.conns)
        next_tick = started + self.cfg.interval
        while open_conns:
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                self.stop.set()
            for conn in wait(list(open_conns), timeout=0.1):
                try:
                    msg = conn.recv()
                except EOFError:
                    self.errors.append(f"capture worker {open_conns.pop(conn)} exited unexpectedly")
                    self.stop.set()
                    continue
                error = self._handle(msg)
                if error:
                    self.errors.append(error)
                    self.stop.set()
                if msg[0] in ("final", "error"):
                    del open_conns[conn]
            if on_poll is not None:
                on_poll()
            if time.monotonic() >= next_tick and not self.stop.is_set():
                on_interval(time.monotonic() - started)
                next_tick += self.cfg.interval
        self.shutdown()

    def shutdown(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()

    def export_json(self) -> dict[str, Any]:
        """`export`: records exported and dropped, summed over the workers (with --export only)."""
        if self.cfg.export is None:
            return {}
        return {"export": {k: sum(c[k] for c in self.export.values()) for k in ("records", "dropped")}}

    def refresh_ebpf(self) -> None:
        """Put the eBPF filter's counters (summed over CPUs) into the snapshot's extras as `ebpf`."""
        if self.ebpf is not None:
            self.snap.extra["ebpf"] = {"run": self.ebpf.rid, **self.ebpf.counters()}

    def close_ebpf(self) -> None:
        """Read the final counters (the workers have stopped), then unpin and release the filter."""
        if self.ebpf is not None:
            self.refresh_ebpf()
            self.ebpf.close()
            self.ebpf = None

    def kernel_totals(self) -> RingStats:
        total = RingStats()
        for stats in self.kernel.values():
            total = total + stats
        return total

    def live_json(self) -> dict[str, Any]:
        k = self.kernel_totals()
        return {
            "kernel": {"packets": k.packets, "drops": k.drops, "freezes": k.freeze_q_cnt},
            **({"ebpf": self.snap.extra["ebpf"]} if "ebpf" in self.snap.extra else {}),
            "workers": [{"worker": i, "pid": self.procs[i].pid, "packets": self.worker_packets.get(i, 0),
                         "kernel_packets": self.kernel[i].packets if i in self.kernel else 0,
                         "kernel_drops": self.kernel[i].drops if i in self.kernel else 0}
                        for i in range(len(self.procs))],
            **self.export_json(),
            **self.filter_json(),
        }

    def filter_json(self) -> dict[str, Any]:
        """Where the filter ran; in userspace, the kernel counters include the frames it then rejected."""
        if not self.cfg.userspace_filter:
            return {"filter_in": "kernel"}
        return {"filter_in": "userspace", "userspace_rejected": sum(self.userspace_rejected.values())}


def _place_filter(expression: str, linktype: int, snaplen: int) -> tuple[tuple, str | None]:
    """The program for the kernel, and the expression to run in the workers instead (or None).

    libpcap compiles offline, so a VLAN test reads the tag from the frame bytes; the kernel moved the
    outer tag into skb metadata before any socket filter runs, so in the kernel that test never matches.
    The ring puts the tag back into the bytes (as libpcap does), so the same program run there on each
    frame passes what tcpdump's live filter passes (libpcap uses SKF_AD_VLAN_TAG* loads there) and what
    `tcpdump -r` passes on the file we write. The kernel then keeps every frame.
    """
    if not expression:
        return tuple(accept_all(snaplen)), None
    compiled = compile_filter(expression, linktype, snaplen)
    if not reads_vlan_tag(compiled.instructions, linktype):
        return compiled.instructions, None
    if uses_ancillary_loads(compiled.instructions):
        raise FilterError(f"filter expression {expression!r}: inbound/outbound cannot be combined with "
                          "VLAN tests in a live capture")
    return tuple(accept_all(max(snaplen, DEFAULT_SNAPLEN))), expression


def _config(args: argparse.Namespace, program: tuple, userspace_filter: str | None = None) -> LiveConfig:
    workers = len(os.sched_getaffinity(0)) if args.workers == "auto" else int(args.workers)
    return LiveConfig(
        interface=args.interface, program=program, snaplen=args.snaplen,
        ring_mb=args.ring_mb or default_ring_mb(workers),
        workers=workers, pin=args.workers == "auto", fanout_mode=args.fanout,
        fanout_flags=kernel.PACKET_FANOUT_FLAG_DEFRAG if args.fanout_defrag else 0,
        group_id=os.getpid() & 0xFFFF, promisc=args.promisc, write=args.write,
        file_size_mb=args.file_size, rotate_seconds=args.rotate_seconds, file_count=args.file_count,
        idle_timeout=args.idle_timeout, active_timeout=args.active_timeout, max_flows=args.max_flows,
        top=args.top, interval=args.interval, userspace_filter=userspace_filter,
    )


def run_live(args: argparse.Namespace) -> int:
    """Run `pktscope live` with parsed arguments; returns the exit status."""
    from pktscope.app import report, tui

    name = args.interface
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise UserError(f"no such interface: {name}") from None
    expression = " ".join(args.expression).strip()
    linktype = interface_linktype(name)
    try:
        program, userspace_filter = _place_filter(expression, linktype, args.snaplen)
    except FilterError as exc:
        raise UserError(str(exc)) from None
    if args.write:
        directory = os.path.dirname(os.path.abspath(args.write))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
            raise UserError(f"cannot write {args.write}: {directory} is not a writable directory")
    cfg = _config(args, program, userspace_filter)

    if args.export is not None:
        try:
            sockaddr = check_target(args.export)
        except OSError as exc:
            raise UserError(str(exc)) from None
        cfg = replace(cfg, export=args.export, export_domain=args.export_domain,
                      export_rotate_mb=args.export_rotate_mb, export_sockaddr=sockaddr)

    pinned = _load_ebpf(args, cfg)
    if pinned is not None:
        cfg = replace(cfg, bpf_fd=pinned.prog_fd)
    try:
        live = LiveRun(cfg, args.count)
    except BaseException:
        if pinned is not None:
            pinned.close()
        raise
    live.ebpf = pinned
    live.refresh_ebpf()
    stopping = {"signal": None}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum
        live.stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        live.wait_ready()
        if args.json:
            _json_line({"event": "ready", "interface": name, "linktype": linktype_name(live.linktype),
                        "workers": cfg.workers, "fanout": cfg.fanout_mode, "fanout_group": cfg.group_id,
                        "filter": expression or None})
        else:
            print(f"pktscope: listening on {name}, link-type {linktype_name(live.linktype)}, "
                  f"snapshot length {cfg.snaplen} bytes, {cfg.workers} worker(s)", file=sys.stderr)

        view = None if args.json else tui.live_view(live, name, expression, cfg.workers, args.no_tui)

        def on_interval(elapsed: float) -> None:
            if view is not None:
                view.interval(elapsed)
            else:
                _json_line({"event": "interval", "elapsed_s": round(elapsed, 3),
                            **report.to_json(live.snap, args.top, args.sort), **live.live_json()})

        with view or contextlib.nullcontext():  # the screen closes before the final report
            live.run(args.duration, on_interval, view.poll if view is not None else None)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        live.shutdown()
        live.close_ebpf()
    if live.errors:
        raise UserError(live.errors[0])
    snap = live.snap
    snap.extra["source"] = {"type": "live", "interface": name, "workers": cfg.workers, "files": live.files}
    snap.extra["filter"] = expression or None
    if args.json:
        _json_line({"event": "final", **report.to_json(snap, args.top, args.sort), **live.live_json()})
        return EXIT_OK
    from rich.console import Console

    k = live.kernel_totals()
    rows = [("interface", f"{name} ({cfg.workers} worker(s), fanout {cfg.fanout_mode})"),
            ("kernel: passed filter", f"{k.packets:,}"),
            ("kernel: dropped", f"{k.drops:,}" if not k.drops else f"[bold red]{k.drops:,}[/]"),
            ("kernel: queue freezes", f"{k.freeze_q_cnt:,}"),
            ("packets per worker", ", ".join(f"{live.worker_packets.get(i, 0):,}" for i in range(cfg.workers)))]
    if expression:
        rows.append(("filter", expression))
    if cfg.userspace_filter:
        rejected = sum(live.userspace_rejected.values())
        rows.append(("filter ran in", f"userspace (VLAN tests), {rejected:,} frames rejected there"))
    if cfg.export is not None:
        rows.append(("export", export_summary(cfg.export, live.export_json()["export"])))
    if "ebpf" in snap.extra:
        rows.append(("eBPF filter", _ebpf_summary(snap.extra["ebpf"])))  # type: ignore[arg-type]
    if live.files:
        rows.append(("written", ", ".join(live.files)))
    snap.extra = {**snap.extra, "report_rows": rows}
    report.render(snap, Console(), args.top, args.sort, "Live capture summary")
    return EXIT_OK


def _load_ebpf(args: argparse.Namespace, cfg: LiveConfig) -> PinnedFilter | None:
    """With --ebpf or --block: the eBPF socket filter (blocklist, counters, the expression), loaded and pinned."""
    if not (args.ebpf or args.block):
        return None
    try:
        prefixes = [parse_prefix(text) for text in args.block or []]
    except PrefixError as exc:
        raise UserError(str(exc)) from None
    try:
        return PinnedFilter.load(cfg.program, cfg.snaplen, prefixes)
    except syscall.VerifierError as exc:
        detail = f"\n{exc.log.rstrip()}" if args.verbose else " (--verbose shows the verifier's log)"
        raise UserError(f"{exc.strerror}{detail}") from None
    except syscall.BpfError as exc:
        raise UserError(_bpf_error_message(exc)) from None
    except (TranslationError, PinError) as exc:
        raise UserError(str(exc)) from None


def _bpf_error_message(exc: syscall.BpfError) -> str:
    """One line naming why the kernel refused an eBPF object: privilege, kernel support, or its own reason."""
    if exc.errno == errno.EPERM:
        return f"the eBPF filter needs CAP_BPF (run as root): {exc.strerror}"
    if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return f"this kernel lacks the eBPF support the filter needs (bpf(2), LPM trie, per-CPU maps): {exc.strerror}"
    return f"cannot set up the eBPF filter: {exc.strerror}"


def _ebpf_summary(counters: dict[str, Any]) -> str:
    return ", ".join(f"{name} {counters[name]['packets']:,} ({counters[name]['bytes']:,} B)"
                     for name in ("seen", "blocked", "rejected", "passed")) + f"; run {counters['run']}"


def run_block(args: argparse.Namespace) -> int:
    """`pktscope block add|del|list`: change or show the blocklist of a running capture's eBPF filter."""
    try:
        prefixes = [parse_prefix(text) for text in args.prefixes]
    except PrefixError as exc:
        raise UserError(str(exc)) from None
    if args.action != "list" and not prefixes:
        raise UserError(f"block {args.action}: give at least one PREFIX")
    try:
        maps = open_run(args.run)
    except PinError as exc:
        raise UserError(str(exc)) from None
    except syscall.BpfError as exc:
        raise UserError(_bpf_error_message(exc)) from None
    try:
        for net in prefixes:
            if args.action == "add":
                maps.block(net)
            elif args.action == "del" and not maps.unblock(net):
                raise UserError(f"{net} is not in the blocklist")
        if args.action == "list":
            wanted = set(prefixes)
            for net, hits in maps.blocklist():
                if not wanted or net in wanted:
                    print(f"{net}\t{hits}")
    except syscall.BpfError as exc:
        raise UserError(_bpf_error_message(exc)) from None
    finally:
        maps.close()
    return EXIT_OK


def _json_line(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
