#!/usr/bin/env python3
"""Start-up of this checkout against an older one, and where a scan's imports go.

    python3 -m benchmarks.startup --before /path/to/old/checkout [--runs 21]

(from the repository root). `vmxprobe --version` and `vmxprobe scan --fixture` of two
bundled fixtures, each checkout's own file: kvm-guest-no-msr-driver (no MSR readable, the
shortest scan) and intel-2s-ready (an Intel host with VMX, which takes the whole kernel
model). The two checkouts run in turn, each command N times; medians of wall and CPU
time, from wait4() of each run alone. Byte-code is cached outside the checkouts
(PYTHONPYCACHEPREFIX), so neither is written to and neither compiles on every run.

Then, for this checkout: the classes `dataclasses` makes while a scan imports, and what
one frozen dataclass of five fields takes to make on this interpreter. Those classes are
the typed results between judging and rendering; each compiles its generated methods
when its module is imported, and they are most of what a scan's imports cost beyond the
first release's (docs/benchmarks.md, start-up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks.scan import Runner, med
from tests import REPO

FIXTURES = ("kvm-guest-no-msr-driver", "intel-2s-ready")

# Run in a child of this checkout: a scan, then the dataclasses of vmxprobe's modules
# that it imported, written to the file named by argv[1].
COUNT = r"""
import atexit, dataclasses, runpy, sys
out, sys.argv = sys.argv[1], ["vmxprobe"] + sys.argv[2:]
def count():
    mods = [m for n, m in list(sys.modules.items()) if n == "vmxprobe" or n.startswith("vmxprobe.")]
    n = sum(1 for m in mods for v in vars(m).values()
            if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == m.__name__)
    with open(out, "w") as f:
        f.write(f"{n} {len(mods)}")
atexit.register(count)
runpy.run_module("vmxprobe", run_name="__main__")
"""


def commands(tree: str) -> dict[str, list[str]]:
    py = [sys.executable, "-m", "vmxprobe"]
    out = {"vmxprobe --version": py + ["--version"]}
    for name in FIXTURES:
        path = os.path.join(tree, "fixtures", name + ".json")
        if not os.path.isfile(path):
            raise SystemExit(f"startup: {path} is missing; both checkouts need the fixture {name}")
        out[f"scan {name}"] = py + ["scan", "--fixture", path, "--format", "json"]
    return out


def env_for(tree: str, cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "VMXPROBE_DEBUG")}
    env["PYTHONPATH"] = tree
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def revision(tree: str) -> str:
    r = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def dataclass_cost(n: int = 200) -> float:
    """Seconds to make one frozen dataclass of five fields, two with defaults."""
    t = time.perf_counter()
    for _ in range(n):

        @dataclass(frozen=True)
        class Probe:
            a: int
            b: str
            c: tuple[int, ...] = ()
            d: int = 0
            e: list[int] = field(default_factory=list)

    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the older checkout (a git worktree of it)")
    ap.add_argument("--runs", type=int, default=21, help="runs of each command in each checkout (default 21)")
    args = ap.parse_args(argv)
    trees = {"before": os.path.abspath(args.before), "after": REPO}
    run = Runner()
    got: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="vmxprobe-startup-") as cache:
        envs = {label: env_for(tree, os.path.join(cache, label)) for label, tree in trees.items()}
        cmds = {label: commands(tree) for label, tree in trees.items()}
        for label, tree in trees.items():  # warm: byte-code cached, files in the page cache
            for argv_ in cmds[label].values():
                run.timed(argv_, env=envs[label], cwd=tree)
        for i in range(args.runs):
            order = list(trees) if i % 2 == 0 else list(reversed(list(trees)))
            for name in cmds["after"]:
                for label in order:
                    r = run.timed(cmds[label][name], env=envs[label], cwd=trees[label])
                    got.setdefault((label, name), []).append(r)
        counted = os.path.join(cache, "count")
        subprocess.run(
            [
                sys.executable,
                "-c",
                COUNT,
                counted,
                "scan",
                "--fixture",
                os.path.join(REPO, "fixtures", FIXTURES[1] + ".json"),
            ],
            env=envs["after"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        with open(counted) as f:
            classes, modules = (int(x) for x in f.read().split())
    run.close()

    print(f"before: {trees['before']} ({revision(trees['before'])}); after: {REPO} ({revision(REPO)})")
    print(f"{args.runs} runs of each, the checkouts in turn; medians; load {os.getloadavg()[0]:.1f}")
    print(f"{'':34s} {'before wall':>12s} {'after wall':>11s} {'before CPU':>11s} {'after CPU':>10s}  change")
    for name in cmds["after"]:
        b, a = got[("before", name)], got[("after", name)]
        wb, wa, cb, ca = med(b, "wall"), med(a, "wall"), med(b, "cpu"), med(a, "cpu")
        rcs = {r["rc"] for r in b + a}
        print(
            f"{name:34s} {wb * 1e3:9.1f} ms {wa * 1e3:8.1f} ms {cb * 1e3:8.1f} ms {ca * 1e3:7.1f} ms"
            f"  {100 * (ca - cb) / cb:+.0f}% CPU   (exit {sorted(rcs)})"
        )
    cost = dataclass_cost()
    print(
        f"after: a scan of intel-2s-ready imports {modules} vmxprobe modules holding {classes} dataclasses;"
        f" one frozen dataclass takes {cost * 1e3:.2f} ms to make here, about"
        f" {classes * cost * 1e3:.0f} ms for all of them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
