"""Fault cells of the host layer (vmxprobe/host): listing CPUs, opening and reading the
msr and cpuid devices, reading sysfs and procfs files; and hostile trees, limits and
junk text, which must give a note or an errno, never a crash."""

from __future__ import annotations

import os

import pytest

from tests import hostgen
from tests.faults.matrix import (
    CPU,
    EINVAL_FILE,
    EIO_FILE,
    KMSG_CAPS,
    NO_DAC,
    NODE,
    Run,
    assert_ready_without,
    cell,
    cell_params,
    clean,
    is_root,
    kmsg_gives_eperm,
    not_ours,
    run_cell,
    scan,
    vmxprobe,
)

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
    if kmsg_gives_eperm():
        host.link(ONLINE, "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": ONLINE, "errno": "EPERM"}])
    assert r.code == 0
    assert_ready_without(r, ONLINE, "EPERM")
    assert f"/{ONLINE}" in r.report["topology"]["missing"]


@cell("list", "EACCES", 0, "real|mock")
def list_eacces(host):
    if is_root():
        not_ours(host.path(ONLINE))
        r = scan(host.root, drop_caps=NO_DAC)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": ONLINE, "errno": "EACCES"}])
    # The devices stay readable, so the verdict stands; only the list is unreadable.
    assert r.code == 0
    assert_ready_without(r, ONLINE, "EACCES")


@cell("list", "ENXIO", 0, "real")
def list_enxio(host):
    host.socket_at(ONLINE)
    r = scan(host.root)
    assert r.code == 0
    assert_ready_without(r, ONLINE, "ENXIO")


@cell("list", "EIO", 0, "real")
def list_eio(host):
    host.link(ONLINE, EIO_FILE)
    r = scan(host.root)
    assert r.code == 0
    assert_ready_without(r, ONLINE, "EIO")


@cell("list", "EINVAL", 0, "real")
def list_einval(host):
    host.link(ONLINE, EINVAL_FILE)
    r = scan(host.root)
    assert r.code == 0
    assert_ready_without(r, ONLINE, "EINVAL")


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
    assert_ready_without(r, ONLINE, "ENOMEM")


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
    if kmsg_gives_eperm():
        for cpu in range(4):
            host.link(_msr(cpu), "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": "/msr", "errno": "EPERM"}])
    _assert_undetermined(r, "CAP_SYS_RAWIO", "EPERM")


@cell("open", "EACCES", 3, "real|mock")
def open_eacces(host):
    if is_root():
        for cpu in range(4):
            not_ours(host.path(_msr(cpu)))
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
    if kmsg_gives_eperm():
        host.link(target, "/dev/kmsg")
        r = scan(host.root, drop_caps=KMSG_CAPS)
    else:
        r = scan(host.root, faults=[{"call": "open", "path": target, "errno": "EPERM"}])
    _assert_file_failure(r, target, "EPERM")


@cell("file", "EACCES", 0, "real|mock", targets=FILE_TARGETS)
def file_eacces(host, target):
    if is_root():
        not_ours(host.path(target))
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


# --- limits ------------------------------------------------------------------------------


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


@pytest.mark.parametrize("c,target", cell_params("list", "open", "read", "file"))
def test_cell(c, target, host):
    run_cell(c, target, host)
