"""Tests for vmxprobe.render.text: the scan as text, a one-line verdict first. Scans are
of bundled fixtures (one recorded in a Bochs guest); the expected numbers come from the
fixture's own registers and files, not from the renderer."""

import pytest

from vmxprobe import pipeline
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.render import text


def result_of(name, release=None):
    fx = fixture.load(name)
    if release is not None:
        fx.files["proc/sys/kernel/osrelease"] = release + "\n"
    return pipeline.run(FixtureHost(fx), fx), fx


def basic_of(fx):
    return fx.msr[0x480][0].value


def test_ready_headline_and_plan_from_the_fixture():
    r, fx = result_of("intel-2s-ready")
    lines = text.render_text(r).splitlines()
    assert lines[0].startswith("READY: kvm_intel would load and allocate 32 root VMCS page(s)")
    revision = basic_of(fx) & 0x7FFFFFFF  # SDM A.1 bits 30:0: what the page header holds
    plan = next(line for line in lines if line.startswith("Plan:"))
    assert plan == f"Plan:   32 root VMCS page(s) of 4096 bytes (128 KiB), header 0x{revision:08x}"
    assert "CPUs:   32 possible (0-31), 32 present (0-31), 32 online (0-31), 32 read (0-31)" in lines


def test_from_7_1_the_headline_names_x86_vmx_init():
    # arch/x86/virt/hw.c: the root VMCS pages are allocated at boot by x86_vmx_init().
    r, _ = result_of("intel-2s-ready", release="7.1.0")
    assert text.headline(r.verdict, 32).startswith("READY: x86_vmx_init() allocates 32 root VMCS page(s)")
    at_least = text.headline(r.verdict, 32, at_least=True)
    assert at_least.startswith("READY: x86_vmx_init() allocates at least 32")


def test_locked_off_firmware_is_not_ready_with_the_errno():
    r, _ = result_of("intel-fw-locked-off")
    first = text.render_text(r).splitlines()[0]
    assert first.startswith("NOT READY: kvm_intel would fail (-EOPNOTSUPP)")


def test_source_and_host_lines_of_a_recorded_guest():
    r, fx = result_of("bochs-skylake-x-debian")
    assert text.source_line(r) == "Source: fixture bochs-skylake-x-debian, recorded"
    info = r.readings.cpuinfo[0]  # what the guest kernel itself printed
    sig = f"{info['cpu family']}/{info['model']}/{info['stepping']}"
    assert text.host_line(r) == (
        f"Host:   GenuineIntel family/model/stepping {sig} ({info['model name']}); "
        "no hypervisor seen; kernel 6.1.0-57-amd64"
    )


@pytest.mark.parametrize("name,colour", [("intel-2s-ready", "green"), ("intel-fw-locked-off", "red")])
def test_style_colours_the_headline_only(name, colour):
    r, _ = result_of(name)
    styled = []

    def style(line, **kw):
        styled.append(kw)
        return f"<{line}>"

    out = text.render_text(r, style=style).splitlines()
    assert styled == [{"fg": colour, "bold": True}]
    assert out[0].startswith("<") and out[0].endswith(">")
    assert not any(line.startswith("<") for line in out[1:])
    assert text.plain("x", fg="red") == "x"


def test_a_scan_that_did_not_allocate_does_not_blame_the_readings():
    """Without materialising the plan the verdict stops before x86_vmx_init()'s loop:
    the headline says the allocation was not tried, not that something was unreadable;
    with it, the same fixture is READY."""
    fx = fixture.load("bochs-skylake-x-debian")
    r = pipeline.run(FixtureHost(fx), fx, materialize_plan=False)
    head = text.render_text(r).splitlines()[0]
    assert head == "UNKNOWN: every check before the allocation passed; the allocation was not tried"
    assert text.render_text(pipeline.run(FixtureHost(fx), fx)).startswith("READY: ")
