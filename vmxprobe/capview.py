"""Every CPU's VMX capability MSRs, side by side: the boot CPU's decoded table, the CPUs
that differ from it bit by bit (and whether kvm_intel's per-CPU check sees the
difference), MSRs that fault where the SDM says they exist, the kernel's "vmx flags"
against what the registers imply, the TDX SEAMRET erratum bit and who made the values up.

analyse() returns one JSON-ready dict (the report's "capabilities" section, schema
report-v1.json); render_text() prints it as a table.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from vmxprobe import caps, vmx
from vmxprobe.cpulist import format_cpulist
from vmxprobe.scan import ECX, HostScan
from vmxprobe.sources import MEANING

CAP_INDEXES = tuple(sorted(caps.MSRS))
# Readings that say nothing about the CPU (replay without the value, no driver, no
# permission, a short or offline read): such a register is "not read", never "absent".
NOT_READ = frozenset({"UNRECORDED", "ENOENT", "EPERM", "EACCES", "SHORT", "ENXIO", "EINVAL"})

STATE_READ = "read"              # the capability MSRs were read on the boot CPU
STATE_NOT_READ = "not_read"      # VMX_BASIC shows VMX but the others could not be read
STATE_NO_VMX = "no_vmx"          # VMX_BASIC absent, faulting or 0: nothing more to read
STATE_UNKNOWN = "unknown"        # VMX_BASIC itself could not be read


def nested_enabled(scan: HostScan) -> bool:
    """kvm_intel.nested as the host has it; 1 (the default since Linux 4.20) if unknown."""
    value = scan.kvm_params.get("nested")
    return value is None or value.strip().upper() not in ("N", "0")


def strict_config(scan: HostScan) -> bool:
    """kvm_intel.error_on_inconsistent_vmcs_config (default Y)."""
    value = scan.kvm_params.get("error_on_inconsistent_vmcs_config")
    return value is None or value.strip().upper() not in ("N", "0")


def cpu_values(p) -> Dict[int, int]:
    """The values of the capability MSRs read on one CPU (and IA32_VMX_BASIC)."""
    return {i: r.value for i, r in p.msr.items()
            if r.ok and (i in caps.MSRS or i == vmx.MSR_IA32_VMX_BASIC)}


def kernel_values(p) -> Optional[Dict[int, int]]:
    """The values the kernel would get on this CPU: a faulting read is 0 (the rdmsr()
    exception fixup zeroes the result; rdmsr_safe() callers see 0 too), an MSR that is not
    architecturally there is left out (the kernel does not read it).  None when some MSR
    could not be read at all, so the kernel's view cannot be rebuilt."""
    out = {}
    for i, r in p.msr.items():
        if i not in caps.MSRS and i != vmx.MSR_IA32_VMX_BASIC:
            continue
        if r.ok:
            out[i] = r.value
        elif r.errno == "EIO":
            out[i] = 0
        else:
            return None
    return out


def cpu_state(p) -> str:
    basic = p.msr.get(vmx.MSR_IA32_VMX_BASIC)
    if basic is None or (not basic.ok and basic.errno != "EIO"):
        return STATE_UNKNOWN
    if not basic.ok or not basic.value:
        return STATE_NO_VMX
    r = p.msr.get(0x481)
    if r is None or (not r.ok and r.errno in NOT_READ):
        return STATE_NOT_READ
    return STATE_READ


def _read_state(p, index: int) -> str:
    r = p.msr.get(index)
    if r is None:
        return "absent"
    return "ok" if r.ok else r.errno


def _kvm_role(index: int, nested: bool) -> dict:
    feed = caps.KVM_FEEDS.get(index)
    if feed is None:
        return {"compared": False, "why": caps.KVM_IGNORES.get(index, "not read by KVM")}
    if feed[0] == caps.FEEDS_NESTED and not nested:
        return {"compared": False, "why": feed[2] + "; kvm_intel.nested=N on this host"}
    return {"compared": True, "why": feed[2] + (" (kvm_intel.nested=1)" if feed[0] == caps.FEEDS_NESTED else "")}


