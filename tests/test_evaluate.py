"""core.evaluate, the CLI: one JSON object on success; a bad flag or folder is one `error:` line and exit code 2."""
from __future__ import annotations

import json

import pytest

from helpers_bundle import make_tiny_bundle
from core import evaluate


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle"))


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = evaluate.main(list(argv))
    except SystemExit as stop:  # argparse stops at parse time
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plain_command_keeps_its_json_keys(capsys, bundle, oasis_tree):
    code, out, err = run(capsys, "--checkpoint", str(bundle), "--data", str(oasis_tree), "--split", "validate",
                         "--limit", "5", "--batch-size", "2")
    assert code == 0, err
    result = json.loads(out)
    assert {"ssim", "psnr", "mse", "perplexity", "codes_used", "codebook_size", "dead_codes", "n_images",
            "split", "checkpoint"} <= set(result)
    assert result["n_images"] == 5 and result["split"] == "validate"


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--limit", "-1"), ("--limit", "0"),
                                         ("--batch-size", "two"), ("--data", ""), ("--checkpoint", " ")])
def test_a_value_below_one_is_refused_at_parse_time(capsys, bundle, oasis_tree, flag, value):
    # Before: --batch-size 0 was a traceback and --limit -1 silently scored all slices but the last.
    code, out, err = run(capsys, "--checkpoint", str(bundle), "--data", str(oasis_tree), flag, value)
    assert code == 2 and out == ""
    assert err.startswith("error:") and flag in err and len(err.strip().splitlines()) == 1


def test_a_plain_folder_of_slices_needs_no_split(capsys, bundle, oasis_tree):
    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    code, out, err = run(capsys, "--checkpoint", str(bundle), "--data", str(folder))
    assert code == 0, err
    assert json.loads(out)["n_images"] == 8


def test_a_folder_without_slices_is_one_error_line(capsys, bundle, tmp_path):
    code, out, err = run(capsys, "--checkpoint", str(bundle), "--data", str(tmp_path))
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_samples_prints_one_report(capsys, bundle, oasis_tree):
    code, out, err = run(capsys, "samples", "--checkpoint", str(bundle), "--data", str(oasis_tree),
                         "--split", "validate", "--n", "6", "--seed", "1")
    assert code == 0, err
    result = json.loads(out)
    assert {"fd", "fd_real", "kid", "kid_real", "ms_ssim_samples", "ms_ssim_real", "area_by_level", "n",
            "seconds", "fd_by_level_band", "checkpoint"} <= set(result)
    assert result["n"] == 6 and result["fd"] >= 0 and result["fd_real"] >= 0


def test_samples_of_a_checkpoint_without_a_prior_is_one_error_line(capsys, tmp_path, oasis_tree):
    vqvae_only = make_tiny_bundle(tmp_path / "vqvae", with_prior=False)
    code, out, err = run(capsys, "samples", "--checkpoint", str(vqvae_only), "--data", str(oasis_tree))
    assert code == 2 and "prior" in err and err.startswith("error:")


def test_samples_refuses_n_below_one(capsys, bundle, oasis_tree):
    code, _, err = run(capsys, "samples", "--checkpoint", str(bundle), "--data", str(oasis_tree), "--n", "0")
    assert code == 2 and err.startswith("error:") and "--n" in err


@pytest.mark.parametrize("flag, value, says", [("--n", "99999999999", "4096"), ("--seed", "-1", "seed"),
                                              ("--seed", "99999999999999999999999", "seed")])
def test_samples_refuses_counts_and_seeds_out_of_range_naming_them(capsys, bundle, oasis_tree, flag, value, says):
    """--n 99999999999 tried to allocate 745 GiB (a traceback); a bad --seed's message named no flag."""
    code, _, err = run(capsys, "samples", "--checkpoint", str(bundle), "--data", str(oasis_tree), flag, value)
    assert code == 2 and err.startswith("error:") and flag in err and says in err
    assert len(err.strip().splitlines()) == 1


