"""`python -m core.train prior`, `python -m core.evaluate` and `python -m core.sample`: real subprocesses, tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from oasis_fixtures import REPO_ROOT, brain_slice, write_png
from core import runs
from core.bundles import load_bundle
from core.models.prior import level_frequency, num_levels

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
TINY_VQVAE = ["--image-size", "32", "--code-grid", "8", "--codebook-size", "16", "--code-dim", "4",
              "--hidden-channels", "16", "--residual-blocks", "1", "--batch-size", "4"]
TINY_PRIOR = ["--filters", "8", "--num-layers", "2", "--prior-embedding-dim", "8",
              "--head-filters", "16", "--batch-size", "4"]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def vqvae_run(oasis_tree, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "vq"
    result = run("core.train", "vqvae", "--data", str(oasis_tree), "--run-dir", str(run_dir),
                 "--epochs", "1", "--steps-per-epoch", "2", *TINY_VQVAE)
    assert last_json(result)["state"] == "finished"
    return run_dir


@pytest.fixture(scope="module")
def prior_run(vqvae_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "prior"
    result = run("core.train", "prior", "--vqvae", str(vqvae_run), "--run-dir", str(run_dir),
                 "--epochs", "2", "--steps-per-epoch", "2", "--log-every", "1", *TINY_PRIOR)
    assert last_json(result)["state"] == "finished"
    return run_dir


def test_prior_run_follows_the_run_directory_contract(prior_run, vqvae_run):
    assert runs.read_status(prior_run)["state"] == "finished"
    config = runs.read_config(prior_run)
    assert config["kind"] == "prior" and config["model"]["grid_height"] == 8
    assert config["model"]["num_embeddings"] == 16
    records, _ = runs.read_metrics(prior_run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(np.isfinite(e["val_bits_per_code"]) and 0 <= e["val_accuracy"] <= 1 for e in epochs)
    # Codes are encoded once with the VQ-VAE and cached: the train split's 16 grids of 8x8.
    codes = np.load(prior_run / "codes_train.npy")
    assert codes.shape == (16, 8, 8) and codes.min() >= 0 and codes.max() < 16
    assert (prior_run / "samples" / "epoch_002.png").exists()
    assert list((prior_run / "tb").iterdir())


def test_prior_bundle_holds_both_models_and_loads(prior_run, vqvae_run):
    bundle = load_bundle(prior_run)
    assert bundle.prior is not None and bundle.config["kind"] == "prior"
    assert set(bundle.config) >= {"vqvae", "prior"}
    codes = np.random.default_rng(0).integers(0, 16, (2, 8, 8)).astype(np.int32)
    # The fixture names 4 slices per case (case_001_slice_0 .. 3): the prior is conditioned on
    # those levels, and knows how often each occurred in the train split (equally often).
    assert bundle.config["prior"]["num_levels"] == 4
    assert bundle.prior([codes, np.array([0, 3], np.int32)]).shape == (2, 8, 8, 16)
    np.testing.assert_allclose(level_frequency(bundle.prior), [0.25] * 4)
    # The bundle's VQ-VAE is the one the prior was trained on (same encoder weights).
    source = keras.saving.load_model(runs.resolve_checkpoint(vqvae_run) / "vqvae.keras")
    image = brain_slice(3)[None, ..., None].astype(np.float32) / 255
    np.testing.assert_array_equal(source.encode_to_indices(image), bundle.vqvae.encode_to_indices(image))


def test_prior_resume_continues_steps_and_epochs(prior_run):
    result = run("core.train", "prior", "--run-dir", str(prior_run), "--resume", "--epochs", "3")
    assert last_json(result)["state"] == "finished"
    records, _ = runs.read_metrics(prior_run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]


def test_prior_resume_of_a_config_whose_model_was_edited_is_refused_untouched(prior_run, tmp_path):
    import shutil

    run_dir = tmp_path / "edited"
    shutil.copytree(prior_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["num_levels"] = 0  # an unconditional prior: the level embedding would be left out
    (run_dir / "config.json").write_text(json.dumps(config))
    before = (run_dir / "config.json").read_text()
    result = run("core.train", "prior", "--run-dir", str(run_dir), "--resume", "--epochs", "9")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: The run's config.json says num_levels = 0, but its checkpoint")
    assert (run_dir / "config.json").read_text() == before


def test_prior_without_levels_is_unconditional(vqvae_run, tmp_path):
    run_dir = tmp_path / "plain"
    result = run("core.train", "prior", "--vqvae", str(vqvae_run), "--run-dir", str(run_dir), "--levels", "off",
                 "--epochs", "1", "--steps-per-epoch", "1", *TINY_PRIOR)
    assert last_json(result)["state"] == "finished"
    prior = load_bundle(run_dir).prior
    assert runs.read_config(run_dir)["model"]["num_levels"] == 0 and num_levels(prior) == 0
    assert prior(np.zeros((1, 8, 8), np.int32)).shape == (1, 8, 8, 16)


def test_prior_needs_a_vqvae(tmp_path):
    result = run("core.train", "prior", "--run-dir", str(tmp_path / "p"), "--epochs", "1")
    assert result.returncode == 2 and "--vqvae" in result.stderr


# --- the whole-brain prior (--volume) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def volume_run(prior_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "volume"
    result = run("core.train", "prior", "--volume", "--vqvae", str(prior_run), "--run-dir", str(run_dir),
                 "--epochs", "2", "--steps-per-epoch", "2", "--log-every", "1", *TINY_PRIOR)
    assert last_json(result)["state"] == "finished"
    (run_dir.parent / "console.txt").write_text(result.stderr)  # what the trainer said before train.log began
    return run_dir


def test_a_volume_run_starts_from_the_slice_prior_and_bundles_both(volume_run, prior_run):
    config = runs.read_config(volume_run)
    assert config["kind"] == "prior" and config["model"]["previous_slice"] is True
    assert "starts from the slice prior" in (volume_run.parent / "console.txt").read_text()
    bundle = load_bundle(volume_run)
    assert bundle.prior is not None and bundle.volume_prior is not None
    assert bundle.config["volume_prior"]["previous_slice"] is True and bundle.config["prior"]["previous_slice"] is False
    # The slice prior is the source's, untouched; the whole-brain prior learned on top of it.
    source = load_bundle(prior_run)
    codes = np.random.default_rng(1).integers(0, 16, (2, 8, 8)).astype(np.int32)
    levels = np.array([0, 3], np.int32)
    np.testing.assert_array_equal(bundle.prior([codes, levels]), source.prior([codes, levels]))
    records, _ = runs.read_metrics(volume_run)
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2, 3, 4]
    assert all(np.isfinite(r["val_bits_per_code"]) for r in records if r["kind"] == "epoch")
    sheet = Image.open(volume_run / "samples" / "epoch_002.png")
    assert sheet.size == (8 * 32, 32)  # one whole brain: its 4 levels side by side


def test_a_volume_run_trains_on_each_slice_with_the_codes_of_the_slice_below(volume_run, oasis_tree):
    import tensorflow as tf
    from core.training import prior_task
    from core.training.loop import TrainConfig

    saved = runs.read_config(volume_run)
    model, data_settings = prior_task.resumed_settings(saved, argparse_namespace())
    task, _ = prior_task.make_task(model, data_settings, TrainConfig.from_dict(saved["train"]),
                                   tf.distribute.get_strategy(), volume_run)
    codes = np.load(volume_run / "codes_train.npy")
    names = [p.name for p in sorted((oasis_tree / "keras_png_slices_data" / "keras_png_slices_train").iterdir())]
    position = {name: i for i, name in enumerate(names)}
    seen = 0
    for grids, levels, below in task.epoch_dataset(0):
        for grid, level, previous in zip(grids.numpy(), levels.numpy(), below.numpy()):
            index = next(i for i, c in enumerate(codes) if np.array_equal(c, grid))
            case = names[index].split("_slice_")[0]
            if level == 0:
                assert (previous == 16).all()  # the "no slice below" token
            else:
                np.testing.assert_array_equal(previous, codes[position[f"{case}_slice_{level - 1}.nii.png"]])
            seen += 1
    assert seen == 16


def test_below_generated_trains_on_generated_slices_below_made_once_by_the_source_whole_brain_prior(volume_run,
                                                                                                   tmp_path):
    import tensorflow as tf
    from core.training import prior_task
    from core.training.loop import TrainConfig

    saved = runs.read_config(volume_run)
    model, data_settings = prior_task.resumed_settings(saved, argparse_namespace())
    train, strategy = TrainConfig.from_dict(saved["train"]), tf.distribute.get_strategy()
    source = load_bundle(volume_run)
    every = data_settings.replace(vqvae=str(volume_run), below_generated=1.0)
    task, config = prior_task.make_task(model, every, train, strategy, tmp_path / "all")
    assert config["data_settings"]["below_generated"] == 1.0  # a resume reads it back from config.json
    made = np.load(tmp_path / "all" / "codes_train_generated.npy")
    assert made.shape == task.train_codes.shape and 0 <= made.min() and made.max() < 16
    assert 0 < (made != task.train_codes).mean() < 1  # sampled, not copied
    # A second round: the run starts from the whole-brain prior that made the slices below.
    for mine, theirs in zip(task.model.get_weights(), source.volume_prior.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    real = {tuple(c.ravel()): i for i, c in enumerate(task.train_codes)}
    seen = 0
    for grids, levels, below in task.epoch_dataset(0):
        for grid, level, previous in zip(grids.numpy(), levels.numpy(), below.numpy()):
            under = task.train_below[real[tuple(grid.ravel())]]
            if level == 0:
                assert under == -1 and (previous == 16).all()  # a stack's base keeps the start token
            else:
                np.testing.assert_array_equal(previous, made[under])
            seen += 1
    assert seen > 0
    # A fraction of them: drawn from (seed, epoch, position), so a resume sees the same, another epoch not.
    half, _ = prior_task.make_task(model, every.replace(below_generated=0.5), train, strategy, tmp_path / "half")
    np.testing.assert_array_equal(np.load(tmp_path / "half" / "codes_train_generated.npy"), made)
    batches = [np.concatenate([b.numpy() for _, _, b in half.epoch_dataset(3)]) for _ in range(2)]
    np.testing.assert_array_equal(batches[0], batches[1])
    grids = np.concatenate([g.numpy() for g, _, _ in half.epoch_dataset(3)])
    unders = [task.train_below[real[tuple(g.ravel())]] for g in grids]
    generated = [u >= 0 and np.array_equal(b, made[u]) and not np.array_equal(b, task.train_codes[u])
                 for u, b in zip(unders, batches[0])]
    assert 0 < sum(generated) < sum(u >= 0 for u in unders)
    assert not np.array_equal(np.concatenate([b.numpy() for _, _, b in half.epoch_dataset(4)]), batches[0])
    # The generated slices are made once: a resumed run reads them from its run directory.
    np.save(tmp_path / "half" / "codes_train_generated.npy", np.zeros_like(made))
    resumed, _ = prior_task.make_task(model, every.replace(below_generated=0.5), train, strategy, tmp_path / "half")
    assert not np.asarray(resumed._generated_table).any()
    # Validation scores the prior on the real slices below.
    clean, _ = prior_task.make_task(model, data_settings, train, strategy, tmp_path / "clean")
    clean.model.set_weights(task.model.get_weights())
    assert task.validate() == clean.validate()


def test_below_generated_needs_a_volume_prior_and_a_source_that_has_one(vqvae_run, prior_run, tmp_path):
    result = run("core.train", "prior", "--vqvae", str(vqvae_run), "--run-dir", str(tmp_path / "p"),
                 "--below-generated", "0.3", "--epochs", "1", *TINY_PRIOR)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: --below-generated")
    result = run("core.train", "prior", "--volume", "--vqvae", str(prior_run), "--run-dir", str(tmp_path / "v"),
                 "--below-generated", "0.3", "--epochs", "1", *TINY_PRIOR)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: --below-generated needs a whole-brain prior"), last
    assert not (tmp_path / "p").exists() and not (tmp_path / "v").exists()


def argparse_namespace():
    import argparse
    return argparse.Namespace()


def test_a_volume_prior_refuses_names_without_case_and_slice_numbers(vqvae_run, tmp_path):
    from oasis_fixtures import make_oasis_tree

    root = make_oasis_tree(tmp_path / "data")
    train = root / "keras_png_slices_data" / "keras_png_slices_train"
    (train / "case_002_slice_1.nii.png").rename(train / "scan_b.png")
    run_dir = tmp_path / "vol"
    result = run("core.train", "prior", "--volume", "--vqvae", str(vqvae_run), "--data", str(root),
                 "--run-dir", str(run_dir), "--epochs", "1", *TINY_PRIOR)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "scan_b.png carries no case and slice number" in errors[0]
    assert not run_dir.exists()


def test_a_prior_that_fails_after_caching_its_codes_leaves_a_folder_it_can_start_in_again(vqvae_run, tmp_path):
    """The code caches are written before config.json: a failure there left a folder refused as not ours."""
    import shutil

    from oasis_fixtures import make_oasis_tree

    root = make_oasis_tree(tmp_path / "data")
    validate = root / "keras_png_slices_data" / "keras_png_slices_validate"
    shutil.copy(next(validate.glob("*.png")), validate / "case_099_slice_9.nii.png")  # a level train lacks
    run_dir = tmp_path / "p"
    for attempt in range(2):
        result = run("core.train", "prior", "--vqvae", str(vqvae_run), "--data", str(root),
                     "--run-dir", str(run_dir), "--epochs", "1", *TINY_PRIOR)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "slice level 9" in errors[0], (attempt, errors)
        assert not run_dir.exists() or not any(run_dir.iterdir())


def test_evaluate_prints_one_json_object(vqvae_run, oasis_tree):
    result = run("core.evaluate", "--checkpoint", str(vqvae_run), "--data", str(oasis_tree),
                 "--split", "test")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert {"ssim", "psnr", "mse", "perplexity", "codes_used", "codebook_size", "n_images",
            "split"} <= set(scores)
    assert scores["split"] == "test" and scores["n_images"] == 8 and scores["codebook_size"] == 16
    assert -1 <= scores["ssim"] <= 1 and scores["mse"] >= 0 and 1 <= scores["codes_used"] <= 16
    assert 1 <= scores["perplexity"] <= scores["codes_used"] + 1e-6


def test_evaluate_scores_match_the_metrics_module(vqvae_run, oasis_tree):
    from core import data, metrics
    from core.scoring import evaluate_split
    bundle = load_bundle(vqvae_run)
    scores = evaluate_split(bundle.vqvae, str(oasis_tree), "validate")
    images = data.load_images(data.list_slices(data.find_data_root(oasis_tree), "validate"), 32)
    reconstructions = bundle.vqvae.reconstruct(images)
    assert scores["ssim"] == pytest.approx(float(np.mean(metrics.ssim(images, reconstructions))), abs=1e-6)
    assert scores["psnr"] == pytest.approx(float(np.mean(metrics.psnr(images, reconstructions))), abs=1e-4)


def test_evaluate_bad_checkpoint_is_a_clear_error(tmp_path, oasis_tree):
    result = run("core.evaluate", "--checkpoint", str(tmp_path), "--data", str(oasis_tree))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in result.stderr


def test_sample_writes_n_slices_and_a_grid(prior_run, tmp_path):
    result = run("core.sample", "--checkpoint", str(prior_run), "--n", "3", "--seed", "1",
                 "--out", str(tmp_path))
    summary = last_json(result)
    assert summary["n"] == 3 and len(summary["files"]) == 3
    for path in summary["files"]:
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.mode == "L"
    with Image.open(summary["grid"]) as grid:
        assert grid.size == (4 * 32, 32)
    # The same seed gives the same brains.
    again = last_json(run("core.sample", "--checkpoint", str(prior_run), "--n", "3", "--seed", "1",
                          "--out", str(tmp_path / "again")))
    for a, b in zip(summary["files"], again["files"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_sample_at_a_level_names_it_and_a_wrong_level_is_a_clear_error(prior_run, tmp_path):
    summary = last_json(run("core.sample", "--checkpoint", str(prior_run), "--n", "2", "--level", "3",
                            "--out", str(tmp_path)))
    assert summary["levels"] == [3, 3]
    assert [os.path.basename(f) for f in summary["files"]] == ["sample_0_00_level3.png", "sample_0_01_level3.png"]
    result = run("core.sample", "--checkpoint", str(prior_run), "--level", "4", "--out", str(tmp_path))
    assert result.returncode == 2 and "levels in [0, 4)" in result.stderr and "Traceback" not in result.stderr


def test_sample_completion_keeps_the_top_rows(prior_run, tmp_path):
    slice_path = write_png(tmp_path / "slice.png", brain_slice(7))
    summary = last_json(run("core.sample", "--checkpoint", str(prior_run), "--complete",
                            str(slice_path), "--keep-rows", "4", "--n", "2", "--out", str(tmp_path / "out")))
    bundle = load_bundle(prior_run)
    original = np.asarray(Image.open(slice_path), np.float32)[None, ..., None] / 255
    reconstruction = bundle.vqvae.reconstruct(original)[0, ..., 0]
    completions = [np.asarray(Image.open(p), np.float32) / 255 for p in summary["files"]]
    # Image rows that no sampled code (rows 4-7) reaches through the decoder show only kept codes:
    # there every completion is the reconstruction of the original (8-bit rounding aside).
    codes = bundle.vqvae.encode_to_indices(original)
    changed = codes.copy()
    changed[:, 4:] = (changed[:, 4:] + 1) % 16
    reached = np.abs(bundle.vqvae.decode_indices(changed) - bundle.vqvae.decode_indices(codes))[0, ..., 0].max(axis=1)
    untouched = int(np.argmax(reached > 1e-6))  # the first image row a sampled code reaches
    assert untouched >= 4
    for completion in completions:
        np.testing.assert_allclose(completion[:untouched], reconstruction[:untouched], atol=1 / 255 + 1e-6)
    assert summary["grid"].endswith("completion_0_grid.png")
    # No level in the name "slice.png": each completion's level was drawn given the kept rows.
    assert len(summary["levels"]) == 2
    named = write_png(tmp_path / "case_441_slice_2.nii.png", brain_slice(7))
    again = last_json(run("core.sample", "--checkpoint", str(prior_run), "--complete", str(named),
                          "--keep-rows", "4", "--n", "2", "--out", str(tmp_path / "named")))
    assert again["levels"] == [2, 2]  # the level its file name carries


def test_sample_without_prior_says_how_to_train_one(vqvae_run, tmp_path):
    result = run("core.sample", "--checkpoint", str(vqvae_run), "--out", str(tmp_path))
    assert result.returncode == 2 and "core.train prior" in result.stderr


def test_split_levels_follow_the_file_names_and_refuse_what_does_not_fit(tmp_path):
    from core.training.prior_task import split_levels
    from core.data import DataError

    folder = tmp_path / "keras_png_slices_validate"
    for name in ("case_402_slice_0.nii.png", "case_402_slice_1.nii.png", "case_402_slice_2.nii.png"):
        write_png(folder / name, brain_slice(1))
    codes = np.zeros((3, 8, 8), np.int16)
    np.testing.assert_array_equal(split_levels(tmp_path, "validate", codes, 4), [0, 1, 2])
    np.testing.assert_array_equal(split_levels(tmp_path, "validate", codes, 0), [0, 0, 0])  # unconditional
    with pytest.raises(DataError, match="levels 0..1"):
        split_levels(tmp_path, "validate", codes, 2)
    with pytest.raises(DataError, match="changed"):
        split_levels(tmp_path, "validate", codes[:2], 4)
    write_png(folder / "extra.png", brain_slice(2))
    with pytest.raises(DataError, match="extra.png carries no slice level"):
        split_levels(tmp_path, "validate", np.zeros((4, 8, 8)), 4)
