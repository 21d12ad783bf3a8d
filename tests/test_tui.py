"""The dashboard (app/tui.py): its renderables on a Snapshot of real decoded frames, compared as text
(samples/mixed.pcap through the library), and the real program on a real terminal: `pktscope read --tui`
and `pktscope live` on the veth rig, each in a tmux session of a fixed size, driven with keys
(views, sort, resize, quit), read back with capture-pane.

Every wait is bounded; every tmux server (a private one per test, `tmux -L`) is killed in `finally`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import netns
import pytest
from rich.cells import cell_len
from rich.console import Console

from pktscope.analyzers.analysis import Analysis
from pktscope.analyzers.snapshot import RECV_B, RECV_P, SENT_B, SENT_P, Snapshot
from pktscope.app import tui
from pktscope.app.report import format_address, human_bytes
from pktscope.capture.files import open_capture
from pktscope.decoders.reference import decode_batch

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "mixed.pcap"
TMUX = shutil.which("tmux")
STEP_TIMEOUT = 20.0  # any single wait for the screen to show something


# --- a Snapshot of real frames ------------------------------------------------------------------------


def analyse(path: Path, top: int = 20) -> tuple[Snapshot, tui.PerSecond]:
    analysis = Analysis(top=top)
    per_second = tui.PerSecond()
    with open_capture(str(path)) as reader:
        for batch in reader:
            cols = decode_batch(batch)
            analysis.feed(cols)
            per_second.add(cols)
    return analysis.finish(), per_second


@pytest.fixture(scope="module")
def sample() -> tuple[Snapshot, tui.PerSecond]:
    return analyse(SAMPLE)


def capture_state(snap: Snapshot, per_second: tui.PerSecond | None = None, **kw: object) -> tui.UIState:
    state = tui.UIState(source=f"file {SAMPLE.name}", **kw)  # type: ignore[arg-type]
    state.observe_capture(snap, per_second)
    return state


def render(renderable: object, width: int = 100, height: int = 30) -> str:
    console = Console(file=io.StringIO(), width=width, height=height, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def styled_segments(renderable: object, width: int = 100) -> list:
    console = Console(file=io.StringIO(), width=width, height=30, color_system="truecolor", force_terminal=True)
    return list(console.render(renderable, console.options))


def hosts_by(snap: Snapshot, key: Callable[[list[int]], int]) -> list[str]:
    return [format_address(a) for a, v in sorted(snap.hosts.items(), key=lambda kv: (-key(kv[1]), kv[0]))]


def table_lines(text: str, title: str) -> list[str]:
    """The rows of the table titled `title` (after its header line), up to the next blank-titled block."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip() or ln.lstrip().startswith(("Protocols", "╭", "q quit")):
            break
        rows.append(ln)
    return rows


# --- renderables ------------------------------------------------------------------------------------


