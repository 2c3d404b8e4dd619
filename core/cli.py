"""What the command-line entry points share: quiet TensorFlow, a parser whose errors are one `error:` line, output folders that are never a user's own, and the exit codes."""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from core import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow's C++ start-up lines (absl format: "I0000 00:00:1796.. 7217 port.cc:153] ..."), which
# TF 2.19+ writes whatever TF_CPP_MIN_LOG_LEVEL says. Errors stay, but for the CUDA driver missing on
# a CPU machine.
_STARTUP_CHATTER = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                              r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
                              r"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] failed call to cuInit")

USAGE_ERROR = 2  # a user's mistake: one `error:` line on stderr


def import_tensorflow() -> None:
    """Import TensorFlow and find its GPUs with its start-up chatter held back, so that a command's stderr
    holds the command's own lines (one `error:` line for a mistake); any other line is passed on."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA driver's lines come now, not at the first tensor
        finally:
            sys.stderr.flush()
            os.dup2(real_stderr, 2)
            os.close(real_stderr)
            held.seek(0)
            sys.stderr.write(without_startup_chatter(held.read().decode(errors="replace")))


def without_startup_chatter(text: str) -> str:
    """`text` less TensorFlow's C++ start-up lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not _STARTUP_CHATTER.match(line))


OUTPUT_MARK = ".brainvq-output"  # in each --out folder a command made: its later runs may write there again


def check_output_folder(out: Path, flag: str = "--out") -> None:
    """A ValueError unless `out` is new, empty or made by a BrainVQ command: a folder of the user's own
    files is never written into. Called before any work, so that a refusal costs nothing."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file; give a folder for the files.")
    if out.is_dir() and not (out / OUTPUT_MARK).exists():
        others = sorted(path.name for path in out.iterdir())
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise ValueError(f"{flag} {out} holds files BrainVQ did not write ({shown}); nothing was written "
                             "there. Give a new or empty folder.")


def make_output_folder(out: Path) -> Path:
    """Make `out` (checked by check_output_folder) and mark it as a BrainVQ command's."""
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTPUT_MARK).write_text("Made by a BrainVQ command (python -m core.sample or core.evaluate); "
                                   "its later runs may write here again.\n")
    return out


def seed_type():
    """--seed of every sampling command: a non-negative int32, as the samplers' streams take it."""
    return settings.number(int, "seed", minimum=0, maximum=2**31 - 1)


def sample_count_type(name: str = "n"):
    """--n of every sampling command: at most 4096 slices (minutes on a CPU; more is surely a typo)."""
    return settings.number(int, name, minimum=1, maximum=4096)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one `error:` line and exit code 2 (no usage dump)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def user_error_types() -> tuple[type, ...]:
    """The errors a user can cause and fix: each is printed as one line, never a traceback."""
    import tensorflow as tf

    from core import bundles, data, runs, uploads

    return (data.DataError, runs.RunError, bundles.CheckpointError, uploads.UploadError, ValueError,
            OSError, tf.errors.OpError)


def report(error: BaseException) -> int:
    """Print a user error as one line; the exit code to return."""
    from core import runs

    print(f"error: {runs.error_line(error)}", file=sys.stderr)
    return USAGE_ERROR
