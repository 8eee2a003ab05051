#!/usr/bin/env python3
"""Convert the public x86 sysfs/procfs dumps of the util-linux and hwloc test suites into
vmxprobe fixtures (fixtures/<name>.json), and the CPU -> node answers recorded beside
them into test data (tests/data/topology/<name>.csv).

    python scripts/convert_dumps.py --source DIR [--only NAME ...] [--check]

--source is a folder holding the upstream files as they are in the two repositories'
histories: <file>.tar.gz (util-linux), util-linux-historical/<file>.tar.gz,
hwloc/<file>.tar.bz2, their expected outputs, and generated/ (the per-CPU ground truth:
each CPU's cpuN/nodeM link and node lists, and `lscpu -a -p=CPU,NODE,SOCKET,ONLINE` of
util-linux 2.38.1 run on the unpacked dump). Every archive is checked against the
sha256 below before it is used.

Each dump is unpacked into a temporary directory and recorded exactly as
`vmxprobe record --root DIR` records a host: RecordingHost(LiveHost(dir)), collect(),
fixture.from_recording(). So a fixture holds the dump's files verbatim, only those a
scan reads. The dumps have no /dev/cpu: every MSR and CPUID read is ENOENT and stays
so. Only the provenance is replaced, with the upstream project, file and commit.
Output is deterministic: a second run gives byte-identical files (--check verifies).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vmxprobe import __version__, fixture  # noqa: E402
from vmxprobe.cpulist import parse_cpulist, parse_cpumap  # noqa: E402
from vmxprobe.scan import collect  # noqa: E402
from vmxprobe.sources import LiveHost, RecordingHost  # noqa: E402

UL_REPO = "https://github.com/util-linux/util-linux"
UL_COMMIT = "39465c780eed56034ed1440068a2722fc3331343"
# The three multi-node dumps util-linux deleted in a292bbdec (2012-11-12, "tests: remove
# lscpu /sys dumps without 'possible' CPU mask"): the tarballs from its parent, their
# expected output from the parent of 0517fbf35 (2014-03-27), which removed that.
UL_OLD_COMMIT = "a5cfffff28a4eb10604750b0f1f4e8696af3947c"
UL_OLD_EXPECTED_COMMIT = "50a3a60490ba9780253f2963274f707e8958eadd"
HWLOC_REPO = "https://github.com/open-mpi/hwloc"
HWLOC_COMMIT = "3b37b024aa3fe368dd82008eea7e1ad9dca97d2c"

UL_LICENSE = ("util-linux test data; no license of its own, so util-linux's default "
              "applies (README.licensing: GPL-2.0-or-later)")
HWLOC_LICENSE = "hwloc test data, BSD-3-Clause (hwloc COPYING)"


@dataclass(frozen=True)
class Dump:
    name: str          # fixture name
    suite: str         # "util-linux", "util-linux-historical" or "hwloc"
    upstream: str      # upstream name of the dump (file name without extension)
    sha256: str
    added: str         # the upstream commit that added the file
    description: str   # one line for `vmxprobe fixtures`
    machine: str       # what the machine is, from the dump and the upstream test
    caveat: str = ""   # what upstream says was constructed or edited

    @property
    def archive(self) -> str:
        if self.suite == "hwloc":
            return f"hwloc/{self.upstream}.tar.bz2"
        if self.suite == "util-linux-historical":
            return f"util-linux-historical/{self.upstream}.tar.gz"
        return f"{self.upstream}.tar.gz"

    @property
    def generated_prefix(self) -> str:
        return f"generated/{self.suite}_{self.upstream}"

    def sources(self) -> list[dict]:
        if self.suite == "hwloc":
            base = f"{HWLOC_REPO}/blob/{HWLOC_COMMIT}/tests/hwloc/linux/{self.upstream}"
            return [
                {"what": f"sysfs/procfs dump {self.upstream}.tar.bz2 (sha256 {self.sha256}) "
                         f"from hwloc's Linux test suite at {HWLOC_COMMIT}, added in "
                         f"{self.added}", "url": base + ".tar.bz2"},
                {"what": "hwloc's test description for this dump", "url": base + ".test"},
            ]
        commit = UL_COMMIT if self.suite == "util-linux" else UL_OLD_COMMIT
        expected = UL_COMMIT if self.suite == "util-linux" else UL_OLD_EXPECTED_COMMIT
        return [
            {"what": f"sysfs/procfs dump {self.upstream}.tar.gz (sha256 {self.sha256}) from "
                     f"util-linux's lscpu test suite at {commit}, added in {self.added}",
             "url": f"{UL_REPO}/blob/{commit}/tests/ts/lscpu/dumps/{self.upstream}.tar.gz"},
            {"what": f"lscpu's expected output for this dump (util-linux at {expected})",
             "url": f"{UL_REPO}/blob/{expected}/tests/expected/lscpu/lscpu-{self.upstream}"},
        ]


DUMPS = [
    Dump("ul-x86_64-64cpu", "util-linux", "x86_64-64cpu",
         "79afcefd316736c75581deb0838da767821a191f958c6c4a95053fe0753566ed", "1a07cccf8 (2012)",
         "4-socket Xeon X7550 (util-linux dump): 64 of 80 possible CPUs, nodes 0,2,3 "
         "interleaved, hex cpumaps only, no node 1",
         "Intel Xeon X7550, 4 packages x 8 cores x 2 threads. possible 0-79, present = "
         "online 0-63. Nodes 0, 2 and 3 only (no node1 directory); node0's cpumap "
         "0000,55555555,55555555 is every even CPU, node2 1,5,9,..., node3 3,7,11,... The "
         "dump has no cpuN/nodeM links, no node cpulist, meminfo or distance, and no "
         "has_memory; CPUs 64-79 are in no node"),
    Dump("ul-x86_64-epyc_7451", "util-linux", "x86_64-epyc_7451",
         "8fd8ee546f8ba2e76d85731c9764e486bf5bb64e7e0450f07084752f73b9f96c", "b24c7d585 (2019)",
         "2-socket AMD EPYC 7451 (util-linux dump): 96 CPUs on 8 nodes, split lists",
         "AMD EPYC 7451, 2 sockets, 8 nodes; node k holds 6k..6k+5 and 48+6k..48+6k+5. "
         "Hex cpumaps and cpuN/nodeM links; no node cpulist, meminfo or has_memory"),
    Dump("ul-vmware_fpe", "util-linux", "vmware_fpe",
         "eca0923568a3fe01c41eb29314d2eb352ac8fe96c1dbafe1712c00122ae5eed2", "23df05103 (2019)",
         "AMD Opteron 6328 VMware guest (util-linux dump): 16 of 32 possible CPUs on 4 nodes",
         "AMD Opteron 6328 in a VMware guest. possible 0-31, present = online 0-15; 4 nodes "
         "of 4 CPUs (0-3, 4-7, 8-11, 12-15), hex cpumaps and cpuN/nodeM links; CPUs 16-31 "
         "are in no node"),
    Dump("ul-x86_64-dell_e4310", "util-linux", "x86_64-dell_e4310",
         "8e55ccd1697b60ea7d25e1e46b19710c541a193dde318e099256fd2194d8f972", "acfa47232 (2011)",
         "Dell E4310 laptop, Core i5 M560 (util-linux dump): 4 of 8 possible CPUs, one "
         "node, 256-bit cpumap",
         "Intel Core i5 M560 laptop. possible 0-7, present = online 0-3, one node whose "
         "cpumap is eight 32-bit words"),
    Dump("ul-x86_64-64cpu-linux6.2", "util-linux", "x86_64-64cpu-linux6.2",
         "d2ed6dea05a1354f9a1c0f89c3993345cafd4227a1c13ad8a81ec87382da6336", "c47031ed4 (2022)",
         "Core i7-1165G7 (util-linux dump, Linux 6.2 sysfs): 8 CPUs, one node",
         "Intel Core i7-1165G7, 8 CPUs, one node; Linux 6.2 sysfs layout"),
    Dump("ul-vbox-win", "util-linux", "vbox-win",
         "2460bc8037992b627181697a9c5aa0e4a6c68cf981c0770ff89f0b5665a13785", "0f0c55881 (2014)",
         "Core i5-3317U VirtualBox guest (util-linux dump): 2 CPUs, full node directory",
         "Intel Core i5-3317U in a VirtualBox guest, 2 vCPUs, one node; the only util-linux "
         "dump with the whole node directory (has_memory, cpulist, distance, meminfo); "
         "node/has_cpu is an empty file as recorded"),
    Dump("ul-x86_64-dellr710", "util-linux-historical", "x86_64-dellr710",
         "4c3505ba6dc9040bedb257c8163317cdb0058ebc01e862e3b5cdcc20ff9392e3", "before a292bbdec (2012)",
         "Dell R710, 2x Xeon E5540 (util-linux dump of 2012): 16 CPUs, 2 interleaved nodes, "
         "no cpu/possible",
         "Dell PowerEdge R710, 2x Intel Xeon E5540 (Nehalem, HT), RHEL 5.5. 16 CPUs; node0 "
         "holds the even CPUs, node1 the odd ones. The dump has no cpu/possible, present or "
         "online, only cpuN directories (with cpuN/online for CPUs but 0), hex cpumaps and "
         "no cpuN/nodeM links"),
    Dump("ul-x86_64-dell_poweredgeR610", "util-linux-historical", "x86_64-dell_poweredgeR610",
         "eb586b4bd2e3dfd396b690c6405326cb46c5dadc8342e5689591a77a7b7195bf", "before a292bbdec (2012)",
         "Dell R610, 2x Xeon E5520 (util-linux dump of 2012): 16 CPUs, 2 interleaved nodes, "
         "no cpu/possible",
         "Dell PowerEdge R610, 2x Intel Xeon E5520. 16 CPUs; node0 holds the even CPUs, "
         "node1 the odd ones. No cpu/possible, present or online, hex cpumaps only, no "
         "cpuN/nodeM links"),
    Dump("ul-x86_64-hpdl585", "util-linux-historical", "x86_64-hpdl585",
         "2f35e44764366a109e08a2267b810f9c386f78207f0ec6877e1fbc21cf59a1ba", "before a292bbdec (2012)",
         "HP DL585, 4x Opteron 8354 (util-linux dump of 2012): 16 CPUs, 4 interleaved nodes, "
         "no cpu/possible",
         "HP ProLiant DL585, 4x AMD Opteron 8354. 16 CPUs; node k holds k, k+4, k+8, k+12. "
         "No cpu/possible, present or online, hex cpumaps only, no cpuN/nodeM links"),
    Dump("hwloc-40intel64-4n10c+pci-conflicts", "hwloc", "40intel64-4n10c+pci-conflicts",
         "cc0238fb9af4516789d87a874c806e883a7a8aa3e3a2c9c2aa7d17006f673386", "aa488c60c (2014)",
         "4-socket Xeon E7-4870 (hwloc dump): 40 of 80 possible CPUs, 4 round-robin nodes",
         "4x Intel Xeon E7-4870 (Westmere-EX), 10 cores each, no HT. possible 0-79, present "
         "= online 0-39; 4 nodes of ~128 GiB, node k = {k, k+4, ..., k+36}; distances "
         "10/20. Old kernel: no has_memory, no cpuN/nodeM links; CPUs 40-79 are in no node"),
    Dump("hwloc-32intel64-2p8co2t+8ve", "hwloc", "32intel64-2p8co2t+8ve",
         "17a927b11cf6689acd293a47d15ce0ff52e5ac2457444be7076ec42c4ff53dee", "e17cb9634 (2021)",
         "2-socket Xeon Silver 4108 (hwloc dump): 32 of 112 possible CPUs, 2 nodes with "
         "split lists",
         "2x Intel Xeon Silver 4108, 8 cores x 2 threads each. possible 0-111, present = "
         "online 0-31; node0 0-7,16-23 and node1 8-15,24-31; node/has_cpu is an empty file",
         "Upstream pruned this dump and modified it to put the 8th NEC VE card in NUMA "
         "partitioned mode; the CPU and node files are as recorded"),
    Dump("hwloc-32em64t-2n8c+dax+nvme+mic+dimms", "hwloc", "32em64t-2n8c+dax+nvme+mic+dimms",
         "647bb286e6217f6985f9932e792d6db194579dda746fc1ec6ed16869032090b3", "9ce01f32c (2023)",
         "2-socket Xeon E5-2680 (hwloc dump): 16 of 128 possible CPUs, 2 nodes, no "
         "has_memory, no links",
         "2x Intel Xeon E5-2680 (Sandy Bridge-EP), 8 cores each, no HT. possible 0-127, "
         "present = online 0-15; nodes 0-7 and 8-15, ~16 GiB each. No has_memory (only "
         "has_normal_memory), no cpuN/nodeM links; node-state files end in a NUL byte",
         "Upstream extended the dump later with PCI slots, memory modules, NVMe and DAX "
         "devices; the CPU and node files are as recorded"),
    Dump("hwloc-memorysidecaches", "hwloc", "memorysidecaches",
         "a904da5da4d420eb7c125055b526dc0cabad6bbf32586fedb40e3f3c8fea345f", "3c0822930 (2023)",
         "2-socket Xeon Gold 6230, SNC-2 (hwloc dump): 80 CPUs on 4 interleaved nodes",
         "2x Intel Xeon Gold 6230, 20 cores x 2 threads each, sub-NUMA clustering: package "
         "0 holds nodes 0 and 2, package 1 nodes 1 and 3; node k = {c : c mod 4 = k}; "
         "distances 10/11/21; DDR as a memory-side cache in front of Optane"),
    Dump("hwloc-offline-cpu0-node0", "hwloc", "offline-cpu0-node0",
         "a401696fafab79fa39a647f1ceeac67eb89fbdb5b5c7c1806db64480f6776e02", "03bddd003 (2021)",
         "2-socket Xeon E5-2680 v3 (hwloc dump, edited): CPU 0 and node 0 offline, 192 "
         "possible CPUs",
         "2x Intel Xeon E5-2680 v3, 12 cores each. possible 0-191, present 0-23, online "
         "4-20; node/online is 1 and only node1/ exists, but the cpuN/nodeM links of the "
         "even CPUs still point at node0",
         "Upstream made this dump from a real one 'after marking cores ... offline and NUMA "
         "node 0 offline, and updating sysfs cpu/cache/node bitmap accordingly': it is "
         "hand-edited (node1's cpulist still lists offline CPUs, node1/distance still has "
         "an entry for node 0)"),
    Dump("hwloc-fakememinitiators-1np2c+1npp+gi", "hwloc", "fakememinitiators-1np2c+1npp+gi",
         "1f2deab49f88b2775cb5723e4db39c4076c0807d21f50cdba835128a88e23e03", "cf159165f (2020)",
         "constructed 8-CPU host (hwloc dump): CPU nodes 0-3 without memory, memory-only "
         "nodes 5-10",
         "8 CPUs (Xeon Gold 6230 cpuinfo), 11 nodes: nodes 0-3 have CPUs and no memory, "
         "node 4 is a generic initiator, nodes 5-10 are memory-only (DRAM and PMEM); full "
         "11x11 distance table",
         "Upstream constructed this dump ('fake' prefix): its node cpumaps pair the CPUs "
         "(0-1, 2-3, 4-5, 6-7) while its cpuN/nodeM links put CPU i on node i mod 4"),
    Dump("hwloc-20em64t-hybrid-1p6c2t+2ca4co1t", "hwloc", "20em64t-hybrid-1p6c2t+2ca4co1t",
         "84d988700b6e4cd0c1a9e1404bf90212a35a0a649caaed0558bfe265e63459db", "eda8f6379 (2023)",
         "Core i7-1370P hybrid (hwloc dump): 20 CPUs, one node",
         "Intel Core i7-1370P (Raptor Lake): 6 P-cores with HT and 8 E-cores; one node; "
         "Debian kernel 6.1.0-13-amd64"),
    Dump("hwloc-fakeheteromemtiers", "hwloc", "fakeheteromemtiers",
         "f4ce0779aa59b232e5f4026b68c9fc92712d74a999360249e27191994082a7bf", "526cdf1b7 (2022)",
         "QEMU guest with memory tiers (hwloc dump): 6 CPUs, nodes 0-2,4,6,8,9, node 2's "
         "memory not usable by GFP_KERNEL",
         "QEMU x86 guest, 6 vCPUs; node/possible 0-9, online 0-2,4,6,8,9; CPU nodes 0 "
         "(0-1), 1 (2-3), 2 (4-5); node 2 has memory but is not in has_normal_memory; "
         "nodes 4, 6, 8, 9 are CPU-less memory nodes",
         "Upstream made this in QEMU (the command line is in hwloc commit 526cdf1b7) and "
         "tweaked it later"),
    Dump("hwloc-8em64t-2s2ca2c-buggynuma", "hwloc", "8em64t-2s2ca2c-buggynuma",
         "0cb83707190c4520f3caaa7fe4658d567a9f5bf0ff9bda89561df6519eeb49c0",
         "before 245a239aa (2014)",
         "SGI Altix XE320, 2x Xeon E5472 (hwloc dump): buggy firmware, every node lists all "
         "8 CPUs",
         "SGI Altix XE320, 2x Intel Xeon E5472, 8 CPUs; 8 nodes of ~2 GiB, every "
         "node*/cpulist says 0-7, all distances 10, has_cpu empty; the cpuN/nodeM links say "
         "cpuK -> nodeK. hwloc's test calls it 'Buggy NUMA info'"),
    Dump("hwloc-fakecpuid1f-64intel64-2p4d2n2c2t", "hwloc", "fakecpuid1f-64intel64-2p4d2n2c2t",
         "cbbab5df251244913c275ae34d5df0a2f91399da09cf0771d093ac50cf8c70cb", "e99ab0f20 (2019)",
         "QEMU guest (hwloc dump): 64 CPUs on 16 nodes",
         "QEMU-generated x86 guest, 64 vCPUs, 16 nodes of 4 contiguous CPUs (~251 MiB "
         "each)",
         "Upstream generated this in QEMU ('fake' prefix) to exercise CPUID leaf 0x1f"),
]

BY_NAME = {d.name: d for d in DUMPS}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _member_filter(member, dest):
    """tarfile's "data" filter, skipping (not failing on) what it refuses: device
    nodes, absolute names and links that leave the tree, which a dump of /sys may hold
    and the scan never reads."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def unpack(archive: str, dest: str) -> str:
    """Unpack archive under dest; return the dump's top directory (holding proc/, sys/)."""
    if not hasattr(tarfile, "data_filter"):
        raise SystemExit("unpacking dumps safely needs tarfile's extraction filters "
                         "(Python 3.9.17, 3.10.12, 3.11.4 or later)")
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter=_member_filter)
    tops = [e for e in sorted(os.listdir(dest)) if os.path.isdir(os.path.join(dest, e))]
    if len(tops) != 1 or not os.path.isdir(os.path.join(dest, tops[0], "sys")):
        raise SystemExit(f"{archive}: expected one top directory holding sys/, found {tops}")
    return os.path.join(dest, tops[0])


