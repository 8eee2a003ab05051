"""Tests for vmxprobe.fleet.inputs: which files a fleet run reads, in what order, and
what it lists instead of reading (a FIFO would block an open; a dangling link has
nothing behind it). Real folders, FIFOs, sockets and links under tmp_path."""

import os
import socket

from vmxprobe.fleet import inputs


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return str(path)


def test_files_as_given_and_a_folders_reports_not_its_dot_files(tmp_path):
    given = touch(tmp_path / "given.txt")  # a file named on the command line is read
    a = touch(tmp_path / "dir" / "a.json")
    b = touch(tmp_path / "dir" / "B.JSON")
    touch(tmp_path / "dir" / ".a.json.tmp123")  # an atomic write in progress
    touch(tmp_path / "dir" / ".hidden.json")
    touch(tmp_path / "dir" / "notes.txt")
    errors: list = []
    got = list(inputs.iter_paths([given, str(tmp_path / "dir")], False, errors))
    assert got[0] == given and sorted(got[1:]) == sorted([a, b]) and errors == []
    assert inputs.count_files([given, str(tmp_path / "dir")], False) == 3


def test_subfolders_only_when_recursive_and_in_name_order(tmp_path):
    top = touch(tmp_path / "top.json")
    z = touch(tmp_path / "z" / "r.json")
    a = touch(tmp_path / "a" / "deeper" / "r.json")
    assert list(inputs.iter_paths([str(tmp_path)], False, [])) == [top]
    assert list(inputs.iter_paths([str(tmp_path)], True, [])) == [top, a, z]


def test_special_entries_named_json_are_listed_with_why_never_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.json"))
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.json")
    os.symlink("/dev/null", tmp_path / "null.json")
    try:
        errors: list = []
        assert list(inputs.iter_paths([str(tmp_path)], False, errors)) == []
        why = {os.path.basename(p): m for p, m in errors}
    finally:
        sock.close()
    assert why == {
        "fifo.json": "not a regular file: a FIFO",
        "sock.json": "not a regular file: a socket",
        "dangling.json": "a symbolic link to nothing: not read",
        "null.json": "not a regular file: a character device (through a symbolic link)",
    }


def test_check_paths_names_what_does_not_exist(tmp_path):
    here = touch(tmp_path / "r.json")
    assert inputs.check_paths([here, str(tmp_path / "no.json")]) == [str(tmp_path / "no.json")]
