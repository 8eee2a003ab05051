"""The fault matrix of docs/faults.md, cell by cell.

Every cell runs the vmxprobe command as a user does (a child process through
vmxprobe.cli.main: real exit codes, real stderr) against a host tree whose files are
real. The failure is produced by a real file wherever one can produce it (a missing
file, a socket inode for ENXIO, /proc/self/mem for EIO, /proc/self/clear_refs for
EINVAL, /dev/kmsg without CAP_SYSLOG for EPERM, another user for EACCES, a truncated
file for a short read, RLIMIT_AS for ENOMEM, RLIMIT_FSIZE for a short write, an
immutable file for EPERM on rename, mbind(2) to an absent node); otherwise by
tests/faultinject.py, which fails only the named call. Each cell asserts what is
reported, what the verdict becomes and the exit code, and that nothing escapes as a
traceback. test_matrix_matches_the_document keeps this file and docs/faults.md equal.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pytest

from tests import hostgen

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
INJECT = os.path.join(HERE, "faultinject.py")
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


def _is_root():
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@functools.cache
def _kmsg_gives_eperm() -> bool:
    """/dev/kmsg refuses a reader without CAP_SYSLOG (and CAP_SYS_ADMIN) when
    kernel.dmesg_restrict is 1, the way msr_open() refuses one without CAP_SYS_RAWIO."""
    if not _is_root() or not os.path.exists("/dev/kmsg"):
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


def _not_ours(path, mode=0o600):
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    os.chmod(path, mode)


@functools.cache
def _chattr_works() -> bool:
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


# --- host trees --------------------------------------------------------------------------


@pytest.fixture
def host(request):
    """A 4-CPU, 2-node Intel host (CPUs 0-1 on node 0, 2-3 on node 1), ready for VMX, as
    a tree of real files in a folder every user can read (for the setpriv cells)."""
    d = tempfile.mkdtemp(prefix="vmxprobe-faults-", dir="/tmp")
    os.chmod(d, 0o755)
    root = os.path.join(d, "root")
    hostgen.write_tree(hostgen.synthetic(4, 2), root)
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    t = Tree(root, d)
    yield t
    t.cleanup()


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


def _assert_ready_without(r: Run, path: str, errno_name: str):
    """A CPU-list or sysfs file that could not be read: the errno is in file_errors,
    the scan goes on from the other evidence, and the verdict is the registers'."""
    assert r.report["topology"]["file_errors"].get(path) == errno_name, r.report["topology"]
    assert r.report["cpus"]["probed"] == "0-3"
    assert r.report["verdict"]["ready"] is True


# list CPUs: sys/devices/system/cpu/online, with present/possible and the cpuN
# directories (and their cpuN/online files) to fall back on.

ONLINE = f"{CPU}/online"


@cell("list", "ENOENT", 0, "real")
def list_enoent(host):
    host.remove(ONLINE)
    r = scan(host.root)
    assert r.code == 0
    assert f"/{ONLINE}" in r.report["topology"]["missing"]
    assert ONLINE not in r.report["topology"]["file_errors"]  # absent is not an error
    assert r.report["cpus"]["online"] == "0-3"


@cell("list", "EPERM", 0, "real|mock")
def list_eperm(host):
    if _kmsg_gives_eperm():
        host.link(ONLINE, "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": ONLINE, "errno": "EPERM"}])
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "EPERM")
    assert f"/{ONLINE}" in r.report["topology"]["missing"]


@cell("list", "EACCES", 0, "real|mock")
def list_eacces(host):
    if _is_root():
        _not_ours(host.path(ONLINE))
        r = scan(host.root, drop_caps=NO_DAC)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": ONLINE, "errno": "EACCES"}])
    # The devices stay readable, so the verdict stands; only the list is unreadable.
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "EACCES")


@cell("list", "ENXIO", 0, "real")
def list_enxio(host):
    host.socket_at(ONLINE)
    r = scan(host.root)
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "ENXIO")


@cell("list", "EIO", 0, "real")
def list_eio(host):
    host.link(ONLINE, EIO_FILE)
    r = scan(host.root)
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "EIO")


@cell("list", "EINVAL", 0, "real")
def list_einval(host):
    host.link(ONLINE, EINVAL_FILE)
    r = scan(host.root)
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "EINVAL")


@cell("list", "SHORT", 0, "real")
def list_short(host):
    # A list cut inside a range is refused, noted, and the fallback used; a list cut at
    # a comma cannot be told from a shorter list (docs/faults.md says so).
    host.write(ONLINE, "0-")
    r = scan(host.root)
    assert r.code == 0
    assert any(ONLINE in n and "ignored" in n for n in r.report["topology"]["notes"])
    assert r.report["cpus"]["online"] == "0-3"


@cell("list", "ENOMEM", 0, "mock")
def list_enomem(host):
    r = scan(host.root, faults=[{"call": "read", "path": ONLINE, "errno": "ENOMEM"}])
    assert r.code == 0
    _assert_ready_without(r, ONLINE, "ENOMEM")


