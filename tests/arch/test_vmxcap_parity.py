"""Parity with QEMU's scripts/kvm/vmxcap: every field vmxcap prints has a decoded
counterpart in our report with the same value.

vmxcap (read for its facts: the field labels, the bit positions and how it turns a
control MSR into "yes/no/forced/default") reads CPU 0 only.  The table below maps each of
its labels to the bit(s) it reads and to our key; the expected value is computed here
from those bit positions alone, not with vmxprobe's decoders, then compared with what
`scan` reports for CPU 0 of:

* every bundled fixture that holds capability MSRs (the pub-* fixtures), and
* the published hosts of tests/published.py (sources cited there).

vmxcap's rules, restated: a control bit is "yes" if it may be 0 (allowed-0 clear) and may
be 1 (allowed-1 set), "no" if it may only be 0, "forced" if only 1, "default" when the
plain MSR forces it but the TRUE MSR lets it be 0; an MSR that cannot be read counts as
0.  The tertiary controls are allowed-1 only.  Ours: either / always_off / always_on, with
"default" = either in the effective (TRUE) settings and listed in default1.
"""

import pytest

from tests import published
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost

# (label, bit or (lo, hi), our key in the decoded IA32_VMX_BASIC)
BASIC = [
    ("Revision", (0, 30), "revision_id"),
    ("VMCS size", (32, 44), "vmcs_size"),
    ("VMCS restricted to 32 bit addresses", 48, "phys_addr_32bit"),
    ("Dual-monitor support", 49, "dual_monitor"),
    ("VMCS memory type", (50, 53), "memory_type"),
    ("INS/OUTS instruction information", 54, "ins_outs"),
    ("IA32_VMX_TRUE_*_CTLS support", 55, "true_controls"),
    ("Skip checks on event error code", 56, "no_hw_error_code_cc"),
]

