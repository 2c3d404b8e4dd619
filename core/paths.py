"""Where things live: the repository, the runs folder, the shipped demo, and the data roots the dashboard may open."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / "demo"
DEMO_DATA = REPO_ROOT / "demo_data"


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
        root = root.expanduser().resolve()
        if root not in resolved:
            resolved.append(root)
    return resolved


def is_allowed_data_folder(path: str | Path) -> bool:
    """Whether `path`, once symlinks and `..` are resolved, is an allowed root or lies inside one.
    Compared by path components, so /data2 is not inside /data."""
    if not str(path).strip():
        return False  # an empty field would otherwise mean the server's working folder
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(root) for root in allowed_data_roots())
