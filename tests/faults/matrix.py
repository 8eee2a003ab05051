"""The fault matrix of docs/faults.md: its steps and failures, the cells that cannot
happen, how a cell runs the command, and the real files that produce each failure.

Every cell runs the vmxprobe command as a user does (a child process through
vmxprobe.cli.main: real exit codes, real stderr) against a host tree whose files are
real. The failure is produced by a real file wherever one can produce it (a missing
file, a socket inode for ENXIO, /proc/self/mem for EIO, /proc/self/clear_refs for
EINVAL, /dev/kmsg without CAP_SYSLOG for EPERM, another user for EACCES, a truncated
file for a short read, RLIMIT_AS for ENOMEM, RLIMIT_FSIZE for a short write, an
immutable file for EPERM on rename, mbind(2) to an absent node); otherwise by
tests/faultinject.py, which fails only the named call. Each cell asserts what is
reported, what the verdict becomes and the exit code, and that nothing escapes as a
traceback. The cells live with the layer that fails: test_host (list, open, read,
file), test_pages (alloc), test_output (write); test_matrix keeps them and
docs/faults.md equal.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import pytest

from tests import REPO

INJECT = os.path.join(REPO, "tests", "faultinject.py")
DOC = os.path.join(REPO, "docs", "faults.md")

CPU = "sys/devices/system/cpu"
NODE = "sys/devices/system/node"

STEPS = {
    "list": "list CPUs",
    "open": "open an msr or cpuid device",
    "read": "read an msr or cpuid device",
    "file": "read a sysfs/procfs file",
    "alloc": "allocate a plan page",
    "write": "write the output",
}
FAILURES = ("ENOENT", "EPERM", "EACCES", "ENXIO", "EIO", "EINVAL", "SHORT", "ENOMEM", "OFFLINE", "NODE_GONE")

# Pairs that cannot happen, and why (docs/faults.md gives the same reasons).
NA = {
    ("list", "OFFLINE"): "each CPU list is one read(2) of one file, a snapshot; a CPU "
    "going offline after it is the open/read/file rows",
    ("open", "SHORT"): "open(2) reads nothing",
    ("open", "NODE_GONE"): "device nodes are per CPU, not per NUMA node",
    ("read", "ENOENT"): "pread(2) on an open descriptor has no path to miss",
    ("read", "NODE_GONE"): "a register read involves no NUMA node",
    ("alloc", "ENOENT"): "an anonymous mmap(2) and mbind(2) name no file",
    ("alloc", "EACCES"): "mmap(2) gives EACCES only for file mappings; the pages are anonymous",
    ("alloc", "ENXIO"): "neither mmap(2) nor mbind(2) returns ENXIO",
    ("alloc", "SHORT"): "an allocation reads nothing",
    ("alloc", "OFFLINE"): "the plan has a page for every possible CPU, online or not: "
    "a CPU going offline changes no allocation",
    ("write", "OFFLINE"): "writing the output involves no CPU",
    ("write", "NODE_GONE"): "writing the output involves no NUMA node (the output folder "
    "vanishing is the ENOENT cell)",
}


# --- running the command ---------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: dict | None = None

    def reasons(self) -> str:
        v = self.report["verdict"]
        return "\n".join(v["reasons"] + v["undetermined"])


def vmxprobe(*args, faults=(), drop_caps=None, preexec=None, cwd=None) -> Run:
    """The command in a child process; faults for faultinject; drop_caps removes
    capabilities from root's bounding set (NO_DAC: root obeys permission bits)."""
    env = {
        **os.environ,
        "VMXPROBE_FAULTS": json.dumps(list(faults)),
        "PYTHONPATH": REPO,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("VMXPROBE_DEBUG", None)
    cmd = [sys.executable, INJECT, *args]
    if drop_caps:
        cmd = ["setpriv", "--bounding-set", ",".join("-" + c for c in drop_caps)] + cmd
    p = subprocess.run(
        cmd, capture_output=True, text=True, env=env, preexec_fn=preexec, cwd=cwd or REPO, timeout=300
    )
    run = Run(p.returncode, p.stdout, p.stderr)
    if "--format" in args and "json" in args and "-o" not in args and p.stdout.startswith("{"):
        run.report = json.loads(p.stdout)
    return run


def clean(r: Run) -> Run:
    """Nothing escapes as a traceback; stderr is at most a few one-line messages."""
    assert "Traceback" not in r.err, r.err
    assert r.code != 70, r.err
    for line in r.err.splitlines():
        assert line.startswith("vmxprobe: "), r.err
    return r


def scan(root, **kw) -> Run:
    return clean(vmxprobe("scan", "--root", root, "--format", "json", **kw))


# --- what can produce a real failure here ----------------------------------------------


def is_root():
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@functools.cache
def kmsg_gives_eperm() -> bool:
    """/dev/kmsg refuses a reader without CAP_SYSLOG (and CAP_SYS_ADMIN) when
    kernel.dmesg_restrict is 1, the way msr_open() refuses one without CAP_SYS_RAWIO."""
    if not is_root() or not os.path.exists("/dev/kmsg"):
        return False
    p = subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-syslog,-sys_admin",
            sys.executable,
            "-c",
            "import os\ntry: os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK)\n"
            "except PermissionError: print('EPERM')",
        ],
        capture_output=True,
        text=True,
    )
    return p.stdout.strip() == "EPERM"