# (section, plain MSR, TRUE MSR or None, our group, {bit: (vmxcap label, our control)})
CONTROLS = [
    (
        "pin-based controls",
        0x481,
        0x48D,
        "pinbased",
        {
            0: ("External interrupt exiting", "external_interrupt_exiting"),
            3: ("NMI exiting", "nmi_exiting"),
            5: ("Virtual NMIs", "virtual_nmis"),
            6: ("Activate VMX-preemption timer", "activate_vmx_preemption_timer"),
            7: ("Process posted interrupts", "process_posted_interrupts"),
        },
    ),
    (
        "primary processor-based controls",
        0x482,
        0x48E,
        "procbased",
        {
            2: ("Interrupt window exiting", "interrupt_window_exiting"),
            3: ("Use TSC offsetting", "use_tsc_offsetting"),
            7: ("HLT exiting", "hlt_exiting"),
            9: ("INVLPG exiting", "invlpg_exiting"),
            10: ("MWAIT exiting", "mwait_exiting"),
            11: ("RDPMC exiting", "rdpmc_exiting"),
            12: ("RDTSC exiting", "rdtsc_exiting"),
            15: ("CR3-load exiting", "cr3_load_exiting"),
            16: ("CR3-store exiting", "cr3_store_exiting"),
            17: ("Activate tertiary controls", "activate_tertiary_controls"),
            19: ("CR8-load exiting", "cr8_load_exiting"),
            20: ("CR8-store exiting", "cr8_store_exiting"),
            21: ("Use TPR shadow", "use_tpr_shadow"),
            22: ("NMI-window exiting", "nmi_window_exiting"),
            23: ("MOV-DR exiting", "mov_dr_exiting"),
            24: ("Unconditional I/O exiting", "unconditional_io_exiting"),
            25: ("Use I/O bitmaps", "use_io_bitmaps"),
            27: ("Monitor trap flag", "monitor_trap_flag"),
            28: ("Use MSR bitmaps", "use_msr_bitmaps"),
            29: ("MONITOR exiting", "monitor_exiting"),
            30: ("PAUSE exiting", "pause_exiting"),
            31: ("Activate secondary control", "activate_secondary_controls"),
        },
    ),
    (
        "secondary processor-based controls",
        0x48B,
        None,
        "procbased2",
        {
            0: ("Virtualize APIC accesses", "virtualize_apic_accesses"),
            1: ("Enable EPT", "enable_ept"),
            2: ("Descriptor-table exiting", "descriptor_table_exiting"),
            3: ("Enable RDTSCP", "enable_rdtscp"),
            4: ("Virtualize x2APIC mode", "virtualize_x2apic_mode"),
            5: ("Enable VPID", "enable_vpid"),
            6: ("WBINVD exiting", "wbinvd_exiting"),
            7: ("Unrestricted guest", "unrestricted_guest"),
            8: ("APIC register emulation", "apic_register_virtualization"),
            9: ("Virtual interrupt delivery", "virtual_interrupt_delivery"),
            10: ("PAUSE-loop exiting", "pause_loop_exiting"),
            11: ("RDRAND exiting", "rdrand_exiting"),
            12: ("Enable INVPCID", "enable_invpcid"),
            13: ("Enable VM functions", "enable_vm_functions"),
            14: ("VMCS shadowing", "vmcs_shadowing"),
            15: ("Enable ENCLS exiting", "enable_encls_exiting"),
            16: ("RDSEED exiting", "rdseed_exiting"),
            17: ("Enable PML", "enable_pml"),
            18: ("EPT-violation #VE", "ept_violation_ve"),
            19: ("Conceal non-root operation from PT", "conceal_vmx_from_pt"),
            20: ("Enable XSAVES/XRSTORS", "enable_xsaves_xrstors"),
            22: ("Mode-based execute control (XS/XU)", "mode_based_execute_control_for_ept"),
            23: ("Sub-page write permissions", "sub_page_write_permissions_for_ept"),
            24: ("GPA translation for PT", "pt_uses_guest_physical_addresses"),
            25: ("TSC scaling", "use_tsc_scaling"),
            26: ("User wait and pause", "enable_user_wait_and_pause"),
            28: ("ENCLV exiting", "enable_enclv_exiting"),
        },
    ),
    (
        "VM-Exit controls",
        0x483,
        0x48F,
        "exit",
        {
            2: ("Save debug controls", "save_debug_controls"),
            9: ("Host address-space size", "host_address_space_size"),
            12: ("Load IA32_PERF_GLOBAL_CTRL", "load_ia32_perf_global_ctrl"),
            15: ("Acknowledge interrupt on exit", "acknowledge_interrupt_on_exit"),
            18: ("Save IA32_PAT", "save_ia32_pat"),
            19: ("Load IA32_PAT", "load_ia32_pat"),
            20: ("Save IA32_EFER", "save_ia32_efer"),
            21: ("Load IA32_EFER", "load_ia32_efer"),
            22: ("Save VMX-preemption timer value", "save_vmx_preemption_timer_value"),
            23: ("Clear IA32_BNDCFGS", "clear_ia32_bndcfgs"),
            24: ("Conceal VM exits from PT", "conceal_vmx_from_pt"),
            25: ("Clear IA32_RTIT_CTL", "clear_ia32_rtit_ctl"),
        },
    ),
    (
        "VM-Entry controls",
        0x484,
        0x490,
        "entry",
        {
            2: ("Load debug controls", "load_debug_controls"),
            9: ("IA-32e mode guest", "ia32e_mode_guest"),
            10: ("Entry to SMM", "entry_to_smm"),
            11: ("Deactivate dual-monitor treatment", "deactivate_dual_monitor_treatment"),
            13: ("Load IA32_PERF_GLOBAL_CTRL", "load_ia32_perf_global_ctrl"),
            14: ("Load IA32_PAT", "load_ia32_pat"),
            15: ("Load IA32_EFER", "load_ia32_efer"),
            16: ("Load IA32_BNDCFGS", "load_ia32_bndcfgs"),
            17: ("Conceal VM entries from PT", "conceal_vmx_from_pt"),
            18: ("Load IA32_RTIT_CTL", "load_ia32_rtit_ctl"),
        },
    ),
]

TERTIARY = (0x492, "procbased3", {4: ("Enable IPI virtualization", "ipi_virtualization")})

