"""The eBPF socket filter (`pktscope live --ebpf/--block`): translation, maps, pins, and live runs.

Equivalence: the eBPF program (translated tcpdump expression + blocklist + counters) run by the kernel
through BPF_PROG_TEST_RUN gives libpcap's classic verdict (CompiledFilter.matches) on every EN10MB
frame of ../shared/corpus that the test run accepts. Frames left out, and why:
  * shorter than 14 bytes: BPF_PROG_TEST_RUN refuses them (EINVAL: eth_type_trans needs a header);
  * longer than the one page the test run builds its skb in (PAGE_SIZE minus NET_SKB_PAD and
    skb_shared_info, about 3.7 kB here): EINVAL too;
  * EtherType IPv4 with fewer than 20 bytes after the Ethernet header, or IPv6 with fewer than 40:
    EINVAL as well (measured on 6.18: the test run wants the IP header it says the frame carries).
Identical frames are tested once. Any other refusal fails the test; the counts are printed.

Live tests run `pktscope live` in namespace b through `nsenter --net` rather than `ip netns exec`: the
latter gives each command a private mount namespace with a fresh /sys, so the pins under
/sys/fs/bpf of one command would be invisible to `pktscope block` and `bpftool` run by another.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dpkt
import netns
import pytest
from test_live import Lines, assert_group_gone

from pktscope.app.cli import UserError
from pktscope.bpf import classic, ebpf, pins, syscall
from pktscope.bpf.maps import MAP_FILES, FilterMapSet, PrefixError, parse_prefix
from pktscope.capture.files import CaptureError, open_capture
from pktscope.capture.linktypes import LINKTYPE_ETHERNET

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
REPO = Path(__file__).resolve().parent.parent
SNAPLEN = 262144
MAX_FRAMES = 40_000  # distinct frames tested per expression (the corpus has fewer EN10MB frames)

EXPRESSIONS = [
    "",
    "ip", "ip6", "arp", "tcp", "udp", "icmp", "icmp6", "ip proto 47",
    "host 192.168.1.1", "src host 10.0.0.1 or dst net 192.168.0.0/16", "net 10.0.0.0/8", "ip6 net 2001:db8::/32",
    "ether host ff:ff:ff:ff:ff:ff", "ether broadcast", "ether multicast",
    "port 53", "tcp port 80 or tcp port 443", "udp dst port 53", "src port 1024", "portrange 1-1023",
    "tcp portrange 8000-8100",
    "vlan", "vlan and ip", "vlan 100", "vlan and tcp",
    "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn", "tcp[13] & 7 != 0",
    "ip[8] < 64", "ip[6:2] & 0x1fff != 0", "ip[0] & 0xf > 5", "ip6[6] == 17",
    "len > 100", "len <= 64", "greater 1000", "less 60",
    "tcp and not port 22", "not ip and not ip6", "udp and (port 53 or port 67 or port 123)",
    "icmp[icmptype] == icmp-echo", "ip and tcp[20:2] = 0x4745",
    "(tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)",
    "ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) > 0",
    "ip[1] % 4 == 0", "ip[1] / 4 == 0", "ether[12:2] * 2 > 0x1000",
]


# --- the corpus's frames ------------------------------------------------------------------------------


def _corpus_frames() -> tuple[list[bytes], dict[str, int]]:
    """Distinct EN10MB frames of the corpus, and counts of the ones left out by reason."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus absent: {CORPUS}")
    seen: set[bytes] = set()
    frames: list[bytes] = []
    left_out = {"shorter than 14 bytes": 0, "duplicates": 0}
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap")):
        try:
            reader = open_capture(str(path))
        except CaptureError:
            continue
        with reader:
            for batch in reader:
                for i in range(len(batch)):
                    if int(batch.linktypes[i]) != LINKTYPE_ETHERNET:
                        continue
                    frame = batch.frame(i)
                    if len(frame) < ebpf.ETH_HLEN:
                        left_out["shorter than 14 bytes"] += 1
                    elif frame in seen:
                        left_out["duplicates"] += 1
                    else:
                        seen.add(frame)
                        frames.append(frame)
    return frames, left_out


@pytest.fixture(scope="module")
def corpus_frames() -> tuple[list[bytes], dict[str, int]]:
    return _corpus_frames()


def _need_bpf() -> None:
    if os.geteuid() != 0:
        pytest.skip("loading eBPF programs needs root (CAP_BPF)")


@pytest.fixture()
def filter_maps() -> Iterator[FilterMapSet]:
    _need_bpf()
    m = FilterMapSet.create()
    try:
        yield m
    finally:
        m.close()


