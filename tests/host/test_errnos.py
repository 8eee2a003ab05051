"""vmxprobe/host/errnos.py: the kernel's errno names (include/uapi/asm-generic/errno-base.h
and errno.h, which x86 uses as they are)."""

from __future__ import annotations

import errno

from vmxprobe.host import errnos
from vmxprobe.host.sources import errno_name as recorded


def test_each_code_has_the_name_the_c_library_gives_it():
    # glibc's names are the kernel's on Linux, but for its own second name of 95
    # (ENOTSUP) and the aliases errno.h defines (EWOULDBLOCK, EDEADLOCK).
    # Python's table lacks a few of the newest (EHWPOISON, 133).
    known = [code for code in errnos.BY_CODE if code in errno.errorcode]
    assert len(known) >= 125
    for code in known:
        ours = {errnos.BY_CODE[code]} | {a for a, c in errnos.ALIASES.items() if c == code}
        assert errno.errorcode[code] in ours, (code, errnos.BY_CODE[code], errno.errorcode[code])
    assert len(errnos.BY_CODE) == 131 and max(errnos.BY_CODE) == 133  # 41 and 58 unused
    assert errnos.ALIASES["EWOULDBLOCK"] == errno.EAGAIN and errnos.ALIASES["EDEADLOCK"] == errno.EDEADLK


def test_recorded_errno_names_are_the_kernels():
    assert recorded(95) == errnos.errno_name(95) == "EOPNOTSUPP" and recorded(133) == "EHWPOISON"
    # a code the kernel leaks without a name of its own (ENOTSUPP, 524, of the kernel's
    # include/linux/errno.h) is written by number
    assert recorded(524) == "E524" and errnos.is_errno_name("E524")
    assert not errnos.is_errno_name("EFOO") and not errnos.is_errno_name("E0524")
    assert errnos.is_errno_name("ENOTSUP") and errnos.is_errno_name("EIO")
