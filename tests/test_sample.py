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


def test_a_folder_of_the_user_s_own_files_as_out_is_refused_untouched_and_our_own_is_written_again(
        bundle, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.png").write_bytes(b"mine")
    assert sample.main(["--checkpoint", str(bundle), "--out", str(mine), "--n", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {mine} holds files BrainVQ did not write")
    assert "holiday.png" in lines[0] and sorted(p.name for p in mine.iterdir()) == ["holiday.png"]
    ours = tmp_path / "samples"
    for seed in ("1", "2"):  # made by the first run, written again by the next
        assert sample.main(["--checkpoint", str(bundle), "--out", str(ours), "--n", "1", "--seed", seed]) == 0
    assert {p.name for p in ours.iterdir()} >= {"sample_1_grid.png", "sample_2_grid.png", ".brainvq-output"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sample.main(["--checkpoint", str(bundle), "--out", str(empty), "--n", "1"]) == 0  # an empty one is used
    assert (empty / "sample_0_grid.png").exists()


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
    assert "--volume makes every slice level" in capsys.readouterr().err
    assert sample.main(["--checkpoint", str(bundle), "--volume", "--complete", "x.png", "--keep-rows", "2",
                        "--out", str(tmp_path / "o")]) == 2
    assert "leave --keep-rows out" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def volume_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("volume") / "both", with_volume_prior=True)


def write_slice(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_volume_completed_from_a_real_slice_holds_it_at_the_level_its_name_gives(volume_bundle, tmp_path, capsys):
    import nibabel as nib

    real = write_slice(tmp_path / "case_441_slice_2.nii.png")
    out = tmp_path / "samples"
    assert sample.main(["--checkpoint", str(volume_bundle), "--volume", "--complete", str(real), "--n", "2",
                        "--seed", "3", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["level"] == 2 and report["level_from"] == "file name" and report["complete"] == str(real)
    assert len(report["bits_per_code_on_the_slice_below"]) == 2
    assert all(bits > 0 for bits in report["bits_per_code_on_the_slice_below"])
    assert [Path(f["nifti"]).name for f in report["files"]] == ["completion_seed3_00.nii.gz",
                                                                "completion_seed3_01.nii.gz"]
    # Slice 2 is the real slice, pixel for pixel (axial slice z of the RAS voxels, upright: rot90).
    from PIL import Image

    pixels = np.asarray(Image.open(real))
    for written in report["files"]:
        voxels = nib.load(written["nifti"]).get_fdata()
        assert voxels.shape == (32, 32, 4)
        np.testing.assert_array_equal(np.rot90(voxels[:, :, 2]), pixels)
        assert not np.array_equal(np.rot90(voxels[:, :, 1]), pixels)
    first, second = (nib.load(f["nifti"]).get_fdata() for f in report["files"])
    assert not np.array_equal(first, second)  # two brains around one slice


def test_a_completed_volume_takes_the_level_flag_else_the_slice_prior_s_estimate(volume_bundle, tmp_path, capsys):
    from core import data, jobs
    from core.bundles import load_bundle

    real = write_slice(tmp_path / "scan.png", seed=1)
    run = lambda *flags: sample.main(["--checkpoint", str(volume_bundle), "--volume", "--complete", str(real),
                                      "--n", "1", "--out", str(tmp_path / "out"), *flags])
    report = lambda: json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert run("--level", "1") == 0
    got = report()
    assert (got["level"], got["level_from"]) == (1, "--level")
    assert run() == 0
    got = report()
    loaded = load_bundle(volume_bundle)
    expected = jobs.most_likely_level(loaded.vqvae, loaded.prior, data.load_images([real], 32)[0])
    assert (got["level"], got["level_from"]) == (expected, "estimated by the slice prior")
    assert run("--level", "4") == 2  # the tiny prior knows levels 0..3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "[0, 4)" in lines[0]


def test_a_completed_volume_without_a_level_or_a_slice_prior_to_estimate_one_asks_for_it(tmp_path, capsys):
    volume_only = make_tiny_bundle(tmp_path / "volume-only", with_prior=False, with_volume_prior=True)
    real = write_slice(tmp_path / "scan.png")
    assert sample.main(["--checkpoint", str(volume_only), "--volume", "--complete", str(real),
                        "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "scan.png names no slice level" in lines[0] and "give the level" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_completed_volume_from_a_broken_slice_is_one_error_line(volume_bundle, tmp_path, capsys):
    broken = tmp_path / "case_1_slice_2.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert sample.main(["--checkpoint", str(volume_bundle), "--volume", "--complete", str(broken),
                        "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "case_1_slice_2.png" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_slice_to_complete_that_had_to_be_converted_says_so_in_the_report(volume_bundle, tmp_path, capsys):
    from PIL import Image

    rgb = tmp_path / "case_1_slice_2.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(rgb)
    deep = tmp_path / "case_1_slice_1.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 65536, (32, 32)).astype(np.uint16)).save(deep)
    plain = write_slice(tmp_path / "case_1_slice_3.png")
    report = lambda: json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for volume in (["--volume"], []):
        run = lambda slice_path: sample.main(["--checkpoint", str(volume_bundle), *volume, "--complete",
                                              str(slice_path), "--n", "1", "--out", str(tmp_path / "out")])
        assert run(rgb) == 0
        notices = report()["notices"]
        assert len(notices) == 2 and all(str(rgb) in notice for notice in notices)
        assert "RGB image converted to 8-bit-equivalent greyscale" in notices[0]
        assert "40x40 resized to the model's 32x32" in notices[1]
        assert run(deep) == 0
        assert [notice.split(": ", 1)[1] for notice in report()["notices"]] == [
            "16-bit image converted to 8-bit-equivalent greyscale."]
        assert run(plain) == 0 and report()["notices"] == []


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
