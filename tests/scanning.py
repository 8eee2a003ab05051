"""One scan as the tests look at it: the JSON report (the contract) and the typed
verdict behind it."""

from __future__ import annotations

from typing import Any

from vmxprobe import pipeline
from vmxprobe.kernel.verdict import Verdict
from vmxprobe.render.report import build
from vmxprobe.render.text import render_text


def run(source: Any, fixture: Any = None, **kw: Any) -> tuple[dict[str, Any], Verdict]:
    result = pipeline.run(source, fixture, **kw)
    return build(result), result.verdict


def scan(source: Any, fixture: Any = None, **kw: Any) -> tuple[dict[str, Any], Verdict, str]:
    """The report, the verdict and the text output of one scan."""
    result = pipeline.run(source, fixture, **kw)
    return build(result), result.verdict, render_text(result)
