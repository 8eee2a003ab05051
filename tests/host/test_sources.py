"""The live reader, exercised through real open()/pread() on trees laid out like /."""

import errno
import os
import re
import socket

import pytest

from tests import hostgen
from vmxprobe.host.sources import CpuidReading, LiveHost, MsrReading, RecordingHost


def write_msr_file(root, cpu, values: dict):
    d = os.path.join(root, "dev", "cpu", str(cpu))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "msr"), "wb") as f:
        for index, value in values.items():
            f.seek(index)
            f.write(value.to_bytes(8, "little"))
    return os.path.join(d, "msr")


def test_msr_values_read_at_their_offsets(tmp_path):
    write_msr_file(str(tmp_path), 0, {0x3A: 0x5, 0x480: 0x00DA040000000012})
    write_msr_file(str(tmp_path), 1, {0x3A: 0x1, 0x480: 0x00DA040000000004})
    host = LiveHost(str(tmp_path))
    assert host.read_msr(0, 0x3A) == MsrReading(value=0x5)
    assert host.read_msr(0, 0x480) == MsrReading(value=0x00DA040000000012)
    assert host.read_msr(1, 0x3A) == MsrReading(value=0x1)
    assert host.read_msr(1, 0x480) == MsrReading(value=0x00DA040000000004)
    host.close()


def test_values_above_2_53_survive(tmp_path):
    write_msr_file(str(tmp_path), 0, {0x480: 0xFFFFFFFFFFFFFFFF})
    assert LiveHost(str(tmp_path)).read_msr(0, 0x480).value == 2**64 - 1


def test_missing_device_is_enoent(tmp_path):
    assert LiveHost(str(tmp_path)).read_msr(0, 0x480) == MsrReading(errno="ENOENT")
    assert LiveHost(str(tmp_path)).read_cpuid(0, 1) == CpuidReading(errno="ENOENT")


def test_read_past_end_is_a_short_read_not_zero(tmp_path):
    write_msr_file(str(tmp_path), 0, {0x3A: 0x5})
    host = LiveHost(str(tmp_path))
    assert host.read_msr(0, 0x480) == MsrReading(errno="SHORT")


def test_offline_cpu_is_enxio(tmp_path):
    # Opening a socket inode fails with ENXIO, as the msr driver's open() does for a
    # CPU that is offline.
    d = tmp_path / "dev" / "cpu" / "3"
    d.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "msr"))
    try:
        assert LiveHost(str(tmp_path)).read_msr(3, 0x480) == MsrReading(errno="ENXIO")
    finally:
        s.close()


def test_faulting_read_is_eio(tmp_path):
    # /proc/self/mem fails a read at an unmapped address with EIO, as the msr driver
    # does for an MSR whose rdmsr faults.
    d = tmp_path / "dev" / "cpu" / "0"
    d.mkdir(parents=True)
    os.symlink("/proc/self/mem", d / "msr")
    assert LiveHost(str(tmp_path)).read_msr(0, 0x480) == MsrReading(errno="EIO")


@pytest.mark.parametrize("code", [errno.EPERM, errno.EINVAL])
def test_errors_from_pread_become_names(tmp_path, mocker, code):
    write_msr_file(str(tmp_path), 0, {0x480: 1})
    mocker.patch("vmxprobe.host.sources.os.pread", side_effect=OSError(code, os.strerror(code)))
    assert LiveHost(str(tmp_path)).read_msr(0, 0x480) == MsrReading(errno=errno.errorcode[code])


def test_eperm_at_open(tmp_path, mocker):
    real_open = os.open

    def fake_open(path, flags, *a):
        if str(path).endswith("/msr"):
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_open(path, flags, *a)

    write_msr_file(str(tmp_path), 0, {0x480: 1})
    mocker.patch("vmxprobe.host.sources.os.open", side_effect=fake_open)
    assert LiveHost(str(tmp_path)).read_msr(0, 0x480) == MsrReading(errno="EPERM")