def test_hosts_view_top_talkers_units_and_share(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, per_second = sample
    state = capture_state(snap, per_second)
    text = render(tui.Dashboard(snap, state))
    rows = table_lines(text, "Top talkers by bytes")
    expected = hosts_by(snap, lambda v: v[SENT_B] + v[RECV_B])
    assert [r.split()[0] for r in rows] == expected[:len(rows)]
    assert len(rows) >= 8
    top = snap.hosts[bytes(10) + b"\xff\xff" + bytes([151, 101, 1, 69])]
    first = rows[0]
    assert first.startswith("151.101.1.69 ")
    duration = (snap.last_ns - snap.first_ns) / 1e9
    assert human_bytes(top[SENT_B]) in first and human_bytes(top[RECV_B]) in first  # "175.8 KiB", "29.5 KiB"
    assert f"{8 * (top[SENT_B] + top[RECV_B]) / duration / 1000:.1f} kbit/s" in first
    assert f"{100 * (top[SENT_B] + top[RECV_B]) / snap.bytes:.0f}%" in first
    # header: totals and averages in human units, the sparkline of the file's seconds
    assert f"{snap.packets:,} pkts {human_bytes(snap.bytes)}" in text  # 2,691 pkts 704.0 KiB
    assert f"avg {snap.packets / duration:.0f} pkt/s {8 * snap.bytes / duration / 1000:.1f} kbit/s" in text
    assert re.search(r"pkt/s [▁▂▃▄▅▆▇█]{50,} max \d+ pkt/s", text)
    # beside it: the protocol breakdown and top ports
    assert re.search(r"TCP\s+1\.9k\s+627\.5 KiB", text)
    assert re.search(r"80/tcp\s+http\s+", text)
    assert "q quit" in text.splitlines()[-1]


def test_conversations_view_endpoints_state_and_rate(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = capture_state(snap)
    assert state.key("v", snap)
    text = render(tui.Dashboard(snap, state))
    rows = table_lines(text, "Top conversations by bytes")
    top = snap.top_flows[0]
    assert re.match(r"192\.168\.1\.14:35319\s+93\.184\.216\.34:80\s+TCP\s+closed\s+0\.3s\s+14\.7 KiB\s+28\s+"
                    r"\d+\.\d kbit/s", rows[0]), rows[0]
    assert top.packets == 28
    assert "view:conversations" in text


def test_ports_view_and_sort_cycle(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = capture_state(snap)
    state.key("v", snap)
    state.key("v", snap)
    text = render(tui.Dashboard(snap, state))
    rows = table_lines(text, "Top ports by bytes")
    assert [r.split()[0] for r in rows[:4]] == ["80/tcp", "443/tcp", "53/udp", "22/tcp"]
    assert "Top talkers by bytes" in text  # the hosts go under the main view instead of the ports
    state.key("s", snap)
    assert state.sort == "packets"
    rows = table_lines(render(tui.Dashboard(snap, state)), "Top ports by packets")
    assert [r.split()[0] for r in rows[:4]] == ["80/tcp", "443/tcp", "53/udp", "22/tcp"]  # 882, 749, 568, 276
    state.key("s", snap)
    assert state.sort == "rate"
    state.key("s", snap)
    assert state.sort == "bytes"
    state.key("v", snap)
    assert state.view == "hosts"


def test_sort_by_packets_reorders_hosts(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = capture_state(snap, sort="packets")
    rows = table_lines(render(tui.Dashboard(snap, state), width=120), "Top talkers by packets")
    expected = hosts_by(snap, lambda v: v[SENT_P] + v[RECV_P])
    assert [r.split()[0] for r in rows] == expected[:len(rows)]
    assert expected[:3] != hosts_by(snap, lambda v: v[SENT_B] + v[RECV_B])[:3]  # the sort is visible


@pytest.mark.parametrize("view", tui.VIEWS)
def test_80x24_fits_and_stays_readable(sample: tuple[Snapshot, tui.PerSecond], view: str) -> None:
    snap, per_second = sample
    state = capture_state(snap, per_second, view=view)
    lines = render(tui.Dashboard(snap, state), width=80, height=24).splitlines()
    assert len(lines) == 24
    assert all(cell_len(ln) <= 80 for ln in lines)
    assert lines[0].startswith("╭") and lines[-1].startswith("q quit")
    text = "\n".join(lines)
    for needle in {"hosts": ["151.101.1.69", "104.16.132.229", "192.168.1.18"],
                   "conversations": ["192.168.1.14:35319", "93.184.216.34:80"],
                   "ports": ["80/tcp", "443/tcp", "53/udp", "151.101.1.69"]}[view]:
        assert needle in text, (needle, text)
    table = {"hosts": "Top talkers", "conversations": "Top conversations", "ports": "Top ports"}[view]
    assert len(table_lines(text, table)) >= 5
    assert "…" not in "".join(ln.split()[0] for ln in table_lines(text, table))  # addresses are whole


def test_small_terminal_keeps_the_main_view(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    lines = render(tui.Dashboard(snap, capture_state(snap)), width=80, height=16).splitlines()
    assert len(lines) == 16 and "Top talkers" in "\n".join(lines) and "Protocols" not in "\n".join(lines)


def test_help_screen(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = capture_state(snap)
    state.key("h", snap)
    text = render(tui.Dashboard(snap, state), width=80, height=24)
    assert all(f"│ {k}  " in text for k in "qpsvnh")
    assert state.key("x", snap) and not state.help  # any key closes it


def live_state(drops: int) -> tui.UIState:
    return tui.UIState(source="live veth-b", expression="udp", workers=2, uptime=83.0, kernel=(5000, drops, 1))


def test_kernel_drops_highlighted_red_only_when_not_zero(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    text = render(tui.Header(snap, live_state(7)))
    assert "kernel 5,000 passed  7 dropped  1 freezes  total 2,691 pkts 704.0 KiB  flows 437" in text
    assert "live veth-b  filter: udp  2 workers  up 1m23s" in text
    red = [s for s in styled_segments(tui.Header(snap, live_state(7))) if "dropped" in s.text]
    assert red and red[0].style.bgcolor.name == "red", red
    calm = [s for s in styled_segments(tui.Header(snap, live_state(0))) if "dropped" in s.text]
    assert calm and (calm[0].style is None or calm[0].style.bgcolor is None), calm


def test_ebpf_counters_in_the_header(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    snap = tui.freeze(snap)
    # the layout app/live.py puts there: bpf.pins counters, summed over CPUs
    snap.extra["ebpf"] = {"blocked": {"packets": 1234, "bytes": 98_000},
                          "passed": {"packets": 56, "bytes": 3_500}}
    text = render(tui.Dashboard(snap, live_state(0)), width=100, height=24)
    assert re.search(r"ebpf blocked 1,234 pkts 95\.7 KiB\s+passed 56 pkts 3\.4 KiB", text)
    assert len(text.splitlines()) == 24


def test_live_rates_from_successive_snapshots(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    """As the live parent does: worker deltas absorbed into one Snapshot, observed once per tick."""
    worker = Analysis(top=20)
    merged = Snapshot(top_limit=20)
    state = live_state(0)
    with open_capture(str(SAMPLE)) as reader:
        batches = [decode_batch(b) for b in reader]
    cols = batches[0]
    assert len(batches) == 1 and len(cols) > 1000
    half = len(cols) // 2
    worker.feed(cols[:half])
    merged.absorb(worker.take_delta())
    state.observe(merged, 1.0)
    assert state.rates.pps == half and state.rates.bps == 8 * merged.bytes
    first_bytes, first_hosts = merged.bytes, {a: v[SENT_B] + v[RECV_B] for a, v in merged.hosts.items()}
    worker.feed(cols[half:])
    merged.absorb(worker.take_delta())
    state.observe(merged, 3.0)  # two seconds later
    assert state.rates.pps == (len(cols) - half) / 2
    assert state.rates.bps == 8 * (merged.bytes - first_bytes) / 2
    assert state.rates.avg_pps == len(cols) / 3
    assert [h[0] for h in state.rates.history] == [half, (len(cols) - half) / 2]
    addr = bytes(10) + b"\xff\xff" + bytes([151, 101, 1, 69])
    now = merged.hosts[addr][SENT_B] + merged.hosts[addr][RECV_B]
    assert state.rates.hosts[addr] == 8 * (now - first_hosts.get(addr, 0)) / 2
    text = render(tui.Dashboard(merged, state))
    assert f"now {human_pps_text((len(cols) - half) / 2)}" in text
    state.sort = "rate"
    rows = table_lines(render(tui.Dashboard(merged, state)), "Top talkers by rate")
    ranked = sorted(state.rates.hosts.items(), key=lambda kv: (-kv[1], -(merged.hosts[kv[0]][SENT_B]
                                                                          + merged.hosts[kv[0]][RECV_B]), kv[0]))
    assert rows[0].split()[0] == format_address(ranked[0][0])


def human_pps_text(pps: float) -> str:
    return f"{pps:.0f} pkt/s" if pps < 1000 else f"{pps / 1000:.1f} kpkt/s"


def test_pause_freezes_the_display_not_the_data() -> None:
    snap, _ = analyse(SAMPLE)
    state = live_state(0)
    state.observe(snap, 1.0)
    state.key("p", snap)
    shown_before = render(tui.Dashboard(snap, state))
    snap.packets += 1000  # more data arrives while paused
    snap.hosts[bytes(10) + b"\xff\xff" + bytes([10, 9, 9, 9])] = [10**9, 10**9, 0, 0]
    state.observe(snap, 2.0)
    paused = render(tui.Dashboard(snap, state))
    assert "PAUSED" in paused and "10.9.9.9" not in paused
    assert f"{snap.packets - 1000:,} pkts" in paused and shown_before.split("PAUSED")[1][:40] in paused
    state.key("p", snap)
    resumed = render(tui.Dashboard(snap, state))
    assert "PAUSED" not in resumed and "10.9.9.9" in resumed and f"{snap.packets:,} pkts" in resumed


def test_units() -> None:
    assert tui.human_bits(999) == "999 bit/s"
    assert tui.human_bits(1_500_000) == "1.5 Mbit/s"
    assert tui.human_bits(2.5e9) == "2.5 Gbit/s"
    assert tui.human_pps(12_345) == "12.3 kpkt/s"
    assert tui.human_count(950) == "950" and tui.human_count(12_300) == "12.3k"
    assert tui.human_duration(83) == "1m23s" and tui.human_duration(0.25) == "0.2s"


def test_tcp_state_from_flags() -> None:
    syn, ack, fin, rst = 0x02, 0x10, 0x01, 0x04
    assert tui.tcp_state(syn, 0) == "syn"
    assert tui.tcp_state(syn | ack, syn | ack) == "estab"
    assert tui.tcp_state(ack, ack) == "estab"  # began before the capture
    assert tui.tcp_state(syn | ack | fin, syn | ack) == "fin"
    assert tui.tcp_state(syn | ack | fin, syn | ack | fin) == "closed"
    assert tui.tcp_state(syn, rst | ack) == "reset"


def test_per_second_series(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, per_second = sample
    span, samples = per_second.samples(60)
    assert span == 1.0 and len(samples) == 57  # 22:13:20 .. 22:14:16
    assert sum(s[0] for s in samples) == snap.packets
    assert sum(s[1] for s in samples) == 8 * snap.bytes
    span, folded = per_second.samples(10)
    assert span == 6.0 and len(folded) == 10 and sum(s[0] for s in folded) * span == snap.packets


def test_summary_line_is_plain(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = live_state(3)
    state.observe(snap, 2.0)
    line = tui.summary_line(snap, state)
    assert "\x1b" not in line and "\n" not in line
    assert f"{snap.packets:,} pkts" in line and "kernel drops 3" in line and "top 151.101.1.69" in line
    assert "kpkt/s" in line  # 2,691 packets in the first 2 s


def test_resolver_in_the_background_bounded_and_timed_out() -> None:
    release = threading.Event()
    asked: list[bytes] = []

    def lookup(addr: bytes) -> str | None:
        asked.append(addr)
        if addr[-1] == 9:
            release.wait(10)  # a DNS server that does not answer in time
            return "late.example"
        return f"host{addr[-1]}.example"

    resolver = tui.Resolver(lookup, size=3, timeout=0.3, threads=2)
    try:
        addrs = [bytes(15) + bytes([i]) for i in range(1, 6)]
        assert resolver.name(addrs[0]) is None  # never blocks: the address is shown meanwhile
        deadline = time.monotonic() + 5
        while resolver.name(addrs[0]) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert resolver.name(addrs[0]) == "host1.example"
        for a in addrs[1:]:
            resolver.name(a)
        deadline = time.monotonic() + 5
        while any(resolver.name(a) is None for a in addrs[2:]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(resolver.cache) == 3  # bounded
        slow = bytes(15) + bytes([9])
        assert resolver.name(slow) is None
        time.sleep(0.4)
        assert resolver.name(slow) is None and resolver.cache.get(slow, "x") is None  # given up
        assert asked.count(slow) == 1
    finally:
        release.set()
        resolver.close()


def test_names_toggle_shows_names(sample: tuple[Snapshot, tui.PerSecond]) -> None:
    snap, _ = sample
    state = capture_state(snap)
    state.key("n", snap)
    assert state.resolver is not None
    state.resolver.close()
    addr = bytes(10) + b"\xff\xff" + bytes([151, 101, 1, 69])
    state.resolver.cache[addr] = "cdn.example.net"
    text = render(tui.Dashboard(snap, state))
    assert "cdn.example.net" in text and "names:on" in text
    state.key("n", snap)
    assert "151.101.1.69" in render(tui.Dashboard(snap, state))


# --- the command line without a terminal -------------------------------------------------------------


def pktscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pktscope", *args], capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)


def test_read_tui_needs_a_terminal() -> None:
    res = pktscope("read", str(SAMPLE), "--tui")
    assert res.returncode == 2 and res.stderr == "pktscope: --tui needs a terminal on stdin and stdout\n"
    res = pktscope("read", str(SAMPLE), "--tui", "--json")
    assert res.returncode == 2 and "--tui cannot be combined with --json" in res.stderr


# --- the real program in tmux -----------------------------------------------------------------------------


class Tmux:
    """A private tmux server (`-L`) with one session of a fixed size running `command` in a shell."""

    def __init__(self, command: str, width: int, height: int) -> None:
        self.base = ["tmux", "-L", f"pktscope-test-{os.getpid()}-{time.monotonic_ns()}"]
        # after the command: its exit status and the terminal's mode (canonical again?), then idle
        shell = f"{command}; echo EXIT=$?; stty -a | grep -o -- '-\\?icanon'; sleep 600"
        self.tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "-c", str(REPO), shell)

    def tmux(self, *args: str) -> str:
        res = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10, check=False)
        assert res.returncode == 0, f"tmux {args}: {res.stderr}"
        return res.stdout

    def pane(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def history(self) -> str:
        """The screen and what scrolled off it."""
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-1000")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, test: Callable[[str], bool], what: str, timeout: float = STEP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.pane()
            if test(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what} in {timeout}s; it shows:\n{text}")
            time.sleep(0.1)

    def shows(self, *patterns: str, timeout: float = STEP_TIMEOUT) -> str:
        return self.wait_for(lambda t: all(re.search(p, t) for p in patterns), f"{patterns}", timeout)

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)


@contextmanager
def tmux(command: str, width: int, height: int) -> Iterator[Tmux]:
    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install tmux; scripts/setup.sh --test does it)")
    t = Tmux(command, width, height)
    try:
        yield t
    finally:
        t.kill()


def fits(width: int) -> Callable[[str], bool]:
    """The dashboard drawn for a `width`-column terminal: its box spans exactly the width."""
    return lambda text: bool(text) and text.splitlines()[0] == "╭" + "─" * (width - 2) + "╮"


def test_read_tui_in_a_terminal_keys_resize_quit() -> None:
    with tmux(f"{sys.executable} -m pktscope read {SAMPLE} --tui --top 20", 100, 30) as t:
        text = t.shows(r"Top talkers by bytes", r"151\.101\.1\.69 .* 29%", r"avg 48 pkt/s 101\.9 kbit/s")
        assert t.wait_for(fits(100), "a 100-column dashboard")
        assert "EXIT=" not in text
        t.keys("v")
        t.shows(r"Top conversations by bytes", r"192\.168\.1\.14:35319\s+93\.184\.216\.34:80\s+TCP\s+closed")
        t.keys("s")
        t.shows(r"Top conversations by packets", r"view:conversations")
        t.keys("v")
        t.shows(r"Top ports by packets", r"80/tcp\s+http\s+882")
        t.tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
        text = t.wait_for(fits(80), "the dashboard redrawn for 80x24")
        lines = text.splitlines()
        assert len(lines) == 24 and lines[-1].startswith("q quit") and "443/tcp" in text
        t.keys("h")
        t.shows(r"─ keys ─", r"name resolution")
        t.keys("x")
        t.shows(r"Top ports by packets")
        t.keys("q")
        text = t.shows(r"EXIT=\d+", r"icanon")
        assert "EXIT=0" in text and "-icanon" not in text  # the terminal is back in canonical mode
        report = t.history()  # the report follows the screen (and the screen left no trace)
        assert "Capture summary" in report and "Top ports (by bytes)" in report and "q quit" not in report


_UDP_FOR = """
import socket, sys, time
dst, dport, sport0, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = []
for i in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", sport0 + i))
    socks.append(s)
deadline = time.monotonic() + seconds
sent = 0
while time.monotonic() < deadline and sent < 200000:
    socks[sent % 3].sendto(bytes(200 + 100 * (sent % 3)), (dst, dport))
    sent += 1
    time.sleep(0.002)
print(sent)
"""


def test_live_dashboard_in_a_terminal(veth_rig: netns.VethRig) -> None:
    """`pktscope live` on a terminal: talkers with non-zero rates, `v`/`s`, resize, `q` exits 0 with the report."""
    rig = veth_rig
    cmd = " ".join(rig.exec_argv("b", [sys.executable, "-m", "pktscope", "live", rig.if_b, "udp", "--top", "20"]))
    sender = None
    with tmux(cmd, 100, 30) as t:
        try:
            t.shows(r"live veth-b\s+filter: udp\s+1 worker", r"q quit")
            sender = rig.popen("a", [sys.executable, "-c", _UDP_FOR, rig.blackhole4, "5301", "42000", "30"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            host_a = re.escape(rig.ip4_a)
            text = t.shows(rf"\n{host_a}\s", rf"\n{re.escape(rig.blackhole4)}\s",
                           r"now [1-9][\d.]* k?pkt/s [1-9][\d.]* [kM]?bit/s")
            row = next(ln for ln in text.splitlines() if ln.startswith(rig.ip4_a + " "))
            assert re.search(r"[1-9][\d.]* [kM]bit/s", row), row  # the sender's current rate
            assert "dropped" in text and "Top talkers by bytes" in text
            t.keys("v")
            t.shows(r"Top conversations by bytes", rf"{host_a}:4200[012]\s+{re.escape(rig.blackhole4)}:5301\s+UDP")
            t.keys("s")
            t.shows(r"Top conversations by packets")
            t.keys("v")
            t.shows(r"Top ports by packets", r"5301/udp")
            t.tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
            text = t.wait_for(fits(80), "the dashboard redrawn for 80x24")
            assert text.splitlines()[-1].startswith("q quit") and "5301/udp" in text
            t.keys("p")
            t.shows(r"PAUSED")
            t.keys("p", "q")
            text = t.shows(r"EXIT=\d+", r"icanon", timeout=30)
            assert "EXIT=0" in text and "-icanon" not in text
            report = t.history()
            assert "Live capture summary" in report and "kernel: dropped" in report and "q quit" not in report
            assert re.search(rf"{re.escape(rig.ip4_a)}\s+│\s+[1-9]", report)
        finally:
            if sender is not None and sender.poll() is None:
                sender.kill()
                sender.wait(timeout=10)


def test_live_without_a_terminal_prints_summary_lines(veth_rig: netns.VethRig) -> None:
    rig = veth_rig
    argv = rig.exec_argv("b", [sys.executable, "-m", "pktscope", "live", rig.if_b, "udp", "--duration", "3.5"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        time.sleep(1.0)
        rig.python("a", _UDP_FOR, rig.blackhole4, "5302", "42100", "1.5", timeout=20)
        out, err = proc.communicate(timeout=STEP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "\x1b" not in out
    lines = out.splitlines()
    summaries = [ln for ln in lines if re.match(r"\s*\d+(\.\d)?s  [\d,]+ pkts ", ln)]
    assert len(summaries) >= 2, out
    assert any(re.search(rf"top {re.escape(rig.ip4_a)} ", ln) for ln in summaries), summaries
    assert "Live capture summary" in out  # then the final tables, as before
