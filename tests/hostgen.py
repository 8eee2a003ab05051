#!/usr/bin/env python3
"""Synthetic hosts: fixture documents in the kernel's sysfs formats, and trees laid out
like / (sys, proc, dev/cpu) written from any fixture. Used by the fixture composer,
the tests and the benchmarks; never presented as a recording."""

from __future__ import annotations

import os
import re
import struct

from vmxprobe.arch.cpuid import cpuid_signature
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.fixture import to_document
from vmxprobe.host.sources import CpuidReading, MsrReading

VMXCAPS = "https://github.com/honorarybot/VmxCaps"
KVM_NESTED = "https://github.com/torvalds/linux/blob/master/arch/x86/kvm/vmx/nested.c"
KVM_VMX = "https://github.com/torvalds/linux/blob/master/arch/x86/kvm/vmx/vmx.c"
FEAT_CTL = "https://github.com/torvalds/linux/blob/master/arch/x86/kernel/cpu/feat_ctl.c"

INTEL = (0x756E6547, 0x6C65746E, 0x49656E69)  # "GenuineIntel" in ebx, ecx, edx
AMD = (0x68747541, 0x444D4163, 0x69746E65)  # "AuthenticAMD"
KVM_SIG = (0x4B4D564B, 0x564B4D56, 0x0000004D)  # "KVMKVMKVM\0\0\0"

ECX_VMX, ECX_SMX, ECX_HYPERVISOR = 1 << 5, 1 << 6, 1 << 31

# sys/kernel/boot_params/data of a host booted without tboot, as composed fixtures carry
# it: all zero (a real one holds the E820 map and more, which no reader here uses).
BOOT_PARAMS = "sys/kernel/boot_params/data"
COMPOSED_BOOT_PARAMS = bytes(4096)
BOOT_PARAMS_SOURCE = {
    "what": "sys/kernel/boot_params/data: composed, all zero (booted without tboot: tboot_addr at 0x58 is 0)",
    "url": "https://github.com/torvalds/linux/blob/master/arch/x86/include/uapi/asm/bootparam.h",
}


