"""Where facts come from: a live host under a root directory, or a recorded fixture.

Both answer the same questions (the Source protocol), and every answer is a value or
an errno name; nothing here raises for a missing file or a faulting register:

    read_text(path)            -> str | None       (path relative to the root)
    read_bytes(path)           -> bytes | None     (a binary file: firmware tables)
    list_dir(path, pattern)    -> list[str] | None (entries matching pattern)
    read_msr(cpu, index)       -> MsrReading       (value: int)
    read_msrs(cpu, indexes)    -> [MsrReading]     (read_msr() of each, in turn)
    read_cpuid(cpu, leaf, sub) -> CpuidReading     (value: (eax, ebx, ecx, edx))

A register index, leaf or subleaf outside 32 bits is the caller's bug: ValueError.
docs/faults.md lists each failure, where it is reported and what it does to the verdict.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import struct
from collections.abc import Sequence
from typing import NamedTuple, Protocol, Union

from vmxprobe.files import read_capped
from vmxprobe.host import errnos
from vmxprobe.printable import printable

# Errno names that are not errnos: a read that returned fewer bytes than asked, a
# register that a fixture does not hold (replay never makes a value up), and a path
# where sysfs or procfs has a regular file but the tree holds a FIFO, socket or device.
SHORT = "SHORT"
UNRECORDED = "UNRECORDED"
NOTREG = "NOTREG"

# The largest sysfs/procfs file read whole. /proc/cpuinfo of an 8192-CPU host with
# "vmx flags" and "bugs" lines is about 25 MiB; anything past the cap is not one of the
# files a scan reads (a --root tree linking /dev/zero or a huge file there) and is
# reported as EFBIG rather than read until memory runs out.
MAX_TEXT_BYTES = 64 * 1024 * 1024

# include/uapi/linux/major.h: the character devices of arch/x86/kernel/msr.c and
# cpuid.c. Any other character or block device at dev/cpu/N/{msr,cpuid} (a container
# masking the path with /dev/null, a tree linking /dev/zero or a disk) would answer
# reads with bytes that are not registers: it is refused unread (ENODEV).
DEVICE_MAJOR = {"msr": 202, "cpuid": 203}

# What each failure means for an MSR or CPUID device (arch/x86/kernel/msr.c, cpuid.c).
MEANING = {
    "ENOENT": "no device: the msr/cpuid driver is not loaded (modprobe msr; CONFIG_X86_MSR)",
    "EPERM": "not permitted: reading MSRs needs CAP_SYS_RAWIO (run as root)",
    "EACCES": "permission denied on the device file (run as root)",
    "ENXIO": "CPU is offline or does not exist",
    "EIO": "the register faulted (#GP): not implemented, or not exposed by a hypervisor",
    "EINVAL": "the driver rejected the read size or offset",
    "ENOMEM": "the kernel could not allocate memory for the read: run the scan again",
    "ENODEV": "not the msr/cpuid driver's device (another device stands at this path): not read",
    "ESPIPE": "a FIFO or pipe stands where the device should be: not read",
    "EISDIR": "a directory stands where the device should be",
    "EFBIG": f"larger than the {MAX_TEXT_BYTES >> 20} MiB a sysfs or procfs file can be: not read",
    SHORT: "short read from the device",
    UNRECORDED: "not recorded in the fixture",
    NOTREG: "not a regular file (a FIFO, socket or device where sysfs/procfs has a file): not read",
}

# Compiled once: a scan converts some 20 registers per CPU, 160,000 on a host of 8192.
_U64 = struct.Struct("<Q").unpack
_REGS = struct.Struct("<4I").unpack

# Failures that say nothing about the CPU, only about our access to it.
ACCESS_ERRORS = frozenset({"ENOENT", "EPERM", "EACCES", UNRECORDED})


Regs = tuple[int, int, int, int]  # eax, ebx, ecx, edx


class MsrReading(NamedTuple):
    """One MSR read on one CPU: the value, or the errno name of the failure."""

    value: int | None = None
    errno: str | None = None

    @property
    def ok(self) -> bool:
        return self.errno is None


class CpuidReading(NamedTuple):
    """One CPUID leaf read on one CPU: (eax, ebx, ecx, edx), or the errno name."""

    value: Regs | None = None
    errno: str | None = None

    @property
    def ok(self) -> bool:
        return self.errno is None


Reading = Union[MsrReading, CpuidReading]

# Readings built by the C tuple constructor, without the Python-level __new__ of a
# NamedTuple: for the 160,000 readings of a scan of 8192 CPUs.
_msr_reading = functools.partial(tuple.__new__, MsrReading)
_cpuid_reading = functools.partial(tuple.__new__, CpuidReading)


def errno_name(code: int) -> str:
    return errnos.errno_name(code)


def _pread_failure(e: OSError) -> str:
    if e.errno == errno.ENODATA:
        # `vmxprobe fixture mount` answers ENODATA for a register its fixture does not
        # hold; the msr and cpuid drivers never do.
        return UNRECORDED
    return errno_name(e.errno or 0)


class Source(Protocol):
    """What every host answers; see the module's docstring."""

    kind: str
    name: str

    @property
    def file_errors(self) -> dict[str, str]: ...

    def read_text(self, path: str) -> str | None: ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def list_dir(self, path: str, pattern: re.Pattern[str]) -> list[str] | None: ...

    def read_msr(self, cpu: int, index: int) -> MsrReading: ...

    def read_msrs(self, cpu: int, indexes: Sequence[int]) -> list[MsrReading]: ...

    def read_cpuid(self, cpu: int, leaf: int, subleaf: int = 0) -> CpuidReading: ...

    def close(self) -> None: ...


CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"
CPUINFO = "proc/cpuinfo"
OSRELEASE = "proc/sys/kernel/osrelease"


class _Refused(Exception):
    """A file not read on purpose; name is what file_errors records."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class LiveHost:
    """Reads a running Linux host, or a tree laid out like one, under `root`.

    MSR and CPUID devices are opened O_RDONLY, always: the tool never writes a
    register. One device file is kept open at a time (the CPU being probed), so a
    host of 8192 CPUs needs two descriptors, not 16384.
    """

    kind = "live"
    # Its CPUs may be read by forked workers (host.workers), each with a copy of this
    # object and descriptors of its own.
    parallel = True

    def __init__(self, root: str = "/"):
        self.root = root
        # os.path.join(root, rel) for the relative paths used here, without a call to
        # it for each of the two devices and the sysfs directory of every CPU.
        self._prefix = os.path.join(root, "")
        # The root as reports and recordings name it: a path that is not UTF-8 (its
        # bytes are surrogates in Python) or holds control characters is escaped, so
        # that a report or fixture of it is valid Unicode. Files are opened by `root`.
        self.name = printable(os.path.abspath(root))
        self.file_errors: dict[str, str] = {}
        self._dev: dict[str, tuple[int, int]] = {}  # device kind -> (cpu, fd)

    def _path(self, rel: str) -> str:
        return self._prefix + rel if not rel.startswith("/") else os.path.join(self.root, rel)

    def read_text(self, path: str) -> str | None:
        """The file's text; None when it is absent (ENOENT, ENOTDIR: not an error) or
        unreadable, with the errno name kept in file_errors."""
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, with read_text()'s rules for absent and unreadable files."""
        try:
            return self._read_file(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                return None
            self.file_errors[path] = errno_name(e.errno or 0)
            return None
        except _Refused as e:
            self.file_errors[path] = e.name
            return None

    def _read_file(self, path: str) -> bytes:
        # Non-blocking, so a FIFO in a --root tree cannot hang the scan; the type is
        # asked of the opened descriptor, so nothing can be swapped in before the read.
        fd = os.open(self._path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(mode):
                raise _Refused(NOTREG)
            data = read_capped(fd, MAX_TEXT_BYTES)
        finally:
            os.close(fd)
        if data is None:
            raise _Refused("EFBIG")
        return data

    def list_dir(self, path: str, pattern: re.Pattern[str]) -> list[str] | None:
        try:
            names = os.listdir(self._path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            self.file_errors[path] = errno_name(e.errno or 0)
            return None
        return sorted(n for n in names if pattern.fullmatch(n))

    def _pread(self, kind: str, cpu: int, size: int, offset: int) -> bytes | str:
        """Exactly `size` bytes, or the errno name of the failure. The bytes are unpacked
        by the caller into the one reading a register gets (a scan makes some 160,000
        reads on a host of 8192 CPUs)."""
        held = self._dev.get(kind)
        if held is None or held[0] != cpu:
            if held is not None:
                os.close(held[1])
                del self._dev[kind]
            fd, failure = self._open_device(kind, cpu)
            if fd is None:
                return failure or "EIO"
            held = self._dev[kind] = (cpu, fd)
        try:
            data = os.pread(held[1], size, offset)
        except OSError as e:
            return _pread_failure(e)
        if len(data) != size:
            return SHORT
        return data

    def _open_device(self, kind: str, cpu: int) -> tuple[int | None, str | None]:
        """(fd, None), or (None, errno name). Read-only, always: O_RDONLY is the only
        access mode this module ever passes for a device (tests/test_nowrite.py)."""
        # O_NONBLOCK: a FIFO at the device path answers at once instead of hanging;
        # the drivers ignore the flag. O_NOCTTY: a tty there never becomes ours.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(self._path(f"dev/cpu/{cpu}/{kind}"), flags)
        except OSError as e:
            name = errno_name(e.errno or 0)
            if name == "ENOENT" and self._offline_now(cpu):
                # The msr and cpuid drivers remove a CPU's device node when it goes
                # offline (their cpuhp teardown callbacks), so a CPU listed online that
                # has since gone gives ENOENT. Said as the driver says it for an offline
                # CPU, ENXIO: "driver not loaded" would be the wrong cause and fix.
                name = "ENXIO"
            return None, name
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            return None, errno_name(e.errno or 0)
        if stat.S_ISBLK(st.st_mode) or (
            stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) != DEVICE_MAJOR[kind]
        ):
            os.close(fd)
            return None, "ENODEV"
        return fd, None

    def _offline_now(self, cpu: int) -> bool:
        """Does sysfs say, now, that this CPU is offline? (cpuN/online reads "0"; CPU 0
        and other CPUs that cannot be offlined have no such file.)"""
        try:
            fd = os.open(
                self._path(f"{CPU_DIR}/cpu{cpu}/online"),
                os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY,
            )
        except OSError:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 16).strip() == b"0"
        except OSError:
            return False
        finally:
            os.close(fd)

    def read_msr(self, cpu: int, index: int) -> MsrReading:
        if not 0 <= index <= 0xFFFFFFFF:
            raise ValueError(f"MSR index {index:#x} is not a 32-bit value")
        data = self._pread("msr", cpu, 8, index)
        if isinstance(data, str):
            return MsrReading(errno=data)
        return _msr_reading((_U64(data)[0], None))

    def read_msrs(self, cpu: int, indexes: Sequence[int]) -> list[MsrReading]:
        """read_msr() of each index in turn, through the CPU's one open device: the same
        readings and failures, without a method call per register. While the device
        cannot be opened, each index tries again, as read_msr() does."""
        for index in indexes:
            if not 0 <= index <= 0xFFFFFFFF:
                raise ValueError(f"MSR index {index:#x} is not a 32-bit value")
        out: list[MsrReading] = []
        add, pread, unpack, reading = out.append, os.pread, _U64, _msr_reading
        held = self._dev.get("msr")
        fd = held[1] if held is not None and held[0] == cpu else None
        for index in indexes:
            if fd is None:
                opened = self._pread("msr", cpu, 8, index)
                add(
                    reading((unpack(opened)[0], None))
                    if isinstance(opened, bytes)
                    else reading((None, opened))
                )
                held = self._dev.get("msr")
                fd = held[1] if held is not None and held[0] == cpu else None
                continue
            try:
                data = pread(fd, 8, index)
            except OSError as e:
                add(reading((None, _pread_failure(e))))
                continue
            add(reading((unpack(data)[0], None)) if len(data) == 8 else reading((None, SHORT)))
        return out

    def read_cpuid(self, cpu: int, leaf: int, subleaf: int = 0) -> CpuidReading:
        # arch/x86/kernel/cpuid.c: the file offset carries the leaf in its low 32
        # bits and the subleaf in its high 32 bits; a read returns eax, ebx, ecx, edx.
        if not (0 <= leaf <= 0xFFFFFFFF and 0 <= subleaf <= 0xFFFFFFFF):
            raise ValueError(f"CPUID leaf {leaf:#x}, subleaf {subleaf:#x}: not 32-bit values")
        if subleaf >= 1 << 31:
            # The offset would be >= 2**63: a negative loff_t, which pread(2) refuses.
            return CpuidReading(errno="EINVAL")
        data = self._pread("cpuid", cpu, 16, leaf | (subleaf << 32))
        if isinstance(data, str):
            return CpuidReading(errno=data)
        return _cpuid_reading((_REGS(data), None))

    def close(self) -> None:
        for _, fd in self._dev.values():
            os.close(fd)
        self._dev.clear()


class RecordingHost:
    """Wraps a source and keeps every answer, so the scan can be saved as a fixture."""

    def __init__(self, inner: Source):
        self.inner = inner
        self.kind = inner.kind
        self.name = inner.name
        self.files: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.dirs: dict[str, list[str]] = {}
        self.msr: dict[int, dict[int, MsrReading]] = {}
        self.cpuid: dict[tuple[int, int], dict[int, CpuidReading]] = {}

    @property
    def file_errors(self) -> dict[str, str]:
        return self.inner.file_errors

    def read_text(self, path: str) -> str | None:
        text = self.inner.read_text(path)
        if text is not None:
            self.files[path] = text
        return text

    def read_bytes(self, path: str) -> bytes | None:
        data = self.inner.read_bytes(path)
        if data is not None:
            self.blobs[path] = data
        return data

    def list_dir(self, path: str, pattern: re.Pattern[str]) -> list[str] | None:
        names = self.inner.list_dir(path, pattern)
        if names is not None:
            self.dirs.setdefault(path, [])
            self.dirs[path] = sorted(set(self.dirs[path]) | set(names))
        return names

    # A register a replayed fixture does not hold (UNRECORDED) is absent, and stays
    # absent in what is recorded from the replay: a fixture never holds UNRECORDED.

    def read_msr(self, cpu: int, index: int) -> MsrReading:
        r = self.inner.read_msr(cpu, index)
        if r.errno != UNRECORDED:
            self.msr.setdefault(index, {})[cpu] = r
        return r

    def read_msrs(self, cpu: int, indexes: Sequence[int]) -> list[MsrReading]:
        got = self.inner.read_msrs(cpu, indexes)
        for index, r in zip(indexes, got):
            if r.errno != UNRECORDED:
                self.msr.setdefault(index, {})[cpu] = r
        return got

    def read_cpuid(self, cpu: int, leaf: int, subleaf: int = 0) -> CpuidReading:
        r = self.inner.read_cpuid(cpu, leaf, subleaf)
        if r.errno != UNRECORDED:
            self.cpuid.setdefault((leaf, subleaf), {})[cpu] = r
        return r

    def close(self) -> None:
        self.inner.close()


class Recorded(Protocol):
    """What FixtureHost replays: a loaded fixture (vmxprobe.host.fixture.Fixture)."""

    name: str
    files: dict[str, str]
    blobs: dict[str, bytes]
    dirs: dict[str, list[str]]
    file_errors: dict[str, str]
    msr: dict[int, dict[int, MsrReading]]
    cpuid: dict[tuple[int, int], dict[int, CpuidReading]]


# Recorded failures that the drivers give at open(), not at read(): no device node
# (driver not loaded), no CAP_SYS_RAWIO (msr_open), permission bits, and a CPU that
# is offline (msr_open/cpuid_open: !cpu_online -> ENXIO). EIO stays a read-time
# failure: it is what rdmsr_safe_on_cpu() gives for a register that faults.
OPEN_ERRORS = ("ENOENT", "ENXIO", "EPERM", "EACCES")


def open_error(readings: Sequence[Reading]) -> str | None:
    """The errno open() gives for a device whose every recorded read failed the same
    way at open time; None when the device opens and each read answers for itself."""
    names = {r.errno for r in readings}
    (name,) = names if len(names) == 1 else (None,)
    return name if readings and name in OPEN_ERRORS else None


class FixtureHost:
    """Replays a loaded fixture. Never touches /dev/cpu.

    A register the fixture does not hold answers UNRECORDED, except on a CPU whose
    device failed at open() for every register recorded (no msr driver, not root): the
    device fails the same way for any register, as `vmxprobe fixture mount` serves it."""

    kind = "fixture"

    def __init__(self, fixture: Recorded):
        self.fixture = fixture
        self.name = fixture.name
        self.file_errors = dict(fixture.file_errors)
        self._closed: dict[tuple[str, int], MsrReading | CpuidReading | None] = {}

    def _device_failure(self, kind: str, cpu: int) -> MsrReading | CpuidReading | None:
        key = (kind, cpu)
        if key not in self._closed:
            if kind == "msr":
                name = open_error([r[cpu] for r in self.fixture.msr.values() if cpu in r])
                self._closed[key] = None if name is None else MsrReading(errno=name)
            else:
                name = open_error([r[cpu] for r in self.fixture.cpuid.values() if cpu in r])
                self._closed[key] = None if name is None else CpuidReading(errno=name)
        return self._closed[key]

    def read_text(self, path: str) -> str | None:
        return self.fixture.files.get(path)

    def read_bytes(self, path: str) -> bytes | None:
        return self.fixture.blobs.get(path)

    def list_dir(self, path: str, pattern: re.Pattern[str]) -> list[str] | None:
        names = self.fixture.dirs.get(path)
        if names is None:
            return None
        return sorted(n for n in names if pattern.fullmatch(n))

    def read_msr(self, cpu: int, index: int) -> MsrReading:
        got = self.fixture.msr.get(index, {}).get(cpu)
        if got is not None:
            return got
        failed = self._device_failure("msr", cpu)
        return failed if isinstance(failed, MsrReading) else _UNRECORDED_MSR

    def read_msrs(self, cpu: int, indexes: Sequence[int]) -> list[MsrReading]:
        return [self.read_msr(cpu, index) for index in indexes]

    def read_cpuid(self, cpu: int, leaf: int, subleaf: int = 0) -> CpuidReading:
        got = self.fixture.cpuid.get((leaf, subleaf), {}).get(cpu)
        if got is not None:
            return got
        failed = self._device_failure("cpuid", cpu)
        return failed if isinstance(failed, CpuidReading) else _UNRECORDED_CPUID

    def close(self) -> None:
        pass


_UNRECORDED_MSR = MsrReading(errno=UNRECORDED)
_UNRECORDED_CPUID = CpuidReading(errno=UNRECORDED)
