"""Tests for vmxprobe.kernel.access: the one-line errors for registers a scan could not
read. The causes are the drivers': arch/x86/kernel/msr.c msr_open() needs
CAP_SYS_RAWIO (EPERM) and a loaded driver (ENOENT without the device node);
arch/x86/kernel/cpuid.c has no capability check, only the device's mode."""

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading
from vmxprobe.kernel import access

LOCKED_ON = MsrReading(0x5)  # IA32_FEATURE_CONTROL: locked, VMX outside SMX
SKYLAKE_BASIC = MsrReading(0x00DA040000000004)  # fixtures/pub-skylake.json


def cpu0(fc=LOCKED_ON, basic=SKYLAKE_BASIC, leaf1=None):
    fx = fixture.parse(hostgen.synthetic(2, 1))
    fx.msr[0x3A] = {c: fc for c in range(2)}
    fx.msr[0x480] = {c: basic for c in range(2)}
    if leaf1 is not None:
        fx.cpuid[(1, 0)] = {c: leaf1 for c in range(2)}
    return read_host(FixtureHost(fx)).cpus[0]


def test_unreadable_names_register_cpu_errno_and_fix():
    line = access.unreadable(7, "IA32_VMX_BASIC (0x480)", MsrReading(errno="EPERM"))
    assert line.startswith("cannot read IA32_VMX_BASIC (0x480) on CPU 7 (EPERM): ")
    assert "CAP_SYS_RAWIO" in line and "\n" not in line


def test_cpuid_hints_differ_from_the_msr_ones():
    r = CpuidReading(errno="ENOENT")
    assert "modprobe cpuid" in access.unreadable(0, "CPUID leaf 1", r, access.CPUID_HINTS)
    assert "modprobe msr" in access.unreadable(0, "IA32_FEATURE_CONTROL (0x3a)", r)


def test_an_errno_without_a_hint_falls_back_to_its_meaning():
    line = access.unreadable(0, "IA32_VMX_BASIC (0x480)", MsrReading(errno="EINVAL"))
    assert "the driver rejected the read size or offset" in line
    assert "unexpected error" in access.unreadable(0, "x", MsrReading(errno="EWHATEVER"))


def test_unreadable_cpu_lists_the_msrs_first_then_cpuid():
    p = cpu0(
        fc=MsrReading(errno="EACCES"), basic=MsrReading(errno="EACCES"), leaf1=CpuidReading(errno="EACCES")
    )
    lines = access.unreadable_cpu(p)
    assert [line.split(" on CPU")[0] for line in lines] == [
        "cannot read IA32_FEATURE_CONTROL (0x3a)",
        "cannot read IA32_VMX_BASIC (0x480)",
        "cannot read CPUID leaf 1",
    ]
    # /proc/cpuinfo standing in for CPUID drops the CPUID line.
    assert len(access.unreadable_cpu(p, cpuinfo_answered=True)) == 2


def test_a_cpu_read_whole_has_nothing_to_report():
    p = cpu0()
    assert access.unreadable_cpu(p) == [] and access.basic_access_note(p) is None


def test_basic_access_note_only_for_access_errors():
    assert "EPERM" in access.basic_access_note(cpu0(basic=MsrReading(errno="EPERM")))
    # A fault (#GP) says something of the CPU, not of our access; an unrecorded value
    # says something of the fixture.
    assert access.basic_access_note(cpu0(basic=MsrReading(errno="EIO"))) is None
    assert access.basic_access_note(cpu0(basic=MsrReading(errno="UNRECORDED"))) is None


CPU = "sys/devices/system/cpu"


def _scan(doc, file_errors=None):
    fx = fixture.parse(doc)
    host = FixtureHost(fx)
    host.file_errors.update(file_errors or {})
    return read_host(host), fx


def test_a_driver_is_loaded_when_some_cpu_has_its_device():
    doc = hostgen.synthetic(4, 2)
    scan, _ = _scan(doc)
    assert access.drivers_loaded(scan) == {"msr", "cpuid"}
    # CPU 2 lost its nodes: the others show the drivers are there
    scan.cpus[2].msr = {i: MsrReading(errno="ENOENT") for i in scan.cpus[2].msr}
    assert access.drivers_loaded(scan) == {"msr", "cpuid"}
    why = access.unreadable_cpu(scan.cpus[2], True, access.drivers_loaded(scan))
    assert why[0].startswith("cannot read IA32_FEATURE_CONTROL (0x3a) on CPU 2 (ENOENT): no /dev/cpu/2/msr")
    assert all("modprobe" not in w for w in why)
    # no node on any CPU: the driver is what is missing
    for p in scan.cpus.values():
        p.msr = {i: MsrReading(errno="ENOENT") for i in p.msr}
    assert access.drivers_loaded(scan) == {"cpuid"}
    assert "run `modprobe msr`" in access.unreadable_cpu(scan.cpus[2], True, access.drivers_loaded(scan))[0]


def test_no_cpus_says_why_the_cpu_lists_gave_none():
    doc = hostgen.synthetic(2, 1)
    for name in ("possible", "present", "online"):
        del doc["files"][f"{CPU}/{name}"]
    scan, _ = _scan(doc)
    assert "(is this a Linux root?)" in access.no_cpus(scan)
    scan, _ = _scan(doc, {CPU: "EACCES", f"{CPU}/online": "EACCES"})
    assert access.no_cpus(scan) == (
        "cannot read /sys/devices/system/cpu (EACCES): it lists the CPUs, and this user may not "
        "read it: run as root (sudo vmxprobe scan)"
    )
    scan, _ = _scan(doc, {f"{CPU}/online": "EIO"})
    assert access.no_cpus(scan).startswith("cannot read /sys/devices/system/cpu/online (EIO)")
