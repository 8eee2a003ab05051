"""shellcheck over every shell script in the repository.

Scripts are found by name (*.sh, *.bash) and by shebang (sh, bash, dash, ksh, through
env or not), so a new one is checked without being listed here. The DaemonSet's inline
script is checked in tests/test_deploy.py.
"""

import os
import re
import subprocess

import pytest

from tests import REPO, tooling

# Folders that hold no scripts of ours: VCS data, caches, virtualenvs, build output.
SKIP_DIRS = {
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    "build",
    "dist",
    "node_modules",
}
SHEBANG = re.compile(rb"#![ \t]*\S*/(?:env[ \t]+(?:-\S+[ \t]+)*)?(?:ba|da|k)?sh(?:[ \t]|$)")
HINT = "Debian package shellcheck; scripts/ci-lint-setup.sh installs it"


def shell_scripts(top=REPO):
    found = []
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if name.endswith((".sh", ".bash")):
                found.append(path)
                continue
            with open(path, "rb") as f:
                first = f.readline(200)
            if SHEBANG.match(first):
                found.append(path)
    return [os.path.relpath(p, top) for p in found]


SCRIPTS = shell_scripts()


def test_discovery_finds_the_known_scripts():
    # By shebang (no suffix), by suffix (no shebang: sourced only) and the usual kind.
    assert {".ci/run", "scripts/apt-ensure.sh", "scripts/test-deps.sh"} <= set(SCRIPTS), SCRIPTS
    assert not any(p.endswith(".py") for p in SCRIPTS), SCRIPTS


def test_discovery_by_shebang(tmp_path):
    for name, text in {
        "a": "#!/bin/sh\n",
        "b": "#!/usr/bin/env bash\n",
        "c": "#! /bin/dash -e\n",
        "d": "#!/usr/bin/env -S bash -eu\n",
        "e": "#!/usr/bin/env python3\n",
        "f": "#!/bin/bashful\n",
        "g.sh": "echo\n",
    }.items():
        (tmp_path / name).write_text(text)
    assert shell_scripts(str(tmp_path)) == ["a", "b", "c", "d", "g.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
    shellcheck = tooling.find("shellcheck", HINT)
    # -x follows `source`/`.` into the files named by `# shellcheck source=` (paths from
    # the repository root), so a sourced helper is checked as its callers use it.
    r = subprocess.run(
        [shellcheck, "-x", "--format=gcc", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_shellcheck_is_meaningful(tmp_path):
    shellcheck = tooling.find("shellcheck", HINT)
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nrm -rf $1/tmp\n")
    r = subprocess.run([shellcheck, "--format=gcc", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "SC2086" in r.stdout, r.stdout + r.stderr
