"""The matrix itself: every (step, failure) pair is a tested cell or N/A with a reason,
and docs/faults.md's table says the same exit codes."""

from __future__ import annotations

import re

from tests.faults import test_host, test_output, test_pages  # noqa: F401  (their cells register)
from tests.faults.matrix import (
    CELLS,
    DOC,
    FAILURES,
    NA,
    STEPS,
)


def _document_cells():
    """{(step, failure): exit code or "N/A"} from the table in docs/faults.md."""
    cells = {}
    with open(DOC) as f:
        for line in f:
            m = re.match(r"\|\s*`(\w+)`\s*\|\s*`(\w+)`\s*\|(.*)\|\s*([0-9]+|N/A)\s*\|\s*$", line)
            if m:
                step, failure, _, code = m.groups()
                assert (step, failure) not in cells, f"{step} x {failure} twice in {DOC}"
                cells[(step, failure)] = code if code == "N/A" else int(code)
    return cells


def test_matrix_is_complete():
    every = {(s, f) for s in STEPS for f in FAILURES}
    assert set(CELLS) | set(NA) == every
    assert not set(CELLS) & set(NA)


def test_matrix_matches_the_document():
    doc = _document_cells()
    assert set(doc) == set(CELLS) | set(NA), set(doc) ^ (set(CELLS) | set(NA))
    for key, c in CELLS.items():
        assert doc[key] == c.exit, f"{key}: docs/faults.md says exit {doc[key]}, the test {c.exit}"
    for key in NA:
        assert doc[key] == "N/A", key


def test_counts(capsys):
    """The numbers docs/faults.md and the summary quote."""
    tested = len(CELLS)
    with capsys.disabled():
        print(
            f"\nfault matrix: {len(STEPS) * len(FAILURES)} cells, {tested} tested "
            f"({sum(1 for k in CELLS if k[0] == 'file')} of them on two files), "
            f"{len(NA)} N/A; real where possible: "
            f"{sum(1 for c in CELLS.values() if c.how.startswith('real'))}"
        )
    assert tested + len(NA) == len(STEPS) * len(FAILURES) == 60
