"""vmxprobe.host.acpi: SRAT and MADT as the x86 kernel reads them, and cpu_to_node()
of every possible CPU at boot.

The recorded tables (tests/data/acpi, README there) come with the kernel's own answer
from the same boot (/proc/root_vmcs_oracle): the model must give the oracle's node for
every possible CPU. The synthetic tables below are built here, with valid checksums,
for the rules no QEMU table exercises (x2APIC entries, online-capable, SRAT revision 2);
they are named as such and never stand in for a machine's tables.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from vmxprobe.host import acpi

DATA = Path(__file__).parent / "data" / "acpi"
TOPOLOGIES = ["memoryless-absent-assigned", "four-node-absent-default", "no-numa-absent"]


def table(name: str, kind: str) -> bytes:
    return (DATA / f"{name}-{kind}.bin").read_bytes()


def oracle(name: str) -> dict[int, tuple[int, int]]:
    out = {}
    for line in (DATA / f"{name}-oracle.txt").read_text().splitlines():
        cpu, node, nid = map(int, line.split())
        out[cpu] = (node, nid)
    return out


def has_memory(name: str) -> list[int]:
    nodes = []
    for part in (DATA / f"{name}-has_memory.txt").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        nodes += range(int(lo), int(hi or lo) + 1)
    return nodes


def recorded(name: str):
    madt = acpi.parse_madt(table(name, "APIC"))
    srat_file = DATA / f"{name}-SRAT.bin"
    srat = acpi.parse_srat(srat_file.read_bytes()) if srat_file.exists() else None
    fadt = acpi.parse_fadt_revision(table(name, "FACP"))
    return madt, srat, fadt


# --- building synthetic tables -------------------------------------------------------


def build(signature: bytes, body: bytes, revision: int = 1) -> bytes:
    length = acpi.HEADER_LEN + len(body)
    head = struct.pack(
        "<4sIBB6s8sI4sI", signature, length, revision, 0, b"TEST  ", b"SYNTHETC", 1, b"TEST", 1
    )
    raw = bytearray(head + body)
    raw[9] = (-sum(raw)) % 256
    return bytes(raw)


def madt(*entries: bytes) -> bytes:
    return build(b"APIC", struct.pack("<II", 0xFEE00000, 1) + b"".join(entries))


def lapic(apic_id: int, flags: int = 1, uid: int | None = None) -> bytes:
    return struct.pack("<BBBBI", 0, 8, apic_id if uid is None else uid, apic_id, flags)


def x2apic(apic_id: int, flags: int = 1, uid: int = 0) -> bytes:
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


def srat(*entries: bytes, revision: int = 1) -> bytes:
    return build(b"SRAT", struct.pack("<IQ", 1, 0) + b"".join(entries), revision)


def cpu_aff(apic_id: int, pxm: int, flags: int = 1, hi: bytes = b"\0\0\0") -> bytes:
    return struct.pack("<BBBBIB3sI", 0, 16, pxm & 0xFF, apic_id, flags, 0, hi, 0)


def x2apic_aff(apic_id: int, pxm: int, flags: int = 1) -> bytes:
    return struct.pack("<BBHIIII4x", 2, 24, 0, pxm, apic_id, flags, 0)


def mem_aff(pxm: int, base: int, length: int, flags: int = 1) -> bytes:
    return struct.pack("<BBIHQQIIQ", 1, 40, pxm, 0, base, length, 0, flags, 0)


def gi_aff(pxm: int, flags: int = 1) -> bytes:
    return struct.pack("<BBBBI16sII", 5, 32, 0, 0, pxm, b"\0" * 16, flags, 0)


def fadt(major: int, minor: int) -> bytes:
    body = bytearray(244 - acpi.HEADER_LEN)
    body[131 - acpi.HEADER_LEN] = minor
    return build(b"FACP", bytes(body), major)


def nodes_of(result) -> list[tuple[int, int, str]]:
    return [(c.cpu, c.node, c.source) for c in result]


GIB = 1 << 30


# --- recorded tables -------------------------------------------------------------------


def test_recorded_madt_lists_every_possible_cpu_enabled_when_present():
    m = acpi.parse_madt(table("memoryless-absent-assigned", "APIC"))
    assert (m.header.signature, m.header.revision, m.header.oem_id) == ("APIC", 1, "BOCHS")
    assert m.local_apic_address == 0xFEE00000
    assert [(c.kind, c.apic_id, c.processor_uid, c.enabled, c.online_capable) for c in m.cpus] == [
        ("lapic", i, i, i < 4, False) for i in range(8)
    ]


def test_recorded_srat_has_entries_for_absent_cpus_and_memory_ranges():
    s = acpi.parse_srat(table("memoryless-absent-assigned", "SRAT"))
    assert s.header.revision == 1
    # -numa node,cpus=0,cpus=4 / cpus=1-2,cpus=5-6 / cpus=3,cpus=7 (README)
    assert [(c.apic_id, c.proximity_domain, c.enabled) for c in s.cpus] == [
        (0, 0, True),
        (1, 1, True),
        (2, 1, True),
        (3, 2, True),
        (4, 0, True),
        (5, 1, True),
        (6, 1, True),
        (7, 2, True),
    ]
    enabled = [(m.proximity_domain, m.base, m.length) for m in s.memory if m.enabled]
    assert enabled == [(0, 0, 0xA0000), (0, 0x100000, GIB - 0x100000), (2, GIB, GIB)]
    # QEMU pads with disabled, empty entries; the memoryless domain 1 has none.
    assert all(m.length == 0 for m in s.memory if not m.enabled)
    assert s.initiators == ()


def test_recorded_fadt_revision_predates_online_capable():
    for name in TOPOLOGIES:
        assert acpi.parse_fadt_revision(table(name, "FACP")) == (3, 0)


def test_linux_numbers_nodes_in_the_order_it_meets_proximity_domains():
    """QEMU's node 1 is CPU-less: the kernel meets its domain only among the memory
    entries, after the CPU domains 0, 2, 3, so Linux calls it node 3 (the guest's dmesg
    said "SRAT: Node 3 PXM 1 [mem 0x40000000-0x7fffffff]")."""
    s = acpi.parse_srat(table("four-node-absent-default", "SRAT"))
    assert acpi.pxm_to_node(s) == {0: 0, 2: 1, 3: 2, 1: 3}
    assert acpi.apic_to_node(s) == {0: 0, 1: 1, 2: 2, 3: 0, 4: 0}


@pytest.mark.parametrize("name", [n for n in TOPOLOGIES if (DATA / f"{n}-SRAT.bin").exists()])
def test_srat_estimate_of_memory_nodes_is_what_the_guest_had(name):
    _, s, _ = recorded(name)
    assert acpi.srat_memory_nodes(s) == has_memory(name)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_model_gives_the_kernels_node_for_every_possible_cpu(name):
    """The bar: boot_cpu_nodes() for Debian's 6.1 gives, for every possible CPU, the
    node the kernel itself reported (cpu_to_node() in /proc/root_vmcs_oracle)."""
    m, s, f = recorded(name)
    kernel = oracle(name)
    for memory in (None, has_memory(name)):
        got = acpi.boot_cpu_nodes(m, s, "6.1.0-57-amd64", fadt_revision=f, memory_nodes=memory)
        assert {c.cpu: c.node for c in got} == {cpu: node for cpu, (node, _) in kernel.items()}


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_absent_cpus_are_round_robin_and_present_ones_follow_the_srat(name):
    """In every version, where the kernel keeps the absent CPUs at all (from 6.9 on a
    bare-metal kernel may drop them, see below; hypervisor=True is a KVM guest)."""
    m, s, f = recorded(name)
    for kernel in ("6.1", (6, 9), (6, 12), "6.14.0"):
        got = acpi.boot_cpu_nodes(m, s, kernel, fadt_revision=f, hypervisor=True)
        for c in got:
            if not c.present:
                assert c.source == acpi.SOURCE_ROUND_ROBIN, (kernel, c)
            else:
                assert c.source == (acpi.SOURCE_SRAT if s else acpi.SOURCE_ROUND_ROBIN), c
        # The node is the same in every version: only the APIC ids of absent CPUs differ.
        assert [c.node for c in got] == [oracle(name)[c.cpu][0] for c in got]


def test_where_the_srat_and_the_round_robin_disagree():
    """The issue's case: the SRAT puts absent CPUs 5 and 6 on node 1, the kernel leaves
    them where numa_init_array() put them (nodes 2 and 0, of the memory nodes 0 and 2)."""
    m, s, f = recorded("memoryless-absent-assigned")
    old = acpi.boot_cpu_nodes(m, s, (6, 1), fadt_revision=f)
    new = acpi.boot_cpu_nodes(m, s, (6, 9), fadt_revision=f, hypervisor=True)
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
    got = acpi.boot_cpu_nodes(
        m, s, "6.12.107+deb12-amd64", fadt_revision=f, usable_rule="guest-only", hypervisor=False
    )
    assert {c.cpu: c.node for c in got} == kernel == {0: 0, 1: 1, 2: 1, 3: 2}
    assert all(c.present and c.source == "srat" for c in got)
    # Under KVM the kernel detects a hypervisor and keeps them, round-robin as ever.
    kvm = acpi.boot_cpu_nodes(
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
    got = acpi.boot_cpu_nodes(m, None, (6, 9), package_shift=1)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [
        (0, 0, True),
        (1, 1, True),
        (2, 2, False),
        (3, 3, False),
        (4, 4, False),
        (5, 5, False),
    ]
    got = acpi.boot_cpu_nodes(m, None, (6, 9), package_shift=2)
    assert [(c.cpu, c.apic_id) for c in got] == [(0, 0), (1, 1), (2, 4), (3, 5)]
    got = acpi.boot_cpu_nodes(m, None, (6, 9), package_shift=3)
    assert [c.apic_id for c in got] == [0, 1]
    # Not on 6.1, and not in a guest.
    assert len(acpi.boot_cpu_nodes(m, None, (6, 1))) == 6
    assert len(acpi.boot_cpu_nodes(m, None, (6, 9), hypervisor=True)) == 6
    with pytest.raises(acpi.AcpiTableError, match="give package_shift"):
        acpi.boot_cpu_nodes(m, None, (6, 9))
    with pytest.raises(acpi.AcpiTableError, match="is not one of"):
        acpi.boot_cpu_nodes(m, None, (6, 9), usable_rule="newest")


def test_no_srat_puts_every_cpu_on_node_0():
    m, s, f = recorded("no-numa-absent")
    assert s is None
    got = acpi.boot_cpu_nodes(m, None, (6, 1), fadt_revision=f)
    assert nodes_of(got) == [(cpu, 0, "round-robin") for cpu in range(4)]
    assert [c.present for c in got] == [True, True, False, False]


# --- MADT rules on synthetic tables ---------------------------------------------------


def test_online_capable_counts_only_from_fadt_6_3():
    """acpi_is_processor_usable(): a disabled entry without the online-capable bit is
    not a possible CPU once the FADT is 6.3 or later."""
    m = acpi.parse_madt(madt(lapic(0), lapic(1), lapic(2, flags=0), lapic(3, flags=2)))
    assert [c.online_capable for c in m.cpus] == [False, False, False, True]
    for rev, possible in (((3, 0), 4), ((6, 2), 4), ((6, 3), 3), ((6, 5), 3), (None, 4)):
        got = acpi.boot_cpu_nodes(m, None, (6, 1), fadt_revision=rev)
        assert len(got) == possible, rev
    assert acpi.parse_fadt_revision(fadt(6, 3)) == (6, 3)
    got = acpi.boot_cpu_nodes(
        m, None, (6, 12), fadt_revision=acpi.parse_fadt_revision(fadt(6, 5)), hypervisor=True
    )
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [(0, 0, True), (1, 1, True), (2, 3, False)]


def test_cpu_numbers_follow_the_madt_with_the_boot_cpu_first():
    m = acpi.parse_madt(madt(lapic(4), lapic(6, flags=0), lapic(2), lapic(0)))
    got = acpi.boot_cpu_nodes(m, None, (6, 12), boot_apic_id=2, hypervisor=True)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [
        (0, 2, True),
        (1, 4, True),
        (2, 0, True),
        (3, 6, False),
    ]
    with pytest.raises(acpi.AcpiTableError, match="boot CPU's APIC id 0x6 has no enabled"):
        acpi.boot_cpu_nodes(m, None, (6, 12), boot_apic_id=6, hypervisor=True)


def test_absent_cpus_get_apic_ids_in_ascending_order_from_6_9():
    """topology_init_possible_cpus(): find_next_andnot_bit() over the registered but
    not present APIC ids, lowest first, whatever their MADT order."""
    m = acpi.parse_madt(madt(lapic(0), lapic(9, flags=0), lapic(5, flags=0), lapic(1)))
    assert [c.apic_id for c in acpi.boot_cpu_nodes(m, None, (6, 9), hypervisor=True)] == [0, 1, 5, 9]
    assert [c.apic_id for c in acpi.boot_cpu_nodes(m, None, (6, 8))] == [0, 1, None, None]


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
        return [c.apic_id for c in acpi.boot_cpu_nodes(m, None, kernel, boot_apic_id=0, hypervisor=True)]

    assert ids((6, 1)) == [0, 0x100, 5, 1, None]
    assert ids((6, 5)) == [0, 1, 0x100, None]
    assert ids((6, 9)) == [0, 1, 0x100, 0x101]
    assert ids((6, 14)) == [0, 0x100, 1, 0x101]


def test_invalid_and_too_big_apic_ids_are_skipped():
    m = acpi.parse_madt(
        madt(lapic(0), lapic(0xFF), x2apic(0xFFFFFFFF), x2apic(acpi.MAX_LOCAL_APIC), x2apic(0x200, flags=0))
    )
    assert [c.apic_id for c in acpi.boot_cpu_nodes(m, None, (6, 1))] == [0, None]
    assert [c.apic_id for c in acpi.boot_cpu_nodes(m, None, (6, 14), hypervisor=True)] == [0, 0x200]


def test_nr_cpu_ids_caps_the_possible_cpus():
    m = acpi.parse_madt(madt(*(lapic(i, flags=int(i < 3)) for i in range(6))))
    assert len(acpi.boot_cpu_nodes(m, None, (6, 1))) == 6
    got = acpi.boot_cpu_nodes(m, None, (6, 1), nr_cpu_ids=4)
    assert [(c.cpu, c.present) for c in got] == [(0, True), (1, True), (2, True), (3, False)]
    got = acpi.boot_cpu_nodes(m, None, (6, 12), nr_cpu_ids=2, hypervisor=True)
    assert [(c.cpu, c.apic_id, c.present) for c in got] == [(0, 0, True), (1, 1, True)]


# --- SRAT rules on synthetic tables -----------------------------------------------------


def test_present_cpu_without_srat_entry_is_placed_round_robin():
    m = acpi.parse_madt(madt(lapic(0), lapic(1), lapic(2), lapic(3)))
    s = acpi.parse_srat(
        srat(cpu_aff(0, 7), cpu_aff(1, 7), cpu_aff(3, 9, flags=0), mem_aff(7, 0, GIB), mem_aff(9, GIB, GIB))
    )
    assert acpi.pxm_to_node(s) == {7: 0, 9: 1}
    got = acpi.boot_cpu_nodes(m, s, (6, 1))
    # CPU 2 has no entry, CPU 3's is disabled: both keep numa_init_array()'s node.
    assert nodes_of(got) == [(0, 0, "srat"), (1, 0, "srat"), (2, 0, "round-robin"), (3, 1, "round-robin")]


def test_srat_without_enabled_memory_falls_back_to_one_node():
    """acpi_numa_init() returns -ENOENT when no memory affinity was parsed, and
    numa_init(dummy_numa_init) makes node 0 the only node."""
    m = acpi.parse_madt(madt(lapic(0), lapic(1)))
    s = acpi.parse_srat(srat(cpu_aff(0, 0), cpu_aff(1, 1), mem_aff(1, 0, GIB, flags=0)))
    assert nodes_of(acpi.boot_cpu_nodes(m, s, (6, 1))) == [(0, 0, "round-robin"), (1, 0, "round-robin")]


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
    assert acpi.pxm_to_node(s) == {5: 0, 4: 1, 3: 2, 6: 3}
    assert acpi.srat_memory_nodes(s) == [1, 2]
    got = acpi.boot_cpu_nodes(m, s, (6, 1))
    assert [c.node for c in got] == [0, 2, 1, 2, 1, 2]
    assert [c.source for c in got] == ["srat"] + ["round-robin"] * 5
    # The nodes that really had RAM at boot, when known, win over the estimate.
    got = acpi.boot_cpu_nodes(m, s, (6, 1), memory_nodes=[3, 1, 2])
    assert [c.node for c in got] == [0, 2, 3, 1, 2, 3]
    with pytest.raises(acpi.AcpiTableError, match="no node has boot memory"):
        acpi.boot_cpu_nodes(m, s, (6, 1), memory_nodes=[])


def test_srat_revision_2_widens_proximity_domains():
    entries = (cpu_aff(0, 0x02, hi=b"\x01\0\0"), mem_aff(0x1002, 0, GIB))
    s1 = acpi.parse_srat(srat(*entries, revision=1))
    s2 = acpi.parse_srat(srat(*entries, revision=2))
    assert (s1.cpus[0].proximity_domain, s1.memory[0].proximity_domain) == (0x02, 0x02)
    assert (s2.cpus[0].proximity_domain, s2.memory[0].proximity_domain) == (0x102, 0x1002)
    assert acpi.pxm_to_node(s1) == {2: 0}
    assert acpi.pxm_to_node(s2) == {0x102: 0, 0x1002: 1}


def test_generic_initiators_take_node_numbers_among_the_cpu_domains():
    s = acpi.parse_srat(srat(cpu_aff(0, 3), gi_aff(8), gi_aff(9, flags=0), cpu_aff(1, 4), mem_aff(2, 0, GIB)))
    assert [(g.proximity_domain, g.enabled) for g in s.initiators] == [(8, True), (9, False)]
    assert acpi.pxm_to_node(s) == {3: 0, 8: 1, 4: 2, 2: 3}


# --- bad input: one line, naming what is wrong and what to do ---------------------------


def corrupt(raw: bytes, offset: int, value: int) -> bytes:
    out = bytearray(raw)
    out[offset] = value
    return bytes(out)


BAD = {
    "checksum": (lambda: corrupt(table("no-numa-absent", "APIC"), 40, 0x12), acpi.parse_madt, "bad checksum"),
    "truncated": (
        lambda: table("memoryless-absent-assigned", "SRAT")[:200],
        acpi.parse_srat,
        "header says 376 bytes but 200 were given (truncated)",
    ),
    "extra": (lambda: table("no-numa-absent", "APIC") + b"\0", acpi.parse_madt, "followed by extra bytes"),
    "signature": (
        lambda: table("memoryless-absent-assigned", "SRAT"),
        acpi.parse_madt,
        "signature is 'SRAT', not 'APIC'",
    ),
    "short": (lambda: b"APIC", acpi.parse_madt, "shorter than the 36-byte ACPI table header"),
    "not-bytes": (lambda: "APIC", acpi.parse_madt, "expected bytes, got str"),
    "fixed-part": (
        lambda: build(b"SRAT", b"\1\0\0\0"),
        acpi.parse_srat,
        "too short for the SRAT's 48-byte fixed part",
    ),
    "zero-length": (lambda: madt(lapic(0), b"\x00\x00"), acpi.parse_madt, "has length 0"),
    "overrun": (lambda: madt(lapic(0), b"\x09\x10\0\0"), acpi.parse_madt, "runs past the end of the table"),
    "short-entry": (
        lambda: madt(struct.pack("<BBBB", 0, 4, 0, 0)),
        acpi.parse_madt,
        "shorter than its 8-byte structure",
    ),
    "lapic-affinity-length": (
        lambda: srat(cpu_aff(0, 0)[:1] + b"\x18" + cpu_aff(0, 0)[2:] + b"\0" * 8),
        acpi.parse_srat,
        "is 24 bytes, not 16",
    ),
    "header-tail": (lambda: madt(b"\x00"), acpi.parse_madt, "runs past the end"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tables_raise_one_line(case):
    make, parse, words = BAD[case]
    with pytest.raises(acpi.AcpiTableError) as err:
        parse(make())
    msg = str(err.value)
    assert "\n" not in msg and words in msg, msg
    assert isinstance(err.value, ValueError)


def test_fixable_causes_say_what_to_do():
    with pytest.raises(acpi.AcpiTableError, match=r"/sys/firmware/acpi/tables/SRAT"):
        acpi.parse_srat(table("memoryless-absent-assigned", "SRAT")[:-1])


def test_bad_versions_and_arguments():
    m, s, f = recorded("memoryless-absent-assigned")
    for bad in ("linux", "", None, (6,)):
        with pytest.raises(acpi.AcpiTableError, match="give `uname -r`"):
            acpi.boot_cpu_nodes(m, s, bad)
    with pytest.raises(acpi.AcpiTableError, match="modelled from 6.1 on"):
        acpi.boot_cpu_nodes(m, s, "5.15.0-91-generic")
    with pytest.raises(acpi.AcpiTableError, match="not a CPU count"):
        acpi.boot_cpu_nodes(m, s, (6, 1), nr_cpu_ids=0)
    none_present = acpi.parse_madt(madt(lapic(0, flags=0)))
    with pytest.raises(acpi.AcpiTableError, match="no enabled Local APIC"):
        acpi.boot_cpu_nodes(none_present, None, (6, 1))
    assert acpi.kernel_version("6.12.107+deb12-amd64") == (6, 12)
    assert acpi.kernel_version((6, 1, 192)) == (6, 1)
