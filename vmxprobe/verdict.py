"""What the kernel would decide: x86_vmx_init() (arch/x86/virt/hw.c) and kvm_intel's
stricter checks (setup_vmcs_config(), vmx_check_processor_compat()), each reason naming
the register, bit and CPU that decided it.  The capability MSRs (0x481-0x493) are
analysed in vmxprobe.capview; the refusals they cause are decided here."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

from vmxprobe import capview, caps, vmx
from vmxprobe.cpulist import format_cpulist
from vmxprobe.scan import ECX, HostScan
from vmxprobe.sources import ACCESS_ERRORS, MEANING, Reading

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"
EIO = "EIO"
ENOMEM = "ENOMEM"

# One-line causes and fixes for what stops a scan from seeing the registers.
HINTS = {
    "ENOENT": "the msr driver is not loaded: run `modprobe msr` (kernel option CONFIG_X86_MSR)",
    "EPERM": "reading MSRs needs CAP_SYS_RAWIO: run as root (sudo vmxprobe scan)",
    "EACCES": "the msr device is not readable by this user: run as root (sudo vmxprobe scan)",
    "ENXIO": "a CPU went offline while it was being read: run the scan again",
    "SHORT": "the msr device returned a short read: check the kernel's msr driver",
    "UNRECORDED": "the fixture does not hold this register: record the host again with this vmxprobe",
}


@dataclass
class Verdict:
    x86_vmx_init: Optional[str] = None   # ok | EOPNOTSUPP | EIO | ENOMEM | None (unknown)
    kvm_intel: Optional[str] = None      # ok | EOPNOTSUPP | EIO | None (unknown)
    boot_cpu: Optional[int] = None
    revision_id: Optional[int] = None    # what x86_vmx_init() would stamp, when it gets there
    reaches_allocation: bool = False
    emulated: Optional[str] = None       # who made the VMX values up, when not the hardware
    reasons: list[str] = field(default_factory=list)
    undetermined: list[str] = field(default_factory=list)  # one line each: cause and fix
    inconsistent: bool = False           # the host's own facts contradict each other
    capabilities: Optional[dict] = None  # capview.analyse() of the scan (report "capabilities")

    @property
    def ready(self) -> bool:
        return not self.inconsistent and self.x86_vmx_init == OK and self.kvm_intel == OK

    @property
    def determined(self) -> bool:
        if self.inconsistent or self.x86_vmx_init is None:
            return False
        return self.x86_vmx_init != OK or self.kvm_intel is not None


# The state of IA32_FEATURE_CONTROL is asked for on every CPU, and a host has a handful
# of distinct values at most; the decoded dicts are only read here.
_feature_control = functools.lru_cache(maxsize=64)(vmx.decode_feature_control)


def _msr_name(index: int) -> str:
    return {vmx.MSR_IA32_FEAT_CTL: "IA32_FEATURE_CONTROL (0x3a)",
            vmx.MSR_IA32_VMX_BASIC: "IA32_VMX_BASIC (0x480)"}[index]


# The cpuid device fails differently: it has its own driver and no CAP_SYS_RAWIO check
# (arch/x86/kernel/cpuid.c), so only its mode (0600 root) stops a user.
CPUID_HINTS = {
    "ENOENT": "the cpuid driver is not loaded: run `modprobe cpuid` (kernel option CONFIG_X86_CPUID)",
    "EACCES": "the cpuid device is not readable by this user: run as root (sudo vmxprobe scan)",
}


def _unreadable(v: Verdict, cpu: int, what: str, r: Reading, hints=HINTS) -> None:
    hint = hints.get(r.errno) or HINTS.get(r.errno) or MEANING.get(r.errno, "unexpected error")
    v.undetermined.append(f"cannot read {what} on CPU {cpu} ({r.errno}): {hint}")


def vmx_feature(scan: HostScan, cpu: int):
    """Does X86_FEATURE_VMX survive identification on this CPU?

    Returns (True|False|None, reason). Mirrors init_ia32_feat_ctl(): VMX needs
    CPUID.01H:ECX[5]; then a faulting IA32_FEATURE_CONTROL read, or a locked MSR with
    VMX-outside-SMX clear, clears the feature. An unlocked MSR is locked by the kernel
    itself, with VMX on when it is built with KVM_INTEL.
    """
    p = scan.probes[cpu]
    has = p.cpuid_bit(1, ECX, vmx.CPUID_VMX_BIT)
    how = "CPUID.01H:ECX.VMX[bit 5]"
    if has is None:
        flags = scan.cpuinfo.get(cpu, {}).get("flags")
        if flags is None:
            return None, f"CPU {cpu}: neither CPUID ({p.cpuid[1].errno}) nor /proc/cpuinfo is readable"
        # Since Linux 5.6 the vmx flag is shown only when VMX survived feat_ctl.
        has, how = "vmx" in flags, "the vmx flag in /proc/cpuinfo (CPUID device unreadable)"
    if not has:
        return False, f"CPU {cpu}: {how} = 0: no X86_FEATURE_VMX"
    r = p.msr[vmx.MSR_IA32_FEAT_CTL]
    if not r.ok:
        if r.errno == "EIO":
            return False, (f"CPU {cpu}: reading IA32_FEATURE_CONTROL (0x3a) faults (EIO); "
                           "init_ia32_feat_ctl() then clears X86_FEATURE_VMX")
        return None, None
    fc = _feature_control(r.value)
    if fc["state"] == vmx.FC_DISABLED:
        why = (f"CPU {cpu}: IA32_FEATURE_CONTROL (0x3a) = {fc['raw']}: locked (bit 0) with "
               "VMX outside SMX (bit 2) clear; init_ia32_feat_ctl() clears X86_FEATURE_VMX "
               "(\"VMX (outside TXT) disabled by BIOS\")")
        if fc["vmx_inside_smx"]:
            why += "; only VMX inside SMX (bit 1) is on, which counts only under tboot"
        return False, why
    return True, None


def judge(scan: HostScan) -> Verdict:
    """Everything x86_vmx_init() decides before it allocates, and kvm_intel's checks."""
    v = Verdict()
    beyond = scan.topology.beyond_kernel_max
    if beyond:
        v.inconsistent = True
        v.undetermined.append(
            f"the CPU lists name CPU(s) {format_cpulist(beyond)} beyond kernel_max "
            f"{scan.topology.kernel_max}, which no kernel can have: this tree or fixture is not "
            "one kernel's view, so the plan's size cannot be trusted; record the host again")
    probed = sorted(scan.probes)
    if not probed:
        v.undetermined.append("no online CPU to read: /sys/devices/system/cpu/online "
                              "lists none (is this a Linux root?)")
        return v
    # x86 boots on CPU 0; x86_vmx_init() runs there, during identify_boot_cpu().
    boot = 0 if 0 in scan.probes else probed[0]
    v.boot_cpu = boot
    if boot != 0:
        v.reasons.append(f"CPU 0 is offline; CPU {boot} stands in for the boot CPU")
    p = scan.probes[boot]
    v.capabilities = capview.analyse(scan, boot)
    _label_hypervisor(scan, v, p)

    # 1. if (!cpu_feature_enabled(X86_FEATURE_VMX)) return -EOPNOTSUPP;
    has_vmx, why = vmx_feature(scan, boot)
    if has_vmx is None:
        _unreadable_all(v, p, "flags" in scan.cpuinfo.get(p.cpu, {}))
        return v
    if not has_vmx:
        v.x86_vmx_init = EOPNOTSUPP
        v.reasons.append(why + "; x86_vmx_init() returns -EOPNOTSUPP")
        if p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT) and p.cpuid_bit(1, ECX, vmx.CPUID_VMX_BIT) is False:
            v.reasons.append(f"this is a guest of {_hv_name(p) or 'a hypervisor'} "
                             "(CPUID.01H:ECX[31] = 1) that does not expose VMX to it: enable "
                             "nested virtualization on the host to use VMX here")
        vendor = _vendor(p)
        if vendor == "AuthenticAMD" or vendor == "HygonGenuine":
            v.reasons.append(f"{vendor} CPU: it has SVM (AMD-V), not VMX; the root VMCS plan "
                             "does not apply")
        _note_basic_access(v, p)
        r = p.msr[vmx.MSR_IA32_VMX_BASIC]
        if r.ok and r.value:
            v.revision_id = vmx.decode_vmx_basic(r.value)["revision_id"]
        _kernel_view(scan, v)
        v.kvm_intel = EOPNOTSUPP
        return v
    fc = p.msr[vmx.MSR_IA32_FEAT_CTL]
    if _feature_control(fc.value)["state"] == vmx.FC_UNLOCKED:
        v.reasons.append(f"CPU {boot}: IA32_FEATURE_CONTROL (0x3a) = 0x{fc.value:016x} is "
                         "unlocked (bit 0 clear): init_ia32_feat_ctl() locks it at boot with "
                         "VMX outside SMX on, if the kernel is built with CONFIG_KVM_INTEL")

    # 2. rdmsrq(MSR_IA32_VMX_BASIC, basic_msr): once, on the boot CPU.
    r = p.msr[vmx.MSR_IA32_VMX_BASIC]
    if not r.ok and r.errno != "EIO":
        _unreadable(v, boot, "IA32_VMX_BASIC (0x480)", r)
        return v
    if not r.ok or r.value == 0:
        # An unchecked rdmsr that faults reads as 0 (with an "unchecked MSR access
        # error" warning); some hypervisors return 0 outright. Either way the kernel
        # goes on with revision 0 and size 0: the pages are allocated, and VMXON on
        # them would fail.
        got = "faults (EIO)" if not r.ok else "reads 0"
        v.reasons.append(f"CPU {boot}: IA32_VMX_BASIC (0x480) {got} although CPUID offers "
                         "VMX: not exposed by the hypervisor; x86_vmx_init() would stamp "
                         "revision 0, which VMXON rejects")
        basic_value = 0
    else:
        basic_value = r.value
    basic = vmx.decode_vmx_basic(basic_value)
    v.revision_id = basic["revision_id"]

    # 3. if (WARN_ON_ONCE(vmx_basic_vmcs_size(basic_msr) > PAGE_SIZE)) return -EIO;
    if basic["vmcs_size"] > vmx.PAGE_SIZE:
        v.x86_vmx_init = EIO
        v.kvm_intel = EOPNOTSUPP
        v.reasons.append(f"CPU {boot}: IA32_VMX_BASIC (0x480) = {basic['raw']}: VMCS size "
                         f"(bits 44:32) = {basic['vmcs_size']} > PAGE_SIZE {vmx.PAGE_SIZE}; "
                         "x86_vmx_init() warns and returns -EIO")
        return v
    v.reaches_allocation = True
    v.reasons.append(f"CPU {boot}: IA32_VMX_BASIC (0x480) = {basic['raw']}: revision id "
                     f"0x{basic['revision_id']:x} (bits 30:0), VMCS size {basic['vmcs_size']} "
                     f"(bits 44:32) <= PAGE_SIZE, memory type {basic['memory_type']} "
                     f"({basic['memory_type_name']})")
    if basic["reserved"]:
        v.reasons.append(f"CPU {boot}: IA32_VMX_BASIC reserved bit(s) "
                         f"{', '.join(map(str, basic['reserved']))} are set")
    _kvm_intel(scan, v, boot, basic_value, basic)
    _kernel_view(scan, v)
    return v