@cell("list", "NODE_GONE", 0, "real")
def list_node_gone(host):
    # sys/devices/system/node vanished (a dangling link): the cpuN/nodeM links remain
    # the kernel's own cpu_to_node() answer.
    host.remove(NODE)
    host.link(NODE, os.path.join(host.base, "gone"))
    r = scan(host.root)
    assert r.code == 0
    assert f"/{NODE}" in r.report["topology"]["missing"]
    assert [(e["cpu"], e["node"], e["node_source"]) for e in r.report["per_cpu"]] == [
        (0, 0, "link"),
        (1, 0, "link"),
        (2, 1, "link"),
        (3, 1, "link"),
    ]


# open an msr or cpuid device


def _msr(cpu):
    return f"dev/cpu/{cpu}/msr"


def _assert_undetermined(r: Run, words: str, errno_name: str, cpu=0):
    assert r.code == 3, (r.code, r.err)
    assert r.report["verdict"]["determined"] is False
    assert r.report["verdict"]["ready"] is False
    assert r.report["per_cpu"][cpu]["msr"]["0x3a"] == errno_name
    assert any(f"({errno_name})" in u for u in r.report["verdict"]["undetermined"]), r.reasons()
    assert words in r.err and r.err.count("\n") == 1, r.err


@cell("open", "ENOENT", 3, "real")
def open_enoent(host):
    for cpu in range(4):
        host.remove(_msr(cpu))
    r = scan(host.root)
    _assert_undetermined(r, "modprobe msr", "ENOENT")


@cell("open", "EPERM", 3, "real|mock")
def open_eperm(host):
    if _kmsg_gives_eperm():
        for cpu in range(4):
            host.link(_msr(cpu), "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": "/msr", "errno": "EPERM"}])
    _assert_undetermined(r, "CAP_SYS_RAWIO", "EPERM")


@cell("open", "EACCES", 3, "real|mock")
def open_eacces(host):
    if _is_root():
        for cpu in range(4):
            _not_ours(host.path(_msr(cpu)))
        r = scan(host.root, drop_caps=NO_DAC)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": "/msr", "errno": "EACCES"}])
    _assert_undetermined(r, "run as root", "EACCES")


@cell("open", "ENXIO", 3, "real")
def open_enxio(host):
    host.socket_at(_msr(2))
    r = scan(host.root)
    _assert_undetermined(r, "went offline", "ENXIO", cpu=2)
    assert r.report["verdict"]["x86_vmx_init"] == "ok"  # the boot CPU was read
    assert r.report["verdict"]["kvm_intel"] is None  # CPU 2 could not be compared


@cell("open", "EIO", 1, "mock")
def open_eio(host):
    # msr_open() fails with EIO on a CPU without MSRs: the kernel's own rdmsr of
    # IA32_FEATURE_CONTROL would fault too, so init_ia32_feat_ctl() clears VMX.
    r = scan(host.root, faults=[{"call": "open", "path": _msr(0), "errno": "EIO"}])
    assert r.code == 1
    v = r.report["verdict"]
    assert v["x86_vmx_init"] == "EOPNOTSUPP" and v["determined"] is True
    assert r.report["per_cpu"][0]["msr"]["0x3a"] == "EIO"
    assert "faults (EIO)" in r.reasons()


@cell("open", "EINVAL", 3, "mock")
def open_einval(host):
    r = scan(host.root, faults=[{"call": "open", "path": _msr(0), "errno": "EINVAL"}])
    _assert_undetermined(r, "rejected the read", "EINVAL")


@cell("open", "ENOMEM", 3, "mock")
def open_enomem(host):
    r = scan(host.root, faults=[{"call": "open", "path": _msr(0), "errno": "ENOMEM"}])
    _assert_undetermined(r, "run the scan again", "ENOMEM")


@cell("open", "OFFLINE", 3, "real")
def open_offline(host):
    # Listed online, then offlined before its devices were opened: the drivers
    # removed CPU 2's nodes and its cpu2/online reads 0. Reported as the driver
    # reports an offline CPU (ENXIO), not as "msr driver not loaded".
    host.remove("dev/cpu/2")
    host.write(f"{CPU}/cpu2/online", "0\n")
    r = scan(host.root)
    _assert_undetermined(r, "went offline", "ENXIO", cpu=2)
    assert "modprobe" not in r.err


# read an msr or cpuid device


@cell("read", "EPERM", 3, "mock")
def read_eperm(host):
    r = scan(host.root, faults=[{"call": "pread", "path": _msr(0), "errno": "EPERM"}])
    _assert_undetermined(r, "CAP_SYS_RAWIO", "EPERM")


@cell("read", "EACCES", 3, "mock")
def read_eacces(host):
    # An LSM can deny a read on a descriptor it allowed to open (SELinux after a policy
    # reload): file_permission() -> EACCES.
    r = scan(host.root, faults=[{"call": "pread", "path": _msr(0), "errno": "EACCES"}])
    _assert_undetermined(r, "run as root", "EACCES")


