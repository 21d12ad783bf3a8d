"""Flow export: ended flows as IPFIX (RFC 7011) to a collector over UDP or TCP, or as JSON lines.

An exporter is the `on_flow_end` callback of an Analysis: each ended Flow becomes one record per
direction that carried packets (A->B, then B->A), because nfcapd/nfdump (the collector most fleets
run) keeps no RFC 5103 reverse elements: a biflow record would reach it as its forward half only.
Records are buffered into messages and sent when a message is full, on `tick()` once a second, and
at `close()`. A collector that is down, refuses, or resets never stops the capture: what could not be
sent is counted in `dropped`; TCP reconnects in the background with exponential backoff, and no
socket call blocks (non-blocking sockets, a bounded send buffer).
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from pktscope.analyzers.flows import END_ACTIVE, END_EOF, END_EVICTED, END_IDLE, Flow
from pktscope.app.report import format_address
from pktscope.decoders.columns import V4_MAPPED_PREFIX

IPFIX_PORT = 4739  # IANA service name "ipfix" (RFC 7011 section 10.3.1), UDP and TCP
IPFIX_VERSION = 10  # RFC 7011 section 3.1
TEMPLATE_SET_ID = 2  # RFC 7011 section 3.3.2
TEMPLATE_V4_ID = 256  # data set ids start at 256 (RFC 7011 section 3.3.2)
TEMPLATE_V6_ID = 257
MESSAGE_HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence number, domain id
SET_HEADER = struct.Struct("!HH")  # set id, length

UDP_MAX_MESSAGE = 1400  # RFC 7011 section 10.3.3: an IPFIX message over UDP should fit the path MTU
TCP_MAX_MESSAGE = 65535  # the header's 16-bit length
FLUSH_INTERVAL_S = 1.0  # buffered records leave at least this often (tick)
TEMPLATE_REFRESH_S = 30.0  # UDP: templates are resent this often (RFC 7011 section 8.4) ...
TEMPLATE_REFRESH_RECORDS = 10_000  # ... and after this many data records, whichever comes first
TCP_SEND_BUFFER = 4 << 20  # bytes queued for a slow TCP collector before new records are dropped
TCP_BACKOFF_S = (0.5, 30.0)  # first and longest wait before reconnecting
CLOSE_DRAIN_S = 2.0  # at exit: how long the last TCP bytes may take to leave
MB = 1_000_000  # --export-rotate-mb counts million bytes, as tcpdump -C


@dataclass(frozen=True)
class InformationElement:
    """An IPFIX information element: its IANA name, id, the length we encode it with, a struct code."""

    name: str
    element_id: int
    length: int
    code: str
    enterprise: int = 0


# IANA "IP Flow Information Export (IPFIX) Entities" registry, https://www.iana.org/assignments/ipfix/
# (ids, names and abstract types); lengths are the registry's full sizes (RFC 7011 section 6.2).
_IE = InformationElement
OCTET_DELTA_COUNT = _IE("octetDeltaCount", 1, 8, "Q")  # unsigned64, octets incl. IP header
PACKET_DELTA_COUNT = _IE("packetDeltaCount", 2, 8, "Q")  # unsigned64
PROTOCOL_IDENTIFIER = _IE("protocolIdentifier", 4, 1, "B")  # unsigned8, IP protocol number
TCP_CONTROL_BITS = _IE("tcpControlBits", 6, 2, "H")  # unsigned16 since RFC 7125 (was 1 octet)
SOURCE_TRANSPORT_PORT = _IE("sourceTransportPort", 7, 2, "H")  # unsigned16
SOURCE_IPV4_ADDRESS = _IE("sourceIPv4Address", 8, 4, "4s")  # ipv4Address
DESTINATION_TRANSPORT_PORT = _IE("destinationTransportPort", 11, 2, "H")  # unsigned16
DESTINATION_IPV4_ADDRESS = _IE("destinationIPv4Address", 12, 4, "4s")  # ipv4Address
SOURCE_IPV6_ADDRESS = _IE("sourceIPv6Address", 27, 16, "16s")  # ipv6Address
DESTINATION_IPV6_ADDRESS = _IE("destinationIPv6Address", 28, 16, "16s")  # ipv6Address
VLAN_ID = _IE("vlanId", 58, 2, "H")  # unsigned16, 802.1Q VLAN id (0: untagged)
FLOW_END_REASON = _IE("flowEndReason", 136, 1, "B")  # unsigned8, values below
FLOW_START_MILLISECONDS = _IE("flowStartMilliseconds", 152, 8, "Q")  # dateTimeMilliseconds
FLOW_END_MILLISECONDS = _IE("flowEndMilliseconds", 153, 8, "Q")  # dateTimeMilliseconds

# flowEndReason values (IANA registry, element 136)
FLOW_END_REASONS = {
    END_IDLE: 1,  # idle timeout
    END_ACTIVE: 2,  # active timeout
    END_EVICTED: 5,  # lack of resources (the flow table was full)
    END_EOF: 4,  # forced end (end of the capture or of the run)
}


def _layout(src: InformationElement, dst: InformationElement) -> tuple[InformationElement, ...]:
    return (src, dst, SOURCE_TRANSPORT_PORT, DESTINATION_TRANSPORT_PORT, PROTOCOL_IDENTIFIER, TCP_CONTROL_BITS,
            VLAN_ID, OCTET_DELTA_COUNT, PACKET_DELTA_COUNT, FLOW_START_MILLISECONDS, FLOW_END_MILLISECONDS,
            FLOW_END_REASON)


@dataclass(frozen=True)
class Template:
    """One IPFIX template: its id, its elements, and the struct of one data record."""

    template_id: int
    elements: tuple[InformationElement, ...]

    @property
    def record(self) -> struct.Struct:
        return struct.Struct("!" + "".join(ie.code for ie in self.elements))

    def encode(self) -> bytes:
        """The template record (RFC 7011 section 3.4.1)."""
        out = struct.pack("!HH", self.template_id, len(self.elements))
        for ie in self.elements:
            if ie.enterprise:
                out += struct.pack("!HHI", ie.element_id | 0x8000, ie.length, ie.enterprise)
            else:
                out += struct.pack("!HH", ie.element_id, ie.length)
        return out


TEMPLATE_V4 = Template(TEMPLATE_V4_ID, _layout(SOURCE_IPV4_ADDRESS, DESTINATION_IPV4_ADDRESS))
TEMPLATE_V6 = Template(TEMPLATE_V6_ID, _layout(SOURCE_IPV6_ADDRESS, DESTINATION_IPV6_ADDRESS))
TEMPLATES = (TEMPLATE_V4, TEMPLATE_V6)
_RECORD = {t.template_id: t.record for t in TEMPLATES}


def flow_records(flow: Flow) -> list[tuple[Template, tuple[Any, ...]]]:
    """The uniflow records of a flow: A->B, and B->A if B sent anything (values in template order).

    Both halves carry the flow's first and last packet times: the flow table keeps no per-direction times.
    """
    v4 = flow.a_addr[:12] == V4_MAPPED_PREFIX and flow.b_addr[:12] == V4_MAPPED_PREFIX
    template = TEMPLATE_V4 if v4 else TEMPLATE_V6
    a, b = (flow.a_addr[12:], flow.b_addr[12:]) if v4 else (flow.a_addr, flow.b_addr)
    start, end = flow.first_ns // 1_000_000, flow.last_ns // 1_000_000
    reason = FLOW_END_REASONS.get(flow.end_reason, 4)
    out = [(template, (a, b, flow.a_port, flow.b_port, flow.proto, flow.flags_ab, flow.vlan,
                       flow.bytes_ab, flow.packets_ab, start, end, reason))]
    if flow.packets_ba:
        out.append((template, (b, a, flow.b_port, flow.a_port, flow.proto, flow.flags_ba, flow.vlan,
                               flow.bytes_ba, flow.packets_ba, start, end, reason)))
    return out


# --- targets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportTarget:
    """Where records go: `ipfix` (UDP) or `ipfix+tcp` to host:port, or `jsonl` to a file path."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "jsonl":
            return f"jsonl:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(text: str) -> ExportTarget:
    """`ipfix://HOST[:PORT]`, `ipfix+tcp://HOST[:PORT]` (port 4739 by default) or `jsonl:PATH`.

    ValueError, with the reason, for anything else.
    """
    if text.startswith("jsonl:"):
        path = text.removeprefix("jsonl:").removeprefix("//")
        if not path:
            raise ValueError(f"no file name in {text!r} (jsonl:PATH)")
        return ExportTarget("jsonl", path=path)
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"bad export URL {text!r}: {exc}") from None
    if url.scheme not in ("ipfix", "ipfix+tcp"):
        raise ValueError(f"bad export URL {text!r}: expected ipfix://HOST:PORT, ipfix+tcp://HOST:PORT "
                         f"or jsonl:PATH")
    if not url.hostname or url.path not in ("", "/") or url.query or url.fragment or url.username:
        raise ValueError(f"bad export URL {text!r}: expected {url.scheme}://HOST:PORT")
    if port == 0:
        raise ValueError(f"bad export URL {text!r}: port 0")
    return ExportTarget(url.scheme, host=url.hostname, port=port or IPFIX_PORT)


