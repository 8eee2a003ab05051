"""Tests for vmxprobe.kernel.kvm_intel: loading kvm_intel in the kernel's order, by release,
with the messages quoted as the kernel logs them.

6.1 (Debian 6.1.192): vmx_init() -> kvm_x86_vendor_init() (arch/x86/kvm/x86.c) checks the
loading CPU's CPUID (cpu_has_kvm_support()) then boot_cpu_data (vmx_disabled_by_bios()),
printing "kvm: no hardware support for '%s'" / "kvm: support for '%s' disabled by bios";
kvm_init() (virt/kvm/kvm_main.c) runs hardware_setup() then, for each online CPU
ascending, kvm_arch_check_processor_compat() (CR4, then vmx_check_processor_compat():
"kvm: VMX is disabled on CPU %d", "kvm: CPU %d feature inconsistency!"). vmx.c has no
pr_fmt in 6.1: the strings carry "kvm: " themselves.

6.3+: vmx_init() asks kvm_is_vmx_supported() on the loading CPU ("VMX not supported by CPU
%d", "VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU %d"), and
kvm_x86_vendor_init() runs hardware_setup() and the per-CPU check
(kvm_x86_check_processor_compatibility(): CR4, __kvm_is_vmx_supported(), "Failed to setup
VMCS config on CPU %d", "Inconsistent VMCS config on CPU %d"), every line led by pr_fmt's
"kvm_intel: ". 7.1 splits the support check: "VMX not fully enabled on CPU %d.  Check
kernel logs and/or BIOS" when X86_FEATURE_VMX is gone.

Hosts carry published registers (tests/published.py) changed one register at a time."""

import pytest

from tests import published
from tests.published import setreg
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.sources import CpuidReading, FixtureHost

FC, BASIC, PROC2, PIN = 0x3A, 0x480, 0x48B, 0x481


def host(release, n=8, name="tiger-lake-h", **kw):
    fx = published.host(name, n, **kw)
    fx.files["proc/sys/kernel/osrelease"] = release + "\n"
    return fx


def scan(fx):
    report, v = run(FixtureHost(fx), fx)
    return report, v, "\n".join(report["verdict"]["reasons"])


def no_cpuid_vmx(fx, cpu):
    eax, ebx, ecx, edx = fx.cpuid[(1, 0)][cpu].value
    fx.cpuid[(1, 0)][cpu] = CpuidReading(value=(eax, ebx, ecx & ~(1 << 5), edx))


def test_the_published_host_loads_on_every_release():
    for release in ("6.1.0-57-amd64", "6.12.0-1-amd64", "6.18.0", "7.1.0"):
        report, v, r = scan(host(release))
        assert v.kvm_intel == "ok" and v.ready, (release, r)
        assert "have VMX enabled, the same CR4 features and the same vmcs_config" in r


# --- 1. the support check on the loading CPU ---------------------------------------------


def test_6_1_loading_cpu_without_cpuid_vmx():
    # x86.c kvm_x86_vendor_init() (6.1): "if (!ops->cpu_has_kvm_support()) {
    # pr_err_ratelimited("kvm: no hardware support for '%s'\n", ...); return -EOPNOTSUPP; }"
    fx = host("6.1.0-57-amd64")
    no_cpuid_vmx(fx, 0)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EOPNOTSUPP" and v.kvm_intel_stage == "init"
    assert "\"kvm: no hardware support for 'kvm_intel'\"" in r


@pytest.mark.parametrize(
    "spoil",
    [
        lambda fx: setreg(fx, FC, 6, 0x1),  # firmware locked VMX off on CPU 6
        lambda fx: setreg(fx, FC, 6, errno="EIO"),  # IA32_FEATURE_CONTROL faults on CPU 6
        lambda fx: no_cpuid_vmx(fx, 6),  # CPU 6 has no VMX at all
    ],
)
def test_6_1_any_cpu_without_vmx_refuses_at_init_through_boot_cpu_data(spoil):
    # vmx.c vmx_disabled_by_bios() (6.1): "!boot_cpu_has(X86_FEATURE_MSR_IA32_FEAT_CTL) ||
    # !boot_cpu_has(X86_FEATURE_VMX)", and identify_cpu() ANDed CPU 6 into boot_cpu_data.
    # The loading CPU's own CPUID passes: the bios message, whatever CPU loads it.
    fx = host("6.1.0-57-amd64")
    spoil(fx)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EOPNOTSUPP" and v.kvm_intel_stage == "init"
    assert "CPU(s) 6 lack X86_FEATURE_VMX, so boot_cpu_data" in r
    assert "\"kvm: support for 'kvm_intel' disabled by bios\" (-EOPNOTSUPP)" in r
    assert "if modprobe runs on CPU" not in r  # 6.1 asks boot_cpu_data, not the loading CPU
    assert "CR4" not in r  # refused before the per-CPU checks
    assert report["plan"]["verified"]["kernel_allocates"] is False  # before alloc_kvm_area()


