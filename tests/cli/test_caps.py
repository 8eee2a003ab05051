"""Tests for vmxprobe.cli.caps: `vmxprobe decode` (a value pasted from a bug report, rdmsr
or vmxcap; no hardware) and `vmxprobe caps` (every CPU's capability MSRs; its exit code
is the scan's)."""

import json
import os
import subprocess
import sys

import pytest

from tests import cli_runner
from vmxprobe.arch import capabilities as caps
from vmxprobe.cli import cli
from vmxprobe.host import fixture


def vmxprobe(*args):
    return subprocess.run(
        [sys.executable, "-m", "vmxprobe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def invoke(*args):
    return cli_runner().invoke(cli, list(args), catch_exceptions=False)


def test_skylake_vmx_basic_by_default():
    r = vmxprobe("decode", "0x00da040000000004")
    assert r.returncode == 0 and r.stderr == ""
    first = r.stdout.splitlines()[0]
    assert first == (
        "IA32_VMX_BASIC (0x480) = 0x00da040000000004: revision 4 (0x4), VMCS size 1024, memory type WB"
    )
    assert "true_controls                            yes" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["00da040000000004"],
        ["0x00DA_0400_0000_0004"],
        ["00da 0400 0000 0004"],
        ["00da_0400", "0000_0004"],
        ["00DA040000000004h"],
        ["0xda040000000004"],
    ],
)
def test_value_spellings(args):
    r = invoke("decode", *args, "--format", "json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["raw"] == "0x00da040000000004" and d["revision_id"] == 4 and d["vmcs_size"] == 1024
    assert d["memory_type_name"] == "WB"


@pytest.mark.parametrize(
    "args,words",
    [
        (["decode", "0xzz"], "bad value '0xzz'"),
        (["decode", ""], "bad value"),
        (["decode", "0x1_0000_0000_0000_0000"], "more than 64 bits"),
        (["decode", "1", "--msr", "0x499"], "unknown MSR '0x499'"),
        (["decode", "1", "--msr", "bogus"], "unknown MSR 'bogus'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    r = vmxprobe(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert words in r.stderr and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


def test_feature_control():
    d = json.loads(invoke("decode", "5", "--msr", "0x3a", "--format", "json").stdout)
    assert d["msr"] == "IA32_FEATURE_CONTROL" and d["state"] == "enabled_locked"
    d = json.loads(invoke("decode", "0x1", "--msr", "FEATURE_CONTROL", "--format", "json").stdout)
    assert d["state"] == "disabled_locked"
    assert "locked" in invoke("decode", "1", "--msr", "msr_ia32_feat_ctl").stdout


def test_control_msr_by_name_shows_each_state():
    # Skylake-U IA32_VMX_PROCBASED_CTLS (published: see tests/published.py).
    r = invoke("decode", "0xfff9fffe0401e172", "--msr", "PROCBASED_CTLS")
    assert r.exit_code == 0
    text = r.stdout
    assert text.startswith("IA32_VMX_PROCBASED_CTLS (0x482) = 0xfff9fffe0401e172")
    assert "hlt_exiting                              either" in text
    assert "cr3_load_exiting                         always_on" in text  # default1 on the plain MSR
    assert "activate_tertiary_controls               always_off" in text
    assert "TRUE_* MSR holds the final word" in text


def test_tertiary_and_ept_vpid():
    # Raptor Lake-S IA32_VMX_PROCBASED_CTLS3 = 0xf (tests/published.py): bits 0-3, no IPI
    # virtualization (bit 4).
    d = json.loads(invoke("decode", "0xf", "--msr", "0x492", "--format", "json").stdout)
    assert d["controls"]["ipi_virtualization"] == "always_off"
    assert d["controls"]["loadiwkey_exiting"] == "either"
    d = json.loads(invoke("decode", "0x1f", "--msr", "PROCBASED_CTLS3", "--format", "json").stdout)
    assert d["controls"]["ipi_virtualization"] == "either"
    d = json.loads(invoke("decode", "0x00000f0106334141", "--msr", "EPT_VPID_CAP", "--format", "json").stdout)
    assert d["fields"]["invept"] is True and d["fields"]["invvpid"] is True
    assert d["fields"]["ept_page_walk_length_5"] is False


def test_kvm_nested_revision_and_seamret_bit():
    d = json.loads(invoke("decode", "0x00d8100011e57ed0", "--format", "json").stdout)
    assert d["revision_id"] == 0x11E57ED0 and "VMCS12_REVISION" in d["synthetic"]
    assert d["seamret"]["seamret_keeps_current_vmcs"] is False
    d = json.loads(invoke("decode", "0x10da040000000004", "--format", "json").stdout)
    assert d["seamret"]["bit60"] is True and d["seamret"]["kernel_bug"] is None
    assert 60 not in d["reserved"]


def test_every_capability_msr_decodes_by_name_and_index():
    for index, m in caps.MSRS.items():
        for spec in (f"0x{index:x}", m.name, m.name[len("IA32_VMX_") :].lower()):
            r = invoke("decode", "0", "--msr", spec, "--format", "json")
            assert r.exit_code == 0, spec
            assert json.loads(r.stdout)["index"] == f"0x{index:x}"


# --- caps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name,code", [("amd-host", 1), ("intel-2s-ready", 0), ("pub-skylake", 0)])
def test_caps_command_exit_code_is_the_scans(name, code):
    if name not in fixture.bundled_names():
        pytest.skip(f"{name} is not bundled")
    r = cli_runner().invoke(cli, ["caps", "--fixture", name])
    assert r.exit_code == code


def test_caps_text_starts_with_the_scans_headline():
    r = cli_runner().invoke(cli, ["caps", "--fixture", "bochs-broadwell-smp2"])
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and lines[0].startswith("READY: ")
    basic = fixture.load("bochs-broadwell-smp2").msr[0x480][0].value
    assert lines[1] == "VMX capabilities of CPU 0 (the boot CPU); read on CPU(s) 0-1"
    assert lines[2] == f"IA32_VMX_BASIC (0x480) = 0x{basic:016x}  [compared by kvm_intel]"


def test_caps_json_and_output_file(tmp_path):
    out = tmp_path / "caps.json"
    r = cli_runner().invoke(cli, ["caps", "--fixture", "amd-host", "--format", "json", "-o", str(out)])
    assert r.exit_code == 1 and r.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["capabilities"]["state"] == "no_vmx" and doc["verdict"]["ready"] is False
    r = cli_runner().invoke(cli, ["caps", "--fixture", "amd-host", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "cannot write the table" in r.stderr