def msr_key(p) -> int:
    """Which readings a CPU has, for computing what derives from them once per distinct
    set rather than once per CPU: scan.collect() gives CPUs that read alike one shared
    msr dict, so a host of 8192 CPUs has a handful of keys. Valid for one pass over
    scan.probes, while the probes hold their dicts."""
    return id(p.msr)


def _differences(scan: HostScan, boot: int, nested: bool,
                 states: Optional[Dict[int, str]] = None) -> tuple[list, list]:
    """Per MSR, the CPUs whose value differs from the boot CPU's, and the pairs that
    could not be compared."""
    bp = scan.probes[boot]
    if states is None:
        states = {cpu: cpu_state(p) for cpu, p in scan.probes.items()}
    indexes = (vmx.MSR_IA32_VMX_BASIC,) + CAP_INDEXES
    # A CPU whose readings of every compared MSR equal the boot CPU's has nothing to
    # report, except where the boot CPU's own reading is "not read" (handled per MSR
    # below); its state is the boot CPU's too, since cpu_state() looks at 0x480 and
    # 0x481 only. Only the others are walked MSR by MSR.
    boot_key = tuple(map(bp.msr.get, indexes))
    same, others = [], []
    for cpu in sorted(scan.probes):
        if cpu != boot:
            msr = scan.probes[cpu].msr
            (same if msr is bp.msr or tuple(map(msr.get, indexes)) == boot_key
             else others).append(cpu)
    boot_state = states[boot]
    diffs, not_compared = [], []
    for index in indexes:
        entry = None
        unknown = []
        whys: set = set()
        a = bp.msr.get(index)
        if same and a is not None and not a.ok and a.errno in NOT_READ and \
                (boot_state == STATE_READ or index == vmx.MSR_IA32_VMX_BASIC):
            unknown.extend(same)
            whys.add(a.errno)
        for cpu in others:
            p = scan.probes[cpu]
            if states[cpu] != STATE_READ and index != vmx.MSR_IA32_VMX_BASIC:
                continue
            b = p.msr.get(index)
            if a is None and b is None:
                continue
            if (a is not None and not a.ok and a.errno in NOT_READ) or \
                    (b is not None and not b.ok and b.errno in NOT_READ):
                unknown.append(cpu)
                whys.update(r.errno for r in (a, b) if r is not None and not r.ok)
                continue
            # The kernel's view: a fault reads 0, an MSR that is not there is not read (0).
            va = a.value if a is not None and a.ok else 0
            vb = b.value if b is not None and b.ok else 0
            how_a = "absent" if a is None else ("ok" if a.ok else a.errno)
            how_b = "absent" if b is None else ("ok" if b.ok else b.errno)
            if va == vb and how_a == how_b:
                continue
            if entry is None:
                entry = {"index": "0x%x" % index, "msr": caps.msr_label(index),
                         "boot_value": "0x%016x" % va, "boot_read": how_a,
                         "kvm": _kvm_role(index, nested), "cpus": []}
            mask = caps.kvm_feed_mask(index, nested) if index in caps.MSRS else caps._M64
            bits = caps.differing_bits(index, va, vb)
            entry["cpus"].append({
                "cpu": cpu, "value": "0x%016x" % vb, "read": how_b,
                "bits": [dict(bit, kvm=bool(mask >> bit["bit"] & 1)) for bit in bits],
                "kvm_refuses": bool((va ^ vb) & mask) and entry["kvm"]["compared"],
            })
        if entry is not None:
            diffs.append(entry)
        if unknown:
            not_compared.append({"index": "0x%x" % index, "msr": caps.msr_label(index),
                                 "cpus": format_cpulist(unknown), "why": ", ".join(sorted(whys))})
    return diffs, not_compared


