"""The bochs tier's boots, run once per pytest run, two at a time (docs/bochs.md).

VMXPROBE_BOCHS_CASES=a,b   boot only these cases (default: all of harness.CASES)
VMXPROBE_BOCHS_RECORD=1    write each boot's recording to fixtures/bochs-<case>.json
VMXPROBE_BOCHS_PARALLEL=N  boots at a time (default 2: the tier's budget assumes two cores)
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bochs_harness as harness  # noqa: E402
from bochs_harness import bochs_image  # noqa: E402

SUMMARY: dict = {}


def pytest_terminal_summary(terminalreporter):
    """The table of boots (docs/bochs.md), when this run booted any."""
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("bochs boots")
    tr.write_line(harness.markdown_table(SUMMARY["boots"]))
    img = SUMMARY["image"]
    tr.write_line(
        f"image {'built' if img['built'] else 'from the cache'} in {img['seconds']:.0f} s; "
        f"boots {SUMMARY['boots_wall_seconds']:.0f} s wall; summary {SUMMARY['path']}"
    )


def selected_cases() -> list[harness.Case]:
    names = [n for n in os.environ.get("VMXPROBE_BOCHS_CASES", "").split(",") if n]
    unknown = [n for n in names if n not in harness.BY_NAME]
    if unknown:
        raise pytest.UsageError(
            f"VMXPROBE_BOCHS_CASES: unknown case(s) {', '.join(unknown)}; cases: {', '.join(harness.BY_NAME)}"
        )
    return [harness.BY_NAME[n] for n in names] if names else list(harness.CASES)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = selected_cases()
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


def _unavailable(reason: str):
    if harness.bochs_required():
        pytest.fail(
            f"{reason} (the bochs tier is required here: CI or VMXPROBE_BOCHS_REQUIRED=1)", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="session")
def bochs_run(tmp_path_factory):
    """{case name: harness.Boot} for every selected case, plus timings."""
    why = harness.missing_requirements()
    if why:
        _unavailable(why)
    t0 = time.monotonic()
    cpu0 = os.times()
    try:
        image = bochs_image.build(log=None)
    except bochs_image.ImageError as e:
        pytest.fail(f"bochs tier: cannot build the boot image: {e}; {harness.SETUP_HINT}", pytrace=False)
    cpu1 = os.times()
    build_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    print(
        f"\nbochs: image {image.dir} {'built' if image.built else 'from the cache'} in "
        f"{image.seconds:.0f} s wall, {build_cpu:.0f} s CPU (children)",
        file=sys.stderr,
    )
    root = str(tmp_path_factory.mktemp("bochs"))
    parallel = int(os.environ.get("VMXPROBE_BOCHS_PARALLEL", "2"))
    boots = harness.run_cases(
        selected_cases(), image, root, parallel=parallel, log=lambda m: print(m, file=sys.stderr)
    )
    version = harness.bochs_version()
    summary = {
        "image": {
            "dir": image.dir,
            "built": image.built,
            "seconds": round(image.seconds, 1),
            "cpu_seconds": round(build_cpu, 1),
        },
        "boots_wall_seconds": round(time.monotonic() - t0 - image.seconds, 1),
        "loadavg_after": os.getloadavg(),
        "boots": [harness.summary_row(b) for b in boots.values()],
    }
    # Kept in the cache too: pytest's temporary directories rotate.
    kept = os.path.join(bochs_image.cache_dir(), "summaries", time.strftime("%Y%m%d-%H%M%S") + ".json")
    os.makedirs(os.path.dirname(kept), exist_ok=True)
    for path in (os.path.join(root, "summary.json"), kept):
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
    SUMMARY.update(summary, path=kept)
    if os.environ.get("VMXPROBE_BOCHS_RECORD") == "1":
        for b in boots.values():
            if b.bundle and b.bundle["record"]["fixture"]:
                print(f"bochs: wrote {harness.write_fixture(b, version)}", file=sys.stderr)
    return {"boots": boots, "image": image, "version": version, "root": root}


@pytest.fixture
def boot(bochs_run, case) -> harness.Boot:
    b = bochs_run["boots"][case.name]
    if b.error:
        pytest.fail(b.describe_failure(), pytrace=False)
    return b
