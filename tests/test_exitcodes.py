"""Tests for vmxprobe.exitcodes: the codes every command documents agree with the
README's "Exit codes" table, with click's usage-error code and with sysexits.h."""

import os
import re

import click

from tests import REPO
from vmxprobe import exitcodes


def readme_codes():
    """{code: meaning} from the table under "## Exit codes" in README.md."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (.*) \|$", section, re.M)}


def test_every_code_is_in_the_readme_and_no_other():
    codes = {v for k, v in vars(exitcodes).items() if k.startswith("EXIT_")}
    assert set(readme_codes()) == codes


def test_the_readme_says_what_each_code_means():
    doc = readme_codes()
    assert doc[exitcodes.EXIT_READY].startswith("ready")
    assert doc[exitcodes.EXIT_NOT_READY].startswith("not ready")
    assert doc[exitcodes.EXIT_USAGE].startswith("usage error")
    assert doc[exitcodes.EXIT_UNKNOWN].startswith("could not determine")
    assert doc[exitcodes.EXIT_INTERNAL].startswith("internal error")


def test_usage_is_clicks_usage_error_code():
    assert exitcodes.EXIT_USAGE == click.UsageError.exit_code


def test_internal_is_ex_software():
    assert exitcodes.EXIT_INTERNAL == os.EX_SOFTWARE  # sysexits.h: 70


def test_codes_are_distinct():
    codes = [v for k, v in vars(exitcodes).items() if k.startswith("EXIT_")]
    assert len(codes) == len(set(codes)) == 5
