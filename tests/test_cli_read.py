"""`pktscope read` as a user runs it: the real command in a subprocess, tcpdump and tshark as oracles."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "mixed.pcap"
TSHARK = shutil.which("tshark")
TCPDUMP = shutil.which("tcpdump")
CAPINFOS = shutil.which("capinfos")
READ_OPTIONS = ("--json", "--csv", "--top", "--sort", "--idle-timeout", "--active-timeout", "--max-flows",
                "--no-progress")


def pktscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pktscope", *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COLUMNS": "200"})


def own_capture(path: Path) -> Path:
    """A small pcap written here (Ethernet: TCP to port 80 and 443, UDP DNS, IPv6 UDP) for when the
    samples are missing."""
    ip4 = [("10.0.0.1", "10.0.0.2"), ("10.0.0.3", "10.0.0.2"), ("10.0.0.1", "10.0.0.53")]
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=1)
        for i in range(40):
            src, dst = ip4[i % 3]
            if i % 3 == 2:
                l4 = dpkt.udp.UDP(sport=30000 + i, dport=53, data=b"q" * i)
                proto = dpkt.ip.IP_PROTO_UDP
            else:
                l4 = dpkt.tcp.TCP(sport=40000 + i % 5, dport=80 if i % 2 else 443, flags=dpkt.tcp.TH_ACK, data=b"d" * i)
                proto = dpkt.ip.IP_PROTO_TCP
            ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))), p=proto, data=l4)
            w.writepkt(bytes(dpkt.ethernet.Ethernet(src=b"\2" * 6, dst=b"\4" * 6, data=ip)), ts=1_700_000_000 + i)
        u6 = dpkt.udp.UDP(sport=5000, dport=6000, data=b"six")
        ip6 = dpkt.ip6.IP6(src=b"\x20\x01\x0d\xb8" + bytes(11) + b"\1", dst=b"\x20\x01\x0d\xb8" + bytes(11) + b"\2",
                           nxt=17, hlim=64, data=u6, plen=len(bytes(u6)))
        w.writepkt(bytes(dpkt.ethernet.Ethernet(type=0x86DD, data=ip6)), ts=1_700_000_100)
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/mixed.pcap when the samples are there, else a small capture of our own."""
    if SAMPLE.is_file():
        return SAMPLE
    return own_capture(tmp_path_factory.mktemp("cli") / "own.pcap")


@pytest.fixture(scope="module")
def report(capture: Path) -> dict:
    result = pktscope("read", str(capture), "--json", "--top", "5")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def tshark_conversations(path: Path) -> dict[str, int]:
    """Rows of tshark's -z conv,ip / conv,ipv6 / conv,tcp / conv,udp tables."""
    out = subprocess.run([TSHARK, "-n", "-q", "-r", str(path), "-z", "conv,ip", "-z", "conv,ipv6", "-z", "conv,tcp",
                          "-z", "conv,udp"], capture_output=True, text=True, check=True, timeout=60).stdout
    titles = {"IPv4 Conversations": "ipv4", "IPv6 Conversations": "ipv6", "TCP Conversations": "tcp",
              "UDP Conversations": "udp"}
    counts: dict[str, int] = {}
    table = None
    for line in out.splitlines():
        if line.strip() in titles:
            table = titles[line.strip()]
            counts[table] = 0
        elif table and "<->" in line:
            counts[table] += 1
    assert counts.keys() == set(titles.values()), out
    return counts


# --- help and version -----------------------------------------------------------------------------

def test_version() -> None:
    result = pktscope("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pktscope ") and result.stdout.split()[1][0].isdigit()


def test_read_runs_on_one_thread(capture: Path) -> None:
    """numpy's OpenBLAS would start a thread per core at import; `read` asks it for none (it does no
    linear algebra), so the whole run is one thread. A value the user sets is kept."""
    code = ("import contextlib, io, os, sys\n"
            "from pktscope.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['read', sys.argv[1], '--json'])\n"
            "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code, str(capture)], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["1", "1"]
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code, str(capture)], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out[1] == "2"


def test_help_names_the_command_and_the_exit_codes() -> None:
    result = pktscope("--help")
    assert result.returncode == 0
    assert "read" in result.stdout
    for code in ("0", "2", "130"):
        assert f"\n  {code} " in result.stdout, code


def test_read_help_names_every_option_and_the_exit_codes() -> None:
    result = pktscope("read", "--help")
    assert result.returncode == 0
    for option in (*READ_OPTIONS, "FILE", "EXPRESSION"):
        assert option in result.stdout, option
    for code in ("0", "2", "130"):
        assert f"\n  {code} " in result.stdout, code


# --- reports --------------------------------------------------------------------------------------

def test_read_prints_the_tables(capture: Path, report: dict) -> None:
    result = pktscope("read", str(capture))
    assert result.returncode == 0, result.stderr
    for title in ("Capture summary", "Protocols", "Top talkers", "Top conversations", "Top ports"):
        assert title in result.stdout, title
    assert f"{report['summary']['packets']:,}" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(CAPINFOS is None, reason="capinfos is not installed: no independent packet count")
