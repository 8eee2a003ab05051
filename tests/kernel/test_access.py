"""vmxprobe/kernel/access.py: what stops a scan from reading the registers, said so that
the fix it names is the right one."""

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost, MsrReading
from vmxprobe.kernel import access

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