@cell("read", "ENXIO", 3, "mock")
def read_enxio(host):
    # rdmsr_safe_on_cpu() on a CPU that is not online: smp_call_function_single() -> ENXIO.
    r = scan(host.root, faults=[{"call": "pread", "path": _msr(2), "errno": "ENXIO"}])
    _assert_undetermined(r, "went offline", "ENXIO", cpu=2)


@cell("read", "EIO", 1, "real")
def read_eio(host):
    # The register faults on the boot CPU: rdmsr_safe() fails and init_ia32_feat_ctl()
    # clears X86_FEATURE_VMX, so x86_vmx_init() returns -EOPNOTSUPP.
    host.link(_msr(0), EIO_FILE)
    r = scan(host.root)
    assert r.code == 1
    assert r.report["verdict"]["x86_vmx_init"] == "EOPNOTSUPP"
    assert r.report["per_cpu"][0]["msr"] == {"0x3a": "EIO", "0x480": "EIO"}
    assert "reading IA32_FEATURE_CONTROL (0x3a) faults (EIO)" in r.reasons()


@cell("read", "EINVAL", 3, "real")
def read_einval(host):
    host.link(_msr(0), EINVAL_FILE)
    r = scan(host.root)
    _assert_undetermined(r, "rejected the read", "EINVAL")


@cell("read", "SHORT", 3, "real")
def read_short(host):
    # CPU 0's msr file ends inside IA32_VMX_BASIC: a short read, never a zero.
    with open(host.path(_msr(0)), "r+b") as f:
        f.truncate(0x480 + 4)
    r = scan(host.root)
    assert r.code == 3
    assert r.report["per_cpu"][0]["msr"]["0x480"] == "SHORT"
    assert r.report["vmx_basic"] is None
    assert any("(SHORT)" in u for u in r.report["verdict"]["undetermined"])
    assert "short read" in r.err


@cell("read", "ENOMEM", 3, "mock")
def read_enomem(host):
    r = scan(host.root, faults=[{"call": "pread", "path": _msr(0), "errno": "ENOMEM"}])
    _assert_undetermined(r, "run the scan again", "ENOMEM")


@cell("read", "OFFLINE", 3, "mock")
def read_offline(host):
    # CPU 2 answers its first register reads (CPUID leaves 0 and 1), then goes
    # offline: every later read of its devices fails with ENXIO, as
    # smp_call_function_single() does.
    r = scan(
        host.root,
        faults=[
            {"call": "pread", "path": "dev/cpu/2/cpuid", "errno": "ENXIO", "skip": 2},
            {"call": "pread", "path": _msr(2), "errno": "ENXIO"},
        ],
    )
    assert r.report["per_cpu"][2]["cpuid_vmx"] is True  # read before it went
    _assert_undetermined(r, "went offline", "ENXIO", cpu=2)


# read a sysfs/procfs file: one sysfs file (node 1's cpulist) and one procfs file
# (/proc/cpuinfo), each failing alone. Neither decides the verdict: the failure is
# reported and the scan goes on from the other evidence.

NODE1_CPULIST = f"{NODE}/node1/cpulist"
CPUINFO = "proc/cpuinfo"
FILE_TARGETS = (NODE1_CPULIST, CPUINFO)


def _assert_file_failure(r: Run, path: str, errno_name: str | None):
    assert r.code == 0, r.err
    topo = r.report["topology"]
    if errno_name is not None:
        assert topo["file_errors"].get(path) == errno_name, topo
    assert r.report["verdict"]["ready"] is True
    if path == NODE1_CPULIST:
        # node 1's CPUs keep their node: the cpuN/node1 links, then node1/cpumap
        assert [e["node"] for e in r.report["per_cpu"]] == [0, 0, 1, 1]
    else:
        # no kernel view: unknown (null), never "no vmx flag"
        assert [e["vmx_flag"] for e in r.report["per_cpu"]] == [None] * 4
        assert "kernel view" not in r.reasons()


@cell("file", "ENOENT", 0, "real", targets=FILE_TARGETS)
def file_enoent(host, target):
    host.remove(target)
    r = scan(host.root)
    _assert_file_failure(r, target, None)
    assert target not in r.report["topology"]["file_errors"]


@cell("file", "EPERM", 0, "real|mock", targets=FILE_TARGETS)
def file_eperm(host, target):
    if _kmsg_gives_eperm():
        host.link(target, "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": target, "errno": "EPERM"}])
    _assert_file_failure(r, target, "EPERM")


@cell("file", "EACCES", 0, "real|mock", targets=FILE_TARGETS)
def file_eacces(host, target):
    if _is_root():
        _not_ours(host.path(target))
        r = scan(host.root, drop_caps=NO_DAC)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": target, "errno": "EACCES"}])
    _assert_file_failure(r, target, "EACCES")


@cell("file", "ENXIO", 0, "real", targets=FILE_TARGETS)
def file_enxio(host, target):
    host.socket_at(target)
    _assert_file_failure(scan(host.root), target, "ENXIO")


@cell("file", "EIO", 0, "real", targets=FILE_TARGETS)
def file_eio(host, target):
    host.link(target, EIO_FILE)
    _assert_file_failure(scan(host.root), target, "EIO")


