"""Durations as people write them: '90s', '15m', '3h', '7d', '2w', or a sum ('1d12h')."""

from __future__ import annotations

import re

_DURATION = re.compile(r"([0-9]+)([smhdw])")
# Nine digits of weeks are 19,000 years; int() of thousands would meet Python's
# int-string limit.
_MAX_DIGITS = 9
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DurationError(ValueError):
    """Text that is not a duration; the message says how to write one."""


def parse_duration(text: str) -> int:
    """'90s', '15m', '3h', '7d', '2w', or a sum such as '1d12h' -> seconds (> 0).

    A bare number is refused: '7' could mean seconds or days, and guessing wrong
    would silently expire labels or keep stale reports.
    """
    s = (text or "").strip().lower()
    shown = repr(text if len(text or "") <= 40 else f"{text[:37]}...")
    pos, total = 0, 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        if len(m.group(1)) > _MAX_DIGITS:
            raise DurationError(f"{shown}: a number of more than {_MAX_DIGITS} digits is not a duration")
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise DurationError(
            f"{shown} is not a duration: use a number with a unit, s, m, h, d or w (e.g. 90m, 7d, 1d12h)"
        )
    if total <= 0:
        raise DurationError(f"{shown}: the duration must be longer than zero")
    return total
