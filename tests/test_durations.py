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


def test_a_number_past_the_int_string_limit_is_a_duration_error():
    with pytest.raises(durations.DurationError, match="more than 9 digits") as e:
        durations.parse_duration("9" * 5000 + "d")
    assert len(str(e.value)) < 100  # the message does not repeat the 5000 digits
    assert durations.parse_duration("999999999s") == 999999999