@pytest.mark.parametrize(
    "release,spoil,message",
    [
        # vmx.c __kvm_is_vmx_supported() (6.3+): "if (!(cpuid_ecx(1) & feature_bit(VMX))) {
        # pr_err("VMX not supported by CPU %d\n", cpu); ..."
        ("6.12.0-1-amd64", no_cpuid_vmx, "kvm_intel: VMX not supported by CPU 0"),
        # "!this_cpu_has(X86_FEATURE_MSR_IA32_FEAT_CTL) || !this_cpu_has(X86_FEATURE_VMX)"
        (
            "6.12.0-1-amd64",
            lambda fx, cpu: setreg(fx, FC, cpu, 0x1),
            "kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 0",
        ),
        (
            "6.3.13",
            lambda fx, cpu: setreg(fx, FC, cpu, 0x1),
            "kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 0",
        ),
    ],
)
def test_6_3_loading_cpu_without_vmx(release, spoil, message):
    fx = host(release)
    spoil(fx, 0)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EOPNOTSUPP" and v.kvm_intel_stage == "init"
    assert f'kvm_intel logs "{message}" (-EOPNOTSUPP)' in r


def test_7_1_boot_cpu_without_vmx_fails_at_boot_and_every_cpu_loses_the_flag():
    # arch/x86/virt/hw.c (7.1): x86_vmx_init() fails on the boot CPU and clears
    # X86_FEATURE_VMX everywhere; vmx.c __kvm_is_vmx_supported() then says
    # "VMX not fully enabled on CPU %d.  Check kernel logs and/or BIOS" (two spaces).
    fx = host("7.1.0")
    setreg(fx, FC, 0, 0x1)
    report, v, r = scan(fx)
    assert v.x86_vmx_init == "EOPNOTSUPP" and v.kvm_intel == "EOPNOTSUPP"
    assert '"kvm_intel: VMX not fully enabled on CPU N.  Check kernel logs and/or BIOS"' in r


# --- 2. hardware_setup(): setup_vmcs_config() on the loading CPU -------------------------


@pytest.mark.parametrize("release", ["6.1.0-57-amd64", "6.12.0-1-amd64"])
def test_a_loading_cpu_whose_config_fails_stops_in_hardware_setup(release):
    # hardware_setup(): "if (setup_vmcs_config(&vmcs_config, &vmx_capability) < 0) return
    # -EIO;" before alloc_kvm_area() and before any per-CPU check; nothing printed.
    fx = host(release)
    for cpu in range(8):
        setreg(fx, BASIC, cpu, published.PUBLISHED["tiger-lake-h"]["msrs"][BASIC] | 1 << 48)
    setreg(fx, FC, 5, 0x5 | 1 << 20)  # a difference the per-CPU checks would report
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO" and v.kvm_intel_stage == "setup"
    assert "kvm_intel stops at the loading CPU, in hardware_setup()" in r
    assert "Failed to setup" not in r and "Inconsistent" not in r
    assert report["plan"]["verified"]["kernel_allocates"] is False


# --- 3. the per-CPU check, online CPUs ascending ------------------------------------------


@pytest.mark.parametrize(
    "release,message",
    [
        ("6.3.13", "kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 6"),
        ("6.12.0-1-amd64", "kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 6"),
        ("7.1.0", "kvm_intel: VMX not fully enabled on CPU 6.  Check kernel logs and/or BIOS"),
    ],
)
def test_6_3_one_cpu_locked_off_is_a_silent_eio_on_cpu_0_or_eopnotsupp_on_that_cpu(release, message):
    # kvm_x86_check_processor_compatibility() (6.3+): CPU 0's CR4 reserved bits keep VMXE
    # while boot_cpu_data lost it to CPU 6: -EIO with no message, at CPU 0. Had modprobe
    # run on CPU 6, kvm_is_vmx_supported() would have refused first, with its message.
    fx = host(release)
    setreg(fx, FC, 6, 0x1)
    report, v, r = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO" and v.kvm_intel_stage == "compat"
    assert "CPU 0 has VMX (CR4.VMXE; CPU(s) 6 lack it)" in r
    assert "loading kvm_intel stops at the first of these, CPU 0" in r
    assert f'if modprobe runs on CPU 6 instead, kvm_is_vmx_supported() refuses there first: "{message}"' in r


