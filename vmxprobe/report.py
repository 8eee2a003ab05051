"""The report: one schema-versioned dict (schema/report-v1.json), and its renderers."""

from __future__ import annotations

import time
from typing import Optional

from vmxprobe import __version__, capview, vmx
from vmxprobe.cpulist import format_cpulist
from vmxprobe.plan import Plan
from vmxprobe.scan import ECX, HostScan
from vmxprobe.verdict import Verdict

SCHEMA_VERSION = 1


def _msr_text(r) -> str:
    return f"0x{r.value:016x}" if r.ok else r.errno


def _host(scan: HostScan, boot: Optional[int]) -> dict:
    host = {"vendor": None, "family": None, "model": None, "stepping": None,
            "model_name": None, "hypervisor": None, "kernel": scan.kernel}
    p = scan.probes.get(boot) if boot is not None else None
    info = scan.cpuinfo.get(boot if boot is not None else 0, {})
    if p is not None and p.cpuid[0].ok:
        host["vendor"] = vmx.cpuid_vendor(p.cpuid[0].value)
    else:
        host["vendor"] = info.get("vendor_id")
    if p is not None and p.cpuid[1].ok:
        host.update(vmx.cpuid_signature(p.cpuid[1].value[0]))
    else:
        for key, name in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")):
            if str(info.get(name, "")).isdigit():
                host[key] = int(info[name])
    host["model_name"] = info.get("model name")
    if p is not None:
        hv_bit = p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT)
        if hv_bit:
            r = p.cpuid.get(vmx.CPUID_HV_LEAF)
            host["hypervisor"] = (vmx.hypervisor_name(r.value) if r is not None and r.ok
                                  else None) or "unknown"
        elif hv_bit is None and "hypervisor" in info.get("flags", ()):
            host["hypervisor"] = "unknown"
    return host


def build(scan: HostScan, verdict: Verdict, plan: Plan, materialized: bool,
          verification: Optional[dict], placement: str, provenance: Optional[dict] = None,
          description: Optional[str] = None) -> dict:
    topo = scan.topology
    boot = verdict.boot_cpu
    bp = scan.probes.get(boot) if boot is not None else None
    basic = fc = None
    if bp is not None:
        r = bp.msr[vmx.MSR_IA32_VMX_BASIC]
        basic = vmx.decode_vmx_basic(r.value) if r.ok else None
        r = bp.msr[vmx.MSR_IA32_FEAT_CTL]
        fc = vmx.decode_feature_control(r.value) if r.ok else None
    per_cpu = []
    # CPUs mostly read alike: each distinct set of readings is rendered once and copied
    # (a copy, so that no two entries share a dict).
    msr_texts: dict[int, dict] = {}
    for page in plan.pages:
        entry = {"cpu": page.cpu, "node": page.node, "node_source": page.node_source,
                 "present": page.present, "online": page.online, "probed": page.cpu in scan.probes}
        p = scan.probes.get(page.cpu)
        if p is not None:
            key = capview.msr_key(p)
            texts = msr_texts.get(key)
            if texts is None:
                # Every register read, as read; a capability MSR that a fixture does not
                # hold (UNRECORDED) says nothing and is left out (capabilities.state says so).
                texts = msr_texts[key] = {
                    f"0x{i:x}": _msr_text(r) for i, r in sorted(p.msr.items())
                    if i in (vmx.MSR_IA32_FEAT_CTL, vmx.MSR_IA32_VMX_BASIC)
                    or r.errno != "UNRECORDED"}
            entry["msr"] = dict(texts)
            entry["cpuid_vmx"] = p.cpuid_bit(1, ECX, vmx.CPUID_VMX_BIT)
        info = scan.cpuinfo.get(page.cpu)
        entry["vmx_flag"] = None if info is None else "vmx" in info["flags"]
        per_cpu.append(entry)
    nodes = []
    for node, pages in plan.by_node().items():
        nodes.append({"node": node, "serving_node": pages[0].serving_node,
                      "cpus": format_cpulist(p.cpu for p in pages), "pages": len(pages),
                      "inferred_cpus": format_cpulist(p.cpu for p in pages
                                                      if p.node_source == "round-robin")})
    source = {"kind": scan.source_kind, "name": scan.source_name}
    if provenance is not None:
        source["origin"] = provenance.get("origin")
        source["description"] = description
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "vmxprobe", "version": __version__},
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "host": _host(scan, boot),
        "cpus": {"possible": format_cpulist(topo.possible), "present": format_cpulist(topo.present),
                 "online": format_cpulist(topo.online), "probed": format_cpulist(scan.probes)},
        "vmx_basic": basic,
        "feature_control": fc,
        "per_cpu": per_cpu,
        "capabilities": verdict.capabilities if verdict.capabilities is not None
        else capview.analyse(scan, boot),
        "topology": {"nodes": topo.nodes, "nodes_with_memory": topo.nodes_with_memory,
                     "notes": topo.notes, "missing": topo.missing,
                     "file_errors": scan.file_errors},
        "verdict": {"x86_vmx_init": verdict.x86_vmx_init, "kvm_intel": verdict.kvm_intel,
                    "ready": verdict.ready, "determined": verdict.determined,
                    "boot_cpu": boot, "emulated": verdict.emulated,
                    "reasons": verdict.reasons, "undetermined": verdict.undetermined},
        "plan": {"page_size": vmx.PAGE_SIZE, "pages": len(plan.pages),
                 "bytes": len(plan.pages) * vmx.PAGE_SIZE, "revision_id": plan.revision_id,
                 "header": None if plan.header is None else f"0x{plan.header:08x}",
                 "nodes": nodes, "materialized": materialized, "verified": verification,
                 "placement": placement},
    }