@cell("file", "EINVAL", 0, "real", targets=FILE_TARGETS)
def file_einval(host, target):
    host.link(target, EINVAL_FILE)
    _assert_file_failure(scan(host.root), target, "EINVAL")


@cell("file", "SHORT", 0, "real", targets=FILE_TARGETS)
def file_short(host, target):
    text = host.read(target)
    if target == CPUINFO:
        # cut inside CPU 3's block, before its flags line
        cut = text.index("processor\t: 3")
        host.write(target, text[:cut] + "processor\t: 3\nvendor_id\t: Genu")
    else:
        host.write(target, "2-")
    r = scan(host.root)
    assert r.code == 0
    if target == CPUINFO:
        # CPUs 0-2 are compared; CPU 3's block has no flags line: unknown, not "no vmx"
        assert [e["vmx_flag"] for e in r.report["per_cpu"]][:3] == [True] * 3
        assert r.report["per_cpu"][3]["vmx_flag"] is None
        assert "kernel view" not in r.reasons()
    else:
        assert any(NODE1_CPULIST in n for n in r.report["topology"]["notes"])
        assert [e["node"] for e in r.report["per_cpu"]] == [0, 0, 1, 1]


@cell("file", "ENOMEM", 0, "mock", targets=FILE_TARGETS)
def file_enomem(host, target):
    r = scan(host.root, faults=[{"call": "read", "path": target, "errno": "ENOMEM"}])
    _assert_file_failure(r, target, "ENOMEM")


@cell("file", "OFFLINE", 0, "real", targets=FILE_TARGETS)
def file_offline(host, target):
    # The CPU is read, then goes offline before the file is: gone from /proc/cpuinfo,
    # and from its node's cpulist (a node list shows online CPUs only).
    if target == CPUINFO:
        text = host.read(CPUINFO)
        host.write(CPUINFO, text[: text.index("processor\t: 3")])
    else:
        host.write(NODE1_CPULIST, "2\n")
    r = scan(host.root)
    assert r.code == 0
    assert r.report["cpus"]["probed"] == "0-3"
    if target == CPUINFO:
        assert [e["vmx_flag"] for e in r.report["per_cpu"]] == [True, True, True, None]
        assert "kernel view" not in r.reasons()
    else:
        assert [e["node"] for e in r.report["per_cpu"]] == [0, 0, 1, 1]  # the link decides


@cell("file", "NODE_GONE", 0, "real", targets=(NODE1_CPULIST,))
def file_node_gone(host, target):
    # node1 is listed, then its directory is gone before its files are read (a dangling
    # link stands for it). CPU 2 and 3 keep node 1 through their cpuN/node1 links.
    host.remove(f"{NODE}/node1")
    host.link(f"{NODE}/node1", os.path.join(host.base, "gone"))
    r = scan(host.root)
    assert r.code == 0
    assert any("node(s) 1" in m for m in r.report["topology"]["missing"]), r.report["topology"]
    assert [e["node"] for e in r.report["per_cpu"]] == [0, 0, 1, 1]
    assert r.report["verdict"]["ready"] is True


# allocate a plan page. The mirror of x86_vmx_init() follows its all-or-nothing rule: a
# page that cannot be had releases every page taken and yields -ENOMEM (exit 1), with
# the real cause (and the note that the pages were vmxprobe's own) among the reasons.


def _assert_alloc_failure(r: Run, *words: str):
    # never half a plan: every page taken was released, and nothing claims verified
    assert r.report["plan"]["materialized"] is False
    assert r.report["plan"]["verified"] is None
    v = r.report["verdict"]
    assert v["x86_vmx_init"] == "ENOMEM" and v["determined"] is True, v
    assert r.code == 1
    assert any("all-or-nothing" in x for x in v["reasons"]), v
    assert any(w in x for x in v["reasons"] for w in words), v


@cell("alloc", "ENOMEM", 1, "real")
def alloc_enomem(host):
    # RLIMIT_AS lowered to what is mapped plus 1 MiB just before the pages are mapped:
    # the kernel fails a real mmap(2) with ENOMEM part-way through 4096 pages.
    big = os.path.join(host.base, "big")
    hostgen.write_tree(hostgen.synthetic(2048, 4), big)
    r = scan(big, faults=ALLOC_PRODUCERS["ENOMEM"])
    _assert_alloc_failure(r, "Cannot allocate memory", "MemoryError")


@cell("alloc", "EPERM", 1, "mock")
def alloc_eperm(host):
    r = scan(host.root, faults=ALLOC_PRODUCERS["EPERM"])
    _assert_alloc_failure(r, "Operation not permitted")


@cell("alloc", "EIO", 1, "mock")
def alloc_eio(host):
    # mbind(MPOL_MF_STRICT) fails with EIO when a page is already on another node.
    r = scan(host.root, faults=ALLOC_PRODUCERS["EIO"])
    _assert_alloc_failure(r, "Input/output error")


@cell("alloc", "EINVAL", 1, "mock")
def alloc_einval(host):
    r = scan(host.root, faults=ALLOC_PRODUCERS["EINVAL"])
    _assert_alloc_failure(r, "Invalid argument")


