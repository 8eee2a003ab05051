"""Tests for vmxprobe.kernel.cr4_reserved_bits: KVM's per-CPU CR4 check,
kvm_arch_check_processor_compat() (arch/x86/kvm/x86.c, 6.1) and
kvm_x86_check_processor_compatibility() (6.3+), which refuse a CPU (-EIO, no message) when
__cr4_reserved_bits(cpu_has, c) (arch/x86/kvm/x86.h) differs from boot_cpu_data's. Since
identify_cpu() (arch/x86/kernel/cpu/common.c) ANDs each CPU's capability words into
boot_cpu_data, every CPU that has a feature some other CPU lacks differs from it.

Hosts are synthetic (tests/hostgen.py) with CPUID leaves 1, 7.0 and 7.1 set per CPU from
SDM bit positions, read as the kernel's get_cpu_cap() reads them."""

import pytest

from tests import hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading
from vmxprobe.kernel import cr4_reserved_bits as cr4
from vmxprobe.kernel.release import model_for

EAX, EBX, ECX, EDX = range(4)

# x86.h __cr4_reserved_bits(): feature -> (CPUID leaf, subleaf, register, bit) of the
# X86_FEATURE_* the kernel reads it from (asm/cpufeatures.h words 4, 9, 16, 18, 12), the
# CR4 bit it reserves, and the /proc/cpuinfo name.
FEATURES = {
    "XSAVE": ((1, 0, ECX, 26), "OSXSAVE", "xsave"),
    "SMEP": ((7, 0, EBX, 7), "SMEP", "smep"),
    "SMAP": ((7, 0, EBX, 20), "SMAP", "smap"),
    "FSGSBASE": ((7, 0, EBX, 0), "FSGSBASE", "fsgsbase"),
    "PKU": ((7, 0, ECX, 3), "PKE", "pku"),
    "LA57": ((7, 0, ECX, 16), "LA57", "la57"),
    "UMIP": ((7, 0, ECX, 2), "UMIP", "umip"),
    "PCID": ((1, 0, ECX, 17), "PCIDE", "pcid"),
    "LAM": ((7, 1, EAX, 26), "LAM_SUP", "lam"),  # 6.8
    "SHSTK": ((7, 0, ECX, 7), "CET", None),  # 6.18, with IBT: reserved only without both
    "IBT": ((7, 0, EDX, 20), "CET", "ibt"),
}


def host(n=4, release="6.12.0-1-amd64", has=None, flags=None, leaf7=True, max_leaf=0x16):
    """n CPUs; has[cpu] lists the features that CPU's CPUID reports; flags[cpu] replaces
    its /proc/cpuinfo flags line. leaf7=False leaves leaves 7.x unread (no cpuid answer)."""
    fx = fixture.parse(hostgen.synthetic(n, 1))
    fx.files["proc/sys/kernel/osrelease"] = release + "\n"
    has = has or {}
    regs = {}
    for cpu in range(n):
        r = {(1, 0): [0x50654, 0, 1 << 5, 0], (7, 0): [1, 0, 0, 0], (7, 1): [0, 0, 0, 0]}
        for name in has.get(cpu, ()):
            (leaf, sub, reg, bit), _, _ = FEATURES[name]
            r[(leaf, sub)][reg] |= 1 << bit
        regs[cpu] = r
    leaves = [(0, 0), (1, 0)] + ([(7, 0), (7, 1)] if leaf7 else [])
    for key in leaves[1:]:
        fx.cpuid[key] = {c: CpuidReading(value=tuple(regs[c][key])) for c in range(n)}
    fx.cpuid[(0, 0)] = {c: CpuidReading(value=(max_leaf, *hostgen.INTEL)) for c in range(n)}
    # By default each CPU's flags line shows what its CPUID has, as the kernel prints it.
    shown = {
        cpu: " ".join(["fpu msr lm vmx"] + [FEATURES[f][2] for f in has.get(cpu, ()) if FEATURES[f][2]])
        for cpu in range(n)
    }
    shown.update(flags or {})
    if shown:
        blocks = fx.files["proc/cpuinfo"].strip("\n").split("\n\n")
        for cpu, line in shown.items():
            blocks[cpu] = "\n".join(
                f"flags\t\t: {line}" if b.startswith("flags") else b for b in blocks[cpu].split("\n")
            )
        fx.files["proc/cpuinfo"] = "\n\n".join(blocks) + "\n"
    return fx


def check(fx):
    scan = read_host(FixtureHost(fx))
    return cr4.check(scan, model_for(scan.kernel))


def everyone_but(n, cpu, *names):
    return {c: names for c in range(n) if c != cpu}


