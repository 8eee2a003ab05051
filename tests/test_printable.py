"""vmxprobe/printable.py: host data made safe to show."""

from __future__ import annotations

import json
import os

import pytest

from vmxprobe.printable import first_surrogate, has_surrogate, json_path, printable


@pytest.mark.parametrize(
    "text, shown",
    [
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"),
        ("Xeon\u2122 été", "Xeon\u2122 été"),  # printable Unicode is kept
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("lone \ud800 high", "lone \\ud800 high"),
        # surrogateescape: the byte 0xff of a name that is not UTF-8
        (os.fsdecode(b"web\xff.json"), "web\\xff.json"),
    ],
)
def test_printable_escapes_what_a_terminal_would_obey(text, shown):
    assert printable(text) == shown
    shown.encode("utf-8")  # always encodable
    assert "\n" not in printable(text)


def test_printable_is_the_identity_on_safe_text():
    s = "READY: x86_vmx_init() allocates 4 root VMCS page(s)"
    assert printable(s) is s


def test_surrogates_are_found_with_their_json_path():
    doc = json.loads('{"a": [1, {"b\\ud800": 2}], "name": "x\\udc80", "ok": "\\ud83d\\ude00"}')
    assert first_surrogate(doc) == '$.a[1]["b\\ud800"]'
    del doc["a"]
    assert first_surrogate(doc) == "$.name"
    del doc["name"]
    assert first_surrogate(doc) is None  # a pair is one character, not a surrogate
    assert has_surrogate("\udfff") and not has_surrogate("\U0001f600")


def test_json_paths_name_keys_readably():
    assert json_path("$", "msr") == "$.msr"
    assert json_path("$.msr", "0x3a") == '$.msr["0x3a"]'
    assert json_path('$.msr["0x3a"]', 0) == '$.msr["0x3a"][0]'
    assert json_path("$.files", "proc/cpuinfo\n") == '$.files["proc/cpuinfo\\n"]'
    assert len(json_path("$", "x" * 500)) < 80
