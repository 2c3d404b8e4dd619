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


class OutsideDataRoots(ValueError):
    """A folder the dashboard may not open: outside every allowed data root. The message lists nothing."""


def allowed_data_roots() -> list[Path]:
    """Folders (and everything below them) the dashboard's data fields may open.

    The shipped demo data, $BRAINVQ_DATA, and every folder in $BRAINVQ_DATA_ROOTS (separated by
    os.pathsep), resolved: a symlink or `..` cannot lead outside them. The command-line tools are not
    limited: they run with the user's own rights in the user's own shell.
    """
    listed = [DEMO_DATA, os.environ.get("BRAINVQ_DATA")]
    listed += os.environ.get("BRAINVQ_DATA_ROOTS", "").split(os.pathsep)
    return [Path(p).expanduser().resolve() for p in listed if p]


def check_data_folder(folder: str | Path) -> Path:
    """The folder, resolved, when it lies under an allowed root; else OutsideDataRoots (saying nothing of it)."""
    resolved = Path(str(folder).strip() or ".").expanduser().resolve()
    if any(resolved == root or root in resolved.parents for root in allowed_data_roots()):
        return resolved
    raise OutsideDataRoots("That folder is outside the data folders this dashboard offers. Choose a "
                           "folder under the demo data or $BRAINVQ_DATA, or ask whoever runs the "
                           "dashboard to add its root to BRAINVQ_DATA_ROOTS.")