def render_json(report: dict) -> str:
    import json  # only --format json needs it: a text scan starts without it
    return json.dumps(report, indent=2) + "\n"


def headline(report: dict) -> str:
    v = report["verdict"]
    n = report["plan"]["pages"]
    if v["ready"]:
        return (f"READY: x86_vmx_init() allocates {n} root VMCS page(s), one per possible CPU, "
                "and kvm_intel would load")
    if not v["determined"]:
        return "UNKNOWN: could not read what x86_vmx_init() depends on"
    if v["x86_vmx_init"] != "ok":
        return f"NOT READY: x86_vmx_init() returns -{v['x86_vmx_init']}"
    return f"NOT READY: x86_vmx_init() succeeds but kvm_intel would fail (-{v['kvm_intel']})"


def _materialised_lines(plan: dict, header: str) -> list[str]:
    """The plan's materialisation: page checks, where the kernel put each page, and
    whether the placement was real (bound), impossible (unbound) or simulated."""
    ver = plan["verified"]
    if not plan["materialized"] or ver is None:
        failure = plan.get("failure")
        if failure is None:
            return ["  not materialised"]
        return [f"  not materialised: {failure['reason']}; every page taken was released"]
    stamped = ver.get("stamped", header)
    lines = [f"  materialised {ver['pages']} page(s); verified {ver['ok']}/{ver['pages']} "
             f"(page-aligned, {plan['page_size']} bytes, header {stamped}, rest zero)"]
    where = ver.get("placement")
    if where is None:
        lines.append(f"  placement {plan['placement']}")
    elif where["mode"] != "bound":
        lines.append(f"  placement {where['mode']}: {where['why']}")
    else:
        lines.append(f"  placement bound: {where['policy']} to the serving node before first "
                     f"touch; the kernel ({where['method']}) puts {where['verified_on_node']}/"
                     f"{where['placed']} on the planned node")
        for n in where["nodes"]:
            text = f"    node {n['node']}: {n['verified_on_node']}/{n['placed']} page(s) on node {n['serving_node']}"
            if n["serving_node"] != n["node"]:
                text += ", its serving node"
            off = [f"{k} on node {m}" for m, k in sorted(n["elsewhere"].items(), key=lambda i: int(i[0]))]
            off += [f"{k} with no node ({e})" for e, k in sorted(n["unanswered"].items())]
            if off:
                text += f"; {', '.join(off)}"
            fb = n.get("kernel_fallback")
            if fb is not None and fb.get("landed_on") is not None:
                text += (f"; a page faulted from CPU {fb['cpu']} with local policy lands on node "
                         f"{fb['landed_on']}" + (" too" if fb["agrees"] else
                                                 f", NOT node {n['serving_node']} as planned"))
            elif fb is not None:
                text += f"; the kernel's fallback not checked: {fb.get('unchecked')}"
            lines.append(text)
        for miss in where["mismatches"]:
            lines.append(f"    CPU {miss['cpu']}: the kernel says node {miss['kernel']}, "
                         f"planned node {miss['serving_node']}")
        if where["mismatches_total"] > len(where["mismatches"]):
            lines.append(f"    ... and {where['mismatches_total'] - len(where['mismatches'])} "
                         "more page(s) off their node")
    if ver.get("stamp_note"):
        lines.append(f"  {ver['stamp_note']}")
    if ver.get("kernel_allocates") is False:
        lines.append("  x86_vmx_init() stops before it allocates: the pages were materialised "
                     "only to check the plan")
    return lines


