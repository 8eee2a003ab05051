"""The VMX capability MSRs other than IA32_VMX_BASIC (0x481-0x493): which exist, what
each bit reports, and decoders.

Tables are data, near the top; small functions below. Every table row names where the
SDM defines it and what Linux calls it, so a reader can check one against the other:
Intel SDM Vol. 3D Appendix A "VMX Capability Reporting Facility" (A.2-A.11) for what
each capability MSR reports; the control bits are in vmxprobe.arch.controls. Linux
arch/x86/include/asm/msr-index.h (MSR_IA32_VMX_*) and asm/vmx.h (VMX_MISC_*, VMX_EPT_*,
VMX_VPID_*) name the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmxprobe.arch.controls import (
    ALWAYS_OFF,
    EITHER,
    ENTRY,
    EXIT,
    EXIT2,
    PINBASED,
    PROCBASED,
    PROCBASED2,
    PROCBASED3,
    VMFUNC,
    Control,
    ControlTable,
    control_state,
)
from vmxprobe.arch.fields import (
    CR_BITS,
    EPT_VPID_FIELDS,
    MISC_FIELDS,
    MISC_MSR_LIST_MULTIPLIER,
    VMCS_ENUM_FIELDS,
)
from vmxprobe.arch.vmx import (
    FEATURE_CONTROL_FIELDS,
    M32,
    M64,
    MSR_IA32_FEAT_CTL,
    MSR_IA32_VMX_BASIC,
    VMX_BASIC_FIELDS,
    Field,
    field_bits,
)

VMX_BASIC_TRUE_CTLS = 1 << 55  # asm/vmx.h VMX_BASIC_TRUE_CTLS; SDM A.1 bit 55

# A decoded register: field or control name -> value, JSON-ready (see decode()).
Decoded = dict[str, Any]

# Kinds of capability MSR.
KIND_CTLS = "controls"  # 32-bit controls: low dword allowed-0, high dword allowed-1
KIND_ALLOWED1 = "allowed1_64"  # 64-bit field: every bit an allowed-1 setting
KIND_MISC = "misc"
KIND_FIXED0 = "cr_fixed0"
KIND_FIXED1 = "cr_fixed1"
KIND_VMCS_ENUM = "vmcs_enum"
KIND_EPT_VPID = "ept_vpid_cap"


@dataclass(frozen=True)
class Msr:
    index: int
    name: str  # SDM name
    kernel: str  # msr-index.h macro
    kind: str
    sdm: str
    table: ControlTable | None = None
    register: str | None = None  # CR0/CR4 for the fixed MSRs
    true_of: int | None = None  # TRUE_* MSR: the plain MSR it replaces

    @property
    def controls(self) -> tuple[Control, ...]:
        """The control table's rows (the control MSRs have one)."""
        if self.table is None:
            raise ValueError(f"{self.name} holds no controls")
        return self.table.controls

    @property
    def cr(self) -> str:
        """The control register a CR fixed MSR is about."""
        if self.register is None:
            raise ValueError(f"{self.name} is not a CR fixed MSR")
        return self.register


def _m(index: int, name: str, kind: str, sdm: str, **kw: Any) -> Msr:
    return Msr(index, name, "MSR_" + name, kind, sdm, **kw)