def test_7_1_a_faulting_feature_control_keeps_the_old_message():
    # 7.1 __kvm_is_vmx_supported(): "!this_cpu_has(X86_FEATURE_MSR_IA32_FEAT_CTL)" keeps
    # "VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU %d"; init_ia32_feat_ctl()
    # never sets that flag when rdmsrl_safe() fails.
    fx = host("7.1.0")
    setreg(fx, FC, 6, errno="EIO")
    report, v, r = scan(fx)
    assert '"kvm_intel: VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 6"' in r


def test_6_3_a_cpu_without_cpuid_vmx_is_named_for_the_other_loading_cpu():
    fx = host("6.12.0-1-amd64")
    no_cpuid_vmx(fx, 3)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO"
    assert 'refuses there first: "kvm_intel: VMX not supported by CPU 3"' in r


@pytest.mark.parametrize(
    "release,message",
    [
        # 6.1 vmx_check_processor_compat(): "if (setup_vmcs_config(&vmcs_conf, &vmx_cap) < 0)
        # return -EIO;": nothing of its own.
        ("6.1.0-57-amd64", "kvm_intel logs no message of its own (-EIO)"),
        # 6.3+: pr_err("Failed to setup VMCS config on CPU %d\n", cpu)
        ("6.12.0-1-amd64", 'kvm_intel logs "kvm_intel: Failed to setup VMCS config on CPU 3" (-EIO)'),
    ],
)
def test_a_cpu_whose_own_config_fails(release, message):
    fx = host(release)
    setreg(fx, BASIC, 3, published.PUBLISHED["tiger-lake-h"]["msrs"][BASIC] | 1 << 48)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO" and v.kvm_intel_stage == "compat"
    assert "CPU 3: setup_vmcs_config() fails: IA32_VMX_BASIC bit 48" in r
    assert message in r


@pytest.mark.parametrize(
    "release,message",
    [
        # 6.1: printk(KERN_ERR "kvm: CPU %d feature inconsistency!\n", smp_processor_id())
        ("6.1.0-57-amd64", '"kvm: CPU 5 feature inconsistency!"'),
        # 6.3+: pr_err("Inconsistent VMCS config on CPU %d\n", cpu)
        ("6.12.0-1-amd64", '"kvm_intel: Inconsistent VMCS config on CPU 5"'),
    ],
)
def test_a_cpu_whose_config_differs(release, message):
    # vmx_check_processor_compat(): memcmp(&vmcs_config, &vmcs_conf, ...) against the
    # loading CPU's. TSC scaling (secondary bit 25) is a control KVM requests.
    fx = host(release)
    setreg(fx, PROC2, 5, published.PUBLISHED["tiger-lake-h"]["msrs"][PROC2] & ~(1 << 57))
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "cpu_based_2nd_exec_ctrl SECONDARY_EXEC_TSC_SCALING (bit 25): CPU 0 1, CPU 5 0" in r
    assert f"kvm_intel logs {message} (-EIO)" in r


def test_a_difference_kvm_never_requests_is_reported_not_refused():
    # SECONDARY_EXEC_MODE_BASED_EPT_EXEC (22) is not in KVM_OPTIONAL_VMX_SECONDARY_VM_EXEC_CONTROL:
    # adjust_vmx_controls() leaves it out on both CPUs, memcmp() sees nothing.
    fx = host("6.12.0-1-amd64")
    setreg(fx, PROC2, 5, published.PUBLISHED["tiger-lake-h"]["msrs"][PROC2] & ~(1 << 54))
    report, v, r = scan(fx)
    assert v.kvm_intel == "ok" and v.ready
    assert "CPU(s) 5: IA32_VMX_PROCBASED_CTLS2" in r and "reported, not refused" in r


def test_the_first_failing_cpu_in_ascending_order_wins():
    # kvm_init() (6.1) / kvm_x86_vendor_init() (6.3+): for_each_online_cpu(cpu) {
    # smp_call_function_single(cpu, ...); if (r < 0) goto out; }: CPU 2's own config
    # fails before CPU 5's differs.
    fx = host("6.12.0-1-amd64")
    setreg(fx, PROC2, 5, published.PUBLISHED["tiger-lake-h"]["msrs"][PROC2] & ~(1 << 57))
    setreg(fx, BASIC, 2, published.PUBLISHED["tiger-lake-h"]["msrs"][BASIC] | 1 << 48)
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "kvm_intel: Failed to setup VMCS config on CPU 2" in r
    assert "kvm_intel: Inconsistent VMCS config on CPU 5" in r
    assert "loading kvm_intel stops at the first of these, CPU 2" in r