@cell("alloc", "NODE_GONE", 1, "real")
def alloc_node_gone(host):
    # The plan puts pages on node 63; this machine has no such node (it is gone):
    # mbind(2) to it fails with a real EINVAL.
    if os.path.exists("/sys/devices/system/node/node63"):
        pytest.skip("this machine has a node 63")
    big = os.path.join(host.base, "wide")
    hostgen.write_tree(hostgen.synthetic(128, 64), big)
    r = scan(big, faults=ALLOC_PRODUCERS["NODE_GONE"])
    _assert_alloc_failure(r, "Invalid argument")


ALLOC_PRODUCERS = {
    "ENOMEM": [{"call": "rlimit_as", "slack": 1 << 20}],
    "EPERM": [{"call": "place", "errno": "EPERM"}],
    "EIO": [{"call": "place", "errno": "EIO"}],
    "EINVAL": [{"call": "place", "errno": "EINVAL"}],
    "NODE_GONE": [{"call": "place", "how": "mbind"}],
}


@pytest.mark.parametrize("failure", sorted(ALLOC_PRODUCERS))
def test_alloc_failures_are_all_or_nothing(host, failure):
    """What holds for the alloc cells before and after that fix: every page released,
    nothing claims a verified plan, one line at most on stderr, no traceback, and the
    verdict is not "ready"."""
    root = host.root
    if failure == "ENOMEM":
        root = os.path.join(host.base, "big")
        hostgen.write_tree(hostgen.synthetic(2048, 4), root)
    elif failure == "NODE_GONE":
        if os.path.exists("/sys/devices/system/node/node63"):
            pytest.skip("this machine has a node 63")
        root = os.path.join(host.base, "wide")
        hostgen.write_tree(hostgen.synthetic(128, 64), root)
    r = scan(root, faults=ALLOC_PRODUCERS[failure])
    assert r.code in (1, 3)
    assert r.report["plan"]["materialized"] is False and r.report["plan"]["verified"] is None
    assert r.report["verdict"]["ready"] is False


# write the output (-o): atomically, or not at all; the previous file stays whole.

OLD = "previous report\n"


def _out(host, name="report.json", previous=True):
    d = os.path.join(host.base, "out")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    p = os.path.join(d, name)
    if previous:
        with open(p, "w") as f:
            f.write(OLD)
    return p


def _write(host, out, **kw):
    return clean(vmxprobe("scan", "--fixture", "intel-2s-ready", "--format", "json", "-o", out, **kw))


def _assert_write_failed(r: Run, out: str, words: str, previous=True):
    assert r.code == 2, (r.code, r.err)
    assert r.out == ""
    assert r.err.startswith("vmxprobe: error: cannot write the report:") and words in r.err, r.err
    assert r.err.count("\n") == 1
    if previous:
        with open(out) as f:
            assert f.read() == OLD
    folder = os.path.dirname(out)
    if os.path.isdir(folder):
        assert [n for n in os.listdir(folder) if n.endswith(".tmp")] == []


@cell("write", "ENOENT", 2, "real")
def write_enoent(host):
    out = os.path.join(host.base, "no-such-folder", "report.json")
    r = _write(host, out)
    _assert_write_failed(r, out, "No such file or directory", previous=False)


@cell("write", "EPERM", 2, "real|mock")
def write_eperm(host):
    out = _out(host)
    if _chattr_works():
        # rename(2) over an immutable file fails with EPERM, even for root.
        subprocess.run(["chattr", "+i", out], check=True)
        host.immutable.append(out)
        r = _write(host, out)
    else:
        r = _write(host, out, faults=[{"call": "replace", "path": "report.json", "errno": "EPERM"}])
    _assert_write_failed(r, out, "Operation not permitted")


@cell("write", "EACCES", 2, "real|mock")
def write_eacces(host):
    out = _out(host)
    if _is_root():
        _not_ours(os.path.dirname(out), 0o755)  # another user's folder
        r = _write(host, out, drop_caps=NO_DAC)
    else:
        r = _write(host, out, faults=[{"call": "open", "path": ".tmp", "errno": "EACCES"}])
    _assert_write_failed(r, out, "Permission denied")


@cell("write", "ENXIO", 2, "real")
def write_enxio(host):
    # A socket at the target (opening it would give ENXIO) is refused unopened, as is
    # any target that is not a regular file or a symlink.
    out = _out(host, previous=False)
    s = socket.socket(socket.AF_UNIX)
    s.bind(out)
    host.sockets.append(s)
    r = _write(host, out)
    _assert_write_failed(r, out, "not a regular file", previous=False)
    assert stat.S_ISSOCK(os.lstat(out).st_mode)


@cell("write", "EIO", 2, "mock")
def write_eio(host):
    # fsync(2) is where a writeback error (EIO) surfaces.
    out = _out(host)
    r = _write(host, out, faults=[{"call": "fsync", "path": ".tmp", "errno": "EIO"}])
    _assert_write_failed(r, out, "Input/output error")


