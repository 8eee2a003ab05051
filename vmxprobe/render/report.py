"""The JSON report: one schema-versioned document (schema/report-v1.json) built from a
ScanResult. This is the only place the report's dict shape exists; the other renderers
work from the typed result."""

from __future__ import annotations

import json
from typing import Any

from vmxprobe import __version__
from vmxprobe.arch.capabilities import msr_label
from vmxprobe.arch.cpuid import CPUID_VMX_BIT, ECX
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC, PAGE_SIZE
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.sources import MsrReading
from vmxprobe.kernel.capabilities import CapabilityAnalysis, msr_key, seamret_fields
from vmxprobe.kernel.numa import BY_ROUND_ROBIN
from vmxprobe.kernel.pages import FallbackCheck, PlacementCheck, Verification
from vmxprobe.kernel.verdict import Verdict
from vmxprobe.kernel.vmcs_config import KvmRole
from vmxprobe.pipeline import ScanResult

SCHEMA_VERSION = 1

Json = dict[str, Any]


def _msr_text(r: MsrReading) -> str:
    return f"0x{r.value:016x}" if r.value is not None else (r.errno or "?")


def _hex(value: int) -> str:
    return f"0x{value:016x}"


def _role(k: KvmRole) -> Json:
    return {"compared": k.compared, "why": k.why}


def capabilities(a: CapabilityAnalysis) -> Json:
    """The report's "capabilities" section."""
    seamret = None
    if a.seamret is not None:
        seamret = seamret_fields(a.seamret)
        seamret["tdx_host_platform"] = a.seamret.tdx_host_platform
        seamret["kernel_reports_bug"] = a.seamret.kernel_reports_bug
    synthetic = None
    if a.synthetic is not None:
        ev = a.synthetic.evmcs
        synthetic = {
            "by": a.synthetic.by,
            "how": a.synthetic.how,
            "evmcs": None
            if ev is None
            else {
                "recommended": ev.recommended,
                "version_low": ev.version_low,
                "version_high": ev.version_high,
                "kvm_uses_evmcs": ev.kvm_uses_evmcs,
            },
        }
    return {
        "boot_cpu": a.boot_cpu,
        "state": a.state,
        "cpus_read": format_cpulist(a.cpus_read),
        "cpus_not_read": format_cpulist(a.cpus_not_read),
        "kvm_nested": a.kvm_nested,
        "msrs": [
            {
                "index": f"0x{r.index:x}",
                "msr": msr_label(r.index),
                "read": r.read,
                "kvm": _role(r.kvm),
                "decoded": r.decoded,
            }
            for r in a.msrs
        ],
        "effective_controls": {
            g: {
                "from": f"0x{e.source:x}",
                "controls": e.controls,
                "reserved_controls": e.reserved_controls,
                "default1": list(e.default1),
            }
            for g, e in a.effective_controls.items()
        },
        "cr_fixed": a.cr_fixed,
        "faults": [
            {
                "index": f"0x{f.index:x}",
                "msr": msr_label(f.index),
                "cpus": format_cpulist(f.cpus),
                "why": f.why,
                "sdm": f.sdm,
            }
            for f in a.faults
        ],
        "differences": [
            {
                "index": f"0x{d.index:x}",
                "msr": msr_label(d.index),
                "boot_value": _hex(d.boot_value),
                "boot_read": d.boot_read,
                "kvm": _role(d.kvm),
                "cpus": [
                    {
                        "cpu": c.cpu,
                        "value": _hex(c.value),
                        "read": c.read,
                        "bits": [
                            {"bit": b.bit, "what": b.what, "a": b.a, "b": b.b, "kvm": b.kvm} for b in c.bits
                        ],
                        "kvm_refuses": c.kvm_refuses,
                    }
                    for c in d.cpus
                ],
            }
            for d in a.differences
        ],
        "not_compared": [
            {
                "index": f"0x{n.index:x}",
                "msr": msr_label(n.index),
                "cpus": format_cpulist(n.cpus),
                "why": n.why,
            }
            for n in a.not_compared
        ],
        "kernel_view": [
            {
                "cpus": format_cpulist(k.cpus),
                "missing": list(k.missing),
                "extra": list(k.extra),
                "why": list(k.why),
            }
            for k in a.kernel_view
        ],
        "seamret": seamret,
        "synthetic": synthetic,
        "kvm_setup": list(a.kvm_setup),
    }


