import pytest

from vmxprobe.host.cpulist import CpulistError, every_online, format_cpulist, parse_cpulist, parse_cpumap


@pytest.mark.parametrize(
    "text,cpus",
    [
        ("", []),
        ("\n", []),
        ("0", [0]),
        ("0-3\n", [0, 1, 2, 3]),
        ("0-1,8,10-11", [0, 1, 8, 10, 11]),
        ("3,1,2", [1, 2, 3]),
        ("0-62:2", list(range(0, 63, 2))),
        ("0-7:2/4", [0, 1, 4, 5]),
    ],
)
def test_parse_cpulist(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["a", "1-", "-1", "3-1", "0-5:0/0", "1,,2", "0x3"])
def test_parse_cpulist_rejects(text):
    with pytest.raises(CpulistError):
        parse_cpulist(text)


def test_parse_cpulist_refuses_absurd_ids():
    with pytest.raises(CpulistError, match="beyond the limit"):
        parse_cpulist("0-999999999")


@pytest.mark.parametrize(
    "cpus,text",
    [
        ([], ""),
        ([0], "0"),
        ([0, 1, 2, 3], "0-3"),
        ([0, 2, 4], "0,2,4"),
        ([5, 1, 2, 3], "1-3,5"),
    ],
)
def test_format_cpulist(cpus, text):
    assert format_cpulist(cpus) == text


def test_cpumap_multiword():
    # util-linux x86_64-64cpu node0: every even CPU up to 62
    assert parse_cpumap("0000,55555555,55555555\n") == list(range(0, 64, 2))
    assert parse_cpumap("ff") == list(range(8))
    assert parse_cpumap("00000001,00000000") == [32]


@pytest.mark.parametrize("text", ["xyz", "123456789", "ff,,ff"])
def test_cpumap_rejects(text):
    with pytest.raises(CpulistError):
        parse_cpumap(text)


@pytest.mark.parametrize("text", ["9" * 5000, "0-" + "9" * 5000, "0-3:" + "1" * 5000 + "/4", "0" * 11])
def test_numbers_past_the_int_string_limit_are_a_cpulist_error(text):
    with pytest.raises(CpulistError, match="digits"):
        parse_cpulist(text)


def test_every_online_agrees_in_number():
    assert every_online([0]) == "the one online CPU (0) has"
    assert every_online([3, 1, 2, 0]) == "all 4 online CPUs (0-3) have"
    assert every_online({8, 0}) == "all 2 online CPUs (0,8) have"