def as_nobody(fn):
    """fn() run by user nobody, in a forked child of this interpreter: no new program is
    started, so nothing of Python itself (a libpython under /root) needs to be readable
    by that user. Returns repr() of what fn returned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(w, repr(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_device_is_eacces_for_a_user(tmp_path):
    path = write_msr_file(str(tmp_path), 0, {0x480: 1})
    os.chmod(path, 0)
    for p in (tmp_path, tmp_path / "dev", tmp_path / "dev" / "cpu", tmp_path / "dev" / "cpu" / "0"):
        os.chmod(p, 0o755)
    assert as_nobody(lambda: LiveHost(str(tmp_path)).read_msr(0, 0x480).errno) == "'EACCES'"


def test_devices_are_opened_read_only(tmp_path, mocker):
    write_msr_file(str(tmp_path), 0, {0x480: 1})
    spy = mocker.spy(os, "open")
    host = LiveHost(str(tmp_path))
    host.read_msr(0, 0x480)
    host.read_cpuid(0, 1)
    for call in spy.call_args_list:
        flags = call.args[1]
        assert flags & (os.O_WRONLY | os.O_RDWR) == 0


def test_one_device_descriptor_held_at_a_time(tmp_path):
    for cpu in range(4):
        write_msr_file(str(tmp_path), cpu, {0x480: cpu})
    host = LiveHost(str(tmp_path))
    before = len(os.listdir("/proc/self/fd"))
    for cpu in range(4):
        assert host.read_msr(cpu, 0x480).value == cpu
    assert len(os.listdir("/proc/self/fd")) - before == 1
    host.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_cpuid_offset_carries_leaf_and_subleaf(tmp_path):
    d = tmp_path / "dev" / "cpu" / "0"
    d.mkdir(parents=True)
    with open(d / "cpuid", "wb") as f:
        f.seek(0x40000000)
        f.write((0x40000001).to_bytes(4, "little") + b"KVMKVMKVM\0\0\0")
        f.seek(7 | (2 << 32))  # leaf 7, subleaf 2
        f.write(bytes(range(16)))
    host = LiveHost(str(tmp_path))
    eax, ebx, ecx, edx = host.read_cpuid(0, 0x40000000).value
    assert eax == 0x40000001 and ebx.to_bytes(4, "little") == b"KVMK"
    assert host.read_cpuid(0, 7, 2).value == (0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C)


def test_files_and_listings(tmp_path):
    (tmp_path / "sys" / "devices" / "system" / "cpu" / "cpu0").mkdir(parents=True)
    (tmp_path / "sys" / "devices" / "system" / "cpu" / "online").write_text("0\n")
    os.symlink("../../node/node0", tmp_path / "sys/devices/system/cpu/cpu0/node0")
    (tmp_path / "sys/devices/system/cpu/cpu0/topology").mkdir()
    host = LiveHost(str(tmp_path))
    assert host.read_text("sys/devices/system/cpu/online") == "0\n"
    assert host.read_text("sys/devices/system/cpu/absent") is None
    assert host.list_dir("sys/devices/system/cpu/cpu0", re.compile(r"node\d+")) == ["node0"]
    assert host.list_dir("sys/nothing", re.compile(".*")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_sysfs_file_is_reported(tmp_path):
    f = tmp_path / "sys" / "x"
    f.parent.mkdir(parents=True)
    f.write_text("1")
    os.chmod(f, 0)
    os.chmod(tmp_path, 0o755)
    os.chmod(f.parent, 0o755)

    def read():
        h = LiveHost(str(tmp_path))
        return h.read_text("sys/x"), h.file_errors

    assert as_nobody(read) == "(None, {'sys/x': 'EACCES'})"


def test_recording_keeps_every_answer(tmp_path, tree):
    root = tree(hostgen.synthetic(4, 2))
    rec = RecordingHost(LiveHost(root))
    assert rec.read_msr(2, 0x480).value == 0x00DA040000000004
    assert rec.read_msr(2, 0x481) == MsrReading(errno="SHORT")
    assert rec.read_text("sys/devices/system/cpu/online") == "0-3\n"
    assert rec.msr == {
        0x480: {2: MsrReading(value=0x00DA040000000004)},
        0x481: {2: MsrReading(errno="SHORT")},
    }
    assert rec.files == {"sys/devices/system/cpu/online": "0-3\n"}


def test_replay_of_an_absent_device_fails_the_same_for_any_register():
    """A CPU whose every recorded read failed at open() (no msr driver: ENOENT) answers
    that for a register the fixture does not hold, as `fixture mount` serves it; where
    the device opened, an unheld register is UNRECORDED."""
    from vmxprobe.host import fixture
    from vmxprobe.host.sources import FixtureHost

    doc = hostgen.synthetic(2, 1)
    doc["msr"] = {"0x3a": [{"cpus": "0", "errno": "ENOENT"}, {"cpus": "1", "value": "0x0000000000000005"}]}
    doc["cpuid"]["0x00000000:0x0"] = [{"cpus": "0-1", "errno": "EACCES"}]
    doc["cpuid"]["0x00000001:0x0"] = [{"cpus": "0-1", "errno": "EACCES"}]
    src = FixtureHost(fixture.parse(doc))
    assert src.read_msr(0, 0xC0010114) == MsrReading(errno="ENOENT")
    assert src.read_msr(1, 0xC0010114) == MsrReading(errno="UNRECORDED")
    assert src.read_cpuid(0, 0x80000001) == CpuidReading(errno="EACCES")


def test_read_msrs_reads_as_read_msr_does_one_by_one(tmp_path):
    # A device that reads, one too short for the second index, one that faults (EIO),
    # one missing (ENOENT), one that is a socket (ENXIO); asked in an order that moves
    # between CPUs and comes back to one.
    root = str(tmp_path)
    for cpu in range(5):
        write_msr_file(root, cpu, {0x3A: 0x5 + cpu, 0x480: 0x00DA040000000004})
    os.truncate(os.path.join(root, "dev", "cpu", "1", "msr"), 0x480 + 4)
    os.unlink(os.path.join(root, "dev", "cpu", "2", "msr"))
    os.symlink("/proc/self/mem", os.path.join(root, "dev", "cpu", "2", "msr"))
    os.unlink(os.path.join(root, "dev", "cpu", "3", "msr"))
    os.unlink(os.path.join(root, "dev", "cpu", "4", "msr"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(root, "dev", "cpu", "4", "msr"))
    indexes = [0x3A, 0x480, 0x481]
    one, many = LiveHost(root), LiveHost(root)
    try:
        for cpu in (0, 1, 2, 3, 4, 0, 0):
            expected = [one.read_msr(cpu, i) for i in indexes]
            assert many.read_msrs(cpu, indexes) == expected
        assert [r.errno for r in many.read_msrs(1, indexes)] == [None, "SHORT", "SHORT"]
        failures = {r.errno for cpu in (2, 3, 4) for r in many.read_msrs(cpu, indexes)}
        assert failures == {"EIO", "ENOENT", "ENXIO"}
        with pytest.raises(ValueError):
            many.read_msrs(0, [0x3A, 1 << 32])
    finally:
        one.close()
        many.close()
        s.close()


def test_a_root_that_is_not_utf8_is_named_escaped(tmp_path):
    root = os.path.join(os.fsencode(str(tmp_path)), b"h\xff\x1b")
    os.mkdir(root)
    host = LiveHost(os.fsdecode(root))
    assert host.name == str(tmp_path) + "/h\\xff\\x1b"
    host.name.encode("utf-8")