@cell("write", "EINVAL", 2, "mock")
def write_einval(host):
    # fsync(2) on a file system that cannot sync gives EINVAL.
    out = _out(host)
    r = _write(host, out, faults=[{"call": "fsync", "path": ".tmp", "errno": "EINVAL"}])
    _assert_write_failed(r, out, "Invalid argument")


@cell("write", "SHORT", 2, "real")
def write_short(host):
    # RLIMIT_FSIZE of 4 KiB: the write stops short, then fails with EFBIG (Python
    # ignores SIGXFSZ). The report is 25 KiB.
    out = _out(host)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = _write(host, out, preexec=limit)
    _assert_write_failed(r, out, "File too large")


@cell("write", "ENOMEM", 2, "mock")
def write_enomem(host):
    out = _out(host)
    r = _write(host, out, faults=[{"call": "open", "path": ".tmp", "errno": "ENOMEM"}])
    _assert_write_failed(r, out, "Cannot allocate memory")


def test_output_folder_vanishing_mid_write_leaves_nothing_half_done(host):
    out = _out(host)
    r = _write(host, out, faults=[{"call": "replace", "path": "report.json", "errno": "ENOENT"}])
    _assert_write_failed(r, out, "No such file or directory")


# --- the tests ---------------------------------------------------------------------------


def _params():
    out = []
    for (step, failure), c in sorted(
        CELLS.items(), key=lambda kv: (list(STEPS).index(kv[0][0]), FAILURES.index(kv[0][1]))
    ):
        for target in c.targets:
            marks = list(getattr(c.check, "pytestmark", []))
            if (step, failure, target) in XFAIL:
                marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[(step, failure, target)]))
            name = f"{step}-{failure}" + (f"-{target.split('/')[-1]}" if target else "")
            out.append(pytest.param(c, target, id=name, marks=marks))
    return out


@pytest.mark.parametrize("c,target", _params())
def test_cell(c, target, host):
    if target is None:
        c.check(host)
    else:
        c.check(host, target)


def _document_cells():
    """{(step, failure): exit code or "N/A"} from the table in docs/faults.md."""
    cells = {}
    with open(DOC) as f:
        for line in f:
            m = re.match(r"\|\s*`(\w+)`\s*\|\s*`(\w+)`\s*\|(.*)\|\s*([0-9]+|N/A)\s*\|\s*$", line)
            if m:
                step, failure, _, code = m.groups()
                assert (step, failure) not in cells, f"{step} x {failure} twice in {DOC}"
                cells[(step, failure)] = code if code == "N/A" else int(code)
    return cells


def test_matrix_is_complete():
    every = {(s, f) for s in STEPS for f in FAILURES}
    assert set(CELLS) | set(NA) == every
    assert not set(CELLS) & set(NA)


def test_matrix_matches_the_document():
    doc = _document_cells()
    assert set(doc) == set(CELLS) | set(NA), set(doc) ^ (set(CELLS) | set(NA))
    for key, c in CELLS.items():
        assert doc[key] == c.exit, f"{key}: docs/faults.md says exit {doc[key]}, the test {c.exit}"
    for key in NA:
        assert doc[key] == "N/A", key


def test_counts(capsys):
    """The numbers docs/faults.md and the summary quote."""
    tested = len(CELLS)
    with capsys.disabled():
        print(
            f"\nfault matrix: {len(STEPS) * len(FAILURES)} cells, {tested} tested "
            f"({sum(1 for k in CELLS if k[0] == 'file')} of them on two files), "
            f"{len(NA)} N/A; real where possible: "
            f"{sum(1 for c in CELLS.values() if c.how.startswith('real'))}"
        )
    assert tested + len(NA) == 60


# --- output safety -----------------------------------------------------------------------

from vmxprobe import files as output  # noqa: E402
from vmxprobe.files import OutputError, write_atomic  # noqa: E402


def test_a_planted_temp_name_is_never_opened(tmp_path, monkeypatch):
    # The attacker knows the next temp name and plants a link there to a file of
    # root's: O_EXCL|O_NOFOLLOW refuses the name, the next one is used.
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "report.json"
    planted = tmp_path / output._temp_name("report.json", "planted")
    planted.symlink_to(victim)
    monkeypatch.setattr(output, "_temp_names", lambda: iter(["planted", "fresh"]))
    write_atomic(str(target), "new report")
    assert victim.read_text() == "keep me"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert target.read_text() == "new report"
    assert sorted(os.listdir(tmp_path)) == sorted(["victim", "report.json", planted.name])


def test_when_every_temp_name_is_taken_nothing_is_written(tmp_path, monkeypatch):
    (tmp_path / output._temp_name("r.json", "x")).write_text("planted")
    monkeypatch.setattr(output, "_temp_names", lambda: iter(["x"] * 1000))
    with pytest.raises(OutputError, match="temp names were all taken"):
        write_atomic(str(tmp_path / "r.json"), "new")
    assert not (tmp_path / "r.json").exists()


