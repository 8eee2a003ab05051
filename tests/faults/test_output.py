"""Fault cells of the output (vmxprobe/files.py): -o writes atomically or not at all,
the previous file stays whole, and a hostile output path is never followed."""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests import REPO, hostgen
from tests.faults.matrix import (
    NO_DAC,
    Run,
    cell,
    cell_params,
    chattr_works,
    clean,
    is_root,
    not_ours,
    run_cell,
    vmxprobe,
)

# write the output (-o): atomically, or not at all; the previous file stays whole.

OLD = "previous report\n"


def _out(host, name="report.json", previous=True):
    d = os.path.join(host.base, "out")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    p = os.path.join(d, name)
    if previous:
        with open(p, "w") as f:
            f.write(OLD)
    return p


def _write(host, out, **kw):
    return clean(vmxprobe("scan", "--fixture", "intel-2s-ready", "--format", "json", "-o", out, **kw))


def _assert_write_failed(r: Run, out: str, words: str, previous=True):
    assert r.code == 2, (r.code, r.err)
    assert r.out == ""
    assert r.err.startswith("vmxprobe: error: cannot write the report:") and words in r.err, r.err
    assert r.err.count("\n") == 1
    if previous:
        with open(out) as f:
            assert f.read() == OLD
    folder = os.path.dirname(out)
    if os.path.isdir(folder):
        assert [n for n in os.listdir(folder) if n.endswith(".tmp")] == []


@cell("write", "ENOENT", 2, "real")
def write_enoent(host):
    out = os.path.join(host.base, "no-such-folder", "report.json")
    r = _write(host, out)
    _assert_write_failed(r, out, "No such file or directory", previous=False)


@cell("write", "EPERM", 2, "real|mock")
def write_eperm(host):
    out = _out(host)
    if chattr_works():
        # rename(2) over an immutable file fails with EPERM, even for root.
        subprocess.run(["chattr", "+i", out], check=True)
        host.immutable.append(out)
        r = _write(host, out)
    else:
        r = _write(host, out, faults=[{"call": "replace", "path": "report.json", "errno": "EPERM"}])
    _assert_write_failed(r, out, "Operation not permitted")


@cell("write", "EACCES", 2, "real|mock")
def write_eacces(host):
    out = _out(host)
    if is_root():
        not_ours(os.path.dirname(out), 0o755)  # another user's folder
        r = _write(host, out, drop_caps=NO_DAC)
    else:
        r = _write(host, out, faults=[{"call": "open", "path": ".tmp", "errno": "EACCES"}])
    _assert_write_failed(r, out, "Permission denied")


@cell("write", "ENXIO", 2, "real")
def write_enxio(host):
    # A socket at the target (opening it would give ENXIO) is refused unopened, as is
    # any target that is not a regular file or a symlink.
    out = _out(host, previous=False)
    s = socket.socket(socket.AF_UNIX)
    s.bind(out)
    host.sockets.append(s)
    r = _write(host, out)
    _assert_write_failed(r, out, "not a regular file", previous=False)
    assert stat.S_ISSOCK(os.lstat(out).st_mode)


@cell("write", "EIO", 2, "mock")
def write_eio(host):
    # fsync(2) is where a writeback error (EIO) surfaces.
    out = _out(host)
    r = _write(host, out, faults=[{"call": "fsync", "path": ".tmp", "errno": "EIO"}])
    _assert_write_failed(r, out, "Input/output error")


@cell("write", "EINVAL", 2, "mock")
def write_einval(host):
    # fsync(2) on a file system that cannot sync gives EINVAL.
    out = _out(host)
    r = _write(host, out, faults=[{"call": "fsync", "path": ".tmp", "errno": "EINVAL"}])
    _assert_write_failed(r, out, "Invalid argument")


@cell("write", "SHORT", 2, "real")
def write_short(host):
    # RLIMIT_FSIZE of 4 KiB: the write stops short, then fails with EFBIG (Python
    # ignores SIGXFSZ). The report is 25 KiB.
    out = _out(host)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = _write(host, out, preexec=limit)
    _assert_write_failed(r, out, "File too large")


@cell("write", "ENOMEM", 2, "mock")
def write_enomem(host):
    out = _out(host)
    r = _write(host, out, faults=[{"call": "open", "path": ".tmp", "errno": "ENOMEM"}])
    _assert_write_failed(r, out, "Cannot allocate memory")


def test_output_folder_vanishing_mid_write_leaves_nothing_half_done(host):
    out = _out(host)
    r = _write(host, out, faults=[{"call": "replace", "path": "report.json", "errno": "ENOENT"}])
    _assert_write_failed(r, out, "No such file or directory")


def test_sigkill_of_the_command_mid_write_never_leaves_half_a_report(tmp_path):
    """The command writing a large report (-o), killed at a spread of moments: the file
    is always the previous one or a complete new report, never a mix."""

    root = str(tmp_path / "root")
    hostgen.write_tree(hostgen.synthetic(1024, 4), root)
    out = tmp_path / "report.json"
    out.write_text(OLD)
    env = {**os.environ, "PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1"}
    outcomes = Counter()
    for delay in (0.05, 0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 3.0):
        p = subprocess.Popen(
            [sys.executable, "-m", "vmxprobe", "scan", "--root", root, "--format", "json", "-o", str(out)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        p.kill()
        p.wait()
        text = out.read_text()
        if text == OLD:
            outcomes["old"] += 1
        else:
            assert json.loads(text)["plan"]["pages"] == 1024
            outcomes["new"] += 1
            out.write_text(OLD)
        for n in os.listdir(tmp_path):
            if n.endswith(".tmp"):
                os.unlink(tmp_path / n)
    assert outcomes["old"] >= 1, outcomes  # some kills landed before the rename


@pytest.mark.parametrize("c,target", cell_params("write"))
def test_cell(c, target, host):
    run_cell(c, target, host)
