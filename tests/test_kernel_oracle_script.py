"""scripts/kernel-oracle.sh: its interface and its refusals. The build itself is proved
in the VM tier, which builds the module with it and loads it in every guest
(tests/vm/conftest.py oracle_ko, tests/vm/test_vm_oracle.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "kernel-oracle.sh")


def run(*args, env=None):
    full = dict(os.environ)
    full.pop("VMXPROBE_VM_KERNEL", None)
    full.pop("ORACLE_KDIR", None)
    full.update(env or {})
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=full, timeout=60)


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        msg = "shellcheck not found (apt-get install shellcheck; scripts/test-deps.sh)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    proc = subprocess.run(
        ["shellcheck", "-x", "scripts/kernel-oracle.sh"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [(), ("bogus",), ("build",), ("build", "a", "b"), ("deps", "extra")])
def test_usage_errors_exit_2_with_one_line(args):
    proc = run(*args)
    assert proc.returncode == 2
    assert proc.stderr == "usage: bash scripts/kernel-oracle.sh build DIR | deps\n"
    assert proc.stdout == ""


def test_a_missing_kernel_image_is_named(tmp_path):
    proc = run("build", str(tmp_path / "out"), env={"VMXPROBE_VM_KERNEL": str(tmp_path / "vmlinuz-9.9.9")})
    assert proc.returncode == 1
    assert proc.stderr == f"kernel-oracle: VMXPROBE_VM_KERNEL={tmp_path}/vmlinuz-9.9.9 is not a file\n"
    assert not (tmp_path / "out").exists()


def test_an_image_without_a_version_in_its_name_is_refused(tmp_path):
    image = tmp_path / "bzImage"
    image.write_bytes(b"")
    proc = run("build", str(tmp_path / "out"), env={"VMXPROBE_VM_KERNEL": str(image)})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "is not named vmlinuz-VERSION; set ORACLE_KDIR" in proc.stderr


def test_a_build_tree_that_is_not_one_is_refused(tmp_path):
    proc = run("build", str(tmp_path / "out"), env={"ORACLE_KDIR": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr == f"kernel-oracle: ORACLE_KDIR={tmp_path} has no Makefile: not a kernel build tree\n"