MSRS: dict[int, Msr] = {
    m.index: m
    for m in (
        _m(0x481, "IA32_VMX_PINBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.1", table=PINBASED),
        _m(0x482, "IA32_VMX_PROCBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.2", table=PROCBASED),
        _m(0x483, "IA32_VMX_EXIT_CTLS", KIND_CTLS, "SDM Vol. 3D A.4.1", table=EXIT),
        _m(0x484, "IA32_VMX_ENTRY_CTLS", KIND_CTLS, "SDM Vol. 3D A.5", table=ENTRY),
        _m(0x485, "IA32_VMX_MISC", KIND_MISC, "SDM Vol. 3D A.6"),
        _m(0x486, "IA32_VMX_CR0_FIXED0", KIND_FIXED0, "SDM Vol. 3D A.7", register="CR0"),
        _m(0x487, "IA32_VMX_CR0_FIXED1", KIND_FIXED1, "SDM Vol. 3D A.7", register="CR0"),
        _m(0x488, "IA32_VMX_CR4_FIXED0", KIND_FIXED0, "SDM Vol. 3D A.8", register="CR4"),
        _m(0x489, "IA32_VMX_CR4_FIXED1", KIND_FIXED1, "SDM Vol. 3D A.8", register="CR4"),
        _m(0x48A, "IA32_VMX_VMCS_ENUM", KIND_VMCS_ENUM, "SDM Vol. 3D A.9"),
        _m(0x48B, "IA32_VMX_PROCBASED_CTLS2", KIND_CTLS, "SDM Vol. 3D A.3.3", table=PROCBASED2),
        _m(0x48C, "IA32_VMX_EPT_VPID_CAP", KIND_EPT_VPID, "SDM Vol. 3D A.10"),
        _m(
            0x48D,
            "IA32_VMX_TRUE_PINBASED_CTLS",
            KIND_CTLS,
            "SDM Vol. 3D A.3.1",
            table=PINBASED,
            true_of=0x481,
        ),
        _m(
            0x48E,
            "IA32_VMX_TRUE_PROCBASED_CTLS",
            KIND_CTLS,
            "SDM Vol. 3D A.3.2",
            table=PROCBASED,
            true_of=0x482,
        ),
        _m(0x48F, "IA32_VMX_TRUE_EXIT_CTLS", KIND_CTLS, "SDM Vol. 3D A.4.1", table=EXIT, true_of=0x483),
        _m(0x490, "IA32_VMX_TRUE_ENTRY_CTLS", KIND_CTLS, "SDM Vol. 3D A.5", table=ENTRY, true_of=0x484),
        _m(0x491, "IA32_VMX_VMFUNC", KIND_ALLOWED1, "SDM Vol. 3D A.11", table=VMFUNC),
        _m(0x492, "IA32_VMX_PROCBASED_CTLS3", KIND_ALLOWED1, "SDM Vol. 3D A.3.4", table=PROCBASED3),
        _m(0x493, "IA32_VMX_EXIT_CTLS2", KIND_ALLOWED1, "SDM Vol. 3D A.4.2", table=EXIT2),
    )
}

# The MSRs that exist on every processor with VMX (A.1-A.9 state no condition for them).
ALWAYS_PRESENT = (0x481, 0x482, 0x483, 0x484, 0x485, 0x486, 0x487, 0x488, 0x489, 0x48A)
TRUE_MSRS = (0x48D, 0x48E, 0x48F, 0x490)


# ---------------------------------------------------------------------------------------


def set_bits(value: int) -> list[int]:
    return [b for b in range(64) if value >> b & 1]


def _header(m: Msr, value: int) -> Decoded:
    return {"msr": m.name, "index": f"0x{m.index:x}", "kind": m.kind, "raw": f"0x{value:016x}"}


def _decode_ctls(m: Msr, value: int) -> Decoded:
    # A.3.1 (and alike for A.3.2, A.4.1, A.5): "Bits 31:0 indicate the allowed
    # 0-settings ... Bits 63:32 indicate the allowed 1-settings".
    out = _header(m, value)
    lo, hi = value & M32, value >> 32
    known = {c.bit for c in m.controls}
    out["allowed0"] = f"0x{lo:08x}"
    out["allowed1"] = f"0x{hi:08x}"
    out["controls"] = {
        c.name: control_state(bool(lo >> c.bit & 1), bool(hi >> c.bit & 1)) for c in m.controls
    }
    # Unknown control bits are kept: on the plain (non-TRUE) MSRs the default1 bits of
    # A.2 show up here as always_on, which is expected, not an error.
    out["reserved"] = [b for b in set_bits(value) if b % 32 not in known]
    out["reserved_controls"] = {
        f"bit{b}": control_state(bool(lo >> b & 1), bool(hi >> b & 1))
        for b in range(32)
        if b not in known and (lo | hi) >> b & 1
    }
    names = {c.bit: c.name for c in m.controls}
    out["errors"] = [
        f"bit {b} ({names.get(b, 'reserved')}): allowed-0 says must be 1 but allowed-1 says must be 0"
        for b in range(32)
        if lo >> b & 1 and not hi >> b & 1
    ]
    return out


