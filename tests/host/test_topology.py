"""What sysfs shows of CPUs and nodes (vmxprobe.host.topology), on small hand-made hosts
where each file decides the answer; recording partial dumps; converted fixtures."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.fixture import to_document
from vmxprobe.host.sources import FixtureHost, LiveHost, RecordingHost
from vmxprobe.host.topology import BY_CPULIST, BY_CPUMAP, BY_LINK, read_topology
from vmxprobe.kernel.numa import cpu_to_node

CPU = "sys/devices/system/cpu"
NODE = "sys/devices/system/node"


def host(files=None, dirs=None):
    """A fixture document holding only the given sysfs files and listings."""
    prov = {
        "origin": "composed",
        "recorded_at": None,
        "tool_version": None,
        "kernel": None,
        "hostname": None,
        "sources": [],
        "notes": "test host",
    }
    return to_document("t", "test host", prov, files or {}, dirs or {}, {}, {}, {})


def topo(doc):
    return read_topology(FixtureHost(fixture.parse(doc)))


def numa_host(
    cpus_of,
    *,
    possible=None,
    links=True,
    memory=None,
    normal=None,
    distance=None,
    online=None,
    node_possible=None,
):
    """cpus_of: node -> CPUs. Files as a current kernel writes them."""
    cpus = sorted(c for cs in cpus_of.values() for c in cs)
    nodes = sorted(cpus_of)
    fmt = format_cpulist
    files = {
        f"{CPU}/possible": fmt(possible or cpus) + "\n",
        f"{CPU}/present": fmt(cpus) + "\n",
        f"{CPU}/online": fmt(online if online is not None else cpus) + "\n",
        f"{NODE}/online": fmt(nodes) + "\n",
        f"{NODE}/possible": fmt(node_possible or nodes) + "\n",
        f"{NODE}/has_memory": fmt(nodes if memory is None else memory) + "\n",
        f"{NODE}/has_normal_memory": fmt(
            normal if normal is not None else (nodes if memory is None else memory)
        )
        + "\n",
    }
    dirs = {NODE: [f"node{n}" for n in nodes], CPU: [f"cpu{c}" for c in cpus]}
    for n, cs in cpus_of.items():
        files[f"{NODE}/node{n}/cpulist"] = fmt(cs) + "\n"
        row = (distance or {}).get(n)
        if row is None:
            row = [10 if m == n else 20 for m in nodes]
        files[f"{NODE}/node{n}/distance"] = " ".join(map(str, row)) + "\n"
        for c in cs:
            dirs[f"{CPU}/cpu{c}"] = [f"node{n}"] if links else []
    return host(files, dirs)


# --- cpu_to_node() where sysfs says it -------------------------------------------------------------------


def test_link_wins_over_the_node_lists_and_the_disagreement_is_noted():
    doc = numa_host({0: [0, 1], 1: [2, 3]})
    doc["dirs"][f"{CPU}/cpu1"] = ["node1"]  # the link says node 1
    t = topo(doc)
    assert t.node_of == {0: 0, 1: 1, 2: 1, 3: 1} and t.node_source[1] == BY_LINK
    assert t.notes == [
        "CPU(s) 1: the cpuN/nodeM links (cpu1 -> node1) disagree with the "
        "node lists (cpu1 in node(s) 0); following the links, which are what "
        "cpu_to_node() returns"
    ]


def test_without_links_the_node_lists_decide_split_interleaved_sparse_ids():
    doc = numa_host({0: [0, 2, 8, 9], 4: [1, 3], 9: [4, 5, 6, 7]}, links=False)
    t = topo(doc)
    assert t.node_of == {0: 0, 1: 4, 2: 0, 3: 4, 4: 9, 5: 9, 6: 9, 7: 9, 8: 0, 9: 0}
    assert set(t.node_source.values()) == {BY_CPULIST}
    assert t.nodes == [0, 4, 9]
    assert "/sys/devices/system/cpu/cpuN/nodeM links" in t.missing


def test_hex_cpumap_of_any_width_when_there_is_no_cpulist():
    doc = numa_host({0: [0, 1], 1: [70, 71]}, links=False, possible=list(range(72)))
    for n, mask in ((0, "00000000,00000000,00000003"), (1, "000000c0,00000000,00000000")):
        del doc["files"][f"{NODE}/node{n}/cpulist"]
        doc["files"][f"{NODE}/node{n}/cpumap"] = mask + "\n"
    doc["files"][f"{CPU}/present"] = "0-1,70-71\n"
    t = topo(doc)
    assert (t.node_of[0], t.node_of[1], t.node_of[70], t.node_of[71]) == (0, 0, 1, 1)
    assert t.node_source[70] == BY_CPUMAP
    assert any("read the hex nodeM/cpumap instead" in m for m in t.missing)


def test_a_cpu_in_several_lists_without_a_link_takes_the_lowest_node():
    doc = numa_host({0: [0, 1], 1: [1, 2]}, links=False)
    t = topo(doc)
    assert t.node_of[1] == 0
    assert any(n.startswith("CPU(s) 1 are listed by several nodes") for n in t.notes)


def test_without_cpu_possible_present_and_online_come_from_the_cpu_directories():
    doc = numa_host({0: [0, 2], 1: [1, 3]}, links=False)
    for f in ("possible", "present", "online"):
        del doc["files"][f"{CPU}/{f}"]
    doc["files"][f"{CPU}/cpu3/online"] = "0\n"
    doc["files"][f"{CPU}/cpu1/online"] = "1\n"
    t = topo(doc)
    assert (t.possible, t.present, t.online) == ([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2])
    assert {f"/{CPU}/possible", f"/{CPU}/present", f"/{CPU}/online"} <= set(t.missing)
    assert any("CPU(s) 3 are present but offline" in n for n in t.node_notes)


# --- record and scan of partial dumps ---------------------------------------------------


def partial_tree(root):
    """A dump as util-linux's mk-input.sh makes one of an old host: cpuN directories,
    hex node cpumaps, nothing else (no cpu/possible, no links, no /dev/cpu)."""
    for c in range(8):
        os.makedirs(os.path.join(root, CPU, f"cpu{c}", "topology"))
    for n, mask in ((0, "00000055"), (1, "000000aa")):
        os.makedirs(os.path.join(root, NODE, f"node{n}"))
        with open(os.path.join(root, NODE, f"node{n}", "cpumap"), "w") as f:
            f.write(mask + "\n")
    os.makedirs(os.path.join(root, "proc"))
    with open(os.path.join(root, "proc", "cpuinfo"), "w") as f:
        f.write("".join(f"processor\t: {c}\nvendor_id\t: GenuineIntel\nflags\t\t: vmx\n\n" for c in range(8)))


def test_record_of_a_partial_dump_says_what_is_absent_and_scan_still_plans(tmp_path):
    root = tmp_path / "dump"
    partial_tree(str(root))
    out = tmp_path / "partial.json"
    r = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "record", "--root", str(root), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for absent in (
        "/sys/devices/system/cpu/possible",
        "cpuN/nodeM links",
        "read the hex nodeM/cpumap instead",
        "/sys/devices/system/node/has_memory",
        "/dev/cpu/N/msr",
        "/dev/cpu/N/cpuid",
    ):
        assert absent in r.stderr
    doc = json.loads(out.read_text())
    assert doc["files"][f"{NODE}/node1/cpumap"] == "000000aa\n"
    assert doc["msr"]["0x3a"] == [{"cpus": "0-7", "errno": "ENOENT"}]
    r = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--fixture", str(out), "--format", "json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 3, r.stderr
    report = json.loads(r.stdout)
    assert [(n["node"], n["cpus"]) for n in report["plan"]["nodes"]] == [(0, "0,2,4,6"), (1, "1,3,5,7")]
    assert "/sys/devices/system/cpu/possible" in report["topology"]["missing"]


def test_a_converted_fixture_records_back_to_itself(tree):
    """Writing a converted fixture out as a tree and recording it gives the same facts:
    the fixture holds what `vmxprobe record --root` reads, nothing else."""
    fx = fixture.load("hwloc-offline-cpu0-node0")
    doc = fixture.from_fixture(fx)
    doc["msr"], doc["cpuid"] = {}, {}
    rec = RecordingHost(LiveHost(tree(doc)))
    t = read_topology(rec)
    assert t.node_of == read_topology(FixtureHost(fx)).node_of
    assert rec.files == {k: v for k, v in fx.files.items() if k in rec.files}
    topo_files = {k for k in fx.files if k.startswith("sys/")}
    assert topo_files <= set(rec.files)


# --- tools/fixtures/convert_dumps.py --------------------------------------------------------


def test_conversion_is_reproducible_and_leaks_no_local_path(tmp_path):
    import hashlib

    from tools.fixtures import convert_dumps

    src = tmp_path / "src"
    top = tmp_path / "build" / "x86_64-tiny"
    doc = hostgen.synthetic(4, 2, possible=list(range(6)))
    hostgen.write_tree(doc, str(top))
    for c in range(4):  # no /dev/cpu in a dump
        for kind in ("msr", "cpuid"):
            p = top / "dev" / "cpu" / str(c) / kind
            if p.exists():
                p.unlink()
    os.symlink("/etc/passwd", top / "sys" / "escape")  # must not be unpacked
    (src / "generated").mkdir(parents=True)
    with tarfile.open(src / "x86_64-tiny.tar.gz", "w:gz") as tar:
        tar.add(top, arcname="x86_64-tiny")
    digest = hashlib.sha256((src / "x86_64-tiny.tar.gz").read_bytes()).hexdigest()
    rows = ["# cpu,in_possible,in_present,in_online,nodes_by_node_cpulist,node_by_cpuN_nodeM_link"]
    rows += [
        f"{c},1,{int(c < 4)},{int(c < 4)},{c // 2 if c < 4 else ''},{c // 2 if c < 4 else ''}"
        for c in range(6)
    ]
    (src / "generated" / "util-linux_x86_64-tiny.sysfs-cpu-node.csv").write_text("\n".join(rows) + "\n")
    (src / "generated" / "util-linux_x86_64-tiny.lscpu-p.txt").write_text(
        "# CPU,Node,Socket,Online\n" + "".join(f"{c},{c // 2},0,Y\n" for c in range(4))
    )
    d = convert_dumps.Dump(
        "ul-tiny", "util-linux", "x86_64-tiny", digest, "none", "tiny test host", "a synthetic host"
    )
    first, second = convert_dumps.convert(d, str(src)), convert_dumps.convert(d, str(src))
    assert first == second
    assert str(tmp_path) not in first["fixture"]
    fx = fixture.parse(json.loads(first["fixture"]))
    assert fx.provenance["origin"] == "converted" and fx.provenance["recorded_at"] is None
    assert "sys/escape" not in json.dumps(fx.dirs)
    assert {r.errno for r in fx.msr[0x480].values()} == {"ENOENT"}
    t = read_topology(FixtureHost(fx))
    assert cpu_to_node(t).node_of == {0: 0, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1}
    assert first["truth"].splitlines()[-1] == "5,1,0,0,,,-"
    bad = convert_dumps.Dump("ul-tiny", "util-linux", "x86_64-tiny", "0" * 64, "none", "t", "t")
    with pytest.raises(SystemExit, match="not the upstream file"):
        convert_dumps.convert(bad, str(src))


def test_numbers_no_kernel_could_have_are_noted_and_ignored():
    huge = "9" * 5000
    t = topo(
        host(
            {
                f"{CPU}/kernel_max": huge + "\n",
                f"{CPU}/possible": "0-1\n",
                f"{CPU}/online": "0-1\n",
                f"{NODE}/node0/cpulist": "0-1\n",
                f"{NODE}/node0/distance": f"{huge}\n",
            },
            {
                NODE: ["node0", f"node{huge}", "node40000"],
                f"{CPU}/cpu0": [f"node{huge}"],
                f"{CPU}/cpu1": ["node0"],
            },
        )
    )
    assert t.kernel_max is None and t.nodes == [0] and t.node_of == {0: 0, 1: 0}
    assert t.node_source[0] == BY_CPULIST and t.node_source[1] == BY_LINK
    notes = "\n".join(t.notes + t.node_notes)
    assert f"/{CPU}/kernel_max: not a number; ignored" in notes
    assert f"/{NODE}: node40000, node{'9' * 16}... (5000 digits): not a node id" in notes
    assert f"/{CPU}/cpu0: node9999" in notes
    assert f"/{NODE}/node0/distance: not a list of numbers; ignored" in notes
