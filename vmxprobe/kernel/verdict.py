"""What the kernel would decide, in the kernel's order: x86_vmx_init() (arch/x86/virt/hw.c)
and kvm_intel's stricter checks, each reason naming the register, bit and CPU that
decided it; and the running kernel's own view (/proc/cpuinfo) against the registers.
On AMD and Hygon hosts, x86_svm_init() and kvm_amd decide instead (the verdict's `virt`
is then "svm"); x86_vmx_init and kvm_intel are still given, and say -EOPNOTSUPP.

judge() gives the verdict up to x86_vmx_init()'s allocation step; with_allocation() takes
the outcome of that step (vmxprobe.kernel.pages) and gives the final verdict.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vmxprobe.arch import cpuid
from vmxprobe.arch.cpuid import CPUID_HYPERVISOR_BIT, CPUID_VMX_BIT, ECX
from vmxprobe.arch.svm import LEAF_MEM_ENCRYPT, MemEncrypt, VmCr, decode_mem_encrypt
from vmxprobe.arch.vmx import (
    MSR_IA32_FEAT_CTL,
    MSR_IA32_VMX_BASIC,
    FeatureControl,
    VmxBasic,
    decode_vmx_basic,
)
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.kernel import (
    access,
    cc_platform,
    cr4_reserved_bits,
    feat_ctl,
    flag_view,
    init_amd,
    kvm_amd,
    tboot,
    x86_vmx_init,
)
from vmxprobe.kernel import x86_svm_init as svm_init
from vmxprobe.kernel.capabilities import CapabilityAnalysis, analyse, hypervisor_signature
from vmxprobe.kernel.hypervisors import KVM_EVMCS_VERSION, KVM_VMCS12_REVISION, is_kvm_nested, synthetic_vmx
from vmxprobe.kernel.kvm_intel import ENOMEM, EOPNOTSUPP, load_kvm_intel, vmcs_configs
from vmxprobe.kernel.pages import Allocation
from vmxprobe.kernel.release import HW_C, MAINLINE, KernelModel, model_for
from vmxprobe.kernel.tboot import Tboot

OK = "ok"
# Which extension a verdict rests on: Intel's VMX (and every host whose vendor is not
# known), or AMD's SVM on AMD and Hygon CPUs.
VMX = "vmx"
SVM = "svm"


@dataclass(frozen=True)
class SvmState:
    """The AMD registers behind an SVM verdict, decoded once for the renderers."""

    vm_cr: VmCr | None = None  # the boot CPU's VM_CR as the kernel reads it (a fault reads 0)
    sev: cc_platform.SevGuest | None = None
    mem_encrypt: MemEncrypt | None = None  # the boot CPU's CPUID Fn8000_001F EAX
    svmdis: tuple[int, ...] = ()  # online CPUs whose VM_CR has SVMDIS set
    locked: tuple[int, ...] = ()  # online CPUs whose VM_CR has LOCK set
    no_svm: tuple[int, ...] = ()  # online CPUs whose CPUID has no SVM
    unread: tuple[int, ...] = ()  # online CPUs whose VM_CR could not be read


@dataclass(frozen=True)
class Verdict:
    x86_vmx_init: str | None = None  # ok | EOPNOTSUPP | EIO | ENOMEM | None (unknown)
    kvm_intel: str | None = None  # ok | EOPNOTSUPP | EIO | None (unknown)
    # x86_svm_init() and kvm_amd: ok | EOPNOTSUPP | EIO (kvm_amd) on AMD hosts; EOPNOTSUPP
    # on other vendors, as the kernel answers there; None when not determined (or the
    # vendor is not known).
    x86_svm_init: str | None = None
    kvm_amd: str | None = None
    virt: str = VMX
    svm: SvmState | None = None
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
    model: KernelModel = field(default_factory=lambda: KernelModel(MAINLINE, None))
    tboot: Tboot | None = None
    # When the outcome depends on what the host cannot show (whether tboot launched the
    # kernel): each possible outcome, one line each; the verdict is then not determined.
    conditional: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        if self.inconsistent or self.conditional:
            return False
        if self.virt == SVM:
            return self.x86_svm_init == OK and self.kvm_amd == OK
        return self.x86_vmx_init == OK and self.kvm_intel == OK

    @property
    def determined(self) -> bool:
        if self.inconsistent or self.conditional:
            return False
        if self.virt == SVM:
            # Either step refusing settles it: kvm_amd can be known to refuse (6.1 with a CPU
            # lacking SVM) while x86_svm_init, by 7.1's rules, still needs an unread VM_CR.
            steps = (self.x86_svm_init, self.kvm_amd)
            return any(e not in (None, OK) for e in steps) or None not in steps
        if self.x86_vmx_init is None:
            return False
        return self.x86_vmx_init != OK or self.kvm_intel is not None

    def with_allocation(self, allocation: Allocation) -> Verdict:
        """Step 4 of x86_vmx_init(), given the outcome of the allocation loop."""
        if not self.reaches_allocation:
            return self
        errno, reasons = x86_vmx_init.after_allocation(allocation)
        kvm = self.kvm_intel
        if not allocation.ok:
            if self.model.has(HW_C):
                # A failed x86_vmx_init() clears X86_FEATURE_VMX on every CPU: kvm_intel
                # never gets past its support check.
                kvm = EOPNOTSUPP
            elif self.kvm_intel_after_setup:
                # Up to 7.0 kvm_intel allocates these pages itself, in hardware_setup()'s
                # alloc_kvm_area(), before the per-CPU checks.
                kvm = ENOMEM
        return dataclasses.replace(self, x86_vmx_init=errno, reasons=self.reasons + reasons, kvm_intel=kvm)

    @property
    def kernel_allocates(self) -> bool:
        """Does this host's kernel allocate the root VMCS pages? From 7.1 x86_vmx_init()
        does, at boot, when it reaches its loop; up to 7.0 kvm_intel's alloc_kvm_area()
        does, in hardware_setup(), once its support check and setup_vmcs_config() on the
        loading CPU pass."""
        if self.model.has(HW_C):
            return self.reaches_allocation
        return self.reaches_allocation and self.kvm_intel_after_setup

    @property
    def kvm_intel_after_setup(self) -> bool:
        """kvm_intel got past its support check and setup_vmcs_config() on the loading CPU."""
        return self.kvm_intel_stage in ("compat", "ok")

    kvm_intel_stage: str | None = None  # where kvm_intel stops: init, setup, compat, ok


def judge(scan: HostReadings) -> Verdict:
    """Everything x86_vmx_init() decides before it allocates, and kvm_intel's checks, by
    the rules of the host's kernel release (kernel.release)."""
    model = model_for(scan.kernel)
    tb = tboot.detect(scan)
    if tb.launched is not None:
        return _with_svm(scan, _judge(scan, model, tb, tb.launched))
    decided_by = feat_ctl.tboot_decides(scan)
    plain = _with_svm(scan, _judge(scan, model, tb, False))
    if not decided_by or plain.virt == SVM:
        return plain
    # IA32_FEATURE_CONTROL bits 1 and 2 differ on some CPUs and the host cannot say
    # whether tboot launched the kernel: judge both ways, never pick one silently.
    under = _judge(scan, model, tb, True)
    cpus = format_cpulist(decided_by)
    if (plain.x86_vmx_init, plain.kvm_intel) == (under.x86_vmx_init, under.kvm_intel):
        return dataclasses.replace(
            plain,
            reasons=plain.reasons
            + (
                f"CPU(s) {cpus}: IA32_FEATURE_CONTROL bits 1 (VMX inside SMX) and 2 (outside) "
                f"differ, and whether tboot launched the kernel is not known ({tb.evidence}); "
                "the outcome is the same either way",
            ),
        )
    return dataclasses.replace(
        plain,
        conditional=(
            f"without tboot (bit 2 decides): {_outcome(plain)}",
            f"under tboot (bit 1 decides): {_outcome(under)}",
        ),
        reasons=plain.reasons + tuple(f"under tboot: {r}" for r in under.reasons if r not in plain.reasons),
        undetermined=plain.undetermined
        + (
            f"CPU(s) {cpus}: IA32_FEATURE_CONTROL bit 1 (VMX inside SMX) and bit 2 (outside) differ, "
            "so the outcome depends on whether tboot launched the kernel, which this host does not "
            f"show ({tb.evidence}): run as root with debugfs mounted (mount -t debugfs none "
            "/sys/kernel/debug) to settle it",
        ),
    )


