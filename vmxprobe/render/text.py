"""The scan as text: the verdict in one line, then what was read, why, and the plan."""

from __future__ import annotations

from typing import Any, Callable

from vmxprobe.arch.vmx import PAGE_SIZE
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.sources import CPU_DIR
from vmxprobe.kernel.numa import BY_ROUND_ROBIN
from vmxprobe.kernel.pages import BOUND, Verification
from vmxprobe.kernel.release import HW_C
from vmxprobe.kernel.verdict import SVM, Verdict
from vmxprobe.pipeline import ScanResult
from vmxprobe.printable import printable

Style = Callable[..., str]


def plain(text: str, **kw: Any) -> str:
    return text


def svm_headline(verdict: Verdict) -> str:
    """The verdict of a host that brings up SVM (AMD, Hygon): x86_svm_init() and kvm_amd."""
    at_boot = verdict.model.has(HW_C)  # is there an x86_svm_init() on this kernel?
    init, kvm = verdict.x86_svm_init, verdict.kvm_amd
    if verdict.ready:
        return (
            "READY: x86_svm_init() succeeds and kvm_amd would load (SVM)"
            if at_boot
            else "READY: kvm_amd would load (SVM)"
        )
    if not verdict.determined:
        return "UNKNOWN: could not read what x86_svm_init() and kvm_amd depend on (SVM)"
    if not at_boot:
        also = f"; on 7.1+ x86_svm_init() returns -{init}" if init not in (None, "ok") else ""
        return f"NOT READY: kvm_amd would fail (-{kvm}) (SVM){also}"
    if init != "ok":
        return f"NOT READY: x86_svm_init() returns -{init} (SVM)"
    return f"NOT READY: x86_svm_init() succeeds but kvm_amd would fail (-{kvm}) (SVM)"


def headline(verdict: Verdict, pages: int, at_least: bool = False) -> str:
    if verdict.virt == SVM:
        return svm_headline(verdict)
    at_boot = verdict.model.has(HW_C)  # who allocates the root VMCS pages on this kernel
    count = f"at least {pages}" if at_least else str(pages)
    if verdict.ready:
        if at_boot:
            return (
                f"READY: x86_vmx_init() allocates {count} root VMCS page(s), one per possible "
                "CPU, and kvm_intel would load"
            )
        return (
            f"READY: kvm_intel would load and allocate {count} root VMCS page(s), one per "
            "possible CPU (alloc_kvm_area())"
        )
    if verdict.conditional:
        return "UNKNOWN: the outcome depends on whether tboot launched the kernel"
    if not verdict.determined and not verdict.undetermined and verdict.reaches_allocation:
        # Every check before the allocation passed, and no allocation was tried (a
        # pipeline run without materialising the plan): the only step left is the loop.
        return "UNKNOWN: every check before the allocation passed; the allocation was not tried"
    if not verdict.determined:
        return "UNKNOWN: could not read what x86_vmx_init() depends on"
    if not at_boot:
        also = ""
        if verdict.x86_vmx_init != "ok":
            also = f"; on 7.1+ x86_vmx_init() returns -{verdict.x86_vmx_init}"
        return f"NOT READY: kvm_intel would fail (-{verdict.kvm_intel}){also}"
    if verdict.x86_vmx_init != "ok":
        return f"NOT READY: x86_vmx_init() returns -{verdict.x86_vmx_init}"
    return f"NOT READY: x86_vmx_init() succeeds but kvm_intel would fail (-{verdict.kvm_intel})"


def _materialised_lines(result: ScanResult, header: str) -> list[str]:
    """The plan's materialisation: page checks, where the kernel put each page, and
    whether the placement was real (bound), impossible (unbound) or simulated."""
    ver: Verification | None = result.verification
    if not result.materialized or ver is None:
        failure = result.allocation
        if failure is None or failure.ok:
            return ["  not materialised"]
        return [f"  not materialised: {failure.reason}; every page taken was released"]
    stamped = f"0x{ver.stamped:08x}"
    lines = [
        f"  materialised {ver.pages} page(s); verified {ver.ok}/{ver.pages} "
        f"(page-aligned, {PAGE_SIZE} bytes, header {stamped}, rest zero)"
    ]
    where = ver.placement
    if where is None:
        lines.append(f"  placement {result.placement}")
    elif where.mode != BOUND:
        lines.append(f"  placement {where.mode}: {where.why}")
    else:
        lines.append(
            f"  placement bound: {where.policy} to the serving node before first "
            f"touch; the kernel ({where.method}) puts {where.verified_on_node}/"
            f"{where.placed} on the planned node"
        )
        for n in where.nodes:
            text = f"    node {n.node}: {n.verified_on_node}/{n.placed} page(s) on node {n.serving_node}"
            if n.serving_node != n.node:
                text += ", its serving node"
            off = [f"{k} on node {m}" for m, k in sorted(n.elsewhere.items(), key=lambda i: int(i[0]))]
            off += [f"{k} with no node ({e})" for e, k in sorted(n.unanswered.items())]
            if off:
                text += f"; {', '.join(off)}"
            fb = n.kernel_fallback
            if fb is not None and fb.landed_on is not None:
                text += (
                    f"; a page faulted from CPU {fb.cpu} with local policy lands on node "
                    f"{fb.landed_on}" + (" too" if fb.agrees else f", NOT node {n.serving_node} as planned")
                )
            elif fb is not None:
                text += f"; the kernel's fallback not checked: {fb.unchecked}"
            lines.append(text)
        for miss in where.mismatches:
            lines.append(
                f"    CPU {miss.cpu}: the kernel says node {miss.kernel}, planned node {miss.serving_node}"
            )
        if where.mismatches_total > len(where.mismatches):
            lines.append(
                f"    ... and {where.mismatches_total - len(where.mismatches)} more page(s) off their node"
            )
    if ver.stamp_note:
        lines.append(f"  {ver.stamp_note}")
    if not ver.kernel_allocates:
        who = (
            "x86_vmx_init() stops before it allocates"
            if result.verdict.model.has(HW_C)
            else "kvm_intel stops before it allocates (alloc_kvm_area(), on this kernel)"
        )
        lines.append(f"  {who}: the pages were materialised only to check the plan")
    return lines


