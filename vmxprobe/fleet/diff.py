"""Two scans of one host compared: what changed, with the likely cause.

vmxprobe fleet diff OLD NEW
"""

from __future__ import annotations

import re
from typing import Any

from vmxprobe.fleet.check import is_int, parse_timestamp
from vmxprobe.fleet.summary import cpu_signature, first_reason, format_duration, revision_text, status_of
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.printable import printable

DIFF_KIND = "vmxprobe-fleet-diff"
OUTPUT_VERSION = 1


MSR_NAMES = {
    "0x3a": "IA32_FEATURE_CONTROL",
    "0x480": "IA32_VMX_BASIC",
    "0xc0010114": "VM_CR",
    "0xc0010131": "SEV_STATUS",
}
SVM_MSRS = ("0xc0010114", "0xc0010131")
STATUS_TEXT = {"ready": "READY", "not_ready": "NOT READY", "undetermined": "UNKNOWN"}
MAX_CPU_GROUPS = 16


def _sig(host) -> tuple:
    return (host["vendor"], host["family"], host["model"], host["stepping"])


def _cpu_text(host) -> str:
    sig = cpu_signature(host) or "?"
    name = f" ({host['model_name']})" if host.get("model_name") else ""
    return f"{host['vendor'] or 'unknown vendor'} {sig}{name}"


def _fc_text(fc) -> str:
    return "unreadable" if fc is None else f"{fc['state']} ({fc['raw']})"


