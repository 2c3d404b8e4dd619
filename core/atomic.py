"""Atomic file writes: write a temporary file beside the target, fsync, rename; readers never see half a file."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path, mode: str = "w"):
    """Open a temporary file beside `path` for writing; on success it replaces `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value) -> None:
    with replacing(path) as handle:
        json.dump(value, handle, indent=2)


def write_bytes(path: str | Path, data: bytes) -> None:
    with replacing(path, "wb") as handle:
        handle.write(data)
