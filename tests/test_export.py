"""Flow export (`--export`) end to end: IPFIX to a real nfcapd (Debian's nfdump) read back with nfdump,
IPFIX over TCP to a listener that decodes the stream from its own templates, a collector that is not
there, JSON lines with rotation, and bad URLs.

The oracle for what should arrive is `pktscope read --csv` on the same capture: each flow is one record
A->B and, when B answered, one record B->A. nfcapd runs on 127.0.0.1 on a free port (in the capture
namespace for the live test), is stopped with SIGTERM (which flushes its file) and killed in `finally`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import netns
import pytest
from test_cli_read import own_capture
from test_live import live, send_udp

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "mixed.pcap"
NFCAPD = shutil.which("nfcapd")
NFDUMP = shutil.which("nfdump")
STEP_TIMEOUT = 20.0
PROTO_NUMBERS = {"ICMP": 1, "TCP": 6, "UDP": 17, "ICMPv6": 58, "ICMP6": 58, "SCTP": 132}
PKTSCOPE_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20, "E": 0x40, "W": 0x80}

needs_nfcapd = pytest.mark.skipif(not (NFCAPD and NFDUMP),
                                  reason="nfcapd/nfdump not installed (Debian package nfdump: scripts/setup.sh --test)")


def pktscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pktscope", *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/mixed.pcap (IPv4, IPv6, VLAN, TCP, UDP, ICMP, SCTP) when there, else a small capture of our own."""
    if SAMPLE.is_file():
        return SAMPLE
    return own_capture(tmp_path_factory.mktemp("export") / "own.pcap")


def pktscope_flags(text: str) -> int:
    return 0 if text in ("", "-") else sum(PKTSCOPE_FLAG_BITS[c] for c in text)


@pytest.fixture(scope="module")
def expected(capture: Path) -> Counter:
    """The uniflow records pktscope's flows should become: (src, dst, sport, dport, proto, vlan, packets,
    bytes, tcp flags), from `read --csv`."""
    result = pktscope("read", str(capture), "--csv")
    assert result.returncode == 0, result.stderr
    records: Counter = Counter()
    for row in csv.DictReader(io.StringIO(result.stdout)):
        proto, vlan = PROTO_NUMBERS.get(row["proto"], row["proto"]), int(row["vlan"])
        records[(row["src"], row["dst"], int(row["sport"]), int(row["dport"]), proto, vlan,
                 int(row["packets_ab"]), int(row["bytes_ab"]), pktscope_flags(row["tcp_flags_ab"]))] += 1
        if int(row["packets_ba"]):
            records[(row["dst"], row["src"], int(row["dport"]), int(row["sport"]), proto, vlan,
                     int(row["packets_ba"]), int(row["bytes_ba"]), pktscope_flags(row["tcp_flags_ba"]))] += 1
    assert records
    return records


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- nfcapd ------------------------------------------------------------------------------------------------


class Nfcapd:
    """nfcapd listening for IPFIX on 127.0.0.1:port (in a namespace when `rig` is given), writing to `flowdir`."""

    def __init__(self, flowdir: Path, rig: netns.VethRig | None = None, side: str = "b") -> None:
        self.flowdir, self.rig, self.side = flowdir, rig, side
        self.port = free_port()  # in a fresh namespace every port is free
        argv = [NFCAPD, "-b", "127.0.0.1", "-p", str(self.port), "-w", str(flowdir)]
        if rig is not None:
            argv = rig.exec_argv(side, argv)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + STEP_TIMEOUT
        while not self._listening():
            assert self.proc.poll() is None, f"nfcapd exited: {self.proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "nfcapd did not bind its port"
            time.sleep(0.05)

    def _listening(self) -> bool:
        argv = ["ss", "-Hlun", f"sport = :{self.port}"]
        if self.rig is not None:
            argv = self.rig.exec_argv(self.side, argv)
        return bool(subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip())

    def stop(self) -> list[dict[str, str]]:
        """SIGTERM (nfcapd flushes and closes its file), then every record as nfdump's CSV prints it."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=STEP_TIMEOUT)
        res = subprocess.run([NFDUMP, "-R", str(self.flowdir), "-o", "csv"], capture_output=True, text=True,
                             timeout=60, check=False)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        end = lines.index("Summary") if "Summary" in lines else len(lines)
        return list(csv.DictReader(lines[:end]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def nfcapd(flowdir: Path, rig: netns.VethRig | None = None) -> Iterator[Nfcapd]:
    flowdir.mkdir(exist_ok=True)
    collector = Nfcapd(flowdir, rig)
    try:
        yield collector
    finally:
        collector.kill()


def nfdump_flags(text: str) -> int:
    """nfdump's `flg` column (`...AP.SF`: C E U A P R S F, a dot for a clear bit) as bits."""
    return sum(1 << (7 - i) for i, c in enumerate(text.strip()) if c != ".")