def _unreadable_all(v: Verdict, p, cpuinfo_answered: bool = False) -> None:
    """Every read that left this CPU undetermined, the MSRs first: they are what the
    one-line error names. CPUID is listed only when /proc/cpuinfo did not stand in."""
    for index in (vmx.MSR_IA32_FEAT_CTL, vmx.MSR_IA32_VMX_BASIC):
        if not p.msr[index].ok:
            _unreadable(v, p.cpu, _msr_name(index), p.msr[index])
    if not p.cpuid[1].ok and not cpuinfo_answered:
        _unreadable(v, p.cpu, "CPUID leaf 1", p.cpuid[1], CPUID_HINTS)


def _note_basic_access(v: Verdict, p) -> None:
    r = p.msr[vmx.MSR_IA32_VMX_BASIC]
    if not r.ok and r.errno in ACCESS_ERRORS and r.errno != "UNRECORDED":
        v.reasons.append(f"IA32_VMX_BASIC could not be read on CPU {p.cpu} ({r.errno}): "
                         f"{HINTS.get(r.errno, '')}")


def after_allocation(v: Verdict, allocated: bool, failed_cpu: Optional[int] = None) -> None:
    """Step 4: for_each_possible_cpu(): one zeroed page on cpu_to_node(cpu), all or nothing."""
    if not v.reaches_allocation:
        return
    if allocated:
        v.x86_vmx_init = OK
    else:
        v.x86_vmx_init = ENOMEM
        v.kvm_intel = EOPNOTSUPP
        # The mirror follows the kernel's all-or-nothing rule: a page that cannot be had
        # releases everything and yields -ENOMEM. The page here is vmxprobe's own, so the
        # reason says so: the kernel's boot-time allocation may fare differently.
        v.reasons.append(f"allocating the root VMCS page for CPU {failed_cpu} failed in this "
                         "mirror of the plan: every page taken so far was released and, by its "
                         "all-or-nothing rule, x86_vmx_init() returns -ENOMEM (the kernel "
                         "allocates its own pages at boot and may fare differently)")


