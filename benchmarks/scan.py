#!/usr/bin/env python3
"""Benchmarks at fleet scale: scan, plan and start-up, side by side with the C tools.

    python3 -m benchmarks.scan                   # 64, 1024 and 8192 CPUs, medians of 5 runs
    python3 -m benchmarks.scan --runs 9 --check  # exit 1 when a target is missed

(from the repository root). Scan: a --root tree per size (tests/hostgen.py, with a
/proc/cpuinfo as large as a real host's), scanned by `vmxprobe scan --root` and read by
`rdmsr -a` from msr-tools, one process per MSR index that vmxprobe reads, inside
`unshare -m` with the tree's dev/cpu bind-mounted over /dev/cpu. Each run's wall time,
CPU time and peak resident memory come from wait4() of that run alone. The cost of the
namespace and the mount is measured on its own and taken off rdmsr's time, so the floor
is rdmsr's reading alone.

Plan: materialisation of the root-VMCS plan for 8192 CPUs, in a child process, with
the memory it takes beyond the 8192 pages themselves.

Start-up: `vmxprobe --version` and a scan of a two-CPU fixture, against
`python3 -c pass` with the same interpreter, flags and environment.

Nothing is installed. rdmsr needs msr-tools (Debian: apt-get install msr-tools),
unshare (util-linux), root, and /dev/cpu as a mount point; without them that column is
skipped with a note. docs/benchmarks.md says what each number means.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

from tests import REPO, hostgen

PAGE = 4096
MIB = 1 << 20
# Every capability MSR index vmxprobe may read lies below this offset: the tree's msr
# files are extended to it, so each read returns 8 bytes on both sides (see tree()).
MSR_SPAN = 0x493 + 8

TARGET_FLOOR_RATIO = 1.0  # scan time / rdmsr floor, at the largest size
TARGET_FLAT = 1.25  # time per CPU at the largest size / the smallest per-CPU time
TARGET_EXTRA_MIB = 64  # peak RSS at the largest size, beyond the plan's pages
TARGET_STARTUP_RATIO = 2.5  # vmxprobe --version / python3 -c pass

# /proc/cpuinfo as a 4th-generation Xeon host shows it: about 2.5 KiB per CPU, 20 MiB at
# 8192 CPUs. hostgen's own cpuinfo is a few words per CPU, which would hide what reading
# and holding the real file costs.
FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
    "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon "
    "pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq "
    "dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 "
    "x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch "
    "cpuid_fault epb cat_l3 cat_l2 cdp_l3 intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp "
    "ibrs_enhanced tpr_shadow flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep "
    "bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb "
    "intel_pt avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc "
    "cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect user_shstk avx_vnni "
    "avx512_bf16 wbnoinvd dtherm ida arat pln pts hfi vnmi avx512vbmi umip pku ospke waitpkg "
    "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 "
    "rdpid bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk "
    "pconfig arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities"
)
VMX_FLAGS = (
    "vnmi preemption_timer posted_intr invvpid ept_x_only ept_ad ept_1gb ept_5level "
    "flexpriority apicv tsc_offset vtpr mtf vapic ept vpid unrestricted_guest vapic_reg vid ple "
    "shadow_vmcs pml ept_mode_based_exec tsc_scaling usr_wait_pause notify_vm_exiting ipi_virt"
)
BUGS = "spectre_v1 spectre_v2 spec_store_bypass swapgs eibrs_pbrsb bhi"


def cpuinfo(cpus, per_socket: int) -> str:
    blocks = []
    for c in cpus:
        blocks.append(
            f"processor\t: {c}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
            f"model name\t: Intel(R) Xeon(R) CPU (synthetic)\nstepping\t: 4\n"
            f"microcode\t: 0x2007006\ncpu MHz\t\t: {2000 + c % 7 * 100}.000\n"
            f"cache size\t: 107520 KB\nphysical id\t: {c // per_socket}\nsiblings\t: {per_socket}\n"
            f"core id\t\t: {c % per_socket // 2}\ncpu cores\t: {per_socket // 2}\n"
            f"apicid\t\t: {c}\ninitial apicid\t: {c}\nfpu\t\t: yes\nfpu_exception\t: yes\n"
            f"cpuid level\t: 32\nwp\t\t: yes\nflags\t\t: {FLAGS}\nvmx flags\t: {VMX_FLAGS}\n"
            f"bugs\t\t: {BUGS}\nbogomips\t: 4000.00\nclflush size\t: 64\ncache_alignment\t: 64\n"
            "address sizes\t: 46 bits physical, 57 bits virtual\npower management:\n"
        )
    return "\n".join(blocks) + "\n"


def nodes_for(n: int) -> int:
    # 256 CPUs a node up to 32 nodes: a 32-socket host at 8192 CPUs.
    return max(1, min(32, n // 256))


def tree(root: str, n: int) -> None:
    """A --root tree of n CPUs whose msr files answer every index vmxprobe reads.

    hostgen writes each register at its offset in a plain file, so only 0x3a and 0x480
    hold real values. A capability MSR (0x481 on) read from such a file starts inside
    0x480's eight bytes; past the end of the file it is a short read, which vmxprobe
    records and rdmsr -a stops at. The files are extended with zeros to MSR_SPAN, so that
    every read returns eight bytes on both sides. The capability values are then
    overlapping bytes of IA32_VMX_BASIC and zeros, the same on every CPU: kvm_intel's
    checks fail on each CPU, the report holds a refusal per CPU, and the scan does the
    reading, comparing and reporting of a real host, with more to say.
    """
    doc = hostgen.synthetic(n, nodes_for(n))
    doc_files = doc["files"]
    online = list(range(n))
    doc_files["proc/cpuinfo"] = cpuinfo(online, per_socket=max(1, min(n, 256)))
    hostgen.write_tree(doc, root)
    for c in online:
        os.truncate(os.path.join(root, "dev", "cpu", str(c), "msr"), MSR_SPAN)
    with open(os.path.join(root, ".bench-tree"), "w") as f:
        f.write(f"{n}\n")


def read_marker(root: str):
    try:
        with open(os.path.join(root, ".bench-tree")) as f:
            return f.read().strip()
    except OSError:
        return None


def reads_per_cpu(root: str, n: int) -> tuple[list[int], int]:
    """The MSR indexes vmxprobe reads on each CPU of the tree (the same on every CPU),
    and the number of CPUID reads per CPU; every read must return all its bytes."""
    from vmxprobe.host.readings import read_host
    from vmxprobe.host.sources import LiveHost, RecordingHost

    # What `vmxprobe record` would keep: every read, CPU by CPU (a recording scan reads
    # in this process alone, so that it sees every read).
    rec = RecordingHost(LiveHost(root))
    scan = read_host(rec)
    msr: dict[int, list[int]] = {}
    for index, per_cpu in rec.msr.items():  # indexes in the order first read
        for cpu in per_cpu:
            msr.setdefault(cpu, []).append(index)
    cpuid: dict[int, int] = {}
    for per_cpu in rec.cpuid.values():
        for cpu in per_cpu:
            cpuid[cpu] = cpuid.get(cpu, 0) + 1
    shapes = {tuple(v) for v in msr.values()}
    if len(msr) != n or len(shapes) != 1:
        raise SystemExit(
            f"bench: the scan of {root} read {len(msr)} CPUs in {len(shapes)} "
            "different ways; expected every CPU alike"
        )
    bad = sorted({r.errno or "?" for p in scan.cpus.values() for r in p.msr.values() if not r.ok})
    if bad:
        raise SystemExit(f"bench: MSR reads on the tree failed ({', '.join(bad)})")
    (shape,) = shapes
    return list(shape), max(cpuid.values())


# --- running and timing ------------------------------------------------------------------


# Children are started by a small helper, not by this process: a child's ru_maxrss
# starts from the resident size of the memory it was forked with (exec_mmap() records
# the old mm's high-water mark), so a child of this process would report at least this
# process's peak. The helper forks from a bare interpreter of a few MiB, which bounds
# only the smallest children (rdmsr), whose memory is not reported.
RUNNER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    null = os.open(os.devnull, os.O_RDWR)
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if req["cwd"]:
                os.chdir(req["cwd"])
            os.execve(req["argv"][0], req["argv"], req["env"])
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    os.close(null)
    rc = os.waitstatus_to_exitcode(status)
    print(json.dumps({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
                      "rss": ru.ru_maxrss / 1024, "rc": rc}), flush=True)
"""