def _decode_allowed1(m: Msr, value: int) -> Decoded:
    # A.3.4, A.4.2, A.11: a 64-bit MSR of allowed-1 settings only; a 0-setting is always
    # allowed, so a control is either flexible or must stay 0.
    out = _header(m, value)
    known = {c.bit for c in m.controls}
    out["controls"] = {c.name: EITHER if value >> c.bit & 1 else ALWAYS_OFF for c in m.controls}
    out["reserved"] = [b for b in set_bits(value) if b not in known]
    out["errors"] = []
    return out


def _decode_fields(m: Msr, value: int, fields: tuple[Field, ...]) -> Decoded:
    out = _header(m, value)
    known = 0
    decoded: Decoded = {}
    for f in fields:
        v = field_bits(value, f.lo, f.hi)
        decoded[f.name] = bool(v) if f.lo == f.hi else v
        known |= ((1 << (f.hi - f.lo + 1)) - 1) << f.lo
    out["fields"] = decoded
    out["reserved"] = set_bits(value & ~known & M64)
    out["errors"] = []
    return out


def _cr_names(register: str, mask: int) -> list[str]:
    named = {b: n for b, n, _ in CR_BITS[register]}
    return [named[b] for b in sorted(named) if mask >> b & 1]


def _cr_known_mask(register: str) -> int:
    mask = 0
    for b, _, _ in CR_BITS[register]:
        mask |= 1 << b
    return mask


def decode(index: int, value: int) -> Decoded:
    """Decode one VMX capability MSR value into a JSON-ready dict.

    Always present: msr, index, kind, raw ("0x%016x"), reserved (set bits the tables do
    not define, as bit numbers 0-63) and errors (strings).  Control MSRs add controls
    ({name: state}); the others add fields.
    """
    m = MSRS.get(index)
    if m is None:
        raise ValueError(f"0x{index:x} is not a VMX capability MSR decoded here (0x481-0x493)")
    if not isinstance(value, int):
        raise TypeError(f"a register value is an int, not {type(value).__name__}")
    if not 0 <= value <= M64:
        raise ValueError(f"{value:#x} is not a 64-bit register value")
    if m.kind == KIND_CTLS:
        return _decode_ctls(m, value)
    if m.kind == KIND_ALLOWED1:
        return _decode_allowed1(m, value)
    if m.kind == KIND_MISC:
        out = _decode_fields(m, value, MISC_FIELDS)
        f = out["fields"]
        f["max_msr_list_size"] = MISC_MSR_LIST_MULTIPLIER * (f["msr_list_size_code"] + 1)
        # Activity-state numbers of SDM 25.4.2 (asm/vmx.h GUEST_ACTIVITY_*): 0 active is
        # always supported, bits 6-8 report states 1-3.
        f["activity_states"] = ["active"] + [
            n
            for n, k in (
                ("hlt", "activity_hlt"),
                ("shutdown", "activity_shutdown"),
                ("wait_for_sipi", "activity_wait_for_sipi"),
            )
            if f[k]
        ]
        return out
    if m.kind == KIND_EPT_VPID:
        return _decode_fields(m, value, EPT_VPID_FIELDS)
    if m.kind == KIND_VMCS_ENUM:
        return _decode_fields(m, value, VMCS_ENUM_FIELDS)
    # A.7/A.8: "If bit X is 1 in IA32_VMX_CRn_FIXED0, then that bit of CRn is fixed to 1
    # in VMX operation.  Similarly, if bit X is 0 in IA32_VMX_CRn_FIXED1, then that bit
    # of CRn is fixed to 0 in VMX operation."
    out = _header(m, value)
    known = _cr_known_mask(m.cr)
    out["fields"] = {"register": m.cr}
    if m.kind == KIND_FIXED0:
        out["fields"]["fixed_to_1"] = _cr_names(m.cr, value)
    else:
        fixed0 = ~value & M64
        out["fields"]["fixed_to_0"] = _cr_names(m.cr, fixed0)
        out["fields"]["fixed_to_0_mask"] = f"0x{fixed0:016x}"
        out["fields"]["may_be_1"] = _cr_names(m.cr, value)
    out["reserved"] = set_bits(value & ~known)
    out["errors"] = []
    return out