def resolve(target: ExportTarget) -> tuple[int, tuple[Any, ...]]:
    """The address family and socket address of a collector; OSError when the host cannot be resolved."""
    kind = socket.SOCK_DGRAM if target.scheme == "ipfix" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=kind)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve collector {target.host}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


# --- exporters ----------------------------------------------------------------------------------------


class FlowExporter:
    """Base of the exporters: an `on_flow_end` callback that counts exported and dropped records."""

    def __init__(self) -> None:
        self.records = 0  # records handed to the transport (a socket's kernel buffer, a file)
        self.dropped = 0  # records that could not be: collector down, refused, reset, disk full

    def __call__(self, flow: Flow) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Periodic work off the per-flow path: flush buffered records, refresh templates, reconnect."""

    def close(self) -> None:
        """Send or write what is buffered (briefly bounded), then release the socket or file."""

    def counts(self) -> dict[str, int]:
        return {"records": self.records, "dropped": self.dropped}


class IpfixExporter(FlowExporter):
    """IPFIX messages (RFC 7011): templates, then data sets of uniflow records; over UDP or TCP."""

    def __init__(self, target: ExportTarget, sockaddr: tuple[Any, ...], family: int, domain_id: int = 0) -> None:
        super().__init__()
        self.target = target
        self.sockaddr = sockaddr
        self.family = family
        self.domain_id = domain_id & 0xFFFFFFFF
        self.udp = target.scheme == "ipfix"
        self.max_message = UDP_MAX_MESSAGE if self.udp else TCP_MAX_MESSAGE
        self.sequence = 0  # data records sent in this transport session (RFC 7011 section 3.1)
        self._sets: dict[int, list[bytes]] = {}  # template id -> encoded records waiting
        self._size = MESSAGE_HEADER.size
        self._waiting = 0
        self._last_flush = time.monotonic()
        self._templates_due = True
        self._template_sent_at = 0.0
        self._records_since_template = 0
        self._last_udp_records = 0  # records of the last datagram that left (an ICMP error may be for it)
        self.sock: socket.socket | None = None
        self._connecting = False
        self._retry_at = 0.0
        self._backoff = TCP_BACKOFF_S[0]
        self._out: deque[list[Any]] = deque()  # TCP: [bytes still to send, records in that message]
        self._out_bytes = 0
        if self.udp:
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
            try:
                self.sock.connect(sockaddr)  # connected: the kernel reports ICMP port unreachable to us
            except OSError:
                pass  # e.g. no route yet: every send will fail and count
        else:
            self._connect()

    # -- records -> messages

    def __call__(self, flow: Flow) -> None:
        for template, values in flow_records(flow):
            record = _RECORD[template.template_id].pack(*values)
            if self._size + len(record) + SET_HEADER.size > self.max_message:
                self.flush()
            records = self._sets.get(template.template_id)
            if records is None:
                records = self._sets[template.template_id] = []
                self._size += SET_HEADER.size
            records.append(record)
            self._size += len(record)
            self._waiting += 1
        if self._waiting and time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def tick(self) -> None:
        now = time.monotonic()
        if self.udp and now - self._template_sent_at >= TEMPLATE_REFRESH_S:
            self._templates_due = True
        if self._waiting and now - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()
        elif self._templates_due and self.udp:
            self._emit(b"", 0)
        if not self.udp:
            self._pump()

    def flush(self) -> None:
        """Send the buffered records as one message."""
        self._last_flush = time.monotonic()
        if not self._waiting:
            return
        body = b"".join(SET_HEADER.pack(tid, SET_HEADER.size + sum(map(len, recs))) + b"".join(recs)
                        for tid, recs in self._sets.items())
        count = self._waiting
        self._sets.clear()
        self._size = MESSAGE_HEADER.size
        self._waiting = 0
        self._emit(body, count)

    def _template_set(self) -> bytes:
        body = b"".join(t.encode() for t in TEMPLATES)
        return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body

    def _message(self, body: bytes, count: int) -> bytes:
        if self.udp and self._records_since_template >= TEMPLATE_REFRESH_RECORDS:
            self._templates_due = True
        if self._templates_due:
            body = self._template_set() + body
            self._templates_due = False
            self._template_sent_at = time.monotonic()
            self._records_since_template = 0
        header = MESSAGE_HEADER.pack(IPFIX_VERSION, MESSAGE_HEADER.size + len(body), int(time.time()),
                                     self.sequence, self.domain_id)
        # the sequence number counts data records only, modulo 2^32 (RFC 7011 section 3.1)
        self.sequence = (self.sequence + count) & 0xFFFFFFFF
        self._records_since_template += count
        return header + body

    def _emit(self, body: bytes, count: int) -> None:
        if self.udp:
            self._send_udp(body, count)
        else:
            self._queue_tcp(body, count)

    # -- UDP

    def _send_udp(self, body: bytes, count: int) -> None:
        assert self.sock is not None
        message = self._message(body, count)
        try:
            self.sock.send(message)
        except ConnectionRefusedError:
            # the collector's host answered port unreachable to an earlier datagram (Linux reports it on
            # the next send, and this one is not sent): both are lost; the next datagram has to carry templates
            self.dropped += count + self._last_udp_records
            self.records -= self._last_udp_records
            self._last_udp_records = 0
            self._templates_due = True
            return
        except OSError:  # no route, buffer full (EAGAIN), ...
            self.dropped += count
            self._templates_due = True
            return
        self.records += count
        if count:  # a template-only datagram leaves the attribution to the last data datagram
            self._last_udp_records = count

    def _udp_pending_error(self) -> None:
        """At exit: a port unreachable answer to the last datagram (it comes back within a moment locally)."""
        assert self.sock is not None
        if not self._last_udp_records:
            return
        select.select([self.sock], [], [], 0.05)
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED:
            self.dropped += self._last_udp_records
            self.records -= self._last_udp_records
            self._last_udp_records = 0

    # -- TCP

    def _connect(self) -> None:
        self.sock = socket.socket(self.family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        err = self.sock.connect_ex(self.sockaddr)
        if err in (0, errno.EINPROGRESS):
            self._connecting = err != 0
            if err == 0:
                self._connected()
            return
        self._disconnect()

    def _connected(self) -> None:
        # a new transport session: templates first, sequence numbers from 0 (RFC 7011 sections 3.1, 8)
        self._connecting = False
        self._backoff = TCP_BACKOFF_S[0]
        self.sequence = 0
        self._templates_due = True

    def _disconnect(self) -> None:
        """The connection failed or broke: what it still held is lost; try again after the backoff."""
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._connecting = False
        self.dropped += sum(count for _, count in self._out)
        self._out.clear()
        self._out_bytes = 0
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, TCP_BACKOFF_S[1])

    def _ready(self) -> bool:
        """Whether the TCP connection is up (starting or finishing a connect without waiting)."""
        if self.sock is None:
            if time.monotonic() < self._retry_at:
                return False
            self._connect()
            if self.sock is None:
                return False
        if self._connecting:
            _, writable, _ = select.select([], [self.sock], [], 0)
            if not writable:
                return False
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._disconnect()
                return False
            self._connected()
        return True

    def _queue_tcp(self, body: bytes, count: int) -> None:
        if not self._ready() or self._out_bytes > TCP_SEND_BUFFER:
            self.dropped += count
            return
        message = self._message(body, count)
        self._out.append([message, count])
        self._out_bytes += len(message)
        self._pump()

    def _pump(self) -> None:
        """Hand queued bytes to the kernel, as much as it takes now."""
        if not self._ready():
            return
        assert self.sock is not None
        while self._out:
            head = self._out[0]
            try:
                sent = self.sock.send(head[0])
            except BlockingIOError:
                return
            except OSError:
                self._disconnect()
                return
            self._out_bytes -= sent
            if sent < len(head[0]):
                head[0] = head[0][sent:]
                return
            self._out.popleft()
            self.records += head[1]

    def close(self) -> None:
        self.flush()
        if self.sock is None:
            return
        if self.udp:
            self._udp_pending_error()
        else:
            deadline = time.monotonic() + CLOSE_DRAIN_S
            while self._out and self.sock is not None and time.monotonic() < deadline:
                select.select([], [self.sock], [], 0.05)
                self._pump()
            self.dropped += sum(count for _, count in self._out)
            self._out.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class JsonlExporter(FlowExporter):
    """The same records as JSON lines (IANA element names as keys), in files rotated by size.

    PATH is written first, then PATH.1, PATH.2, ...: a file is complete once the next one exists.
    """

    def __init__(self, path: str, rotate_mb: float, domain_id: int = 0) -> None:
        super().__init__()
        self.base = path
        self.limit = max(1, int(rotate_mb * MB))
        self.domain_id = domain_id
        self.files: list[str] = []
        self._file: IO[str] | None = None
        self._written = 0
        self._open()

    def _open(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        name = self.base if not self.files else f"{self.base}.{len(self.files)}"
        # line-buffered: a line the disk refuses fails at once, and is counted as dropped
        self._file = open(name, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 (kept open across calls)
        self.files.append(name)
        self._written = 0

    def __call__(self, flow: Flow) -> None:
        for template, values in flow_records(flow):
            doc: dict[str, Any] = {"observationDomainId": self.domain_id}
            for ie, value in zip(template.elements, values):
                if ie.code.endswith("s"):
                    value = format_address(value if len(value) == 16 else V4_MAPPED_PREFIX + value)
                doc[ie.name] = value
            line = json.dumps(doc) + "\n"
            try:
                if self._file is None or (self._written and self._written + len(line) > self.limit):
                    self._open()
                assert self._file is not None
                self._file.write(line)
            except OSError:
                self.dropped += 1
                continue
            self._written += len(line)
            self.records += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def check_target(target: ExportTarget) -> tuple[int, tuple[Any, ...]] | None:
    """Check a target before any capture starts: a collector's (family, address), None for jsonl.

    OSError, with a message fit for one line, when the host cannot be resolved or the directory not written.
    """
    if target.scheme != "jsonl":
        return resolve(target)
    directory = os.path.dirname(os.path.abspath(target.path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise OSError(f"cannot write {target.path}: {directory} is not a writable directory")
    return None


def open_exporter(target: ExportTarget, domain_id: int = 0, rotate_mb: float = 100.0,
                  sockaddr: tuple[int, tuple[Any, ...]] | None = None) -> FlowExporter:
    """An exporter for a target; `sockaddr` = (family, address) when already resolved (live workers).

    OSError (with a message fit for one line) when the collector cannot be resolved or the file not opened.
    """
    if target.scheme == "jsonl":
        check_target(target)
        try:
            return JsonlExporter(target.path, rotate_mb, domain_id)
        except OSError as exc:
            raise OSError(f"cannot write {target.path}: {exc.strerror or exc}") from None
    family, address = sockaddr if sockaddr is not None else resolve(target)
    return IpfixExporter(target, address, family, domain_id)


def export_summary(target: ExportTarget, counts: dict[str, int]) -> str:
    """One line for the report tables: where records went, how many, how many were dropped."""
    dropped = counts["dropped"]
    text = f"{counts['records']:,} records to {target}"
    return text + (f", [bold red]{dropped:,} dropped[/]" if dropped else ", 0 dropped")