def nfdump_records(rows: Sequence[dict[str, str]]) -> Counter:
    return Counter((r["sa"], r["da"], int(r["sp"]), int(r["dp"]), PROTO_NUMBERS.get(r["pr"], r["pr"]),
                    int(r["svln"]), int(r["ipkt"]), int(r["ibyt"]),
                    nfdump_flags(r["flg"]) if r["pr"] == "TCP" else 0) for r in rows)


# --- IPFIX to nfcapd ----------------------------------------------------------------------------------------


@needs_nfcapd
def test_read_exports_every_flow_to_nfcapd(capture: Path, expected: Counter, tmp_path: Path) -> None:
    with nfcapd(tmp_path / "flows") as collector:
        result = pktscope("read", str(capture), "--export", f"ipfix://127.0.0.1:{collector.port}", "--json")
        assert result.returncode == 0, result.stderr
        rows = collector.stop()
    n = sum(expected.values())
    assert json.loads(result.stdout)["export"] == {"records": n, "dropped": 0}
    assert len(rows) == n
    assert nfdump_records(rows) == expected
    assert {r["exid"] for r in rows} == {"1"}  # one exporter (observation domain 0) as nfcapd sees it


@needs_nfcapd
def test_table_report_names_the_export(capture: Path, expected: Counter, tmp_path: Path) -> None:
    with nfcapd(tmp_path / "flows") as collector:
        url = f"ipfix://127.0.0.1:{collector.port}"
        result = pktscope("read", str(capture), "--export", url, "--export-domain", "7")
        assert result.returncode == 0, result.stderr
        collector.stop()
    assert f"{sum(expected.values()):,} records to {url}, 0 dropped" in result.stdout


@needs_nfcapd
def test_live_capture_exports_to_nfcapd(veth_rig: netns.VethRig, tmp_path: Path) -> None:
    """Two workers, each with its own socket and observation domain, export to nfcapd inside namespace b."""
    expr = "udp and dst port 5201"
    with nfcapd(tmp_path / "flows", veth_rig) as collector:
        url = f"ipfix://127.0.0.1:{collector.port}"
        with live(veth_rig, ["--workers", "2", "--export", url], expr) as run:
            run.wait_ready()
            send_udp(veth_rig, 5201, 40100, 6, 25, size=100)
            final = run.stop()
        rows = collector.stop()
    assert final["export"] == {"records": 6, "dropped": 0}
    top = {(f["sport"], f["packets_ab"], f["bytes_ab"]) for f in final["flows"]["top"]}
    got = {(int(r["sp"]), int(r["ipkt"]), int(r["ibyt"])) for r in rows}
    assert got == top and {sp for sp, _, _ in got} == set(range(40100, 40106))
    assert all((r["sa"], r["da"], r["dp"], r["pr"]) == (veth_rig.ip4_a, veth_rig.blackhole4, "5201", "UDP")
               for r in rows)
    assert all(int(r["ipkt"]) == 25 for r in rows)


# --- IPFIX over TCP, decoded by the listener --------------------------------------------------------------


