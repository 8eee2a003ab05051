"""Tests for vmxprobe.kernel.flag_view: /proc/cpuinfo's flag per CPU against a
prediction, on a real composed host (tests/hostgen.synthetic) whose flags are edited."""

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost
from vmxprobe.kernel import flag_view


def scan_with_flags(shown: dict[int, bool]):
    scan = read_host(FixtureHost(fixture.parse(hostgen.synthetic(4, 1))))
    for cpu, on in shown.items():
        flags = set(scan.cpuinfo[cpu]["flags"]) - {"vmx"}
        scan.cpuinfo[cpu] = {**scan.cpuinfo[cpu], "flags": frozenset(flags | ({"vmx"} if on else set()))}
    return scan


def test_each_disagreement_lands_in_its_list():
    scan = scan_with_flags({0: True, 1: False, 2: False, 3: True})
    # CPU 0 as predicted; 1 hidden by firmware; 2 cleared by the kernel; 3 shown though off.
    predictions = {0: (True, False), 1: (False, True), 2: (True, False), 3: (False, True)}
    view = flag_view.compare(scan, "vmx", predictions.__getitem__)
    assert (view.hidden, view.missing, view.extra) == ([1], [2], [3])


def test_no_prediction_counts_only_a_hidden_flag_and_no_cpuinfo_block_is_skipped():
    scan = scan_with_flags({0: False, 1: False, 2: True})
    del scan.cpuinfo[3]
    view = flag_view.compare(scan, "vmx", lambda cpu: (None, cpu == 1))
    assert (view.hidden, view.missing, view.extra) == ([1], [], [])
