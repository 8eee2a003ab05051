"""vmxprobe.kernel.acpi_numa: cpu_to_node() of every possible CPU at boot, from the
firmware's tables, version by version; on recorded tables the model must give the
oracle's node for every possible CPU."""

from __future__ import annotations

import pytest

from tests.acpi_tables import (
    DATA,
    GIB,
    TOPOLOGIES,
    cpu_aff,
    fadt,
    gi_aff,
    has_memory,
    lapic,
    madt,
    mem_aff,
    nodes_of,
    oracle,
    recorded,
    srat,
    table,
    x2apic,
    x2apic_aff,
)
from vmxprobe.host import acpi
from vmxprobe.kernel import acpi_numa


def test_linux_numbers_nodes_in_the_order_it_meets_proximity_domains():
    """QEMU's node 1 is CPU-less: the kernel meets its domain only among the memory
    entries, after the CPU domains 0, 2, 3, so Linux calls it node 3 (the guest's dmesg
    said "SRAT: Node 3 PXM 1 [mem 0x40000000-0x7fffffff]")."""
    s = acpi.parse_srat(table("four-node-absent-default", "SRAT"))
    assert acpi_numa.pxm_to_node(s) == {0: 0, 2: 1, 3: 2, 1: 3}
    assert acpi_numa.apic_to_node(s) == {0: 0, 1: 1, 2: 2, 3: 0, 4: 0}


@pytest.mark.parametrize("name", [n for n in TOPOLOGIES if (DATA / f"{n}-SRAT.bin").exists()])
def test_srat_estimate_of_memory_nodes_is_what_the_guest_had(name):
    _, s, _ = recorded(name)
    assert acpi_numa.srat_memory_nodes(s) == has_memory(name)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_model_gives_the_kernels_node_for_every_possible_cpu(name):
    """The bar: boot_cpu_nodes() for Debian's 6.1 gives, for every possible CPU, the
    node the kernel itself reported (cpu_to_node() in /proc/root_vmcs_oracle)."""
    m, s, f = recorded(name)
    kernel = oracle(name)
    for memory in (None, has_memory(name)):
        got = acpi_numa.boot_cpu_nodes(m, s, "6.1.0-57-amd64", fadt_revision=f, memory_nodes=memory)
        assert {c.cpu: c.node for c in got} == {cpu: node for cpu, (node, _) in kernel.items()}


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_absent_cpus_are_round_robin_and_present_ones_follow_the_srat(name):
    """In every version, where the kernel keeps the absent CPUs at all (from 6.9 on a
    bare-metal kernel may drop them, see below; hypervisor=True is a KVM guest)."""
    m, s, f = recorded(name)
    for kernel in ("6.1", (6, 9), (6, 12), "6.14.0"):
        got = acpi_numa.boot_cpu_nodes(m, s, kernel, fadt_revision=f, hypervisor=True)
        for c in got:
            if not c.present:
                assert c.source == acpi_numa.SOURCE_ROUND_ROBIN, (kernel, c)
            else:
                assert c.source == (acpi_numa.SOURCE_SRAT if s else acpi_numa.SOURCE_ROUND_ROBIN), c
        # The node is the same in every version: only the APIC ids of absent CPUs differ.
        assert [c.node for c in got] == [oracle(name)[c.cpu][0] for c in got]


def test_where_the_srat_and_the_round_robin_disagree():
    """The issue's case: the SRAT puts absent CPUs 5 and 6 on node 1, the kernel leaves
    them where numa_init_array() put them (nodes 2 and 0, of the memory nodes 0 and 2)."""
    m, s, f = recorded("memoryless-absent-assigned")
    old = acpi_numa.boot_cpu_nodes(m, s, (6, 1), fadt_revision=f)
    new = acpi_numa.boot_cpu_nodes(m, s, (6, 9), fadt_revision=f, hypervisor=True)
    assert [(c.cpu, c.apic_id, c.node, c.firmware_node) for c in old[4:]] == [
        (4, None, 0, None),
        (5, None, 2, None),
        (6, None, 0, None),
        (7, None, 2, None),
    ]
    # From 6.9 the absent CPUs have their APIC ids from boot (ascending), so the SRAT's
    # node is known: where a hot-add moves them (acpi_map_cpu2node(), from _PXM).
    assert [(c.cpu, c.apic_id, c.node, c.firmware_node) for c in new[4:]] == [
        (4, 4, 0, 0),
        (5, 5, 2, 1),
        (6, 6, 0, 1),
        (7, 7, 2, 2),
    ]