def cr_fixed_summary(register: str, fixed0: int, fixed1: int) -> Decoded:
    """Combine a FIXED0/FIXED1 pair (A.7, A.8) into fixed_to_1 / fixed_to_0 / flexible names."""
    errors = [f"bit {b}: fixed to 1 by FIXED0 and to 0 by FIXED1" for b in set_bits(fixed0 & ~fixed1 & M64)]
    return {
        "register": register,
        "fixed_to_1": _cr_names(register, fixed0),
        "fixed_to_0": _cr_names(register, ~fixed1 & M64),
        "flexible": _cr_names(register, fixed1 & ~fixed0 & M64),
        "errors": errors,
    }


# Names accepted for IA32_FEATURE_CONTROL besides its index: the SDM's and Linux's
# (msr-index.h MSR_IA32_FEAT_CTL, formerly MSR_IA32_FEATURE_CONTROL).
_FEATURE_CONTROL_NAMES = {"IA32_FEATURE_CONTROL", "FEATURE_CONTROL", "IA32_FEAT_CTL", "FEAT_CTL"}


def resolve_msr(name_or_index: str) -> int:
    """Index of a VMX capability MSR from "0x48b", "1163", "IA32_VMX_PROCBASED_CTLS2",
    "MSR_IA32_VMX_PROCBASED_CTLS2" or "PROCBASED_CTLS2" (any case).  IA32_FEATURE_CONTROL
    (0x3a, "FEATURE_CONTROL", "FEAT_CTL") is accepted too: it decides whether VMX is on."""
    s = str(name_or_index).strip()
    known = dict(MSRS)
    names = {"IA32_VMX_BASIC": MSR_IA32_VMX_BASIC}
    names.update({m.name: i for i, m in known.items()})
    index: int | None = None
    try:
        if s.lower().startswith("0x"):
            index = int(s[2:], 16)
        elif s.isdigit():
            index = int(s, 10)
    except ValueError:
        index = None
    if index is not None and (index in known or index in (MSR_IA32_VMX_BASIC, MSR_IA32_FEAT_CTL)):
        return index
    if index is None:
        key = s.upper()
        if key.startswith("MSR_"):
            key = key[4:]
        if key in _FEATURE_CONTROL_NAMES:
            return MSR_IA32_FEAT_CTL
        if not key.startswith("IA32_VMX_"):
            key = "IA32_VMX_" + key
        if key in names:
            return names[key]
    short = ", ".join(n[len("IA32_VMX_") :] for n, _ in sorted(names.items(), key=lambda kv: kv[1]))
    raise ValueError(
        f"unknown MSR {s!r}: give an index (0x3a, 0x480-0x493) or a name, optionally "
        f"prefixed IA32_VMX_ or MSR_IA32_VMX_: FEATURE_CONTROL, {short}"
    )