def test_a_symlink_at_the_target_is_replaced_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "passwd"
    victim.write_text("root:x:0:0")
    target = tmp_path / "report.json"
    target.symlink_to(victim)
    write_atomic(str(target), "report")
    assert victim.read_text() == "root:x:0:0"
    assert not target.is_symlink() and target.read_text() == "report"


@pytest.mark.parametrize("kind", ["dir", "fifo", "socket", "device"])
def test_a_target_that_is_not_a_regular_file_is_refused_unopened(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "dir":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)  # opening it for writing would block forever
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(target))
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null
    with pytest.raises(OutputError, match="not a regular file"):
        write_atomic(str(target), "x")
    assert os.listdir(tmp_path) == ["out"]


def test_a_target_name_at_name_max_still_gets_a_temp_beside_it(tmp_path):
    name = "r" * 250 + ".json"
    write_atomic(str(tmp_path / name), "ok")
    assert (tmp_path / name).read_text() == "ok" and os.listdir(tmp_path) == [name]


def test_a_replaced_file_keeps_its_mode_and_owner(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    if os.geteuid() == 0:
        os.chown(target, NOBODY, NOBODY)
    write_atomic(str(target), "new")
    st = os.stat(target)
    assert stat.S_IMODE(st.st_mode) == 0o600 and target.read_text() == "new"
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    fresh = tmp_path / "fresh.json"
    write_atomic(str(fresh), "x")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644


def test_inputs_that_are_not_regular_files_never_hang(tmp_path):
    from vmxprobe.host import fixture

    fifo = tmp_path / "fixture.json"
    os.mkfifo(fifo)
    with pytest.raises(fixture.FixtureError, match="not a regular file"):
        fixture.load(str(fifo))  # a blocking open would hang here


def test_a_hostile_tree_never_hangs_and_never_reads_a_foreign_device(tmp_path):
    from vmxprobe.host.sources import LiveHost, MsrReading

    root = tmp_path / "root"
    hostgen.write_tree(hostgen.synthetic(4, 1), str(root))
    cpu = root / CPU
    os.unlink(cpu / "online")
    os.mkfifo(cpu / "online")  # a FIFO where sysfs has a file
    os.unlink(root / "dev/cpu/0/msr")
    os.symlink("/dev/zero", root / "dev/cpu/0/msr")  # a device that is not the msr driver
    os.unlink(root / "dev/cpu/1/msr")
    os.mkfifo(root / "dev/cpu/1/msr")
    (root / "proc").mkdir(exist_ok=True)
    os.unlink(root / "proc/cpuinfo")
    os.symlink("/dev/zero", root / "proc/cpuinfo")  # endless
    host = LiveHost(str(root))
    assert host.read_text(f"{CPU}/online") is None
    assert host.read_text("proc/cpuinfo") is None
    assert host.file_errors == {f"{CPU}/online": "NOTREG", "proc/cpuinfo": "NOTREG"}
    assert host.read_msr(0, 0x3A) == MsrReading(errno="ENODEV")  # never a zero
    assert host.read_msr(1, 0x3A) == MsrReading(errno="ESPIPE")
    host.close()
    r = scan(str(root))
    assert r.code == 3 and r.report["per_cpu"][0]["msr"]["0x3a"] == "ENODEV"


def test_an_oversized_sysfs_file_is_efbig_not_read_whole(tmp_path, monkeypatch):
    from vmxprobe.host import sources

    monkeypatch.setattr(sources, "MAX_TEXT_BYTES", 1000)
    (tmp_path / "big").write_text("x" * 1001)
    (tmp_path / "fits").write_text("x" * 1000)
    host = sources.LiveHost(str(tmp_path))
    assert host.read_text("big") is None and host.file_errors == {"big": "EFBIG"}
    assert host.read_text("fits") == "x" * 1000


def _interruptible_writer(target, go):
    """A child that writes a report slowly through write_atomic: one chunk, then it
    tells the parent and waits to be killed."""
    import time

    def chunks():
        yield '{"partial": '
        os.write(go, b"1")
        time.sleep(60)
        yield "true}\n"

    write_atomic(target, chunks())


def test_sigkill_mid_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text(OLD)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(r)
            _interruptible_writer(str(target), w)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"  # the child is mid-write
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert target.read_text() == OLD
    left = [n for n in os.listdir(tmp_path) if n != "report.json"]
    assert len(left) == 1 and left[0].startswith(".report.json.") and left[0].endswith(".tmp")
    # and the next write goes through as usual
    write_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"


def test_sigkill_of_the_command_mid_write_never_leaves_half_a_report(tmp_path):
    """The command writing a large report (-o), killed at a spread of moments: the file
    is always the previous one or a complete new report, never a mix."""
    import time

    root = str(tmp_path / "root")
    hostgen.write_tree(hostgen.synthetic(1024, 4), root)
    out = tmp_path / "report.json"
    out.write_text(OLD)
    env = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
    outcomes = Counter()
    for delay in (0.05, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 3.0):
        p = subprocess.Popen(
            [sys.executable, "-m", "vmxprobe", "scan", "--root", root, "--format", "json", "-o", str(out)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        p.kill()
        p.wait()
        text = out.read_text()
        if text == OLD:
            outcomes["old"] += 1
        else:
            assert json.loads(text)["plan"]["pages"] == 1024
            outcomes["new"] += 1
            out.write_text(OLD)
        for n in os.listdir(tmp_path):
            if n.endswith(".tmp"):
                os.unlink(tmp_path / n)
    assert outcomes["old"] >= 1, outcomes  # some kills landed before the rename


# --- limits ------------------------------------------------------------------------------


@pytest.mark.slow
def test_8192_possible_cpus_on_1024_nodes(tmp_path):
    root = str(tmp_path / "root")
    hostgen.write_tree(hostgen.synthetic(8192, 1024), root)
    r = scan(root)
    assert r.code == 0, r.err
    plan = r.report["plan"]
    assert plan["pages"] == 8192 and len(plan["nodes"]) == 1024
    assert plan["materialized"] and plan["verified"]["ok"] == 8192 and plan["verified"]["bad"] == []
    assert [n["pages"] for n in plan["nodes"]] == [8] * 1024
    assert r.report["cpus"]["probed"] == "0-8191"
    # recorded, it stays under the fixture cap and replays to the same verdict
    fx = tmp_path / "big.json"
    rec = clean(vmxprobe("record", "--root", root, "-o", str(fx)))
    assert rec.code == 0 and os.path.getsize(fx) < 64 << 20
    replay = clean(vmxprobe("scan", "--fixture", str(fx), "--format", "json"))
    assert replay.code == 0
    assert json.loads(replay.out)["verdict"] == r.report["verdict"]


def test_a_cpu_beyond_kernel_max_is_not_a_crash(host):
    host.write(f"{CPU}/online", "0-3,9000\n")
    host.write(f"{CPU}/possible", "0-3,9000\n")
    r = scan(host.root)
    assert r.code in (0, 3)


@pytest.mark.parametrize("kernel_max,cpus,beyond", [("3", "0-5", "4-5"), ("8191", "0-3,9000", "9000")])
def test_cpus_beyond_kernel_max_are_ignored_noted_and_undetermined(host, kernel_max, cpus, beyond):
    """The decision (docs/faults.md, Limits): no kernel can have a CPU above kernel_max,
    so a list naming one is not the kernel's: those ids are dropped (nothing is read or
    planned for them), a topology note names them, and the scan exits 3: the plan's
    size cannot be trusted from a tree that contradicts itself."""
    host.write(f"{CPU}/kernel_max", kernel_max + "\n")
    host.write(f"{CPU}/possible", cpus + "\n")
    host.write(f"{CPU}/present", cpus + "\n")
    host.write(f"{CPU}/online", cpus + "\n")
    r = scan(host.root)
    assert r.code == 3
    assert r.report["cpus"]["possible"] == "0-3" and r.report["plan"]["pages"] == 4
    assert any(beyond in n and "kernel_max" in n for n in r.report["topology"]["notes"])
    assert "kernel_max" in r.err and "modprobe" not in r.err


# --- hostile sysfs and procfs text: a note, never a crash ---------------------------------


@pytest.mark.parametrize(
    "rel,text",
    [
        (f"{CPU}/kernel_max", "²\n"),
        (f"{NODE}/node0/distance", "10 ²\n"),
        ("proc/cpuinfo", "processor\t: ²\nflags\t\t: vmx\n\n"),
    ],
)
def test_non_ascii_digits_in_sysfs_are_junk_not_a_crash(host, rel, text):
    host.write(rel, text)
    r = vmxprobe("scan", "--root", host.root, "--format", "json")
    assert r.code in (0, 1, 3) and "internal error" not in r.err


def test_junk_sysfs_text_is_noted_not_a_crash(host):
    for rel in (f"{CPU}/possible", f"{CPU}/present", f"{NODE}/has_memory", f"{NODE}/online"):
        host.write(rel, "0-,zz\x00\n")
    host.write(f"{NODE}/node1/cpumap", "xyz\n")
    host.write(f"{NODE}/node1/cpulist", "9-2\n")
    r = scan(host.root)
    assert r.code in (0, 1, 3)
    assert len(r.report["topology"]["notes"]) >= 4


def test_the_text_report_names_an_unreadable_file_and_its_errno(host):
    host.link(ONLINE, EIO_FILE)
    r = clean(vmxprobe("scan", "--root", host.root))
    assert r.code == 0
    assert f"/{ONLINE} (EIO)" in r.out


def test_a_fifo_among_reports_does_not_hang_the_fleet(tmp_path):
    fifo = tmp_path / "web01.json"
    os.mkfifo(fifo)
    code = (
        "import sys; from vmxprobe.fleet import check as fleet_check\n"
        "try:\n    fleet_check.read_report(sys.argv[1])\n"
        "except fleet_check.Unreadable as e:\n    print('Unreadable', e)\n"
    )
    try:
        p = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=5, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        pytest.fail("fleet_check.read_report() blocked on a FIFO")
    assert p.stdout.startswith("Unreadable") and "not a regular file" in p.stdout
