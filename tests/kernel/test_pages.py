import dataclasses
import errno
import mmap
import os
import subprocess
import sys
import textwrap

import pytest

from tests import REPO, hostgen
from tests.scanning import scan
from vmxprobe.arch.vmx import PAGE_SIZE
from vmxprobe.host import fixture
from vmxprobe.host import mempolicy as numa
from vmxprobe.host.sources import FixtureHost, LiveHost, RecordingHost
from vmxprobe.host.topology import read_topology
from vmxprobe.kernel import pages as plan_mod
from vmxprobe.kernel.numa import cpu_to_node
from vmxprobe.kernel.pages import (
    BOUND,
    BY_GET_MEMPOLICY,
    BY_MOVE_PAGES,
    MAX_MISMATCHES,
    SIMULATED,
    UNBOUND,
    BadPage,
    FallbackCheck,
    Materialized,
    Mismatch,
    NodePlacement,
    Placement,
    materialize,
)
from vmxprobe.kernel.root_vmcs import Plan, PlannedPage, build_plan


def plan_of(doc, revision=0x12):
    topo = read_topology(FixtureHost(fixture.parse(doc)))
    return build_plan(topo, cpu_to_node(topo), revision)


def test_header_keeps_bit_31_clear():
    p = plan_of(hostgen.synthetic(2, 1), revision=0x7FFFFFFF)
    assert p.header == 0x7FFFFFFF
    p = dataclasses.replace(p, revision_id=0xFFFFFFFF)
    assert p.header == 0x7FFFFFFF


def test_one_page_per_possible_cpu_on_its_node():
    p = plan_of(hostgen.synthetic(8, 2, possible=list(range(12))))
    assert [pg.cpu for pg in p.pages] == list(range(12))
    assert {n: [pg.cpu for pg in pages] for n, pages in p.by_node().items()} == {
        0: [0, 1, 2, 3, 8, 10],
        1: [4, 5, 6, 7, 9, 11],
    }
    absent = [pg for pg in p.pages if not pg.present]
    assert [pg.cpu for pg in absent] == [8, 9, 10, 11]
    assert all(pg.node_source == "round-robin" and not pg.online for pg in absent)


def test_materialised_pages_are_aligned_zeroed_and_stamped():
    p = plan_of(hostgen.synthetic(16, 2), revision=0x12)
    with materialize(p) as m:
        assert m.ok and len(m.pages) == 16
        for cpu, buf in m.pages.items():
            assert m.address(cpu) % PAGE_SIZE == 0
            assert len(buf) == PAGE_SIZE
            assert buf[:4] == b"\x12\x00\x00\x00"
            assert buf[4:] == bytes(PAGE_SIZE - 4)
        v = m.verify(p)
        assert (v.pages, v.ok, v.bad, v.placement, v.stamped) == (16, 16, (), None, 0x12)
        bufs = list(m.pages.values())
    assert all(b.closed for b in bufs), "pages must be released when the plan is done"


def test_verify_catches_a_bad_page():
    p = plan_of(hostgen.synthetic(4, 1))
    with materialize(p) as m:
        m.pages[2][100] = 1
        m.pages[3][0:4] = b"\x13\x00\x00\x00"
        result = m.verify(p)
    assert result.ok == 2
    assert result.bad == (BadPage(2, ("non-zero tail",)), BadPage(3, ("header 13000000",)))


def test_all_or_nothing_on_allocation_failure():
    p = plan_of(hostgen.synthetic(8, 1))
    taken = []

    def allocate():
        if len(taken) == 5:
            raise OSError(12, "Cannot allocate memory")
        buf = mmap.mmap(-1, PAGE_SIZE)
        taken.append(buf)
        return buf

    m = materialize(p, allocate=allocate)
    assert not m.ok and m.failed_cpu == 5 and m.pages == {}
    assert all(b.closed for b in taken)
    assert "Cannot allocate memory" in m.error


def test_place_hook_failure_releases_everything():
    p = plan_of(hostgen.synthetic(4, 2))
    seen = []

    def place(buf, page):
        seen.append(buf)
        if page.node == 1:
            raise OSError(22, "Invalid argument")

    m = materialize(p, place=place)
    assert m.failed_cpu == 2 and not m.pages
    assert all(b.closed for b in seen)