def _faults(scan: HostScan) -> list:
    """Capability MSRs that fault (EIO) on a CPU where the SDM says they exist: the scan
    reads only MSRs caps.readable_msrs() lists, so every EIO among them is one."""
    by_index: Dict[int, List[int]] = {}
    faulting: Dict[int, List[int]] = {}  # msr_key() -> the MSRs that fault there
    for cpu, p in sorted(scan.probes.items()):
        key = msr_key(p)
        indexes = faulting.get(key)
        if indexes is None:
            indexes = faulting[key] = [
                index for index in CAP_INDEXES
                if (r := p.msr.get(index)) is not None and not r.ok and r.errno == "EIO"]
        for index in indexes:
            by_index.setdefault(index, []).append(cpu)
    out = []
    for index, cpus in sorted(by_index.items()):
        m = caps.MSRS[index]
        out.append({"index": "0x%x" % index, "msr": caps.msr_label(index), "cpus": format_cpulist(cpus),
                    "why": "%s faults (EIO) although %s says it exists: not implemented by "
                           "this CPU or hypervisor" % (caps.msr_label(index), _existence_rule(index)),
                    "sdm": m.sdm})
    return out


def _existence_rule(index: int) -> str:
    return {
        0x48B: "IA32_VMX_PROCBASED_CTLS bit 63 (A.3.3)",
        0x492: "IA32_VMX_PROCBASED_CTLS bit 49 (A.3.4)",
        0x493: "IA32_VMX_EXIT_CTLS bit 63 (A.4.2)",
        0x48C: "IA32_VMX_PROCBASED_CTLS2 bit 33 or 37 (A.10)",
        0x491: "IA32_VMX_PROCBASED_CTLS2 bit 45 (A.11)",
        0x48D: "IA32_VMX_BASIC bit 55 (A.1)", 0x48E: "IA32_VMX_BASIC bit 55 (A.1)",
        0x48F: "IA32_VMX_BASIC bit 55 (A.1)", 0x490: "IA32_VMX_BASIC bit 55 (A.1)",
    }.get(index, "every CPU with VMX (SDM Vol. 3D Appendix A)")


def _kernel_version(text: Optional[str]) -> Optional[tuple]:
    import re
    m = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _kernel_view(scan: HostScan, boot: int, states: Optional[Dict[int, str]] = None) -> list:
    """Each CPU's /proc/cpuinfo "vmx flags" against caps.implied_vmx_flags() of its own
    registers, CPUs with the same disagreement grouped, each disagreement explained."""
    groups: Dict[tuple, List[int]] = {}
    known_names = set(caps.VMX_FLAG_NAMES.values())
    implied_of: Dict[int, Optional[frozenset]] = {}  # msr_key() -> implied flags
    compared: Dict[tuple, tuple] = {}  # (implied, shown) -> (missing, extra)
    for cpu, p in sorted(scan.probes.items()):
        info = scan.cpuinfo.get(cpu)
        state = states[cpu] if states is not None else cpu_state(p)
        if info is None or state != STATE_READ:
            continue
        # init_vmx_capabilities() runs only while X86_FEATURE_VMX survives feat_ctl.c;
        # a CPU with VMX off has no vmx flags line, as the kernel view of "flags" says.
        if "vmx" not in info["flags"]:
            continue
        key = msr_key(p)
        if key in implied_of:
            implied = implied_of[key]
        else:
            values = kernel_values(p)
            implied = implied_of[key] = (None if values is None
                                         else frozenset(caps.implied_vmx_flags(values)))
        if implied is None:
            continue
        shown = info["vmx flags"]
        if not info.get("vmx flags line", bool(shown)):
            if implied:
                groups.setdefault(("noline", (), ()), []).append(cpu)
            continue
        try:
            # Flag sets from scan.parse_cpuinfo() are shared frozensets: one comparison
            # per distinct pair.
            missing, extra = compared[implied, shown]
        except KeyError:
            missing, extra = compared[implied, shown] = (tuple(sorted(implied - shown)),
                                                         tuple(sorted(shown - implied)))
        except TypeError:  # a plain set
            missing, extra = tuple(sorted(implied - shown)), tuple(sorted(shown - implied))
        if missing or extra:
            groups.setdefault(("differ", missing, extra), []).append(cpu)
    out = []
    for (kind, missing, extra), cpus in groups.items():
        item = {"cpus": format_cpulist(cpus), "missing": list(missing), "extra": list(extra), "why": []}
        if kind == "noline":
            version = _kernel_version(scan.kernel)
            if version is not None and version >= (5, 6):
                item["why"].append(
                    "no \"vmx flags\" line although the registers imply some: kernel %s prints it "
                    "whenever VMX survives feat_ctl.c (CONFIG_X86_VMX_FEATURE_NAMES follows "
                    "CONFIG_IA32_FEAT_CTL), so this /proc/cpuinfo was not written by that kernel on "
                    "these registers (composed, or copied from another boot)" % scan.kernel)
            else:
                item["why"].append(
                    "no \"vmx flags\" line although the registers imply some: kernels before 5.6 "
                    "do not print it, so tools that read that line see nothing")
        if missing:
            item["why"].append("implied by the registers but not shown (%s): the running "
                               "kernel's vmxfeatures.h predates these names, or the registers "
                               "changed after the kernel read them at boot" % ", ".join(missing))
        unknown = [f for f in extra if f not in known_names]
        stale = [f for f in extra if f in known_names]
        if stale:
            item["why"].append("shown but not allowed by the registers now (%s): the values "
                               "changed after boot (a microcode update, or a hypervisor that "
                               "changed what it offers, e.g. across a migration)" % ", ".join(stale))
        if unknown:
            item["why"].append("shown under names vmxprobe does not decode (%s): a kernel newer "
                               "than vmxprobe's table of VMX_FEATURE names" % ", ".join(unknown))
        out.append(item)
    return out