def compare(old: dict, new: dict) -> dict:
    """What changed between two scans of one host: `changes` decide the exit code,
    `notes` are context (tool version, reason wording, argument order)."""
    changes: list[dict] = []
    notes: list[str] = []

    def change(what, a, b, text):
        changes.append({"what": what, "old": a, "new": b, "text": text})

    so, sn = status_of(old), status_of(new)
    vo, vn = old["verdict"], new["verdict"]
    if so != sn:
        text = f"readiness: {STATUS_TEXT[so]} -> {STATUS_TEXT[sn]}"
        if sn != "ready" and first_reason(new):
            text += f": {first_reason(new)}"
        change("readiness", so, sn, text)
    for key, name in (("x86_vmx_init", "x86_vmx_init()"), ("kvm_intel", "kvm_intel")):
        if vo[key] != vn[key]:
            change(
                f"verdict.{key}",
                vo[key],
                vn[key],
                f"{name}: {_errno_text(vo[key])} -> {_errno_text(vn[key])}",
            )
    # The SVM steps, where both reports have them (older reports do not: no change).
    for key, name in (("x86_svm_init", "x86_svm_init()"), ("kvm_amd", "kvm_amd")):
        if key in vo and key in vn and vo[key] != vn[key]:
            change(
                f"verdict.{key}",
                vo[key],
                vn[key],
                f"{name}: {_errno_text(vo[key])} -> {_errno_text(vn[key])}",
            )
    changes += _vm_cr_changes(old, new)
    if vo.get("emulated") != vn.get("emulated"):
        a, b = (v.get("emulated") or "none (hardware)" for v in (vo, vn))
        change("verdict.emulated", vo.get("emulated"), vn.get("emulated"), f"VMX emulation: {a} -> {b}")

    fo, fn = old["feature_control"], new["feature_control"]
    so_fc = None if fo is None else fo["state"]
    sn_fc = None if fn is None else fn["state"]
    if so_fc != sn_fc:
        advice = ""
        if sn_fc == "disabled_locked":
            why = "firmware now locks VMX off"
            advice = ": enable VT-x (Intel Virtualization Technology) in the firmware setup"
        elif so_fc == "disabled_locked" and sn_fc == "enabled_locked":
            why = "firmware now enables VMX"
        elif fn is None:
            why = "IA32_FEATURE_CONTROL can no longer be read"
        elif fo is None:
            why = "IA32_FEATURE_CONTROL can now be read"
        else:
            why = "IA32_FEATURE_CONTROL changed"
        change(
            "feature_control.state",
            so_fc,
            sn_fc,
            f"{why} (IA32_FEATURE_CONTROL {_fc_text(fo)} -> {_fc_text(fn)}){advice}",
        )
    elif fo is not None and fn is not None and fo["raw"] != fn["raw"]:
        change(
            "feature_control.raw",
            fo["raw"],
            fn["raw"],
            f"IA32_FEATURE_CONTROL value changed, VMX state still {sn_fc}: {fo['raw']} -> {fn['raw']}",
        )

    ho, hn = old["host"], new["host"]
    cpu_changed = _sig(ho) != _sig(hn) or ho.get("model_name") != hn.get("model_name")
    if cpu_changed:
        change(
            "host.cpu", _cpu_text(ho), _cpu_text(hn), f"the CPU differs: {_cpu_text(ho)} -> {_cpu_text(hn)}"
        )
    hv_changed = ho["hypervisor"] != hn["hypervisor"]
    if hv_changed:
        change(
            "host.hypervisor",
            ho["hypervisor"],
            hn["hypervisor"],
            f"hypervisor: {ho['hypervisor'] or 'none (bare metal)'} -> "
            f"{hn['hypervisor'] or 'none (bare metal)'}",
        )
    kernel_changed = ho["kernel"] != hn["kernel"]

    bo, bn = old["vmx_basic"], new["vmx_basic"]
    if (bo is None) != (bn is None):
        change(
            "vmx_basic",
            None if bo is None else bo["raw"],
            None if bn is None else bn["raw"],
            "IA32_VMX_BASIC "
            + ("can now be read" if bo is None else "can no longer be read")
            + f": {'unreadable' if bo is None else bo['raw']} -> {'unreadable' if bn is None else bn['raw']}",
        )
    elif bo is not None:
        if bo["revision_id"] != bn["revision_id"]:
            if cpu_changed:
                cause = "with the CPU change: a CPU swap"
            elif hv_changed:
                cause = "with the hypervisor change"
            elif kernel_changed:
                cause = (
                    f"on the same CPU model, with a kernel change ({ho['kernel']} -> {hn['kernel']}): "
                    "a microcode update (packaged with or loaded by the new boot) can change it"
                )
            else:
                cause = "on the same CPU model: a microcode update can change it"
            change(
                "vmx_basic.revision_id",
                bo["revision_id"],
                bn["revision_id"],
                f"VMCS revision id: {revision_text(bo['revision_id'])} -> "
                f"{revision_text(bn['revision_id'])}, {cause}",
            )
        if bo["vmcs_size"] != bn["vmcs_size"]:
            change(
                "vmx_basic.vmcs_size",
                bo["vmcs_size"],
                bn["vmcs_size"],
                f"VMCS size: {bo['vmcs_size']} -> {bn['vmcs_size']} bytes",
            )
        if bo.get("memory_type") != bn.get("memory_type"):
            change(
                "vmx_basic.memory_type",
                bo.get("memory_type"),
                bn.get("memory_type"),
                f"VMCS memory type: {bo.get('memory_type_name', bo.get('memory_type'))} -> "
                f"{bn.get('memory_type_name', bn.get('memory_type'))}",
            )
        if (
            bo["raw"] != bn["raw"]
            and bo["revision_id"] == bn["revision_id"]
            and bo["vmcs_size"] == bn["vmcs_size"]
            and bo.get("memory_type") == bn.get("memory_type")
        ):
            change("vmx_basic.raw", bo["raw"], bn["raw"], f"IA32_VMX_BASIC value: {bo['raw']} -> {bn['raw']}")

    for key in ("possible", "present", "online", "probed"):
        a, b = old["cpus"][key], new["cpus"][key]
        if a != b:
            change(f"cpus.{key}", a, b, f"{key} CPUs: {a or 'none'} -> {b or 'none'}")
    if old["plan"]["pages"] != new["plan"]["pages"]:
        change(
            "plan.pages",
            old["plan"]["pages"],
            new["plan"]["pages"],
            f"root VMCS pages: {old['plan']['pages']} -> {new['plan']['pages']}",
        )
    if kernel_changed:
        change("host.kernel", ho["kernel"], hn["kernel"], f"kernel: {ho['kernel']} -> {hn['kernel']}")
    changes += _per_cpu_changes(old["per_cpu"], new["per_cpu"])

    if old["source"]["kind"] != new["source"]["kind"] or (
        old["source"]["kind"] == "fixture" and old["source"]["name"] != new["source"]["name"]
    ):
        notes.append(f"OLD is {_source_text(old)}, NEW is {_source_text(new)}: are they the same host?")
    if parse_timestamp(new["generated_at"]) < parse_timestamp(old["generated_at"]):
        notes.append(
            f"NEW ({new['generated_at']}) was scanned before OLD ({old['generated_at']}): "
            "are the arguments swapped?"
        )
    if old["tool"]["version"] != new["tool"]["version"]:
        notes.append(
            f"scanned by different vmxprobe versions: {old['tool']['version']} -> {new['tool']['version']}"
        )
    ro, rn = vo["reasons"], vn["reasons"]
    notes += [f"reason gone: {r}" for r in ro if r not in rn]
    notes += [f"reason new: {r}" for r in rn if r not in ro]
    return {"changed": bool(changes), "readiness": {"old": so, "new": sn}, "changes": changes, "notes": notes}


def _vm_cr_changes(old: dict, new: dict) -> list[dict]:
    """VM_CR on the boot CPU of an AMD host, where both reports have the svm section."""
    so, sn = old.get("svm"), new.get("svm")
    if not isinstance(so, dict) or not isinstance(sn, dict):
        return []
    co, cn = so.get("vm_cr"), sn.get("vm_cr")
    state_o = co["state"] if isinstance(co, dict) else None
    state_n = cn["state"] if isinstance(cn, dict) else None
    raw_o = co["raw"] if isinstance(co, dict) else "unreadable"
    raw_n = cn["raw"] if isinstance(cn, dict) else "unreadable"
    if state_o != state_n:
        advice = ""
        if state_n == "disabled_locked":
            why = "firmware now disables SVM and locks it"
            advice = ': enable SVM (AMD-V, "SVM Mode") in the firmware setup'
        elif state_n == "disabled_unlocked":
            why = "firmware now disables SVM (VM_CR unlocked)"
            advice = ': enable SVM (AMD-V, "SVM Mode") in the firmware setup'
        elif state_n == "enabled":
            why = "firmware now enables SVM"
        elif cn is None:
            why = "VM_CR can no longer be read"
        else:
            why = "VM_CR changed"
        return [
            {
                "what": "svm.vm_cr.state",
                "old": state_o,
                "new": state_n,
                "text": f"{why} (VM_CR {raw_o} -> {raw_n}){advice}",
            }
        ]
    if raw_o != raw_n:
        return [
            {
                "what": "svm.vm_cr.raw",
                "old": raw_o,
                "new": raw_n,
                "text": f"VM_CR value changed, SVM still {state_n}: {raw_o} -> {raw_n}",
            }
        ]
    return []