def _outcome(v: Verdict) -> str:
    """One way of judging, as the conditional verdict lists it. Judged before the
    allocation step, x86_vmx_init has no errno yet when it reaches its loop: it succeeds
    there unless the pages cannot be had (the same pages either way, whose allocation the
    plan checks)."""
    init = v.x86_vmx_init or ("ok" if v.reaches_allocation else "unknown")
    return f"x86_vmx_init {init}, kvm_intel {v.kvm_intel or 'unknown'}"


def _judge(scan: HostReadings, model: KernelModel, tb: Tboot, under_tboot: bool) -> Verdict:
    reasons: list[str] = []
    undetermined = _topology_lines(scan)
    inconsistent = bool(undetermined)
    probed = sorted(scan.cpus)
    if not probed:
        undetermined.append(access.no_cpus(scan))
        return Verdict(undetermined=tuple(undetermined), inconsistent=inconsistent, model=model, tboot=tb)
    # x86 boots on CPU 0; x86_vmx_init() runs there, during identify_boot_cpu().
    boot = 0 if 0 in scan.cpus else probed[0]
    if boot != 0:
        reasons.append(f"CPU 0 is offline; CPU {boot} stands in for the boot CPU")
    if under_tboot and tb.launched:
        reasons.append(f"{tb.evidence}: IA32_FEATURE_CONTROL bit 1 (VMX inside SMX) decides, not bit 2")
    p = scan.cpus[boot]
    basic_value, fc_value = p.msr[MSR_IA32_VMX_BASIC].value, p.msr[MSR_IA32_FEAT_CTL].value
    syn = synthetic_vmx(basic_value or None, None)
    evmcs = bool(syn and syn.evmcs and syn.evmcs.kvm_uses_evmcs)
    # The boot CPU's registers, decoded once: the verdict and every renderer use these.
    basic = None if basic_value is None else decode_vmx_basic(basic_value)
    setups = vmcs_configs(scan, model, boot, evmcs)
    capsec = analyse(scan, boot, setups, basic)
    emulated = _label_hypervisor(p, capsec, reasons)
    step = x86_vmx_init.before_allocation(scan, boot, basic, under_tboot)
    reasons += step.reasons
    undetermined += step.undetermined
    vmx_init: str | None = step.errno
    kvm: str | None = None
    stage: str | None = None
    if step.errno is not None and model.has(HW_C):
        # x86_vmx_init() failed at boot and cleared X86_FEATURE_VMX on every CPU
        # (arch/x86/virt/hw.c): kvm_intel's support check refuses on any CPU.
        kvm, stage = EOPNOTSUPP, "init"
        reasons.append(
            "x86_vmx_init() failed, so the kernel cleared X86_FEATURE_VMX on every CPU: no vmx flag "
            "in /proc/cpuinfo, and kvm_intel refuses on whichever CPU loads it "
            '("kvm_intel: VMX not fully enabled on CPU N.  Check kernel logs and/or BIOS", -EOPNOTSUPP)'
        )
        if step.errno == x86_vmx_init.EOPNOTSUPP:
            reasons += kernel_view(scan, capsec, model, under_tboot)
    elif step.determined or step.errno is not None:
        cr4 = cr4_reserved_bits.check(scan, model)
        loaded = load_kvm_intel(
            scan,
            boot,
            step.basic or decode_vmx_basic(basic_value or 0),
            capsec,
            model,
            setups,
            cr4,
            under_tboot,
        )
        kvm, stage = loaded.errno, loaded.stage
        reasons += loaded.reasons
        undetermined += loaded.undetermined
        reasons += kernel_view(scan, capsec, model, under_tboot)
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
        model=model,
        tboot=tb,
        kvm_intel_stage=stage,
    )