def test_debian_6_12_drops_the_absent_cpus_of_a_tcg_guest():
    """The same QEMU command line booted with Debian's 6.12.107 (README): the kernel
    sees no hypervisor under TCG and the FADT is 3.0, so under the "guest-only" rule
    the Enabled=0 entries are no CPUs at all: possible = present = 0-3, and the oracle
    answered for those four only."""
    m, s, f = recorded("memoryless-absent-assigned")
    kernel = {}
    for line in (DATA / "memoryless-absent-assigned-oracle-6.12.107.txt").read_text().splitlines():
        cpu, node, nid = map(int, line.split())
        kernel[cpu] = node
    got = acpi_numa.boot_cpu_nodes(
        m, s, "6.12.107+deb12-amd64", fadt_revision=f, usable_rule="guest-only", hypervisor=False
    )
    assert {c.cpu: c.node for c in got} == kernel == {0: 0, 1: 1, 2: 1, 3: 2}
    assert all(c.present and c.source == "srat" for c in got)
    # Under KVM the kernel detects a hypervisor and keeps them, round-robin as ever.
    kvm = acpi_numa.boot_cpu_nodes(
        m, s, "6.12.107+deb12-amd64", fadt_revision=f, usable_rule="guest-only", hypervisor=True
    )
    assert [(c.cpu, c.node, c.source) for c in kvm[4:]] == [
        (4, 0, "round-robin"),
        (5, 2, "round-robin"),
        (6, 0, "round-robin"),
        (7, 2, "round-robin"),
    ]


def test_present_package_rule_on_bare_metal():
    """6.9 (f0551af02130): on bare metal an absent APIC id in a package that has a
    present CPU is rejected; one in an empty package stays hot-pluggable."""
    m = acpi.parse_madt(
        madt(lapic(0), lapic(1), lapic(2, flags=0), lapic(3, flags=0), lapic(4, flags=0), lapic(5, flags=0))
    )
    # package_shift 1: packages {0,1} {2,3} {4,5}; 2: {0-3} {4-7}; 3: {0-7}.
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 9), package_shift=1)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [
        (0, 0, True),
        (1, 1, True),
        (2, 2, False),
        (3, 3, False),
        (4, 4, False),
        (5, 5, False),
    ]
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 9), package_shift=2)
    assert [(c.cpu, c.apic_id) for c in got] == [(0, 0), (1, 1), (2, 4), (3, 5)]
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 9), package_shift=3)
    assert [c.apic_id for c in got] == [0, 1]
    # Not on 6.1, and not in a guest.
    assert len(acpi_numa.boot_cpu_nodes(m, None, (6, 1))) == 6
    assert len(acpi_numa.boot_cpu_nodes(m, None, (6, 9), hypervisor=True)) == 6
    with pytest.raises(acpi.AcpiTableError, match="give package_shift"):
        acpi_numa.boot_cpu_nodes(m, None, (6, 9))
    with pytest.raises(acpi.AcpiTableError, match="is not one of"):
        acpi_numa.boot_cpu_nodes(m, None, (6, 9), usable_rule="newest")


def test_no_srat_puts_every_cpu_on_node_0():
    m, s, f = recorded("no-numa-absent")
    assert s is None
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 1), fadt_revision=f)
    assert nodes_of(got) == [(cpu, 0, "round-robin") for cpu in range(4)]
    assert [c.present for c in got] == [True, True, False, False]


# --- MADT rules on synthetic tables ---------------------------------------------------