KMSG_CAPS = ("syslog", "sys_admin")
# Root without these obeys permission bits: a file of another user's with mode 0600
# gives it a real EACCES. (Switching to another uid would also lose this Python, whose
# prefix may sit in a folder only root can enter.)
NO_DAC = ("dac_override", "dac_read_search")
NOBODY = 65534


def not_ours(path, mode=0o600):
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    os.chmod(path, mode)


@functools.cache
def chattr_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("chattr"):
        return False
    d = tempfile.mkdtemp()
    try:
        f = os.path.join(d, "f")
        open(f, "w").close()
        ok = subprocess.run(["chattr", "+i", f], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["chattr", "-i", f], check=True)
        return ok
    finally:
        shutil.rmtree(d)


@dataclass
class Tree:
    root: str
    base: str
    sockets: list = field(default_factory=list)
    immutable: list = field(default_factory=list)

    def path(self, rel):
        return os.path.join(self.root, rel)

    def remove(self, rel):
        p = self.path(rel)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)

    def link(self, rel, target):
        p = self.path(rel)
        if os.path.lexists(p):
            self.remove(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)

    def socket_at(self, rel):
        # Opening a socket inode fails with ENXIO, as the drivers' open() does for a
        # CPU that is offline or does not exist.
        p = self.path(rel)
        if os.path.lexists(p):
            self.remove(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(p)
        self.sockets.append(s)

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        if os.path.lexists(p):
            self.remove(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def cleanup(self):
        for s in self.sockets:
            s.close()
        for p in self.immutable:
            subprocess.run(["chattr", "-i", p], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


# A device read that faults (EIO) and one the kernel refuses (EINVAL), as real files:
# /proc/self/mem fails a read at an unmapped address with EIO; /proc/self/clear_refs
# has no read method, so read(2) and pread(2) on it fail with EINVAL.
EIO_FILE = "/proc/self/mem"
EINVAL_FILE = "/proc/self/clear_refs"


# --- the matrix --------------------------------------------------------------------------


@dataclass
class Cell:
    step: str
    failure: str
    exit: int
    how: str  # "real", "mock", or "real|mock" (real where possible)
    check: Callable
    targets: tuple = (None,)  # the files a "file" cell is run on, one test each


CELLS: dict[tuple[str, str], Cell] = {}
# (step, failure, target) -> why that variant fails today (a fix outside these files)
XFAIL: dict[tuple, str] = {}


def cell(step, failure, exit, how, targets=(None,)):
    def register(fn):
        assert step in STEPS and failure in FAILURES and (step, failure) not in NA
        CELLS[(step, failure)] = Cell(step, failure, exit, how, fn, targets)
        return fn

    return register


def assert_ready_without(r: Run, path: str, errno_name: str):
    """A CPU-list or sysfs file that could not be read: the errno is in file_errors,
    the scan goes on from the other evidence, and the verdict is the registers'."""
    assert r.report["topology"]["file_errors"].get(path) == errno_name, r.report["topology"]
    assert r.report["cpus"]["probed"] == "0-3"
    assert r.report["verdict"]["ready"] is True


def cell_params(*steps: str) -> list:
    """One pytest.param per cell of these steps (and per target of a "file" cell), in
    the order of docs/faults.md's table."""
    out = []
    for (step, failure), c in sorted(
        CELLS.items(), key=lambda kv: (list(STEPS).index(kv[0][0]), FAILURES.index(kv[0][1]))
    ):
        if step not in steps:
            continue
        for target in c.targets:
            marks = list(getattr(c.check, "pytestmark", []))
            if (step, failure, target) in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(step, failure, target)]))
            name = f"{step}-{failure}" + (f"-{target.split('/')[-1]}" if target else "")
            out.append(pytest.param(c, target, id=name, marks=marks))
    return out


def run_cell(c: Cell, target: str | None, host: Tree) -> None:
    if target is None:
        c.check(host)
    else:
        c.check(host, target)