def _kvm_intel(scan: HostScan, v: Verdict, boot: int, basic_value: int, basic: dict) -> None:
    """setup_vmcs_config() on the boot CPU, then vmx_check_processor_compat() on each
    online CPU: the first failure is what loading kvm_intel returns."""
    first: Optional[str] = None
    capsec = v.capabilities or capview.analyse(scan, boot)

    def refuse(code: str, reason: str):
        nonlocal first
        first = first or code
        v.reasons.append(reason)

    if basic["phys_addr_32bit"]:
        refuse(EIO, f"CPU {boot}: IA32_VMX_BASIC bit 48 (32-bit physical addresses only) is "
                    "set; setup_vmcs_config() refuses it on x86_64 (-EIO)")
    if basic["memory_type"] != vmx.VMX_BASIC_MEM_TYPE_WB:
        refuse(EIO, f"CPU {boot}: IA32_VMX_BASIC memory type (bits 53:50) = "
                    f"{basic['memory_type']}, not 6 (WB); setup_vmcs_config() refuses it (-EIO)")
    for problem in capsec["kvm_setup"]:
        refuse(EIO, f"CPU {boot}: setup_vmcs_config() fails: {problem}; kvm_intel refuses "
                    "to load (-EIO)")
    if first:
        # setup_vmcs_config() runs in hardware_setup(), before the per-CPU compatibility
        # checks (__kvm_x86_vendor_init()): when the boot CPU fails it, those never run.
        v.reasons.append("kvm_intel stops at the boot CPU, in hardware_setup(): the per-CPU "
                         "compatibility checks (vmx_check_processor_compat()) never run")
        v.kvm_intel = first
        return
    # Capability-MSR differences that reach vmcs_config, per CPU (IA32_VMX_BASIC is
    # handled below with its own message).
    cap_refusals: dict[int, list[str]] = {}
    for d in capsec["differences"]:
        if int(d["index"], 16) == vmx.MSR_IA32_VMX_BASIC:
            continue
        for c in d["cpus"]:
            if not c["kvm_refuses"]:
                continue
            bits = "; ".join(f"bit {b['bit']} ({b['what']}): {b['a']} on CPU {boot}, {b['b']} here"
                             for b in c["bits"] if b["kvm"])
            read = "" if c["read"] == "ok" else f" ({c['read']}, read by the kernel as 0)"
            cap_refusals.setdefault(c["cpu"], []).append(
                f"{d['msr']} = {c['value']}{read} differs from CPU {boot}'s {d['boot_value']} in {bits}")
    unknown = False
    differ_basic, differ_fc, no_vmx = [], [], []
    strict = capview.strict_config(scan)
    # setup_vmcs_config() depends on the registers alone: judged once per distinct set
    # of readings (capview.msr_key()), not once per CPU.
    setup_of: dict[int, str] = {}
    for cpu in sorted(scan.probes):
        if cpu == boot:
            continue
        has_vmx, why = vmx_feature(scan, cpu)
        q = scan.probes[cpu]
        if has_vmx is None:
            unknown = True
            _unreadable_all(v, q, "flags" in scan.cpuinfo.get(q.cpu, {}))
            continue
        if not has_vmx:
            no_vmx.append(cpu)
            refuse(EOPNOTSUPP, why + "; kvm_intel refuses to load (\"VMX not enabled (by "
                   f"BIOS) in MSR_IA32_FEAT_CTL on CPU {cpu}\" or \"VMX not supported by CPU "
                   f"{cpu}\")")
            continue
        r = q.msr[vmx.MSR_IA32_VMX_BASIC]
        if not r.ok:
            if r.errno == "EIO":
                refuse(EIO, f"CPU {cpu}: IA32_VMX_BASIC (0x480) faults (EIO); KVM's "
                            f"\"Failed to setup VMCS config on CPU {cpu}\"")
            else:
                unknown = True
                _unreadable(v, cpu, "IA32_VMX_BASIC (0x480)", r)
            continue
        # vmx_check_processor_compat(): setup_vmcs_config() on this CPU first, then the
        # memcmp() of the result against the boot CPU's vmcs_config.
        key = capview.msr_key(q)
        setup = setup_of.get(key)
        if setup is None:
            kv = capview.kernel_values(q) if capview.cpu_state(q) == capview.STATE_READ else None
            setup = setup_of[key] = "; ".join(caps.kvm_setup_problems(kv, strict)
                                              if kv is not None else [])
        if setup:
            also = (f"; it also differs from CPU {boot}: {'; '.join(cap_refusals[cpu])}"
                    if cpu in cap_refusals else "")
            refuse(EIO, f"CPU {cpu}: setup_vmcs_config() fails: {setup}; KVM: "
                        f"\"Failed to setup VMCS config on CPU {cpu}\" (-EIO){also}")
            continue
        if r.value != basic_value:
            differ_basic.append(cpu)
            bits = [b for b in range(64) if (r.value ^ basic_value) >> b & 1]
            refuse(EIO, f"CPU {cpu}: IA32_VMX_BASIC (0x480) = 0x{r.value:016x} differs from "
                        f"CPU {boot}'s {basic['raw']} in bit(s) {', '.join(map(str, bits))}; "
                        f"KVM: \"Inconsistent VMCS config on CPU {cpu}\" (-EIO)")
        elif cpu in cap_refusals:
            refuse(EIO, f"CPU {cpu}: {'; '.join(cap_refusals[cpu])}; KVM: \"Inconsistent VMCS "
                        f"config on CPU {cpu}\" (-EIO)")
        fc, fc_boot = q.msr[vmx.MSR_IA32_FEAT_CTL], scan.probes[boot].msr[vmx.MSR_IA32_FEAT_CTL]
        if fc.ok and fc_boot.ok and fc.value != fc_boot.value:
            differ_fc.append(cpu)
    if differ_fc:
        # KVM refuses a CPU only when the difference turns VMX off there (handled
        # above); other bits (SGX, SENTER, LMCE) differing is reported, not refused.
        v.reasons.append(f"CPU(s) {format_cpulist(differ_fc)}: IA32_FEATURE_CONTROL differs "
                         f"from CPU {boot}'s in bits that do not disable VMX; firmware set "
                         "the CPUs up unevenly")
    _capability_notes(v, capsec, boot)
    offline = sorted(set(scan.topology.possible) - set(scan.probes))
    if offline:
        v.reasons.append(f"CPU(s) {format_cpulist(offline)} are not online, so not read: "
                         "each gets its root VMCS page now and meets KVM's compatibility "
                         "check when it comes online")
    if first:
        v.kvm_intel = first
    elif unknown:
        v.kvm_intel = None
    else:
        v.kvm_intel = OK
        if capsec["state"] == capview.STATE_READ and not capsec["cpus_not_read"]:
            compared = ("IA32_VMX_BASIC and VMX capability MSRs (as far as kvm_intel compares "
                        "them" + (", and of those that were read" if capsec["not_compared"] else "")
                        + ")")
        else:
            compared = "IA32_VMX_BASIC"
        v.reasons.append(f"all {len(scan.probes)} online CPU(s) {format_cpulist(scan.probes)} "
                         f"have VMX enabled and the same {compared} as the boot CPU")


