"""The node each possible CPU gets at boot, from the firmware's tables, as the x86 kernel
decides it (arch/x86/kernel/acpi/boot.c, drivers/acpi/numa/srat.c, arch/x86/mm/numa.c):

    boot_cpu_nodes(madt, srat, kernel, ...) -> [CpuNode]
        cpu_to_node() of every possible CPU after boot, and which source decided it:
        "srat" or "round-robin"

The rules, by kernel version, are in docs/numa-placement.md; in short, in every kernel
read (Debian's 6.1.192, the 6.9 topology rework, mainline in 2025) a possible CPU that
is not present at boot has no APIC id in x86_cpu_to_apicid when init_cpu_to_node()
runs, so it keeps the node numa_init_array() gave it: round-robin over the nodes that
had memory, whatever the SRAT says about its APIC id. Only a present CPU whose APIC id
has an SRAT entry gets its node from the SRAT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from vmxprobe.arch.cpuid import CPUID_HYPERVISOR_BIT, ECX
from vmxprobe.host.acpi import (
    AcpiTableError,
    LocalApic,
    Madt,
    Srat,
    parse_fadt_revision,
    parse_madt,
    parse_srat,
)
from vmxprobe.host.readings import HostReadings
from vmxprobe.kernel.numa import NodeMap
from vmxprobe.kernel.release import model_for

# arch/x86/include/asm/apicdef.h: MAX_LOCAL_APIC on x86_64. APIC ids at or above it are
# "skipped apicid that is too big" (acpi_register_lapic(), the SRAT parsers) or
# rejected (topology_register_apic()).
MAX_LOCAL_APIC = 32768
# Debian's x86_64 kernels: CONFIG_NR_CPUS=8192, the cap on nr_cpu_ids.
NR_CPUS = 8192

SOURCE_SRAT = "srat"
SOURCE_ROUND_ROBIN = "round-robin"


_VERSION = re.compile(r"\s*([0-9]{1,9})\.([0-9]{1,9})")


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

    for item in srat.cpu_pass:
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


# --- the firmware's view beside the plan ------------------------------------------------

TABLES = "sys/firmware/acpi/tables"


@dataclass(frozen=True)
class FirmwareView:
    """What the host's own ACPI tables say about each possible CPU's node, beside the
    plan (which follows sysfs and the round-robin): the node the SRAT gives each CPU's
    APIC id, and where the two part."""

    firmware_node: dict[int, int]  # cpu -> the SRAT's node for its APIC id, where known
    notes: tuple[str, ...] = ()


def firmware_view(
    tables: dict[str, bytes],
    release: str | None,
    node_of: dict[int, int],
    present: set[int],
    memory_nodes: list[int] | None,
    boot_apic_id: int | None,
    hypervisor: bool,
) -> FirmwareView | None:
    """boot_cpu_nodes() from the recorded MADT, SRAT and FADT, compared with the plan's
    node for every possible CPU; None without a MADT."""
    madt_raw = tables.get(f"{TABLES}/APIC")
    if madt_raw is None:
        return None
    try:
        madt = parse_madt(madt_raw)
        srat_raw = tables.get(f"{TABLES}/SRAT")
        srat = parse_srat(srat_raw) if srat_raw is not None else None
        fadt_raw = tables.get(f"{TABLES}/FACP")
        fadt = parse_fadt_revision(fadt_raw) if fadt_raw is not None else None
        version = model_for(release).version  # the rules the verdict applies, too
        view = boot_cpu_nodes(
            madt,
            srat,
            version,
            memory_nodes=memory_nodes or None,
            boot_apic_id=boot_apic_id,
            fadt_revision=fadt,
            hypervisor=hypervisor,
        )
    except AcpiTableError as e:
        return FirmwareView({}, (f"the firmware's ACPI tables were read but not used: {e}",))
    notes: list[str] = []
    firmware = {c.cpu: c.firmware_node for c in view if c.firmware_node is not None}
    if len(view) != len(node_of):
        notes.append(
            f"the firmware's MADT makes {len(view)} CPU(s) possible for this kernel, sysfs lists "
            f"{len(node_of)}: the command line (possible_cpus=, nr_cpus=, maxcpus=) or the "
            "kernel's build (NR_CPUS) differs from what the tables alone give"
        )
    for c in view:
        planned = node_of.get(c.cpu)
        if planned is None:
            continue
        if c.cpu in present and c.present and c.source == SOURCE_SRAT and c.node != planned:
            notes.append(
                f"CPU {c.cpu}: the SRAT puts its APIC id {c.apic_id:#x} on node {c.node}, sysfs on "
                f"node {planned}: the plan follows sysfs, the running kernel's answer"
            )
        elif c.cpu not in present and c.firmware_node is not None and c.firmware_node != planned:
            notes.append(
                f"CPU {c.cpu} (possible, not present): its root VMCS page goes to node {planned} "
                f"(numa_init_array()'s round-robin), but the SRAT puts its APIC id "
                f"{c.apic_id:#x} on node {c.firmware_node}: hot-added, it runs on node "
                f"{c.firmware_node} with its root VMCS page remote"
            )
    return FirmwareView(firmware, tuple(notes))


def with_firmware(nodes: NodeMap, scan: HostReadings) -> NodeMap:
    """The plan's nodes with the firmware's view added, when the scan read the tables."""
    if not scan.acpi_tables:
        return nodes
    boot = scan.cpus.get(0)
    apicid = scan.cpuinfo.get(0, {}).get("apicid", "")
    view = firmware_view(
        scan.acpi_tables,
        scan.kernel,
        nodes.node_of,
        set(scan.topology.present),
        scan.topology.nodes_with_memory,
        int(apicid) if isinstance(apicid, str) and apicid.isascii() and apicid.isdigit() else None,
        bool(boot is not None and boot.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT)),
    )
    if view is None:
        return nodes
    return replace(nodes, firmware_node=view.firmware_node, notes=nodes.notes + list(view.notes))
