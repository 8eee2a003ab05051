"""Tests for vmxprobe.host.identity: the boot CPU's vendor, family/model/stepping, model
name and hypervisor, and the kernel release. CPUID is decoded as SDM Vol. 2A Figure 3-6
says; the kernel's own /proc/cpuinfo (arch/x86/kernel/cpu/proc.c) is the check, and the
stand-in where the cpuid device could not be read."""

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.identity import HostIdentity, identify
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost

# Recorded in a Bochs guest (Skylake-X model) running Debian's 6.1 kernel: its CPUID
# leaves and its own /proc/cpuinfo were both read there (fixtures/*.json provenance).
RECORDED = "bochs-skylake-x-debian"


def scan_of(fx):
    return read_host(FixtureHost(fx))


def test_cpuid_decodes_as_the_kernel_printed_it():
    scan = scan_of(fixture.load(RECORDED))
    ident = identify(scan, 0)
    info = scan.cpuinfo[0]
    assert ident.vendor == info["vendor_id"] == "GenuineIntel"
    assert (ident.family, ident.model, ident.stepping) == (
        int(info["cpu family"]),
        int(info["model"]),
        int(info["stepping"]),
    )
    assert ident.model_name == info["model name"] and ident.hypervisor is None
    assert ident.kernel == "6.1.0-57-amd64"


def test_a_kvm_guest_names_its_hypervisor():
    assert identify(scan_of(fixture.load("kvm-nested-guest")), 0).hypervisor == "KVM"


CPUINFO_ONLY = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Platinum 8480+\nstepping\t: 8\n"
    "flags\t\t: fpu vmx hypervisor\n\n"
)


def cpuid_unreadable(cpuinfo):
    fx = fixture.parse(hostgen.synthetic(1, 1))
    for leaf in list(fx.cpuid):
        fx.cpuid[leaf] = {0: CpuidReading(errno="EACCES")}
    fx.files["proc/cpuinfo"] = cpuinfo
    return scan_of(fx)


def test_proc_cpuinfo_stands_in_when_cpuid_cannot_be_read():
    ident = identify(cpuid_unreadable(CPUINFO_ONLY), 0)
    assert (ident.vendor, ident.family, ident.model, ident.stepping) == ("GenuineIntel", 6, 143, 8)
    assert ident.model_name == "Intel(R) Xeon(R) Platinum 8480+"
    # The "hypervisor" flag says there is one; without CPUID its name is not known.
    assert ident.hypervisor == "unknown"


def test_non_numeric_cpuinfo_fields_stay_unknown():
    text = CPUINFO_ONLY.replace("model\t\t: 143", "model\t\t: unknown").replace(" hypervisor", "")
    ident = identify(cpuid_unreadable(text), 0)
    assert ident.model is None and ident.family == 6 and ident.hypervisor is None


def test_no_boot_cpu_and_nothing_read_is_all_unknown():
    ident = identify(cpuid_unreadable(""), None)
    assert ident == HostIdentity(kernel=ident.kernel)


@pytest.mark.parametrize("family, expected", [("6", 6), ("²", None), ("9" * 5000, None), ("", None)])
def test_cpuinfo_stands_in_for_cpuid_with_ascii_numbers_only(family, expected):
    doc = hostgen.synthetic(2, 1)
    doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace(
        "cpu family\t: 6", f"cpu family\t: {family}"
    )
    del doc["cpuid"]["0x00000001:0x0"]  # no CPUID leaf 1: cpuinfo answers
    host = identify(read_host(FixtureHost(fixture.parse(doc))), 0)
    assert host.family == expected and host.model == 85
