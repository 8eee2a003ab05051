"""vmxprobe.host.acpi: the SRAT, MADT and FADT parsed as the x86 kernel parses them, and
refused, with one line, where the kernel would refuse them."""

from __future__ import annotations

import struct

import pytest

from tests.acpi_tables import GIB, TOPOLOGIES, build, cpu_aff, lapic, madt, srat, table
from vmxprobe.host import acpi


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
