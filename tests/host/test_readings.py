"""vmxprobe/host/readings.py: /proc/cpuinfo as the kernel writes it."""

from vmxprobe.host.readings import parse_cpuinfo


def test_a_processor_number_no_kernel_prints_is_skipped():
    text = (
        "processor\t: 0\nflags\t\t: vmx\n\n"
        f"processor\t: {'9' * 5000}\nflags\t\t: vmx\n\n"
        "processor\t: ²\nflags\t\t: vmx\n\n"
        "processor\t: 1\nflags\t\t: vmx\n"
    )
    assert sorted(parse_cpuinfo(text)) == [0, 1]


def test_lines_end_at_line_feeds_only():
    # a brand string may hold any byte: a carriage return or \x85 does not end its line
    info = parse_cpuinfo("processor\t: 0\nmodel name\t: Xeon\rfake\x85more\u2028x\nflags\t\t: vmx\n")
    assert info[0]["model name"] == "Xeon\rfake\x85more\u2028x"
