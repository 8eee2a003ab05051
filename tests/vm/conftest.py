"""The two boots every VM test shares (session scope): a VM costs 25-70 s to boot under
TCG, so each topology boots once and its script does every check; the tests only read
what it left behind."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest  # noqa: E402
from harness import VMResult, run_in_vm, sections  # noqa: E402


@dataclass
class Boot:
    result: VMResult
    sections: dict[str, str]
    outdir: Path

    def rc(self, name: str) -> int:
        return int((self.outdir / f"{name}.rc").read_text())

    def out(self, name: str) -> str:
        return (self.outdir / f"{name}.out").read_text()

    def err(self, name: str) -> str:
        return (self.outdir / f"{name}.err").read_text()

    def json(self, name: str) -> dict:
        return json.loads(self.out(name))


def _boot(tmp_path_factory, name: str, script: str, **kw) -> Boot:
    outdir = tmp_path_factory.mktemp(name)
    # The guest writes as root and as nobody's shell redirections; 9p keeps host modes.
    os.chmod(outdir, 0o777)
    res = run_in_vm(script, outdir=str(outdir), timeout=480, **kw)
    boot = Boot(res, sections(res.stdout), outdir)
    print(f"{name}: booted and ran in {res.seconds:.0f} s", file=sys.stderr)
    return boot


@pytest.fixture(scope="session")
def two_node_vm(tmp_path_factory) -> Boot:
    return _boot(tmp_path_factory, "two-node", guest.TWO_NODE_SCRIPT,
                 cpus=4, memory="2G", numa=guest.TWO_NODES)


@pytest.fixture(scope="session")
def memoryless_vm(tmp_path_factory) -> Boot:
    return _boot(tmp_path_factory, "memoryless", guest.MEMORYLESS_SCRIPT,
                 cpus=4, memory="2G", numa=guest.MEMORYLESS,
                 numa_distance=guest.MEMORYLESS_DISTANCES,
                 qemu_opts=guest.MEMORYLESS_QEMU_OPTS)
