"""Fault cells of the plan's pages (vmxprobe/kernel/pages.py): the all-or-nothing
allocation x86_vmx_init() makes, at fault and at scale."""

from __future__ import annotations

import json
import os

import pytest

from tests import hostgen
from tests.faults.matrix import (
    Run,
    cell,
    cell_params,
    clean,
    run_cell,
    scan,
    vmxprobe,
)

# allocate a plan page. The mirror of x86_vmx_init() follows its all-or-nothing rule: a
# page that cannot be had releases every page taken and yields -ENOMEM (exit 1), with
# the real cause (and the note that the pages were vmxprobe's own) among the reasons.


def _assert_alloc_failure(r: Run, *words: str):
    # never half a plan: every page taken was released, and nothing claims verified
    assert r.report["plan"]["materialized"] is False
    assert r.report["plan"]["verified"] is None
    v = r.report["verdict"]
    assert v["x86_vmx_init"] == "ENOMEM" and v["determined"] is True, v
    assert r.code == 1
    assert any("all-or-nothing" in x for x in v["reasons"]), v
    assert any(w in x for x in v["reasons"] for w in words), v


@cell("alloc", "ENOMEM", 1, "real")
def alloc_enomem(host):
    # RLIMIT_AS lowered to what is mapped plus 1 MiB just before the pages are mapped:
    # the kernel fails a real mmap(2) with ENOMEM part-way through 4096 pages.
    big = os.path.join(host.base, "big")
    hostgen.write_tree(hostgen.synthetic(2048, 4), big)
    r = scan(big, faults=ALLOC_PRODUCERS["ENOMEM"])
    _assert_alloc_failure(r, "Cannot allocate memory", "MemoryError")


@cell("alloc", "EPERM", 1, "mock")
def alloc_eperm(host):
    r = scan(host.root, faults=ALLOC_PRODUCERS["EPERM"])
    _assert_alloc_failure(r, "Operation not permitted")


@cell("alloc", "EIO", 1, "mock")
def alloc_eio(host):
    # mbind(MPOL_MF_STRICT) fails with EIO when a page is already on another node.
    r = scan(host.root, faults=ALLOC_PRODUCERS["EIO"])
    _assert_alloc_failure(r, "Input/output error")


@cell("alloc", "EINVAL", 1, "mock")
def alloc_einval(host):
    r = scan(host.root, faults=ALLOC_PRODUCERS["EINVAL"])
    _assert_alloc_failure(r, "Invalid argument")


@cell("alloc", "NODE_GONE", 1, "real")
def alloc_node_gone(host):
    # The plan puts pages on node 63; this machine has no such node (it is gone):
    # mbind(2) to it fails with a real EINVAL.
    if os.path.exists("/sys/devices/system/node/node63"):
        pytest.skip("this machine has a node 63")
    big = os.path.join(host.base, "wide")
    hostgen.write_tree(hostgen.synthetic(128, 64), big)
    r = scan(big, faults=ALLOC_PRODUCERS["NODE_GONE"])
    _assert_alloc_failure(r, "Invalid argument")


ALLOC_PRODUCERS = {
    "ENOMEM": [{"call": "rlimit_as", "slack": 1 << 20}],
    "EPERM": [{"call": "place", "errno": "EPERM"}],
    "EIO": [{"call": "place", "errno": "EIO"}],
    "EINVAL": [{"call": "place", "errno": "EINVAL"}],
    "NODE_GONE": [{"call": "place", "how": "mbind"}],
}


@pytest.mark.parametrize("failure", sorted(ALLOC_PRODUCERS))
def test_alloc_failures_are_all_or_nothing(host, failure):
    """What holds for the alloc cells before and after that fix: every page released,
    nothing claims a verified plan, one line at most on stderr, no traceback, and the
    verdict is not "ready"."""
    root = host.root
    if failure == "ENOMEM":
        root = os.path.join(host.base, "big")
        hostgen.write_tree(hostgen.synthetic(2048, 4), root)
    elif failure == "NODE_GONE":
        if os.path.exists("/sys/devices/system/node/node63"):
            pytest.skip("this machine has a node 63")
        root = os.path.join(host.base, "wide")
        hostgen.write_tree(hostgen.synthetic(128, 64), root)
    r = scan(root, faults=ALLOC_PRODUCERS[failure])
    assert r.code in (1, 3)
    assert r.report["plan"]["materialized"] is False and r.report["plan"]["verified"] is None
    assert r.report["verdict"]["ready"] is False


# --- limits ------------------------------------------------------------------------------


@pytest.mark.slow
def test_8192_possible_cpus_on_1024_nodes(tmp_path):
    root = str(tmp_path / "root")
    hostgen.write_tree(hostgen.synthetic(8192, 1024), root)
    r = scan(root)
    assert r.code == 0, r.err
    plan = r.report["plan"]
    assert plan["pages"] == 8192 and len(plan["nodes"]) == 1024
    assert plan["materialized"] and plan["verified"]["ok"] == 8192 and plan["verified"]["bad"] == []
    assert [n["pages"] for n in plan["nodes"]] == [8] * 1024
    assert r.report["cpus"]["probed"] == "0-8191"
    # recorded, it stays under the fixture cap and replays to the same verdict
    fx = tmp_path / "big.json"
    rec = clean(vmxprobe("record", "--root", root, "-o", str(fx)))
    assert rec.code == 0 and os.path.getsize(fx) < 64 << 20
    replay = clean(vmxprobe("scan", "--fixture", str(fx), "--format", "json"))
    assert replay.code == 0
    assert json.loads(replay.out)["verdict"] == r.report["verdict"]


@pytest.mark.parametrize("c,target", cell_params("alloc"))
def test_cell(c, target, host):
    run_cell(c, target, host)