def test_online_capable_counts_only_from_fadt_6_3():
    """acpi_is_processor_usable(): a disabled entry without the online-capable bit is
    not a possible CPU once the FADT is 6.3 or later."""
    m = acpi.parse_madt(madt(lapic(0), lapic(1), lapic(2, flags=0), lapic(3, flags=2)))
    assert [c.online_capable for c in m.cpus] == [False, False, False, True]
    for rev, possible in (((3, 0), 4), ((6, 2), 4), ((6, 3), 3), ((6, 5), 3), (None, 4)):
        got = acpi_numa.boot_cpu_nodes(m, None, (6, 1), fadt_revision=rev)
        assert len(got) == possible, rev
    assert acpi.parse_fadt_revision(fadt(6, 3)) == (6, 3)
    got = acpi_numa.boot_cpu_nodes(
        m, None, (6, 12), fadt_revision=acpi.parse_fadt_revision(fadt(6, 5)), hypervisor=True
    )
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [(0, 0, True), (1, 1, True), (2, 3, False)]


def test_cpu_numbers_follow_the_madt_with_the_boot_cpu_first():
    m = acpi.parse_madt(madt(lapic(4), lapic(6, flags=0), lapic(2), lapic(0)))
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 12), boot_apic_id=2, hypervisor=True)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [
        (0, 2, True),
        (1, 4, True),
        (2, 0, True),
        (3, 6, False),
    ]
    with pytest.raises(acpi.AcpiTableError, match="boot CPU's APIC id 0x6 has no enabled"):
        acpi_numa.boot_cpu_nodes(m, None, (6, 12), boot_apic_id=6, hypervisor=True)


def test_absent_cpus_get_apic_ids_in_ascending_order_from_6_9():
    """topology_init_possible_cpus(): find_next_andnot_bit() over the registered but
    not present APIC ids, lowest first, whatever their MADT order."""
    m = acpi.parse_madt(madt(lapic(0), lapic(9, flags=0), lapic(5, flags=0), lapic(1)))
    assert [c.apic_id for c in acpi_numa.boot_cpu_nodes(m, None, (6, 9), hypervisor=True)] == [0, 1, 5, 9]
    assert [c.apic_id for c in acpi_numa.boot_cpu_nodes(m, None, (6, 8))] == [0, 1, None, None]


def test_x2apic_entries_below_0xff_and_the_parsing_order():
    """Before 6.5 every usable entry counts, in table order. 6.5 (ec9aedb2aa1a) parses
    Local APIC entries first and drops x2APIC ids below 0xff when Local APIC CPUs
    exist; 6.14 (0141978ae75b) restores table order and keeps the drop."""
    raw = madt(x2apic(0x100), lapic(0), x2apic(0x05), lapic(1), x2apic(0x101, flags=0))
    m = acpi.parse_madt(raw)
    assert [(c.kind, c.apic_id) for c in m.cpus] == [
        ("x2apic", 0x100),
        ("lapic", 0),
        ("x2apic", 5),
        ("lapic", 1),
        ("x2apic", 0x101),
    ]

    def ids(kernel):
        return [c.apic_id for c in acpi_numa.boot_cpu_nodes(m, None, kernel, boot_apic_id=0, hypervisor=True)]

    assert ids((6, 1)) == [0, 0x100, 5, 1, None]
    assert ids((6, 5)) == [0, 1, 0x100, None]
    assert ids((6, 9)) == [0, 1, 0x100, 0x101]
    assert ids((6, 14)) == [0, 0x100, 1, 0x101]


def test_invalid_and_too_big_apic_ids_are_skipped():
    m = acpi.parse_madt(
        madt(
            lapic(0),
            lapic(0xFF),
            x2apic(0xFFFFFFFF),
            x2apic(acpi_numa.MAX_LOCAL_APIC),
            x2apic(0x200, flags=0),
        )
    )
    assert [c.apic_id for c in acpi_numa.boot_cpu_nodes(m, None, (6, 1))] == [0, None]
    assert [c.apic_id for c in acpi_numa.boot_cpu_nodes(m, None, (6, 14), hypervisor=True)] == [0, 0x200]


def test_nr_cpu_ids_caps_the_possible_cpus():
    m = acpi.parse_madt(madt(*(lapic(i, flags=int(i < 3)) for i in range(6))))
    assert len(acpi_numa.boot_cpu_nodes(m, None, (6, 1))) == 6
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 1), nr_cpu_ids=4)
    assert [(c.cpu, c.present) for c in got] == [(0, True), (1, True), (2, True), (3, False)]
    got = acpi_numa.boot_cpu_nodes(m, None, (6, 12), nr_cpu_ids=2, hypervisor=True)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [(0, 0, True), (1, 1, True)]


