"""The firmware's CPU and memory tables (ACPI SRAT and MADT) read as the x86 kernel
reads them, and the node each possible CPU gets at boot.

Pure functions on bytes: the tables are what root reads from
/sys/firmware/acpi/tables/SRAT and /sys/firmware/acpi/tables/APIC (the MADT), and FACP
for the FADT revision. Nothing here opens a file.

    parse_srat(data)  -> Srat    processor (Local APIC, x2APIC) and memory affinity,
                                 generic initiators
    parse_madt(data)  -> Madt    Local APIC and Local x2APIC entries with their
                                 enabled and online-capable flags
    parse_fadt_revision(data)    FADT major and minor revision
    boot_cpu_nodes(madt, srat, kernel, ...) -> [CpuNode]
                                 cpu_to_node() of every possible CPU after boot, and
                                 which source decided it: "srat" or "round-robin"

Bad input raises AcpiTableError (a ValueError) with a one-line message naming the
table, what is wrong and what to do.

The rules, by kernel version, are in docs/numa-placement.md; in short, in every kernel
read (Debian's 6.1.192, the 6.9 topology rework, mainline in 2025) a possible CPU that
is not present at boot has no APIC id in x86_cpu_to_apicid when init_cpu_to_node()
runs, so it keeps the node numa_init_array() gave it: round-robin over the nodes that
had memory, whatever the SRAT says about its APIC id. Only a present CPU whose APIC id
has an SRAT entry gets its node from the firmware.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# include/acpi/actbl.h: struct acpi_table_header.
HEADER_LEN = 36
_HEADER = struct.Struct("<4sIBB6s8sI4sI")

# arch/x86/include/asm/apicdef.h: MAX_LOCAL_APIC on x86_64. APIC ids at or above it are
# "skipped apicid that is too big" (acpi_register_lapic(), the SRAT parsers) or
# rejected (topology_register_apic()).
MAX_LOCAL_APIC = 32768
# Debian's x86_64 kernels: CONFIG_NR_CPUS=8192, the cap on nr_cpu_ids.
NR_CPUS = 8192

SOURCE_SRAT = "srat"
SOURCE_ROUND_ROBIN = "round-robin"

# include/acpi/actbl2.h, ACPI 6.5 section 5.2.12 (MADT) and 5.2.16 (SRAT).
MADT_LOCAL_APIC, MADT_LOCAL_X2APIC = 0, 9
MADT_ENABLED, MADT_ONLINE_CAPABLE = 1 << 0, 1 << 1
SRAT_CPU_AFFINITY, SRAT_MEMORY_AFFINITY, SRAT_X2APIC_AFFINITY = 0, 1, 2
SRAT_GENERIC_AFFINITY = 5
SRAT_CPU_ENABLED = 1 << 0
SRAT_MEM_ENABLED, SRAT_MEM_HOT_PLUGGABLE, SRAT_MEM_NON_VOLATILE = 1 << 0, 1 << 1, 1 << 2
SRAT_GENERIC_AFFINITY_ENABLED = 1 << 0

# sizeof() of each structure; a shorter entry is BAD_MADT_ENTRY() or bad_srat().
_MADT_SIZES = {MADT_LOCAL_APIC: 8, MADT_LOCAL_X2APIC: 16}
_SRAT_SIZES = {
    SRAT_CPU_AFFINITY: 16,
    SRAT_MEMORY_AFFINITY: 40,
    SRAT_X2APIC_AFFINITY: 24,
    SRAT_GENERIC_AFFINITY: 32,
}
_MADT_BODY = HEADER_LEN + 8  # local APIC address, flags
_SRAT_BODY = HEADER_LEN + 12  # table revision (reserved, 1), reserved u64
# The FADT's minor version is byte 131 (ACPI 5.1 and later; absent before).
_FADT_MINOR_OFFSET = 131


class AcpiTableError(ValueError):
    """A table that is not what its signature promises; the message is one line."""


@dataclass(frozen=True)
class TableHeader:
    signature: str
    length: int
    revision: int
    oem_id: str
    oem_table_id: str


@dataclass(frozen=True)
class LocalApic:
    """One MADT Processor Local APIC (type 0) or Local x2APIC (type 9) entry."""

    kind: str  # "lapic" or "x2apic"
    apic_id: int
    processor_uid: int  # ACPI processor UID (the 8-bit processor id for a Local APIC)
    flags: int
    offset: int  # byte offset in the table, for messages

    @property
    def enabled(self) -> bool:
        return bool(self.flags & MADT_ENABLED)

    @property
    def online_capable(self) -> bool:
        return bool(self.flags & MADT_ONLINE_CAPABLE)


@dataclass(frozen=True)
class Madt:
    header: TableHeader
    local_apic_address: int
    flags: int
    cpus: tuple[LocalApic, ...]  # in table order


@dataclass(frozen=True)
class CpuAffinity:
    """SRAT Processor Local APIC/SAPIC (type 0) or x2APIC (type 2) affinity."""

    kind: str  # "lapic" or "x2apic"
    apic_id: int
    proximity_domain: int  # as the table's revision lets the kernel read it
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_CPU_ENABLED)


@dataclass(frozen=True)
class MemoryAffinity:
    proximity_domain: int
    base: int
    length: int
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_MEM_ENABLED)

    @property
    def hot_pluggable(self) -> bool:
        return bool(self.flags & SRAT_MEM_HOT_PLUGGABLE)

    @property
    def non_volatile(self) -> bool:
        return bool(self.flags & SRAT_MEM_NON_VOLATILE)


@dataclass(frozen=True)
class GenericInitiator:
    proximity_domain: int
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_GENERIC_AFFINITY_ENABLED)


@dataclass(frozen=True)
class Srat:
    header: TableHeader
    cpus: tuple[CpuAffinity, ...]  # in table order
    memory: tuple[MemoryAffinity, ...]  # in table order
    initiators: tuple[GenericInitiator, ...]  # in table order
    # The order the kernel meets proximity domains in (see pxm_to_node()).
    _cpu_pass: tuple[CpuAffinity | GenericInitiator, ...] = ()


def _table(data: bytes, signature: str, sysfs_name: str) -> tuple[TableHeader, bytes]:
    """Check signature, length and checksum as acpi_tb_verify_checksum() would."""
    where = f"{signature} table"
    hint = f"dump it again as root from /sys/firmware/acpi/tables/{sysfs_name}"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AcpiTableError(f"{where}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise AcpiTableError(
            f"{where}: {len(data)} bytes is shorter than the {HEADER_LEN}-byte ACPI table header; {hint}"
        )
    sig, length, revision, _checksum, oem_id, oem_table_id, _, _, _ = _HEADER.unpack_from(data)
    if sig != signature.encode():
        shown = sig.decode("ascii", "replace")
        raise AcpiTableError(
            f"{where}: signature is {shown!r}, not {signature!r}: this is "
            f"another table; read /sys/firmware/acpi/tables/{sysfs_name}"
        )
    if length != len(data):
        what = "truncated" if length > len(data) else "followed by extra bytes"
        raise AcpiTableError(
            f"{where}: its header says {length} bytes but {len(data)} were given ({what}); {hint}"
        )
    if sum(data) % 256:
        raise AcpiTableError(
            f"{where}: bytes sum to {sum(data) % 256:#04x} mod 256, not 0 (bad "
            f"checksum: corrupt or edited); {hint}"
        )
    header = TableHeader(
        signature,
        length,
        revision,
        oem_id.rstrip(b"\0 ").decode("ascii", "replace"),
        oem_table_id.rstrip(b"\0 ").decode("ascii", "replace"),
    )
    return header, data


def _entries(data: bytes, start: int, where: str, sizes: dict[int, int]) -> Iterator[tuple[int, int, bytes]]:
    """Walk subtables as acpi_parse_entries_array() does: type, length, body."""
    offset = start
    while offset < len(data):
        if offset + 2 > len(data):
            raise AcpiTableError(
                f"{where}: a subtable header at offset {offset:#x} runs past "
                f"the end of the table ({len(data)} bytes): malformed table"
            )
        kind, length = data[offset], data[offset + 1]
        if length < 2:
            raise AcpiTableError(
                f"{where}: subtable at offset {offset:#x} has length {length}: "
                "the kernel stops parsing here (malformed table)"
            )
        if offset + length > len(data):
            raise AcpiTableError(
                f"{where}: subtable type {kind} at offset {offset:#x} is "
                f"{length} bytes and runs past the end of the table: "
                "truncated or malformed"
            )
        need = sizes.get(kind)
        if need is not None and length < need:
            raise AcpiTableError(
                f"{where}: subtable type {kind} at offset {offset:#x} is "
                f"{length} bytes, shorter than its {need}-byte structure "
                "(the kernel rejects the table)"
            )
        yield kind, offset, data[offset : offset + length]
        offset += length


def parse_madt(data: bytes) -> Madt:
    """The MADT ("APIC"): its Local APIC and Local x2APIC entries, in table order."""
    header, data = _table(data, "APIC", "APIC")
    if len(data) < _MADT_BODY:
        raise AcpiTableError(
            f"APIC table: {len(data)} bytes is too short for the MADT's "
            f"{_MADT_BODY}-byte fixed part; dump it again as root from "
            "/sys/firmware/acpi/tables/APIC"
        )
    address, flags = struct.unpack_from("<II", data, HEADER_LEN)
    cpus = []
    for kind, offset, entry in _entries(data, _MADT_BODY, "APIC table", _MADT_SIZES):
        if kind == MADT_LOCAL_APIC:
            uid, apic_id, eflags = struct.unpack_from("<BBI", entry, 2)
            cpus.append(LocalApic("lapic", apic_id, uid, eflags, offset))
        elif kind == MADT_LOCAL_X2APIC:
            apic_id, eflags, uid = struct.unpack_from("<III", entry, 4)
            cpus.append(LocalApic("x2apic", apic_id, uid, eflags, offset))
    return Madt(header, address, flags, tuple(cpus))


def parse_srat(data: bytes) -> Srat:
    """The SRAT: processor and memory affinity and generic initiators, in table order.

    A Local APIC affinity's proximity domain has 8 bits in SRAT revision 1 and 32 from
    revision 2 (acpi_numa_processor_affinity_init() adds proximity_domain_hi only when
    acpi_srat_revision >= 2); a memory affinity's is cut to 8 bits in revision 1
    (acpi_numa_memory_affinity_init()). The values here are the ones the kernel uses.
    """
    header, data = _table(data, "SRAT", "SRAT")
    if len(data) < _SRAT_BODY:
        raise AcpiTableError(
            f"SRAT table: {len(data)} bytes is too short for the SRAT's "
            f"{_SRAT_BODY}-byte fixed part; dump it again as root from "
            "/sys/firmware/acpi/tables/SRAT"
        )
    wide = header.revision >= 2
    cpus: list[CpuAffinity] = []
    memory: list[MemoryAffinity] = []
    initiators: list[GenericInitiator] = []
    cpu_pass: list[CpuAffinity | GenericInitiator] = []
    for kind, offset, entry in _entries(data, _SRAT_BODY, "SRAT table", _SRAT_SIZES):
        if kind == SRAT_CPU_AFFINITY:
            if len(entry) != _SRAT_SIZES[kind]:
                # acpi_numa_processor_affinity_init(): length != sizeof -> bad_srat().
                raise AcpiTableError(
                    f"SRAT table: Local APIC affinity at offset {offset:#x} "
                    f"is {len(entry)} bytes, not 16 (the kernel rejects "
                    "the table)"
                )
            lo, apic_id, eflags, _eid = struct.unpack_from("<BBIB", entry, 2)
            pxm = lo | (int.from_bytes(entry[9:12], "little") << 8 if wide else 0)
            item = CpuAffinity("lapic", apic_id, pxm, eflags, offset)
            cpus.append(item)
            cpu_pass.append(item)
        elif kind == SRAT_X2APIC_AFFINITY:
            pxm, apic_id, eflags = struct.unpack_from("<III", entry, 4)
            item = CpuAffinity("x2apic", apic_id, pxm, eflags, offset)
            cpus.append(item)
            cpu_pass.append(item)
        elif kind == SRAT_MEMORY_AFFINITY:
            (pxm,) = struct.unpack_from("<I", entry, 2)
            base, length = struct.unpack_from("<QQ", entry, 8)
            (eflags,) = struct.unpack_from("<I", entry, 28)
            memory.append(MemoryAffinity(pxm if wide else pxm & 0xFF, base, length, eflags, offset))
        elif kind == SRAT_GENERIC_AFFINITY:
            (pxm,) = struct.unpack_from("<I", entry, 4)
            (eflags,) = struct.unpack_from("<I", entry, 24)
            initiator = GenericInitiator(pxm, eflags, offset)
            initiators.append(initiator)
            cpu_pass.append(initiator)
    return Srat(header, tuple(cpus), tuple(memory), tuple(initiators), tuple(cpu_pass))


def parse_fadt_revision(data: bytes) -> tuple[int, int]:
    """(major, minor) of the FADT ("FACP"), which decides whether the kernel honours the
    MADT's online-capable bit: acpi_parse_madt() sets acpi_support_online_capable for
    FADT 6.3 and later."""
    header, data = _table(data, "FACP", "FACP")
    minor = data[_FADT_MINOR_OFFSET] & 0x0F if len(data) > _FADT_MINOR_OFFSET else 0
    return header.revision, minor


# --- the kernel's mapping -------------------------------------------------------------

_VERSION = re.compile(r"\s*(\d+)\.(\d+)")


def kernel_version(kernel: str | tuple[int, int]) -> tuple[int, int]:
    """(major, minor) from "6.1.0-57-amd64", "6.12.107+deb12-amd64" or (6, 1)."""
    if isinstance(kernel, tuple) and len(kernel) >= 2 and all(isinstance(x, int) for x in kernel[:2]):
        return kernel[0], kernel[1]
    m = _VERSION.match(kernel) if isinstance(kernel, str) else None
    if m is None:
        raise AcpiTableError(
            f"kernel version {kernel!r} is not like '6.1' or '6.1.0-57-amd64'; give `uname -r` of the kernel"
        )
    return int(m.group(1)), int(m.group(2))


# The versions where the rules below change (docs/numa-placement.md has the citations).
# ec9aedb2aa1a "x86/acpi: Ignore invalid x2APIC entries" (6.5): all Local APIC entries
# first, then x2APIC entries, and an x2APIC id below 0xff ignored when Local APIC CPUs
# exist.
V_X2APIC_FILTER = (6, 5)
# The x86 topology rework (6.9): topology_register_apic() replaces
# generic_processor_info(), and topology_init_possible_cpus() gives the absent CPUs
# their numbers and APIC ids (ea2dd8a5d436, "x86/cpu/topology: Assign hotpluggable
# CPUIDs during init").
V_TOPOLOGY_REWORK = (6, 9)
# 0141978ae75b "x86/acpi: Fix LAPIC/x2APIC parsing order" (6.14): table order again,
# with a first pass (acpi_check_lapic()) deciding whether Local APIC CPUs exist.
V_MADT_ORDER_FIX = (6, 14)
# f0551af02130 "x86/topology: Ignore non-present APIC IDs in a present package" (6.9):
# on bare metal (no hypervisor detected) a not-present APIC id in a package that has a
# present one is rejected, not counted as hot-pluggable.
V_PACKAGE_RULE = (6, 9)
# The oldest kernel these rules were read for.
V_OLDEST = (6, 1)

# Which MADT entries with Enabled=0 count as possible CPUs (acpi_is_processor_usable()):
# "online-capable"  6.1 (a74fabfbd1b7 and fed8d8773b8e, 6.3-rc5, in 6.1.y): every such
#                   entry, unless the FADT is 6.3 or later; then only those with the
#                   online-capable bit.
# "present-package" 6.9 on: as "online-capable", and on bare metal not one in a package
#                   that has a present CPU (f0551af02130, topo_register_apic()).
# "guest-only"      adbf61cc47cb "x86/acpi/boot: Correct acpi_is_processor_usable() check
#                   again" (tip x86/boot, December 2025, marked for stable; Debian's
#                   6.12.107 and 6.12.117 have it): under FADT < 6.3 only in a guest, since
#                   bare-metal firmware lists unusable CPUs that way; the package rule goes.
# Version numbers cannot say which a stable kernel carries: pass usable_rule when the
# default (by version: "online-capable" before 6.9, "present-package" from it) is not
# that kernel's.
USABLE_RULES = ("online-capable", "present-package", "guest-only")


@dataclass(frozen=True)
class CpuNode:
    cpu: int  # logical CPU number
    apic_id: int | None  # APIC id bound to the number at boot; None for an absent
    # CPU before 6.9 (it gets one only when hot-added)
    present: bool  # the MADT entry is enabled
    node: int  # cpu_to_node(cpu) after boot
    source: str  # SOURCE_SRAT or SOURCE_ROUND_ROBIN
    firmware_node: int | None  # the SRAT's node for apic_id, None when unknown;
    # where a hot-add would move an absent CPU if _PXM agrees


def pxm_to_node(srat: Srat) -> dict[int, int]:
    """acpi_map_pxm_to_node(): a node number for each proximity domain, handed out in
    the order the kernel first meets the domain (drivers/acpi/numa/srat.c,
    acpi_numa_init()): the enabled processor affinity and generic initiator entries in
    table order first, then the enabled memory affinity entries. Linux node ids are not
    the firmware's proximity domains: a memory-only domain listed before a CPU domain in
    the firmware's numbering still comes after it."""
    mapping: dict[int, int] = {}

    def meet(pxm: int) -> None:
        if pxm not in mapping:
            mapping[pxm] = len(mapping)

    for item in srat._cpu_pass:
        # An x2APIC id is taken as valid (apic_id_valid() of the x2APIC drivers, which
        # are in charge on a machine with x2APIC entries); the domain is met even when
        # the id is too big for __apicid_to_node[], as in
        # acpi_numa_x2apic_affinity_init(), which maps it first.
        if item.enabled:
            meet(item.proximity_domain)
    for mem in srat.memory:
        if mem.enabled:
            meet(mem.proximity_domain)
    return mapping


