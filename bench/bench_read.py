"""The offline benchmark: pktscope read against tshark, tcpdump and a plain dpkt loop on one capture.

Generates (or reuses, cached in bench/out/) a synthetic capture, runs every tool as a child process
K times, and prints one table: median wall seconds, frames per second, the ratio of each tool's time
to pktscope's, CPU seconds (user + system) and peak RSS. A tool that fails or is missing gets its
error in the table; the others still run.

pktscope runs as `pip install .` installs it for a user (bench/out/pktscope-venv, refreshed from this
tree each run), not from the developer's editable .venv, whose import hook costs ~11 ms per start.

    python3 bench/bench_read.py [--frames N] [--repeat K] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
PY = sys.executable
GNU_TIME = "/usr/bin/time"
# The Python tools run as installed packages do: with their bytecode cached. Some shells export
# PYTHONDONTWRITEBYTECODE, which would make every run compile pktscope's modules again (~40 ms).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass(frozen=True)
class Tool:
    """One command to time; {file} in argv is replaced by the capture's path."""

    name: str
    argv: tuple[str, ...]
    needs: str  # executable or Python module that must exist, else the tool is skipped


@dataclass
class Result:
    """What the runs of one tool measured."""

    tool: Tool
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peak_kib: int = 0
    error: str = ""
    skipped: str = ""


def tools(pktscope_python: str = PY) -> list[Tool]:
    """The contenders, pktscope first; every one reads the same file and writes nothing that is kept."""
    return [
        Tool("pktscope read --json", (pktscope_python, "-m", "pktscope", "read", "{file}", "--json"), "pktscope"),
        Tool("tshark -z conv (ip,ipv6,tcp,udp)",
             ("tshark", "-n", "-q", "-r", "{file}", "-z", "conv,ip", "-z", "conv,ipv6", "-z", "conv,tcp",
              "-z", "conv,udp"), "tshark"),
        Tool("tcpdump -nn -r (print)", ("tcpdump", "-nn", "-r", "{file}"), "tcpdump"),
        Tool("tcpdump -r -w /dev/null", ("tcpdump", "-r", "{file}", "-w", "/dev/null"), "tcpdump"),
        Tool("dpkt loop (5-tuple dict)", (PY, str(HERE / "dpkt_loop.py"), "{file}"), "dpkt"),
        Tool("nfstream (n_dissections=0, no stats)", (nfstream_python(), str(HERE / "nfstream_flows.py"), "{file}"),
             "nfstream"),
    ]


def nfstream_python() -> str:
    """The interpreter for the nfstream row: this one if it has nfstream, else bench/out/peers's.

    nfstream brings its own numpy and pandas, so bench/setup_peers.sh gives it a venv of its own.
    """
    if importlib.util.find_spec("nfstream") is not None:
        return PY
    return str(OUT / "peers" / "bin" / "python")


def user_install(console: Console) -> str:
    """The interpreter of bench/out/pktscope-venv, with this tree installed as `pip install .` does;
    this interpreter (the editable .venv) when that install fails."""
    venv = OUT / "pktscope-venv"
    python = venv / "bin" / "python"
    t = time.perf_counter()
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True, capture_output=True)
        else:  # the dependencies are there: refresh pktscope's own files only
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(REPO)],
                           check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        console.print(f"pktscope: user install failed ({tail[0]}); timing the editable .venv instead")
        return PY
    console.print(f"pktscope installed from this tree into {venv.relative_to(REPO)} "
                  f"in {time.perf_counter() - t:.1f} s", style="dim")
    return str(python)


def available(tool: Tool) -> bool:
    needs = tool.needs
    if shutil.which(needs):
        return True
    if tool.argv[0] != PY:  # a tool's own interpreter (nfstream's venv, pktscope's user install)
        return Path(tool.argv[0]).exists()
    try:
        return importlib.util.find_spec(needs) is not None
    except (ImportError, ValueError):
        return False