def verdict_section(v: Verdict) -> Json:
    return {
        "x86_vmx_init": v.x86_vmx_init,
        "kvm_intel": v.kvm_intel,
        "ready": v.ready,
        "determined": v.determined,
        "boot_cpu": v.boot_cpu,
        "emulated": v.emulated,
        "reasons": list(v.reasons),
        "undetermined": list(v.undetermined),
        "conditional": list(v.conditional),
        "kernel_model": {
            "name": v.model.name,
            "version": f"{v.model.version[0]}.{v.model.version[1]}",
            "release": v.model.release,
            "root_vmcs_by": v.model.root_vmcs_by,
            "note": v.model.note,
        },
        "tboot": None if v.tboot is None else {"launched": v.tboot.launched, "evidence": v.tboot.evidence},
    }


def _fallback(f: FallbackCheck) -> Json:
    out: Json = {"cpu": f.cpu, "landed_on": f.landed_on, "agrees": f.agrees}
    if f.unchecked is not None:
        out["unchecked"] = f.unchecked
    return out


def _placement(c: PlacementCheck) -> Json:
    nodes = []
    for n in c.nodes:
        node: Json = {
            "node": n.node,
            "serving_node": n.serving_node,
            "pages": n.pages,
            "placed": n.placed,
            "verified_on_node": n.verified_on_node,
            "elsewhere": n.elsewhere,
            "unanswered": n.unanswered,
        }
        if n.kernel_fallback is not None:
            node["kernel_fallback"] = _fallback(n.kernel_fallback)
        nodes.append(node)
    return {
        "mode": c.mode,
        "policy": c.policy,
        "method": c.method,
        "why": c.why,
        "nodes": nodes,
        "placed": c.placed,
        "verified_on_node": c.verified_on_node,
        "mismatches": [
            {"cpu": m.cpu, "node": m.node, "serving_node": m.serving_node, "kernel": m.kernel}
            for m in c.mismatches
        ],
        "mismatches_total": c.mismatches_total,
    }


def _verified(v: Verification | None) -> Json | None:
    if v is None:
        return None
    out: Json = {
        "pages": v.pages,
        "ok": v.ok,
        "bad": [{"cpu": b.cpu, "problems": list(b.problems)} for b in v.bad],
    }
    if v.placement is not None:
        out["placement"] = _placement(v.placement)
    out["stamped"] = f"0x{v.stamped:08x}"
    if v.stamp_note is not None:
        out["stamp_note"] = v.stamp_note
    out["kernel_allocates"] = v.kernel_allocates
    return out


