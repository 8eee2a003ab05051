import mmap
import pathlib
import subprocess
import sys
import textwrap

import pytest

import hostgen
from vmxprobe import fixture
from vmxprobe.plan import PAGE_SIZE, build_plan, materialize
from vmxprobe.sources import FixtureHost
from vmxprobe.topology import read_topology


def plan_of(doc, revision=0x12):
    topo = read_topology(FixtureHost(fixture.parse(doc)))
    return build_plan(topo, revision)


def test_header_keeps_bit_31_clear():
    p = plan_of(hostgen.synthetic(2, 1), revision=0x7FFFFFFF)
    assert p.header == 0x7FFFFFFF
    p.revision_id = 0xFFFFFFFF
    assert p.header == 0x7FFFFFFF


def test_one_page_per_possible_cpu_on_its_node():
    p = plan_of(hostgen.synthetic(8, 2, possible=list(range(12))))
    assert [pg.cpu for pg in p.pages] == list(range(12))
    assert {n: [pg.cpu for pg in pages] for n, pages in p.by_node().items()} == {
        0: [0, 1, 2, 3, 8, 10], 1: [4, 5, 6, 7, 9, 11]}
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
        assert m.verify(p.header) == {"pages": 16, "ok": 16, "bad": []}
        bufs = list(m.pages.values())
    assert all(b.closed for b in bufs), "pages must be released when the plan is done"


def test_verify_catches_a_bad_page():
    p = plan_of(hostgen.synthetic(4, 1))
    with materialize(p) as m:
        m.pages[2][100] = 1
        m.pages[3][0:4] = b"\x13\x00\x00\x00"
        result = m.verify(p.header)
    assert result["ok"] == 2
    assert result["bad"] == [{"cpu": 2, "problems": ["non-zero tail"]},
                             {"cpu": 3, "problems": ["header 13000000"]}]


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
        import resource, sys
        sys.path.insert(0, "scripts")
        import hostgen
        from vmxprobe import fixture
        from vmxprobe.plan import build_plan, materialize
        from vmxprobe.sources import FixtureHost
        from vmxprobe.topology import read_topology
        from vmxprobe.verdict import Verdict, after_allocation
        plan = build_plan(read_topology(FixtureHost(fixture.parse(hostgen.synthetic(4096, 4)))), 4)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 1024 * 1024, hard))
        m = materialize(plan)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        v = Verdict(reaches_allocation=True)
        after_allocation(v, m.ok, m.failed_cpu)
        after = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        print(m.ok, m.failed_cpu is not None and 0 < m.failed_cpu < 4096, len(m.pages),
              v.x86_vmx_init, after - vm < 2 * 1024 * 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(pathlib.Path(__file__).parent.parent))
    assert out.stdout.split() == ["False", "True", "0", "ENOMEM", "True"], out.stderr
