"""core.cli: a bad command line is one `error:` line and exit code 2; a user error is one line too."""
from __future__ import annotations

import pytest

from core import cli, settings


def test_a_bad_flag_is_one_error_line_and_exit_2(capsys):
    parser = cli.Parser(prog="python -m core.x")
    parser.add_argument("--n", type=settings.number(int, "n", minimum=1), required=True)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--n", "0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("error: argument --n: Expected n >= 1") and "--help" in lines[0]


def test_a_missing_flag_is_one_error_line_too(capsys):
    parser = cli.Parser(prog="python -m core.x")
    parser.add_argument("--checkpoint", required=True)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert capsys.readouterr().err.count("\n") == 1


def test_report_prints_one_line_and_gives_the_usage_error_code(capsys):
    assert cli.report(ValueError("Expected a folder. Received: x")) == cli.USAGE_ERROR == 2
    assert capsys.readouterr().err == "error: Expected a folder. Received: x\n"


def test_the_errors_a_user_can_cause_are_all_value_or_os_errors():
    assert all(issubclass(kind, (ValueError, OSError)) or kind.__module__.startswith("tensorflow")
               for kind in cli.user_error_types())


def test_an_empty_text_flag_is_refused_rather_than_taken_for_the_working_folder(capsys):
    parser = cli.Parser(prog="python -m core.x")
    parser.add_argument("--out", type=settings.text("out"), default="samples")
    assert parser.parse_args(["--out", "my samples"]).out == "my samples"
    for empty in ("", "  "):
        with pytest.raises(SystemExit):
            parser.parse_args(["--out", empty])
        assert capsys.readouterr().err.startswith("error: argument --out: Expected out to be a non-empty text")
    with pytest.raises(ValueError, match="non-empty"):
        settings.check_value("data", "", str, {})  # a config.json's empty folder, too
