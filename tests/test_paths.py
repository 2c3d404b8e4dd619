"""Allowed data roots: a data folder inside BRAINVQ_DATA / demo data / BRAINVQ_DATA_ROOTS only, symlinks and `..` resolved."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import paths


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """BRAINVQ_DATA = tmp/data, BRAINVQ_DATA_ROOTS = tmp/lab and tmp/more; tmp/data2 and tmp/secret stay outside."""
    for name in ["data", "data2", "lab", "more", "secret"]:
        (tmp_path / name / "inner").mkdir(parents=True)
    monkeypatch.setenv("BRAINVQ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BRAINVQ_DATA_ROOTS", os.pathsep.join([str(tmp_path / "lab"), "",
                                                              str(tmp_path / "more")]))
    return tmp_path


def test_roots_are_brainvq_data_demo_data_and_the_listed_ones(roots):
    assert paths.allowed_data_roots() == [roots / "data", paths.DEMO_DATA.resolve(), roots / "lab",
                                          roots / "more"]


def test_a_root_and_folders_inside_it_are_allowed(roots):
    assert paths.is_allowed_data_folder(roots / "data")
    assert paths.is_allowed_data_folder(roots / "lab" / "inner")
    assert paths.is_allowed_data_folder(roots / "more" / "not-made-yet")
    assert paths.is_allowed_data_folder(paths.DEMO_DATA / "keras_png_slices_data")


@pytest.mark.parametrize("outside", ["/", "/etc", "~", "secret", "secret/inner", ""])
def test_folders_outside_every_root_are_refused(roots, outside):
    path = outside if outside in ("/", "/etc", "~", "") else str(roots / outside)
    assert not paths.is_allowed_data_folder(path)


def test_a_sibling_sharing_a_prefix_is_not_inside(roots):
    assert not paths.is_allowed_data_folder(roots / "data2")  # /data2 starts with "/data"
    assert not paths.is_allowed_data_folder(str(roots / "data") + "2/inner")


def test_dot_dot_cannot_climb_out_of_a_root(roots):
    assert not paths.is_allowed_data_folder(f"{roots}/data/../secret")
    assert not paths.is_allowed_data_folder(f"{roots}/data/inner/../../../")
    assert paths.is_allowed_data_folder(f"{roots}/secret/../data/inner")


def test_a_symlink_inside_a_root_cannot_point_outside(roots):
    (roots / "data" / "escape").symlink_to(roots / "secret")
    (roots / "data" / "root-link").symlink_to("/")
    assert not paths.is_allowed_data_folder(roots / "data" / "escape")
    assert not paths.is_allowed_data_folder(roots / "data" / "escape" / "inner")
    assert not paths.is_allowed_data_folder(roots / "data" / "root-link" / "etc")


def test_a_symlinked_root_is_followed_to_its_target(roots, monkeypatch):
    (roots / "link-to-lab").symlink_to(roots / "lab")
    monkeypatch.setenv("BRAINVQ_DATA_ROOTS", str(roots / "link-to-lab"))
    assert paths.is_allowed_data_folder(roots / "lab" / "inner")
    assert not paths.is_allowed_data_folder(roots / "more")


@pytest.mark.parametrize("given", ["~nosuchuser_brainvq/data", "/tmp/data\x00/x"])
def test_a_path_that_names_no_folder_is_a_value_error_and_never_an_allowed_one(given):
    with pytest.raises(ValueError) as error:
        paths.expand_user(given)
    assert "nosuchuser_brainvq" in str(error.value) or "NUL" in str(error.value)
    assert paths.is_allowed_data_folder(given) is False


def test_expand_user_expands_this_users_home():
    assert paths.expand_user("~/x") == Path.home() / "x"