def test_per_cpu_cpuid_inputs_reach_the_config():
    # setup_vmcs_config() runs raw CPUID on each CPU: cpu_has_sgx() (leaves 0, 0x12) for
    # ENCLS exiting, and CPUID.01H:EAX for the broken preemption timer list.
    fx = host("6.12.0-1-amd64", name="skylake-u", n=4)
    fx.cpuid[(0x12, 0)] = {c: CpuidReading(value=(1 if c == 2 else 0, 0, 0, 0)) for c in range(4)}
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "SECONDARY_EXEC_ENCLS_EXITING (bit 15): CPU 0 0, CPU 2 1" in r
    fx = host("6.12.0-1-amd64", name="skylake-u", n=4)
    eax, ebx, ecx, edx = fx.cpuid[(1, 0)][1].value
    fx.cpuid[(1, 0)][1] = CpuidReading(value=(0x000306A8, ebx, ecx, edx))  # Xeon E3-1220 V2
    report, v, r = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "PIN_BASED_VMX_PREEMPTION_TIMER (bit 6): CPU 0 1, CPU 1 0" in r


@pytest.mark.parametrize("nested,refused", [(None, True), ("Y", True), ("N", False)])
def test_cr4_fixed1_differs_only_with_nested(nested, refused):
    # nested.c nested_vmx_setup_ctls_msrs(): rdmsrl(MSR_IA32_VMX_CR4_FIXED1) into
    # vmcs_conf->nested, compared only "if (nested)" (kvm_intel.nested, default 1).
    fx = host("6.12.0-1-amd64")
    if nested is not None:
        fx.files["sys/module/kvm_intel/parameters/nested"] = nested + "\n"
    setreg(fx, 0x489, 4, published.PUBLISHED["tiger-lake-h"]["msrs"][0x489] & ~(1 << 23))
    report, v, r = scan(fx)
    assert (v.kvm_intel == "EIO") == refused
    if refused:
        assert "nested_cr4_fixed1 (from 0x489)" in r


def test_error_on_inconsistent_vmcs_config_off_loads_with_the_warning():
    # error_on_inconsistent_vmcs_config=N: the pair is cleared on every CPU, not refused.
    fx = host("6.12.0-1-amd64")
    fx.files["sys/module/kvm_intel/parameters/error_on_inconsistent_vmcs_config"] = "N\n"
    exit_ = published.PUBLISHED["tiger-lake-h"]["msrs"][0x483]
    for cpu in range(8):
        setreg(fx, 0x483, cpu, exit_ & ~(1 << 44))  # no VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL
    report, v, r = scan(fx)
    assert v.kvm_intel == "ok"
    assert 'setup_vmcs_config() warns "Inconsistent VM-Entry/VM-Exit pair, entry = 2000, exit = 0"' in r
    fx.files.pop("sys/module/kvm_intel/parameters/error_on_inconsistent_vmcs_config")
    assert scan(fx)[1].kvm_intel == "EIO"


@pytest.mark.parametrize(
    "release,words",
    [
        # 6.1 kvm_init(): the compat loop runs once, at load; CPUHP_AP_KVM_STARTING only
        # enables hardware on a CPU that comes online later.
        ("6.1.0-57-amd64", "is not checked by this kernel when it comes online"),
        # 6.3+ ("KVM: x86: Do compatibility checks when onlining CPU").
        ("6.12.0-1-amd64", "meets KVM's compatibility check when it comes online"),
    ],
)
def test_offline_cpus(release, words):
    fx = host(release, n=4, possible=range(8))
    report, v, r = scan(fx)
    assert v.kvm_intel == "ok"
    assert f"CPU(s) 4-7 are not online, so not read: each gets its root VMCS page and {words}" in r


# --- held to a real kernel's log ----------------------------------------------------------

BOCHS_REFUSED = ["bochs-lock-ap-off-smp2", "bochs-lock-smx-only", "bochs-lock-vmx-off"]


@pytest.mark.parametrize("name", BOCHS_REFUSED)
def test_every_line_the_6_1_kernel_logged_is_quoted(name):
    # fixtures/bochs-*.json: registers read by Debian's 6.1.192 on an emulated Intel CPU,
    # with what that kernel then logged when kvm_intel was loaded
    # (provenance.kernel_outcome.log: feat_ctl.c's "x86/cpu: " lines and x86.c's "kvm: ").
    fx = fixture.load(name)
    outcome = fx.provenance["kernel_outcome"]
    report, v, r = scan(fx)
    assert v.kvm_intel == outcome["kvm_intel"] == "EOPNOTSUPP"
    assert outcome["log"]
    for line in outcome["log"]:
        assert f'"{line}"' in r, line
