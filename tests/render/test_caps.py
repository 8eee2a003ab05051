"""Tests for vmxprobe.render.caps: `vmxprobe caps` (the capability table) and `vmxprobe
decode` (one register as aligned lines). Values are SDM bit positions, a Bochs guest's
recorded registers (fixtures/bochs-broadwell-smp2.json) and published ones
(tests/published.py) changed one register at a time."""

import re

from tests import published
from vmxprobe import pipeline
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.kernel.capabilities import decode_any
from vmxprobe.render import caps


def rows(lines):
    """{name: value} of "  name<spaces>value" lines."""
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines)


def caps_text(fx):
    return caps.render_text(pipeline.run(FixtureHost(fx), fx, materialize_plan=False).verdict.capabilities)


def test_vmx_basic_lines():
    # 0x00da040000000004: revision 4, size 0x400, bits 50-53 = 6 (WB), bits 49, 54, 55 set.
    got = rows(caps.decoded_lines(decode_any(0x480, 0x00DA040000000004)))
    assert got["revision id"] == "4 (0x4)" and got["VMCS size"] == "1024 bytes"
    assert got["memory type"] == "WB (6)"
    assert (got["phys_addr_32bit"], got["dual_monitor"], got["ins_outs"], got["true_controls"]) == (
        "no",
        "yes",
        "yes",
        "yes",
    )


def test_feature_control_lines():
    got = rows(caps.decoded_lines(decode_any(0x3A, 0x5)))  # locked, VMX outside SMX
    assert got["locked"] == "yes" and got["vmx_outside_smx"] == "yes" and got["vmx_inside_smx"] == "no"
    assert got["state"] == "enabled_locked"


def test_control_lines_from_allowed_0_and_allowed_1():
    # Pin-based (A.3.1): bit 0 must be 1, bit 5 may be either, bit 3 must be 0; bit 1 must
    # be 1 though the SDM defines no control there.
    value = (1 << 0 | 1 << 1 | 1 << 5) << 32 | (1 << 0 | 1 << 1)
    got = rows(caps.decoded_lines(decode_any(0x481, value)))
    assert got["external_interrupt_exiting"] == "always_on"
    assert got["virtual_nmis"] == "either" and got["nmi_exiting"] == "always_off"
    assert got["bit1 (undefined)"] == "always_on"


def test_a_recorded_host_table_names_every_register_as_read():
    fx = fixture.load("bochs-broadwell-smp2")
    out = caps_text(fx)
    assert out.startswith("VMX capabilities of CPU 0 (the boot CPU); read on CPU(s) 0-1\n")
    basic = fx.msr[0x480][0].value
    assert f"IA32_VMX_BASIC (0x480) = 0x{basic:016x}  [compared by kvm_intel]" in out
    assert basic >> 55 & 1  # TRUE controls: the effective settings come from 0x48d
    assert "(effective settings below are from IA32_VMX_TRUE_PINBASED_CTLS (0x48d)" in out
    assert "All CPUs read agree with CPU 0 on every capability MSR." in out


def test_a_cpu_that_differs_is_named_with_kvms_refusal():
    fx = published.host("skylake-u", 2)
    sec = published.PUBLISHED["skylake-u"]["msrs"][0x48B]
    published.setreg(fx, 0x48B, 1, sec & ~(1 << 49))  # CPU 1 cannot enable PML (bit 17)
    out = caps_text(fx)
    assert "CPUs that differ from CPU 0:" in out
    # vmx_check_processor_compat() (arch/x86/kvm/vmx/vmx.c): "Inconsistent VMCS config on CPU %d"
    assert (
        f'CPU 1 = 0x{sec & ~(1 << 49):016x}: kvm_intel refuses ("Inconsistent VMCS config on CPU 1")' in out
    )
    assert "All CPUs read agree" not in out


def test_no_vmx_and_unreadable_basic_are_one_line():
    amd = fixture.load("amd-host")
    assert caps_text(amd).startswith("VMX capabilities: none")
    fx = published.host("skylake-u", 2)
    for cpu in (0, 1):
        published.setreg(fx, 0x480, cpu, errno="EACCES")
    assert caps_text(fx) == "VMX capabilities: IA32_VMX_BASIC could not be read\n"