class Runner:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-I", "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def timed(self, argv, env=None, cwd=None) -> dict:
        """Run argv once, output discarded: wall seconds, CPU seconds and peak RSS (MiB)
        of that child alone (wait4), and its exit code."""
        argv = [shutil.which(argv[0]) or argv[0]] + list(argv[1:])
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env or dict(os.environ), "cwd": cwd}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("bench: the helper that runs the commands died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("VMXPROBE_DEBUG", None)
    return env


def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def rdmsr_status() -> tuple[bool, str]:
    """Can rdmsr -a read a tree here? (ok, note)."""
    if not which("rdmsr"):
        return False, (
            "rdmsr not found: install msr-tools (Debian/Ubuntu: "
            "sudo apt-get install msr-tools) for the C floor"
        )
    if not which("unshare"):
        return False, "unshare (util-linux) not found: rdmsr cannot be pointed at the tree"
    if os.geteuid() != 0:
        return False, "not root: unshare -m and mount --bind need CAP_SYS_ADMIN (run with sudo)"
    if not os.path.isdir("/dev/cpu"):
        return False, (
            "/dev/cpu does not exist, so there is nothing to bind the tree over (modprobe msr creates it)"
        )
    return True, ""


_BIND = 'mount --bind "$1/dev/cpu" /dev/cpu || exit 90'


def rdmsr_argv(root, indexes):
    loop = 'shift; for r in "$@"; do rdmsr -a "$r" || exit $?; done'
    return [
        which("unshare"),
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        f"{_BIND}; {loop}",
        "sh",
        root,
    ] + [f"0x{i:x}" for i in indexes]


def setup_argv(root):
    return [which("unshare"), "-m", "--propagation", "private", "sh", "-c", _BIND, "sh", root]


SCAN_CHILD = r"""
import json, resource, sys, time
from vmxprobe.host.sources import LiveHost
from vmxprobe.pipeline import run
from vmxprobe.render.text import render_text
root, runs = sys.argv[1], int(sys.argv[2])
out, spent = [], 0.0

def cpu_time():  # this process and the workers it has reaped (host/workers.py)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

# The first scan warms up; then at least `runs` scans and half a second, so that the
# small trees are timed over many scans.
while len(out) < runs + 1 or spent < 0.5:
    wall, cpu = time.perf_counter(), cpu_time()
    result = run(LiveHost(root))
    render_text(result)
    out.append([time.perf_counter() - wall, cpu_time() - cpu])
    spent += out[-1][0] if len(out) > 1 else 0.0
    del result
print(json.dumps(out[1:]))
"""

PLAN_CHILD = r"""
import gc, json, sys, time, tracemalloc
from tests import hostgen
from vmxprobe.host.fixture import parse
from vmxprobe.host.sources import FixtureHost
from vmxprobe.host.topology import read_topology
from vmxprobe.kernel.numa import cpu_to_node
from vmxprobe.kernel.pages import Placement, materialize
from vmxprobe.kernel.root_vmcs import build_plan
n, runs, nodes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

topo = read_topology(FixtureHost(parse(hostgen.synthetic(n, nodes))))
placed = cpu_to_node(topo)
out = []
for i in range(runs + 1):
    gc.collect()
    # Reset the peak (VmHWM) to the current RSS, so that the peak below is this run's.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    # The first run also counts the Python objects it allocates (the pages are mmap'd,
    # outside what tracemalloc sees): the memory beyond the pages themselves.
    if i == 0:
        tracemalloc.start()
    t0 = time.perf_counter()
    plan = build_plan(topo, placed, 4)
    t1 = time.perf_counter()
    m = materialize(plan)
    t2 = time.perf_counter()
    ver = m.verify(plan, Placement.for_source(False))
    t3 = time.perf_counter()
    peak = status("VmHWM")
    objects = tracemalloc.get_traced_memory()[1] if i == 0 else 0
    tracemalloc.stop()
    m.release()
    t4 = time.perf_counter()
    assert m.pages == {} and ver.ok == n, ver
    out.append({"build": t1 - t0, "materialize": t2 - t1, "verify": t3 - t2,
                "release": t4 - t3, "total": t4 - t0, "peak_over_base": peak - base,
                "objects": objects})
    del plan, m, ver
# Memory from the first run, times from the others (the first is traced).
print(json.dumps(out))
"""


def child_json(argv, env):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:4])} ...: exit {r.returncode}\n{r.stderr}")
    return json.loads(r.stdout)