# --- SRAT rules on synthetic tables -----------------------------------------------------


def test_present_cpu_without_srat_entry_is_placed_round_robin():
    m = acpi.parse_madt(madt(lapic(0), lapic(1), lapic(2), lapic(3)))
    s = acpi.parse_srat(
        srat(cpu_aff(0, 7), cpu_aff(1, 7), cpu_aff(3, 9, flags=0), mem_aff(7, 0, GIB), mem_aff(9, GIB, GIB))
    )
    assert acpi_numa.pxm_to_node(s) == {7: 0, 9: 1}
    got = acpi_numa.boot_cpu_nodes(m, s, (6, 1))
    # CPU 2 has no entry, CPU 3's is disabled: both keep numa_init_array()'s node.
    assert nodes_of(got) == [(0, 0, "srat"), (1, 0, "srat"), (2, 0, "round-robin"), (3, 1, "round-robin")]


def test_srat_without_enabled_memory_falls_back_to_one_node():
    """acpi_numa_init() returns -ENOENT when no memory affinity was parsed, and
    numa_init(dummy_numa_init) makes node 0 the only node."""
    m = acpi.parse_madt(madt(lapic(0), lapic(1)))
    s = acpi.parse_srat(srat(cpu_aff(0, 0), cpu_aff(1, 1), mem_aff(1, 0, GIB, flags=0)))
    assert nodes_of(acpi_numa.boot_cpu_nodes(m, s, (6, 1))) == [(0, 0, "round-robin"), (1, 0, "round-robin")]


def test_round_robin_runs_over_memory_nodes_only():
    m = acpi.parse_madt(madt(lapic(0), *(lapic(i, flags=0) for i in range(1, 6))))
    # Domain 5 is memoryless (a CPU's domain), domain 6 hot-pluggable only.
    s = acpi.parse_srat(
        srat(
            cpu_aff(0, 5),
            x2apic_aff(0x300, 4),
            mem_aff(4, 0, GIB),
            mem_aff(5, GIB, 0),
            mem_aff(3, 2 * GIB, GIB),
            mem_aff(6, 3 * GIB, GIB, flags=3),
        )
    )
    assert acpi_numa.pxm_to_node(s) == {5: 0, 4: 1, 3: 2, 6: 3}
    assert acpi_numa.srat_memory_nodes(s) == [1, 2]
    got = acpi_numa.boot_cpu_nodes(m, s, (6, 1))
    assert [c.node for c in got] == [0, 2, 1, 2, 1, 2]
    assert [c.source for c in got] == ["srat"] + ["round-robin"] * 5
    # The nodes that really had RAM at boot, when known, win over the estimate.
    got = acpi_numa.boot_cpu_nodes(m, s, (6, 1), memory_nodes=[3, 1, 2])
    assert [c.node for c in got] == [0, 2, 3, 1, 2, 3]
    with pytest.raises(acpi.AcpiTableError, match="no node has boot memory"):
        acpi_numa.boot_cpu_nodes(m, s, (6, 1), memory_nodes=[])


def test_srat_revision_2_widens_proximity_domains():
    entries = (cpu_aff(0, 0x02, hi=b"\x01\0\0"), mem_aff(0x1002, 0, GIB))
    s1 = acpi.parse_srat(srat(*entries, revision=1))
    s2 = acpi.parse_srat(srat(*entries, revision=2))
    assert (s1.cpus[0].proximity_domain, s1.memory[0].proximity_domain) == (0x02, 0x02)
    assert (s2.cpus[0].proximity_domain, s2.memory[0].proximity_domain) == (0x102, 0x1002)
    assert acpi_numa.pxm_to_node(s1) == {2: 0}
    assert acpi_numa.pxm_to_node(s2) == {0x102: 0, 0x1002: 1}


