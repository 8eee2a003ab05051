import json

import pytest

from tests import hostgen

# Fails the session if anything opens a /dev/cpu device for writing (tests/nowrite_plugin.py).
pytest_plugins = ["tests.nowrite_plugin"]


@pytest.fixture
def tree(tmp_path):
    """Write a fixture document out as a host tree; returns the root path."""

    def make(doc, **kw):
        root = tmp_path / "root"
        hostgen.write_tree(doc, str(root), **kw)
        return str(root)

    return make


@pytest.fixture
def fixture_file(tmp_path):
    """Save a fixture document to a file; returns its path."""

    def save(doc, name="host.json"):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return str(path)

    return save
