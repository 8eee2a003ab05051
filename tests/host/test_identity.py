"""vmxprobe/host/identity.py: what the host is, from CPUID or /proc/cpuinfo."""

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.identity import identify
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost


@pytest.mark.parametrize("family, expected", [("6", 6), ("²", None), ("9" * 5000, None), ("", None)])
def test_cpuinfo_stands_in_for_cpuid_with_ascii_numbers_only(family, expected):
    doc = hostgen.synthetic(2, 1)
    doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace(
        "cpu family\t: 6", f"cpu family\t: {family}"
    )
    del doc["cpuid"]["0x00000001:0x0"]  # no CPUID leaf 1: cpuinfo answers
    host = identify(read_host(FixtureHost(fixture.parse(doc))), 0)
    assert host.family == expected and host.model == 85