def test_generic_initiators_take_node_numbers_among_the_cpu_domains():
    s = acpi.parse_srat(srat(cpu_aff(0, 3), gi_aff(8), gi_aff(9, flags=0), cpu_aff(1, 4), mem_aff(2, 0, GIB)))
    assert [(g.proximity_domain, g.enabled) for g in s.initiators] == [(8, True), (9, False)]
    assert acpi_numa.pxm_to_node(s) == {3: 0, 8: 1, 4: 2, 2: 3}


# --- bad input: one line, naming what is wrong and what to do ---------------------------


def test_bad_versions_and_arguments():
    m, s, f = recorded("memoryless-absent-assigned")
    for bad in ("linux", "", None, (6,)):
        with pytest.raises(acpi.AcpiTableError, match="give `uname -r`"):
            acpi_numa.boot_cpu_nodes(m, s, bad)
    with pytest.raises(acpi.AcpiTableError, match="modelled from 6.1 on"):
        acpi_numa.boot_cpu_nodes(m, s, "5.15.0-91-generic")
    with pytest.raises(acpi.AcpiTableError, match="not a CPU count"):
        acpi_numa.boot_cpu_nodes(m, s, (6, 1), nr_cpu_ids=0)
    none_present = acpi.parse_madt(madt(lapic(0, flags=0)))
    with pytest.raises(acpi.AcpiTableError, match="no enabled Local APIC"):
        acpi_numa.boot_cpu_nodes(none_present, None, (6, 1))
    assert acpi_numa.kernel_version("6.12.107+deb12-amd64") == (6, 12)
    assert acpi_numa.kernel_version((6, 1, 192)) == (6, 1)


# --- the firmware's view beside the plan: kernel.acpi_numa.firmware_view() --------------

SYS_TABLES = "sys/firmware/acpi/tables"


def _view(name, release, hypervisor, possible=8, present=4):
    """firmware_view() of a recorded guest's tables against the oracle's nodes, which
    the plan (sysfs and the round-robin) gives for that guest."""
    tables = {f"{SYS_TABLES}/{kind}": table(name, kind) for kind in ("APIC", "SRAT", "FACP")}
    node_of = {cpu: node for cpu, (node, _) in oracle(name).items()}
    return acpi_numa.firmware_view(
        tables, release, node_of, set(range(present)), has_memory(name), None, hypervisor
    )


def test_on_6_1_an_absent_cpu_has_no_apic_id_so_no_firmware_node():
    # arch/x86/kernel/apic/apic.c generic_processor_info() (6.1) binds an APIC id to a
    # CPU number only when the CPU is present; a hot-add takes the next free number.
    view = _view("memoryless-absent-assigned", "6.1.0-57-amd64", hypervisor=False)
    assert view.firmware_node == {0: 0, 1: 1, 2: 1, 3: 2}
    assert view.notes == ()


def test_from_6_9_an_absent_cpu_whose_srat_node_differs_gets_a_remote_page_when_hot_added():
    # arch/x86/kernel/cpu/topology.c topology_init_possible_cpus() (6.9+) numbers the
    # absent APIC ids after the present ones, ascending; arch/x86/mm/numa.c
    # init_cpu_to_node() leaves them on numa_init_array()'s round-robin (0, 2, 0, 2),
    # while the SRAT says 0, 1, 1, 2 (the guest's -numa options). In a KVM guest the
    # disabled MADT entries count as possible (acpi_is_processor_usable()).
    view = _view("memoryless-absent-assigned", "6.12.0-1-amd64", hypervisor=True)
    assert view.firmware_node == {0: 0, 1: 1, 2: 1, 3: 2, 4: 0, 5: 1, 6: 1, 7: 2}
    remote = [n for n in view.notes if "hot-added" in n]
    assert [n.split(" ")[1] for n in remote] == ["5", "6"]
    assert (
        "goes to node 2 (numa_init_array()'s round-robin), but the SRAT puts its APIC id 0x5 on node 1"
        in remote[0]
    )


