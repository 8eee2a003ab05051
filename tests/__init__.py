"""The test suite. Test modules mirror the package: tests/host for vmxprobe.host, and so
on; tests/faults holds the fault matrix of docs/faults.md, by layer."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
