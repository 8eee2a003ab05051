"""The host tree every fault cell starts from."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests import hostgen
from tests.faults.matrix import Tree


@pytest.fixture
def host(request):
    """A 4-CPU, 2-node Intel host (CPUs 0-1 on node 0, 2-3 on node 1), ready for VMX, as
    a tree of real files in a folder every user can read (for the setpriv cells)."""
    d = tempfile.mkdtemp(prefix="vmxprobe-faults-", dir="/tmp")
    os.chmod(d, 0o755)
    root = os.path.join(d, "root")
    hostgen.write_tree(hostgen.synthetic(4, 2), root)
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    t = Tree(root, d)
    yield t
    t.cleanup()
