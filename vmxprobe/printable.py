"""Text from a host, a fixture or a report, made safe to show: every output path (the
text report, Prometheus labels, the fleet's text and csv, error lines) passes what it
did not write itself through printable().

Host data is not ours: a model name in /proc/cpuinfo, an osrelease, a CPUID vendor
string, a file name or a string in a report may hold escape sequences that would drive
the reader's terminal, a newline that would start a line of its own, or (from a JSON
\\udXXX escape or a file name that is not UTF-8) a lone surrogate that no UTF-8 output
can hold. Each such character becomes a visible escape; everything else is kept.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators, which
# some terminals and editors treat as line breaks.
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029"
SURROGATES = "\ud800-\udfff"

_UNSAFE = re.compile(f"[{CONTROL_CHARS}{SURROGATES}]")
_SURROGATE = re.compile(f"[{SURROGATES}]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    code = ord(c)
    if c in _SHORT:
        return _SHORT[c]
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        # Python's surrogateescape stands for the byte 0x80-0xff of a file name or
        # argument that is not UTF-8: show that byte.
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control character, line separator and lone surrogate written
    as a backslash escape (\\n, \\x1b, \\xff for a byte that is not UTF-8, \\ud800): one
    line of valid Unicode that draws nothing but its characters."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def has_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate: a string no UTF-8 output can hold."""
    return _SURROGATE.search(text) is not None


def first_surrogate(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string (a key or a value) in a parsed JSON document
    that holds a lone surrogate, or None. json.loads() turns an unpaired \\udXXX escape
    into one; a pair (\\ud83d\\ude00) becomes one character and is fine."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if has_surrogate(v):
                return where
        elif isinstance(v, dict):
            for k, item in reversed(list(v.items())):
                at = json_path(where, k)
                if isinstance(k, str) and has_surrogate(k):
                    return at
                stack.append((at, item))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v))))
    return None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def json_path(parent: str, key: Any) -> str:
    """`parent.key`, or `parent["key"]` for a key that is not a plain name (a file path,
    "0x3a"), or `parent[3]` for a list index; the key escaped so that the path is one
    printable line."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if isinstance(key, str) and len(key) <= 60 and _NAME.fullmatch(key):
        return f"{parent}.{key}"
    shown = printable(str(key)).replace('"', '\\"')
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f'{parent}["{shown}"]'