def _topology_lines(scan: HostReadings) -> list[str]:
    """The CPU lists contradicting themselves: no verdict can be trusted then."""
    beyond = scan.topology.beyond_kernel_max
    if not beyond:
        return []
    return [
        f"the CPU lists name CPU(s) {format_cpulist(beyond)} beyond kernel_max "
        f"{scan.topology.kernel_max}, which no kernel can have: this tree or fixture is not "
        "one kernel's view, so the plan's size cannot be trusted; record the host again"
    ]


def _with_svm(scan: HostReadings, v: Verdict) -> Verdict:
    """Add x86_svm_init() and kvm_amd to a verdict; on an AMD or Hygon host they decide."""
    boot = v.boot_cpu
    if boot is None:
        return v
    amd = scan.is_amd(boot)
    if amd is None:
        return v
    if not amd:
        return dataclasses.replace(v, x86_svm_init=EOPNOTSUPP, kvm_amd=EOPNOTSUPP)
    model = v.model
    p = scan.cpus[boot]
    sev = cc_platform.sev_guest(p)
    init = svm_init.x86_svm_init(scan, boot, sev)
    loaded = kvm_amd.load_kvm_amd(scan, boot, model, sev, cr4_reserved_bits.check(scan, model))
    kvm = loaded.errno
    reasons: list[str] = []
    if model.has(HW_C):
        reasons += list(init.reasons) + list(loaded.reasons)
        if init.errno not in (None, OK) and kvm == OK:
            # No SVM ops were set up at boot: enabling virtualization when the module loads
            # fails in x86_virt_get_ref() (-EOPNOTSUPP), which KVM reports as -EIO.
            kvm = kvm_amd.EIO
            reasons.append(
                f'x86_svm_init() failed, so enabling SVM at load fails: "kvm: enabling virtualization '
                f'on CPU{boot} failed" (-EIO)'
            )
    else:
        reasons += list(loaded.reasons) + [f"on 7.1 and later: {r}" for r in init.reasons]
    reasons += _svm_hypervisor(p)
    reasons += init_amd.kernel_view(scan, model)
    note = access.vm_cr_access_note(p)
    if note and (init.errno is not None or kvm is not None):
        reasons.append(note)  # settled without it (no SVM in CPUID): say what was not read
    reasons.append(
        f"x86_vmx_init {v.x86_vmx_init or 'unknown'}, kvm_intel {v.kvm_intel or 'unknown'}: "
        f"{scan.vendor(boot)} CPUs have SVM (AMD-V), not VMX; the root VMCS plan does not apply"
    )
    undetermined = _topology_lines(scan)
    for line in init.undetermined + loaded.undetermined:
        if line not in undetermined:
            undetermined.append(line)
    return dataclasses.replace(
        v,
        virt=SVM,
        x86_svm_init=init.errno,
        kvm_amd=kvm,
        svm=_svm_state(scan, boot, sev),
        reasons=tuple(reasons),
        undetermined=tuple(undetermined),
        conditional=(),
        emulated=_svm_emulated(p),
    )