# (section, MSR, [(label, bit or (lo, hi), our field key)])
FIELDS = [
    (
        "Miscellaneous data",
        0x485,
        [
            ("VMX-preemption timer scale (log2)", (0, 4), "preemption_timer_rate"),
            ("Store EFER.LMA into IA-32e mode guest control", 5, "store_efer_lma"),
            ("HLT activity state", 6, "activity_hlt"),
            ("Shutdown activity state", 7, "activity_shutdown"),
            ("Wait-for-SIPI activity state", 8, "activity_wait_for_sipi"),
            ("PT in VMX operation", 14, "intel_pt_in_vmx"),
            ("IA32_SMBASE support", 15, "rdmsr_smbase_in_smm"),
            ("Number of CR3-target values", (16, 24), "cr3_target_count"),
            ("MSR-load/store count recommendation", (25, 27), "msr_list_size_code"),
            ("IA32_SMM_MONITOR_CTL[2] can be set to 1", 28, "smm_monitor_ctl_bit2"),
            ("VMWRITE to VM-exit information fields", 29, "vmwrite_any_field"),
            ("Inject event with insn length=0", 30, "inject_zero_length"),
            ("MSEG revision identifier", (32, 63), "mseg_revision"),
        ],
    ),
    (
        "VPID and EPT capabilities",
        0x48C,
        [
            ("Execute-only EPT translations", 0, "ept_execute_only"),
            ("Page-walk length 4", 6, "ept_page_walk_length_4"),
            ("Page-walk length 5", 7, "ept_page_walk_length_5"),
            ("Paging-structure memory type UC", 8, "ept_memory_type_uc"),
            ("Paging-structure memory type WB", 14, "ept_memory_type_wb"),
            ("2MB EPT pages", 16, "ept_2mb_pages"),
            ("1GB EPT pages", 17, "ept_1gb_pages"),
            ("INVEPT supported", 20, "invept"),
            ("EPT accessed and dirty flags", 21, "ept_accessed_dirty"),
            ("Advanced VM-exit information for EPT violations", 22, "ept_advanced_exit_info"),
            ("Single-context INVEPT", 25, "invept_single_context"),
            ("All-context INVEPT", 26, "invept_all_context"),
            ("INVVPID supported", 32, "invvpid"),
            ("Individual-address INVVPID", 40, "invvpid_individual_address"),
            ("Single-context INVVPID", 41, "invvpid_single_context"),
            ("All-context INVVPID", 42, "invvpid_all_context"),
            ("Single-context-retaining-globals INVVPID", 43, "invvpid_single_context_retaining_globals"),
        ],
    ),
]

VMFUNC = (0x491, "vmfunc", {0: ("EPTP Switching", "eptp_switching")})


def bits(value, spec):
    lo, hi = spec if isinstance(spec, tuple) else (spec, spec)
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def vmxcap_control(plain, true, bit, has_true_reader=True):
    """vmxcap's word for one control, from the bit positions it reads."""
    zero = not (plain & 0xFFFFFFFF) >> bit & 1  # may be 0
    one = bool((plain >> 32) >> bit & 1)  # may be 1
    true_zero = not (true & 0xFFFFFFFF) >> bit & 1
    true_one = bool((true >> 32) >> bit & 1)
    if has_true_reader and true_zero and true_one and one and not zero:
        return "default"
    if zero and not one:
        return "no"
    if one and not zero:
        return "forced"
    if one and zero:
        return "yes"
    return "?"


OURS_TO_VMXCAP = {"either": "yes", "always_off": "no", "always_on": "forced", "inconsistent": "?"}


def subjects():
    out = []
    for name in fixture.bundled_names():
        fx = fixture.load(name)
        if 0x481 in fx.msr and fx.msr[0x481].get(0) is not None and fx.msr[0x481][0].ok:
            out.append(pytest.param(name, id=name))
    for name in published.PUBLISHED:
        out.append(pytest.param("published:" + name, id="published-" + name))
    return out


def load(subject):
    if subject.startswith("published:"):
        return published.host(subject.split(":", 1)[1])
    return fixture.load(subject)


def cpu0_values(fx):
    """What vmxcap reads on CPU 0: every MSR it asks for, 0 when the read fails."""
    return {i: (r.value if r.ok else 0) for i, per in fx.msr.items() for cpu, r in per.items() if cpu == 0}


@pytest.fixture(scope="module")
def reports():
    cache = {}

    def get(subject):
        if subject not in cache:
            fx = load(subject)
            cache[subject] = (run(FixtureHost(fx), fx)[0], cpu0_values(fx))
        return cache[subject]

    return get


