"""core.sample (the CLI), in-process on a tiny untrained bundle: flags checked before any work, files written, one error line."""
from __future__ import annotations

import json

import pytest

from core import sample
from helpers_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.mark.parametrize("flags", [["--n", "0"], ["--temperature", "nan"], ["--temperature", "-1"],
                                   ["--top-k", "0"], ["--keep-rows", "-1"], ["--level", "-1"], ["--n", "two"]])
def test_bad_flags_are_one_error_line_before_anything_loads(bundle, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exited:
        sample.main(["--checkpoint", str(bundle), "--out", str(tmp_path / "out"), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "out").exists()


def test_an_existing_file_as_out_is_refused_before_sampling(bundle, tmp_path, capsys):
    # Before: the samples were made, then writing them crashed with a traceback and they were lost.
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert sample.main(["--checkpoint", str(bundle), "--out", str(target), "--n", "2"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --out")
    assert target.read_text() == "mine"


def test_samples_are_written_with_a_grid_and_one_json_line(bundle, tmp_path, capsys):
    assert sample.main(["--checkpoint", str(bundle), "--out", str(tmp_path / "new" / "out"), "--n", "3",
                        "--level", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 3 and report["levels"] == [2, 2, 2]
    assert all((tmp_path / "new" / "out").joinpath(f.split("/")[-1]).is_file() for f in report["files"])


def test_a_bundle_without_a_prior_says_how_to_train_one(tmp_path, capsys):
    vqvae_only = make_tiny_bundle(tmp_path / "vq", with_prior=False)
    assert sample.main(["--checkpoint", str(vqvae_only), "--out", str(tmp_path / "out")]) == 2
    assert "python -m core.train prior" in capsys.readouterr().err
