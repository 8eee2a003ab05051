"""Files vmxprobe writes and reads back.

Written atomically: never half a file, never through a planted link, never over
something that is not a regular file. Read bounded: never more than a cap, never
from a FIFO or a device that would block or never end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from typing import Union

# A file name may be at most NAME_MAX bytes (include/uapi/linux/limits.h).
NAME_MAX = 255
_TEMP_TRIES = 100
# Kernel file systems: a write there is not a file but an action (or a broken /dev).
_NEVER = ("/dev", "/proc", "/sys")
_SHM = "/dev/shm"  # a tmpfs for files, under /dev by convention only
_CHUNK = 1 << 16


def kernel_fs(path: str) -> str | None:
    """The kernel file system (/dev, /proc or /sys) that `path` resolves into, or None.
    Nothing of vmxprobe's belongs there: a file written there is an action, and a mount
    there hides what the host itself shows (a fixture over /proc/PID, or /dev)."""
    real = os.path.realpath(path)
    return next((top for top in _NEVER if real == top or real.startswith(top + "/")), None)


def read_capped(fd: int, limit: int) -> bytes | None:
    """Read fd to its end, or return None once more than `limit` bytes came: a file can
    grow after fstat(), so the cap is enforced on what is read, not on st_size."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return None


class OutputError(Exception):
    """A result that could not be written; the message is one line naming the path."""


class InputError(ValueError):
    """A file that could not be read as input; the message is one line naming the path."""


def read_bounded(path: str, limit: int, what: str) -> bytes:
    """The contents of the regular file at `path`, refused if over `limit` bytes.

    Opened non-blocking, so a FIFO planted where a fixture or report should be cannot
    hang the caller; whether it is a regular file is asked of the opened descriptor,
    so nothing can be swapped in between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read: {_why(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise InputError(f"{path}: {st.st_size} bytes, over the {_size(limit)} limit for a {what}")
        data = read_capped(fd, limit)
        if data is None:
            raise InputError(f"{path}: over the {_size(limit)} limit for a {what}")
        return data
    except OSError as e:
        raise InputError(f"{path}: cannot read: {_why(e)}") from None
    finally:
        os.close(fd)


def _why(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e)).rstrip(".")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n & ((1 << 20) - 1) else f"{n} bytes"


def _temp_names() -> Iterator[str]:
    """Random tokens for temp names; a test replaces this to plant names in advance."""
    import secrets  # here, not at start-up: every command imports this module

    while True:
        yield secrets.token_hex(8)


def _temp_name(base: str, token: str) -> str:
    """`.BASE.TOKEN.tmp`, with BASE cut so the whole name fits NAME_MAX bytes: a target
    whose own name is near the limit must still get a temp file beside it."""
    suffix = f".{token}.tmp"
    stem = os.fsencode("." + base)[: NAME_MAX - len(suffix)]
    return os.fsdecode(stem) + suffix


Content = Union[str, Iterable[str]]


def write_atomic(path: str, content: Content, mode: int = 0o644) -> None:
    """Write `content` (a str, or an iterable of str chunks) to `path` atomically.

    A fresh temp file is made in the target's folder with O_CREAT|O_EXCL|O_NOFOLLOW (a
    name planted in advance, file or link, is never opened: the next random name is
    tried), filled, fsynced and renamed over the target; the folder is then fsynced.
    Every step goes through one descriptor of the folder, so temp and target stay in the
    same directory even if the path is swapped meanwhile. rename() replaces a symlink at
    `path` rather than writing through it; a directory, FIFO, socket or device there is
    refused. A reader sees the old file or the new one, never a mix, even if the process
    is killed mid-write (a killed writer leaves only its dot-named temp file).

    A regular file that is replaced keeps its permission bits and, when run as root,
    its owner; a new file gets `mode` exactly (0644: a report or metrics file is read
    by other users, node_exporter for one, whatever the umask of the writer).
    """
    if not path or path.endswith(os.sep):
        raise OutputError(f"{path or '(empty)'}: names a folder, not a file")
    target = os.path.abspath(path)
    folder, base = os.path.split(target)
    if not base:
        raise OutputError(f"{path}: names a folder, not a file")
    real = os.path.realpath(folder)
    if kernel_fs(real) and not (real == _SHM or real.startswith(_SHM + "/")):
        # Replacing /dev/stdout (a symlink) with a regular file would break every
        # process on the host that writes to it; nothing vmxprobe writes belongs there.
        raise OutputError(
            f"{path}: vmxprobe writes regular files only, never into "
            f"{', '.join(_NEVER)} (leave out -o to write to standard output)"
        )
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {folder}: {_why(e)}") from None
    try:
        _write_in(dfd, path, folder, base, content, mode)
    finally:
        os.close(dfd)


def _write_in(dfd: int, path: str, folder: str, base: str, content: Content, mode: int) -> None:
    try:
        st = os.lstat(base, dir_fd=dfd)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{path}: {_why(e)}") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{path}: exists and is not a regular file; choose another output path")
    keep = st if st is not None and stat.S_ISREG(st.st_mode) else None

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    fd: int | None = None
    tmp = ""
    names = _temp_names()
    for _ in range(_TEMP_TRIES):
        tmp = _temp_name(base, next(names))
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"{path}: cannot create a file in {folder}: {_why(e)}") from None
    if fd is None:
        raise OutputError(
            f"{path}: cannot create a file in {folder}: {_TEMP_TRIES} temp names were all taken"
        )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            for chunk in [content] if isinstance(content, str) else content:
                f.write(chunk)
            f.flush()
            if keep is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(keep.st_mode) & 0o777)
                if os.geteuid() == 0 and (keep.st_uid, keep.st_gid) != (0, 0):
                    try:
                        os.fchown(f.fileno(), keep.st_uid, keep.st_gid)
                    except OSError:
                        pass  # a file system without owners (vfat): keep root's
            else:
                os.fchmod(f.fileno(), mode & 0o777)
            os.fsync(f.fileno())
        os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException as e:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(
                f"{path}: could not write: {_why(e)}; any previous file there is unchanged"
            ) from None
        raise
    try:
        os.fsync(dfd)
    except OSError:
        pass  # the rename is done; a folder that cannot be fsynced is not an error
