#!/usr/bin/env python3
"""Compose the bundled fixtures that stand for host kinds not yet recorded from a real
machine. Every composed fixture says so (provenance.origin = "composed") and names, for
each register value, where it was published or which documented behaviour produces it.

Run from anywhere: python3 scripts/compose_fixtures.py  (rewrites fixtures/<name>.json)
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hostgen import (AMD, ECX_HYPERVISOR, ECX_SMX, ECX_VMX, FEAT_CTL, KVM_NESTED,  # noqa: E402
                     KVM_SIG, KVM_VMX, VMXCAPS, Reading, compose, v)

FIXTURES = [
    compose(
        "intel-2s-ready",
        "Intel two-socket host, 2 nodes x 16 CPUs, VMX enabled and locked: ready",
        [{"what": "IA32_VMX_BASIC 0x00da040000000012 (Haswell row)", "url": VMXCAPS},
         {"what": "IA32_FEATURE_CONTROL 0x5 = lock | VMX outside SMX, the value firmware with VT-x on leaves", "url": FEAT_CTL}],
        "Composed, not recorded. Topology: 2 sockets x 8 cores x 2 threads, threads "
        "numbered as Linux does on such hosts (siblings 16 apart), so each node's cpulist "
        "is split. CPUID leaf 1 ECX carries only the VMX and SMX bits; the other feature "
        "bits are not meaningful. The Haswell VMX_BASIC value is VmxCaps' client-part row, "
        "used here for a server part of the same generation.",
        nodes={0: list(range(0, 8)) + list(range(16, 24)), 1: list(range(8, 16)) + list(range(24, 32))},
        signature=0x306F2, ecx=ECX_VMX | ECX_SMX, model_name="Intel(R) Xeon(R) CPU (composed)",
        flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 ht syscall nx lm vmx smx est sse4_1 sse4_2 x2apic aes xsave avx",
        feat_ctl=v(0x5), vmx_basic=v(0x00DA040000000012)),
    compose(
        "intel-fw-locked-off",
        "Intel desktop whose firmware locked VMX off (IA32_FEATURE_CONTROL = 0x1): not ready",
        [{"what": "IA32_VMX_BASIC 0x00da040000000004 (Skylake row)", "url": VMXCAPS},
         {"what": "locked with VMX off: init_ia32_feat_ctl() clears X86_FEATURE_VMX", "url": FEAT_CTL}],
        "Composed, not recorded. One socket, 4 cores x 2 threads, one node. The vmx flag is "
        "absent from /proc/cpuinfo, as Linux >= 5.6 shows it when firmware locks VMX off.",
        nodes={0: list(range(8))}, signature=0x506E3, ecx=ECX_VMX | ECX_SMX,
        model_name="Intel(R) Core(TM) CPU (composed)",
        flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 ht syscall nx lm smx est sse4_1 sse4_2 x2apic aes xsave avx avx2",
        feat_ctl=v(0x1), vmx_basic=v(0x00DA040000000004)),
    compose(
        "kvm-nested-guest",
        "KVM guest with nested VMX: the VMX values are KVM's emulation (revision 0x11e57ed0)",
        [{"what": "IA32_VMX_BASIC = VMCS12_REVISION | TRUE_CTLS | size 4096 | WB | INOUT, from nested_vmx_setup_basic()", "url": KVM_NESTED},
         {"what": "IA32_FEATURE_CONTROL 0x5: QEMU passes lock | VMX outside SMX to the guest firmware (fw_cfg etc/msr_feature_control)", "url": KVM_VMX}],
        "Composed from KVM's source, not recorded: the value KVM reports to an L1 guest when "
        "the host CPU supports INS/OUTS exit information. 4 vCPUs, one node.",
        nodes={0: [0, 1, 2, 3]}, signature=0x50654, ecx=ECX_VMX | ECX_HYPERVISOR,
        model_name="Intel Xeon Processor (Skylake, IBRS) (composed)",
        flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 ss syscall nx lm vmx sse4_1 sse4_2 x2apic hypervisor",
        feat_ctl=v(0x5), vmx_basic=v(0x00D8100011E57ED0), hypervisor=KVM_SIG),
    compose(
        "kvm-guest-no-nested",
        "KVM guest without nested VMX: CPUID hides VMX and IA32_VMX_BASIC faults",
        [{"what": "IA32_VMX_BASIC read #GPs (EIO) when the guest has no VMX in CPUID (vmx_get_msr)", "url": KVM_VMX},
         {"what": "IA32_FEATURE_CONTROL 0x1: the guest kernel locks it at boot without VMX", "url": FEAT_CTL}],
        "Composed from KVM's and Linux's documented behaviour, not recorded. 2 vCPUs, one node.",
        nodes={0: [0, 1]}, signature=0x50654, ecx=ECX_HYPERVISOR,
        model_name="Intel Xeon Processor (Skylake, IBRS) (composed)",
        flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 ss syscall nx lm sse4_1 sse4_2 x2apic hypervisor",
        feat_ctl=v(0x1), vmx_basic=Reading(errno="EIO"), hypervisor=KVM_SIG),
    compose(
        "amd-host",
        "AMD host: no VMX (SVM instead); both Intel MSRs fault",
        [{"what": "IA32_FEATURE_CONTROL and IA32_VMX_BASIC do not exist on AMD CPUs: rdmsr #GPs (EIO)", "url": "https://github.com/torvalds/linux/blob/master/arch/x86/kernel/msr.c"}],
        "Composed, not recorded. One socket, 8 CPUs, one node.",
        nodes={0: list(range(8))}, vendor=AMD, signature=0x800F82, ecx=0,
        model_name="AMD Ryzen (composed)",
        flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush "
              "mmx fxsr sse sse2 ht syscall nx lm svm sse4_1 sse4_2 aes xsave avx avx2",
        feat_ctl=Reading(errno="EIO"), vmx_basic=Reading(errno="EIO")),
]


def main():
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
    for doc in FIXTURES:
        with open(os.path.join(out, doc["name"] + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote fixtures/{doc['name']}.json")


if __name__ == "__main__":
    main()