# --- the machine -------------------------------------------------------------------------


def machine() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    rdmsr_version = None
    if which("rdmsr"):
        r = subprocess.run([which("rdmsr"), "--version"], capture_output=True, text=True)
        rdmsr_version = (r.stdout or r.stderr).strip().split("version")[-1].strip() or None
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "msr_tools": rdmsr_version,
        "loadavg_start": os.getloadavg(),
    }


# --- the benchmarks ----------------------------------------------------------------------


def bench_scan(run, work, sizes, runs, env, use_rdmsr, log):
    rows = []
    for n in sizes:
        root = os.path.join(work, f"tree-{n}")
        if read_marker(root) != str(n):
            log(f"  building a tree of {n} CPUs ...")
            shutil.rmtree(root, ignore_errors=True)
            tree(root, n)
        indexes, cpuid_reads = reads_per_cpu(root, n)
        scan = [sys.executable, "-m", "vmxprobe", "scan", "--root", root]
        # Warm the page cache and check both sides read every CPU.
        r = subprocess.run(scan, capture_output=True, text=True, env=env, cwd=REPO)
        if r.returncode not in (0, 1) or f"read 0-{n - 1}" not in r.stdout:
            raise SystemExit(f"bench: vmxprobe scan --root {root}: exit {r.returncode}\n{r.stderr}")
        if use_rdmsr:
            r = subprocess.run(rdmsr_argv(root, indexes), capture_output=True, text=True)
            if r.returncode != 0 or len(r.stdout.split()) != n * len(indexes):
                raise SystemExit(f"bench: rdmsr -a on {root}: exit {r.returncode}: {r.stderr.strip()}")
        log(f"  {n} CPUs: {runs} runs of vmxprobe" + (", rdmsr -a and the mount alone" if use_rdmsr else ""))
        v, rd, setup = [], [], []
        for _ in range(runs):  # interleaved, so that a change in load hits each side alike
            v.append(run.timed(scan, env=env, cwd=REPO))
            if use_rdmsr:
                rd.append(run.timed(rdmsr_argv(root, indexes)))
                setup.append(run.timed(setup_argv(root)))
        row = {
            "cpus": n,
            "msr_reads_per_cpu": len(indexes),
            "cpuid_reads_per_cpu": cpuid_reads,
            "msr_indexes": [f"0x{i:x}" for i in indexes],
            "wall": med(v, "wall"),
            "cpu": med(v, "cpu"),
            "rss_mib": max(x["rss"] for x in v),
            "exit": sorted({x["rc"] for x in v}),
        }
        row["per_cpu_us"] = row["wall"] / n * 1e6
        if use_rdmsr:
            row.update(rdmsr_wall=med(rd, "wall"), rdmsr_cpu=med(rd, "cpu"), setup_wall=med(setup, "wall"))
            row["floor"] = max(row["rdmsr_wall"] - row["setup_wall"], 1e-9)
            row["ratio"] = row["wall"] / row["floor"]
            row["cpu_ratio"] = row["cpu"] / max(row["rdmsr_cpu"] - med(setup, "cpu"), 1e-9)
        rows.append(row)
    # Time per CPU inside one process, the sizes taken in turn, round after round, so
    # that a change in the machine's speed during the run hits every size alike.
    log(f"  in-process scans: {runs} rounds over the sizes")
    inproc: dict[int, list] = {n: [] for n in sizes}
    for _ in range(runs):
        for n in sizes:
            root = os.path.join(work, f"tree-{n}")
            inproc[n] += child_json([sys.executable, "-c", SCAN_CHILD, root, "1"], env)
    for row in rows:
        got = inproc[row["cpus"]]
        row["in_process"] = statistics.median(w for w, _ in got)
        row["in_process_cpu"] = statistics.median(c for _, c in got)
        # Per CPU from CPU time: on a shared machine wall time also counts the waits for
        # a core, which have nothing to do with the number of CPUs scanned.
        row["in_process_per_cpu_us"] = row["in_process_cpu"] / row["cpus"] * 1e6
    return rows


