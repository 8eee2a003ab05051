"""x86_vmx_init() (arch/x86/virt/hw.c), step by step:

    1. if (!cpu_feature_enabled(X86_FEATURE_VMX)) return -EOPNOTSUPP;
    2. rdmsrq(MSR_IA32_VMX_BASIC, basic_msr);            once, on the boot CPU
    3. if (WARN_ON_ONCE(vmx_basic_vmcs_size(basic_msr) > PAGE_SIZE)) return -EIO;
    4. for_each_possible_cpu(cpu): one zeroed page on cpu_to_node(cpu), the revision id
       in its header; a failed page frees them all and returns -ENOMEM.

before_allocation() judges steps 1-3 from the readings; after_allocation() takes the
outcome of step 4, which vmxprobe.kernel.pages mirrors with real pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.cpuid import CPUID_HYPERVISOR_BIT, CPUID_VMX_BIT, ECX, cpuid_vendor
from vmxprobe.arch.vmx import (
    FC_UNLOCKED,
    MSR_IA32_FEAT_CTL,
    MSR_IA32_VMX_BASIC,
    PAGE_SIZE,
    VmxBasic,
    decode_vmx_basic,
)
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.kernel import access, feat_ctl
from vmxprobe.kernel.capabilities import hypervisor_signature
from vmxprobe.kernel.pages import Allocation

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"
EIO = "EIO"
ENOMEM = "ENOMEM"


@dataclass(frozen=True)
class BeforeAllocation:
    """Steps 1-3 of x86_vmx_init() on the boot CPU."""

    errno: str | None  # EOPNOTSUPP or EIO when it stops; None otherwise
    determined: bool  # False when the registers it needs could not be read
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()
    revision_id: int | None = None  # what step 4 would stamp
    basic: VmxBasic | None = None  # the IA32_VMX_BASIC it works with (0 if it faults)

    @property
    def reaches_allocation(self) -> bool:
        return self.determined and self.errno is None


def _vendor(p: CpuReadings) -> str | None:
    r = p.cpuid.get(0)
    return cpuid_vendor(r.value) if r is not None and r.value is not None else None


def before_allocation(
    scan: HostReadings, boot: int, read: VmxBasic | None, tboot: bool = False
) -> BeforeAllocation:
    """Steps 1-3, with the reasons for each decision. `read` is the boot CPU's
    IA32_VMX_BASIC as read (None when the read failed); `tboot` says the kernel was
    launched by tboot (feat_ctl then needs VMX inside SMX)."""
    p = scan.cpus[boot]
    reasons: list[str] = []
    # 1. if (!cpu_feature_enabled(X86_FEATURE_VMX)) return -EOPNOTSUPP;
    # x86_virt_init() runs in identify_boot_cpu(), before any other CPU is identified: only
    # the boot CPU's own flag counts here.
    has_vmx, why = feat_ctl.vmx_feature(scan, boot, tboot)
    if has_vmx is None:
        loaded = access.drivers_loaded(scan)
        causes = access.unreadable_cpu(p, "flags" in scan.cpuinfo.get(p.cpu, {}), loaded)
        return BeforeAllocation(None, False, undetermined=tuple(causes))
    if not has_vmx:
        reasons.append(f"{why}; x86_vmx_init() returns -EOPNOTSUPP")
        if p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT) and p.cpuid_bit(1, ECX, CPUID_VMX_BIT) is False:
            reasons.append(
                f"this is a guest of {hypervisor_signature(p) or 'a hypervisor'} "
                "(CPUID.01H:ECX[31] = 1) that does not expose VMX to it: enable "
                "nested virtualization on the host to use VMX here"
            )
        vendor = _vendor(p)
        if vendor in ("AuthenticAMD", "HygonGenuine"):
            reasons.append(f"{vendor} CPU: it has SVM (AMD-V), not VMX; the root VMCS plan does not apply")
        note = access.basic_access_note(p)
        if note:
            reasons.append(note)
        revision = read.revision_id if read is not None and read.value else None
        return BeforeAllocation(EOPNOTSUPP, True, tuple(reasons), revision_id=revision)
    fc = p.msr[MSR_IA32_FEAT_CTL]
    if fc.value is not None and feat_ctl.feature_control(fc.value).state == FC_UNLOCKED:
        reasons.append(
            f"CPU {boot}: IA32_FEATURE_CONTROL (0x3a) = 0x{fc.value:016x} is "
            "unlocked (bit 0 clear): init_ia32_feat_ctl() locks it at boot with "
            "VMX outside SMX on, if the kernel is built with CONFIG_KVM_INTEL"
        )

    # 2. rdmsrq(MSR_IA32_VMX_BASIC, basic_msr): once, on the boot CPU.
    r = p.msr[MSR_IA32_VMX_BASIC]
    if r.value is None and r.errno != "EIO":
        cause = access.unreadable(boot, "IA32_VMX_BASIC (0x480)", r, loaded=access.drivers_loaded(scan))
        return BeforeAllocation(None, False, tuple(reasons), (cause,))
    if not r.value:
        # An unchecked rdmsr that faults reads as 0 (with an "unchecked MSR access
        # error" warning); some hypervisors return 0 outright. Either way the kernel
        # goes on with revision 0 and size 0: the pages are allocated, and VMXON on
        # them would fail.
        got = "faults (EIO)" if not r.ok else "reads 0"
        reasons.append(
            f"CPU {boot}: IA32_VMX_BASIC (0x480) {got} although CPUID offers "
            "VMX: not exposed by the hypervisor; x86_vmx_init() would stamp "
            "revision 0, which VMXON rejects"
        )
    basic = read if read is not None else decode_vmx_basic(0)

    # 3. if (WARN_ON_ONCE(vmx_basic_vmcs_size(basic_msr) > PAGE_SIZE)) return -EIO;
    if basic.vmcs_size > PAGE_SIZE:
        reasons.append(
            f"CPU {boot}: IA32_VMX_BASIC (0x480) = {basic.raw}: VMCS size "
            f"(bits 44:32) = {basic.vmcs_size} > PAGE_SIZE {PAGE_SIZE}; "
            "x86_vmx_init() warns and returns -EIO"
        )
        return BeforeAllocation(EIO, True, tuple(reasons), revision_id=basic.revision_id, basic=basic)
    reasons.append(
        f"CPU {boot}: IA32_VMX_BASIC (0x480) = {basic.raw}: revision id "
        f"0x{basic.revision_id:x} (bits 30:0), VMCS size {basic.vmcs_size} "
        f"(bits 44:32) <= PAGE_SIZE, memory type {basic.memory_type} "
        f"({basic.memory_type_name})"
    )
    if basic.reserved:
        reasons.append(
            f"CPU {boot}: IA32_VMX_BASIC reserved bit(s) {', '.join(map(str, basic.reserved))} are set"
        )
    return BeforeAllocation(None, True, tuple(reasons), revision_id=basic.revision_id, basic=basic)


def after_allocation(allocation: Allocation) -> tuple[str, tuple[str, ...]]:
    """Step 4: for_each_possible_cpu(): one zeroed page on cpu_to_node(cpu), all or
    nothing. Returns x86_vmx_init()'s errno ("ok" or ENOMEM) and what to add to the
    reasons."""
    if allocation.ok:
        return OK, ()
    # The mirror follows the kernel's all-or-nothing rule: a page that cannot be had
    # releases everything and yields -ENOMEM. The page here is vmxprobe's own, so the
    # reason says so: the kernel's boot-time allocation may fare differently.
    return ENOMEM, (
        f"allocating the root VMCS page for CPU {allocation.cpu} failed in this "
        "mirror of the plan: every page taken so far was released and, by its "
        "all-or-nothing rule, x86_vmx_init() returns -ENOMEM (the kernel "
        "allocates its own pages at boot and may fare differently)",
        # A node this machine lacks is EINVAL from mbind(2), not a shortage: say what
        # really failed.
        f"the page of CPU {allocation.cpu} (node {allocation.node}, served by node "
        f"{allocation.serving_node}): {allocation.reason}",
    )
