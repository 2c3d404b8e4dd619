"""core.sample (the CLI), in-process on a tiny untrained bundle: flags checked before any work, files written, one error line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core import sample
from helpers_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.mark.parametrize("flags", [["--n", "0"], ["--temperature", "nan"], ["--temperature", "-1"],
                                   ["--top-k", "0"], ["--keep-rows", "-1"], ["--level", "-1"], ["--n", "two"],
                                   ["--volume", "--guidance", "nan"], ["--volume", "--guidance", "1.5"],
                                   ["--out", ""], ["--checkpoint", " "], ["--complete", ""]])
def test_bad_flags_are_one_error_line_before_anything_loads(bundle, tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as exited:
        sample.main(["--checkpoint", str(bundle), "--out", str(tmp_path / "out"), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "out").exists()


def test_keep_rows_without_a_slice_to_complete_is_refused_not_ignored(bundle, tmp_path, capsys):
    assert sample.main(["--checkpoint", str(bundle), "--out", str(tmp_path / "out"), "--keep-rows", "3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --keep-rows") and "--complete" in lines[0]
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


# --- whole brains ----------------------------------------------------------------------------------
def test_volumes_are_written_as_nifti_montage_and_three_planes(tmp_path, capsys):
    import nibabel as nib
    from PIL import Image

    both = make_tiny_bundle(tmp_path / "both", with_volume_prior=True)
    out = tmp_path / "samples"
    assert sample.main(["--checkpoint", str(both), "--volume", "--n", "2", "--seed", "7", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 2 and report["shape"] == [4, 32, 32]  # the tiny prior knows 4 levels
    assert [Path(f["nifti"]).name for f in report["files"]] == ["brain_seed7_00.nii.gz", "brain_seed7_01.nii.gz"]
    image = nib.load(report["files"][0]["nifti"])
    assert image.shape == (32, 32, 4) and nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert b"synthetic" in bytes(image.header["descrip"])
    assert Image.open(report["files"][0]["montage"]).size == (8 * 32, 32)
    assert Image.open(report["files"][1]["planes"]).size[1] == 32
    # Two volumes of one call differ; the same seed again gives the same volume.
    first, second = (nib.load(f["nifti"]).get_fdata() for f in report["files"])
    assert not np.array_equal(first, second)
    assert sample.main(["--checkpoint", str(both), "--volume", "--n", "1", "--seed", "7",
                        "--out", str(tmp_path / "again")]) == 0
    np.testing.assert_array_equal(nib.load(tmp_path / "again" / "brain_seed7_00.nii.gz").get_fdata(), first)


def test_volume_from_a_bundle_without_a_whole_brain_prior_says_which_command_trains_one(bundle, tmp_path, capsys):
    assert sample.main(["--checkpoint", str(bundle), "--volume", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "python -m core.train prior --volume" in lines[0]
    assert not (tmp_path / "out").exists()


def test_volume_with_slice_options_is_refused(bundle, tmp_path, capsys):
    assert sample.main(["--checkpoint", str(bundle), "--volume", "--level", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--volume makes whole brains" in capsys.readouterr().err


def test_volumes_are_guided_by_the_slice_prior_unless_told_or_the_bundle_has_none(tmp_path, capsys):
    from core import jobs

    both = make_tiny_bundle(tmp_path / "both", with_volume_prior=True)
    run = lambda bundle, *flags: sample.main(["--checkpoint", str(bundle), "--volume", "--n", "1",
                                              "--out", str(tmp_path / "out"), *flags])
    report = lambda: json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run(both) == 0 and report()["guidance"] == jobs.VOLUME_GUIDANCE
    assert run(both, "--guidance", "0") == 0 and report()["guidance"] == 0
    volume_only = make_tiny_bundle(tmp_path / "volume-only", with_prior=False, with_volume_prior=True)
    assert run(volume_only) == 0 and report()["guidance"] == 0  # nothing to guide with: the prior alone
    assert run(volume_only, "--guidance", "0.5") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "needs a slice prior (prior.keras)" in lines[0]


def test_guidance_without_volume_is_refused(bundle, tmp_path, capsys):
    assert sample.main(["--checkpoint", str(bundle), "--guidance", "0.3", "--out", str(tmp_path / "o")]) == 2
    assert "--guidance applies to whole brains only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