def run_once(argv: list[str]) -> tuple[float, float, int, int, str]:
    """Run argv with stdout to /dev/null; return wall seconds, CPU seconds (user + system, every
    thread and child of it), peak RSS KiB, exit code, stderr tail.

    The peak RSS comes from GNU time when installed. Our own os.wait4 would overstate it: Linux keeps
    the high-water RSS of the image a process had before exec (here, a fork of this Python process),
    so every child would report at least this parent's size. GNU time forks from a tiny process.
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if Path(GNU_TIME).exists() else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                cwd=OUT, env=CHILD_ENV)  # not the repo root: its folders would shadow modules
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
        err.seek(0)
        lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
        # GNU time writes "Command exited with non-zero status N" before the number when it fails
        reported = rss.read().split()
        kib = int(reported[-1]) if reported and reported[-1].isdigit() else usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime  # wait4 counts the children it waited for (GNU time's child)
    return wall, cpu, kib, proc.returncode, lines[-1] if lines else ""


def bench(tool: Tool, capture: Path, repeat: int) -> Result:
    res = Result(tool)
    if not available(tool):
        res.skipped = f"{tool.needs} not installed (bash bench/setup_peers.sh)"
        return res
    argv = [a.replace("{file}", str(capture)) for a in tool.argv]
    run_once(argv)  # untimed warm-up: the file in the page cache, bytecode compiled, for every tool alike
    for _ in range(repeat):
        wall, cpu, kib, code, tail = run_once(argv)
        if code != 0:
            res.error = f"exit {code}: {tail[:80]}"
            return res
        res.walls.append(wall)
        res.cpus.append(cpu)
        res.peak_kib = max(res.peak_kib, kib)
    return res


def ensure_capture(frames: int, regenerate: bool) -> Path:
    """The cached synthetic capture of this many frames, generated on first use.

    Generated in a child process so this one stays small while it launches the tools.
    """
    OUT.mkdir(exist_ok=True)
    path = OUT / f"synthetic-{frames}.pcap"
    if regenerate or not path.exists():
        t = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        subprocess.run([PY, str(HERE / "gen_capture.py"), str(tmp), "--frames", str(frames)], check=True)
        tmp.replace(path)  # a run killed half-way leaves no truncated file to be reused
        print(f"generated {path.relative_to(REPO)} ({path.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t:.1f} s")
    return path


def render(results: list[Result], frames: int, repeat: int, capture: Path) -> Table:
    base = next((r for r in results if r.tool.name.startswith("pktscope") and r.walls), None)
    base_wall = statistics.median(base.walls) if base else None
    table = Table(title=f"{frames:,} frames, {capture.stat().st_size / 2**20:.0f} MiB "
                        f"({capture.relative_to(REPO)}); median of {repeat} runs")
    table.add_column("tool", no_wrap=True)
    for col in ("wall s", "best s", "frames/s", "× pktscope", "CPU s", "peak MiB"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for r in results:
        if r.skipped or r.error:
            table.add_row(r.tool.name, "", "", "", "", "", "", r.skipped or r.error)
            continue
        wall = statistics.median(r.walls)
        ratio = f"{wall / base_wall:.2f}" if base_wall else "—"
        table.add_row(r.tool.name, f"{wall:.2f}", f"{min(r.walls):.2f}", f"{frames / wall:,.0f}", ratio,
                      f"{statistics.median(r.cpus):.2f}", f"{r.peak_kib / 1024:.0f}", "")
    return table


def machine() -> str:
    """CPU model, cores, kernel and Python: the line the README quotes with each table."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames in the capture (default 1M)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the median is reported")
    ap.add_argument("--only", nargs="*", default=None, help="run only tools whose name starts with these")
    ap.add_argument("--regenerate", action="store_true", help="rebuild the cached capture")
    args = ap.parse_args(argv)

    capture = ensure_capture(args.frames, args.regenerate)
    console = Console(width=None if sys.stdout.isatty() else 130)
    load = os.getloadavg()
    console.print(f"machine: {machine()}")
    console.print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    chosen = [t for t in tools() if not args.only or any(t.name.startswith(o) for o in args.only)]
    if chosen and chosen[0].name.startswith("pktscope"):
        chosen[0] = tools(user_install(console))[0]
    results = []
    for tool in chosen:
        console.print(f"running {tool.name} …", style="dim")
        results.append(bench(tool, capture, args.repeat))
    console.print(render(results, args.frames, args.repeat, capture))
    for line in targets(results, args.frames):
        console.print(line)
    return 0


# issue 6's targets for `pktscope read --json`: (tool name prefix, how many times pktscope's wall it must take)
TARGETS = (("nfstream", 8.0), ("tshark", 30.0), ("tcpdump -nn", 1.0))


def targets(results: list[Result], frames: int) -> list[str]:
    """One line per target of issue 6, with the measured figure and whether it is met."""
    walls = {r.tool.name: statistics.median(r.walls) for r in results if r.walls}
    base = next((w for name, w in walls.items() if name.startswith("pktscope")), None)
    if base is None:
        return []
    rate = frames / base
    lines = [f"target ≥ 2,000,000 frames/s: {rate:,.0f} — {'met' if rate >= 2e6 else 'not met'}"]
    for prefix, want in TARGETS:
        wall = next((w for name, w in walls.items() if name.startswith(prefix)), None)
        if wall is None:
            lines.append(f"target {prefix} ≥ {want:g}× pktscope's wall: not measured")
            continue
        ratio = wall / base
        verdict = "met" if (ratio > want if want == 1.0 else ratio >= want) else "not met"
        lines.append(f"target {prefix} ≥ {want:g}× pktscope's wall: {ratio:.2f}× — {verdict}")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
