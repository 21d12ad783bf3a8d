"""`pktscope read`: a capture file through the pipeline (batches -> columns -> analysis -> report)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from pktscope.analyzers.analysis import Analysis
from pktscope.analyzers.flows import Flow
from pktscope.analyzers.snapshot import Snapshot
from pktscope.app.cli import EXIT_INTERRUPTED, EXIT_OK, UserError
from pktscope.capture.batch import Batch
from pktscope.capture.files import CaptureError, CaptureReader, open_capture
from pktscope.decoders import decode_batch

if TYPE_CHECKING:
    from pktscope.app.export import FlowExporter
    from pktscope.bpf.classic import CompiledFilter

PROGRESS_AFTER_S = 1.0


class FrameFilter:
    """A tcpdump expression run on file frames by libpcap, compiled once per link type met."""

    def __init__(self, expression: str) -> None:
        from pktscope.bpf.classic import compile_filter  # libpcap, only when there is an expression

        self.expression = expression
        self._programs: dict[int, CompiledFilter | None] = {1: compile_filter(expression)}  # FilterError

    def _program(self, linktype: int) -> CompiledFilter | None:
        if linktype not in self._programs:
            from pktscope.bpf.classic import FilterError, compile_filter

            try:
                self._programs[linktype] = compile_filter(self.expression, linktype)
            except FilterError:  # e.g. `ether host` on raw IP: like tcpdump, such frames never match
                self._programs[linktype] = None
        return self._programs[linktype]

    def accepts(self, batch: Batch) -> np.ndarray:
        """A bool per frame: accepted by the expression."""
        links = batch.linktypes
        first = int(links[0]) if len(links) else 1
        if len(links) and (links == first).all():
            prog = self._program(first)
            return prog.match_batch(batch) if prog else np.zeros(len(batch), dtype=bool)
        keep = np.zeros(len(batch), dtype=bool)
        for link in np.unique(links).tolist():
            prog = self._program(link)
            if prog is not None:
                rows = np.flatnonzero(links == link)
                keep[rows] = prog.match_batch(batch.select(rows))
        return keep


def filtered(batches: Iterator[Batch], frame_filter: FrameFilter | None) -> Iterator[Batch]:
    """Batches with only the frames the filter expression accepts."""
    for batch in batches:
        if frame_filter is None:
            yield batch
            continue
        keep = frame_filter.accepts(batch)
        if keep.all():
            yield batch
        elif keep.any():
            yield batch.select(keep)


def analyse_reader(
    reader: CaptureReader,
    analysis: Analysis,
    frame_filter: FrameFilter | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_columns: Callable[[np.ndarray], None] | None = None,
) -> int:
    """Feed every batch of a reader to an analysis; returns the frames read (before the filter).

    `on_columns` sees each decoded batch too (`read --tui` counts packets per second with it).
    """
    frames = 0

    def counted() -> Iterator[Batch]:
        nonlocal frames
        for batch in reader:
            frames += len(batch)
            if on_progress is not None:
                on_progress(reader.bytes_read)
            yield batch

    for batch in filtered(counted(), frame_filter):
        cols = decode_batch(batch)
        analysis.feed(cols, batch)
        if on_columns is not None:
            on_columns(cols)
    return frames


class _Progress:
    """A progress bar on stderr, shown only once the work has taken over a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.monotonic()
        self.bar = None
        self.task = None

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress("reading", BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("read", total=self.total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def run_read(args: argparse.Namespace) -> int:
    """Run `pktscope read` with parsed arguments; returns the exit status."""
    expression = " ".join(args.expression).strip()
    if args.tui and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("--tui needs a terminal on stdin and stdout")
    per_second = None
    if args.tui:
        from pktscope.app.tui import PerSecond

        per_second = PerSecond()
    try:
        reader = open_capture(args.file)
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    with reader:
        frame_filter = None
        if expression:
            from pktscope.bpf.classic import FilterError

            try:
                frame_filter = FrameFilter(expression)
            except FilterError as exc:
                raise UserError(str(exc)) from None
        on_flow_end: list[Callable[[Flow], None]] = []
        if args.csv:
            from pktscope.app.report import FlowCsvWriter

            on_flow_end.append(FlowCsvWriter(sys.stdout))
        exporter = _exporter(args)
        if exporter is not None:
            on_flow_end.append(exporter)
        analysis = Analysis(idle_timeout=args.idle_timeout, active_timeout=args.active_timeout,
                            max_flows=args.max_flows, top=args.top, on_flow_end=_each(on_flow_end))
        show_progress = not (args.json or args.csv or args.no_progress) and sys.stderr.isatty()
        progress = _Progress(reader.size, show_progress)
        interrupted = False
        try:
            frames = analyse_reader(reader, analysis, frame_filter, progress,
                                    per_second.add if per_second is not None else None)
        except KeyboardInterrupt:
            interrupted = True
            frames = None
        finally:
            progress.close()
        snap = analysis.finish()
        _describe_source(snap, reader, expression, frames)
        if exporter is not None:
            exporter.close()
            snap.extra["export"] = exporter.counts()
    if reader.warning:
        print(f"pktscope: warning: {args.file}: {reader.warning}", file=sys.stderr)
    if interrupted:
        print("pktscope: interrupted: the report covers the frames read so far", file=sys.stderr)
    if per_second is not None and not interrupted:
        from pktscope.app.tui import show_capture

        show_capture(snap, f"file {args.file}", expression, per_second)  # then the report, as `live`
    _present(snap, args)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _exporter(args: argparse.Namespace) -> FlowExporter | None:
    """The --export exporter, or None; a collector that cannot be resolved or a file not opened: UserError."""
    if args.export is None:
        return None
    from pktscope.app.export import open_exporter  # only with --export: keeps start-up short

    try:
        return open_exporter(args.export, args.export_domain, args.export_rotate_mb)
    except OSError as exc:
        raise UserError(str(exc)) from None


def _each(callbacks: list[Callable[[Flow], None]]) -> Callable[[Flow], None] | None:
    """One on_flow_end callback calling each of `callbacks` (None for none)."""
    if len(callbacks) <= 1:
        return callbacks[0] if callbacks else None

    def call(flow: Flow) -> None:
        for callback in callbacks:
            callback(flow)

    return call


def _describe_source(snap: Snapshot, reader: CaptureReader, expression: str, frames: int | None) -> None:
    snap.extra["source"] = {
        "type": "file",
        "path": reader.path,
        "format": reader.format,
        "frames_read": frames,
        "truncated": reader.truncated,
        "warning": reader.warning,
    }
    snap.extra["filter"] = expression or None


def _present(snap: Snapshot, args: argparse.Namespace) -> None:
    from pktscope.app import report

    if args.csv:
        return  # rows were written as flows ended
    if args.json:
        json.dump(report.to_json(snap, args.top, args.sort), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.console import Console

    extra = snap.extra
    source = extra["source"]
    rows = [("file", f"{source['path']} ({source['format']})")]  # type: ignore[index]
    if extra.get("filter"):
        rows.append(("filter", f"{extra['filter']} ({source['frames_read']:,} frames read)"))  # type: ignore[index]
    if source["truncated"]:  # type: ignore[index]
        rows.append(("warning", str(source["warning"])))  # type: ignore[index]
    if "export" in extra:
        from pktscope.app.export import export_summary

        rows.append(("export", export_summary(args.export, extra["export"])))  # type: ignore[arg-type]
    snap.extra = {**extra, "report_rows": rows}
    report.render(snap, Console(), args.top, args.sort, "Capture summary")


