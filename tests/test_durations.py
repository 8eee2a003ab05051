"""vmxprobe.durations: the durations --stale-after and VMXPROBE_NFD_EXPIRY accept."""

import pytest

from vmxprobe import durations


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("90s", 90),
        ("15m", 900),
        ("3h", 10800),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        (" 7D ", 604800),
    ],
)
def test_parse_duration(text, seconds):
    assert durations.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "1d 2h", "0s", "-1d", "1.5h"])
def test_parse_duration_rejects(text):
    with pytest.raises(durations.DurationError):
        durations.parse_duration(text)