def test_surprise_prints_one_row_per_slice_and_writes_each_bits_map(capsys, bundle, oasis_tree, tmp_path):
    import numpy as np

    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    code, out, err = run(capsys, "surprise", "--checkpoint", str(bundle), "--data", str(folder),
                         "--out", str(tmp_path / "maps"))
    assert code == 0, err
    result = json.loads(out)
    assert list(result) == ["slices"] and len(result["slices"]) == 8
    for row in result["slices"]:
        assert set(row) == {"name", "bits", "expected_bits", "max_bits", "hot_spot_bits", "level", "given_below"}
        assert row["level"] == int(row["name"].split("_slice_")[1].split(".")[0])  # levels 0-3 from the names
        assert row["given_below"] is False  # the tiny bundle has no whole-brain prior
        bits = np.load(tmp_path / "maps" / f"{row['name']}.npy")
        assert bits.shape == (8, 8)  # the tiny bundle's code grid
        assert bits.sum() == pytest.approx(row["bits"], abs=1e-2)
        assert bits.max() == pytest.approx(row["max_bits"], abs=1e-3)
        # Bits above expected: the hot spot's mean lies between their mean and the largest bits.
        assert (row["bits"] - row["expected_bits"]) / 64 - 1e-3 <= row["hot_spot_bits"] <= row["max_bits"] + 1e-3


def test_surprise_maps_are_never_written_into_a_folder_of_the_user_s_own_files(capsys, bundle, oasis_tree, tmp_path):
    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    code, out, err = run(capsys, "surprise", "--checkpoint", str(bundle), "--data", str(folder), "--out", str(mine))
    assert code == 2 and out == "" and err.count("\n") == 1 and "holds files BrainVQ did not write (todo.txt)" in err
    assert [p.name for p in mine.iterdir()] == ["todo.txt"]


def test_surprise_scores_each_slice_given_the_one_below_with_a_whole_brain_prior(capsys, tmp_path, oasis_tree):
    both = make_tiny_bundle(tmp_path / "both", with_volume_prior=True)
    folder = oasis_tree / "keras_png_slices_data" / "keras_png_slices_validate"
    results = {}
    for choice in ("auto", "whole-brain", "slice"):
        code, out, err = run(capsys, "surprise", "--checkpoint", str(both), "--data", str(folder), "--prior", choice)
        assert code == 0, err
        results[choice] = json.loads(out)["slices"]
    assert all(row["given_below"] for row in results["auto"]) and results["auto"] == results["whole-brain"]
    assert not any(row["given_below"] for row in results["slice"])
    assert [row["bits"] for row in results["slice"]] != [row["bits"] for row in results["auto"]]


def test_surprise_with_the_whole_brain_prior_needs_case_and_slice_names(capsys, tmp_path):
    from oasis_fixtures import brain_slice, write_png

    both = make_tiny_bundle(tmp_path / "both", with_volume_prior=True)
    write_png(tmp_path / "slices" / "scan.png", brain_slice(3, 32))
    code, out, err = run(capsys, "surprise", "--checkpoint", str(both), "--data", str(tmp_path / "slices"),
                         "--prior", "whole-brain")
    assert code == 2 and out == "" and err.startswith("error:") and "scan.png" in err
    assert len(err.strip().splitlines()) == 1
    # auto falls back to the slice prior for such names.
    code, out, err = run(capsys, "surprise", "--checkpoint", str(both), "--data", str(tmp_path / "slices"))
    assert code == 0, err
    assert json.loads(out)["slices"][0]["given_below"] is False
    vqvae_only = make_tiny_bundle(tmp_path / "vqvae", with_prior=False)
    code, out, err = run(capsys, "surprise", "--checkpoint", str(vqvae_only), "--data", str(tmp_path / "slices"),
                         "--prior", "whole-brain")
    assert code == 2 and "--volume" in err and len(err.strip().splitlines()) == 1


def test_surprise_marginalises_a_slice_whose_name_has_no_level(capsys, bundle, tmp_path):
    from oasis_fixtures import brain_slice, write_png

    write_png(tmp_path / "slices" / "upload.png", brain_slice(3))
    code, out, err = run(capsys, "surprise", "--checkpoint", str(bundle), "--data", str(tmp_path / "slices"))
    assert code == 0, err
    [row] = json.loads(out)["slices"]
    assert row["name"] == "upload.png" and row["level"] is None and row["bits"] > 0


def test_surprise_of_a_checkpoint_without_a_prior_is_one_error_line(capsys, tmp_path, oasis_tree):
    vqvae_only = make_tiny_bundle(tmp_path / "vqvae", with_prior=False)
    code, out, err = run(capsys, "surprise", "--checkpoint", str(vqvae_only), "--data", str(oasis_tree))
    assert code == 2 and out == "" and "prior" in err and len(err.strip().splitlines()) == 1


def test_surprise_of_a_folder_without_slices_is_one_error_line(capsys, bundle, tmp_path):
    code, out, err = run(capsys, "surprise", "--checkpoint", str(bundle), "--data", str(tmp_path))
    assert code == 2 and out == "" and err.startswith("error:") and len(err.strip().splitlines()) == 1