def build(result: ScanResult) -> Json:
    """The report of one scan, as the schema has it."""
    scan, verdict, plan = result.readings, result.verdict, result.plan
    topo = scan.topology
    per_cpu = []
    # CPUs mostly read alike: each distinct set of readings is rendered once and copied
    # (a copy, so that no two entries share a dict).
    msr_texts: dict[int, dict[str, str]] = {}
    for page in plan.pages:
        entry: Json = {
            "cpu": page.cpu,
            "node": page.node,
            "node_source": page.node_source,
            "present": page.present,
            "online": page.online,
            "probed": page.cpu in scan.cpus,
        }
        firmware = result.nodes.firmware_node.get(page.cpu)
        if firmware is not None:
            entry["firmware_node"] = firmware
        p = scan.cpus.get(page.cpu)
        if p is not None:
            key = msr_key(p)
            texts = msr_texts.get(key)
            if texts is None:
                # Every register read, as read; a capability MSR that a fixture does not
                # hold (UNRECORDED) says nothing and is left out (capabilities.state says so).
                texts = msr_texts[key] = {
                    f"0x{i:x}": _msr_text(r)
                    for i, r in sorted(p.msr.items())
                    if i in (MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC) or r.errno != "UNRECORDED"
                }
            entry["msr"] = dict(texts)
            entry["cpuid_vmx"] = p.cpuid_bit(1, ECX, CPUID_VMX_BIT)
        info = scan.cpuinfo.get(page.cpu)
        entry["vmx_flag"] = None if info is None else "vmx" in info["flags"]
        per_cpu.append(entry)
    nodes = []
    for node, pages in plan.by_node().items():
        nodes.append(
            {
                "node": node,
                "serving_node": pages[0].serving_node,
                "cpus": format_cpulist(p.cpu for p in pages),
                "pages": len(pages),
                "inferred_cpus": format_cpulist(p.cpu for p in pages if p.node_source == BY_ROUND_ROBIN),
            }
        )
    source: Json = {"kind": scan.source_kind, "name": scan.source_name}
    if result.provenance is not None:
        source["origin"] = result.provenance.get("origin")
        source["description"] = result.description
    host = result.host
    plan_section: Json = {
        "page_size": PAGE_SIZE,
        "pages": len(plan.pages),
        "pages_lower_bound": plan.lower_bound,
        "bytes": len(plan.pages) * PAGE_SIZE,
        "revision_id": plan.revision_id,
        "header": None if plan.header is None else f"0x{plan.header:08x}",
        "nodes": nodes,
        "materialized": result.materialized,
        "verified": _verified(result.verification),
        "placement": result.placement,
    }
    failure = result.allocation
    if failure is not None and not failure.ok:
        plan_section["failure"] = {
            "cpu": failure.cpu,
            "node": failure.node,
            "serving_node": failure.serving_node,
            "errno": failure.errno,
            "reason": failure.reason,
            "released": failure.released,
            "kernel_allocates": verdict.kernel_allocates,
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vmxprobe", "version": __version__},
        "generated_at": result.generated_at,
        "source": source,
        "host": {
            "vendor": host.vendor,
            "family": host.family,
            "model": host.model,
            "stepping": host.stepping,
            "model_name": host.model_name,
            "hypervisor": host.hypervisor,
            "kernel": host.kernel,
        },
        "cpus": {
            "possible": format_cpulist(topo.possible),
            "present": format_cpulist(topo.present),
            "online": format_cpulist(topo.online),
            "probed": format_cpulist(scan.cpus),
        },
        "vmx_basic": None if verdict.basic is None else verdict.basic.fields(),
        "feature_control": None if verdict.feature_control is None else verdict.feature_control.fields(),
        "per_cpu": per_cpu,
        "capabilities": capabilities(verdict.capabilities),
        "topology": {
            "nodes": topo.nodes,
            "nodes_with_memory": topo.nodes_with_memory,
            "notes": result.topology_notes,
            "missing": result.topology_missing,
            "file_errors": scan.file_errors,
        },
        "verdict": verdict_section(verdict),
        "plan": plan_section,
    }


def render_json(result: ScanResult) -> str:
    return json.dumps(build(result), indent=2) + "\n"


def render_caps_json(result: ScanResult) -> str:
    """`vmxprobe caps --format json`: the report's identification, its capabilities
    section and the parts of the verdict that concern them."""
    report = build(result)
    doc = {
        key: report[key]
        for key in ("schema_version", "tool", "generated_at", "source", "host", "cpus", "capabilities")
    }
    doc["verdict"] = {
        k: report["verdict"][k]
        for k in ("x86_vmx_init", "kvm_intel", "ready", "determined", "boot_cpu", "reasons")
    }
    return json.dumps(doc, indent=2) + "\n"