def _capability_notes(v: Verdict, capsec: dict, boot: int) -> None:
    """What the capability MSRs show besides refusals: MSRs not read, MSRs that fault
    where they should exist, and differences kvm_intel does not compare."""
    if capsec["state"] == capview.STATE_NOT_READ:
        bp_reading = next((r["read"] for r in capsec["msrs"] if r["index"] == "0x481"), "?")
        v.reasons.append(f"the VMX capability MSRs (0x481-0x493) were not read on CPU {boot} "
                         f"({bp_reading}: {MEANING.get(bp_reading, 'not read')}): kvm_intel's "
                         "per-CPU comparison of its vmcs_config was checked on IA32_VMX_BASIC only")
    elif capsec["cpus_not_read"]:
        v.reasons.append(f"the VMX capability MSRs were not read on CPU(s) {capsec['cpus_not_read']}: "
                         "kvm_intel's per-CPU comparison was checked there on IA32_VMX_BASIC only")
    for n in capsec["not_compared"]:
        v.reasons.append(f"CPU(s) {n['cpus']}: {n['msr']} was not read on them or on CPU {boot} "
                         f"({n['why']}), so it was not compared")
    for f in capsec["faults"]:
        v.reasons.append(f"CPU(s) {f['cpus']}: {f['why']}; the kernel reads it as 0")
    for d in capsec["differences"]:
        if d["kvm"]["compared"] and int(d["index"], 16) == vmx.MSR_IA32_VMX_BASIC:
            continue
        quiet = [c for c in d["cpus"] if not c["kvm_refuses"]]
        if not quiet:
            continue
        bits = sorted({b["bit"] for c in quiet for b in c["bits"]})
        why = (f"kvm_intel does not compare it ({d['kvm']['why']})" if not d["kvm"]["compared"]
               else "the differing bits do not reach kvm_intel's vmcs_config")
        v.reasons.append(f"CPU(s) {format_cpulist(c['cpu'] for c in quiet)}: {d['msr']} differs from "
                         f"CPU {boot}'s in bit(s) {', '.join(map(str, bits))}: {why}; reported, "
                         "not refused")
    s = capsec.get("seamret")
    if s and (s["tdx_host_platform"] or s["kernel_reports_bug"]):
        line = f"CPU {boot}: TDX host: {s['meaning']}"
        if not s["seamret_keeps_current_vmcs"] and s["kernel_reports_bug"] is False:
            line += "; the running kernel does not list seamret_invd_vmcs in its bugs (it predates the erratum handling)"
        v.reasons.append(line)


