"""Hostile input, the cases of docs/faults.md's "What each hostile input gets": how a
case runs the command (a child process, bytes in and out) and what every run must show
whatever its input: a documented exit code, never 70; standard output and standard
error valid UTF-8 with no raw control character but the line feed; only `vmxprobe: `
lines on standard error."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

from tests import REPO, hostgen

DOC = os.path.join(REPO, "docs", "faults.md")
EXITS = {0, 1, 2, 3}

# case id ("1a") -> the exit code docs/faults.md gives it, and the test that runs it
CASES: dict[str, int] = {}
CASE_TESTS: dict[str, str] = {}


def case(cid: str, exit: int) -> Callable:
    def register(fn):
        assert cid not in CASES, cid
        CASES[cid] = exit
        CASE_TESTS[cid] = fn.__name__
        fn.case = (cid, exit)
        return fn

    return register


# Raw control characters: C0 but the line feed, DEL, and C1 as UTF-8 encodes it.
RAW_CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


@dataclass
class Out:
    code: int
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return self.out.decode("utf-8")

    @property
    def error(self) -> str:
        return self.err.decode("utf-8")


def run(
    *args: Any,
    env: dict | None = None,
    stdin=subprocess.DEVNULL,
    stdout=None,
    timeout=120,
    cwd=None,
    prefix: tuple[str, ...] = (),
) -> Out:
    """`python -m vmxprobe ARGS` in a child process; arguments may be bytes (a path that
    is not UTF-8). stdout=None captures it; a file object or "closed" redirects it.
    `prefix` runs it under another command (setpriv)."""
    environ = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    environ.pop("VMXPROBE_DEBUG", None)
    cmd: list[Any] = [*prefix, sys.executable, "-m", "vmxprobe", *args]
    if stdout == "closed":
        # The shell's `>&-`: the command starts with no descriptor 1 at all.
        cmd = [sys.executable, "-c", "import os, sys; os.close(1); os.execv(sys.argv[1], sys.argv[1:])", *cmd]
        out = subprocess.DEVNULL
    else:
        out = subprocess.PIPE if stdout is None else stdout
    p = subprocess.run(
        cmd,
        stdin=stdin,
        stdout=out,
        stderr=subprocess.PIPE,
        env=environ,
        timeout=timeout,
        cwd=cwd or REPO,
    )
    return Out(p.returncode, p.stdout or b"", p.stderr)


def sane(r: Out, exit: int | None = None) -> Out:
    """What every run shows, whatever its input; and its exit code when one is given."""
    assert r.code in EXITS, (r.code, r.err)
    assert b"Traceback" not in r.err, r.err
    for stream in (r.out, r.err):
        stream.decode("utf-8")  # valid UTF-8, or UnicodeDecodeError
        assert not RAW_CONTROL.search(stream), stream[:2000]
    lines = r.error.splitlines()
    if lines and lines[0].startswith("Usage: "):
        # click's usage error: the usage, a hint, and one "Error: " line naming the option
        assert r.code == 2 and lines[-1].startswith("Error: "), r.err
        assert all(ln.startswith(("Usage: ", "  ", "Try ")) or not ln for ln in lines[:-1]), r.err
    else:
        for line in lines:
            assert line.startswith("vmxprobe: "), r.err
    if exit is not None:
        assert r.code == exit, (r.code, r.err[:2000])
    return r


def base_fixture() -> dict:
    return copy.deepcopy(hostgen.synthetic(4, 2))


def write_fixture(folder, doc: dict, name: str = "fx.json") -> str:
    """The document as a fixture file; json.dumps writes a lone surrogate as the escape
    \\udXXX, as a hostile fixture would hold it."""
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="ascii") as f:
        json.dump(doc, f)
    return path


def document_cases() -> dict[str, tuple[str, int]]:
    """{case id: (test, exit code)} from the table in docs/faults.md."""
    cases = {}
    in_table = False
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                in_table = line.strip() == "## What each hostile input gets"
            m = (
                re.match(r"\|\s*(\d+[a-z])\s*\|.*\|\s*`(\w+)`\s*\|\s*([0-9])\s*\|\s*$", line)
                if in_table
                else None
            )
            if m:
                assert m.group(1) not in cases, f"case {m.group(1)} twice in {DOC}"
                cases[m.group(1)] = (m.group(2), int(m.group(3)))
    return cases
