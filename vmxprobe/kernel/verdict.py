"""What the kernel would decide, in the kernel's order: x86_vmx_init() (arch/x86/virt/hw.c)
and kvm_intel's stricter checks, each reason naming the register, bit and CPU that
decided it; and the running kernel's own view (/proc/cpuinfo) against the registers.

judge() gives the verdict up to x86_vmx_init()'s allocation step; with_allocation() takes
the outcome of that step (vmxprobe.kernel.pages) and gives the final verdict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vmxprobe.arch.cpuid import CPUID_HYPERVISOR_BIT, CPUID_VMX_BIT, ECX
from vmxprobe.arch.vmx import (
    MSR_IA32_FEAT_CTL,
    MSR_IA32_VMX_BASIC,
    FeatureControl,
    VmxBasic,
    decode_vmx_basic,
)
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.kernel import access, feat_ctl, x86_vmx_init
from vmxprobe.kernel.capabilities import CapabilityAnalysis, analyse, hypervisor_signature
from vmxprobe.kernel.hypervisors import KVM_EVMCS_VERSION, KVM_VMCS12_REVISION, is_kvm_nested
from vmxprobe.kernel.kvm_intel import EOPNOTSUPP, load_kvm_intel
from vmxprobe.kernel.pages import Allocation

OK = "ok"


@dataclass(frozen=True)
class Verdict:
    x86_vmx_init: str | None = None  # ok | EOPNOTSUPP | EIO | ENOMEM | None (unknown)
    kvm_intel: str | None = None  # ok | EOPNOTSUPP | EIO | None (unknown)
    boot_cpu: int | None = None
    revision_id: int | None = None  # what x86_vmx_init() would stamp, when it gets there
    reaches_allocation: bool = False
    emulated: str | None = None  # who made the VMX values up, when not the hardware
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()  # one line each: cause and fix
    inconsistent: bool = False  # the host's own facts contradict each other
    capabilities: CapabilityAnalysis = field(default_factory=lambda: CapabilityAnalysis(None))
    basic: VmxBasic | None = None  # the boot CPU's IA32_VMX_BASIC, as read
    feature_control: FeatureControl | None = None  # the boot CPU's IA32_FEATURE_CONTROL

    @property
    def ready(self) -> bool:
        return not self.inconsistent and self.x86_vmx_init == OK and self.kvm_intel == OK

    @property
    def determined(self) -> bool:
        if self.inconsistent or self.x86_vmx_init is None:
            return False
        return self.x86_vmx_init != OK or self.kvm_intel is not None

    def with_allocation(self, allocation: Allocation) -> Verdict:
        """Step 4 of x86_vmx_init(), given the outcome of the allocation loop."""
        if not self.reaches_allocation:
            return self
        errno, reasons = x86_vmx_init.after_allocation(allocation)
        return dataclasses.replace(
            self,
            x86_vmx_init=errno,
            reasons=self.reasons + reasons,
            kvm_intel=self.kvm_intel if allocation.ok else EOPNOTSUPP,
        )


def judge(scan: HostReadings) -> Verdict:
    """Everything x86_vmx_init() decides before it allocates, and kvm_intel's checks."""
    reasons: list[str] = []
    undetermined: list[str] = []
    inconsistent = False
    beyond = scan.topology.beyond_kernel_max
    if beyond:
        inconsistent = True
        undetermined.append(
            f"the CPU lists name CPU(s) {format_cpulist(beyond)} beyond kernel_max "
            f"{scan.topology.kernel_max}, which no kernel can have: this tree or fixture is not "
            "one kernel's view, so the plan's size cannot be trusted; record the host again"
        )
    probed = sorted(scan.cpus)
    if not probed:
        undetermined.append(access.no_cpus(scan))
        return Verdict(undetermined=tuple(undetermined), inconsistent=inconsistent)
    # x86 boots on CPU 0; x86_vmx_init() runs there, during identify_boot_cpu().
    boot = 0 if 0 in scan.cpus else probed[0]
    if boot != 0:
        reasons.append(f"CPU 0 is offline; CPU {boot} stands in for the boot CPU")
    p = scan.cpus[boot]
    capsec = analyse(scan, boot)
    emulated = _label_hypervisor(p, capsec, reasons)
    # The boot CPU's registers, decoded once: the verdict and every renderer use these.
    basic_value, fc_value = p.msr[MSR_IA32_VMX_BASIC].value, p.msr[MSR_IA32_FEAT_CTL].value
    basic = None if basic_value is None else decode_vmx_basic(basic_value)
    step = x86_vmx_init.before_allocation(scan, boot, basic)
    reasons += step.reasons
    undetermined += step.undetermined
    vmx_init: str | None = step.errno
    kvm: str | None = None
    if step.errno is not None:
        # x86_vmx_init() stops; kvm_intel, which needs X86_FEATURE_VMX, stops too.
        kvm = EOPNOTSUPP
        if step.errno == x86_vmx_init.EOPNOTSUPP:
            reasons += kernel_view(scan, capsec)
    elif step.reaches_allocation and step.basic is not None:
        loaded = load_kvm_intel(scan, boot, step.basic, capsec)
        kvm = loaded.errno
        reasons += loaded.reasons
        undetermined += loaded.undetermined
        reasons += kernel_view(scan, capsec)
    return Verdict(
        x86_vmx_init=vmx_init,
        kvm_intel=kvm,
        boot_cpu=boot,
        revision_id=step.revision_id,
        reaches_allocation=step.reaches_allocation,
        emulated=emulated,
        reasons=tuple(reasons),
        undetermined=tuple(undetermined),
        inconsistent=inconsistent,
        capabilities=capsec,
        basic=basic,
        feature_control=None if fc_value is None else feat_ctl.feature_control(fc_value),
    )