def cpumap(cpus) -> str:
    mask = sum(1 << c for c in cpus)
    words = max(1, (max(cpus, default=0) // 32) + 1)
    return ",".join(f"{(mask >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range(words)))


def compose(
    name,
    description,
    sources,
    notes,
    *,
    nodes: dict[int, list[int]],
    possible=None,
    vendor=INTEL,
    signature,
    ecx,
    model_name,
    flags,
    feat_ctl,
    vmx_basic,
    hypervisor=None,
    kernel="6.12.0-composed",
    extra_msrs=None,
    boot_params=True,
):
    online = sorted(c for cpus in nodes.values() for c in cpus)
    possible = possible or online
    files = {
        "sys/devices/system/cpu/possible": format_cpulist(possible) + "\n",
        "sys/devices/system/cpu/present": format_cpulist(online) + "\n",
        "sys/devices/system/cpu/online": format_cpulist(online) + "\n",
        "sys/devices/system/cpu/kernel_max": "8191\n",
        "sys/devices/system/node/possible": format_cpulist(nodes) + "\n",
        "sys/devices/system/node/online": format_cpulist(nodes) + "\n",
        "sys/devices/system/node/has_memory": format_cpulist(nodes) + "\n",
        "sys/devices/system/node/has_normal_memory": format_cpulist(nodes) + "\n",
        "sys/devices/system/node/has_cpu": format_cpulist(nodes) + "\n",
        "proc/sys/kernel/osrelease": kernel + "\n",
    }
    dirs = {"sys/devices/system/node": [f"node{n}" for n in nodes]}
    node_ids = sorted(nodes)
    for n, cpus in nodes.items():
        files[f"sys/devices/system/node/node{n}/cpulist"] = format_cpulist(cpus) + "\n"
        files[f"sys/devices/system/node/node{n}/cpumap"] = cpumap(cpus) + "\n"
        files[f"sys/devices/system/node/node{n}/distance"] = (
            " ".join("10" if m == n else "21" for m in node_ids) + "\n"
        )
        for c in cpus:
            dirs[f"sys/devices/system/cpu/cpu{c}"] = [f"node{n}"]
    blocks = []
    sig = cpuid_signature(signature)
    for c in online:
        blocks.append(
            f"processor\t: {c}\nvendor_id\t: {'GenuineIntel' if vendor == INTEL else 'AuthenticAMD'}\n"
            f"cpu family\t: {sig['family']}\nmodel\t\t: {sig['model']}\n"
            f"model name\t: {model_name}\nstepping\t: {sig['stepping']}\n"
            f"flags\t\t: {flags}\n"
        )
    files["proc/cpuinfo"] = "\n".join(blocks) + "\n"
    msr = {0x3A: {c: feat_ctl for c in online}, 0x480: {c: vmx_basic for c in online}}
    for index, reading in (extra_msrs or {}).items():
        msr[index] = {c: reading for c in online}
    leaf0 = CpuidReading(value=(0x16 if vendor == INTEL else 0xD, *vendor))
    cpuid = {
        (0, 0): {c: leaf0 for c in online},
        (1, 0): {c: CpuidReading(value=(signature, (c & 0xFF) << 24 | 0x0800, ecx, 0x0)) for c in online},
    }
    if hypervisor:
        cpuid[(0x40000000, 0)] = {c: CpuidReading(value=(0x40000001, *hypervisor)) for c in online}
    blobs = {}
    if boot_params:
        # Composed, not read: a host booted without tboot. Only tboot_addr (offset 0x58)
        # is read from it (kernel.tboot), and it is 0 here as in every such boot.
        blobs[BOOT_PARAMS] = COMPOSED_BOOT_PARAMS
        sources = [*sources, BOOT_PARAMS_SOURCE]
    provenance = {
        "origin": "composed",
        "recorded_at": None,
        "tool_version": None,
        "kernel": None,
        "hostname": None,
        "sources": sources,
        "notes": notes,
    }
    return to_document(name, description, provenance, files, dirs, {}, msr, cpuid, blobs)


def v(x):
    return MsrReading(value=x)


def synthetic(
    n_cpus: int, n_nodes: int, *, possible=None, feat_ctl=0x5, vmx_basic=0x00DA040000000004, name=None
):
    """An Intel host of n_cpus online CPUs spread in equal blocks over n_nodes nodes."""
    per = -(-n_cpus // n_nodes)
    nodes = {n: list(range(n * per, min(n_cpus, (n + 1) * per))) for n in range(n_nodes)}
    return compose(
        name or f"synthetic-{n_cpus}cpu-{n_nodes}node",
        f"synthetic host: {n_cpus} CPUs on {n_nodes} nodes",
        [],
        "Synthetic, for tests and benchmarks; not a real machine.",
        nodes=nodes,
        possible=possible,
        signature=0x50654,
        ecx=ECX_VMX,
        model_name="synthetic",
        flags="fpu msr lm vmx",
        feat_ctl=v(feat_ctl),
        vmx_basic=v(vmx_basic),
    )


def write_tree(doc: dict, root: str, cpuid_leaves=(1, 0x40000000)) -> None:
    """Lay a fixture document out as files under root, readable through --root.

    dev/cpu/N/msr and dev/cpu/N/cpuid become sparse plain files with each recorded value
    at its offset. A plain file cannot stand for adjacent registers (reads at nearby
    offsets overlap): MSRs 0x3a and 0x480 fit, and of the CPUID leaves only those in
    cpuid_leaves are written (leaf 0 would overlap leaf 1). A recorded errno becomes a
    missing value (a short read) here.
    """
    from vmxprobe.host.fixture import parse

    fx = parse(doc)
    for path, text in fx.files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    for path, data in fx.blobs.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    for path, names in fx.dirs.items():
        full = os.path.join(root, path)
        os.makedirs(full, exist_ok=True)
        for entry in names:
            target = os.path.join(full, entry)
            if os.path.lexists(target):
                continue
            if re.fullmatch(r"node\d+", entry) and "/cpu/cpu" in "/" + path:
                os.symlink(f"../../node/{entry}", target)
            else:
                os.makedirs(target, exist_ok=True)
    per_cpu: dict[int, dict[str, list]] = {}
    for index, results in fx.msr.items():
        for cpu, r in results.items():
            if r.ok:
                per_cpu.setdefault(cpu, {}).setdefault("msr", []).append((index, struct.pack("<Q", r.value)))
            else:
                per_cpu.setdefault(cpu, {}).setdefault("msr", [])
    for (leaf, sub), results in fx.cpuid.items():
        if leaf not in cpuid_leaves:
            continue
        for cpu, r in results.items():
            if r.ok:
                per_cpu.setdefault(cpu, {}).setdefault("cpuid", []).append(
                    (leaf | sub << 32, struct.pack("<4I", *r.value))
                )
    for cpu, kinds in per_cpu.items():
        d = os.path.join(root, "dev", "cpu", str(cpu))
        os.makedirs(d, exist_ok=True)
        for kind, chunks in kinds.items():
            with open(os.path.join(d, kind), "wb") as f:
                for offset, data in chunks:
                    f.seek(offset)
                    f.write(data)
