"""What the command-line entry points share: quiet TensorFlow, a parser whose errors are one `error:` line, and the exit codes."""
from __future__ import annotations

import argparse
import os
import sys

from core import settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USAGE_ERROR = 2  # a user's mistake: one `error:` line on stderr


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
    print(f"error: {error}", file=sys.stderr)
    return USAGE_ERROR
