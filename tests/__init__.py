"""The test suite. Test modules mirror the package: tests/host for vmxprobe.host, and so
on; tests/faults holds the fault matrix of docs/faults.md, by layer."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def cli_runner():  # type: ignore[no-untyped-def]
    """A click CliRunner whose ``stdout`` and ``stderr`` are kept apart on every click the
    package supports: click 8.0/8.1 mix them unless told not to, click 8.2 removed the
    switch and always keeps them apart (``output`` is then the interleaved terminal)."""
    from click.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()