def _vendor(p) -> Optional[str]:
    r = p.cpuid.get(0)
    return vmx.cpuid_vendor(r.value) if r is not None and r.ok else None


def _hv_name(p) -> Optional[str]:
    r = p.cpuid.get(vmx.CPUID_HV_LEAF)
    return vmx.hypervisor_name(r.value) if r is not None and r.ok else None


def _label_hypervisor(scan: HostScan, v: Verdict, p) -> None:
    r = p.msr[vmx.MSR_IA32_VMX_BASIC]
    kvm_revision = r.ok and r.value and r.value & 0x7FFFFFFF == vmx.VMCS12_REVISION
    if not p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT) and not kvm_revision:
        return
    name = _hv_name(p) or "an unnamed hypervisor"
    if kvm_revision:
        v.emulated = "KVM nested VMX"
        v.reasons.append(f"CPU {p.cpu}: IA32_VMX_BASIC revision 0x{vmx.VMCS12_REVISION:x} is "
                         "KVM's VMCS12_REVISION: these are the VMX capabilities KVM emulates "
                         "for its guest (nested VMX), not the hardware's"
                         + ("" if p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT) else
                            " (although CPUID.01H:ECX[31] hides the hypervisor)"))
    elif r.ok and r.value:
        v.emulated = name
        syn = (v.capabilities or {}).get("synthetic") or {}
        v.reasons.append(f"CPU {p.cpu}: running under {name} (CPUID.01H:ECX[31] = 1): the VMX "
                         "registers read are the ones the hypervisor presents, not the hardware's"
                         + (f"; {syn['how']}" if syn.get("how") else ""))
    ev = ((v.capabilities or {}).get("synthetic") or {}).get("evmcs")
    if ev and ev["kvm_uses_evmcs"]:
        v.reasons.append(
            f"CPU {p.cpu}: Hyper-V recommends the enlightened VMCS (CPUID 0x40000004 EAX bit 14) "
            f"and offers eVMCS versions {ev['version_low']}-{ev['version_high']}: kvm_intel here "
            f"uses eVMCS v{caps.KVM_EVMCS_VERSION}, stamping its VMCSs with revision "
            f"{caps.KVM_EVMCS_VERSION} (KVM_EVMCS_VERSION) while the root VMXON pages keep "
            "IA32_VMX_BASIC's revision, as planned here (alloc_kvm_area())")
    elif ev and ev["recommended"]:
        v.reasons.append(f"CPU {p.cpu}: Hyper-V recommends the enlightened VMCS but offers no "
                         f"version kvm_intel implements (v{caps.KVM_EVMCS_VERSION}): kvm_intel "
                         "uses ordinary VMCSs")