def bench_plan(n, runs, env, log):
    log(f"  plan of {n} pages: {runs} runs")
    out = child_json([sys.executable, "-c", PLAN_CHILD, str(n), str(runs), "-", str(nodes_for(n))], env)
    res = {k: statistics.median(r[k] for r in out[1:]) for k in out[0]}
    res["pages"] = n
    res["pages_mib"] = n * PAGE / MIB
    res["beyond_pages_mib"] = out[0]["objects"] / MIB
    res["rss_growth_mib"] = out[0]["peak_over_base"] / MIB
    return res


def bench_startup(run, work, runs, env, log):
    two = os.path.join(work, "two-cpu.json")
    with open(two, "w") as f:
        json.dump(hostgen.synthetic(2, 1), f)
    py = sys.executable
    cmds = {
        "python3 -c pass": [py, "-c", "pass"],
        "vmxprobe --version": [py, "-m", "vmxprobe", "--version"],
        "vmxprobe scan (2-CPU fixture)": [py, "-m", "vmxprobe", "scan", "--fixture", two],
        "python3 -I -c pass": [py, "-I", "-c", "pass"],
        "python3 -S -c pass": [py, "-S", "-c", "pass"],
    }
    n = max(11, 2 * runs + 1)
    log(f"  start-up: {n} runs of each")
    for argv in cmds.values():  # warm
        run.timed(argv, env=env, cwd=REPO)
    got = {k: [] for k in cmds}
    for _ in range(n):
        for k, argv in cmds.items():
            got[k].append(run.timed(argv, env=env, cwd=REPO))
    return {
        k: {"wall": med(v, "wall"), "cpu": med(v, "cpu"), "rss_mib": max(x["rss"] for x in v), "runs": n}
        for k, v in got.items()
    }


