"""The reports a fleet run reads: each FILE as given, each DIR's *.json files, lazily,
and what stands where a report should be but is not one (docs/fleet.md)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator


def check_paths(paths) -> list[str]:
    return [p for p in paths if not os.path.exists(p)]


def iter_paths(paths, recursive: bool, errors: list) -> Iterator[str]:
    """Report files: each FILE as given, and each DIR's *.json files (not dot-files, so
    not the temp files of an atomic write in progress). Directory order, lazily: a
    listing of 100,000 names is never held. Directories that cannot be listed go to
    `errors` as (path, message)."""
    for p in paths:
        if os.path.isdir(p):
            yield from _iter_dir(p, recursive, errors)
        else:
            yield p


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_a_report(entry: os.DirEntry) -> str:
    """Why a *.json entry that is not a regular file or a folder is not read."""
    try:
        mode = entry.stat().st_mode  # through a symbolic link
    except FileNotFoundError:
        return "a symbolic link to nothing: not read"
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file: {kind}" + (" (through a symbolic link)" if entry.is_symlink() else "")


def _iter_dir(path, recursive, errors):
    subdirs = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    report = name.lower().endswith(".json")
                    if report and entry.is_file():
                        yield entry.path
                    elif recursive and entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.path)
                    elif report and not entry.is_dir():
                        # A FIFO, socket, device or dangling link where a report should
                        # be: not opened (a FIFO would block), but listed and counted.
                        errors.append((entry.path, _not_a_report(entry)))
                except OSError as e:
                    errors.append((entry.path, e.strerror or str(e)))
    except OSError as e:
        errors.append((path, f"cannot list: {e.strerror or e}"))
        return
    for sub in sorted(subdirs):
        yield from _iter_dir(sub, recursive, errors)


def count_files(paths, recursive) -> int:
    return sum(1 for _ in iter_paths(paths, recursive, []))