def _load(program: tuple, maps: FilterMapSet, len_adjust: int = ebpf.ETH_HLEN) -> int:
    code = ebpf.build_program(program, SNAPLEN, maps.fds(), len_adjust=len_adjust)
    return syscall.prog_load(syscall.BPF_PROG_TYPE_SOCKET_FILTER, code, name="pktscope_test")


TEST_RUN_PAGE = 3000  # frames longer than this may not fit the test run's page; shorter ones always do


def _refusal_reason(frame: bytes) -> str | None:
    """Why BPF_PROG_TEST_RUN may refuse this frame (see the module docstring), or None if it must not."""
    ethertype = frame[12:14]
    if len(frame) > TEST_RUN_PAGE:
        return "longer than a test-run page"
    if ethertype == b"\x08\x00" and len(frame) < ebpf.ETH_HLEN + 20:
        return "IPv4 header incomplete"
    if ethertype == b"\x86\xdd" and len(frame) < ebpf.ETH_HLEN + 40:
        return "IPv6 header incomplete"
    return None


def _verdicts(prog_fd: int, frames: list[bytes]) -> tuple[list[int | None], dict[str, int]]:
    """The program's return value per frame (None: the test run refused the frame), refusals by reason."""
    out: list[int | None] = []
    refused: dict[str, int] = {}
    for frame in frames:
        try:
            out.append(syscall.prog_test_run(prog_fd, frame))
        except syscall.BpfError as exc:
            reason = _refusal_reason(frame)
            if exc.errno != errno.EINVAL or reason is None:
                raise AssertionError(f"test run refused frame {frame[:64].hex()} ({len(frame)} bytes): {exc}")
            out.append(None)
            refused[reason] = refused.get(reason, 0) + 1
    return out, refused


# --- equivalence with libpcap -------------------------------------------------------------------------


