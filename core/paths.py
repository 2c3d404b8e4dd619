"""Where things live: the repository, the runs folder, the shipped demo checkpoint and demo data."""
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