def _errno_text(e) -> str:
    return "unknown" if e is None else ("ok" if e == "ok" else f"-{e}")


def _source_text(doc) -> str:
    src = doc["source"]
    return f"fixture {src['name']}" if src["kind"] == "fixture" else f"a live scan of {src['name']}"


def _per_cpu_changes(old_cpus: list, new_cpus: list) -> list[dict]:
    """Register and flag changes on CPUs in both scans, grouped by (what, old, new)."""
    before = {}
    for e in old_cpus:
        if isinstance(e, dict) and is_int(e.get("cpu")):
            before[e["cpu"]] = e
    groups: dict[tuple, list[int]] = {}
    for e in new_cpus:
        if not (isinstance(e, dict) and is_int(e.get("cpu"))) or e["cpu"] not in before:
            continue
        o = before[e["cpu"]]
        mo: dict[str, Any] = o["msr"] if isinstance(o.get("msr"), dict) else {}
        mn: dict[str, Any] = e["msr"] if isinstance(e.get("msr"), dict) else {}
        for index in sorted(
            set(mo) | set(mn), key=lambda k: int(k, 16) if re.fullmatch(r"0x[0-9a-f]+", k) else -1
        ):
            a, b = mo.get(index), mn.get(index)
            if (a is None or b is None) and index in SVM_MSRS:
                continue  # read from the AMD verdict on: an older report does not have it
            if a != b:
                groups.setdefault((MSR_NAMES.get(index, f"MSR {index}"), a, b), []).append(e["cpu"])
        for key, label in (
            ("cpuid_vmx", "CPUID VMX bit"),
            ("vmx_flag", "vmx flag in /proc/cpuinfo"),
            ("cpuid_svm", "CPUID SVM bit"),
            ("svm_flag", "svm flag in /proc/cpuinfo"),
        ):
            if key in ("cpuid_svm", "svm_flag") and (key not in o or key not in e):
                continue  # written only for hosts judged by SVM, and by newer vmxprobes
            if o.get(key) != e.get(key):
                groups.setdefault((label, o.get(key), e.get(key)), []).append(e["cpu"])
    out: list[dict[str, Any]] = []
    for (label, a, b), cpus in sorted(groups.items(), key=lambda kv: (kv[1][0], kv[0][0])):
        if len(out) == MAX_CPU_GROUPS:
            out.append(
                {
                    "what": "per_cpu",
                    "old": None,
                    "new": None,
                    "text": f"... and {len(groups) - MAX_CPU_GROUPS} more per-CPU change(s)",
                }
            )
            break
        out.append(
            {
                "what": f"per_cpu.{label}",
                "old": a,
                "new": b,
                "cpus": format_cpulist(cpus),
                "text": f"{label} on CPU(s) {format_cpulist(cpus)}: {_show(a)} -> {_show(b)}",
            }
        )
    return out


def _show(v) -> str:
    if v is None:
        return "absent"
    if isinstance(v, bool):
        return "set" if v else "clear"
    return str(v)


def render_diff_text(result: dict, old_path: str, new_path: str, old: dict, new: dict) -> str:
    gap = parse_timestamp(new["generated_at"]) - parse_timestamp(old["generated_at"])
    out = [
        f"OLD {old_path}: scanned {old['generated_at']} by vmxprobe {old['tool']['version']}",
        f"NEW {new_path}: scanned {new['generated_at']} by vmxprobe {new['tool']['version']}"
        + (f" ({format_duration(gap)} later)" if gap > 0 else ""),
    ]
    r = result["readiness"]
    if result["changed"]:
        head = (
            f"CHANGED: {STATUS_TEXT[r['old']]} -> {STATUS_TEXT[r['new']]}"
            if r["old"] != r["new"]
            else f"CHANGED, still {STATUS_TEXT[r['new']]}"
        )
        out.append(head)
        out += [f"  - {c['text']}" for c in result["changes"]]
    else:
        out.append(
            f"UNCHANGED: {STATUS_TEXT[r['new']]}; the same readiness, CPU, VMX/SVM registers, CPUs and kernel"
        )
    if result["notes"]:
        out.append("Notes:")
        out += [f"  - {n}" for n in result["notes"]]
    # Paths, reasons and versions come from the reports: escaped line by line.
    return "\n".join(printable(line) for line in out) + "\n"
