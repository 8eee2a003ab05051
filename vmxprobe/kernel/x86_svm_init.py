"""x86_svm_init() (arch/x86/virt/hw.c, torvalds/linux 0eaed89c18ae, first released in 7.1):

    if (!cpu_feature_enabled(X86_FEATURE_SVM) ||
        cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT))
            return -EOPNOTSUPP;
    virt_ops = svm_ops; return 0;

It runs in identify_boot_cpu(), before any other CPU is identified, so only the boot CPU's
flag counts (after init_amd() has cleared it on VM_CR.SVMDIS). Unlike x86_vmx_init() it
allocates nothing and does not clear the flag when it fails; kvm_amd then finds no SVM
ops to enable (x86_virt_get_ref() returns -EOPNOTSUPP), but its own checks refuse first.

Before 7.1 no such step exists: the verdict's x86_svm_init is then what 7.1 would decide
on these registers, as for x86_vmx_init.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.host.readings import HostReadings
from vmxprobe.kernel import access
from vmxprobe.kernel.cc_platform import SevGuest
from vmxprobe.kernel.init_amd import svm_flag
from vmxprobe.kernel.release import MAINLINE, KernelModel

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"

# The flag as 7.1 has it: init_amd() clears it on SVMDIS (6.7 and later).
_HW_C_RULES = KernelModel(MAINLINE, None)


@dataclass(frozen=True)
class X86SvmInit:
    errno: str | None  # ok, EOPNOTSUPP, or None (not determined)
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()


def x86_svm_init(scan: HostReadings, boot: int, sev: SevGuest) -> X86SvmInit:
    """x86_svm_init() on the boot CPU, by 7.1's rules whatever the host's release."""
    p = scan.cpus[boot]
    if scan.is_amd(boot) is False:
        # No AMD or Hygon CPU has VMX, nor any other vendor's SVM: X86_FEATURE_SVM is never set.
        return X86SvmInit(
            EOPNOTSUPP, (f"CPU {boot}: {scan.vendor(boot)} CPU: no SVM; x86_svm_init() returns -EOPNOTSUPP",)
        )
    flag = svm_flag(scan, boot, _HW_C_RULES)
    if flag.has is None:
        answered = "flags" in scan.cpuinfo.get(boot, {})
        return X86SvmInit(None, undetermined=tuple(access.unreadable_svm(p, answered)))
    if not flag.has:
        return X86SvmInit(EOPNOTSUPP, (f"{flag.why}; x86_svm_init() returns -EOPNOTSUPP",))
    if sev.guest is None:
        return X86SvmInit(None, undetermined=(sev.undetermined or sev.why,))
    if sev.guest:
        return X86SvmInit(
            EOPNOTSUPP, (f"{sev.why}; x86_svm_init() returns -EOPNOTSUPP (no SVM for an SEV guest)",)
        )
    return X86SvmInit(
        OK,
        (
            f"CPU {boot}: X86_FEATURE_SVM survives identification and the kernel is not an SEV guest: "
            "x86_svm_init() succeeds and allocates nothing",
        ),
    )