def effective_controls(msrs: dict[int, int], true_ctls: bool) -> dict[str, Decoded]:
    """Decoded controls per group, reading each from the MSR that holds the whole answer.

    A.3.1/A.3.2/A.4.1/A.5: "If bit 55 in the IA32_VMX_BASIC MSR is read as 1, all
    information about the allowed settings of the ... controls is contained in the
    IA32_VMX_TRUE_..._CTLS MSR", otherwise in the plain MSR.  Pass true_ctls = bit 55 of
    IA32_VMX_BASIC.  Groups whose MSR is absent from msrs are left out; a missing TRUE
    MSR falls back to the plain one (the result's "index" says which was used).
    """
    use: dict[str, int] = {}
    for index, m in MSRS.items():
        if m.table is None or m.true_of is not None:
            continue
        use[m.table.group] = index
    if true_ctls:
        for index in TRUE_MSRS:
            table = MSRS[index].table
            if index in msrs and table is not None:
                use[table.group] = index
    return {group: decode(index, msrs[index]) for group, index in use.items() if index in msrs}


def readable_msrs(msrs_so_far: dict[int, int], basic: int) -> list[int]:
    """The capability MSRs (other than IA32_VMX_BASIC) that exist, as far as the values
    read so far can tell.  A dependent MSR is listed once the MSR that announces it is in
    msrs_so_far and says so; call again after reading more to reach the full list.
    basic == 0 means no VMX (a real IA32_VMX_BASIC reports a non-zero VMCS size): [].
    """
    if not basic:
        return []
    out = set(ALWAYS_PRESENT)
    # A.1: bit 55 "also reports support for the VMX capability MSRs
    # IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
    # and IA32_VMX_TRUE_ENTRY_CTLS".
    if basic & VMX_BASIC_TRUE_CTLS:
        out.update(TRUE_MSRS)
    proc = msrs_so_far.get(0x482)
    # A.3.3: IA32_VMX_PROCBASED_CTLS2 "exists only on processors that support the
    # 1-setting of the 'activate secondary controls' VM-execution control (only if bit 63
    # of the IA32_VMX_PROCBASED_CTLS MSR is 1)".
    if proc is not None and proc >> 63 & 1:
        out.add(0x48B)
    # A.3.4: IA32_VMX_PROCBASED_CTLS3 "exists only on processors that support the
    # 1-setting of the 'activate tertiary controls' VM-execution control (only if bit 49
    # of the IA32_VMX_PROCBASED_CTLS MSR is 1)".
    if proc is not None and proc >> 49 & 1:
        out.add(0x492)
    proc2 = msrs_so_far.get(0x48B) if 0x48B in out else None
    # A.10: IA32_VMX_EPT_VPID_CAP exists only if "activate secondary controls" can be 1
    # "and that support either the 1-setting of the 'enable EPT' VM-execution control
    # (only if bit 33 of the IA32_VMX_PROCBASED_CTLS2 MSR is 1) or the 1-setting of the
    # 'enable VPID' VM-execution control (only if bit 37 ...)".
    if proc2 is not None and (proc2 >> 33 & 1 or proc2 >> 37 & 1):
        out.add(0x48C)
    # A.11: IA32_VMX_VMFUNC exists only if "activate secondary controls" can be 1 "and
    # the 'enable VM functions' VM-execution control (only if bit 45 of the
    # IA32_VMX_PROCBASED_CTLS2 MSR is 1)".
    if proc2 is not None and proc2 >> 45 & 1:
        out.add(0x491)
    # A.4.2: IA32_VMX_EXIT_CTLS2 "exists only on processors that support the 1-setting
    # of the 'activate secondary controls' VM-exit control (only if bit 63 of the
    # IA32_VMX_EXIT_CTLS MSR is 1)".
    exit_ctls = msrs_so_far.get(0x483)
    if exit_ctls is not None and exit_ctls >> 63 & 1:
        out.add(0x493)
    return sorted(out)


# ---------------------------------------------------------------------------------------
# Values pasted by people: `vmxprobe decode`.


def parse_value(text: str) -> int:
    """An MSR value as people paste it: hex, with or without "0x", with "_" or spaces
    between digit groups, or with the SDM's trailing "h" ("00DA040000000004h").  rdmsr(8)
    and vmxcap print hex without a prefix, so digits alone are read as hex too.
    Raises ValueError with a one-line message."""
    raw = str(text)
    s = "".join(raw.split()).replace("_", "")
    if s[:2].lower() == "0x":
        s = s[2:]
    elif s[-1:].lower() == "h" and len(s) > 1:
        s = s[:-1]
    if not s or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise ValueError(
            f"bad value {raw.strip()!r}: give the register as hex, e.g. 0x00da040000000004 "
            "(0x, '_' and spaces optional)"
        )
    value = int(s, 16)
    if value > M64:
        raise ValueError(f"bad value {raw.strip()!r}: more than 64 bits ({len(s.lstrip('0'))} hex digits)")
    return value