def test_a_possible_count_other_than_the_tables_is_said():
    # possible_cpus=6 on the command line (arch/x86/kernel/smpboot.c
    # prefill_possible_map()): sysfs lists 6 where the tables alone make 8.
    tables = {
        f"{SYS_TABLES}/{kind}": table("memoryless-absent-assigned", kind) for kind in ("APIC", "SRAT", "FACP")
    }
    node_of = {cpu: node for cpu, (node, _) in oracle("memoryless-absent-assigned").items() if cpu < 6}
    view = acpi_numa.firmware_view(tables, "6.1.0-57-amd64", node_of, {0, 1, 2, 3}, [0, 2], None, False)
    assert any("MADT makes 8 CPU(s) possible for this kernel, sysfs lists 6" in n for n in view.notes)


def test_what_the_model_cannot_place_is_a_note_not_a_guess():
    # 6.9+ on bare metal keeps an absent APIC id only in a package without a present CPU
    # (topo_register_apic()); the package shift comes from CPUID leaf 0xb/0x1f, which the
    # scan does not read: the tables are not used, and the note says why.
    view = _view("memoryless-absent-assigned", "6.12.0-1-amd64", hypervisor=False)
    assert view.firmware_node == {}
    assert "give package_shift" in view.notes[0]


def test_no_madt_no_view_and_bad_tables_are_a_note_not_an_error():
    assert acpi_numa.firmware_view({}, "6.1.0", {0: 0}, {0}, [0], None, False) is None
    view = acpi_numa.firmware_view(
        {f"{SYS_TABLES}/APIC": b"APIC\x10"}, "6.1.0", {0: 0}, {0}, [0], None, False
    )
    assert view is not None and view.firmware_node == {}
    assert view.notes[0].startswith("the firmware's ACPI tables were read but not used: ")


def test_the_scan_reads_records_and_replays_the_tables(tmp_path):
    """Through the command, on a tree of real files: the tables are read as the root's
    sys/firmware/acpi/tables files, each page carries the SRAT's node, and `record` keeps
    the tables (base64 "blobs") so that the replay reports the same."""
    import base64
    import json
    import subprocess
    import sys

    from tests import REPO, hostgen
    from tests.hostgen import ECX_VMX, v

    doc = hostgen.compose(
        "memoryless-absent-assigned",
        "the QEMU guest of tests/data/acpi, its registers composed",
        [],
        "test",
        nodes={0: [0], 1: [1, 2], 2: [3]},
        possible=list(range(8)),
        signature=0x50654,
        ecx=ECX_VMX,
        model_name="composed",
        flags="fpu msr vmx",
        feat_ctl=v(0x5),
        vmx_basic=v(0x00DA040000000004),
        kernel="6.1.0-57-amd64",
    )
    doc["files"]["sys/devices/system/node/has_memory"] = "0,2\n"
    doc["files"]["sys/devices/system/node/has_normal_memory"] = "0,2\n"
    for kind in ("APIC", "SRAT", "FACP"):
        doc["blobs"][f"{SYS_TABLES}/{kind}"] = base64.b64encode(
            table("memoryless-absent-assigned", kind)
        ).decode()
    root = tmp_path / "root"
    hostgen.write_tree(doc, str(root))

    def vmxprobe(*args):
        return subprocess.run(
            [sys.executable, "-m", "vmxprobe", *args], cwd=REPO, capture_output=True, text=True
        )

    live = json.loads(vmxprobe("scan", "--root", str(root), "--format", "json").stdout)
    assert {e["cpu"]: e.get("firmware_node") for e in live["per_cpu"]} == {
        0: 0,
        1: 1,
        2: 1,
        3: 2,
        4: None,
        5: None,
        6: None,
        7: None,
    }
    assert [e["node"] for e in live["per_cpu"]][4:] == [0, 2, 0, 2]  # the round-robin
    rec = tmp_path / "rec.json"
    assert vmxprobe("record", "--root", str(root), "-o", str(rec)).returncode == 0
    recorded_doc = json.loads(rec.read_text())
    assert sorted(k for k in recorded_doc["blobs"] if k.startswith(SYS_TABLES)) == [
        f"{SYS_TABLES}/{k}" for k in ("APIC", "FACP", "SRAT")
    ]
    replay = json.loads(vmxprobe("scan", "--fixture", str(rec), "--format", "json").stdout)
    assert replay["per_cpu"] == live["per_cpu"] and replay["topology"] == live["topology"]
