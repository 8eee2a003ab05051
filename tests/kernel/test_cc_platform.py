"""cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT) on AMD (kernel/cc_platform.py):
arch/x86/coco/core.c answers sev_status & MSR_AMD64_SEV_ENABLED, and sme_enable()
(arch/x86/mm/mem_encrypt_identity.c) reads sev_status from MSR 0xc0010131 only when
CPUID Fn8000_0000 reaches Fn8000_001F and its EAX has SME (bit 0) or SEV (bit 1). The
same in 6.1 (read in Debian's 6.1.192) and later."""

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost, MsrReading
from vmxprobe.kernel.cc_platform import sev_guest

SEV = 0xC0010131


def boot_cpu(**kw):
    fx = fixture.parse(hostgen.amd_synthetic(2, **kw))
    return fx, read_host(FixtureHost(fx)).cpus[0]


@pytest.mark.parametrize("status,guest", [(0x1, True), (0x3, True), (0x7, True), (0x0, False), (0x4, False)])
def test_sev_status_bit_0_decides(status, guest):
    _, p = boot_cpu(mem_encrypt=0x2, sev_status=status)
    assert sev_guest(p).guest is guest


def test_no_leaf_no_read():
    # amd_synthetic without mem_encrypt: Fn8000_0000 EAX is 0x80000008.
    fx, p = boot_cpu()
    assert SEV not in p.msr
    got = sev_guest(p)
    assert got.guest is False and "no CPUID Fn8000_001F leaf" in got.why


def test_leaf_without_sme_or_sev_no_read():
    _, p = boot_cpu(mem_encrypt=0x8, sev_status=0x1)  # SEV-ES alone: not read by sme_enable()
    assert SEV not in p.msr
    assert sev_guest(p).guest is False


def test_a_faulting_sev_status_is_no_guest_and_an_unreadable_one_is_unknown():
    fx, _ = boot_cpu(mem_encrypt=0x2, sev_status=0x1)
    fx.msr[SEV][0] = MsrReading(errno="EIO")
    p = read_host(FixtureHost(fx)).cpus[0]
    assert sev_guest(p).guest is False
    fx.msr[SEV][0] = MsrReading(errno="EACCES")
    p = read_host(FixtureHost(fx)).cpus[0]
    got = sev_guest(p)
    assert got.guest is None and got.undetermined.startswith("cannot read SEV_STATUS (0xc0010131) on CPU 0")
