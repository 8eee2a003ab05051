"""kvm_intel's struct vmcs_config: setup_vmcs_config() (arch/x86/kvm/vmx/vmx.c) as a pure
function of one CPU's registers, and the struct that vmx_check_processor_compat()
memcmp()s on every CPU against the loading CPU's.

setup_vmcs_config() asks for controls, it does not copy registers. adjust_vmx_controls()
takes a plain (never TRUE) control MSR and keeps ((required | optional) & allowed-1) |
allowed-0: every must-be-1 bit enters, an allowed-1 bit enters only where KVM requests it
(KVM_REQUIRED_VMX_* / KVM_OPTIONAL_VMX_* in arch/x86/kvm/vmx/vmx.h), and a required
control that cannot be 1 is -EIO. Later rules clear bits (no TPR shadow, no SGX, the
broken preemption timer list, no virtual-interrupt delivery, inconsistent entry/exit
pairs). Two CPUs that differ only in bits KVM never requests build the same struct, and
KVM loads.

Read in Linux 6.1 (Debian's linux-source-6.1, 6.1.192) and mainline; the changes since
6.1 are keyed by kernel.release (docs/kernel-model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from vmxprobe.arch.capabilities import MSRS
from vmxprobe.arch.vmx import M32, M64, PAGE_SIZE, VMX_BASIC_MEM_TYPE_WB
from vmxprobe.kernel.release import (
    EPT_VIOLATION_VE,
    EVMCS_SANITIZE,
    KVM_CET,
    PAIRS_ALL,
    PERF_GLOBAL_ERRATUM,
    KernelModel,
)

PIN, PROC, PROC2, PROC3, EXIT, ENTRY = 0x481, 0x482, 0x48B, 0x492, 0x483, 0x484
BASIC, MISC, EPT_VPID_CAP, CR0_FIXED1, CR4_FIXED1 = 0x480, 0x485, 0x48C, 0x487, 0x489


def _bits(*ns: int) -> int:
    return sum(1 << n for n in ns)


# vmx.h KVM_REQUIRED_VMX_*, x86_64 build (CR8 load/store exiting, HOST_ADDR_SPACE_SIZE and
# IA32E_MODE are required only there). The same from 6.1 to mainline.
REQUIRED: dict[int, int] = {
    PIN: _bits(0, 3),  # EXT_INTR_MASK, NMI_EXITING
    PROC: _bits(2, 3, 7, 9, 10, 11, 15, 16, 19, 20, 23, 24, 29),
    PROC2: 0,
    EXIT: _bits(2, 9, 15),  # SAVE_DEBUG_CONTROLS, HOST_ADDR_SPACE_SIZE, ACK_INTR_ON_EXIT
    ENTRY: _bits(2, 9),  # LOAD_DEBUG_CONTROLS, IA32E_MODE
}

# vmx.h KVM_OPTIONAL_VMX_*: (first release, bits). Controls found only in patch series
# whose merge could not be confirmed (FRED: exit bit 31, entry bit 23, IA32_VMX_EXIT_CTLS2;
# mediated PMU: exit bit 30; MBEC: secondary bit 22) are not modelled.
OPTIONAL: dict[int, tuple[tuple[tuple[int, int], int], ...]] = {
    PIN: (((6, 1), _bits(5, 6, 7)),),  # VIRTUAL_NMIS, VMX_PREEMPTION_TIMER, POSTED_INTR
    PROC: (((6, 1), _bits(12, 17, 21, 22, 25, 27, 28, 30, 31)),),
    PROC2: (
        ((6, 1), _bits(*range(0, 18), 19, 20, 24, 25, 26, 30, 31)),
        (EPT_VIOLATION_VE, _bits(18)),  # SECONDARY_EXEC_EPT_VIOLATION_VE
    ),
    PROC3: (((6, 1), _bits(4)),),  # TERTIARY_EXEC_IPI_VIRT
    EXIT: (
        ((6, 1), _bits(12, 18, 19, 20, 21, 22, 23, 24, 25)),
        (KVM_CET, _bits(28)),  # VM_EXIT_LOAD_CET_STATE
    ),
    ENTRY: (
        ((6, 1), _bits(13, 14, 15, 16, 17, 18)),
        (KVM_CET, _bits(20)),  # VM_ENTRY_LOAD_CET_STATE
    ),
}

# vmcs_entry_exit_pairs[] (6.0+): (entry bit, exit bit, what). LOAD/SAVE_DEBUG_CONTROLS
# are mandatory and SAVE_IA32_PAT/EFER never used, so they have no pair.
PAIRS: tuple[tuple[tuple[int, int], int, int, str], ...] = (
    ((6, 1), 13, 12, "IA32_PERF_GLOBAL_CTRL"),
    ((6, 1), 14, 19, "IA32_PAT"),
    ((6, 1), 15, 21, "IA32_EFER"),
    ((6, 1), 16, 23, "IA32_BNDCFGS"),
    ((6, 1), 18, 25, "IA32_RTIT_CTL"),
    (KVM_CET, 20, 28, "CET state"),
)

# cpu_has_broken_vmx_preemption_timer(): CPUID.01H:EAX with bits 15:14 and 31:28 masked
# off, against vmx_preemption_cpu_tfms[] (errata of Nehalem/Westmere/Sandy Bridge parts).
BROKEN_PREEMPTION_TIMER = frozenset(
    {
        0x000206E6,
        0x00020652,
        0x00020655,
        0x000106E5,
        0x000106A0,
        0x000106A1,
        0x000106A4,
        0x000106A5,
        0x000306A8,
    }
)
SIGNATURE_MASK = ~(0x3 << 14 | 0xF << 28) & M32

# 6.13+ (revert of "KVM: VMX: Move LOAD_IA32_PERF_GLOBAL_CTRL errata handling out of
# setup_vmcs_config()"): boot_cpu_data family 6 models whose VM-entry/exit load of
# IA32_PERF_GLOBAL_CTRL is broken lose both controls in vmcs_config itself.
PERF_GLOBAL_BROKEN_MODELS = frozenset({0x1A, 0x1E, 0x25, 0x2C, 0x2E})  # Nehalem, Westmere

# EVMCS1_SUPPORTED_* (arch/x86/kvm/vmx/evmcs.h, renamed vmx/hyperv.h, then hyperv_evmcs.h):
# the controls eVMCS v1 can hold. From 6.3, when KVM runs on Hyper-V with the enlightened
# VMCS, setup_vmcs_config() ends with evmcs_sanitize_exec_ctrls(), which ANDs each field
# with its list (evmcs_check_vmcs_conf()): a whitelist, so a must-be-1 bit outside it is
# dropped too, and the tertiary controls become 0. (6.1's evmcs.h had a blacklist,
# EVMCS1_UNSUPPORTED_*, which 6.1's setup_vmcs_config() never applied.) The same on every
# CPU: enlightened_vmcs is decided once, from Hyper-V's hints.
_PIN_ALWAYSON = 0x00000016  # PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR
_PROC_ALWAYSON = 0x0401E172  # CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR
_EXIT_ALWAYSON = 0x00036DFF  # VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR
_ENTRY_ALWAYSON = 0x000011FF  # VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR
EVMCS1_SUPPORTED: dict[str, int] = {
    "pin_based_exec_ctrl": _PIN_ALWAYSON | _bits(0, 3, 5),
    "cpu_based_exec_ctrl": _PROC_ALWAYSON
    | _bits(2, 3, 7, 9, 10, 11, 12, 15, 16, 19, 20, 21, 22, 23, 24, 25, 27, 28, 29, 30, 31),
    "cpu_based_2nd_exec_ctrl": _bits(1, 2, 3, 4, 5, 6, 7, 11, 12, 15, 16, 19, 20, 24, 25, 26, 30, 31),
    "cpu_based_3rd_exec_ctrl": 0,
    "vmexit_ctrl": _EXIT_ALWAYSON | _bits(2, 9, 12, 15, 18, 19, 20, 21, 23, 24, 25),
    "vmentry_ctrl": _ENTRY_ALWAYSON | _bits(2, 9, 13, 14, 15, 16, 17, 18),
}

# nested_vmx_setup_secondary_ctls() (nested.c): with enable_ept, vmcs_conf->nested.ept_caps
# takes these bits of IA32_VMX_EPT_VPID_CAP's low dword from the CPU (EXECUTE_ONLY,
# PAGE_WALK_4, PAGE_WALK_5, EPTP_WB, INVEPT); everything else there is KVM's constant.
NESTED_EPT_BITS = _bits(0, 6, 7, 14, 20)
# hardware_setup(): enable_ept stays on only with 4-level walks, WB EPTP and INVEPT
# all-context (cpu_has_vmx_ept_4levels(), _mt_wb(), _invept_global()).
EPT_REQUIRED_CAPS = _bits(6, 14, 26)


@dataclass(frozen=True)
class CpuidInputs:
    """The CPUID values of one CPU that setup_vmcs_config() reads with raw CPUID on the
    CPU it runs on; None where they were not read."""

    max_leaf: int | None = None  # CPUID.00H:EAX
    sgx1: bool | None = None  # CPUID.(EAX=12H,ECX=0):EAX[0]
    signature: int | None = None  # CPUID.01H:EAX

    @property
    def has_sgx(self) -> bool | None:
        """cpu_has_sgx(): cpuid_eax(0) >= 0x12 && (cpuid_eax(0x12) & BIT(0))."""
        if self.max_leaf is not None and self.max_leaf < 0x12:
            return False
        return None if self.max_leaf is None or self.sgx1 is None else self.sgx1

    @property
    def broken_preemption_timer(self) -> bool | None:
        if self.signature is None:
            return None
        return self.signature & SIGNATURE_MASK in BROKEN_PREEMPTION_TIMER

    @property
    def family_model(self) -> tuple[int, int] | None:
        if self.signature is None:
            return None
        s = self.signature
        family = (s >> 8) & 0xF
        model = (s >> 4) & 0xF
        if family in (6, 15):
            model |= (s >> 12) & 0xF0
        if family == 15:
            family += (s >> 20) & 0xFF
        return family, model


@dataclass(frozen=True)
class VmcsConfig:
    """struct vmcs_config as vmx_check_processor_compat() compares it. basic holds what
    6.1's size, basic_cap and revision_id hold together (6.12 made it one u64)."""

    basic: int
    pin_based_exec_ctrl: int
    cpu_based_exec_ctrl: int
    cpu_based_2nd_exec_ctrl: int
    cpu_based_3rd_exec_ctrl: int
    vmexit_ctrl: int
    vmentry_ctrl: int
    misc: int
    # vmcs_conf->nested, the per-CPU part (kvm_intel.nested=1): 0 otherwise
    nested_ept_caps: int = 0
    nested_cr0_fixed1: int = 0
    nested_cr4_fixed1: int = 0


