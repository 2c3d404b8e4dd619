"""What the command-line entry points share: quiet TensorFlow, a parser whose errors are one `error:` line, and the exit codes."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USAGE_ERROR = 2  # a user's mistake: one `error:` line on stderr


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
