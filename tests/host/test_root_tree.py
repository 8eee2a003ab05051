"""Scans of whole host trees under --root, through the live reader."""

import json
import subprocess
import sys

from tests import hostgen


def test_1024_possible_cpus_on_4_nodes(tree):
    root = tree(hostgen.synthetic(1024, 4))
    r = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--root", root, "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    plan = report["plan"]
    assert plan["pages"] == 1024 and plan["materialized"]
    ver = plan["verified"]
    assert (ver["pages"], ver["ok"], ver["bad"]) == (1024, 1024, [])
    assert plan["placement"] == "simulated" and ver["placement"]["mode"] == "simulated"
    assert [(n["node"], n["cpus"], n["pages"]) for n in plan["nodes"]] == [
        (0, "0-255", 256),
        (1, "256-511", 256),
        (2, "512-767", 256),
        (3, "768-1023", 256),
    ]
    for entry in report["per_cpu"]:
        assert entry["node"] == entry["cpu"] // 256 and entry["node_source"] == "link"
    assert report["cpus"]["probed"] == "0-1023"


def test_possible_beyond_present_are_planned_not_probed(tree):
    root = tree(hostgen.synthetic(6, 2, possible=list(range(10))))
    r = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--root", root, "--format", "json"],
        capture_output=True,
        text=True,
    )
    report = json.loads(r.stdout)
    assert r.returncode == 0
    assert report["plan"]["pages"] == 10
    absent = [e for e in report["per_cpu"] if not e["present"]]
    assert [e["cpu"] for e in absent] == [6, 7, 8, 9]
    assert all(not e["probed"] and e["node_source"] == "round-robin" for e in absent)
    assert any("not online" in x for x in report["verdict"]["reasons"])
