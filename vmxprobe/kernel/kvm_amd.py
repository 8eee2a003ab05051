"""Loading kvm_amd, in the kernel's order, by kernel release (arch/x86/kvm/svm/svm.c).

1. The support check on the CPU that runs the module's init:
   - 6.1: kvm_x86_vendor_init() (arch/x86/kvm/x86.c) calls has_svm(): cpu_has_svm()
     (arch/x86/include/asm/virtext.h) asks boot_cpu_data, the AND of every CPU, for an
     AMD or Hygon vendor and X86_FEATURE_SVM (printk "has_svm: ..."), then refuses an SEV
     guest; failing, "kvm: no hardware support for 'kvm_amd'". Then is_disabled() reads
     VM_CR on the loading CPU alone: SVMDIS gives "kvm: support for 'kvm_amd' disabled
     by bios". Both -EOPNOTSUPP.
   - 6.3-6.5: svm_init() calls kvm_is_svm_supported(): cpu_has_svm() on boot_cpu_data
     ("SVM not supported by CPU %d, %s"), the SEV guest, then VM_CR on the loading CPU
     ("SVM disabled (by BIOS) in MSR_VM_CR on CPU %d"); -EOPNOTSUPP.
   - 6.6: __kvm_is_svm_supported() asks the loading CPU's own cpu_data: vendor ("CPU %d
     isn't AMD or Hygon"), its X86_FEATURE_SVM ("SVM not supported by CPU %d"), the SEV
     guest, its VM_CR ("SVM disabled (by BIOS) in MSR_VM_CR on CPU %d") (kvm-x86-misc-6.6,
     "KVM: SVM: Check that the current CPU supports SVM in kvm_is_svm_supported()").
   - 6.7 on: the same without the VM_CR read: init_amd() has already cleared
     X86_FEATURE_SVM on every CPU whose VM_CR has SVMDIS (kernel.init_amd).
2. The per-CPU compatibility check on every online CPU, ascending, first failure winning:
   the CR4 reserved bits against boot_cpu_data (kernel.cr4_reserved_bits), then
   svm_check_processor_compat(): 0 in 6.1; from 6.3 the support check above on that CPU,
   -EIO.

Messages carry the prefix the release gives them: none or "kvm: " in 6.1 (svm.c's own
pr_info() says "SVM: "), "kvm_amd: " from 6.3 (pr_fmt is the module name). The loading
CPU is whichever CPU runs modprobe; the verdict takes the boot CPU and says where another
would change the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.svm import VmCr
from vmxprobe.host.cpulist import every_online, format_cpulist
from vmxprobe.host.readings import HostReadings
from vmxprobe.kernel import access, cr4_reserved_bits
from vmxprobe.kernel.cc_platform import SEV_GUEST_MESSAGE, SevGuest
from vmxprobe.kernel.cr4_reserved_bits import Cr4Check
from vmxprobe.kernel.init_amd import SvmFlag, svm_flag, svmdis_line, vm_cr_of
from vmxprobe.kernel.release import SVM_CPU_DATA, SVM_PER_CPU, SVMDIS_CLEARS_FLAG, KernelModel

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"
EIO = "EIO"

NO_SUPPORT_61 = "kvm: no hardware support for 'kvm_amd'"
DISABLED_61 = "kvm: support for 'kvm_amd' disabled by bios"


@dataclass(frozen=True)
class KvmAmd:
    """What loading kvm_amd returns: "ok", an errno name, or None (not determined)."""

    errno: str | None
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()
    stage: str | None = None  # where it stops: "init", "compat"; "ok"; None


@dataclass
class _Host:
    """What the checks ask of each online CPU, computed once."""

    scan: HostReadings
    model: KernelModel
    flags: dict[int, SvmFlag]
    regs: dict[int, VmCr | None]

    def unreadable(self, cpu: int) -> list[str]:
        answered = "flags" in self.scan.cpuinfo.get(cpu, {})
        return access.unreadable_svm(self.scan.cpus[cpu], answered)


def _not_supported(h: _Host, cpu: int, boot_has: bool | None, vendor_ok: bool) -> str | None:
    """The support check on `cpu` (step 1's message without its errno), None if it passes.
    Raises LookupError when what it needs could not be read."""
    m = h.model
    if not m.has(SVM_PER_CPU):
        if not vendor_ok:
            return f'"has_svm: not amd or hygon", then "{NO_SUPPORT_61}"'
        if boot_has is None:
            raise LookupError
        if not boot_has:
            return f'"has_svm: svm not available", then "{NO_SUPPORT_61}"'
        return None
    if not m.has(SVM_CPU_DATA):
        if not vendor_ok:
            return f'"kvm_amd: SVM not supported by CPU {cpu}, not amd or hygon"'
        if boot_has is None:
            raise LookupError
        if not boot_has:
            return f'"kvm_amd: SVM not supported by CPU {cpu}, svm not available"'
        return None
    if not vendor_ok:
        return f'"kvm_amd: CPU {cpu} isn\'t AMD or Hygon"'
    has = h.flags[cpu].has
    if has is None:
        raise LookupError
    if not has:
        return f'"kvm_amd: SVM not supported by CPU {cpu}"'
    return None


def _vm_cr_refuses(h: _Host, cpu: int) -> str | None:
    """The VM_CR read kvm_amd itself makes (6.1 on the loading CPU, 6.3-6.6 on each CPU);
    LookupError when VM_CR could not be read. 6.7 and later read none."""
    m = h.model
    if m.has(SVMDIS_CLEARS_FLAG):
        return None
    reg = h.regs[cpu]
    if reg is None:
        raise LookupError
    if not reg.svmdis:
        return None
    where = f"CPU {cpu}: VM_CR (0xc0010114) = {reg.raw}: SVMDIS (bit 4) set"
    if not m.has(SVM_PER_CPU):
        return f'{where}; is_disabled() on the loading CPU: "{DISABLED_61}"'
    return f'{where}: "kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU {cpu}"'


def load_kvm_amd(scan: HostReadings, boot: int, model: KernelModel, sev: SevGuest, cr4: Cr4Check) -> KvmAmd:
    """Steps 1-2 of the module docstring, with the boot CPU loading the module."""
    online = sorted(scan.cpus)
    h = _Host(
        scan,
        model,
        {c: svm_flag(scan, c, model) for c in online},
        {c: vm_cr_of(scan.cpus[c])[0] for c in online},
    )
    reasons: list[str] = []
    undetermined: list[str] = []
    vendor = scan.is_amd(boot)
    if vendor is None:
        return KvmAmd(None, undetermined=tuple(h.unreadable(boot)) or (f"CPU {boot}: vendor not known",))
    # boot_cpu_data's X86_FEATURE_SVM: the AND over every CPU identify_cpu() has seen.
    known = [h.flags[c].has for c in online]
    boot_has = False if False in known else (None if None in known else True)

    # 1. The support check on the loading CPU.
    try:
        why = _not_supported(h, boot, boot_has, vendor)
    except LookupError:
        return KvmAmd(None, tuple(reasons), tuple(_unknown(h, online)))
    if why is not None:
        lacking = [c for c in online if h.flags[c].has is False]
        if not vendor:
            detail = f"CPU {boot}: {scan.vendor(boot)} CPU"
        elif model.has(SVM_CPU_DATA):
            detail = h.flags[boot].why or ""
        else:
            whys = "; ".join(h.flags[c].why or "" for c in lacking[:3])
            detail = (
                f"CPU(s) {format_cpulist(lacking)} lack X86_FEATURE_SVM, so boot_cpu_data (every CPU's "
                f"features ANDed by identify_cpu()) lacks it: {whys}"
            )
        reasons.append(f"{detail}; kvm_amd refuses: {why} (-EOPNOTSUPP)")
        reasons += _svmdis_notes(h, online)
        return KvmAmd(EOPNOTSUPP, tuple(reasons), tuple(undetermined), "init")
    if sev.guest is None:
        return KvmAmd(None, tuple(reasons), (sev.undetermined or sev.why,))
    if sev.guest:
        if model.has(SVM_PER_CPU):
            said = f'"kvm_amd: {SEV_GUEST_MESSAGE}"'
        else:
            said = f'"SVM: {SEV_GUEST_MESSAGE}", then "{NO_SUPPORT_61}"'
        reasons.append(f"{sev.why}; kvm_amd refuses: {said} (-EOPNOTSUPP)")
        return KvmAmd(EOPNOTSUPP, tuple(reasons), tuple(undetermined), "init")
    try:
        why = _vm_cr_refuses(h, boot)
    except LookupError:
        return KvmAmd(None, tuple(reasons), tuple(h.unreadable(boot)))
    if why is not None:
        reasons.append(f"{why} (-EOPNOTSUPP)")
        reasons += _svmdis_notes(h, online)
        return KvmAmd(EOPNOTSUPP, tuple(reasons), tuple(undetermined), "init")

    # 2. The per-CPU compatibility check, ascending.
    first: str | None = None
    stopped_at: int | None = None
    refused: list[int] = []
    refused_cr4 = set(cr4.refused)
    for cpu in online:
        why = None
        if cpu in refused_cr4:
            why = cr4_reserved_bits.refusal(cpu, cr4)
        elif model.has(SVM_PER_CPU):
            try:
                why = _not_supported(h, cpu, boot_has, vendor) or _vm_cr_refuses(h, cpu)
            except LookupError:
                undetermined += h.unreadable(cpu)
                continue
            lost = h.flags[cpu].why
            if why is not None and lost and not why.startswith(f"CPU {cpu}: VM_CR"):
                why = f"{lost}; kvm_amd refuses: {why}"
        if why is None:
            continue
        reasons.append(f"{why} (-EIO)")
        refused.append(cpu)
        if first is None:
            first, stopped_at = EIO, cpu
    if stopped_at is not None and len(refused) > 1:
        reasons.append(f"loading kvm_amd stops at the first of these, CPU {stopped_at}")
    if model.has(SVM_PER_CPU):
        elsewhere = [c for c in refused if c not in refused_cr4]
        if elsewhere:
            k = elsewhere[0]
            reasons.append(
                f"if modprobe runs on CPU {k} instead, the support check in svm_init() refuses there "
                "first (-EOPNOTSUPP)"
            )
    reasons += _svmdis_notes(h, online)
    reasons += cr4_reserved_bits.notes(cr4)
    reasons += _offline_note(scan, model)
    if first:
        return KvmAmd(first, tuple(reasons), tuple(undetermined), "compat")
    if undetermined:
        return KvmAmd(None, tuple(reasons), tuple(undetermined))
    reasons += _gap_61(h, online, boot)
    reasons.append(
        f"{every_online(online)} X86_FEATURE_SVM"
        + (", VM_CR.SVMDIS clear where this kernel reads it" if not model.has(SVMDIS_CLEARS_FLAG) else "")
        + " and the same CR4 features as boot_cpu_data"
    )
    return KvmAmd(OK, tuple(reasons), tuple(undetermined), "ok")


def _unknown(h: _Host, cpus: list[int]) -> list[str]:
    out: list[str] = []
    for c in cpus:
        if h.flags[c].has is None:
            out += h.unreadable(c)
    return out


def _svmdis_notes(h: _Host, cpus: list[int]) -> list[str]:
    """LOCK and what fixes SVMDIS, for the CPUs that have it."""
    regs = {c: r for c in cpus if (r := h.regs[c]) is not None and r.svmdis}
    if not regs:
        return []
    return [svmdis_line(sorted(regs), regs, h.model.has(SVMDIS_CLEARS_FLAG))]


def _offline_note(scan: HostReadings, model: KernelModel) -> list[str]:
    offline = sorted(set(scan.topology.possible) - set(scan.cpus))
    if not offline:
        return []
    later = (
        "meets kvm_amd's compatibility check when it comes online"
        if model.has(SVM_PER_CPU)
        else "is not checked by this kernel when it comes online"
    )
    return [f"CPU(s) {format_cpulist(offline)} are not online, so not read: each {later}"]


def _gap_61(h: _Host, cpus: list[int], boot: int) -> list[str]:
    """6.1 reads VM_CR on the loading CPU alone and keeps X86_FEATURE_SVM whatever it
    says: another CPU whose firmware set SVMDIS goes unnoticed until a VM runs there."""
    if h.model.has(SVM_PER_CPU):
        return []
    hidden = [c for c in cpus if c != boot and (r := h.regs[c]) is not None and r.svmdis]
    if not hidden:
        return []
    return [
        f"CPU(s) {format_cpulist(hidden)} have VM_CR.SVMDIS set, which 6.1 does not check: "
        "is_disabled() reads VM_CR on the loading CPU only and init_amd() keeps X86_FEATURE_SVM, "
        "so kvm_amd loads; when the first VM starts, svm_hardware_enable() there writes "
        'EFER.SVME, which the CPU refuses (an "unchecked MSR access error: WRMSR to 0xc0000080" '
        "warning), and a vCPU scheduled there faults on VMLOAD/VMRUN, which __svm_vcpu_run() "
        "(arch/x86/kvm/svm/vmenter.S) turns into ud2, a kernel oops (read from the code, not run); "
        "6.3 and later refuse such a host at load"
    ]