# Each field of the struct, the MSR it comes from, and how many bits of the MSR it is.
FIELD_MSR: dict[str, int] = {
    "basic": BASIC,
    "pin_based_exec_ctrl": PIN,
    "cpu_based_exec_ctrl": PROC,
    "cpu_based_2nd_exec_ctrl": PROC2,
    "cpu_based_3rd_exec_ctrl": PROC3,
    "vmexit_ctrl": EXIT,
    "vmentry_ctrl": ENTRY,
    "misc": MISC,
    "nested_ept_caps": EPT_VPID_CAP,
    "nested_cr0_fixed1": CR0_FIXED1,
    "nested_cr4_fixed1": CR4_FIXED1,
}
MSR_FIELD = {index: name for name, index in FIELD_MSR.items()}
CONTROL_MSRS = (PIN, PROC, PROC2, EXIT, ENTRY)  # low dword allowed-0, high allowed-1


@dataclass(frozen=True)
class Setup:
    """What setup_vmcs_config() returns for one CPU: the struct, or why it is -EIO."""

    config: VmcsConfig | None
    refusals: tuple[str, ...] = ()  # each makes it -EIO; the first one is what stops it
    warnings: tuple[str, ...] = ()  # pr_warn_once() lines it prints
    ept_cap: int = 0  # vmx_capability.ept, vpid (not compared; used by hardware_setup())
    vpid_cap: int = 0
    unknown: tuple[str, ...] = ()  # inputs that were not read, and what they decide