def decoded(report, index):
    row = next(r for r in report["capabilities"]["msrs"] if r["index"] == f"0x{index:x}")
    return row["decoded"]


@pytest.mark.parametrize("subject", subjects())
def test_basic_fields(reports, subject):
    report, regs = reports(subject)
    ours = decoded(report, 0x480)
    assert ours["raw"] == f"0x{regs[0x480]:016x}"
    for label, spec, key in BASIC:
        want = bits(regs[0x480], spec)
        got = ours[key]
        assert (int(got) if isinstance(got, bool) else got) == want, (label, key)


@pytest.mark.parametrize("subject", subjects())
def test_control_fields(reports, subject):
    report, regs = reports(subject)
    eff = report["capabilities"]["effective_controls"]
    checked = 0
    for section, plain_msr, true_msr, group, table in CONTROLS:
        plain = regs.get(plain_msr, 0)
        true = regs.get(true_msr, 0) if true_msr else 0
        for bit, (label, key) in table.items():
            want = vmxcap_control(plain, true, bit, has_true_reader=true_msr is not None)
            if group not in eff:
                # Not there (e.g. no secondary controls): vmxcap reads 0 and says "no".
                assert want == "no", (section, label)
                got = "no"
            else:
                state = eff[group]["controls"][key]
                got = OURS_TO_VMXCAP[state]
                if key in eff[group]["default1"]:
                    assert state == "either"
                    got = "default"
            assert got == want, (section, label, key, got, want)
            checked += 1
    tbit, (label, key) = next(iter(TERTIARY[2].items()))
    want = "yes" if regs.get(TERTIARY[0], 0) >> tbit & 1 else "no"
    got = OURS_TO_VMXCAP[eff[TERTIARY[1]]["controls"][key]] if TERTIARY[1] in eff else "no"
    assert got == want, label
    assert checked == sum(len(t[4]) for t in CONTROLS)


@pytest.mark.parametrize("subject", subjects())
def test_misc_ept_vpid_and_vmfunc_fields(reports, subject):
    report, regs = reports(subject)
    for section, index, rows in FIELDS:
        d = decoded(report, index)
        value = regs.get(index, 0)
        if d is None:
            # Not architecturally there (no EPT and no VPID): vmxcap prints all zero.
            assert value == 0, section
            continue
        assert d["raw"] == f"0x{value:016x}"  # vmxcap's "Hex:" line
        for label, spec, key in rows:
            got = d["fields"][key]
            assert (int(got) if isinstance(got, bool) else got) == bits(value, spec), (section, label)
    index, group, table = VMFUNC
    ((bit, (label, key)),) = table.items()
    eff = report["capabilities"]["effective_controls"]
    got = eff[group]["controls"][key] == "either" if group in eff else False
    assert got == bool(regs.get(index, 0) >> bit & 1), label


def test_the_table_covers_every_vmxcap_label():
    # 8 basic fields, 5 + 22 + 27 + 1 + 12 + 10 controls, 13 misc, 17 EPT/VPID, 1 VM function:
    # the count of fields vmxcap prints (not counting its per-section "Hex:" lines, checked
    # as raw above).
    n = (
        len(BASIC)
        + sum(len(t[4]) for t in CONTROLS)
        + len(TERTIARY[2])
        + sum(len(rows) for _, _, rows in FIELDS)
        + len(VMFUNC[2])
    )
    assert n == 8 + 5 + 22 + 27 + 1 + 12 + 10 + 13 + 17 + 1


def test_default_appears_where_true_msr_relaxes_the_plain_one():
    report, _regs = run(FixtureHost(published.host("skylake-u")), None)[0], None
    eff = report["capabilities"]["effective_controls"]
    # Plain PROCBASED forces CR3-load/store exiting (bits 15, 16 of 0x0401e172); the TRUE
    # MSR (0x04006172) lets them be 0: vmxcap prints "default".
    assert {"cr3_load_exiting", "cr3_store_exiting"} <= set(eff["procbased"]["default1"])
    assert eff["exit"]["default1"] == ["save_debug_controls"]
    assert eff["entry"]["default1"] == ["load_debug_controls"]