def apic_to_node(srat: Srat) -> dict[int, int]:
    """__apicid_to_node[] after SRAT parsing: enabled processor entries whose APIC id is
    below MAX_LOCAL_APIC; a later entry for the same APIC id wins."""
    nodes = pxm_to_node(srat)
    return {
        c.apic_id: nodes[c.proximity_domain] for c in srat.cpus if c.enabled and c.apic_id < MAX_LOCAL_APIC
    }


def srat_memory_nodes(srat: Srat) -> list[int]:
    """Nodes with boot memory by the SRAT alone: an enabled, non-empty, not hot-pluggable
    memory range. Only an estimate of the nodes online at numa_init_array() time, which
    are the nodes whose ranges hold RAM in the e820 map (numa_register_memblks() on 6.1,
    numa_register_nodes() later): a hot-pluggable range may hold RAM at boot too, and a
    range may hold none. Pass the real list (/sys/devices/system/node/has_memory right
    after boot) to boot_cpu_nodes() when you have it."""
    nodes = pxm_to_node(srat)
    return sorted(
        {nodes[m.proximity_domain] for m in srat.memory if m.enabled and m.length and not m.hot_pluggable}
    )


def _srat_usable(srat: Srat | None) -> bool:
    """acpi_numa_init() fails with -ENOENT when no memory affinity entry was parsed
    (parsed_numa_memblks == 0); numa_init() then falls back to dummy_numa_init()."""
    return srat is not None and any(m.enabled for m in srat.memory)