def control_name(index: int, bit: int) -> str:
    """The kernel's macro for a control bit, else the SDM's name."""
    table = MSRS[index].table
    for c in table.controls if table is not None else ():
        if c.bit == bit:
            return c.kernel or c.name
    return f"bit {bit}"


def requested(index: int, model: KernelModel) -> tuple[int, int]:
    """(required, optional) masks of a control MSR for this kernel."""
    optional = 0
    for since, mask in OPTIONAL.get(index, ()):
        if model.has(since):
            optional |= mask
    return REQUIRED.get(index, 0), optional


def setup_vmcs_config(
    msrs: dict[int, int],
    cpuid: CpuidInputs,
    model: KernelModel,
    strict: bool = True,
    evmcs: bool = False,
) -> Setup:
    """setup_vmcs_config() on one CPU, step by step in the kernel's order.

    `msrs` are the values the kernel reads: a faulting MSR is 0 (rdmsr()'s exception
    fixup and rdmsr_safe() both give 0), so is one that is not there. `strict` is
    kvm_intel.error_on_inconsistent_vmcs_config (default Y); `evmcs` says kvm_intel uses
    the enlightened VMCS (KVM on Hyper-V)."""
    warnings: list[str] = []
    unknown: list[str] = []

    def adjust(index: int) -> int | tuple[str]:
        # adjust_vmx_controls(): ctl = (min | opt) & allowed-1, then | allowed-0.
        value = msrs.get(index, 0)
        lo, hi = value & M32, value >> 32 & M32
        required, optional = requested(index, model)
        ctl = ((required | optional) & hi) | lo
        missing = required & ~ctl
        if missing:
            names = ", ".join(f"bit {b} {control_name(index, b)}" for b in range(32) if missing >> b & 1)
            return (f"{MSRS[index].name} (0x{index:x}) cannot set control(s) KVM requires: {names}",)
        return ctl

    def failed(why: str) -> Setup:
        return Setup(None, (why,), tuple(warnings), unknown=tuple(unknown))

    proc = adjust(PROC)
    if isinstance(proc, tuple):
        return failed(proc[0])
    proc2 = 0
    if proc >> 31 & 1:  # CPU_BASED_ACTIVATE_SECONDARY_CONTROLS
        got = adjust(PROC2)  # nothing is required there: it cannot fail
        proc2 = got if isinstance(got, int) else 0
    if not proc >> 21 & 1:  # no CPU_BASED_TPR_SHADOW: no APIC-register virtualization
        proc2 &= ~_bits(4, 8, 9)
    cap = msrs.get(EPT_VPID_CAP, 0)  # rdmsr_safe(), read whatever the controls say
    ept, vpid = cap & M32, cap >> 32 & M32
    if not proc2 >> 1 & 1 and ept:
        warnings.append("EPT CAP should not exist if not support 1-setting enable EPT VM-execution control")
        if strict:
            return failed(
                "IA32_VMX_EPT_VPID_CAP (0x48c) reports EPT capabilities but SECONDARY_EXEC_ENABLE_EPT "
                'cannot be set ("EPT CAP should not exist if not support 1-setting enable EPT '
                'VM-execution control")'
            )
        ept = 0
        if model.has(EPT_VIOLATION_VE):
            proc2 &= ~_bits(18)
    if not proc2 >> 5 & 1 and vpid:
        warnings.append("VPID CAP should not exist if not support 1-setting enable VPID VM-execution control")
        if strict:
            return failed(
                "IA32_VMX_EPT_VPID_CAP (0x48c) reports VPID capabilities but SECONDARY_EXEC_ENABLE_VPID "
                'cannot be set ("VPID CAP should not exist if not support 1-setting enable VPID '
                'VM-execution control")'
            )
        vpid = 0
    has_sgx = cpuid.has_sgx
    if has_sgx is False:
        proc2 &= ~_bits(15)  # SECONDARY_EXEC_ENCLS_EXITING
    elif has_sgx is None and proc2 >> 15 & 1:
        unknown.append("CPUID leaf 0x12 (SGX1) was not read: whether ENCLS exiting stays is not known")
    proc3 = 0
    if proc >> 17 & 1:  # CPU_BASED_ACTIVATE_TERTIARY_CONTROLS: adjust_vmx_controls64()
        proc3 = requested(PROC3, model)[1] & msrs.get(PROC3, 0)
    exit_ = adjust(EXIT)
    if isinstance(exit_, tuple):
        return failed(exit_[0])
    pin = adjust(PIN)
    if isinstance(pin, tuple):
        return failed(pin[0])
    broken = cpuid.broken_preemption_timer
    if broken:
        pin &= ~_bits(6)
    elif broken is None and pin >> 6 & 1:
        unknown.append("CPUID leaf 1 was not read: the broken-preemption-timer list was not checked")
    if not proc2 >> 9 & 1:  # no SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY: no posted interrupts
        pin &= ~_bits(7)
    entry = adjust(ENTRY)
    if isinstance(entry, tuple):
        return failed(entry[0])
    bad_pairs = []
    for since, n, x, what in PAIRS:
        if not model.has(since) or bool(entry >> n & 1) == bool(exit_ >> x & 1):
            continue
        n_name, x_name = control_name(ENTRY, n), control_name(EXIT, x)
        side = f"{n_name} {'without' if entry >> n & 1 else 'is off but'} {x_name}"
        bad_pairs.append(f"{what}: {side}" + ("" if entry >> n & 1 else " is on"))
        if len(bad_pairs) == 1:  # pr_warn_once()
            warnings.append(
                f"Inconsistent VM-Entry/VM-Exit pair, entry = {entry & 1 << n:x} ({1 << n:x}), "
                f"exit = {exit_ & 1 << x:x} ({1 << x:x})"
                if model.has(PAIRS_ALL)
                else f"Inconsistent VM-Entry/VM-Exit pair, entry = {entry & 1 << n:x}, "
                f"exit = {exit_ & 1 << x:x}"
            )
        if strict and not model.has(PAIRS_ALL):
            break  # 6.1-6.14 return at the first bad pair
        # 6.15+ clear both in either mode; before, only without strict (which got here).
        entry &= ~(1 << n)
        exit_ &= ~(1 << x)
    if bad_pairs and strict:
        return failed(
            "inconsistent VM-entry/VM-exit control pair(s): "
            + "; ".join(bad_pairs)
            + ' ("Inconsistent VM-Entry/VM-Exit pair"; kvm_intel.error_on_inconsistent_vmcs_config=Y)'
        )
    fm = cpuid.family_model
    if (
        model.has(PERF_GLOBAL_ERRATUM)
        and fm is not None
        and fm[0] == 6
        and fm[1] in PERF_GLOBAL_BROKEN_MODELS
    ):
        # The warning is printed on these models whatever the controls were.
        warnings.append("VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL does not work properly. Using workaround")
        entry &= ~_bits(13)
        exit_ &= ~_bits(12)
    basic = msrs.get(BASIC, 0)
    refused = basic_refusals(basic)
    if refused:
        return failed(refused[0])
    config = VmcsConfig(basic & M64, pin, proc, proc2, proc3, exit_, entry, msrs.get(MISC, 0) & M64)
    if evmcs and model.has(EVMCS_SANITIZE):
        config = replace(
            config, **{name: getattr(config, name) & mask for name, mask in EVMCS1_SUPPORTED.items()}
        )
    return Setup(config, (), tuple(warnings), ept, vpid, tuple(unknown))


