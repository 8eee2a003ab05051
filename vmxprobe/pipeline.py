"""The one-way flow of `vmxprobe scan`: read the host, judge (the kernel's rules), plan,
materialise the plan, and hand the typed result to a renderer."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from vmxprobe.host.fixture import Fixture
from vmxprobe.host.identity import HostIdentity, identify
from vmxprobe.host.readings import HostReadings, read_host
from vmxprobe.host.sources import Source
from vmxprobe.kernel.numa import NodeMap, cpu_to_node
from vmxprobe.kernel.pages import Allocation, Materialized, Placement, Verification, materialize
from vmxprobe.kernel.root_vmcs import Plan, build_plan, not_applicable
from vmxprobe.kernel.verdict import SVM, Verdict, judge

Materializer = Callable[[Plan], Materialized]


@dataclass(frozen=True)
class ScanResult:
    """Everything one scan found, typed; render/ turns it into text, JSON and exports."""

    readings: HostReadings
    host: HostIdentity  # what the host is (CPU, hypervisor, kernel)
    nodes: NodeMap  # cpu_to_node() and serving nodes, as the kernel has them
    verdict: Verdict
    plan: Plan
    placement: str  # pages.BOUND | UNBOUND | SIMULATED
    allocation: Allocation | None  # None when the plan was not materialised
    verification: Verification | None  # None unless every page was had
    scanned_at: int = 0  # when, in whole seconds since the epoch
    provenance: dict[str, Any] | None = None  # the fixture's, for a replay
    description: str | None = None

    @property
    def generated_at(self) -> str:
        """scanned_at as the report writes it: 2026-11-26T14:04:02Z."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.scanned_at))

    @property
    def topology_notes(self) -> list[str]:
        """What the topology shows beyond its facts: the lists' disagreements, CPUs placed
        without sysfs, node details, and nodes served from elsewhere, in that order."""
        topo = self.readings.topology
        return topo.notes + self.nodes.notes + topo.node_notes + self.nodes.serving_notes

    @property
    def topology_missing(self) -> list[str]:
        return self.readings.topology.missing + self.nodes.missing

    @property
    def materialized(self) -> bool:
        return self.allocation is not None and self.allocation.ok


def run(
    source: Source,
    fixture: Fixture | None = None,
    materialize_pages: Materializer | None = None,
    *,
    materialize_plan: bool = True,
) -> ScanResult:
    """Scan, judge, plan, and materialise the plan.

    The plan is materialised on every scan, also when x86_vmx_init() would stop before
    its allocation step: whether each page lands on the node the plan names is a
    property of the plan, not of the verdict. Only when the verdict reaches the
    allocation does a failed page make x86_vmx_init() -ENOMEM; otherwise the failure is
    reported in the plan section alone. A host whose verdict rests on SVM (AMD, Hygon)
    has no root VMCS: its plan is empty, says why, and nothing is allocated.

    materialize_pages(plan) -> Materialized replaces the allocation (tests inject
    failures with it); by default pages are placed as Placement.for_source() decides.
    materialize_plan=False skips the allocation altogether.
    """
    readings = read_host(source)
    verdict = judge(readings)
    nodes = cpu_to_node(readings.topology)
    if readings.acpi_tables:
        # The firmware-table parsers are imported only for a scan that read the tables:
        # a fixture without them starts faster (docs/benchmarks.md, start-up).
        from vmxprobe.kernel.acpi_numa import with_firmware

        nodes = with_firmware(nodes, readings)
    if verdict.virt == SVM:
        plan = not_applicable(readings.topology)
        materialize_plan = False
    else:
        plan = build_plan(readings.topology, nodes, verdict.revision_id)
    # Pages are placed on this machine's nodes only for a live scan of this machine;
    # a fixture or another root describes some other host, so placement is simulated.
    # `name` is the root's absolute path, also through a RecordingHost wrapper.
    live_here = source.kind == "live" and os.path.realpath(getattr(source, "name", "/")) == "/"
    placement = Placement.for_source(live_here)
    if materialize_pages is None:
        materialize_pages = functools.partial(materialize, place=placement.place)
    allocation = verification = None
    if materialize_plan:
        with materialize_pages(plan) as pages:
            allocation = pages.outcome()
            verdict = verdict.with_allocation(allocation)
            if allocation.ok:
                verification = pages.verify(plan, placement, verdict.kernel_allocates)
    return ScanResult(
        readings,
        identify(readings, verdict.boot_cpu),
        nodes,
        verdict,
        plan,
        placement.mode,
        allocation,
        verification,
        scanned_at=int(time.time()),
        provenance=fixture.provenance if fixture else None,
        description=fixture.description if fixture else None,
    )