def _madt_order(
    madt: Madt, version: tuple[int, int], online_capable: bool, rule: str, hypervisor: bool
) -> list[LocalApic]:
    """The Local APIC / x2APIC entries the kernel registers, in registration order,
    each with whether it is present (enabled)."""

    def usable(e: LocalApic) -> bool:
        # acpi_is_processor_usable()
        if e.enabled:
            return True
        if online_capable:
            return e.online_capable
        return hypervisor if rule == "guest-only" else True

    def valid(e: LocalApic) -> bool:
        if e.kind == "lapic":
            return e.apic_id != 0xFF  # acpi_parse_lapic()
        return e.apic_id != 0xFFFFFFFF  # acpi_parse_x2apic()

    lapics = [e for e in madt.cpus if e.kind == "lapic"]
    if version < V_X2APIC_FILTER:
        order, has_lapic_cpus = list(madt.cpus), False
    elif version < V_MADT_ORDER_FIX:
        # Local APIC entries all first, then x2APIC. Before 6.9 has_lapic_cpus was set
        # when acpi_register_lapic() gave an enabled entry a CPU number; from 6.9 for
        # every usable entry it registered.
        order = lapics + [e for e in madt.cpus if e.kind == "x2apic"]
        if version < V_TOPOLOGY_REWORK:
            has_lapic_cpus = any(valid(e) and usable(e) and e.enabled for e in lapics)
        else:
            has_lapic_cpus = any(valid(e) and usable(e) for e in lapics)
    else:
        order = list(madt.cpus)
        has_lapic_cpus = any(valid(e) and usable(e) for e in lapics)  # acpi_check_lapic()
    out = []
    for e in order:
        if not valid(e) or not usable(e):
            continue
        if e.kind == "x2apic" and has_lapic_cpus and e.apic_id < 0xFF:
            continue
        if e.apic_id >= MAX_LOCAL_APIC:
            continue  # too big: skipped / rejected
        out.append(e)
    return out