def _kernel_of(top: str) -> Optional[str]:
    """The running kernel, from the dump's /proc/version when it has one (metadata only;
    the scan itself reads proc/sys/kernel/osrelease, which no dump holds)."""
    try:
        with open(os.path.join(top, "proc/version"), encoding="utf-8", errors="replace") as f:
            m = re.match(r"Linux version (\S+)", f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def notes_for(d: Dump, rec_kernel: Optional[str]) -> str:
    project = "hwloc" if d.suite == "hwloc" else "util-linux"
    commit = HWLOC_COMMIT if d.suite == "hwloc" else (
        UL_COMMIT if d.suite == "util-linux" else UL_OLD_COMMIT)
    path = (f"tests/hwloc/linux/{d.upstream}.tar.bz2" if d.suite == "hwloc"
            else f"tests/ts/lscpu/dumps/{d.upstream}.tar.gz")
    parts = [
        f"Converted from {project}'s test dump {path} at commit {commit} (sha256 {d.sha256}) "
        "by scripts/convert_dumps.py: the dump was unpacked and recorded as `vmxprobe record "
        "--root` records a host, so every file here is the dump's own, byte for byte, and "
        "only the files a scan reads are kept.",
        f"Machine: {d.machine}.",
    ]
    if d.caveat:
        parts.append(f"{d.caveat}.")
    parts.append("The dump has no /dev/cpu: every MSR and CPUID read is ENOENT, as "
                 "recorded; no register value is composed, so a scan cannot judge VMX and "
                 "exits 3 (or 1 when /proc/cpuinfo already settles it); the root-VMCS "
                 "plan is complete all the same.")
    if rec_kernel:
        parts.append(f"Kernel (from the dump's /proc/version): {rec_kernel}.")
    parts.append(f"License: {HWLOC_LICENSE if d.suite == 'hwloc' else UL_LICENSE}.")
    return " ".join(parts)


def convert(d: Dump, source: str) -> dict:
    archive = os.path.join(source, d.archive)
    digest = sha256(archive)
    if digest != d.sha256:
        raise SystemExit(f"{archive}: sha256 {digest}, expected {d.sha256}: not the upstream file")
    with tempfile.TemporaryDirectory(prefix="vmxprobe-dump-") as tmp:
        top = unpack(archive, tmp)
        rec = RecordingHost(LiveHost(top))
        host_scan = collect(rec)
        kernel = host_scan.kernel or _kernel_of(top)
        doc = fixture.from_recording(rec, d.name, d.description, kernel)
        doc["provenance"] = {
            "origin": "converted",
            "recorded_at": None,
            "tool_version": __version__,
            "kernel": kernel,
            "hostname": None,
            "sources": d.sources(),
            "notes": notes_for(d, kernel),
        }
        truth = ground_truth(d, source, top)
        text = json.dumps(doc, indent=1) + "\n"
        if tmp in text or top in text:
            raise SystemExit(f"{d.name}: the temporary path leaked into the fixture")
    fixture.parse(json.loads(text), d.name)  # the fixture must load
    return {"fixture": text, "truth": truth}


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _lscpu_nodes(d: Dump, source: str) -> tuple[dict[int, str], str]:
    """cpu -> lscpu's NODE column ('' when lscpu printed none), and what produced it."""
    if d.suite == "util-linux-historical":
        # lscpu 2.38.1 refuses these dumps (no cpu/possible); util-linux's own expected
        # output of 2012-2014 holds a parsable section with a Node column.
        path = os.path.join(source, f"util-linux-historical/{d.upstream}.expected")
        lines = _read_lines(path)
        header = next(i for i, l in enumerate(lines) if l.startswith("# CPU,"))
        cols = lines[header][2:].split(",")
        node_col = cols.index("Node")
        out = {}
        for line in lines[header + 1:]:
            if not line or line.startswith("#"):
                break
            fields = line.split(",")
            out[int(fields[0])] = fields[node_col]
        what = (f"the Node column of the parsable section of util-linux's expected output "
                f"tests/expected/lscpu/lscpu-{d.upstream} at {UL_OLD_EXPECTED_COMMIT} "
                "(lscpu of 2012; lscpu 2.38.1 refuses this dump, which has no cpu/possible)")
        return out, what
    lines = _read_lines(os.path.join(source, d.generated_prefix + ".lscpu-p.txt"))
    header = [l for l in lines if l.startswith("# CPU,")]
    cols = header[0][2:].split(",")
    node_col, cpu_col = cols.index("Node"), cols.index("CPU")
    out = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split(",")
        out[int(fields[cpu_col])] = fields[node_col]
    what = ("the NODE column of `lscpu -a -p=CPU,NODE,SOCKET,ONLINE --sysroot <unpacked dump>` "
            "(util-linux 2.38.1, Debian 12)")
    return out, what


def _text(path: str) -> str:
    # 2.6-era node files end in "\n\0"; the NUL is not part of the value.
    with open(path, encoding="utf-8") as f:
        return f.read().replace("\x00", "")


def _dump_links_and_lists(top: str) -> tuple[dict[int, int], dict[int, list[int]]]:
    """The dump's own cpuN/nodeM links and node lists, to check the ground truth file."""
    cpu_dir, node_dir = os.path.join(top, "sys/devices/system/cpu"), os.path.join(top, "sys/devices/system/node")
    links = {}
    for e in os.listdir(cpu_dir):
        if re.fullmatch(r"cpu\d+", e):
            nodes = [int(x[4:]) for x in os.listdir(os.path.join(cpu_dir, e)) if re.fullmatch(r"node\d+", x)]
            if nodes:
                links[int(e[3:])] = min(nodes)
    lists: dict[int, list[int]] = {}
    if os.path.isdir(node_dir):
        for e in sorted(os.listdir(node_dir), key=lambda x: (len(x), x)):
            if not re.fullmatch(r"node\d+", e):
                continue
            base = os.path.join(node_dir, e)
            if os.path.exists(os.path.join(base, "cpulist")):
                cpus = parse_cpulist(_text(os.path.join(base, "cpulist")))
            elif os.path.exists(os.path.join(base, "cpumap")):
                cpus = parse_cpumap(_text(os.path.join(base, "cpumap")))
            else:
                continue
            for c in cpus:
                lists.setdefault(c, []).append(int(e[4:]))
    return links, {c: sorted(v) for c, v in lists.items()}


def ground_truth(d: Dump, source: str, top: str) -> str:
    """tests/data/topology/<name>.csv: one row per CPU, from the files recorded beside the
    dumps, checked against the dump itself."""
    rows = list(csv.reader(
        l for l in _read_lines(os.path.join(source, d.generated_prefix + ".sysfs-cpu-node.csv"))
        if not l.startswith("#")))
    lscpu, lscpu_what = _lscpu_nodes(d, source)
    links, lists = _dump_links_and_lists(top)
    out = io.StringIO()
    src = d.sources()[0]
    out.write(f"# Ground truth CPU -> NUMA node for fixture {d.name}, written by "
              "scripts/convert_dumps.py.\n")
    out.write(f"# Dump: {src['url']}\n#   (sha256 {d.sha256})\n")
    out.write("# possible/present/online: 1 or 0, whether the dump's cpu/possible, present, online list "
              "the CPU; empty when the dump has no such file.\n")
    out.write("# link: the node of the dump's cpuN/nodeM symlink, i.e. cpu_to_node() as that "
              "kernel exported it; empty: no link.\n")
    out.write("# lists: the node(s) whose node*/cpulist (or hex cpumap) holds the CPU, "
              "';'-separated; empty: none.\n")
    out.write(f"# lscpu: {lscpu_what}; empty: lscpu printed no node; '-': lscpu did not list "
              "the CPU.\n")
    out.write("cpu,possible,present,online,link,lists,lscpu\n")
    for row in rows:
        cpu, poss, pres, onl, node_lists, link = row
        c = int(cpu)
        if (str(links[c]) if c in links else "") != link:
            raise SystemExit(f"{d.name}: ground truth says cpu{c} link {link!r}, the dump "
                             f"says {links.get(c)!r}")
        if ";".join(map(str, lists.get(c, []))) != node_lists:
            raise SystemExit(f"{d.name}: ground truth says cpu{c} in {node_lists!r}, the dump "
                             f"says {lists.get(c)!r}")
        out.write(",".join([cpu, poss, pres, onl, link, node_lists, lscpu.get(c, "-")]) + "\n")
    return out.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, metavar="DIR",
                    help="folder holding the upstream archives, expected outputs and generated/")
    ap.add_argument("--fixtures", default=os.path.join(REPO, "fixtures"))
    ap.add_argument("--test-data", default=os.path.join(REPO, "tests", "data", "topology"))
    ap.add_argument("--only", nargs="*", metavar="NAME", help="convert only these fixtures")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 when a file differs from what conversion gives")
    args = ap.parse_args(argv)
    chosen = DUMPS if not args.only else [BY_NAME[n] for n in args.only]
    stale = []
    for d in chosen:
        out = convert(d, args.source)
        targets = ((os.path.join(args.fixtures, d.name + ".json"), out["fixture"]),
                   (os.path.join(args.test_data, d.name + ".csv"), out["truth"]))
        for path, text in targets:
            old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
            if args.check:
                if old != text:
                    stale.append(path)
                continue
            if old != text:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
        print(f"{d.name}: {len(out['fixture'])} bytes", file=sys.stderr)
    if stale:
        print("out of date: " + ", ".join(os.path.relpath(p, REPO) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
