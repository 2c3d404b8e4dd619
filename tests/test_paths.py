"""core.paths: the runs folder and default data from the environment, and the data roots the dashboard may open."""
from __future__ import annotations

import os

import pytest

from core import paths


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data, extra = tmp_path / "data", tmp_path / "lab"
    for folder in (data / "oasis", extra / "scans", tmp_path / "data2", tmp_path / "secret"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("BRAINVQ_DATA", str(data))
    monkeypatch.setenv("BRAINVQ_DATA_ROOTS", str(extra))
    return tmp_path


def test_runs_root_and_default_data_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINVQ_RUNS", str(tmp_path / "r"))
    monkeypatch.delenv("BRAINVQ_DATA", raising=False)
    assert paths.runs_root() == tmp_path / "r"
    assert paths.default_data_folder() == paths.DEMO_DATA


def test_folders_under_a_root_are_allowed(roots):
    assert paths.check_data_folder(roots / "data") == (roots / "data").resolve()
    assert paths.check_data_folder(roots / "data" / "oasis") == (roots / "data" / "oasis").resolve()
    assert paths.check_data_folder(roots / "lab" / "scans") == (roots / "lab" / "scans").resolve()
    assert paths.check_data_folder(paths.DEMO_DATA) == paths.DEMO_DATA.resolve()


@pytest.mark.parametrize("outside", ["/", "/etc", "~", "secret", "data2", "data/../secret", "lab/../../"])
def test_folders_outside_every_root_are_refused_and_nothing_is_listed(roots, outside):
    folder = outside if outside.startswith(("/", "~")) else str(roots / outside)
    with pytest.raises(paths.OutsideDataRoots) as refused:
        paths.check_data_folder(folder)
    assert "secret" not in str(refused.value) and "etc" not in str(refused.value)


def test_a_symlink_inside_a_root_cannot_lead_out_of_it(roots):
    os.symlink(roots / "secret", roots / "data" / "shortcut")
    with pytest.raises(paths.OutsideDataRoots):
        paths.check_data_folder(roots / "data" / "shortcut")


def test_a_refusal_is_a_value_error_the_pages_show_as_a_message():
    assert issubclass(paths.OutsideDataRoots, ValueError)