class IpfixTcpCollector:
    """Accepts one TCP connection and decodes the IPFIX stream with the templates it carries."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.srv.settimeout(STEP_TIMEOUT)
        self.port = self.srv.getsockname()[1]
        self.messages: list[tuple[int, int, int]] = []  # (sequence number, domain id, data records)
        self.records: list[dict[tuple[int, int], bytes]] = []  # (enterprise, element id) -> value
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.srv.accept()
            conn.settimeout(STEP_TIMEOUT)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.close()
            self._decode(data)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test thread by result())
            self.error = exc

    def _decode(self, data: bytes) -> None:
        templates: dict[int, list[tuple[int, int, int]]] = {}
        while data:
            version, length, _, seq, domain = struct.unpack_from("!HHIII", data)
            assert version == 10 and 16 <= length <= len(data), (version, length, len(data))
            msg, data = data[16:length], data[length:]
            count = 0
            while msg:
                set_id, set_len = struct.unpack_from("!HH", msg)
                body, msg = msg[4:set_len], msg[set_len:]
                if set_id == 2:
                    while len(body) >= 4:
                        tid, n = struct.unpack_from("!HH", body)
                        body, fields = body[4:], []
                        for _ in range(n):
                            ie, size = struct.unpack_from("!HH", body)
                            pen = struct.unpack_from("!I", body, 4)[0] if ie & 0x8000 else 0
                            body = body[8 if pen else 4:]
                            fields.append((pen, ie & 0x7FFF, size))
                        templates[tid] = fields
                else:
                    fields = templates[set_id]
                    width = sum(f[2] for f in fields)
                    while len(body) >= width:
                        rec, pos = {}, 0
                        for pen, ie, size in fields:
                            rec[(pen, ie)] = body[pos:pos + size]
                            pos += size
                        self.records.append(rec)
                        body = body[width:]
                        count += 1
            self.messages.append((seq, domain, count))

    def result(self) -> None:
        self.thread.join(STEP_TIMEOUT)
        self.srv.close()
        if self.error is not None:
            raise self.error


def test_read_exports_over_tcp(capture: Path, expected: Counter) -> None:
    collector = IpfixTcpCollector()
    result = pktscope("read", str(capture), "--export", f"ipfix+tcp://127.0.0.1:{collector.port}",
                      "--export-domain", "42", "--json")
    collector.result()
    assert result.returncode == 0, result.stderr
    n = sum(expected.values())
    assert json.loads(result.stdout)["export"] == {"records": n, "dropped": 0}
    # sequence numbers count the data records sent before each message (RFC 7011 section 3.1)
    seq = 0
    for number, domain, count in collector.messages:
        assert (number, domain) == (seq, 42)
        seq += count
    assert seq == len(collector.records) == n

    def addr(value: bytes) -> str:
        return socket.inet_ntop(socket.AF_INET if len(value) == 4 else socket.AF_INET6, value)

    got = Counter()
    for r in collector.records:
        src, dst = r.get((0, 8)) or r[(0, 27)], r.get((0, 12)) or r[(0, 28)]
        num = {ie: int.from_bytes(v, "big") for (pen, ie), v in r.items() if pen == 0 and ie not in (8, 12, 27, 28)}
        assert num[153] >= num[152] and num[136] == 4  # forced end: the end of the capture
        got[(addr(src), addr(dst), num[7], num[11], num[4], num[58], num[2], num[1], num[6])] += 1
    assert got == expected


# --- no collector ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ipfix", "ipfix+tcp"])
def test_no_collector_counts_every_record_dropped(capture: Path, expected: Counter, scheme: str) -> None:
    """Nothing listens: UDP sends meet ECONNREFUSED (ICMP port unreachable), TCP connects are refused;
    the run completes, exit 0, and every record is reported dropped."""
    port = free_port(socket.SOCK_DGRAM if scheme == "ipfix" else socket.SOCK_STREAM)
    started = time.monotonic()
    result = pktscope("read", str(capture), "--export", f"{scheme}://127.0.0.1:{port}", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert time.monotonic() - started < 30
    assert json.loads(result.stdout)["export"] == {"records": 0, "dropped": sum(expected.values())}


# --- JSON lines -------------------------------------------------------------------------------------------------


def test_jsonl_export_rotates_by_size(capture: Path, expected: Counter, tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    result = pktscope("read", str(capture), "--export", f"jsonl:{path}", "--export-rotate-mb", "0.02", "--json")
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("flows.jsonl*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    assert len(files) > 2
    assert [p.name for p in files] == ["flows.jsonl"] + [f"flows.jsonl.{i}" for i in range(1, len(files))]
    assert all(p.stat().st_size <= 20_000 for p in files)
    docs = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    n = sum(expected.values())
    assert json.loads(result.stdout)["export"] == {"records": n, "dropped": 0} and len(docs) == n
    got = Counter((d.get("sourceIPv4Address") or d["sourceIPv6Address"],
                   d.get("destinationIPv4Address") or d["destinationIPv6Address"],
                   d["sourceTransportPort"], d["destinationTransportPort"], d["protocolIdentifier"], d["vlanId"],
                   d["packetDeltaCount"], d["octetDeltaCount"], d["tcpControlBits"]) for d in docs)
    assert got == expected


def test_jsonl_into_a_missing_directory_is_a_usage_error(capture: Path, tmp_path: Path) -> None:
    result = pktscope("read", str(capture), "--export", f"jsonl:{tmp_path}/no/such/dir/f.jsonl")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a writable directory" in result.stderr


# --- bad URLs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ipfix:/127.0.0.1:4739", "netflow://127.0.0.1:2055", "ipfix://127.0.0.1:99999",
                                 "ipfix://127.0.0.1:port", "ipfix://:4739", "ipfix://127.0.0.1:4739/x", "jsonl:",
                                 "127.0.0.1:4739"])
@pytest.mark.parametrize("command", ["read", "live"])
def test_bad_url_is_one_line_and_exit_2(capture: Path, url: str, command: str) -> None:
    target = str(capture) if command == "read" else "lo"
    result = pktscope(command, target, "--export", url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--export" in result.stderr and "Traceback" not in result.stderr


def test_unresolvable_collector_is_one_line_and_exit_2(capture: Path) -> None:
    result = pktscope("read", str(capture), "--export", "ipfix://collector.invalid:4739")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot resolve collector" in result.stderr


def test_export_options_are_in_the_help() -> None:
    for command in ("read", "live"):
        result = pktscope(command, "--help")
        assert result.returncode == 0
        for option in ("--export", "--export-domain", "--export-rotate-mb", "ipfix://HOST:PORT", "jsonl:PATH"):
            assert option in result.stdout.replace("\n", " "), (command, option)

