"""Where things live: the repository, the runs folder, the shipped demo, and the data roots the dashboard may open."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / "demo"
DEMO_DATA = REPO_ROOT / "demo_data"


def expand_user(path: str | Path) -> Path:
    """`path` with a leading ~ or ~user expanded; ValueError naming it when it holds a NUL character or
    names a user this machine does not know (pathlib raises RuntimeError, os.stat ValueError)."""
    text = str(path)
    if "\x00" in text:
        raise ValueError(f"{text!r} holds a NUL character, so it names no file or folder.")
    try:
        return Path(text).expanduser()
    except RuntimeError as error:
        raise ValueError(f"{text} starts with ~ but names no home folder on this machine ({error})") from error


def runs_root() -> Path:
    """Where runs live: $BRAINVQ_RUNS, read at each call (tests and benches point it elsewhere)."""
    return Path(os.environ.get("BRAINVQ_RUNS", REPO_ROOT / "runs"))


def default_data_folder() -> Path:
    """The data the app offers first: $BRAINVQ_DATA, else the shipped demo data."""
    return Path(os.environ.get("BRAINVQ_DATA", DEMO_DATA))


def allowed_data_roots() -> list[Path]:
    """The folders whose insides the app's data-folder fields accept, symlinks and `..` resolved:
    $BRAINVQ_DATA, the shipped demo data, and each folder in $BRAINVQ_DATA_ROOTS (os.pathsep-separated).
    The CLIs are not limited: they run in the user's own shell."""
    listed = os.environ.get("BRAINVQ_DATA_ROOTS", "").split(os.pathsep)
    roots = [default_data_folder(), DEMO_DATA] + [Path(p) for p in listed if p.strip()]
    resolved = []
    for root in roots:
        try:
            root = expand_user(root).resolve()
        except ValueError:
            continue  # a root that names nothing opens nothing
        if root not in resolved:
            resolved.append(root)
    return resolved


def is_allowed_data_folder(path: str | Path) -> bool:
    """Whether `path`, once symlinks and `..` are resolved, is an allowed root or lies inside one.
    Compared by path components, so /data2 is not inside /data."""
    if not str(path).strip():
        return False  # an empty field would otherwise mean the server's working folder
    try:
        resolved = expand_user(path).resolve()
    except ValueError:
        return False  # ~nosuchuser, a NUL character: no folder, so none inside a root
    return any(resolved.is_relative_to(root) for root in allowed_data_roots())
