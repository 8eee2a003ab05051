"""vmxprobe/files.py: where vmxprobe never writes or mounts."""

import os

import pytest

from vmxprobe.files import kernel_fs


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
