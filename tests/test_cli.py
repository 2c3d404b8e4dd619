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


TF_STARTUP = """WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796292689.309898    7217 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796292689.310211    7217 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
E0000 00:00:1796292693.242809    7217 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_tensorflow_s_start_up_lines_are_held_back_and_every_other_line_passed_on():
    others = ("E0000 00:00:1796292693.242809    7217 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
              "/usr/lib/python3/site-packages/x.py:3: DeprecationWarning: old\n  import y\n")
    assert cli.without_startup_chatter(TF_STARTUP) == ""
    startup = TF_STARTUP.splitlines(keepends=True)
    assert cli.without_startup_chatter("".join(startup[:2]) + others + "".join(startup[2:])) == others


def test_a_command_s_mistake_is_its_only_line_on_stderr(tmp_path):
    """Run as a user runs them: TensorFlow imported afresh, its start-up lines (TF 2.19+ ignores
    TF_CPP_MIN_LOG_LEVEL for them) must not come before the error line."""
    import subprocess
    import sys
    from pathlib import Path

    empty = tmp_path / "empty"
    empty.mkdir()
    commands = {"train": ["core.train", "vqvae", "--data", str(empty), "--run-dir", str(tmp_path / "run")],
                "evaluate": ["core.evaluate", "--checkpoint", str(tmp_path / "none"), "--data", str(empty)],
                "sample": ["core.sample", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "out")]}
    running = {name: subprocess.Popen([sys.executable, "-m", *argv], cwd=Path(__file__).resolve().parents[1],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, argv in commands.items()}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (name, err)
        assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