def boot_cpu_nodes(
    madt: Madt,
    srat: Srat | None,
    kernel: str | tuple[int, int],
    *,
    memory_nodes: list[int] | None = None,
    boot_apic_id: int | None = None,
    fadt_revision: tuple[int, int] | None = None,
    nr_cpu_ids: int = NR_CPUS,
    hypervisor: bool = False,
    usable_rule: str | None = None,
    package_shift: int | None = None,
) -> list[CpuNode]:
    """cpu_to_node() of every possible CPU once the kernel has booted, as `kernel` (a
    version, 6.1 or later) computes it from these tables; the node x86_vmx_init() asks
    for each CPU's root VMCS page.

    1. CPU numbers (6.1: acpi_parse_madt_lapic_entries() -> acpi_register_lapic() ->
       generic_processor_info(); 6.9+: topology_register_apic() and
       topology_init_possible_cpus()): the boot CPU is 0, the other present (enabled)
       CPUs follow in MADT registration order. Absent CPUs are counted; 6.9+ numbers
       them after the present ones in ascending APIC id order, 6.1 leaves their number
       free of any APIC id until a hot-add takes the next one. possible = present +
       absent, capped at nr_cpu_ids.
    2. numa_init() -> numa_init_array(): CPU i gets the (i mod k)-th of the k online
       nodes, which then are the nodes with memory (memory_nodes; estimated from the
       SRAT when not given). Without a usable SRAT, dummy_numa_init() makes node 0 the
       only one.
    3. init_cpu_to_node(): a CPU whose x86_cpu_to_apicid is set and whose APIC id has a
       node in __apicid_to_node[] (the SRAT) takes that node. x86_cpu_to_apicid is set
       for present CPUs only (generic_processor_info() on 6.1, topo_set_cpuids() on
       6.9+), so absent CPUs keep the round-robin node in every version.

    Not modelled: possible_cpus= and nr_cpus= beyond the nr_cpu_ids cap, numa=off or
    numa=fake, AMD's northbridge NUMA without an SRAT, CXL windows (CEDT), and x2APIC ids
    of 255 and above on a kernel still in xAPIC mode when it parses the MADT (its
    apic_id_valid() refuses them; here they count, as under the x2APIC drivers).

    hypervisor: whether the kernel detects a hypervisor (x86_hyper_type is not
    X86_HYPER_NATIVE). False for bare metal, and also for QEMU's TCG, whose CPUID
    signature ("TCGTCGTCGTCG") no detector knows. usable_rule: one of USABLE_RULES, which
    decides which Enabled=0 entries are possible CPUs; by version when not given.
    package_shift: the APIC id bits below the package (from CPUID leaf 0xb/0x1f), needed
    only by the "present-package" rule on bare metal when the MADT lists absent CPUs.

    boot_apic_id: the APIC id of the CPU that booted (CPU 0); by default the first
    enabled entry, as ACPI requires of firmware. fadt_revision: parse_fadt_revision()
    of the FACP; the online-capable bit counts only from FADT 6.3, so without it every
    disabled entry is a possible CPU, as on FADT < 6.3.
    """
    version = kernel_version(kernel)
    if version < V_OLDEST:
        raise AcpiTableError(
            f"kernel {version[0]}.{version[1]}: the CPU and node rules are "
            f"modelled from {V_OLDEST[0]}.{V_OLDEST[1]} on; read that "
            "kernel's arch/x86/mm/numa.c and arch/x86/kernel/apic/apic.c "
            "before trusting an answer for it"
        )
    if nr_cpu_ids < 1:
        raise AcpiTableError(f"nr_cpu_ids {nr_cpu_ids} is not a CPU count; give at least 1")
    if usable_rule is None:
        usable_rule = "present-package" if version >= V_PACKAGE_RULE else "online-capable"
    elif usable_rule not in USABLE_RULES:
        raise AcpiTableError(f"usable_rule {usable_rule!r} is not one of {', '.join(USABLE_RULES)}")
    online_capable = fadt_revision is not None and tuple(fadt_revision) >= (6, 3)
    entries = _madt_order(madt, version, online_capable, usable_rule, hypervisor)
    present = [e for e in entries if e.enabled]
    absent = [e for e in entries if not e.enabled]
    if usable_rule == "present-package" and not hypervisor and absent:
        # topo_register_apic(): a not-present APIC id whose package (the id without its
        # low package_shift bits) holds a present APIC is rejected on bare metal.
        if package_shift is None or not 0 <= package_shift < 32:
            raise AcpiTableError(
                "the MADT lists absent CPUs and this kernel keeps only "
                "those in packages without a present CPU on bare metal: "
                "give package_shift (the APIC id bits below the package, "
                "from CPUID leaf 0xb or 0x1f), or hypervisor=True in a VM"
            )
        packages = {e.apic_id >> package_shift for e in present}
        absent = [e for e in absent if e.apic_id >> package_shift not in packages]
    if not present:
        raise AcpiTableError(
            "APIC table: no enabled Local APIC or x2APIC entry, so no "
            "present CPU: is this the MADT of a running machine?"
        )
    if boot_apic_id is None:
        boot_apic_id = present[0].apic_id
    elif all(e.apic_id != boot_apic_id for e in present):
        raise AcpiTableError(
            f"APIC table: the boot CPU's APIC id {boot_apic_id:#x} has no "
            "enabled entry; give the APIC id the booted CPU reports "
            "(/proc/cpuinfo 'apicid' of CPU 0)"
        )

    # 1. Logical CPU numbers for present CPUs (a repeated APIC id keeps its first number:
    # allocate_logical_cpuid() and topo_lookup_cpuid() look it up first).
    apic_of: dict[int, int | None] = {0: boot_apic_id}
    seen = {boot_apic_id}
    for e in present:
        if e.apic_id in seen:
            continue
        if len(apic_of) >= nr_cpu_ids:
            break
        apic_of[len(apic_of)] = e.apic_id
        seen.add(e.apic_id)
    nr_present = len(apic_of)
    absent_ids = sorted({e.apic_id for e in absent} - seen)
    possible = min(nr_present + len(absent_ids), nr_cpu_ids)
    for cpu in range(nr_present, possible):
        # 6.9+: topology_init_possible_cpus() walks the APIC ids registered but not
        # present in ascending order; 6.1 binds no APIC id to the number before a hot-add.
        apic_of[cpu] = absent_ids[cpu - nr_present] if version >= V_TOPOLOGY_REWORK else None

    # 2. numa_init_array() over the nodes online then.
    if _srat_usable(srat):
        assert srat is not None
        firmware = apic_to_node(srat)
        rr_nodes = sorted(set(memory_nodes)) if memory_nodes is not None else srat_memory_nodes(srat)
        if not rr_nodes:
            raise AcpiTableError(
                "SRAT table: no node has boot memory, so the round-robin "
                "has nothing to place CPUs on; pass memory_nodes (the "
                "nodes in /sys/devices/system/node/has_memory)"
            )
    else:
        firmware, rr_nodes = {}, [0]

    # 3. init_cpu_to_node().
    result = []
    for cpu in range(possible):
        apic_id = apic_of[cpu]
        is_present = cpu < nr_present
        fw = firmware.get(apic_id) if apic_id is not None else None
        if is_present and fw is not None:
            node, source = fw, SOURCE_SRAT
        else:
            node, source = rr_nodes[cpu % len(rr_nodes)], SOURCE_ROUND_ROBIN
        result.append(CpuNode(cpu, apic_id, is_present, node, source, fw))
    return result
