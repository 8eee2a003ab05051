"""External programs the tests drive, found where scripts/test-deps.sh installs them.

A missing one skips the test on a developer's machine, saying what installs it. Under
CI (CI=true, as .ci/run is run) it fails the test instead: a skip there would hide a
broken setup script.
"""

import os
import shutil

import pytest

# scripts/ci-lint-setup.sh puts ansible-lint and kubernetes-validate in a virtualenv of
# their own (same default as there), apart from the ansible-core the playbook tests run.
LINT_VENV = os.environ.get("VMXPROBE_LINT_VENV") or os.path.join(
    os.path.expanduser("~"), ".cache", "vmxprobe", "lint-venv"
)
LINT_BIN = os.path.join(LINT_VENV, "bin")


def required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, hint: str):
    """Skip, or under CI fail, because `what` is not installed; `hint` says what installs it."""
    message = f"{what} is not installed ({hint})"
    if required():
        pytest.fail(f"{message}; CI runs scripts/test-deps.sh first, so its setup is broken", pytrace=False)
    pytest.skip(message)


def find(name: str, hint: str, *, lint_venv: bool = False) -> str:
    """The path of program `name` (in the lint virtualenv first if lint_venv), or missing()."""
    path = os.environ.get("PATH", os.defpath)
    if lint_venv:
        path = LINT_BIN + os.pathsep + path
    found = shutil.which(name, path=path)
    if found is None:
        missing(name, hint)
    return found


def lint_env(**more) -> dict:
    """The environment for a program from the lint virtualenv: its bin first on PATH, as
    an activated virtualenv has it (ansible-lint runs ansible-core's programs from there)."""
    return dict(
        os.environ, PATH=LINT_BIN + os.pathsep + os.environ.get("PATH", os.defpath), NO_COLOR="1", **more
    )
