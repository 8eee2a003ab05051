"""vmxprobe.pipeline: one scan, read -> judge -> plan -> materialise, as a typed
ScanResult; and the flow of a whole `vmxprobe scan` through the package, which goes down
the layers of tests/test_layout.py and decodes IA32_VMX_BASIC once."""

from __future__ import annotations

import sys

import pytest

from tests import hostgen
from tests.test_layout import layer_of
from vmxprobe import pipeline
from vmxprobe.arch import vmx
from vmxprobe.cli import main
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost, LiveHost


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow") / "root"
    hostgen.write_tree(hostgen.synthetic(4, 2), str(root))
    return str(root)


def test_run_gives_a_typed_result_end_to_end():
    fx = fixture.parse(hostgen.synthetic(4, 2))
    r = pipeline.run(FixtureHost(fx), fx)
    assert r.verdict.ready and r.materialized and r.allocation is not None and r.allocation.ok
    assert [p.cpu for p in r.plan.pages] == [0, 1, 2, 3]
    assert r.verification is not None and r.verification.ok == 4 and r.placement == "simulated"
    assert r.provenance == fx.provenance and r.nodes.node_of == {0: 0, 1: 0, 2: 1, 3: 1}


def test_run_without_materialising_keeps_the_verdict_of_the_registers():
    fx = fixture.parse(hostgen.synthetic(2, 1))
    r = pipeline.run(FixtureHost(fx), fx, materialize_plan=False)
    assert r.allocation is None and r.verification is None and not r.materialized
    assert r.verdict.x86_vmx_init is None  # step 4 of x86_vmx_init() never ran


def test_a_scan_flows_down_the_layers(tree, capsys):
    """Every call from one vmxprobe module into another, during a whole `vmxprobe scan
    --root`: none goes back up a layer. Lambdas and generator expressions are left out:
    they run where they are called, on behalf of the code that made them (the CLI's
    style callback, an iteration in the renderer)."""
    calls: set[tuple[str, str, str]] = set()

    def profile(frame, event, arg):
        if event != "call" or frame.f_back is None or frame.f_code.co_name.startswith("<"):
            return
        callee, caller = frame.f_globals.get("__name__", ""), frame.f_back.f_globals.get("__name__", "")
        if callee != caller and callee.startswith("vmxprobe") and caller.startswith("vmxprobe"):
            calls.add((caller, callee, frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        with pytest.raises(SystemExit) as e:
            main(["scan", "--root", tree])
    finally:
        sys.setprofile(None)
    assert e.value.code == 0, capsys.readouterr().err
    up = sorted(c for c in calls if layer_of(c[1]) > layer_of(c[0]))
    assert up == []
    assert len({(a, b) for a, b, _ in calls}) > 20  # the trace saw the scan


def test_ia32_vmx_basic_is_decoded_once_per_scan(tree, mocker):
    real = vmx.decode_vmx_basic
    spy = mocker.spy(vmx, "decode_vmx_basic")
    # Every module that imported the decoder by name gets the spy too.
    for name, module in list(sys.modules.items()):
        if name.startswith("vmxprobe.") and getattr(module, "decode_vmx_basic", None) is real:
            mocker.patch.object(module, "decode_vmx_basic", spy)
    pipeline.run(LiveHost(tree))
    assert spy.call_count == 1