def test_json_packets_match_capinfos(capture: Path, report: dict) -> None:
    out = subprocess.run([CAPINFOS, "-c", "-M", str(capture)], capture_output=True, text=True, check=True).stdout
    packets = int(out.rsplit(":", 1)[1])
    assert report["summary"]["packets"] == packets


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: no independent byte count")
def test_json_bytes_are_the_sum_of_wire_lengths(capture: Path, report: dict) -> None:
    out = subprocess.run([TSHARK, "-n", "-r", str(capture), "-T", "fields", "-e", "frame.len"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    lengths = [int(x) for x in out.split()]
    assert report["summary"]["packets"] == len(lengths)
    assert report["summary"]["bytes"] == sum(lengths)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: no conversation oracle")
def test_json_conversations_match_tshark(capture: Path, report: dict) -> None:
    assert report["conversations"] == tshark_conversations(capture)


def test_csv_has_a_header_and_one_row_per_flow(capture: Path, report: dict) -> None:
    result = pktscope("read", str(capture), "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == report["flows"]["total"] > 0
    assert {"src", "sport", "dst", "dport", "proto", "packets", "bytes", "end_reason"} <= rows[0].keys()
    keys = [(r["src"], r["sport"], r["dst"], r["dport"], r["proto"], r["vlan"], r["first_ts"]) for r in rows]
    assert len(set(keys)) == len(keys)  # no flow twice
    assert sum(int(r["packets"]) for r in rows) <= report["summary"]["packets"]
    assert all(int(r["packets"]) == int(r["packets_ab"]) + int(r["packets_ba"]) for r in rows)


@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed: no filter oracle")
@pytest.mark.parametrize("expression", [("tcp", "port", "80"), ("udp and port 53",), ("ip6",)])
def test_expression_selects_what_tcpdump_selects(capture: Path, expression: tuple[str, ...]) -> None:
    out = subprocess.run([TCPDUMP, "-nn", "-r", str(capture), *expression], capture_output=True, text=True,
                         check=True).stdout
    expected = len(out.splitlines())
    result = pktscope("read", str(capture), *expression, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["summary"]["packets"] == expected > 0
    assert doc["source"]["frames_read"] >= expected


# --- bad input ------------------------------------------------------------------------------------

def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(pktscope("read", str(tmp_path / "nope.pcap")))


def test_directory(tmp_path: Path) -> None:
    assert "directory" in one_line_error(pktscope("read", str(tmp_path)))


def test_unreadable_file() -> None:
    # As root, permissions do not stop a read, and the suite must not depend on another user being able to run
    # this Python; /proc/self/mem opens fine and then fails every read at offset 0 (EIO).
    assert "cannot read" in one_line_error(pktscope("read", "/proc/self/mem"))


def test_unreadable_file_by_permission(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (see test_unreadable_file)")
    path = tmp_path / "secret.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    path.chmod(0)
    assert "permission denied" in one_line_error(pktscope("read", str(path)))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.touch()
    assert "empty" in one_line_error(pktscope("read", str(path)))


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("these are my notes, not a capture\n" * 20)
    assert "not a pcap" in one_line_error(pktscope("read", str(path)))


def test_bad_filter_expression(capture: Path) -> None:
    assert "filter" in one_line_error(pktscope("read", str(capture), "tcp", "port", "banana"))


@pytest.mark.parametrize("option", [("--top", "0"), ("--idle-timeout", "-1"), ("--sort", "size")])
def test_bad_option_value(capture: Path, option: tuple[str, str]) -> None:
    assert option[0] in one_line_error(pktscope("read", str(capture), *option))


def test_bad_option_value_exits_2_without_traceback(capture: Path) -> None:
    result = pktscope("read", str(capture), "--top", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "pktscope read: error: argument --top: must be at least 1: 0"


# --- damaged capture ------------------------------------------------------------------------------

def test_capture_truncated_mid_record(capture: Path, tmp_path: Path) -> None:
    data = capture.read_bytes()
    if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        pytest.skip("the sample is not a little-endian pcap file: the record walk below reads only that")
    # walk the records (16-byte header, caplen at +8) to cut the file 10 bytes into the last third's first record
    starts, pos = [], 24
    while pos + 16 <= len(data):
        starts.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    keep = len(starts) * 2 // 3
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: starts[keep] + 10])
    result = pktscope("read", str(cut), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["packets"] == keep
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "warning" in lines[0], result.stderr


def test_json_of_plain_frames_loads_neither_dpkt_nor_rich(tmp_path: Path) -> None:
    # start-up: dpkt is loaded only for frames the vectorized decoder hands over (and tunnels), rich only
    # to draw tables; plain Ethernet/IPv4/IPv6 TCP and UDP need neither
    path = own_capture(tmp_path / "plain.pcap")
    probe = ("import io, sys, contextlib\n"
             "from pktscope.app.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    main(['read', {str(path)!r}, '--json'])\n"
             "print(type(sys.modules.get('dpkt')).__name__, 'dpkt.ip' in sys.modules, 'rich' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["_LazyModule", "False", "False"]


@pytest.mark.parametrize("sort", ["bytes", "packets"])
def test_top_hosts_are_the_full_sort_cut_at_top(sort: str) -> None:
    """The report's top hosts equal sorting every host (largest total first, ties by address) and
    keeping `top`, also when ties straddle the cut."""
    import random

    from pktscope.analyzers.snapshot import RECV_B, RECV_P, SENT_B, SENT_P, Snapshot
    from pktscope.app.report import _host_rows

    rng = random.Random(6)
    snap = Snapshot()
    for n in range(3000):
        snap.hosts[rng.randbytes(16)] = [rng.randrange(5), rng.randrange(5) * 100, rng.randrange(5),
                                         rng.randrange(5) * 100]
    i, j = (SENT_B, RECV_B) if sort == "bytes" else (SENT_P, RECV_P)
    full = sorted(snap.hosts.items(), key=lambda kv: (-(kv[1][i] + kv[1][j]), kv[0]))
    for top in (1, 7, 10, 500, 2999, 3000, 5000):
        assert _host_rows(snap, sort, top) == full[:top]