def test_translated_expressions_match_libpcap_on_the_corpus(
        corpus_frames: tuple[list[bytes], dict[str, int]], filter_maps: FilterMapSet) -> None:
    frames, left_out = corpus_frames
    frames = frames[:MAX_FRAMES]
    assert len(frames) > 10_000, f"too few corpus frames: {len(frames)}"
    differences: list[str] = []
    compared = 0
    refused: dict[str, int] = {}
    accepted: dict[str, int] = {}
    for expr in EXPRESSIONS:
        compiled = classic.compile_filter(expr) if expr else None
        program = compiled.instructions if compiled else tuple(classic.accept_all(SNAPLEN))
        fd = _load(program, filter_maps)
        try:
            got, refused = _verdicts(fd, frames)
        finally:
            os.close(fd)
        for frame, value in zip(frames, got, strict=True):
            if value is None:
                continue
            compared += 1
            accepted[expr] = accepted.get(expr, 0) + (value != 0)
            want = compiled.matches(frame) if compiled else True
            if (value != 0) != want:
                differences.append(f"{expr!r}: frame {frame[:64].hex()} ({len(frame)} bytes): eBPF {value}, "
                                   f"libpcap {want}")
            elif value and value != min(SNAPLEN, 262144):
                differences.append(f"{expr!r}: accept value {value}")
    counters = filter_maps.read_counters()
    print(f"\neBPF vs libpcap: {len(EXPRESSIONS)} expressions x {len(frames)} distinct frames "
          f"({len(frames) - sum(refused.values())} test-runnable) = {compared} verdicts, "
          f"{len(differences)} differences; left out: {left_out}, refused by the test run: {refused}")
    assert not differences, "\n".join(differences[:20])
    assert sum(refused.values()) < len(frames) // 20
    trivial = [e for e in EXPRESSIONS[1:] if accepted.get(e, 0) in (0, compared // len(EXPRESSIONS))]
    assert not trivial, f"expressions that accept no frame or every frame: {trivial}"
    # every frame went through the counters: seen = rejected + passed (nothing was blocked)
    assert counters["blocked"]["packets"] == 0
    assert counters["seen"]["packets"] == counters["rejected"]["packets"] + counters["passed"]["packets"] == compared


# --- the blocklist, under BPF_PROG_TEST_RUN -------------------------------------------------------------


def _frame(src: str, dst: str, tags: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame carrying UDP from src to dst, behind 802.1ad/802.1Q tags with these ids."""
    v6 = ":" in src
    udp = dpkt.udp.UDP(sport=1000, dport=2000, data=b"x" * 20)
    ip: Any
    if v6:
        ip = dpkt.ip6.IP6(src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, nxt=17,
                          hlim=64, data=udp)
    else:
        ip = dpkt.ip.IP(src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, p=17,
                        data=udp)
    payload = bytes(ip)
    ethertype = 0x86DD if v6 else 0x0800
    tag_bytes = b""
    tpids = [0x88A8] * (len(tags) - 1) + [0x8100] if tags else []
    for tpid, vid in zip(tpids, tags, strict=True):
        tag_bytes += tpid.to_bytes(2, "big") + vid.to_bytes(2, "big")
    return b"\x02" * 6 + b"\x04" * 6 + tag_bytes + ethertype.to_bytes(2, "big") + payload


@pytest.mark.parametrize("tags", [(), (100,), (200, 100)], ids=["untagged", "vlan", "qinq"])
def test_blocklist_drops_source_or_destination_and_counts(filter_maps: FilterMapSet, tags: tuple[int, ...]) -> None:
    for text in ("192.0.2.0/24", "198.51.100.7", "2001:db8:1::/48", "2001:db8:2::9"):
        filter_maps.block(parse_prefix(text))
    fd = _load(tuple(classic.accept_all(SNAPLEN)), filter_maps)
    cases = {
        ("192.0.2.77", "10.0.0.1"): True, ("10.0.0.1", "198.51.100.7"): True, ("10.0.0.1", "198.51.100.8"): False,
        ("192.0.3.1", "10.0.0.1"): False, ("2001:db8:1:ffff::1", "2001:db8:9::1"): True,
        ("2001:db8:9::1", "2001:db8:2::9"): True, ("2001:db8:9::1", "2001:db8:2::a"): False,
    }
    try:
        for (src, dst), blocked in cases.items():
            frame = _frame(src, dst, tags)
            assert (syscall.prog_test_run(fd, frame) == 0) == blocked, (src, dst, tags)
    finally:
        os.close(fd)
    counters = filter_maps.read_counters()
    n_blocked = sum(cases.values())
    assert counters["blocked"]["packets"] == n_blocked
    assert counters["passed"]["packets"] == len(cases) - n_blocked
    assert counters["seen"]["packets"] == len(cases)
    hits = dict(filter_maps.blocklist())
    assert hits[parse_prefix("192.0.2.0/24")] == 1 and hits[parse_prefix("2001:db8:2::9")] == 1
    assert filter_maps.unblock(parse_prefix("192.0.2.0/24")) and not filter_maps.unblock(parse_prefix("192.0.2.0/24"))


def test_blocklist_and_expression_together(filter_maps: FilterMapSet) -> None:
    filter_maps.block(parse_prefix("192.0.2.0/24"))
    fd = _load(classic.compile_filter("udp dst port 2000").instructions, filter_maps)
    try:
        assert syscall.prog_test_run(fd, _frame("192.0.2.1", "10.0.0.1")) == 0  # blocked
        assert syscall.prog_test_run(fd, _frame("10.0.0.2", "10.0.0.1")) == SNAPLEN  # passed
        short = _frame("10.0.0.2", "10.0.0.1")[:ebpf.ETH_HLEN + 20]  # the expression's port load is past the end
        assert syscall.prog_test_run(fd, short) == 0
    finally:
        os.close(fd)
    c = filter_maps.read_counters()
    assert [c[n]["packets"] for n in ebpf.COUNTER_NAMES] == [3, 1, 1, 1]
    assert c["seen"]["bytes"] == c["blocked"]["bytes"] + c["rejected"]["bytes"] + c["passed"]["bytes"]


# --- bad input ------------------------------------------------------------------------------------------


def test_verifier_rejection_names_the_verifier() -> None:
    _need_bpf()
    bad = ebpf.encode(ebpf.JMP | ebpf.EXIT)  # returns R0 without ever setting it
    with pytest.raises(syscall.VerifierError) as info:
        syscall.prog_load(syscall.BPF_PROG_TYPE_SOCKET_FILTER, bad, name="pktscope_bad")
    assert "verifier" in str(info.value) and "R0" in str(info.value)
    assert "R0 !read_ok" in info.value.log


def test_verifier_rejection_in_live_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_bpf()
    from pktscope.app import live

    monkeypatch.setattr(ebpf, "build_program", lambda *a, **k: ebpf.encode(ebpf.JMP | ebpf.EXIT))
    args = argparse.Namespace(ebpf=True, block=None, verbose=False)
    cfg = argparse.Namespace(program=tuple(classic.accept_all(SNAPLEN)), snaplen=SNAPLEN)
    with pytest.raises(UserError) as info:
        live._load_ebpf(args, cfg)  # type: ignore[arg-type]
    message = str(info.value)
    assert "verifier" in message and "\n" not in message and "--verbose" in message
    args.verbose = True
    with pytest.raises(UserError) as info:
        live._load_ebpf(args, cfg)  # type: ignore[arg-type]
    assert "R0 !read_ok" in str(info.value)


@pytest.mark.parametrize("text", ["10.0.0.1/8", "nonsense", "300.1.1.1", "2001:db8::/129", ""])
def test_bad_prefix(text: str) -> None:
    with pytest.raises(PrefixError) as info:
        parse_prefix(text)
    assert str(info.value).startswith("bad prefix") and "\n" not in str(info.value)


def test_translator_refuses_what_it_does_not_know() -> None:
    maps = ebpf.FilterMaps(-1, -1, -1)
    with pytest.raises(ebpf.TranslationError):
        ebpf.build_program([(0x20, 0, 0, 0xFFFFF000 + 12), (0x06, 0, 0, 1)], SNAPLEN, maps)  # SKF_AD_NLATTR
    with pytest.raises(ebpf.TranslationError):
        ebpf.build_program([], SNAPLEN, maps)


# --- live, in namespaces --------------------------------------------------------------------------------

STEP_TIMEOUT = 20.0
SETTLE = 0.4


def _pktscope_argv(rig: netns.VethRig | None, *args: str) -> list[str]:
    # nsenter --net, not `ip netns exec`: the same mount namespace, hence the same /sys/fs/bpf, as this test
    prefix = ["nsenter", f"--net=/run/netns/{rig.ns_b}"] if rig is not None else []
    return [*prefix, sys.executable, "-m", "pktscope", *args]


def _block(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_pktscope_argv(None, "block", *args), cwd=REPO, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT, check=False)


class EbpfLive:
    """`pktscope live --json` in namespace b with the eBPF filter; JSON lines on `out`."""

    def __init__(self, rig: netns.VethRig, expression: str, *args: str) -> None:
        argv = _pktscope_argv(rig, "live", rig.if_b, expression, "--interval", "0.2", *args, "--json")
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.out = Lines(self.proc.stdout)  # type: ignore[arg-type]
        self.err = Lines(self.proc.stderr)  # type: ignore[arg-type]

    def wait_interval(self) -> dict[str, Any]:
        """The next interval line (the first one carries the run id)."""
        while True:
            line = self.out.next()
            assert line is not None, f"pktscope ended: {self.err.rest(5)}"
            doc = json.loads(line)
            if doc["event"] == "interval":
                return doc

    def stop(self, sig: int = signal.SIGINT) -> dict[str, Any]:
        self.proc.send_signal(sig)
        lines = self.out.rest()
        rc = self.proc.wait(timeout=STEP_TIMEOUT)
        assert rc == 0, (rc, self.err.rest(5))
        return json.loads(lines[-1])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


@contextmanager
def ebpf_live(rig: netns.VethRig, expression: str, *args: str) -> Iterator[EbpfLive]:
    run = EbpfLive(rig, expression, *args)
    try:
        yield run
    finally:
        run.kill()
        assert_group_gone(run.proc.pid)


def _send(rig: netns.VethRig, dst: str, dport: int, flows: int, per_flow: int) -> int:
    sent = rig.send_udp("a", dst, dport, 47000, flows, per_flow, 60)
    assert sent == flows * per_flow
    return sent


def test_live_blocked_prefixes_never_reach_userspace(veth_rig: netns.VethRig) -> None:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed (Debian package bpftool; scripts/setup.sh --test installs it)")
    rig = veth_rig
    with ebpf_live(rig, "udp", "--block", rig.blackhole4, "--block", f"{rig.blackhole6}/128",
                   "--workers", "2") as run:
        rid = run.wait_interval()["ebpf"]["run"]
        directory = Path(pins.PIN_ROOT) / rid
        assert sorted(os.listdir(directory)) == sorted([*MAP_FILES, pins.PROG_PIN])
        blocked = _send(rig, rig.blackhole4, 5201, 5, 10) + _send(rig, rig.blackhole6, 5201, 4, 10)
        passed = _send(rig, rig.ip4_b, 5202, 3, 10)  # b answers with ICMP port unreachable: seen, rejected
        time.sleep(SETTLE)
        progs = subprocess.run(["bpftool", "prog", "list"], check=True, capture_output=True, text=True, timeout=10)
        assert "socket_filter" in progs.stdout and pins.PROG_NAME in progs.stdout
        dump = subprocess.run(["bpftool", "map", "dump", "pinned", str(directory / "block4")],
                              capture_output=True, text=True, timeout=10, check=True).stdout
        addr = " ".join(f"{b:02x}" for b in ipaddress.ip_address(rig.blackhole4).packed)
        assert f"key: 20 00 00 00 {addr}" in dump and "value: 32 00 00 00 00 00 00 00" in dump  # 50 frames
        final = run.stop()
    assert final["summary"]["packets"] == passed == 30
    assert final["kernel"]["packets"] == passed  # blocked frames never reached the socket queue
    e = final["ebpf"]
    assert e["blocked"]["packets"] == blocked == 90
    assert e["passed"]["packets"] == passed
    assert e["seen"]["packets"] == e["blocked"]["packets"] + e["rejected"]["packets"] + e["passed"]["packets"]
    assert not directory.exists()
    if not pins.list_runs():  # the only run: not even the empty pin root stays behind
        assert not Path(pins.PIN_ROOT).exists()


def test_live_block_add_and_del_during_the_run(veth_rig: netns.VethRig) -> None:
    rig = veth_rig
    with ebpf_live(rig, "udp dst port 5203", "--ebpf") as run:
        run.wait_interval()
        first = _send(rig, rig.blackhole4, 5203, 2, 10)
        res = _block("add", f"{rig.blackhole4}/32")
        assert res.returncode == 0, res.stderr
        run.wait_interval()  # the change is in the kernel already; one interval is what the issue promises
        blocked = _send(rig, rig.blackhole4, 5203, 2, 10)
        listed = _block("list")
        assert listed.returncode == 0 and listed.stdout.split() == [f"{rig.blackhole4}/32", str(blocked)]
        assert _block("del", rig.blackhole4).returncode == 0
        assert _block("list").stdout == ""
        last = _send(rig, rig.blackhole4, 5203, 1, 10)
        time.sleep(SETTLE)
        final = run.stop()
    assert final["summary"]["packets"] == first + last == 30
    assert final["ebpf"]["blocked"]["packets"] == blocked == 20


def test_live_pins_removed_after_sigint_and_stale_pins_cleaned(veth_rig: netns.VethRig) -> None:
    rig = veth_rig
    with ebpf_live(rig, "udp", "--ebpf") as crashed:
        rid = crashed.wait_interval()["ebpf"]["run"]
        os.killpg(crashed.proc.pid, signal.SIGKILL)
        crashed.proc.wait(timeout=10)
    stale = Path(pins.PIN_ROOT) / rid
    assert stale.is_dir() and not pins.run_alive(rid)  # a crash leaves its pins behind
    res = _block("list")
    assert res.returncode == 2 and "no running capture" in res.stderr  # a dead run is not a running one
    with ebpf_live(rig, "udp", "--ebpf") as run:
        new_rid = run.wait_interval()["ebpf"]["run"]
        assert not stale.exists(), "stale pins of the dead run were not cleaned at start"
        assert (Path(pins.PIN_ROOT) / new_rid).is_dir()
        run.stop(signal.SIGINT)
    assert not (Path(pins.PIN_ROOT) / new_rid).exists()


def _bad(argv: list[str]) -> str:
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktscope: ") and "Traceback" not in res.stderr, res.stderr
    return lines[0]


@pytest.mark.parametrize(("prefix", "want"), [("10.0.0.1/8", "host bits"), ("bogus", "bad prefix"),
                                              ("2001:db8::/200", "bad prefix")])
def test_live_bad_prefix_exit_2(veth_rig: netns.VethRig, prefix: str, want: str) -> None:
    message = _bad(_pktscope_argv(veth_rig, "live", veth_rig.if_b, "--block", prefix, "--json"))
    assert want in message and "bad prefix" in message


def test_block_command_bad_input() -> None:
    assert "bad prefix" in _bad(_pktscope_argv(None, "block", "add", "10.0.0.1/8"))
    assert "give at least one PREFIX" in _bad(_pktscope_argv(None, "block", "add"))
    if os.geteuid() == 0:
        assert "no running capture" in _bad(_pktscope_argv(None, "block", "list", "--run", "1-1"))


def test_live_without_cap_bpf_exit_2(veth_rig: netns.VethRig) -> None:
    if shutil.which("capsh") is None:
        pytest.skip("capsh (Debian libcap2-bin) is not installed")
    # Root keeps CAP_NET_RAW; without CAP_BPF and CAP_SYS_ADMIN the kernel refuses BPF_MAP_CREATE
    # (kernel.unprivileged_bpf_disabled is 1 or 2 on current distributions).
    cmd = f"{sys.executable} -m pktscope live {veth_rig.if_b} --ebpf --json"
    message = _bad(["nsenter", f"--net=/run/netns/{veth_rig.ns_b}", "capsh", "--drop=cap_bpf,cap_sys_admin",
                    "--", "-c", cmd])
    assert "CAP_BPF" in message
