"""Tests for vmxprobe.files: write_atomic() (never half a file, never through a planted
link, never over something that is not a regular file) and read_bounded() (never more
than a cap, never from a FIFO or a device)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import time

import pytest

from vmxprobe import files as output
from vmxprobe.files import InputError, OutputError, kernel_fs, read_bounded, write_atomic

OLD = "previous report\n"
NOBODY = 65534  # the nobody user and group of Debian's base-passwd


# --- write_atomic ----------------------------------------------------------------------


def test_a_planted_temp_name_is_never_opened(tmp_path, monkeypatch):
    # The attacker knows the next temp name and plants a link there to a file of
    # root's: O_EXCL|O_NOFOLLOW refuses the name, the next one is used.
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "report.json"
    planted = tmp_path / output._temp_name("report.json", "planted")
    planted.symlink_to(victim)
    monkeypatch.setattr(output, "_temp_names", lambda: iter(["planted", "fresh"]))
    write_atomic(str(target), "new report")
    assert victim.read_text() == "keep me"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert target.read_text() == "new report"
    assert sorted(os.listdir(tmp_path)) == sorted(["victim", "report.json", planted.name])


def test_when_every_temp_name_is_taken_nothing_is_written(tmp_path, monkeypatch):
    (tmp_path / output._temp_name("r.json", "x")).write_text("planted")
    monkeypatch.setattr(output, "_temp_names", lambda: iter(["x"] * 1000))
    with pytest.raises(OutputError, match="temp names were all taken"):
        write_atomic(str(tmp_path / "r.json"), "new")
    assert not (tmp_path / "r.json").exists()


def test_a_symlink_at_the_target_is_replaced_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "passwd"
    victim.write_text("root:x:0:0")
    target = tmp_path / "report.json"
    target.symlink_to(victim)
    write_atomic(str(target), "report")
    assert victim.read_text() == "root:x:0:0"
    assert not target.is_symlink() and target.read_text() == "report"


@pytest.mark.parametrize("kind", ["dir", "fifo", "socket", "device"])
def test_a_target_that_is_not_a_regular_file_is_refused_unopened(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "dir":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)  # opening it for writing would block forever
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(target))
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null
    with pytest.raises(OutputError, match="not a regular file"):
        write_atomic(str(target), "x")
    assert os.listdir(tmp_path) == ["out"]


def test_a_target_name_at_name_max_still_gets_a_temp_beside_it(tmp_path):
    name = "r" * 250 + ".json"
    write_atomic(str(tmp_path / name), "ok")
    assert (tmp_path / name).read_text() == "ok" and os.listdir(tmp_path) == [name]


def test_a_replaced_file_keeps_its_mode_and_owner(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    if os.geteuid() == 0:
        os.chown(target, NOBODY, NOBODY)
    write_atomic(str(target), "new")
    st = os.stat(target)
    assert stat.S_IMODE(st.st_mode) == 0o600 and target.read_text() == "new"
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    fresh = tmp_path / "fresh.json"
    write_atomic(str(fresh), "x")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644


def _interruptible_writer(target, go):
    """A child that writes a report slowly through write_atomic: one chunk, then it
    tells the parent and waits to be killed."""

    def chunks():
        yield '{"partial": '
        os.write(go, b"1")
        time.sleep(60)
        yield "true}\n"

    write_atomic(target, chunks())


def test_sigkill_mid_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "report.json"
    target.write_text(OLD)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(r)
            _interruptible_writer(str(target), w)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"  # the child is mid-write
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert target.read_text() == OLD
    left = [n for n in os.listdir(tmp_path) if n != "report.json"]
    assert len(left) == 1 and left[0].startswith(".report.json.") and left[0].endswith(".tmp")
    # and the next write goes through as usual
    write_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"


def test_chunks_are_written_in_order_and_a_new_file_is_0644(tmp_path):
    target = tmp_path / "metrics.prom"
    old = os.umask(0o077)
    try:
        write_atomic(str(target), iter(["a ", "b\n", "c\n"]))
    finally:
        os.umask(old)
    assert target.read_text() == "a b\nc\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # whatever the umask


@pytest.mark.parametrize("path", ["/dev/stdout", "/proc/self/fd/1", "/sys/kernel/x"])
def test_kernel_file_systems_are_refused(path):
    with pytest.raises(OutputError, match="never into /dev, /proc, /sys"):
        write_atomic(path, "x")


def test_a_folder_path_is_refused(tmp_path):
    with pytest.raises(OutputError, match="names a folder"):
        write_atomic(str(tmp_path) + os.sep, "x")


def test_a_missing_folder_names_the_folder(tmp_path):
    with pytest.raises(OutputError, match="cannot create a file in .*no-such: No such file"):
        write_atomic(str(tmp_path / "no-such" / "r.json"), "x")


# --- read_bounded -----------------------------------------------------------------------


def test_read_bounded_reads_a_file_up_to_its_cap(tmp_path):
    f = tmp_path / "host.json"
    f.write_bytes(b"x" * 100)
    assert read_bounded(str(f), 100, "fixture") == b"x" * 100
    with pytest.raises(InputError, match=r"host.json: 100 bytes, over the 99 bytes limit for a fixture"):
        read_bounded(str(f), 99, "fixture")


def test_read_bounded_names_the_mib_limit(tmp_path):
    f = tmp_path / "big.json"
    f.write_bytes(b"x" * ((1 << 20) + 1))
    with pytest.raises(InputError, match="over the 1 MiB limit for a report"):
        read_bounded(str(f), 1 << 20, "report")


def test_read_bounded_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # with no writer, a blocking open would hang forever
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(str(fifo), 1 << 20, "fixture")


def test_read_bounded_refuses_a_device_and_a_folder(tmp_path):
    with pytest.raises(InputError, match="/dev/zero: not a regular file"):
        read_bounded("/dev/zero", 1 << 20, "fixture")  # would never end
    with pytest.raises(InputError, match="not a regular file"):
        read_bounded(str(tmp_path), 1 << 20, "fixture")


def test_read_bounded_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope.json: cannot read: No such file or directory$"):
        read_bounded(str(tmp_path / "nope.json"), 10, "fixture")


def test_read_capped_stops_past_the_limit():
    r, w = os.pipe()
    os.write(w, b"y" * 200)
    os.close(w)
    try:
        assert output.read_capped(r, 100) is None
    finally:
        os.close(r)
    r, w = os.pipe()
    os.write(w, b"y" * 100)
    os.close(w)
    try:
        assert output.read_capped(r, 100) == b"y" * 100
    finally:
        os.close(r)


@pytest.mark.parametrize(
    "path, top",
    [
        ("/proc", "/proc"),
        ("/proc/self", "/proc"),
        (f"/proc/{os.getpid()}/fd", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev", "/dev"),
        ("/dev/shm", "/dev"),
        ("/tmp", None),
        ("/devices", None),
        ("/procfs", None),
    ],
)
def test_kernel_file_systems_are_found_through_links(path, top):
    assert kernel_fs(path) == top


def test_a_link_into_proc_is_under_proc(tmp_path):
    os.symlink("/proc/self", tmp_path / "looks-harmless")
    assert kernel_fs(str(tmp_path / "looks-harmless")) == "/proc"