def source_line(result: ScanResult) -> str:
    scan = result.readings
    where = (
        f"fixture {scan.source_name}"
        if scan.source_kind == "fixture"
        else f"live host (root {scan.source_name})"
    )
    origin = (result.provenance or {}).get("origin")
    if origin:
        where += f", {origin}"
    return f"Source: {where}"


def host_line(result: ScanResult) -> str:
    host = result.host
    sig = "/".join(str(v) if v is not None else "?" for v in (host.family, host.model, host.stepping))
    return (
        f"Host:   {host.vendor or 'unknown vendor'} family/model/stepping {sig}"
        + (f" ({host.model_name})" if host.model_name else "")
        + f"; {'guest of ' + host.hypervisor if host.hypervisor else 'no hypervisor seen'}"
        + f"; kernel {host.kernel or 'unknown'}"
    )


def render_text(result: ScanResult, style: Style = plain) -> str:
    v, plan, scan = result.verdict, result.plan, result.readings
    topo = scan.topology
    colour = "green" if v.ready else ("yellow" if not v.determined else "red")
    lines = [
        style(headline(v, len(plan.pages), plan.lower_bound), fg=colour, bold=True),
        source_line(result),
        host_line(result),
        "Kernel: " + v.model.line(svm=v.virt == SVM).removeprefix("kernel model: "),
    ]
    # A count before each list: "possible 0" alone reads as no CPU on a one-CPU host.
    lines.append(
        "CPUs:   "
        + ", ".join(
            f"{len(cpus)} {what}" + (f" ({format_cpulist(cpus)})" if cpus else "")
            for what, cpus in (
                ("possible", topo.possible),
                ("present", topo.present),
                ("online", topo.online),
                ("read", scan.cpus),
            )
        )
    )
    if v.conditional:
        lines.append("Depends:")
        lines += [f"  - {c}" for c in v.conditional]
    if v.undetermined:
        lines.append("Could not read:")
        lines += [f"  - {u}" for u in v.undetermined]
    if v.reasons:
        lines.append("Why:")
        lines += [f"  - {r}" for r in v.reasons]
    if not plan.applies:
        lines.append(f"Plan:   not applicable: {plan.why}")
        return _tail(result, lines)
    header = "unknown" if plan.header is None else f"0x{plan.header:08x}"
    size = len(plan.pages) * PAGE_SIZE
    at_least = "at least " if plan.lower_bound else ""
    lines.append(
        f"Plan:   {at_least}{len(plan.pages)} root VMCS page(s) of {PAGE_SIZE} bytes "
        f"({size // 1024} KiB), header {header}"
    )
    if plan.lower_bound:
        lines.append(
            f"  /{CPU_DIR}/possible was not read: these are the CPUs seen present or online; the "
            "kernel allocates one page per possible CPU, and may have more"
        )
    for node, pages in plan.by_node().items():
        serving = pages[0].serving_node
        why = (
            "has only memory GFP_KERNEL may not use"
            if node in (topo.nodes_with_memory or ())
            else "has no memory"
        )
        served = "" if serving == node else f", served by node {serving} (node {node} {why})"
        inferred = format_cpulist(p.cpu for p in pages if p.node_source == BY_ROUND_ROBIN)
        inferred = f", inferred for CPU(s) {inferred}" if inferred else ""
        lines.append(
            f"  node {node}: {len(pages)} page(s) for CPU(s) "
            f"{format_cpulist(p.cpu for p in pages)}{served}{inferred}"
        )
    lines += _materialised_lines(result, header)
    return _tail(result, lines)


def _tail(result: ScanResult, lines: list[str]) -> str:
    scan = result.readings
    for note in result.topology_notes:
        lines.append(f"Note:   {note}")
    if result.topology_missing:
        lines.append(f"Absent: {', '.join(result.topology_missing)}")
    if scan.file_errors:
        lines.append("Unreadable: " + ", ".join(f"/{p} ({e})" for p, e in sorted(scan.file_errors.items())))
    # Host data (a model name, an osrelease, a vendor string) is escaped line by line:
    # no escape sequence reaches the terminal, no newline in it starts a line. The
    # headline is ours, and may carry colour.
    return "\n".join(lines[:1] + [printable(line) for line in lines[1:]]) + "\n"
