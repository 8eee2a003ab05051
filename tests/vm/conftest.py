"""The boots every VM test shares (session scope): a VM costs 25-70 s to boot under TCG
(more on a busy machine), so each topology boots once and its script does every check;
the tests only read what it left behind. Every boot loads the oracle module
(tests/oracle, built once on the host by scripts/kernel-oracle.sh)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest  # noqa: E402
from harness import REPO_ROOT, VMResult, _skip, missing_requirements, run_in_vm, sections  # noqa: E402


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


@pytest.fixture(scope="session")
def oracle_ko(tmp_path_factory) -> str:
    """tests/oracle/root_vmcs_oracle.ko for the kernel the VMs boot. The host's /tmp is
    the lower layer of the guest's /tmp, so the guest can insmod it from there."""
    reason = missing_requirements()
    if reason:
        _skip(reason)
    out = tmp_path_factory.mktemp("oracle")
    proc = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "scripts", "kernel-oracle.sh"), "build", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        # Not a skip: the tools to boot a VM are here, so the oracle must build too.
        pytest.fail(f"scripts/kernel-oracle.sh build failed: {last}", pytrace=False)
    return str(out / "root_vmcs_oracle.ko")


def _boot(tmp_path_factory, oracle_ko: str, name: str, script: str, **kw) -> Boot:
    outdir = tmp_path_factory.mktemp(name)
    # The guest writes as root and as nobody's shell redirections; 9p keeps host modes.
    os.chmod(outdir, 0o777)
    script = f"export ORACLE_KO={shlex.quote(oracle_ko)}\n" + script
    res = run_in_vm(script, outdir=str(outdir), timeout=900, **kw)
    boot = Boot(res, sections(res.stdout), outdir)
    print(f"{name}: booted and ran in {res.seconds:.0f} s", file=sys.stderr)
    return boot


@pytest.fixture(scope="session")
def two_node_vm(tmp_path_factory, oracle_ko) -> Boot:
    return _boot(
        tmp_path_factory,
        oracle_ko,
        "two-node",
        guest.TWO_NODE_SCRIPT,
        cpus=4,
        memory="2G",
        numa=guest.TWO_NODES,
    )


@pytest.fixture(scope="session")
def memoryless_vm(tmp_path_factory, oracle_ko) -> Boot:
    return _boot(
        tmp_path_factory,
        oracle_ko,
        "memoryless",
        guest.MEMORYLESS_SCRIPT,
        cpus=4,
        memory="2G",
        numa=guest.MEMORYLESS,
        numa_distance=guest.MEMORYLESS_DISTANCES,
        qemu_opts=guest.MEMORYLESS_QEMU_OPTS,
    )


@pytest.fixture(scope="session")
def four_node_vm(tmp_path_factory, oracle_ko) -> Boot:
    return _boot(
        tmp_path_factory,
        oracle_ko,
        "four-node",
        guest.FACTS_SCRIPT,
        cpus=3,
        memory="3G",
        numa=guest.FOUR_NODES,
        numa_distance=guest.FOUR_NODE_DISTANCES,
        qemu_opts=guest.FOUR_NODE_QEMU_OPTS,
        append=guest.FOUR_NODE_APPEND,
    )


@pytest.fixture(scope="session")
def no_numa_vm(tmp_path_factory, oracle_ko) -> Boot:
    return _boot(
        tmp_path_factory,
        oracle_ko,
        "no-numa",
        guest.FACTS_SCRIPT,
        cpus=2,
        memory="512M",
        qemu_opts=guest.NO_NUMA_QEMU_OPTS,
    )