def _label_hypervisor(p: CpuReadings, capsec: CapabilityAnalysis, reasons: list[str]) -> str | None:
    """Who made the VMX values up, with the reasons that say so; None on bare metal."""
    r = p.msr[MSR_IA32_VMX_BASIC]
    hv_bit = p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT)
    kvm_revision = is_kvm_nested(r.value)
    if not hv_bit and not kvm_revision:
        return None
    emulated = None
    name = hypervisor_signature(p) or "an unnamed hypervisor"
    if kvm_revision:
        emulated = "KVM nested VMX"
        reasons.append(
            f"CPU {p.cpu}: IA32_VMX_BASIC revision 0x{KVM_VMCS12_REVISION:x} is "
            "KVM's VMCS12_REVISION: these are the VMX capabilities KVM emulates "
            "for its guest (nested VMX), not the hardware's"
            + ("" if hv_bit else " (although CPUID.01H:ECX[31] hides the hypervisor)")
        )
    elif r.value:
        emulated = name
        syn = capsec.synthetic
        reasons.append(
            f"CPU {p.cpu}: running under {name} (CPUID.01H:ECX[31] = 1): the VMX "
            "registers read are the ones the hypervisor presents, not the hardware's"
            + (f"; {syn.how}" if syn is not None and syn.how else "")
        )
    ev = capsec.synthetic.evmcs if capsec.synthetic is not None else None
    if ev and ev.kvm_uses_evmcs:
        reasons.append(
            f"CPU {p.cpu}: Hyper-V recommends the enlightened VMCS (CPUID 0x40000004 EAX bit 14) "
            f"and offers eVMCS versions {ev.version_low}-{ev.version_high}: kvm_intel here "
            f"uses eVMCS v{KVM_EVMCS_VERSION}, stamping its VMCSs with revision "
            f"{KVM_EVMCS_VERSION} (KVM_EVMCS_VERSION) while the root VMXON pages keep "
            "IA32_VMX_BASIC's revision, as planned here (alloc_kvm_area())"
        )
    elif ev and ev.recommended:
        reasons.append(
            f"CPU {p.cpu}: Hyper-V recommends the enlightened VMCS but offers no "
            f"version kvm_intel implements (v{KVM_EVMCS_VERSION}): kvm_intel "
            "uses ordinary VMCSs"
        )
    return emulated


def kernel_view(scan: HostReadings, capsec: CapabilityAnalysis) -> list[str]:
    """Compare the running kernel's vmx flag with what the registers imply, per CPU, and
    say where its "vmx flags" line disagrees with the registers."""
    out = []
    hidden: list[int] = []
    missing: list[int] = []
    extra: list[int] = []
    for cpu in sorted(scan.cpus):
        info = scan.cpuinfo.get(cpu)
        if info is None:
            continue
        flag = "vmx" in info["flags"]
        predicted, _ = feat_ctl.vmx_feature(scan, cpu)
        cpuid_vmx = scan.cpus[cpu].cpuid_bit(1, ECX, CPUID_VMX_BIT)
        if predicted is None or flag == predicted:
            if not flag and cpuid_vmx:
                hidden.append(cpu)
            continue
        (extra if flag else missing).append(cpu)
    if hidden:
        out.append(
            f"kernel view: /proc/cpuinfo shows no vmx flag on CPU(s) "
            f"{format_cpulist(hidden)} although CPUID reports VMX: since Linux 5.6 "
            "the kernel hides the flag when IA32_FEATURE_CONTROL locks VMX off, so "
            "tools that read the flag (kvm-ok, virt-host-validate, lscpu) report "
            '"no VT-x" for what is a firmware setting'
        )
    if missing:
        out.append(
            f"kernel view: /proc/cpuinfo shows no vmx flag on CPU(s) "
            f"{format_cpulist(missing)} although the registers allow VMX: the "
            "running kernel cleared it (clearcpuid/nosmx, a failed VMX set-up at "
            "boot, or a kernel whose feat_ctl.c differs)"
        )
    if extra:
        out.append(
            f"kernel view: /proc/cpuinfo shows the vmx flag on CPU(s) "
            f"{format_cpulist(extra)} although the registers turn VMX off: kernels "
            "before 5.6 kept the flag when firmware disabled VMX"
        )
    for k in capsec.kernel_view:
        flags = ", ".join(["-" + f for f in k.missing] + ["+" + f for f in k.extra])
        out.append(
            f'kernel view: "vmx flags" in /proc/cpuinfo on CPU(s) {format_cpulist(k.cpus)} '
            f"disagree with the registers{' (' + flags + ')' if flags else ''}: " + "; ".join(k.why)
        )
    return out
