"""Shared test fixtures: the repo on sys.path, quiet TensorFlow, and a tiny OASIS-layout tree.

Helpers live in oasis_fixtures.py, not here: tests/e2e has a conftest of its own, and two
modules named `conftest` cannot both be imported by name in one pytest session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

from oasis_fixtures import make_oasis_tree  # noqa: E402


@pytest.fixture(scope="session")
def oasis_tree(tmp_path_factory) -> Path:
    """An OASIS tree shared by the session: the parent folder of keras_png_slices_data/.

    16 train, 8 validate, 8 test slices of 32x32 and a keras_png_slices_seg_train decoy. Treat it
    as read-only; a test that damages data builds its own with `make_oasis_tree(tmp_path)`.
    """
    return make_oasis_tree(tmp_path_factory.mktemp("oasis"))