def basic_refusals(basic: int) -> list[str]:
    """setup_vmcs_config()'s checks of IA32_VMX_BASIC, in its order, each -EIO with no
    message. They need no other register: where the control MSRs were not read, they
    still decide."""
    out = []
    size = basic >> 32 & 0x1FFF
    if size > PAGE_SIZE:
        out.append(f"IA32_VMX_BASIC VMCS size {size} (bits 44:32) > PAGE_SIZE {PAGE_SIZE}")
    if basic >> 48 & 1:
        out.append("IA32_VMX_BASIC bit 48 (32-bit physical addresses only) is set on an x86_64 kernel")
    if (basic >> 50 & 0xF) != VMX_BASIC_MEM_TYPE_WB:
        out.append(f"IA32_VMX_BASIC memory type (bits 53:50) is {basic >> 50 & 0xF}, not 6 (write-back)")
    return out


def ept_enabled(reference: Setup, enable_ept: bool = True) -> bool:
    """hardware_setup() on the loading CPU: enable_ept survives only with the EPT control
    and the EPT capabilities KVM needs (and kvm_intel.ept=Y)."""
    c = reference.config
    return (
        enable_ept
        and c is not None
        and bool(c.cpu_based_2nd_exec_ctrl >> 1 & 1)
        and reference.ept_cap & EPT_REQUIRED_CAPS == EPT_REQUIRED_CAPS
    )