def test_real_enomem_under_an_address_space_limit():
    """A real mmap failure (RLIMIT_AS), not a mock: everything taken is released."""
    code = textwrap.dedent("""
        import resource
        from tests import hostgen
        from vmxprobe.host import fixture
        from vmxprobe.kernel.pages import materialize
        from vmxprobe.kernel.root_vmcs import build_plan
        from vmxprobe.host.sources import FixtureHost
        from vmxprobe.host.topology import read_topology
        from vmxprobe.kernel.numa import cpu_to_node
        from vmxprobe.kernel.verdict import Verdict
        topo = read_topology(FixtureHost(fixture.parse(hostgen.synthetic(4096, 4))))
        plan = build_plan(topo, cpu_to_node(topo), 4)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 1024 * 1024, hard))
        m = materialize(plan)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        v = Verdict(reaches_allocation=True).with_allocation(m.outcome())
        after = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        print(m.ok, m.failed_cpu is not None and 0 < m.failed_cpu < 4096, len(m.pages),
              v.x86_vmx_init, after - vm < 2 * 1024 * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.split() == ["False", "True", "0", "ENOMEM", "True"], out.stderr


# --- placement: bound, unbound, simulated --------------------------------------------

needs_numa = pytest.mark.skipif(not numa.numa_available(), reason="this kernel answers no NUMA policy calls")


def pages_on(*nodes, serving=None, memory=None, online=True):
    """A plan of one page per CPU; nodes[i] is CPU i's node."""
    serving = serving or {}
    pages = tuple(
        PlannedPage(
            cpu=i, node=n, serving_node=serving.get(n, n), node_source="link", present=True, online=online
        )
        for i, n in enumerate(nodes)
    )
    return Plan(
        revision_id=0x12,
        pages=pages,
        nodes_with_memory=tuple(sorted(set(nodes)) if memory is None else memory),
    )


def test_simulated_placement_binds_nothing_and_says_why():
    p = plan_of(hostgen.synthetic(4, 2))
    placement = Placement.for_source(live_here=False)
    assert placement.mode == SIMULATED and placement.place is None
    with materialize(p, place=placement.place) as m:
        ver = m.verify(p, placement)
    where = ver.placement
    assert (ver.ok, where.mode, where.method, where.policy) == (4, SIMULATED, None, None)
    assert "another host" in where.why
    assert where.placed == 0 and where.verified_on_node is None
    assert [(n.node, n.pages, n.placed, n.verified_on_node) for n in where.nodes] == [
        (0, 2, 0, None),
        (1, 2, 0, None),
    ]


def test_unbound_when_the_kernel_answers_no_numa_call(monkeypatch):
    monkeypatch.setattr(numa, "numa_status", lambda: (False, "get_mempolicy(2) fails with ENOSYS"))
    placement = Placement.for_source(live_here=True)
    assert placement.mode == UNBOUND and placement.place is None
    assert placement.why.startswith("get_mempolicy(2) fails with ENOSYS")
    p = pages_on(0, 0)
    with materialize(p, place=placement.place) as m:
        where = m.verify(p, placement).placement
    assert where.mode == UNBOUND and where.placed == 0 and where.method is None


@needs_numa
def test_bound_pages_are_found_on_their_node_by_the_kernel():
    p = pages_on(0, 0, 0, 0)
    placement = Placement.for_source(live_here=True)
    assert placement.mode == BOUND
    with materialize(p, place=placement.place) as m:
        assert m.ok
        ver = m.verify(p, placement)
        # The policy really is on the mapping: a second, STRICT bind to the same node is
        # accepted for a page already there.
        numa.bind_to_node(m.address(0), PAGE_SIZE, 0)
    where = ver.placement
    assert (ver.pages, ver.ok, ver.bad) == (4, 4, ())
    assert (where.method, where.placed, where.verified_on_node) == (BY_MOVE_PAGES, 4, 4)
    assert where.nodes == (
        NodePlacement(
            node=0, serving_node=0, pages=4, placed=4, verified_on_node=4, elsewhere={}, unanswered={}
        ),
    )


@needs_numa
def test_binding_to_a_node_this_machine_lacks_fails_with_einval_all_or_nothing():
    if os.path.exists("/sys/devices/system/node/node63"):
        pytest.skip("this machine has a node 63")
    p = pages_on(0, 0, 63, 0)
    taken = []

    def allocate():
        buf = plan_mod.anonymous_page()
        taken.append(buf)
        return buf

    m = materialize(p, allocate=allocate, place=Placement(BOUND).place)
    assert not m.ok and m.failed_cpu == 2 and m.pages == {}
    assert all(b.closed for b in taken)
    assert m.errno == "EINVAL"
    assert "node 63 does not exist on this machine" in m.error
    assert "not a shortage of memory" in plan_mod.failure_reason(m)


def test_a_genuine_enomem_is_told_apart_from_einval():
    def allocate():
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    m = materialize(pages_on(0), allocate=allocate)
    assert m.errno == "ENOMEM"
    assert plan_mod.failure_reason(m) == "mmap(2) of CPU 0's page failed with ENOMEM: Cannot allocate memory"
    bind = plan_mod.bind_failure(errno.ENOMEM, pages_on(1).pages[0])
    assert bind.endswith("failed with ENOMEM: the kernel is out of memory")


def _fake_bound(monkeypatch, answers):
    """Bound placement whose pages are not really bound, and a kernel that answers
    `answers` (node or -errno per page) to move_pages(2)."""
    monkeypatch.setattr(numa, "page_status", lambda addrs: list(answers[: len(addrs)]))
    return Placement(BOUND)


def test_pages_off_their_node_are_listed_with_the_kernels_answer(monkeypatch):
    p = pages_on(0, 0, 1, 1)
    placement = _fake_bound(monkeypatch, [0, 5, -errno.ENOENT, 1])
    with materialize(p) as m:
        ver = m.verify(p, placement)
    where = ver.placement
    assert ver.ok == 2
    assert ver.bad == (
        BadPage(1, ("on node 5, not node 0",)),
        BadPage(2, ("the kernel gives no node (ENOENT)",)),
    )
    assert where.mismatches == (
        Mismatch(cpu=1, node=0, serving_node=0, kernel=5),
        Mismatch(cpu=2, node=1, serving_node=1, kernel="ENOENT"),
    )
    assert [(n.verified_on_node, n.elsewhere, n.unanswered) for n in where.nodes] == [
        (1, {"5": 1}, {}),
        (1, {}, {"ENOENT": 1}),
    ]


def test_mismatches_listed_are_bounded_counts_are_not(monkeypatch):
    n = MAX_MISMATCHES + 36
    p = pages_on(*([0] * n))
    placement = _fake_bound(monkeypatch, [1] * n)
    with materialize(p) as m:
        ver = m.verify(p, placement)
    where = ver.placement
    assert len(where.mismatches) == MAX_MISMATCHES and where.mismatches_total == n
    assert where.nodes[0].elsewhere == {"1": n} and ver.ok == 0


def test_get_mempolicy_answers_where_move_pages_cannot(monkeypatch):
    def no_move_pages(addrs):
        raise OSError(errno.ENOSYS, "move_pages: Function not implemented")

    monkeypatch.setattr(numa, "page_status", no_move_pages)
    monkeypatch.setattr(numa, "node_of_address", lambda addr: 0)
    p = pages_on(0, 0)
    with materialize(p) as m:
        where = m.verify(p, Placement(BOUND)).placement
    assert where.method == BY_GET_MEMPOLICY and where.verified_on_node == 2


def test_the_kernels_fallback_is_asked_only_for_memoryless_nodes(monkeypatch):
    # Node 1 has memory, all ZONE_MOVABLE (not normal): a user page would stay on node 1.
    p = pages_on(0, 1, serving={1: 0}, memory=[0, 1])
    assert "ZONE_MOVABLE" in plan_mod.fallback_check(p, 1, 0).unchecked
    p = pages_on(0, 1, serving={1: 0}, memory=[0], online=False)
    assert "no online CPU of node 1" in plan_mod.fallback_check(p, 1, 0).unchecked


@needs_numa
def test_the_kernels_fallback_probe_runs_on_this_machine():
    """Really pin to a CPU and fault a local-policy page: on this machine the CPU's node
    has memory, so the page stays there; the affinity is given back afterwards."""
    cpu = min(os.sched_getaffinity(0))
    here = numa_node_of_cpu(cpu)
    before = os.sched_getaffinity(0)
    pages = (PlannedPage(cpu=cpu, node=99, serving_node=here, node_source="link", present=True, online=True),)
    result = plan_mod.fallback_check(Plan(0x12, pages, nodes_with_memory=(here,)), 99, here)
    assert result == FallbackCheck(cpu=cpu, landed_on=here, agrees=True)
    assert os.sched_getaffinity(0) == before


def numa_node_of_cpu(cpu):
    base = f"/sys/devices/system/cpu/cpu{cpu}"
    links = [e for e in os.listdir(base) if e.startswith("node") and e[4:].isdigit()]
    return int(links[0][4:]) if links else 0


# --- the pipeline: materialised on every scan -------------------------------------------


def test_plan_is_materialised_even_when_the_kernel_would_not_allocate():
    fx = fixture.parse(hostgen.synthetic(4, 1, feat_ctl=0x1))  # locked, VMX off
    report, v, text = scan(FixtureHost(fx), fx)
    assert v.x86_vmx_init == "EOPNOTSUPP"
    plan = report["plan"]
    assert plan["materialized"] is True and plan["placement"] == SIMULATED
    assert plan["verified"]["kernel_allocates"] is False and plan["verified"]["ok"] == 4
    assert plan["verified"]["stamped"] == plan["header"] == "0x00000004"
    assert "stops before it allocates" in text


def test_unknown_revision_is_stamped_zero_and_said():
    # A KVM guest without nested VMX: IA32_VMX_BASIC faults, the revision is unknown.
    fx = fixture.load("kvm-guest-no-nested")
    report, _, text = scan(FixtureHost(fx), fx)
    ver = report["plan"]["verified"]
    assert report["plan"]["header"] is None and ver["stamped"] == "0x00000000"
    assert "revision id unknown" in ver["stamp_note"]
    assert "pages stamped 0x00000000" in text


def _failing(errno_code, message):
    def materialize_pages(plan):
        m = Materialized(failed=plan.pages[1], errno=errno.errorcode[errno_code], error=message)
        return m

    return materialize_pages


def test_a_failed_page_before_the_allocation_step_stays_in_the_plan_section():
    fx = fixture.parse(hostgen.synthetic(4, 2, feat_ctl=0x1))
    report, v, text = scan(
        FixtureHost(fx), fx, materialize_pages=_failing(errno.ENOMEM, "Cannot allocate memory")
    )
    assert v.x86_vmx_init == "EOPNOTSUPP"  # untouched: the kernel never gets there
    assert not any("ENOMEM" in r for r in v.reasons)
    plan = report["plan"]
    assert plan["materialized"] is False and plan["verified"] is None
    assert plan["failure"] == {
        "cpu": 1,
        "node": 0,
        "serving_node": 0,
        "errno": "ENOMEM",
        "reason": "mmap(2) of CPU 1's page failed with ENOMEM: Cannot allocate memory",
        "released": True,
        "kernel_allocates": False,
    }
    assert "not materialised: mmap(2) of CPU 1's page failed with ENOMEM" in text


def test_a_failed_bind_at_the_allocation_step_is_enomem_and_says_einval():
    fx = fixture.parse(hostgen.synthetic(4, 2))
    reason = (
        "mbind(2) of CPU 1's page to node 0 failed with EINVAL: node 0 does not exist "
        "on this machine, so the plan does not fit it (not a shortage of memory)"
    )
    report, v, _ = scan(FixtureHost(fx), fx, materialize_pages=_failing(errno.EINVAL, reason))
    assert v.x86_vmx_init == "ENOMEM" and not v.ready
    assert any("returns -ENOMEM" in r for r in v.reasons)
    assert any("EINVAL" in r and "not a shortage of memory" in r for r in v.reasons)
    assert report["plan"]["failure"]["errno"] == "EINVAL"
    assert report["plan"]["failure"]["kernel_allocates"] is True


def test_no_materialisation_when_asked():
    fx = fixture.parse(hostgen.synthetic(4, 1))
    report, _, text = scan(FixtureHost(fx), fx, materialize_plan=False)
    assert report["plan"]["materialized"] is False and "failure" not in report["plan"]
    assert "  not materialised\n" in text


def test_another_root_is_simulated_also_through_a_recorder(tree):
    root = tree(hostgen.synthetic(4, 2))
    for source in (LiveHost(root), RecordingHost(LiveHost(root))):
        report, _, _ = scan(source)
        assert report["plan"]["placement"] == SIMULATED, source
        assert report["plan"]["verified"]["placement"]["placed"] == 0


@needs_numa
def test_this_machine_is_bound():
    report, v, text = scan(LiveHost("/"))
    if v.virt == "svm":
        # An AMD machine has no root VMCS and its scan places no page (the plan does not
        # apply): the same plan, built from this machine's topology, is placed here directly.
        assert report["plan"]["applies"] is False and report["plan"]["materialized"] is False
        topo = read_topology(LiveHost("/"))
        plan = build_plan(topo, cpu_to_node(topo), 0x12)
        placement = Placement.for_source(live_here=True)
        with plan_mod.materialize(plan, place=placement.place) as pages:
            assert pages.outcome().ok
            ver = pages.verify(plan, placement, True)
        assert placement.mode == BOUND
        assert ver.placement.placed == ver.placement.verified_on_node == len(plan.pages)
        return
    assert report["plan"]["placement"] == BOUND
    where = report["plan"]["verified"]["placement"]
    assert where["placed"] == where["verified_on_node"] == report["plan"]["pages"]
    assert "placement bound:" in text


def test_a_sandbox_refusing_mbind_leaves_pages_unbound_not_failed(monkeypatch):
    def refuse(addr, length):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(numa, "numa_status", lambda: (True, ""))
    monkeypatch.setattr(numa, "bind_local", refuse)
    placement = Placement.for_source(live_here=True)
    assert placement.mode == UNBOUND and "mbind(2) fails with EPERM" in placement.why