def _hv_leaves(p) -> Dict[int, tuple]:
    return {leaf: r.value for leaf, r in p.cpuid.items()
            if leaf in (caps.HV_CPUID_ENLIGHTMENT_INFO, caps.HV_CPUID_NESTED_FEATURES) and r.ok}


def _hypervisor(p) -> Optional[str]:
    if not p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT):
        return None
    r = p.cpuid.get(vmx.CPUID_HV_LEAF)
    return (vmx.hypervisor_name(r.value) if r is not None and r.ok else None) or "an unnamed hypervisor"


def _tdx(scan: HostScan, boot: int, basic: int) -> dict:
    out = caps.seamret_erratum(basic)
    info = scan.cpuinfo.get(boot)
    out["tdx_host_platform"] = None if info is None else "tdx_host_platform" in info["flags"]
    out["kernel_reports_bug"] = None if info is None else "seamret_invd_vmcs" in info["bugs"]
    return out


def analyse(scan: HostScan, boot: Optional[int]) -> dict:
    """The "capabilities" section of the report."""
    out: dict = {"boot_cpu": boot, "state": STATE_UNKNOWN, "cpus_read": "", "cpus_not_read": "",
                 "kvm_nested": None, "msrs": [], "effective_controls": {}, "cr_fixed": {},
                 "faults": [], "differences": [], "not_compared": [], "kernel_view": [],
                 "seamret": None, "synthetic": None, "kvm_setup": []}
    if boot is None or boot not in scan.probes:
        return out
    nested = nested_enabled(scan)
    out["kvm_nested"] = nested
    bp = scan.probes[boot]
    state = cpu_state(bp)
    out["state"] = state
    states = {cpu: cpu_state(p) for cpu, p in scan.probes.items()}
    out["cpus_read"] = format_cpulist(c for c, s in states.items() if s == STATE_READ)
    out["cpus_not_read"] = format_cpulist(c for c, s in states.items() if s == STATE_NOT_READ)
    basic_r = bp.msr.get(vmx.MSR_IA32_VMX_BASIC)
    basic = basic_r.value if basic_r is not None and basic_r.ok else None
    syn = caps.synthetic_vmx(basic if basic else None, _hypervisor(bp), _hv_leaves(bp))
    out["synthetic"] = syn
    if state in (STATE_UNKNOWN, STATE_NO_VMX):
        return out
    out["seamret"] = _tdx(scan, boot, basic)
    values = cpu_values(bp)
    for index in (vmx.MSR_IA32_VMX_BASIC,) + CAP_INDEXES:
        how = _read_state(bp, index)
        row = {"index": "0x%x" % index, "msr": caps.msr_label(index), "read": how,
               "kvm": _kvm_role(index, nested) if index in caps.MSRS else
               {"compared": True, "why": "setup_vmcs_config(): vmcs_conf->basic"},
               "decoded": None}
        if index in values:
            row["decoded"] = caps.decode_any(index, values[index])
        out["msrs"].append(row)
    if state == STATE_READ:
        true_ctls = bool(basic & caps.VMX_BASIC_TRUE_CTLS)
        for group, d in caps.effective_controls(values, true_ctls).items():
            entry = {"from": d["index"], "controls": d["controls"],
                     "reserved_controls": d.get("reserved_controls", {}), "default1": []}
            m = caps.MSRS[int(d["index"], 16)]
            if m.true_of is not None and m.true_of in values:
                names = {c.bit: c.name for c in m.table.controls}
                entry["default1"] = [names.get(b, "bit%d" % b)
                                     for b in caps.default1_controls(values[m.true_of], values[m.index])]
            out["effective_controls"][group] = entry
        for reg, f0, f1 in (("CR0", 0x486, 0x487), ("CR4", 0x488, 0x489)):
            if f0 in values and f1 in values:
                out["cr_fixed"][reg] = caps.cr_fixed_summary(reg, values[f0], values[f1])
        kv = kernel_values(bp)
        if kv is not None:
            out["kvm_setup"] = caps.kvm_setup_problems(kv, strict_config(scan))
    out["faults"] = _faults(scan)
    out["differences"], out["not_compared"] = _differences(scan, boot, nested, states)
    out["kernel_view"] = _kernel_view(scan, boot, states)
    return out


