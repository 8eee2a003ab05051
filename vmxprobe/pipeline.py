"""The one-way flow: source -> readings -> verdict -> plan (materialised) -> report."""

from __future__ import annotations

import functools
import os

from vmxprobe import report as rep
from vmxprobe.plan import Placement, build_plan, failure_reason, materialize
from vmxprobe.scan import collect
from vmxprobe.verdict import Verdict, after_allocation, judge


def run(source, fixture=None, materialize_pages=None, *,
        materialize_plan: bool = True) -> tuple[dict, Verdict]:
    """Scan, judge, plan, and materialise the plan.

    The plan is materialised on every scan, also when x86_vmx_init() would stop before
    its allocation step: whether each page lands on the node the plan names is a
    property of the plan, not of the verdict. Only when the verdict reaches the
    allocation does a failed page make x86_vmx_init() -ENOMEM; otherwise the failure is
    reported in the plan section alone.

    materialize_pages(plan) -> Materialized replaces the allocation (tests inject
    failures with it); by default pages are placed as Placement.for_source() decides.
    materialize_plan=False skips the allocation altogether.
    """
    host_scan = collect(source)
    verdict = judge(host_scan)
    plan = build_plan(host_scan.topology, verdict.revision_id)
    # Pages are placed on this machine's nodes only for a live scan of this machine;
    # a fixture or another root describes some other host, so placement is simulated.
    # `name` is the root's absolute path, also through a RecordingHost wrapper.
    live_here = source.kind == "live" and os.path.realpath(getattr(source, "name", "/")) == "/"
    placement = Placement.for_source(live_here)
    if materialize_pages is None:
        materialize_pages = functools.partial(materialize, place=placement.place)
    verification = None
    materialized = False
    failure = None
    if materialize_plan:
        with materialize_pages(plan) as pages:
            after_allocation(verdict, pages.ok, pages.failed_cpu)
            if pages.ok:
                materialized = True
                verification = pages.verify(plan.stamp, plan, placement)
            else:
                failure = _failure(plan, pages, verdict)
    if verification is not None:
        verification["stamped"] = f"0x{plan.stamp:08x}"
        if plan.header is None:
            verification["stamp_note"] = ("revision id unknown (IA32_VMX_BASIC unreadable or 0): "
                                          "pages stamped 0x00000000")
        verification["kernel_allocates"] = verdict.reaches_allocation
    report = rep.build(host_scan, verdict, plan, materialized, verification, placement.mode,
                       provenance=fixture.provenance if fixture else None,
                       description=fixture.description if fixture else None)
    if failure is not None:
        # build() has no slot for it; the plan section is where it belongs.
        report["plan"]["failure"] = failure
    return report, verdict


def _failure(plan, pages, verdict: Verdict) -> dict:
    page = next(p for p in plan.pages if p.cpu == pages.failed_cpu)
    reason = failure_reason(pages)
    if verdict.reaches_allocation:
        # after_allocation() said -ENOMEM; say what really failed (a node this machine
        # lacks is EINVAL from mbind(2), not a shortage).
        verdict.reasons.append(f"the page of CPU {page.cpu} (node {page.node}, served by "
                               f"node {page.serving_node}): {reason}")
    return {"cpu": page.cpu, "node": page.node, "serving_node": page.serving_node,
            "errno": pages.errno, "reason": reason, "released": not pages.pages,
            "kernel_allocates": verdict.reaches_allocation}