@pytest.mark.parametrize(
    "feature,release",
    [
        ("XSAVE", "6.1.0-57-amd64"),
        ("SMEP", "6.1.0-57-amd64"),
        ("SMAP", "6.1.0-57-amd64"),
        ("FSGSBASE", "6.1.0-57-amd64"),
        ("PKU", "6.1.0-57-amd64"),
        ("LA57", "6.1.0-57-amd64"),
        ("UMIP", "6.1.0-57-amd64"),
        ("PCID", "6.1.0-57-amd64"),
        ("LAM", "6.8.0-45-generic"),
        ("SHSTK", "6.18.0"),
        ("IBT", "6.18.0"),
    ],
)
def test_a_feature_one_cpu_lacks_refuses_the_lowest_cpu_that_has_it(feature, release):
    # CPU 2 lacks it; boot_cpu_data (the AND) lacks it; CPUs 0, 1, 3 differ from it, and the
    # per-CPU loop (online CPUs ascending) stops at CPU 0.
    c = check(host(4, release, everyone_but(4, 2, feature)))
    cr4_bit = FEATURES[feature][1]
    assert [(s.cr4_bit, s.with_it, s.without) for s in c.splits] == [(cr4_bit, (0, 1, 3), (2,))]
    assert c.refused == (0, 1, 3)
    assert cr4_bit in c.checked


def test_when_cpu_0_lacks_it_cpu_0_passes_and_the_next_one_is_refused():
    # CPU 0's reserved bits equal boot_cpu_data's (both lack SMAP): the first CPU refused
    # is the lowest that has it.
    c = check(host(4, has=everyone_but(4, 0, "SMAP")))
    assert c.refused == (1, 2, 3)


@pytest.mark.parametrize(
    "feature,before,since",
    [
        # x86.h: X86_FEATURE_LAM / X86_CR4_LAM_SUP from 6.8 (KVM's LAM support).
        ("LAM", "6.7.12", "6.8.0-45-generic"),
        # X86_FEATURE_SHSTK || X86_FEATURE_IBT / X86_CR4_CET from 6.18 (KVM's CET support).
        ("SHSTK", "6.17.3", "6.18.0"),
        ("IBT", "6.17.3", "6.18.0"),
    ],
)
def test_later_features_are_checked_only_from_their_release(feature, before, since):
    has = everyone_but(4, 3, feature)
    assert check(host(4, before, has)).splits == ()
    assert FEATURES[feature][1] not in check(host(4, before, has)).checked
    assert check(host(4, since, has)).refused == (0, 1, 2)


def test_cet_is_reserved_only_without_both_shstk_and_ibt():
    # "if (!__cpu_has(__c, X86_FEATURE_SHSTK) && !__cpu_has(__c, X86_FEATURE_IBT))
    # __reserved_bits |= X86_CR4_CET": one CPU with each gives the same CR4 set...
    assert check(host(2, "6.18.0", {0: ("SHSTK",), 1: ("IBT",)})).splits == ()
    # ... and one with either against one with neither does not.
    c = check(host(2, "6.18.0", {0: ("IBT",)}))
    assert [(s.cr4_bit, s.features, s.with_it) for s in c.splits] == [("CET", "SHSTK/IBT", (0,))]


def test_features_agreeing_on_every_cpu_never_refuse():
    names = ("XSAVE", "SMEP", "SMAP", "FSGSBASE", "PKU", "LA57", "UMIP", "PCID", "LAM", "IBT")
    c = check(host(4, "7.1.0", {cpu: names for cpu in range(4)}))
    assert c.splits == () and c.refused == ()
    assert c.sources == tuple((cpu, cr4.FROM_CPUID) for cpu in range(4))


def test_leaf_7_beyond_the_highest_leaf_counts_as_absent():
    # get_cpu_cap(): leaf 7 only "if (c->cpuid_level >= 0x00000007)": a CPU whose leaf 0
    # says 6 has none of its features, whatever the device answers there.
    fx = host(2, has={0: ("SMEP",), 1: ("SMEP",)})
    fx.cpuid[(0, 0)][1] = CpuidReading(value=(0x06, *hostgen.INTEL))
    c = check(fx)
    assert [(s.cr4_bit, s.with_it, s.without) for s in c.splits] == [("SMEP", (0,), (1,))]


def test_subleaf_1_only_when_leaf_7_offers_it():
    # "if (eax >= 1) cpuid_count(0x00000007, 1, ...)": with leaf 7 EAX 0, CPUID_7_1_EAX is
    # never read, so LAM is absent there.
    fx = host(2, "6.8.0-45-generic", {0: ("LAM",), 1: ("LAM",)})
    v = fx.cpuid[(7, 0)][1].value
    fx.cpuid[(7, 0)][1] = CpuidReading(value=(0, *v[1:]))
    c = check(fx)
    assert [(s.cr4_bit, s.with_it, s.without) for s in c.splits] == [("LAM_SUP", (0,), (1,))]