def with_nested(setup: Setup, msrs: dict[int, int], ept: bool) -> Setup:
    """nested_vmx_setup_ctls_msrs(&vmcs_conf->nested, vmx_cap.ept) (kvm_intel.nested=1):
    the per-CPU inputs of the nested part: the EPT capabilities KVM passes through (when
    enable_ept) and IA32_VMX_CR0/CR4_FIXED1, read with rdmsrl(). The rest of the nested
    MSRs derive from the control fields or from module-wide values."""
    if setup.config is None:
        return setup
    config = replace(
        setup.config,
        nested_ept_caps=setup.ept_cap & NESTED_EPT_BITS if ept else 0,
        nested_cr0_fixed1=msrs.get(CR0_FIXED1, 0) & M64,
        nested_cr4_fixed1=msrs.get(CR4_FIXED1, 0) & M64,
    )
    return replace(setup, config=config)


@dataclass(frozen=True)
class FieldDifference:
    """One field of vmcs_config that differs between two CPUs."""

    name: str  # the struct's field
    index: int  # the MSR it comes from
    a: int
    b: int
    bits: tuple[int, ...] = ()

    def describe(self, a_cpu: int, b_cpu: int) -> str:
        if self.index in CONTROL_MSRS or self.index == PROC3:
            named = ", ".join(
                f"{control_name(self.index, bit)} (bit {bit}): CPU {a_cpu} {self.a >> bit & 1}, "
                f"CPU {b_cpu} {self.b >> bit & 1}"
                for bit in self.bits
            )
            return f"{self.name} {named}"
        return (
            f"{self.name} (from 0x{self.index:x}) 0x{self.a:x} on CPU {a_cpu}, 0x{self.b:x} on CPU "
            f"{b_cpu}, bit(s) {', '.join(map(str, self.bits))}"
        )


