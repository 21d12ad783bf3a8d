"""The bpf(2) system call from Python (ctypes): maps, program loading, pinning, test runs.

No libbpf and no bcc: each command fills a `union bpf_attr` laid out as in include/uapi/linux/bpf.h
(Linux 6.18) and calls syscall(__NR_bpf, cmd, &attr, size). The attribute buffer is zeroed up to its
full size, because the kernel rejects an attr whose bytes beyond the fields it knows are not zero
(bpf_check_uarg_tail_zero), so fields we never set keep their "absent" meaning.

Errors become `BpfError` (with errno); a program the verifier refuses becomes `VerifierError`, which
carries the verifier's log.

Sources of the constants below:
  bpf.h     include/uapi/linux/bpf.h: enum bpf_cmd, enum bpf_map_type, enum bpf_prog_type, map flags,
            union bpf_attr field offsets (x86_64 and arm64 lay them out alike: u64 fields are aligned)
  unistd    arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h (arm64)
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

# --- syscall number (unistd) --------------------------------------------------------------------
_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# --- enum bpf_cmd (bpf.h) -------------------------------------------------------------------------
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10

# --- enum bpf_map_type, enum bpf_prog_type (bpf.h) ------------------------------------------------
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_PROG_TYPE_SOCKET_FILTER = 1

# --- flags (bpf.h) --------------------------------------------------------------------------------
BPF_F_NO_PREALLOC = 1 << 0  # map_flags: required by LPM_TRIE
BPF_ANY = 0  # update: create or replace
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_OBJ_NAME_LEN = 16
ATTR_SIZE = 144  # bytes of union bpf_attr we pass: covers every field used here, the rest stays zero
LOG_SIZE = 1 << 20  # verifier log buffer; the kernel fails the load with ENOSPC when the log outgrows it
LOG_LEVEL_ERRORS = 1  # BPF_LOG_LEVEL1: the verifier's trace of the failing path

# union bpf_attr layouts, per command (byte offsets from bpf.h)
_MAP_CREATE = struct.Struct("=IIIIIII16s")  # map_type, key_size, value_size, max_entries, map_flags,
#                                            inner_map_fd, numa_node, map_name
_MAP_ELEM = struct.Struct("=IIQQQ")  # map_fd, pad, key, value | next_key, flags
_PROG_LOAD = struct.Struct("=IIQQIIQII16s")  # prog_type, insn_cnt, insns, license, log_level, log_size,
#                                               log_buf, kern_version, prog_flags, prog_name
_OBJ = struct.Struct("=QII")  # pathname, bpf_fd, file_flags
_TEST_RUN = struct.Struct("=IIIIQQIIIIQQII")  # prog_fd, retval, data_size_in, data_size_out, data_in,
#                                               data_out, repeat, duration, ctx_size_in, ctx_size_out,
#                                               ctx_in, ctx_out, flags, cpu
_PROG_LOAD_LOG_SIZE_OFF = 28  # log_size: the kernel writes back log_true_size at offset 140 (6.4+)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed; `errno` says why, the message names the command and the object."""


class VerifierError(BpfError):
    """The kernel's verifier refused a program; `log` is its log (the last lines say why)."""

    def __init__(self, err: int, message: str, log: str) -> None:
        super().__init__(err, message)
        self.log = log


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, f"bpf(2): unknown syscall number on {platform.machine()}")
    ret = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


def _attr(layout: struct.Struct, *values: object) -> ctypes.Array:
    buf = ctypes.create_string_buffer(ATTR_SIZE)
    layout.pack_into(buf, 0, *values)
    return buf


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _name(name: str) -> bytes:
    # Object names: up to 15 characters of [A-Za-z0-9_.] (bpf_obj_name_cpy), NUL-terminated.
    return name.encode()[: BPF_OBJ_NAME_LEN - 1]


def _fail(exc: BpfError, what: str) -> BpfError:
    return BpfError(exc.errno, f"{what}: {exc.strerror}")


# --- maps -----------------------------------------------------------------------------------------


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "") -> int:
    """Create a map; returns its file descriptor (the caller closes it)."""
    attr = _attr(_MAP_CREATE, map_type, key_size, value_size, max_entries, flags, 0, 0, _name(name))
    try:
        return _bpf(BPF_MAP_CREATE, attr)
    except BpfError as exc:
        raise _fail(exc, f"BPF_MAP_CREATE {name or map_type}") from None


