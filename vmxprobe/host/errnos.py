"""Errno names as the kernel gives them to user space: the names a failed read may be
recorded under (LiveHost, fixtures). x86's asm/errno.h is asm-generic's: the codes are
those of include/uapi/asm-generic/errno-base.h (1-34) and errno.h (35-133)."""

from __future__ import annotations

import re

# include/uapi/asm-generic/errno-base.h and errno.h, code by code; 41 and 58 are not
# codes of their own (EWOULDBLOCK and EDEADLOCK below).
_NAMES = (
    "EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES "
    "EFAULT ENOTBLK EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY "
    "ETXTBSY EFBIG ENOSPC ESPIPE EROFS EMLINK EPIPE EDOM ERANGE EDEADLK ENAMETOOLONG "
    "ENOLCK ENOSYS ENOTEMPTY ELOOP - ENOMSG EIDRM ECHRNG EL2NSYNC EL3HLT EL3RST ELNRNG "
    "EUNATCH ENOCSI EL2HLT EBADE EBADR EXFULL ENOANO EBADRQC EBADSLT - EBFONT ENOSTR "
    "ENODATA ETIME ENOSR ENONET ENOPKG EREMOTE ENOLINK EADV ESRMNT ECOMM EPROTO EMULTIHOP "
    "EDOTDOT EBADMSG EOVERFLOW ENOTUNIQ EBADFD EREMCHG ELIBACC ELIBBAD ELIBSCN ELIBMAX "
    "ELIBEXEC EILSEQ ERESTART ESTRPIPE EUSERS ENOTSOCK EDESTADDRREQ EMSGSIZE EPROTOTYPE "
    "ENOPROTOOPT EPROTONOSUPPORT ESOCKTNOSUPPORT EOPNOTSUPP EPFNOSUPPORT EAFNOSUPPORT "
    "EADDRINUSE EADDRNOTAVAIL ENETDOWN ENETUNREACH ENETRESET ECONNABORTED ECONNRESET "
    "ENOBUFS EISCONN ENOTCONN ESHUTDOWN ETOOMANYREFS ETIMEDOUT ECONNREFUSED EHOSTDOWN "
    "EHOSTUNREACH EALREADY EINPROGRESS ESTALE EUCLEAN ENOTNAM ENAVAIL EISNAM EREMOTEIO "
    "EDQUOT ENOMEDIUM EMEDIUMTYPE ECANCELED ENOKEY EKEYEXPIRED EKEYREVOKED EKEYREJECTED "
    "EOWNERDEAD ENOTRECOVERABLE ERFKILL EHWPOISON"
).split()
BY_CODE = {code: name for code, name in enumerate(_NAMES, start=1) if name != "-"}

# Second names: errno.h's for EAGAIN and EDEADLK, and the C library's for EOPNOTSUPP
# (which Python's errno module gives for 95).
ALIASES = {"EWOULDBLOCK": 11, "EDEADLOCK": 35, "ENOTSUP": 95}

KERNEL_NAMES = frozenset(BY_CODE.values()) | frozenset(ALIASES)

# A code without a name (one of the kernel's internal codes that leaks, ENOTSUPP 524)
# is written E<number>.
NUMBERED = re.compile(r"E[1-9][0-9]{0,3}")


def errno_name(code: int) -> str:
    """The kernel's name of an errno code, or E<code> for one it does not name."""
    return BY_CODE.get(code) or f"E{code}"


def is_errno_name(name: str) -> bool:
    return name in KERNEL_NAMES or NUMBERED.fullmatch(name) is not None