def test_without_the_cpuid_device_the_kernels_cpuinfo_flags_decide_and_it_is_said():
    # The flags line prints cpu_data(cpu).x86_capability: the kernel's own per-CPU view.
    fx = host(4, leaf7=False, flags={0: "fpu vmx smap", 1: "fpu vmx smap", 2: "fpu vmx", 3: "fpu vmx smap"})
    c = check(fx)
    assert c.sources == tuple((cpu, cr4.FROM_CPUINFO) for cpu in range(4))
    assert c.cpuinfo_cpus == (0, 1, 2, 3)
    assert [(s.cr4_bit, s.with_it, s.without) for s in c.splits] == [("SMAP", (0, 1, 3), (2,))]


def test_shstk_has_no_cpuinfo_name_so_cpuinfo_alone_cannot_tell_cet():
    # X86_FEATURE_SHSTK has no quoted name in 6.1's cpufeatures.h: not printed. With IBT
    # shown the CPU has CET; without it, the answer is not known, and nothing is refused.
    fx = host(2, "6.18.0", leaf7=False, flags={0: "fpu vmx ibt", 1: "fpu vmx"})
    assert check(fx).splits == ()


def test_neither_cpuid_nor_cpuinfo_leaves_the_cpu_unchecked():
    fx = host(2, leaf7=False)
    fx.files["proc/cpuinfo"] = ""
    c = check(fx)
    assert c.not_read == (0, 1) and c.splits == ()


def test_a_feature_the_kernel_cleared_everywhere_does_not_refuse():
    # setup_clear_cpu_cap() (clearcpuid=, nopku) clears the bit for every CPU through
    # apply_forced_caps(): raw CPUID differs, the kernel's flags do not.
    fx = host(4, has=everyone_but(4, 3, "PKU"), flags={cpu: "fpu vmx" for cpu in range(4)})
    c = check(fx)
    assert c.splits == () and c.masked == ("PKU",)
    # With the flag shown where CPUID has it, the split stands.
    fx = host(4, has=everyone_but(4, 3, "PKU"), flags={0: "fpu vmx pku", 1: "fpu vmx pku", 2: "fpu vmx pku"})
    assert check(fx).refused == (0, 1, 2)


def test_vmx_is_the_kernels_flag_after_feat_ctl():
    # X86_FEATURE_VMX in cpu_data(cpu) is what init_ia32_feat_ctl() left: CPUID has VMX on
    # all four, CPU 2's firmware locked it off (0x1), so CR4.VMXE is reserved there only.
    fx = host(4)
    fx.msr[0x3A][2] = MsrReading(value=0x1)
    c = check(fx)
    assert [(s.cr4_bit, s.with_it, s.without) for s in c.splits] == [("VMXE", (0, 1, 3), (2,))]


def test_vmx_through_kvm_intel_on_6_3_stops_at_cpu_0_with_no_message():
    # kvm_x86_vendor_init() (6.3+): for_each_online_cpu, the CR4 check first; CPU 0 keeps
    # VMX while boot_cpu_data lost it to CPU 2: -EIO, nothing printed.
    fx = host(4, "6.12.0-1-amd64")
    fx.msr[0x3A][2] = MsrReading(value=0x1)
    report, v = run(FixtureHost(fx), fx)
    assert v.kvm_intel == "EIO"
    reasons = "\n".join(report["verdict"]["reasons"])
    assert "CPU 0 has VMX (CR4.VMXE; CPU(s) 2 lack it)" in reasons
    assert "loading kvm_intel stops at the first of these, CPU 0" in reasons


def test_a_split_feature_through_kvm_intel_names_the_feature_and_the_cpus():
    fx = host(4, "6.1.0-57-amd64", everyone_but(4, 1, "UMIP"))
    report, v = run(FixtureHost(fx), fx)
    assert v.kvm_intel == "EIO"
    reasons = "\n".join(report["verdict"]["reasons"])
    assert "CPU 0 has UMIP (CR4.UMIP; CPU(s) 1 lack it)" in reasons
    assert "refuses it (-EIO, with no message)" in reasons
    assert "CPU 2 has UMIP" in reasons and "CPU 1 has UMIP" not in reasons


def test_cpuid_where_read_cpuinfo_elsewhere_and_the_verdict_says_which():
    fx = host(4, has={c: ("SMEP",) for c in range(4)})
    fx.cpuid[(7, 0)][3] = CpuidReading(errno="EIO")
    c = check(fx)
    assert c.sources == ((0, "cpuid"), (1, "cpuid"), (2, "cpuid"), (3, "cpuinfo"))
    assert c.splits == ()  # CPU 3's flags line shows smep
    report, v = run(FixtureHost(fx), fx)
    reasons = "\n".join(report["verdict"]["reasons"])
    assert "CPU(s) 3: the CR4 check's features were taken from /proc/cpuinfo flags" in reasons
    assert v.kvm_intel == "ok"
