#!/usr/bin/env python3
"""Do two checkouts of vmxprobe write the same reports? For changes that must not change
what a scan says (speed work): run both on the same inputs and compare byte for byte.

    python3 -m benchmarks.same_reports --before /path/to/old/checkout [--workdir DIR]

(from the repository root of the newer checkout). The inputs: every bundled fixture,
replayed (--fixture) and laid out as a --root tree; --root trees of 64, 1024 and 8192
CPUs from tests/hostgen.synthetic; the 8192-CPU tree of benchmarks/scan.py (every
capability MSR answers there, and /proc/cpuinfo is a real host's size); and a tree of
1024 CPUs with failing devices spread over it (missing, offline, faulting, foreign).
For each, `scan` in JSON and in text, and `record` of every tree: stdout, stderr and
exit code must be equal, apart from the time stamps (generated_at, recorded_at) and,
for a checkout's own fixture paths, nothing else. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile

from benchmarks import scan as bench
from tests import REPO, hostgen

STAMP = re.compile(rb'"(generated_at|recorded_at)": "[^"]*"')


def damaged_tree(root: str, n: int = 1024) -> list[socket.socket]:
    """A tree of n CPUs whose devices fail in the ways a host shows, spread over the CPUs
    so that every block of CPUs a scan may split them into holds some: a missing msr
    device (ENOENT), a socket where one stands (ENXIO, as for an offline CPU), one that
    faults on every read (EIO, /proc/self/mem), and a FIFO (refused unread)."""
    hostgen.write_tree(hostgen.synthetic(n, 4), root)
    keep = []
    for cpu in range(3, n, 97):
        d = os.path.join(root, "dev", "cpu", str(cpu))
        kind = cpu % 4
        os.unlink(os.path.join(d, "msr"))
        if kind == 1:
            s = socket.socket(socket.AF_UNIX)
            s.bind(os.path.join(d, "msr"))
            keep.append(s)
        elif kind == 2:
            os.symlink("/proc/self/mem", os.path.join(d, "msr"))
        elif kind == 3:
            os.mkfifo(os.path.join(d, "msr"))
    os.unlink(os.path.join(root, "dev", "cpu", "700", "cpuid"))
    return keep


def cases(work: str) -> tuple[list[tuple[str, list[str]]], list[socket.socket]]:
    from vmxprobe.host import fixture

    out: list[tuple[str, list[str]]] = []
    keep: list[socket.socket] = []
    fixtures_dir = os.path.join(REPO, "fixtures")
    trees: dict[str, str] = {}
    for name in fixture.bundled_names():
        path = os.path.join(fixtures_dir, f"{name}.json")
        out.append((f"fixture {name} json", ["scan", "--fixture", path, "--format", "json"]))
        out.append((f"fixture {name} text", ["scan", "--fixture", path]))
        root = os.path.join(work, "bundled", name)
        if not os.path.isdir(root):
            hostgen.write_tree(fixture.from_fixture(fixture.load(path)), root)
        trees[f"bundled {name}"] = root
    for n in (64, 1024, 8192):
        root = os.path.join(work, f"synthetic-{n}")
        if not os.path.isdir(root):
            hostgen.write_tree(hostgen.synthetic(n, max(1, n // 256)), root)
        trees[f"synthetic {n}"] = root
    root = os.path.join(work, "bench-8192")
    if bench.read_marker(root) != "8192":
        bench.tree(root, 8192)
    trees["bench 8192"] = root
    root = os.path.join(work, "damaged-1024")
    if os.path.isdir(root):
        subprocess.run(["rm", "-rf", root], check=True)
    keep = damaged_tree(root)
    trees["damaged 1024"] = root
    for what, root in trees.items():
        out.append((f"{what} json", ["scan", "--root", root, "--format", "json"]))
        out.append((f"{what} text", ["scan", "--root", root]))
        out.append((f"{what} record", ["record", "--root", root]))
    return out, keep


def run(checkout: str, argv: list[str]) -> tuple[int, bytes, bytes]:
    # No byte-code written: the older checkout is only read.
    env = {**os.environ, "PYTHONPATH": checkout, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VMXPROBE_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "vmxprobe", *argv], capture_output=True, env=env, cwd=checkout)
    return r.returncode, STAMP.sub(rb'"\1": "-"', r.stdout), r.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the older checkout (a git worktree of it)")
    ap.add_argument("--after", default=REPO, help="the newer checkout (default: this one)")
    ap.add_argument("--workdir", help="keep the trees here for the next run")
    args = ap.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="vmxprobe-same-")
    os.makedirs(work, exist_ok=True)
    todo, keep = cases(work)
    differ = 0
    for what, cmd in todo:
        a, b = run(args.before, cmd), run(args.after, cmd)
        same = a == b
        differ += not same
        print(f"{'same' if same else 'DIFFERENT'}  {what}  (exit {a[0]}, {len(a[1])} bytes)", flush=True)
        if not same:
            for label, x, y in (("exit", a[0], b[0]), ("stdout", a[1], b[1]), ("stderr", a[2], b[2])):
                if x != y:
                    print(f"    {label} differs: before {str(x)[:200]!r} / after {str(y)[:200]!r}")
    for s in keep:
        s.close()
    print(f"{len(todo) - differ} of {len(todo)} outputs identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