# --- the report --------------------------------------------------------------------------


def ms(s):
    return f"{s * 1000:.0f} ms" if s >= 0.0995 else f"{s * 1000:.1f} ms"


# Where to look when a target is missed.
WHY = {
    "floor": (
        "what stands between vmxprobe and rdmsr is CPython's cost per read (a call, "
        "a Reading, the GIL around each pread) and the work the scan does beyond the "
        "reads: CPUID, sysfs topology, /proc/cpuinfo, the verdict, one mmap per page, the "
        "report (docs/benchmarks.md); profile with python3 -m cProfile -s tottime -m "
        "vmxprobe scan --root TREE"
    ),
    "flat": (
        "time per CPU grows with the host: something is worse than linear; profile "
        "the largest tree with python3 -m cProfile -s tottime -m vmxprobe scan --root TREE"
    ),
    "memory": (
        "look for per-CPU objects that could be shared: a tracemalloc snapshot "
        "after pipeline.run() on the largest tree, grouped by line"
    ),
    "startup": "see what --version imports: python3 -X importtime -m vmxprobe --version",
}


def why(res, which_: str) -> str:
    if which_ == "floor":
        big = res["scan"][-1]
        fixed = res["startup"]["vmxprobe scan (2-CPU fixture)"]["wall"]
        if fixed > 0.3 * big["wall"]:
            return (
                f"at {big['cpus']} CPUs the scan is mostly start-up: a scan of two CPUs "
                f"takes {ms(fixed)} of interpreter start, imports and report, which rdmsr "
                "does not pay, and the target is for hosts where the reads dominate; beyond start-up, "
                + WHY[which_]
            )
    return WHY[which_]