def render_text(report: dict, style=lambda text, **kw: text) -> str:
    v, plan, host, cpus = report["verdict"], report["plan"], report["host"], report["cpus"]
    colour = "green" if v["ready"] else ("yellow" if not v["determined"] else "red")
    src = report["source"]
    lines = [style(headline(report), fg=colour, bold=True)]
    where = f"fixture {src['name']}" if src["kind"] == "fixture" else f"live host (root {src['name']})"
    if src.get("origin"):
        where += f", {src['origin']}"
    sig = "/".join(str(host[k]) if host[k] is not None else "?" for k in ("family", "model", "stepping"))
    lines.append(f"Source: {where}")
    lines.append(f"Host:   {host['vendor'] or 'unknown vendor'} family/model/stepping {sig}"
                 + (f" ({host['model_name']})" if host["model_name"] else "")
                 + f"; {'guest of ' + host['hypervisor'] if host['hypervisor'] else 'no hypervisor seen'}"
                 + f"; kernel {host['kernel'] or 'unknown'}")
    lines.append(f"CPUs:   possible {cpus['possible'] or '-'}, present {cpus['present'] or '-'}, "
                 f"online {cpus['online'] or '-'}, read {cpus['probed'] or 'none'}")
    if v["undetermined"]:
        lines.append("Could not read:")
        lines += [f"  - {u}" for u in v["undetermined"]]
    if v["reasons"]:
        lines.append("Why:")
        lines += [f"  - {r}" for r in v["reasons"]]
    header = plan["header"] or "unknown"
    lines.append(f"Plan:   {plan['pages']} root VMCS page(s) of {plan['page_size']} bytes "
                 f"({plan['bytes'] // 1024} KiB), header {header}")
    for n in plan["nodes"]:
        why = ("has only memory GFP_KERNEL may not use" if n["node"] in
               (report["topology"]["nodes_with_memory"] or ()) else "has no memory")
        served = "" if n["serving_node"] == n["node"] else f", served by node {n['serving_node']} (node {n['node']} {why})"
        inferred = f", inferred for CPU(s) {n['inferred_cpus']}" if n["inferred_cpus"] else ""
        lines.append(f"  node {n['node']}: {n['pages']} page(s) for CPU(s) {n['cpus']}{served}{inferred}")
    lines += _materialised_lines(plan, header)
    topo = report["topology"]
    for note in topo["notes"]:
        lines.append(f"Note:   {note}")
    if topo["missing"]:
        lines.append(f"Absent: {', '.join(topo['missing'])}")
    if topo.get("file_errors"):
        lines.append("Unreadable: " + ", ".join(f"/{p} ({e})" for p, e in sorted(topo["file_errors"].items())))
    return "\n".join(lines) + "\n"