def differences(a: VmcsConfig, b: VmcsConfig) -> list[FieldDifference]:
    """Where memcmp() of two vmcs_config would differ, field by field."""
    out = []
    for f in fields(VmcsConfig):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va != vb:
            d = va ^ vb
            out.append(
                FieldDifference(f.name, FIELD_MSR[f.name], va, vb, tuple(n for n in range(64) if d >> n & 1))
            )
    return out


def reaching_bits(index: int, a: VmcsConfig, b: VmcsConfig) -> int:
    """The bits of MSR `index` whose difference between the two CPUs reaches vmcs_config:
    for a 32-bit control MSR, a control bit that differs in the struct came from its
    allowed-0 or its allowed-1 bit, so both count."""
    name = MSR_FIELD.get(index)
    if name is None:
        return 0
    d: int = getattr(a, name) ^ getattr(b, name)
    return (d | d << 32) & M64 if index in CONTROL_MSRS else d & M64


# --- module parameters ------------------------------------------------------------------


def _param_on(params: dict[str, str], name: str) -> bool:
    value = params.get(name)
    return value is None or value.strip().upper() not in ("N", "0")


def nested_enabled(params: dict[str, str]) -> bool:
    """kvm_intel.nested as the host has it; 1 (the default since Linux 4.20) if unknown."""
    return _param_on(params, "nested")


