"""`vmxprobe fixture mount`: serve a recorded host as a live root tree through FUSE.

A plain file cannot stand in for /dev/cpu/N/msr: the device answers pread(fd, 8, index)
with that one register or fails, and adjacent offsets are unrelated registers. This
filesystem answers every read itself, the way the kernel's drivers do
(arch/x86/kernel/msr.c, arch/x86/kernel/cpuid.c), so `vmxprobe scan --root MOUNT`,
rdmsr and any other reader replay the fixture through their live code paths.

A register the fixture does not hold answers ENODATA, which neither driver ever gives:
a replay makes up no value, and no fault the host never showed either (EIO would say
the CPU lacks the register). docs/replay-dev-cpu.md has the full table.

The tree is built once from the fixture; only the per-CPU read counters of the
--offline-after test hook change while it is mounted. The FUSE binding (mfusepy, a
ctypes binding that loads Debian's libfuse3) is imported only when a mount starts, so
the core keeps its small dependency set: `pip install 'vmxprobe[fuse]'`.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import struct
import subprocess
import time
from collections import Counter
from typing import Any, Callable, NoReturn

from vmxprobe.host.cpulist import CpulistError, parse_cpulist
from vmxprobe.host.fixture import Fixture
from vmxprobe.host.sources import CPU_DIR, NOTREG, SHORT, Reading, open_error

# For the i-th chunk of a read: the recorded reading, and how to pack its value.
ReadingAt = Callable[[int], "tuple[Reading | None, Callable[[Any], bytes]]"]

INSTALL_HINT = "pip install 'vmxprobe[fuse]' (and libfuse3: apt-get install fuse3)"


class MountError(Exception):
    """A mount that could not be made or served; the message is one line."""


_CPU_LINK = re.compile(rf"{CPU_DIR}/cpu\d+")
_NODE = re.compile(r"node\d+")


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _code(name: str) -> int:
    value = getattr(errno, name, None) if name.startswith("E") else None
    return value if isinstance(value, int) else errno.EIO


class DevCpuTree:
    """The recorded host as paths (relative, "" is the root), with the operations the
    mfusepy binding calls. Usable without the binding, which is how it is unit-tested."""

    use_ns = True  # mfusepy: timestamps are integer nanoseconds

    def __init__(self, fx: Fixture, offline_after: dict[int, int] | None = None):
        self.fx = fx
        self.kids: dict[str, set[str]] = {"": set()}  # directory -> entry names
        self.files: dict[str, bytes] = {}
        self.fifos: set[str] = set()  # recorded NOTREG: not a regular file on the host
        self.links: dict[str, str] = {}
        self.devices: dict[str, tuple[int, str]] = {}  # path -> (cpu, "msr" | "cpuid")
        self.open_errors: dict[str, int] = {}
        self.offline_after = dict(offline_after or {})
        self.reads: Counter[int] = Counter()  # register reads served, per CPU
        self.on_ready: Callable[[], None] | None = None
        self.served = False  # set once the kernel's FUSE_INIT reached us: mounted
        self.stamp = time.time_ns()
        self.uid, self.gid = os.getuid(), os.getgid()

        for path, text in fx.files.items():
            self._add(path)
            self.files[path] = text.encode("utf-8")
        for path, data in fx.blobs.items():
            self._add(path)
            self.files[path] = data
        for path, names in fx.dirs.items():
            self._add_dir(path)
            for name in names:
                child = f"{path}/{name}"
                if child in self.kids or child in self.files:
                    continue
                if _NODE.fullmatch(name) and _CPU_LINK.fullmatch(path):
                    self._add(child)
                    self.links[child] = f"../../node/{name}"  # as sysfs links cpuN/nodeM
                else:
                    self._add_dir(child)
        for path, name in fx.file_errors.items():
            if name == "ENOENT" or path in self.kids or path in self.files:
                if path in self.kids:
                    self.open_errors[path] = _code(name)  # opendir() fails
                continue
            self._add(path)
            if name == NOTREG:
                self.fifos.add(path)  # opened by the kernel itself, never reaches open()
            else:
                self.files[path] = b""
                self.open_errors[path] = _code(name)

        self._add_dir("dev/cpu")
        for cpu in self.cpus():
            for kind, table in (("msr", fx.msr), ("cpuid", fx.cpuid)):
                recorded = [results[cpu] for results in table.values() if cpu in results]
                failure = open_error(recorded)
                if failure == "ENOENT":
                    continue  # the driver was not loaded: no device node at all
                path = f"dev/cpu/{cpu}/{kind}"
                self._add(path)
                self.devices[path] = (cpu, kind)
                if failure:
                    self.open_errors[path] = _code(failure)

    def cpus(self) -> list[int]:
        """The fixture's online CPUs, and any CPU it recorded a register read for."""
        cpus = {
            cpu for table in (self.fx.msr, self.fx.cpuid) for results in table.values() for cpu in results
        }
        try:
            cpus.update(parse_cpulist(self.fx.files.get(f"{CPU_DIR}/online", "")))
        except CpulistError:
            pass
        return sorted(cpus)

    def _add_dir(self, path: str) -> None:
        if path not in self.kids:
            self._add(path)
            self.kids[path] = set()

    def _add(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self._add_dir(parent)
        self.kids[parent].add(name)

    # --- the devices -------------------------------------------------------------------

    def offline(self, cpu: int) -> bool:
        return cpu in self.offline_after and self.reads[cpu] >= self.offline_after[cpu]

    def _register(self, cpu: int, reading: Reading | None, pack: Callable[[Any], bytes]) -> bytes | int:
        """One register read: bytes, b"" for a recorded short read, or an errno."""
        if self.offline(cpu):
            # smp_call_function_single() on a CPU that went offline after open().
            return errno.ENXIO
        self.reads[cpu] += 1
        if reading is None:
            # Not recorded. Neither driver ever answers ENODATA, so a reader can tell
            # "the replay has no data" from a fault (EIO) that the host never showed.
            return errno.ENODATA
        if not reading.ok:
            return b"" if reading.errno == SHORT else _code(reading.errno or "EIO")
        return pack(reading.value)

    def _chunks(self, cpu: int, size: int, width: int, reading_at: ReadingAt) -> bytes:
        # msr_read()/cpuid_read(): a count that is not a whole number of chunks is
        # EINVAL; a failure after the first chunk returns the bytes read so far
        # ("return bytes ? bytes : err").
        if size % width:
            raise _err(errno.EINVAL)
        out = bytearray()
        for i in range(size // width):
            got = self._register(cpu, *reading_at(i))
            if isinstance(got, int):
                if out:
                    break
                raise _err(got)
            out += got
            if len(got) < width:
                break
        return bytes(out)

    def read_msr(self, cpu: int, size: int, offset: int) -> bytes:
        # msr_read(): "u32 reg = *ppos", and a larger read repeats the SAME register
        # count/8 times (the driver's header comment), it does not walk adjacent ones.
        reg = offset & 0xFFFFFFFF
        reading = self.fx.msr.get(reg, {}).get(cpu)
        return self._chunks(cpu, size, 8, lambda i: (reading, lambda v: struct.pack("<Q", v)))

    def read_cpuid(self, cpu: int, size: int, offset: int) -> bytes:
        # cpuid_read(): eax = pos, ecx = pos >> 32, and pos advances by one per 16-byte
        # chunk ("*ppos = ++pos"), so a 32-byte read returns leaf L then leaf L+1.
        def at(i: int) -> tuple[Reading | None, Callable[[Any], bytes]]:
            pos = (offset + i) & 0xFFFFFFFFFFFFFFFF
            key = (pos & 0xFFFFFFFF, pos >> 32)
            return self.fx.cpuid.get(key, {}).get(cpu), lambda v: struct.pack("<4I", *v)

        return self._chunks(cpu, size, 16, at)

    # --- filesystem operations (mfusepy calls these with "/"-rooted paths) --------------

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        rel = path.strip("/")
        if rel in self.kids:
            mode, size = stat.S_IFDIR | 0o555, 0
        elif rel in self.links:
            mode, size = stat.S_IFLNK | 0o777, len(self.links[rel])
        elif rel in self.devices:
            mode, size = stat.S_IFREG | 0o400, 0  # size 0, like the character device
        elif rel in self.files:
            mode, size = stat.S_IFREG | 0o444, len(self.files[rel])
        elif rel in self.fifos:
            mode, size = stat.S_IFIFO | 0o444, 0
        else:
            raise _err(errno.ENOENT)
        return {
            "st_mode": mode,
            "st_nlink": 2 if rel in self.kids else 1,
            "st_size": size,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_atime": self.stamp,
            "st_mtime": self.stamp,
            "st_ctime": self.stamp,
        }

    def readdir(self, path: str, fh: Any) -> list[str]:
        rel = path.strip("/")
        names = sorted(self.kids[rel])
        if rel == "dev/cpu":
            # devtmpfs lists the newest node first, and rdmsr/wrmsr -a walk their
            # unsorted scandir() result backwards: CPU 0 is then read first.
            names.sort(key=int, reverse=True)
        return [".", ".."] + names

    def opendir(self, path: str) -> int:
        rel = path.strip("/")
        if rel in self.open_errors:
            raise _err(self.open_errors[rel])
        return 0

    def readlink(self, path: str) -> str:
        return self.links[path.strip("/")]

    def access(self, path: str, amode: int) -> int:
        self.getattr(path)
        if amode & os.W_OK:
            raise _err(errno.EROFS)
        return 0

    def open(self, path: str, fi: Any) -> int:
        rel = path.strip("/")
        writing = (fi.flags & os.O_ACCMODE) != os.O_RDONLY
        if rel in self.devices:
            if writing:
                # msr_open() refuses a caller without CAP_SYS_RAWIO with EPERM; a
                # replay refuses every writer the same way: it never changes a register.
                raise _err(errno.EPERM)
            if rel in self.open_errors:
                raise _err(self.open_errors[rel])
            if self.offline(self.devices[rel][0]):
                raise _err(errno.ENXIO)  # msr_open()/cpuid_open(): !cpu_online(cpu)
            # Direct I/O: no page cache, so every pread reaches read() below with its own
            # offset and size, and the kernel does not clip reads at st_size 0.
            fi.direct_io = 1
            return 0
        if rel in self.open_errors:
            raise _err(self.open_errors[rel])
        if writing:
            raise _err(errno.EACCES)  # kernfs_fop_open(): no write op -> EACCES
        return 0

    def read(self, path: str, size: int, offset: int, fi: Any) -> bytes:
        rel = path.strip("/")
        if rel in self.devices:
            cpu, kind = self.devices[rel]
            return (self.read_msr if kind == "msr" else self.read_cpuid)(cpu, size, offset)
        return self.files[rel][offset : offset + size]

    def init(self, path: str) -> None:
        self.served = True
        if self.on_ready:
            self.on_ready()

    def _read_only(self, *args: Any) -> NoReturn:
        raise _err(errno.EROFS)

    chmod = chown = create = link = mkdir = mknod = rename = rmdir = _read_only
    setxattr = removexattr = symlink = truncate = unlink = utimens = write = _read_only


def serve(tree: DevCpuTree, mountpoint: str, allow_other: bool = False) -> None:
    """Mount and serve until unmounted, SIGINT or SIGTERM (libfuse's handlers end the
    loop and unmount); then return. RuntimeError if the mount could not be made."""
    import mfusepy

    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", tree.fx.name)
    # No auto_unmount: its fusermount3 watcher outlives this process. A server killed
    # with SIGKILL leaves a dead mount that `fusermount3 -u` removes.
    options: dict[str, Any] = {"fsname": f"vmxprobe:{name}", "subtype": "vmxprobe"}
    if allow_other:
        options["allow_other"] = True
    # One thread: reads are answered in order, and the test hook's counters need no lock.
    try:
        mfusepy.FUSE(tree, mountpoint, raw_fi=True, foreground=True, nothreads=True, **options)
    except RuntimeError:
        # fuse_main_real() also returns nonzero when its loop ends on a signal
        # (exit_handler() records the signal as the session's error: 8 in libfuse
        # 3.14), after unmounting as usual. That is a clean stop, not a failure.
        if not tree.served or mounted_at(mountpoint):
            raise


def mounted_at(mountpoint: str) -> bool:
    """Whether a vmxprobe server is mounted at mountpoint (/proc/self/mountinfo)."""
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        fstype = fields[fields.index("-", 6) + 1]
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == target and fstype == "fuse.vmxprobe":
            return True
    return False


def load_binding() -> None:
    # mfusepy tries libfuse 2 before 3 unless told; this module is written for libfuse3.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        raise MountError(f"`vmxprobe fixture mount` needs the FUSE extra: {INSTALL_HINT}") from None
    except (OSError, AttributeError) as e:
        raise MountError(
            f"`vmxprobe fixture mount` cannot load libfuse3 ({e}): install it with apt-get install fuse3"
        ) from None


def stop(proc: subprocess.Popen[bytes], mountpoint: str, timeout: float = 10.0) -> None:
    """End a background server and its mount, every wait with a deadline: SIGTERM (on
    which libfuse unmounts and the server returns), SIGKILL if it has not ended by the
    deadline, then a lazy `fusermount3 -u -z` for a mount a killed server left."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass  # a process SIGKILL does not end is stuck in the kernel
    if mounted_at(mountpoint):
        try:
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass


def start_in_background(argv: list[str], mountpoint: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start the server detached and return it once the mount answers. The child's
    stderr is a pipe until its init callback points it at /dev/null: EOF with the child
    alive and its mount in place means mounted; EOF with the child gone means it failed,
    and the pipe holds why. Nothing here waits without a deadline: a child alive without
    its mount is stopped (stop())."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd="/",
        start_new_session=True,
    )
    message, deadline = b"", time.monotonic() + timeout
    assert proc.stderr is not None  # stderr=PIPE
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            stop(proc, mountpoint)
            raise MountError(f"the FUSE server did not answer within {timeout:.0f} s; nothing is mounted")
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        message += chunk
    proc.stderr.close()
    if proc.poll() is None and mounted_at(mountpoint):
        return proc
    if proc.poll() is None:
        try:
            proc.wait(5.0)  # a server that failed closes its stderr as it exits
        except subprocess.TimeoutExpired:
            # Alive, yet its mount is not where it was asked to be (mounted where this
            # process cannot see it): stopped, never waited on without an end.
            stop(proc, mountpoint)
            raise MountError(
                f"the FUSE server started but {mountpoint} shows no mount; it was stopped"
            ) from None
    lines = [ln.strip() for ln in message.decode("utf-8", "replace").splitlines() if ln.strip()]
    # libfuse's own lines say why a mount failed; ours say so when libfuse did not.
    why = [ln for ln in lines if not ln.startswith("vmxprobe:")] or [
        ln.removeprefix("vmxprobe: error: ") for ln in lines[-1:]
    ]
    raise MountError("; ".join(why) or f"the FUSE server exited with status {proc.returncode}")
