#!/usr/bin/env python3
"""The scan against rdmsr on a real msr driver, for information.

    sudo python3 -m benchmarks.msr_driver              # this host's /dev/cpu/N/msr
    sudo python3 -m benchmarks.msr_driver --guest 8    # inside an 8-vCPU QEMU guest

(from the repository root). benchmarks/scan.py times the scan on a file tree, where a
read is a page-cache copy. On a real msr driver each read is a call to the CPU that
owns the register (rdmsr_safe_on_cpu(), an IPI the reader waits for), so the cost of a
read and the gain from reading CPUs in parallel are the driver's. This script times
`vmxprobe scan --format json` against `rdmsr -a` run once per MSR index the scan reads
on this host (the same reads, in C), each run's wall and CPU time from wait4().

--guest N boots Debian's kernel under QEMU (tests/vm/harness.py: virtme-ng, TCG, no
KVM) with N vCPUs and runs this script there: TCG emulates the IPIs on the host's
cores, so the figures say how the two compare on the driver's path, not how fast a
real host is. Needs root, msr-tools (rdmsr) and the msr module.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from tests import REPO


def indexes_read() -> list[int]:
    """The MSR indexes a scan of this host reads on CPU 0, in the order it reads them."""
    from vmxprobe.host.readings import read_host
    from vmxprobe.host.sources import LiveHost, RecordingHost

    rec = RecordingHost(LiveHost("/"))
    read_host(rec)
    return [index for index, per_cpu in rec.msr.items() if 0 in per_cpu]


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s of the child, exit status) of one run, output discarded."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(runs: int) -> dict:
    rdmsr = shutil.which("rdmsr") or shutil.which("rdmsr", path="/usr/sbin:/sbin")
    if rdmsr is None:
        raise SystemExit("msr_driver: rdmsr not found: install msr-tools (apt-get install msr-tools)")
    if not os.path.exists("/dev/cpu/0/msr"):
        subprocess.run(["modprobe", "msr"], check=False)
    if not os.access("/dev/cpu/0/msr", os.R_OK):
        raise SystemExit("msr_driver: /dev/cpu/0/msr is not readable: run as root with the msr module")
    indexes = indexes_read()
    loop = 'for r in "$@"; do "$0" -a "$r" >/dev/null || exit $?; done'
    floor_argv = ["sh", "-c", loop, rdmsr] + [f"0x{i:x}" for i in indexes]
    scan_argv = [sys.executable, "-m", "vmxprobe", "scan", "--format", "json"]
    # What any Python command costs here before it reads a register: under TCG an
    # interpreter start is most of a scan.
    start_argv = [sys.executable, "-m", "vmxprobe", "--version"]
    scan, floor, start = [], [], []
    for _ in range(runs + 1):  # the first of each warms the caches; not counted
        scan.append(timed(scan_argv))
        floor.append(timed(floor_argv))
        start.append(timed(start_argv))
    scan, floor, start = scan[1:], floor[1:], start[1:]
    if any(rc != 0 for *_, rc in floor):
        raise SystemExit("msr_driver: rdmsr -a failed on an index the scan reads (a register that faults?)")
    return {
        "cpus": len(os.listdir("/dev/cpu")) - sum(1 for n in os.listdir("/dev/cpu") if not n.isdigit()),
        "indexes": len(indexes),
        "runs": runs,
        "scan_exit": sorted({rc for *_, rc in scan}),
        "scan_wall_ms": 1000 * statistics.median(w for w, _, _ in scan),
        "scan_cpu_ms": 1000 * statistics.median(c for _, c, _ in scan),
        "rdmsr_wall_ms": 1000 * statistics.median(w for w, _, _ in floor),
        "rdmsr_cpu_ms": 1000 * statistics.median(c for _, c, _ in floor),
        "startup_wall_ms": 1000 * statistics.median(w for w, _, _ in start),
        "startup_cpu_ms": 1000 * statistics.median(c for _, c, _ in start),
        "kernel": os.uname().release,
    }


def render(r: dict) -> str:
    return (
        f"{r['cpus']} CPUs, {r['indexes']} MSR indexes per CPU, kernel {r['kernel']}, "
        f"medians of {r['runs']} runs\n"
        f"  vmxprobe scan: {r['scan_wall_ms']:.0f} ms wall, {r['scan_cpu_ms']:.0f} ms CPU "
        f"(exit {','.join(map(str, r['scan_exit']))})\n"
        f"  rdmsr -a x {r['indexes']}: {r['rdmsr_wall_ms']:.0f} ms wall, {r['rdmsr_cpu_ms']:.0f} ms CPU\n"
        f"  vmxprobe --version (start-up alone): {r['startup_wall_ms']:.0f} ms wall, "
        f"{r['startup_cpu_ms']:.0f} ms CPU\n"
        f"  ratio: {r['scan_wall_ms'] / r['rdmsr_wall_ms']:.2f}x wall, "
        f"{r['scan_cpu_ms'] / r['rdmsr_cpu_ms']:.2f}x CPU; beyond start-up "
        f"{(r['scan_wall_ms'] - r['startup_wall_ms']) / r['rdmsr_wall_ms']:.2f}x wall"
    )


def in_guest(cpus: int, runs: int) -> dict:
    from tests.vm import harness

    script = (
        'modprobe msr && cd "$VM_REPO" && '
        f'PYTHONPATH="$VM_REPO" "$VM_PYTHON" -m benchmarks.msr_driver --runs {runs} --json-only'
    )
    result = harness.run_in_vm(script, cpus=cpus, memory="2G", timeout=1800)
    if result.returncode != 0:
        tail = result.stderr[-2000:]
        raise SystemExit(f"msr_driver: the guest run failed (exit {result.returncode}):\n{tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each side (default 5)")
    ap.add_argument("--guest", type=int, metavar="N", help="boot a QEMU guest with N vCPUs and measure there")
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    res = in_guest(args.guest, args.runs) if args.guest else measure(args.runs)
    print(json.dumps(res) if args.json_only else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