def _elem(cmd: int, fd: int, key: bytes | None, value: ctypes.Array | None, flags: int = 0) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    _bpf(cmd, _attr(_MAP_ELEM, fd, 0, _addr(kbuf), _addr(value), flags))


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    """Set `key` to `value` (bytes of exactly the map's key and value sizes)."""
    vbuf = ctypes.create_string_buffer(value, len(value))
    try:
        _elem(BPF_MAP_UPDATE_ELEM, fd, key, vbuf, flags)
    except BpfError as exc:
        raise _fail(exc, "BPF_MAP_UPDATE_ELEM") from None


def map_delete(fd: int, key: bytes) -> bool:
    """Delete `key`; False when it was not there."""
    try:
        _elem(BPF_MAP_DELETE_ELEM, fd, key, None)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise _fail(exc, "BPF_MAP_DELETE_ELEM") from None
    return True


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value of `key` (`value_size` bytes: for per-CPU maps, 8-byte-rounded size × possible CPUs)."""
    vbuf = ctypes.create_string_buffer(value_size)
    try:
        _elem(BPF_MAP_LOOKUP_ELEM, fd, key, vbuf)
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise _fail(exc, "BPF_MAP_LOOKUP_ELEM") from None
    return vbuf.raw


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a map, in the map's order (BPF_MAP_GET_NEXT_KEY from no key to ENOENT)."""
    keys: list[bytes] = []
    key: bytes | None = None
    while True:
        nbuf = ctypes.create_string_buffer(key_size)
        try:
            _elem(BPF_MAP_GET_NEXT_KEY, fd, key, nbuf)
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return keys
            raise _fail(exc, "BPF_MAP_GET_NEXT_KEY") from None
        key = nbuf.raw
        keys.append(key)


def possible_cpus() -> int:
    """Number of possible CPUs: the per-CPU slots of a PERCPU map value (kernel's num_possible_cpus())."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


# --- programs -------------------------------------------------------------------------------------


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "", log: bool = True) -> int:
    """Load a program (raw struct bpf_insn bytes); returns its fd, or raises VerifierError with the log."""
    if not insns or len(insns) % 8:
        raise ValueError("instructions must be a non-empty multiple of 8 bytes")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    logbuf = ctypes.create_string_buffer(LOG_SIZE) if log else None
    attr = _attr(_PROG_LOAD, prog_type, len(insns) // 8, _addr(code), _addr(lic),
                 LOG_LEVEL_ERRORS if log else 0, LOG_SIZE if log else 0, _addr(logbuf), 0, 0, _name(name))
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except BpfError as exc:
        text = logbuf.value.decode(errors="replace") if logbuf is not None else ""
        if exc.errno in (errno.EACCES, errno.EINVAL) and text:
            # The log ends with statistics ("processed N insns ..."); the line before them says why.
            lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("processed ")]
            reason = lines[-1] if lines else exc.strerror
            raise VerifierError(exc.errno, f"the kernel's verifier rejected the program: {reason}", text) \
                from None
        raise _fail(exc, f"BPF_PROG_LOAD {name}") from None


def prog_test_run(prog_fd: int, data: bytes, ctx: bytes | None = None) -> int:
    """Run a loaded program once on `data` (BPF_PROG_TEST_RUN); returns its return value."""
    dbuf = ctypes.create_string_buffer(data, len(data))
    cbuf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    attr = _attr(_TEST_RUN, prog_fd, 0, len(data), 0, _addr(dbuf), 0, 1, 0,
                 len(ctx) if ctx else 0, 0, _addr(cbuf), 0, 0, 0)
    try:
        _bpf(BPF_PROG_TEST_RUN, attr)
    except BpfError as exc:
        raise _fail(exc, "BPF_PROG_TEST_RUN") from None
    return _TEST_RUN.unpack_from(attr, 0)[1]


# --- pinning --------------------------------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program at `path` on a bpf file system (it then outlives its fds)."""
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    try:
        _bpf(BPF_OBJ_PIN, _attr(_OBJ, _addr(pbuf), fd, 0))
    except BpfError as exc:
        raise _fail(exc, f"BPF_OBJ_PIN {path}") from None


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new fd."""
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    try:
        return _bpf(BPF_OBJ_GET, _attr(_OBJ, _addr(pbuf), 0, 0))
    except BpfError as exc:
        raise _fail(exc, f"BPF_OBJ_GET {path}") from None


@dataclass(frozen=True)
class MapSpec:
    """What a map is made of, declared once (bpf.h `BPF_MAP_CREATE` fields)."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0

    def create(self) -> int:
        return map_create(self.map_type, self.key_size, self.value_size, self.max_entries, self.flags,
                          self.name)
