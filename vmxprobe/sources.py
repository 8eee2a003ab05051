"""Where facts come from: a live host under a root directory, or a recorded fixture.

Both answer the same four questions, and every answer is a value or an errno name;
nothing here raises for a missing file or a faulting register:

    read_text(path)            -> str | None       (path relative to the root)
    list_dir(path, pattern)    -> list[str] | None (entries matching pattern)
    read_msr(cpu, index)       -> Reading          (value: int)
    read_cpuid(cpu, leaf, sub) -> Reading          (value: (eax, ebx, ecx, edx))
"""

from __future__ import annotations

import errno
import os
import re
import struct
from typing import NamedTuple, Optional

# Errno names that are not errnos: a read that returned fewer bytes than asked, and a
# register that a fixture does not hold (replay never makes a value up).
SHORT = "SHORT"
UNRECORDED = "UNRECORDED"

# What each failure means for an MSR or CPUID device (arch/x86/kernel/msr.c, cpuid.c).
MEANING = {
    "ENOENT": "no device: the msr/cpuid driver is not loaded (modprobe msr; CONFIG_X86_MSR)",
    "EPERM": "not permitted: reading MSRs needs CAP_SYS_RAWIO (run as root)",
    "EACCES": "permission denied on the device file (run as root)",
    "ENXIO": "CPU is offline or does not exist",
    "EIO": "the register faulted (#GP): not implemented, or not exposed by a hypervisor",
    "EINVAL": "the driver rejected the read size or offset",
    SHORT: "short read from the device",
    UNRECORDED: "not recorded in the fixture",
}

# Failures that say nothing about the CPU, only about our access to it.
ACCESS_ERRORS = frozenset({"ENOENT", "EPERM", "EACCES", UNRECORDED})


class Reading(NamedTuple):
    value: object = None  # int for an MSR, a 4-tuple of ints for CPUID
    errno: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.errno is None


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"E{code}")


CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"
CPUINFO = "proc/cpuinfo"
OSRELEASE = "proc/sys/kernel/osrelease"


class LiveHost:
    """Reads a running Linux host, or a tree laid out like one, under `root`.

    MSR and CPUID devices are opened O_RDONLY, always: the tool never writes a
    register. One device file is kept open at a time (the CPU being probed), so a
    host of 8192 CPUs needs two descriptors, not 16384.
    """

    kind = "live"

    def __init__(self, root: str = "/"):
        self.root = root
        self.name = os.path.abspath(root)
        self.file_errors: dict[str, str] = {}
        self._dev: dict[str, tuple[int, int]] = {}  # device kind -> (cpu, fd)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def read_text(self, path: str) -> Optional[str]:
        try:
            with open(self._path(path), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                return None
            self.file_errors[path] = errno_name(e.errno or 0)
            return None

    def list_dir(self, path: str, pattern: re.Pattern) -> Optional[list[str]]:
        try:
            names = os.listdir(self._path(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            self.file_errors[path] = errno_name(e.errno or 0)
            return None
        return sorted(n for n in names if pattern.fullmatch(n))

    def _pread(self, kind: str, cpu: int, size: int, offset: int) -> Reading:
        held = self._dev.get(kind)
        if held is None or held[0] != cpu:
            if held is not None:
                os.close(held[1])
                del self._dev[kind]
            try:
                fd = os.open(self._path(f"dev/cpu/{cpu}/{kind}"), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                return Reading(errno=errno_name(e.errno or 0))
            self._dev[kind] = (cpu, fd)
        fd = self._dev[kind][1]
        try:
            data = os.pread(fd, size, offset)
        except OSError as e:
            return Reading(errno=errno_name(e.errno or 0))
        if len(data) != size:
            return Reading(errno=SHORT)
        return Reading(value=data)

    def read_msr(self, cpu: int, index: int) -> Reading:
        r = self._pread("msr", cpu, 8, index)
        return r if not r.ok else Reading(value=struct.unpack("<Q", r.value)[0])

    def read_cpuid(self, cpu: int, leaf: int, subleaf: int = 0) -> Reading:
        # arch/x86/kernel/cpuid.c: the file offset carries the leaf in its low 32
        # bits and the subleaf in its high 32 bits; a read returns eax, ebx, ecx, edx.
        r = self._pread("cpuid", cpu, 16, leaf | (subleaf << 32))
        return r if not r.ok else Reading(value=struct.unpack("<4I", r.value))

    def close(self) -> None:
        for _, fd in self._dev.values():
            os.close(fd)
        self._dev.clear()


class RecordingHost:
    """Wraps a source and keeps every answer, so the scan can be saved as a fixture."""

    def __init__(self, inner):
        self.inner = inner
        self.kind = inner.kind
        self.name = inner.name
        self.files: dict[str, str] = {}
        self.dirs: dict[str, list[str]] = {}
        self.msr: dict[int, dict[int, Reading]] = {}
        self.cpuid: dict[tuple[int, int], dict[int, Reading]] = {}

    @property
    def file_errors(self) -> dict[str, str]:
        return self.inner.file_errors

    def read_text(self, path):
        text = self.inner.read_text(path)
        if text is not None:
            self.files[path] = text
        return text

    def list_dir(self, path, pattern):
        names = self.inner.list_dir(path, pattern)
        if names is not None:
            self.dirs.setdefault(path, [])
            self.dirs[path] = sorted(set(self.dirs[path]) | set(names))
        return names

    def read_msr(self, cpu, index):
        r = self.inner.read_msr(cpu, index)
        self.msr.setdefault(index, {})[cpu] = r
        return r

    def read_cpuid(self, cpu, leaf, subleaf=0):
        r = self.inner.read_cpuid(cpu, leaf, subleaf)
        self.cpuid.setdefault((leaf, subleaf), {})[cpu] = r
        return r

    def close(self):
        self.inner.close()


class FixtureHost:
    """Replays a loaded fixture (vmxprobe.fixture.Fixture). Never touches /dev/cpu."""

    kind = "fixture"

    def __init__(self, fixture):
        self.fixture = fixture
        self.name = fixture.name
        self.file_errors = dict(fixture.file_errors)

    def read_text(self, path):
        return self.fixture.files.get(path)

    def list_dir(self, path, pattern):
        names = self.fixture.dirs.get(path)
        if names is None:
            return None
        return sorted(n for n in names if pattern.fullmatch(n))

    def read_msr(self, cpu, index):
        return self.fixture.msr.get(index, {}).get(cpu, Reading(errno=UNRECORDED))

    def read_cpuid(self, cpu, leaf, subleaf=0):
        return self.fixture.cpuid.get((leaf, subleaf), {}).get(cpu, Reading(errno=UNRECORDED))

    def close(self):
        pass