def msr_label(index: int) -> str:
    """ "IA32_VMX_PROCBASED_CTLS2 (0x48b)" for any MSR this tool reads."""
    if index == MSR_IA32_VMX_BASIC:
        name = "IA32_VMX_BASIC"
    elif index == MSR_IA32_FEAT_CTL:
        name = "IA32_FEATURE_CONTROL"
    else:
        m = MSRS.get(index)
        name = m.name if m else "MSR"
    return f"{name} (0x{index:x})"


# ---------------------------------------------------------------------------------------
# What a single bit of a capability MSR means: used to name differences bit by bit.


def describe_bit(index: int, bit: int) -> str:
    """Name what bit `bit` (0-63) of MSR `index` reports, in words a reader can check
    against the SDM table the MSR's decoder cites."""
    if index == MSR_IA32_VMX_BASIC:
        for f in VMX_BASIC_FIELDS:
            if f.lo <= bit <= f.hi:
                return f.name if f.lo == f.hi else f"{f.name} (bits {f.hi}:{f.lo})"
        return "reserved"
    if index == MSR_IA32_FEAT_CTL:
        for f in FEATURE_CONTROL_FIELDS:
            if f.lo <= bit <= f.hi:
                return f.name
        return "reserved"
    m = MSRS.get(index)
    if m is None:
        return f"bit {bit}"
    if m.kind == KIND_CTLS:
        names = {c.bit: c.name for c in m.controls}
        b = bit % 32
        what = names.get(b, f"bit {b} (no control defined)")
        return f"{'allowed-1' if bit >= 32 else 'allowed-0'} of {what}"
    if m.kind == KIND_ALLOWED1:
        names = {c.bit: c.name for c in m.controls}
        return f"allowed-1 of {names.get(bit, f'bit {bit} (no control defined)')}"
    fields = {KIND_MISC: MISC_FIELDS, KIND_EPT_VPID: EPT_VPID_FIELDS, KIND_VMCS_ENUM: VMCS_ENUM_FIELDS}.get(
        m.kind
    )
    if fields is not None:
        for f in fields:
            if f.lo <= bit <= f.hi:
                return f.name if f.lo == f.hi else f"{f.name} (bits {f.hi}:{f.lo})"
        return "reserved"
    named = {b: n for b, n, _ in CR_BITS[m.cr]}
    return f"{m.cr}.{named.get(bit, f'bit{bit}')}"


def differing_bits(index: int, a: int, b: int) -> list[dict[str, Any]]:
    """Bits where a and b differ: [{"bit", "what", "a", "b"}], lowest first."""
    return [
        {"bit": n, "what": describe_bit(index, n), "a": int(a >> n & 1), "b": int(b >> n & 1)}
        for n in set_bits((a ^ b) & M64)
    ]


# ---------------------------------------------------------------------------------------
# vmxcap's "default" state.  A.2: on the plain control MSRs the "default1" controls read
# as must-be-1; when IA32_VMX_BASIC bit 55 is set the TRUE MSR says whether they may be 0.
# QEMU's scripts/kvm/vmxcap prints such a control as "default".


def default1_controls(plain: int, true: int) -> list[int]:
    """Control bits (0-31) that the plain MSR forces to 1 but its TRUE MSR lets be 0."""
    p_lo, p_hi, t_lo, t_hi = plain & M32, plain >> 32, true & M32, true >> 32
    return [b for b in range(32) if p_lo >> b & 1 and p_hi >> b & 1 and not t_lo >> b & 1 and t_hi >> b & 1]