def targets(res) -> list[tuple[bool, str, str]]:
    out = []
    rows = res["scan"]
    big = rows[-1]
    if "ratio" in big:
        out.append(
            (
                big["ratio"] <= TARGET_FLOOR_RATIO,
                "floor",
                f"scan of {big['cpus']} CPUs within {TARGET_FLOOR_RATIO:g}x of the rdmsr floor "
                f"for the same reads: {big['ratio']:.2f}x ({ms(big['wall'])} against "
                f"{ms(big['floor'])})",
            )
        )
    else:
        out.append(
            (
                None,
                "floor",
                f"scan within {TARGET_FLOOR_RATIO:g}x of the rdmsr floor: not measured ({res['rdmsr_note']})",
            )
        )
    if len(rows) > 1:
        smallest = min(r["in_process_per_cpu_us"] for r in rows[:-1])
        flat = big["in_process_per_cpu_us"] / smallest
        out.append(
            (
                flat <= TARGET_FLAT,
                "flat",
                f"time per CPU flat from {rows[0]['cpus']} to {big['cpus']} CPUs: "
                + ", ".join(f"{r['in_process_per_cpu_us']:.0f} us" for r in rows)
                + f" per CPU; {big['cpus']} CPUs at {flat:.2f}x the lowest of the smaller sizes "
                f"(target <= {TARGET_FLAT:g}x)",
            )
        )
    pages = big["cpus"] * PAGE / MIB
    extra = big["rss_mib"] - pages
    out.append(
        (
            extra < TARGET_EXTRA_MIB,
            "memory",
            f"peak memory at {big['cpus']} CPUs: {big['rss_mib']:.1f} MiB, {extra:.1f} MiB beyond "
            f"the {pages:.0f} MiB of plan pages (target < {TARGET_EXTRA_MIB} MiB, a bare "
            f"interpreter included)",
        )
    )
    st = res["startup"]
    ratio = st["vmxprobe --version"]["wall"] / st["python3 -c pass"]["wall"]
    out.append(
        (
            ratio < TARGET_STARTUP_RATIO,
            "startup",
            f"vmxprobe --version at {ratio:.2f}x python3 -c pass "
            f"({ms(st['vmxprobe --version']['wall'])} against {ms(st['python3 -c pass']['wall'])}; "
            f"target < {TARGET_STARTUP_RATIO:g}x)",
        )
    )
    return out