def _svm_state(scan: HostReadings, boot: int, sev: cc_platform.SevGuest) -> SvmState:
    regs = {c: init_amd.vm_cr_of(p)[0] for c, p in scan.cpus.items()}
    leaf = scan.cpus[boot].cpuid.get(LEAF_MEM_ENCRYPT)
    return SvmState(
        vm_cr=regs[boot],
        sev=sev,
        mem_encrypt=None if leaf is None or leaf.value is None else decode_mem_encrypt(leaf.value[0]),
        svmdis=tuple(sorted(c for c, r in regs.items() if r is not None and r.svmdis)),
        locked=tuple(sorted(c for c, r in regs.items() if r is not None and r.lock)),
        no_svm=tuple(sorted(c for c, p in scan.cpus.items() if p.has(cpuid.SVM) is False)),
        unread=tuple(sorted(c for c, r in regs.items() if r is None)),
    )


def _svm_emulated(p: CpuReadings) -> str | None:
    if not p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT) or not p.has(cpuid.SVM):
        return None
    return f"{hypervisor_signature(p) or 'an unnamed hypervisor'} nested SVM"


def _svm_hypervisor(p: CpuReadings) -> list[str]:
    who = _svm_emulated(p)
    if who is None:
        return []
    return [
        f"CPU {p.cpu}: running under {who.removesuffix(' nested SVM')} (CPUID.01H:ECX[31] = 1) with SVM in "
        "CPUID: SVM and VM_CR are what the hypervisor presents to its guest (nested SVM), not the hardware's"
    ]


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


def kernel_view(
    scan: HostReadings, capsec: CapabilityAnalysis, model: KernelModel, under_tboot: bool = False
) -> list[str]:
    """Compare the running kernel's vmx flag with what the registers imply, per CPU, and
    say where its "vmx flags" line disagrees with the registers."""
    out = []

    def predict(cpu: int) -> tuple[bool | None, bool]:
        predicted, _ = feat_ctl.vmx_feature(scan, cpu, under_tboot)
        return predicted, bool(scan.cpus[cpu].cpuid_bit(1, ECX, CPUID_VMX_BIT))

    view = flag_view.compare(scan, "vmx", predict)
    hidden, missing, extra = view.hidden, view.missing, view.extra
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
