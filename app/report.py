"""Presenting a Snapshot: rich tables, one JSON document, CSV rows of flows."""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import socket
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from pktscope.analyzers.flows import Flow
from pktscope.analyzers.snapshot import BYTES, PKTS, RECV_B, RECV_P, SENT_B, SENT_P, Snapshot
from pktscope.capture.linktypes import linktype_name
from pktscope.decoders import protocols as p
from pktscope.decoders.columns import V4_MAPPED_PREFIX

if TYPE_CHECKING:  # rich is imported where tables are drawn: `--json` and `--csv` never load it
    from rich.console import Console
    from rich.table import Table

SORT_KEYS = ("bytes", "packets")


def format_address(addr: bytes) -> str:
    """An address column value as text: dotted IPv4 for IPv4-mapped addresses, else IPv6."""
    if addr[:12] == V4_MAPPED_PREFIX:
        return socket.inet_ntop(socket.AF_INET, addr[12:])
    return socket.inet_ntop(socket.AF_INET6, addr)


def format_ts(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as ISO 8601 UTC with microseconds."""
    if ns is None:
        return None
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat(timespec="microseconds")


def human_bytes(n: float) -> str:
    """Bytes in binary units (KiB, MiB, ...), as a network engineer reads a volume."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def service_name(proto: int, port: int) -> str:
    """The IANA service name of a port, or an empty string."""
    return p.SERVICE_NAMES.get((proto, port), "")


def _duration(s: Snapshot) -> float:
    if s.first_ns is None or s.last_ns is None:
        return 0.0
    return (s.last_ns - s.first_ns) / 1e9


def _host_rows(s: Snapshot, sort: str, top: int) -> list[tuple[bytes, list[int]]]:
    """The `top` hosts by total sent + received, ties by address: sorted(...)[:top] without sorting
    every host (a capture can have 10^5): only the hosts at or above the top-th largest total are
    sorted, which every host of the result is."""
    i, j = (SENT_B, RECV_B) if sort == "bytes" else (SENT_P, RECV_P)
    if top <= 0:
        return []
    held = s.host_arrays()
    if held is not None:  # the talkers still as arrays: ranked there, the dict never made
        return _held_host_rows(*held, i, j, top)
    totals = [v[i] + v[j] for v in s.hosts.values()]
    items = s.hosts.items()
    if len(totals) > top:
        kth = heapq.nlargest(top, totals)[-1]
        items = [kv for kv, total in zip(items, totals) if total >= kth]  # type: ignore[assignment]
    return sorted(items, key=lambda kv: (-(kv[1][i] + kv[1][j]), kv[0]))[:top]


def _held_host_rows(addrs: np.ndarray, counts: np.ndarray, i: int, j: int, top: int) -> list[tuple[bytes, list[int]]]:
    """`_host_rows` of talkers held as arrays (`Snapshot.hold_hosts`): the hosts at or above the top-th
    total picked with numpy, then sorted as there."""
    totals = counts[:, i] + counts[:, j]
    n = len(totals)
    picked = np.arange(n)
    if n > top:
        kth = np.partition(totals, n - top)[n - top]
        picked = np.flatnonzero(totals >= kth)
    rows = zip(np.ascontiguousarray(addrs[picked]).view("V16").ravel().tolist(), counts[picked].tolist())
    return sorted(rows, key=lambda kv: (-(kv[1][i] + kv[1][j]), kv[0]))[:top]


def _port_rows(s: Snapshot, sort: str, top: int) -> list[tuple[tuple[int, int], list[int]]]:
    i = BYTES if sort == "bytes" else PKTS
    return heapq.nsmallest(top, s.ports.items(), key=lambda kv: (-kv[1][i], kv[0]))


def _proto_rows(table: dict[str, list[int]], sort: str) -> list[tuple[str, list[int]]]:
    i = BYTES if sort == "bytes" else PKTS
    return sorted(table.items(), key=lambda kv: (-kv[1][i], kv[0]))


def _flow_rows(s: Snapshot, sort: str, top: int) -> list[Flow]:
    if sort == "bytes":
        return sorted(s.top_flows, key=lambda f: (-f.bytes, -f.packets, f.first_ns))[:top]
    return sorted(s.top_flows, key=lambda f: (-f.packets, -f.bytes, f.first_ns))[:top]


def flow_dict(f: Flow) -> dict[str, Any]:
    """A flow as JSON-ready data (also the CSV row)."""
    return {
        "first_ts": format_ts(f.first_ns),
        "last_ts": format_ts(f.last_ns),
        "duration_s": round((f.last_ns - f.first_ns) / 1e9, 6),
        "ip_version": f.ip_version,
        "proto": p.ip_proto_name(f.proto),
        "vlan": f.vlan,
        "src": format_address(f.a_addr),
        "sport": f.a_port,
        "dst": format_address(f.b_addr),
        "dport": f.b_port,
        "packets_ab": f.packets_ab,
        "bytes_ab": f.bytes_ab,
        "packets_ba": f.packets_ba,
        "bytes_ba": f.bytes_ba,
        "packets": f.packets,
        "bytes": f.bytes,
        "tcp_flags_ab": p.tcp_flags_text(f.flags_ab) if f.proto == p.IPPROTO_TCP else "",
        "tcp_flags_ba": p.tcp_flags_text(f.flags_ba) if f.proto == p.IPPROTO_TCP else "",
        "end_reason": f.end_reason,
    }


CSV_FIELDS = list(flow_dict(Flow(0, 4, 6, 0, bytes(16), 0, bytes(16), 0, 0, 0)).keys())


class FlowCsvWriter:
    """Writes one CSV row per flow, as flows end (so memory stays flat on big captures)."""

    def __init__(self, out: IO[str]) -> None:
        self.writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
        self.writer.writeheader()
        self.rows = 0

    def __call__(self, flow: Flow) -> None:
        self.writer.writerow(flow_dict(flow))
        self.rows += 1


def to_json(s: Snapshot, top: int, sort: str) -> dict[str, Any]:
    """The JSON document of `read --json` (keys documented in the README)."""
    status = s.status
    return {
        "summary": {
            "packets": s.packets,
            "bytes": s.bytes,
            "captured_bytes": s.captured_bytes,
            "first_ts": format_ts(s.first_ns),
            "last_ts": format_ts(s.last_ns),
            "duration_s": round(_duration(s), 6),
            "linktypes": {linktype_name(k): v for k, v in sorted(s.linktypes.items())},
            "undecoded": status.get("unsupported", 0),
            "truncated": status.get("truncated", 0),
            "malformed": status.get("malformed", 0),
        },
        "protocols": {
            layer: [{"name": n, "packets": v[PKTS], "bytes": v[BYTES]} for n, v in _proto_rows(table, sort)]
            for layer, table in (("l2", s.l2), ("l3", s.l3), ("l4", s.l4))
        },
        "conversations": s.conversations(),
        "hosts": [
            {
                "address": format_address(addr),
                "packets_sent": v[SENT_P],
                "bytes_sent": v[SENT_B],
                "packets_received": v[RECV_P],
                "bytes_received": v[RECV_B],
            }
            for addr, v in _host_rows(s, sort, top)
        ],
        "ports": [
            {"proto": p.ip_proto_name(proto), "port": port, "service": service_name(proto, port),
             "packets": v[PKTS], "bytes": v[BYTES]}
            for (proto, port), v in _port_rows(s, sort, top)
        ],
        "flows": {
            "total": s.flows_total,
            "evictions": s.flow_evictions,
            "end_reasons": dict(sorted(s.flow_end_reasons.items())),
            "top": [flow_dict(f) for f in _flow_rows(s, sort, top)],
        },
        **s.extra,
    }


def _endpoint(f: Flow, addr: bytes, port: int) -> str:
    text = format_address(addr)
    if f.proto not in (p.IPPROTO_TCP, p.IPPROTO_UDP, p.IPPROTO_SCTP):
        return text
    return f"[{text}]:{port}" if f.ip_version == 6 else f"{text}:{port}"


def _table(title: str, columns: Iterable[tuple[str, str]]) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold cyan")
    for name, justify in columns:
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    return t


def render(s: Snapshot, console: Console, top: int, sort: str, heading: str) -> None:
    """The report tables of `pktscope read` (and the final report of `live`)."""
    status = s.status
    summary = _table(heading, (("", "left"), ("", "right")))
    summary.show_header = False
    rows = [
        ("packets", f"{s.packets:,}"),
        ("bytes (on the wire)", f"{s.bytes:,} ({human_bytes(s.bytes)})"),
        ("first packet", format_ts(s.first_ns) or "-"),
        ("last packet", format_ts(s.last_ns) or "-"),
        ("duration", f"{_duration(s):.3f} s"),
        ("link types", ", ".join(f"{linktype_name(k)} ({v:,})" for k, v in sorted(s.linktypes.items())) or "-"),
        ("undecoded (link type)", f"{status.get('unsupported', 0):,}"),
        ("truncated", f"{status.get('truncated', 0):,}"),
        ("malformed", f"{status.get('malformed', 0):,}"),
        ("flows", f"{s.flows_total:,} ({s.flow_evictions:,} evicted at the table cap)"),
        ("conversations", ", ".join(f"{k} {v:,}" for k, v in s.conversations().items())),
    ]
    for label, value in rows:
        summary.add_row(label, value)
    for label, value in s.extra.get("report_rows", []):  # type: ignore[union-attr]
        summary.add_row(label, value)
    console.print(summary)

    protos = _table("Protocols", (("layer", "left"), ("protocol", "left"), ("packets", "right"),
                                  ("bytes", "right"), ("% bytes", "right")))
    total = max(s.bytes, 1)
    for layer, table in (("L2", s.l2), ("L3", s.l3), ("L4", s.l4)):
        for name, v in _proto_rows(table, sort):
            protos.add_row(layer, name, f"{v[PKTS]:,}", human_bytes(v[BYTES]), f"{100 * v[BYTES] / total:.1f}")
    console.print(protos)

    hosts = _table(f"Top talkers (by {sort})", (("host", "left"), ("sent pkts", "right"), ("sent", "right"),
                                                ("recv pkts", "right"), ("received", "right")))
    for addr, v in _host_rows(s, sort, top):
        hosts.add_row(format_address(addr), f"{v[SENT_P]:,}", human_bytes(v[SENT_B]),
                      f"{v[RECV_P]:,}", human_bytes(v[RECV_B]))
    console.print(hosts)

    convs = _table(f"Top conversations (by {sort})", (
        ("A (initiator) → B", "left"), ("proto", "left"), ("A→B", "right"), ("B→A", "right"),
        ("duration", "right")))
    for f in _flow_rows(s, sort, top):
        proto = p.ip_proto_name(f.proto) + (f" vlan {f.vlan}" if f.vlan else "")
        if f.proto == p.IPPROTO_TCP:
            proto += " " + p.tcp_flags_text(f.flags_ab | f.flags_ba)
        convs.add_row(f"{_endpoint(f, f.a_addr, f.a_port)}\n→ {_endpoint(f, f.b_addr, f.b_port)}", proto,
                      f"{f.packets_ab:,} pkts\n{human_bytes(f.bytes_ab)}",
                      f"{f.packets_ba:,} pkts\n{human_bytes(f.bytes_ba)}",
                      f"{(f.last_ns - f.first_ns) / 1e9:.1f} s")
    console.print(convs)

    ports = _table(f"Top ports (by {sort})", (("port", "left"), ("service", "left"), ("packets", "right"),
                                              ("bytes", "right")))
    for (proto, port), v in _port_rows(s, sort, top):
        ports.add_row(f"{port}/{p.ip_proto_name(proto).lower()}", service_name(proto, port),
                      f"{v[PKTS]:,}", human_bytes(v[BYTES]))
    console.print(ports)
