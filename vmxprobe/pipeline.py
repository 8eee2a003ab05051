"""The one-way flow: source -> readings -> verdict -> plan (materialised) -> report."""

from __future__ import annotations

from vmxprobe import report as rep
from vmxprobe.plan import build_plan, materialize
from vmxprobe.scan import collect
from vmxprobe.verdict import Verdict, after_allocation, judge


def run(source, fixture=None, materialize_pages=materialize) -> tuple[dict, Verdict]:
    host_scan = collect(source)
    verdict = judge(host_scan)
    plan = build_plan(host_scan.topology, verdict.revision_id)
    verification = None
    materialized = False
    if verdict.reaches_allocation:
        with materialize_pages(plan) as pages:
            after_allocation(verdict, pages.ok, pages.failed_cpu)
            if pages.ok:
                materialized = True
                verification = pages.verify(plan.header)
    # Pages are placed on this machine's nodes only for a live scan of this machine;
    # a fixture or another root describes some other host, so placement is simulated.
    live_here = source.kind == "live" and getattr(source, "root", "/") in ("/", "")
    placement = "unbound" if live_here else "simulated"
    report = rep.build(host_scan, verdict, plan, materialized, verification, placement,
                       provenance=fixture.provenance if fixture else None,
                       description=fixture.description if fixture else None)
    return report, verdict