def render(res) -> str:
    m = res["machine"]
    lines = [
        f"vmxprobe benchmarks: medians of {res['runs']} runs",
        f"machine: {m['cpu_model']}; {m['logical_cpus']} logical CPUs "
        f"({m['usable_cpus']} usable); kernel {m['kernel']}; {m['implementation']} "
        f"{m['python']} ({m['executable']}); msr-tools {m['msr_tools'] or '-'}",
        "load average (1, 5, 15 min): at start "
        + " ".join(f"{x:.2f}" for x in m["loadavg_start"])
        + ", at end "
        + " ".join(f"{x:.2f}" for x in m["loadavg_end"]),
        "",
    ]
    rows = res["scan"]
    r0 = rows[0]
    lines.append(
        f"Scan of --root trees: per CPU, vmxprobe reads {r0['msr_reads_per_cpu']} MSRs "
        f"({', '.join(r0['msr_indexes'])}) and {r0['cpuid_reads_per_cpu']} CPUID leaves"
        + (
            f"; rdmsr -a reads the same {r0['msr_reads_per_cpu']} MSRs, one process per index"
            if "ratio" in r0
            else ""
        )
    )
    head = (
        f"{'CPUs':>6} {'vmxprobe':>10} {'per CPU':>9} {'CPU time':>9} {'peak RSS':>9} "
        f"{'in-proc':>9} {'per CPU':>8}"
    )
    if "ratio" in r0:
        head += f" {'rdmsr':>9} {'mount':>8} {'floor':>9} {'ratio':>6} {'CPU ratio':>9}"
    lines.append(head)
    for r in rows:
        line = (
            f"{r['cpus']:>6} {ms(r['wall']):>10} {r['per_cpu_us']:>6.0f} us {ms(r['cpu']):>9} "
            f"{r['rss_mib']:>5.1f} MiB {ms(r['in_process_cpu']):>9} {r['in_process_per_cpu_us']:>5.0f} us"
        )
        if "ratio" in r:
            line += (
                f" {ms(r['rdmsr_wall']):>9} {ms(r['setup_wall']):>8} {ms(r['floor']):>9} "
                f"{r['ratio']:>5.2f}x {r['cpu_ratio']:>8.2f}x"
            )
        lines.append(line)
    lines.append(
        "  vmxprobe: `vmxprobe scan --root TREE` (text report), wall time, CPU time and peak "
        "RSS of the process (its workers' CPU time included, their peak RSS counted as the "
        "largest, not summed); in-proc: CPU time of the same scan inside one process and its "
        "workers, without interpreter start-up and imports"
    )
    if "ratio" in r0:
        lines.append(
            "  rdmsr: `rdmsr -a INDEX` per index in `unshare -m` with the tree's dev/cpu bound "
            "over /dev/cpu; mount: the namespace and the bind mount alone; floor = rdmsr - mount; "
            "ratio = vmxprobe / floor, in wall time (the target) and in CPU time"
        )
    else:
        lines.append(f"  rdmsr column skipped: {res['rdmsr_note']}")
    lines.append(
        f"  exit codes of the scans: {sorted({c for r in rows for c in r['exit']})} (1: the "
        "tree's capability MSRs are overlapping bytes, which kvm_intel refuses on every CPU)"
    )
    p = res["plan"]
    lines += [
        "",
        f"Plan materialisation, {p['pages']} pages ({p['pages_mib']:.0f} MiB), placement simulated:",
        f"  build {ms(p['build'])}, mmap and stamp {ms(p['materialize'])}, verify {ms(p['verify'])}, "
        f"release {ms(p['release'])}: {ms(p['total'])} in all, "
        f"{p['total'] / p['pages'] * 1e6:.1f} us per page",
        f"  memory: {p['beyond_pages_mib']:.2f} MiB of Python objects beyond the pages themselves "
        f"(tracemalloc peak); resident size grew {p['rss_growth_mib']:.1f} MiB in all",
    ]
    st = res["startup"]
    base = st["python3 -c pass"]["wall"]
    lines += ["", "Start-up (same interpreter, flags and environment):"]
    for k, v in st.items():
        lines.append(
            f"  {k:<32} {ms(v['wall']):>9}  {v['wall'] / base:>5.2f}x  CPU {ms(v['cpu']):>8}  "
            f"peak RSS {v['rss_mib']:.1f} MiB"
        )
    lines += ["", "Targets:"]
    for ok, which_, text in res["targets"]:
        lines.append(f"  [{'met' if ok else 'skip' if ok is None else 'MISSED'}] {text}")
        if ok is False:
            lines.append(f"         why: {why(res, which_)}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=5,
        help="runs per measurement; medians are reported (default 5, at least 5 on a shared machine)",
    )
    ap.add_argument(
        "--cpus",
        default="64,1024,8192",
        help="tree sizes, comma-separated; targets apply to the largest (default 64,1024,8192)",
    )
    ap.add_argument(
        "--workdir",
        help="keep the trees here and reuse them on the next run "
        "(default: a temporary directory, removed at the end)",
    )
    ap.add_argument("--no-rdmsr", action="store_true", help="skip the rdmsr column")
    ap.add_argument("--json", metavar="FILE", help="also write the raw results to FILE")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    sizes = sorted({int(x) for x in args.cpus.split(",") if x.strip()})
    if not sizes or sizes[0] < 2:
        ap.error("--cpus: give sizes of at least 2 CPUs")
    if args.runs < 1:
        ap.error("--runs: at least 1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if importlib.util.find_spec("click") is None:  # vmxprobe's one dependency
        ap.error("click is not importable: python3 -m pip install click (or pip install -e .)")

    # Bytecode as `pip install` leaves it: without it, every start would compile the
    # package (PYTHONDONTWRITEBYTECODE=1 environments never write it).
    compileall.compile_dir(os.path.join(REPO, "vmxprobe"), quiet=1)
    env = child_env()
    res = {"runs": args.runs, "machine": machine()}
    use_rdmsr, note = (False, "--no-rdmsr given") if args.no_rdmsr else rdmsr_status()
    res["rdmsr_note"] = note
    if not use_rdmsr:
        log(f"bench: rdmsr column skipped: {note}")
    work = args.workdir or tempfile.mkdtemp(prefix="vmxprobe-bench-")
    os.makedirs(work, exist_ok=True)
    run = Runner()
    try:
        log("scan:")
        res["scan"] = bench_scan(run, work, sizes, args.runs, env, use_rdmsr, log)
        log("plan:")
        res["plan"] = bench_plan(sizes[-1], args.runs, env, log)
        log("start-up:")
        res["startup"] = bench_startup(run, work, args.runs, env, log)
    finally:
        run.close()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["targets"] = targets(res)
    sys.stdout.write(render(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    missed = [t for ok, _, t in res["targets"] if ok is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