def _kernel_view(scan: HostScan, v: Verdict) -> None:
    """Compare the running kernel's vmx flag with what the registers imply, per CPU."""
    hidden, missing, extra = [], [], []
    for cpu in sorted(scan.probes):
        info = scan.cpuinfo.get(cpu)
        if info is None:
            continue
        flag = "vmx" in info["flags"]
        predicted, _ = vmx_feature(scan, cpu)
        cpuid_vmx = scan.probes[cpu].cpuid_bit(1, ECX, vmx.CPUID_VMX_BIT)
        if predicted is None or flag == predicted:
            if not flag and cpuid_vmx:
                hidden.append(cpu)
            continue
        (extra if flag else missing).append(cpu)
    if hidden:
        v.reasons.append(f"kernel view: /proc/cpuinfo shows no vmx flag on CPU(s) "
                         f"{format_cpulist(hidden)} although CPUID reports VMX: since Linux 5.6 "
                         "the kernel hides the flag when IA32_FEATURE_CONTROL locks VMX off, so "
                         "tools that read the flag (kvm-ok, virt-host-validate, lscpu) report "
                         "\"no VT-x\" for what is a firmware setting")
    if missing:
        v.reasons.append(f"kernel view: /proc/cpuinfo shows no vmx flag on CPU(s) "
                         f"{format_cpulist(missing)} although the registers allow VMX: the "
                         "running kernel cleared it (clearcpuid/nosmx, a failed VMX set-up at "
                         "boot, or a kernel whose feat_ctl.c differs)")
    if extra:
        v.reasons.append(f"kernel view: /proc/cpuinfo shows the vmx flag on CPU(s) "
                         f"{format_cpulist(extra)} although the registers turn VMX off: kernels "
                         "before 5.6 kept the flag when firmware disabled VMX")
    for k in (v.capabilities or {}).get("kernel_view", []):
        flags = ", ".join(["-" + f for f in k["missing"]] + ["+" + f for f in k["extra"]])
        v.reasons.append(f"kernel view: \"vmx flags\" in /proc/cpuinfo on CPU(s) {k['cpus']} "
                         f"disagree with the registers{' (' + flags + ')' if flags else ''}: "
                         + "; ".join(k["why"]))