def strict_config(params: dict[str, str]) -> bool:
    """kvm_intel.error_on_inconsistent_vmcs_config (default Y)."""
    return _param_on(params, "error_on_inconsistent_vmcs_config")


def ept_param(params: dict[str, str]) -> bool:
    """kvm_intel.ept (default Y)."""
    return _param_on(params, "ept")


# --- which MSRs reach vmcs_config, for the capability table -----------------------------


@dataclass(frozen=True)
class KvmRole:
    """Whether kvm_intel's per-CPU comparison sees an MSR, and why (not)."""

    compared: bool
    why: str


KVM_FEEDS: dict[int, tuple[bool, str]] = {
    # index: (only with kvm_intel.nested=1, how it reaches vmcs_config)
    BASIC: (False, "setup_vmcs_config(): vmcs_conf->basic, all 64 bits"),
    PIN: (
        False,
        "adjust_vmx_controls(): pin_based_exec_ctrl, allowed-0 bits and the allowed-1 bits KVM requests",
    ),
    PROC: (
        False,
        "adjust_vmx_controls(): cpu_based_exec_ctrl, allowed-0 bits and the allowed-1 bits KVM requests",
    ),
    EXIT: (False, "adjust_vmx_controls(): vmexit_ctrl, allowed-0 bits and requested allowed-1 bits"),
    ENTRY: (False, "adjust_vmx_controls(): vmentry_ctrl, allowed-0 bits and requested allowed-1 bits"),
    MISC: (False, "setup_vmcs_config(): vmcs_conf->misc, all 64 bits"),
    PROC2: (
        False,
        "adjust_vmx_controls(): cpu_based_2nd_exec_ctrl, when the primary controls allow "
        "secondary controls; allowed-0 bits and the allowed-1 bits KVM requests",
    ),
    PROC3: (False, "adjust_vmx_controls64(): cpu_based_3rd_exec_ctrl, IPI virtualization (bit 4) only"),
    EPT_VPID_CAP: (
        True,
        "nested_vmx_setup_secondary_ctls(): nested.ept_caps, EPT bits 0, 6, 7, 14 and 20 only, "
        "with enable_ept; the rest only through the EPT/VPID CAP checks",
    ),
    CR0_FIXED1: (True, "nested_vmx_setup_cr_fixed(): rdmsrl() into nested.cr0_fixed1"),
    CR4_FIXED1: (True, "nested_vmx_setup_cr_fixed(): rdmsrl() into nested.cr4_fixed1"),
}
KVM_IGNORES: dict[int, str] = {
    0x486: "KVM reports its own VMXON_CR0_ALWAYSON to L1",
    0x488: "KVM reports its own VMXON_CR4_ALWAYSON to L1",
    0x48A: "KVM computes it (nested_vmx_calc_vmcs_enum_msr())",
    0x48D: "KVM reads only the plain control MSRs",
    0x48E: "KVM reads only the plain control MSRs",
    0x48F: "KVM reads only the plain control MSRs",
    0x490: "KVM reads only the plain control MSRs",
    0x491: "KVM derives its VM-function controls from EPT support",
    0x493: "no modelled kernel reads it (KVM's FRED support would; its merge is not confirmed)",
}


def kvm_role(index: int, nested: bool) -> KvmRole:
    feed = KVM_FEEDS.get(index)
    if feed is None:
        return KvmRole(False, KVM_IGNORES.get(index, "not read by KVM"))
    only_nested, why = feed
    if only_nested and not nested:
        return KvmRole(False, why + "; kvm_intel.nested=N on this host")
    return KvmRole(True, why + (" (kvm_intel.nested=1)" if only_nested else ""))
