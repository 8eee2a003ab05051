"""cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT) on an AMD CPU: is the kernel an SEV guest?

arch/x86/coco/core.c: for CC_VENDOR_AMD the attribute is sev_status & MSR_AMD64_SEV_ENABLED.
sev_status is read once, on the boot CPU, by sme_enable() (arch/x86/mm/mem_encrypt_identity.c),
and only when CPUID Fn8000_0000 EAX reaches Fn8000_001F and that leaf's EAX offers SME
(bit 0) or SEV (bit 1); with the SEV bit set in it, sme_enable() also makes the platform
CC_VENDOR_AMD. Same in 6.1 and later releases.

Not modelled: Hyper-V isolated guests, for which hyperv_cc_platform_has() answers yes too
(their CPUID shows no SVM, so x86_svm_init() and kvm_amd refuse them on that ground first).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.cpuid import EAX, LEAF_EXT_MAX
from vmxprobe.arch.svm import (
    LEAF_MEM_ENCRYPT,
    MSR_AMD64_SEV,
    SevStatus,
    decode_mem_encrypt,
    decode_sev_status,
)
from vmxprobe.host.readings import CpuReadings
from vmxprobe.host.sources import UNRECORDED, MsrReading
from vmxprobe.kernel import access

# What the kernel prints, and what KVM prints when it refuses for this reason.
SEV_GUEST_MESSAGE = "KVM is unsupported when running as an SEV guest"


@dataclass(frozen=True)
class SevGuest:
    """The answer for the boot CPU: True, False or None (cannot tell), and why."""

    guest: bool | None
    why: str
    status: SevStatus | None = None  # SEV_STATUS as read, when it was
    undetermined: str | None = None  # one line: what could not be read, and the fix


def sev_guest(p: CpuReadings) -> SevGuest:
    """cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT), from the boot CPU's registers."""
    ext = p.cpuid.get(LEAF_EXT_MAX)
    if ext is not None and ext.value is not None and ext.value[EAX] < LEAF_MEM_ENCRYPT:
        return SevGuest(False, f"CPU {p.cpu}: no CPUID Fn8000_001F leaf: sme_enable() reads no SEV_STATUS")
    leaf = p.cpuid.get(LEAF_MEM_ENCRYPT)
    if leaf is not None and leaf.value is not None:
        me = decode_mem_encrypt(leaf.value[EAX])
        if not me.reads_sev_status:
            return SevGuest(
                False,
                f"CPU {p.cpu}: CPUID Fn8000_001F EAX = 0x{me.eax:08x} offers neither SME nor SEV: "
                "sme_enable() reads no SEV_STATUS",
            )
    r = p.msr.get(MSR_AMD64_SEV) or MsrReading(errno=UNRECORDED)
    if r.value is None and r.errno != "EIO":
        line = access.unreadable(p.cpu, "SEV_STATUS (0xc0010131)", r)
        return SevGuest(None, f"CPU {p.cpu}: SEV_STATUS (0xc0010131) not read ({r.errno})", undetermined=line)
    if r.value is None:
        # A CPU without the register: the msr driver reports the fault as EIO. A real
        # SEV guest always has it, so this is not one.
        return SevGuest(False, f"CPU {p.cpu}: SEV_STATUS (0xc0010131) faults (EIO): not an SEV guest")
    status = decode_sev_status(r.value)
    if status.sev:
        return SevGuest(
            True,
            f"CPU {p.cpu}: SEV_STATUS (0xc0010131) = {status.raw}: bit 0 (SEV) set, so the kernel is an "
            f'SEV guest ("Memory Encryption Features active: AMD {status.active}"): '
            "cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT) is true",
            status,
        )
    return SevGuest(False, f"CPU {p.cpu}: SEV_STATUS (0xc0010131) = {status.raw}: not an SEV guest", status)