# ---------------------------------------------------------------------------------------
# Text.

def _fmt_field(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "-"
    return str(value)


def decoded_lines(d: dict, indent: str = "  ") -> List[str]:
    """A decoded MSR (caps.decode_any()) as aligned "name  value" lines."""
    lines = []
    if d["kind"] == "basic":
        lines.append(f"{indent}{'revision id':<40} {d['revision_id']} (0x{d['revision_id']:x})")
        lines.append(f"{indent}{'VMCS size':<40} {d['vmcs_size']} bytes")
        lines.append(f"{indent}{'memory type':<40} {d['memory_type_name']} ({d['memory_type']})")
        for key in ("phys_addr_32bit", "dual_monitor", "ins_outs", "true_controls",
                    "no_hw_error_code_cc", "no_seamret_invd_vmcs"):
            lines.append(f"{indent}{key:<40} {_fmt_field(d[key])}")
        lines.append(f"{indent}{'TDX SEAMRET':<40} {d['seamret']['meaning']}")
        if d.get("synthetic"):
            lines.append(f"{indent}{'synthetic':<40} {d['synthetic']}")
    elif d["kind"] == "feature_control":
        for f in vmx.FEATURE_CONTROL_FIELDS:
            lines.append(f"{indent}{f.name:<40} {_fmt_field(d[f.name])}")
        lines.append(f"{indent}{'state':<40} {d['state']}")
    elif "controls" in d:
        for name, st in d["controls"].items():
            lines.append(f"{indent}{name:<40} {st}")
        for name, st in d.get("reserved_controls", {}).items():
            lines.append(f"{indent}{name + ' (undefined)':<40} {st}")
    else:
        for name, v in d["fields"].items():
            lines.append(f"{indent}{name:<40} {_fmt_field(v)}")
    if d.get("reserved"):
        lines.append(f"{indent}{'set reserved/undefined bits':<40} {', '.join(map(str, d['reserved']))}")
    for e in d.get("errors", []):
        lines.append(f"{indent}error: {e}")
    return lines


def render_text(section: dict) -> str:
    lines: List[str] = []
    boot = section["boot_cpu"]
    state = section["state"]
    if state == STATE_UNKNOWN:
        return "VMX capabilities: IA32_VMX_BASIC could not be read\n"
    if state == STATE_NO_VMX:
        return "VMX capabilities: none (IA32_VMX_BASIC faults or reads 0: no VMX here)\n"
    if state == STATE_NOT_READ:
        lines.append(f"VMX capabilities of CPU {boot}: only IA32_VMX_BASIC was read; the "
                     "capability MSRs 0x481-0x493 were not (not recorded, or not readable)")
    else:
        lines.append(f"VMX capabilities of CPU {boot} (the boot CPU); read on CPU(s) "
                     f"{section['cpus_read'] or '-'}"
                     + (f", not read on CPU(s) {section['cpus_not_read']}" if section["cpus_not_read"] else ""))
    syn = section.get("synthetic")
    if syn:
        lines.append(f"Made up by {syn['by']}: {syn['how']}")
        ev = syn.get("evmcs")
        if ev:
            lines.append(f"  enlightened VMCS: recommended {_fmt_field(ev['recommended'])}, versions "
                         f"{ev['version_low']}-{ev['version_high']}; kvm_intel would use it: "
                         f"{_fmt_field(ev['kvm_uses_evmcs'])}")
    eff = section["effective_controls"]
    unread: Dict[str, List[str]] = {}
    for row in section["msrs"]:
        d = row["decoded"]
        if d is None:
            if row["read"] != "absent":
                unread.setdefault(row["read"], []).append(row["index"])
            continue
        kvm = "compared by kvm_intel" if row["kvm"]["compared"] else "not compared by kvm_intel"
        lines.append(f"{row['msr']} = {d['raw']}  [{kvm}]")
        m = caps.MSRS.get(int(row["index"], 16))
        if m is not None and m.table is not None and m.true_of is None and m.kind == caps.KIND_CTLS:
            e = eff.get(m.table.group)
            if e is not None and e["from"] != row["index"]:
                lines.append(f"  (effective settings below are from {caps.msr_label(int(e['from'], 16))}: "
                             "IA32_VMX_BASIC bit 55)")
                d = dict(d, controls=e["controls"], reserved_controls=e["reserved_controls"])
            if e is not None and e["default1"]:
                lines.append(f"  default1 (forced here, optional per the TRUE MSR): {', '.join(e['default1'])}")
        lines += decoded_lines(d)
    for how, indexes in unread.items():
        lines.append(f"Not decoded ({how}: {MEANING.get(how, 'not read')}): {', '.join(indexes)}")
    for reg, s in section["cr_fixed"].items():
        lines.append(f"{reg} in VMX operation: fixed to 1 {_fmt_field(s['fixed_to_1'])}; fixed to 0 "
                     f"{_fmt_field(s['fixed_to_0'])}")
    if section["kvm_setup"]:
        lines.append(f"kvm_intel setup_vmcs_config() on CPU {boot}:")
        lines += [f"  - {x}" for x in section["kvm_setup"]]
    if section["faults"]:
        lines.append("Faults where the SDM says the MSR exists:")
        lines += [f"  - CPU(s) {f['cpus']}: {f['why']}" for f in section["faults"]]
    if section["differences"]:
        lines.append(f"CPUs that differ from CPU {boot}:")
        for d in section["differences"]:
            lines.append(f"  {d['msr']} (CPU {boot}: {d['boot_value']}); "
                         + ("kvm_intel compares it" if d["kvm"]["compared"] else
                            f"kvm_intel does not compare it: {d['kvm']['why']}"))
            for c in d["cpus"]:
                verdict = "kvm_intel refuses (\"Inconsistent VMCS config on CPU %d\")" % c["cpu"] \
                    if c["kvm_refuses"] else "reported, not refused"
                read = "" if c["read"] == "ok" else f" ({c['read']})"
                lines.append(f"    CPU {c['cpu']} = {c['value']}{read}: {verdict}")
                for b in c["bits"]:
                    lines.append(f"      bit {b['bit']:>2} {b['what']}: CPU {boot} {b['a']}, CPU {c['cpu']} {b['b']}")
    elif state == STATE_READ:
        lines.append(f"All CPUs read agree with CPU {boot} on every capability MSR.")
    if section["not_compared"]:
        for n in section["not_compared"]:
            lines.append(f"Not compared: {n['msr']} on CPU(s) {n['cpus']} ({n['why']})")
    for k in section["kernel_view"]:
        lines.append(f"Kernel view, CPU(s) {k['cpus']}:")
        lines += [f"  - {w}" for w in k["why"]]
    return "\n".join(lines) + "\n"
