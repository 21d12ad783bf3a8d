"""Pins of a running capture's eBPF filter under /sys/fs/bpf/pktscope/<run id>/, and their lifecycle.

While `pktscope live --ebpf/--block` runs, its maps (`counters`, `block4`, `block6`) and its program
(`prog`) are pinned in its run directory, so `pktscope block ...` and `bpftool map dump pinned ...`
in another terminal reach the same objects. The run id is `<pid>-<start time>` (field 22 of
/proc/<pid>/stat, in clock ticks since boot), so a directory whose process is gone, or whose pid now
belongs to another process, is recognisably stale: the next `pktscope live` removes it.

bpffs is mounted at /sys/fs/bpf when nothing is (as systemd does at boot). Each mount of bpffs is a
separate instance, and `ip netns exec` gives the command a private /sys: run `pktscope block` in the
same mount namespace as the capture (e.g. `nsenter --net=/run/netns/NAME` instead of `ip netns exec`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from dataclasses import dataclass, field

from pktscope.bpf import ebpf, syscall
from pktscope.bpf.classic import BpfInstruction
from pktscope.bpf.maps import FilterMapSet, Network

BPF_FS = "/sys/fs/bpf"
PIN_ROOT = os.path.join(BPF_FS, "pktscope")
PROG_PIN = "prog"
PROG_NAME = "pktscope_filter"

_libc = ctypes.CDLL(None, use_errno=True)


class PinError(Exception):
    """The run directory cannot be found or made; the message is one line for the user."""


def _bpffs_mounted(path: str = BPF_FS) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1:3] == [path, "bpf"] for line in f)
    except OSError:
        return False


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf unless one is mounted there already."""
    if _bpffs_mounted():
        return
    os.makedirs(BPF_FS, exist_ok=True)
    if _libc.mount(b"bpf", BPF_FS.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise PinError(f"cannot mount the BPF file system at {BPF_FS}: {os.strerror(err)}")


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime); fields 1-2 end at the last ')'


def run_id(pid: int | None = None) -> str:
    """This process's run id: pid and start time, unique across pid reuse."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid)}"


def run_alive(rid: str) -> bool:
    """Whether the process that made run `rid` still exists (same pid, same start time)."""
    pid, _, start = rid.partition("-")
    return pid.isdigit() and _start_time(int(pid)) == start


def list_runs() -> list[str]:
    """Run ids with a directory under the pin root, living or not."""
    try:
        return sorted(os.listdir(PIN_ROOT))
    except FileNotFoundError:
        return []


def remove_run(rid: str) -> None:
    """Unpin everything of run `rid` (unlinking a pin drops the kernel object once no fd holds it)."""
    shutil.rmtree(os.path.join(PIN_ROOT, rid), ignore_errors=True)
    try:  # the last run out leaves nothing behind, not even the empty pktscope directory
        os.rmdir(PIN_ROOT)
    except OSError:  # other runs still pinned (ENOTEMPTY), or already gone
        pass


def clean_stale() -> list[str]:
    """Remove the run directories of processes that are gone; returns their ids."""
    stale = [rid for rid in list_runs() if not run_alive(rid)]
    for rid in stale:
        remove_run(rid)
    return stale


def find_run(rid: str | None) -> str:
    """The directory of run `rid`, or of the only living run when `rid` is None."""
    if rid is not None:
        if rid not in list_runs() or not run_alive(rid):
            raise PinError(f"no running capture with run id {rid} under {PIN_ROOT}")
        return os.path.join(PIN_ROOT, rid)
    alive = [r for r in list_runs() if run_alive(r)]
    if not alive:
        raise PinError(f"no running capture with an eBPF filter (nothing pinned under {PIN_ROOT})")
    if len(alive) > 1:
        raise PinError(f"several captures are running ({', '.join(alive)}): choose one with --run ID")
    return os.path.join(PIN_ROOT, alive[0])


@dataclass
class PinnedFilter:
    """The loaded socket filter of one capture: program fd, maps, and the pins that expose them."""

    prog_fd: int
    maps: FilterMapSet
    rid: str
    directory: str
    stale_removed: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, program: tuple[BpfInstruction, ...] | list[BpfInstruction], snaplen: int,
             prefixes: list[Network]) -> PinnedFilter:
        """Create the maps, fill the blocklist, load the program and pin it all (stale pins go first).

        Raises syscall.BpfError (VerifierError when the verifier refuses), ebpf.TranslationError, PinError.
        """
        maps = FilterMapSet.create()
        prog_fd = -1
        try:
            for net in prefixes:
                maps.block(net)
            code = ebpf.build_program(program, snaplen, maps.fds())
            prog_fd = syscall.prog_load(syscall.BPF_PROG_TYPE_SOCKET_FILTER, code, name=PROG_NAME)
            ensure_bpffs()
            stale = clean_stale()
            rid = run_id()
            directory = os.path.join(PIN_ROOT, rid)
            try:
                os.makedirs(directory, mode=0o700)
            except FileExistsError:
                remove_run(rid)
                os.makedirs(directory, mode=0o700)
            except OSError as exc:
                raise PinError(f"cannot create {directory}: {exc.strerror}") from None
            pinned = cls(prog_fd, maps, rid, directory, stale)
            try:
                maps.pin(directory)
                syscall.obj_pin(prog_fd, os.path.join(directory, PROG_PIN))
            except syscall.BpfError:
                pinned.close()
                raise
            return pinned
        except BaseException:
            if prog_fd >= 0:
                os.close(prog_fd)
            maps.close()
            raise

    def counters(self) -> dict[str, dict[str, int]]:
        return self.maps.read_counters()

    def close(self) -> None:
        """Unpin and release the fds (the kernel frees program and maps once sockets let go too)."""
        remove_run(self.rid)
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        self.maps.close()


def open_run(rid: str | None) -> FilterMapSet:
    """The maps of a running capture (the only one when `rid` is None), for `pktscope block`."""
    directory = find_run(rid)
    try:
        return FilterMapSet.open_pinned(directory)
    except syscall.BpfError as exc:
        if exc.errno == errno.ENOENT:
            raise PinError(f"the capture's pins in {directory} are gone (it just ended?)") from None
        raise
