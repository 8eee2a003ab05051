"""Writing results: atomically, never half a file, never through a planted link."""

from __future__ import annotations

import os
import stat
import tempfile


class OutputError(Exception):
    pass


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` via a fresh temp file in the same folder, fsync, rename.

    mkstemp opens with O_EXCL, so a pre-planted temp name cannot be hijacked; rename
    replaces a symlink at `path` rather than writing through it; a reader sees the old
    file or the new one, never a mix, even if the process is killed mid-write.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{path}: {e.strerror}") from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{path}: exists and is not a regular file; choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"{path}: cannot create a file in {folder}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"{path}: {e.strerror}") from None
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # the rename is done; a folder that cannot be fsynced is not an error
