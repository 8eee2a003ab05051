"""Forked workers (vmxprobe/host/workers.py), alone and as the scan of a live host uses
them: the same readings, the same errors per CPU, in the same order, as a serial scan."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import REPO, hostgen
from vmxprobe.host import readings, workers
from vmxprobe.host.fixture import Fixture, parse
from vmxprobe.host.sources import FixtureHost, LiveHost, RecordingHost
from vmxprobe.host.workers import FAILED, Forked

# --- Forked alone ------------------------------------------------------------------------


def _slow_square(x):
    time.sleep(0.05 * (3 - x))  # the first block finishes last
    return x * x


def test_results_come_in_the_order_of_the_blocks():
    with Forked(_slow_square, [0, 1, 2]) as w:
        assert w.results() == [0, 1, 4]


def test_one_worker_and_none():
    with Forked(_slow_square, [2]) as w:
        assert w.results() == [4]
    with Forked(_slow_square, []) as w:
        assert w.results() == []


def test_the_result_is_computed_in_another_process():
    with Forked(lambda _: os.getpid(), [0, 1]) as w:
        pids = w.results()
    assert os.getpid() not in pids and len(set(pids)) == 2


def _fails_on_one(x):
    if x == 1:
        raise ValueError("block 1")
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 3:
        return lambda: None  # cannot be pickled
    return x


def test_a_failed_worker_yields_failed_for_its_block_only():
    with Forked(_fails_on_one, [0, 1, 2, 3, 4]) as w:
        assert w.results() == [0, FAILED, FAILED, FAILED, 4]


def test_a_large_result_comes_back_whole():
    # Larger than a pipe's buffer: the worker blocks on write until the caller reads.
    with Forked(lambda n: bytes(range(256)) * n, [4096, 1]) as w:
        big, small = w.results()
    assert big == bytes(range(256)) * 4096 and small == bytes(range(256))


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_workers_do_not_outlive_the_block_left_by_an_exception():
    pids = []
    with pytest.raises(KeyError):
        with Forked(lambda _: time.sleep(60), [0, 1]) as w:
            pids = [pid for pid, _ in w._workers]
            raise KeyError("the caller fails while the workers run")
    assert len(pids) == 2
    # Killed and reaped: not even a zombie is left.
    assert all(_gone(pid) for pid in pids)


def test_usable_cpus_is_the_affinity_mask():
    assert workers.usable_cpus() == len(os.sched_getaffinity(0))


# --- the scan with workers -----------------------------------------------------------------


def damaged_tree(root, n=512):
    """A tree of n CPUs whose devices fail in every way a host shows, spread over the CPUs
    so that each worker's block holds some: no msr device (ENOENT), a socket (ENXIO, as
    for an offline CPU), a device that faults on every read (EIO: /proc/self/mem), a FIFO
    (ESPIPE), a short device (SHORT), and a missing cpuid device."""
    hostgen.write_tree(hostgen.synthetic(n, 4), root)
    keep = []
    for cpu in range(3, n, 29):
        d = os.path.join(root, "dev", "cpu", str(cpu))
        msr = os.path.join(d, "msr")
        kind = cpu % 6
        if kind == 5:
            os.truncate(msr, 0x480 + 4)
            continue
        if kind == 4:
            os.unlink(os.path.join(d, "cpuid"))
            continue
        os.unlink(msr)
        if kind == 1:
            s = socket.socket(socket.AF_UNIX)
            s.bind(msr)
            keep.append(s)
        elif kind == 2:
            os.symlink("/proc/self/mem", msr)
        elif kind == 3:
            os.mkfifo(msr)
    return keep


@pytest.fixture
def damaged(tmp_path):
    root = str(tmp_path / "tree")
    keep = damaged_tree(root)
    yield root
    for s in keep:
        s.close()


def _with_workers(monkeypatch, n):
    """Have read_host() split 512 online CPUs among n workers (1: read alone)."""
    monkeypatch.setattr(readings, "usable_cpus", lambda: n)
    monkeypatch.setattr(readings, "MIN_CPUS_PER_WORKER", 16)


def _errors(h):
    """The failures each CPU saw, for the CPUs that saw any."""
    out = {}
    for cpu, p in h.cpus.items():
        got = {r.errno for r in [*p.msr.values(), *p.cpuid.values()] if r.errno}
        if got:
            out[cpu] = got
    return out


def test_workers_read_what_a_serial_scan_reads_on_a_damaged_tree(damaged, monkeypatch):
    _with_workers(monkeypatch, 1)
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    serial = readings.read_host(LiveHost(damaged))
    assert forks == []
    _with_workers(monkeypatch, 4)
    parallel = readings.read_host(LiveHost(damaged))
    assert len(forks) == 4  # the blocks were read by workers, not here
    assert parallel == serial
    assert list(parallel.cpus) == list(serial.cpus) == list(range(512))
    for cpu, p in serial.cpus.items():  # the order of the reads, register by register
        assert list(parallel.cpus[cpu].msr.items()) == list(p.msr.items())
        assert list(parallel.cpus[cpu].cpuid.items()) == list(p.cpuid.items())
    # The damage is there to be seen, once per kind, in more than one worker's block.
    errors = _errors(serial)
    assert {e for got in errors.values() for e in got} >= {"ENOENT", "ENXIO", "EIO", "ESPIPE", "SHORT"}
    assert min(errors) < 128 and max(errors) >= 384


def test_a_failed_worker_block_is_read_by_the_caller(damaged, monkeypatch):
    _with_workers(monkeypatch, 1)
    serial = readings.read_host(LiveHost(damaged))
    _with_workers(monkeypatch, 4)
    real = readings._read_block

    def dies_on_the_second_block(source, cpus):
        if cpus[0] == 128:
            os._exit(3)
        return real(source, cpus)

    monkeypatch.setattr(readings, "_read_block", dies_on_the_second_block)
    assert readings.read_host(LiveHost(damaged)) == serial


class Broken(LiveHost):
    def read_msrs(self, cpu, indexes):
        if cpu == 300:
            raise RuntimeError("a bug in the reader")
        return super().read_msrs(cpu, indexes)


def test_an_exception_in_a_worker_reaches_the_caller(damaged, monkeypatch):
    _with_workers(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="a bug in the reader"):
        readings.read_host(Broken(damaged))


def test_a_recording_scan_sees_every_read(damaged, monkeypatch):
    _with_workers(monkeypatch, 4)
    rec = RecordingHost(LiveHost(damaged))
    h = readings.read_host(rec)
    assert set(rec.msr[0x3A]) == set(rec.msr[0x480]) == set(range(512))
    for cpu, p in h.cpus.items():
        for index, r in p.msr.items():
            assert rec.msr[index][cpu] == r
    # Replaying what was recorded reads the same, without workers.
    fixture = from_fixture_readings(rec)
    assert getattr(FixtureHost(fixture), "parallel", False) is False
    assert readings.read_host(FixtureHost(fixture)).cpus == h.cpus


def from_fixture_readings(rec):
    return Fixture(
        name="recorded",
        description="",
        provenance={},
        files=rec.files,
        blobs=rec.blobs,
        dirs=rec.dirs,
        file_errors=dict(rec.file_errors),
        msr=rec.msr,
        cpuid=rec.cpuid,
    )


# EACCES needs permission bits that apply: root without CAP_DAC_OVERRIDE, in a child.
SCAN = r"""
import json, sys
from vmxprobe.host import readings
from vmxprobe.host.sources import LiveHost
readings.usable_cpus = lambda: int(sys.argv[2])
readings.MIN_CPUS_PER_WORKER = 16
h = readings.read_host(LiveHost(sys.argv[1]))
msrs = [[cpu, [(i, r.value, r.errno) for i, r in p.msr.items()]] for cpu, p in h.cpus.items()]
print(json.dumps(msrs))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="permission bits that root obeys need root to set up")
def test_eacces_per_cpu_as_a_serial_scan(damaged):
    for cpu in (5, 200, 450):
        path = os.path.join(damaged, "dev", "cpu", str(cpu), "msr")
        os.chown(path, 65534, 65534)
        os.chmod(path, 0o600)
    env = {**os.environ, "PYTHONPATH": REPO}
    got = []
    for n in ("1", "4"):
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", SCAN]
        r = subprocess.run([*cmd, damaged, n], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        got.append(json.loads(r.stdout))
    assert got[0] == got[1]
    by_cpu = dict(got[1])
    for cpu in (5, 200, 450):
        assert {e for _, _, e in by_cpu[cpu]} == {"EACCES"}


def test_fixtures_are_read_without_workers(monkeypatch):
    _with_workers(monkeypatch, 4)
    blocks = []
    real = readings.Forked
    monkeypatch.setattr(readings, "Forked", lambda job, b: blocks.append(list(b)) or real(job, b))
    h = readings.read_host(FixtureHost(parse(hostgen.synthetic(512, 4))))
    assert len(h.cpus) == 512
    assert blocks == [[]]
