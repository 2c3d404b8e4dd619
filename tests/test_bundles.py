"""core.bundles: the checkpoint picker's list (the demo first, then the runs that can be picked)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import atomic, bundles, runs


def fake_bundle(folder: Path, prior: bool = False) -> Path:
    """A bundle's files as the picker sees them (it never loads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vqvae.keras").write_text("model")
    if prior:
        (folder / "prior.keras").write_text("prior")
    atomic.write_json(folder / "config.json", {"kind": "prior" if prior else "vqvae"})
    return folder


def fake_run(root: Path, name: str, state: str = "finished", prior: bool = False) -> Path:
    run_dir = runs.create_run(root / name, {"kind": "prior" if prior else "vqvae",
                                            "train": {"epochs": 1}})
    runs.save_checkpoint(run_dir, 1, lambda folder: fake_bundle(folder, prior), {"last": {}})
    runs.write_status(run_dir, state=state, step=1, epoch=1)
    return run_dir


@pytest.fixture
def demo(tmp_path, monkeypatch) -> Path:
    folder = fake_bundle(tmp_path / "demo", prior=True)
    monkeypatch.setattr(bundles, "DEMO_CHECKPOINT", folder)
    return folder


def test_the_demo_comes_first_then_pickable_runs(tmp_path, demo):
    root = tmp_path / "runs"
    fake_run(root, "done", prior=True)
    fake_run(root, "paused", state="stopped")
    fake_run(root, "crashed", state="failed")
    choices = bundles.available_checkpoints(root)
    assert choices[0] == bundles.CheckpointChoice("demo (shipped)", demo, True)
    by_name = {c.path.name: c for c in choices[1:]}
    assert set(by_name) == {"done", "paused"}
    assert by_name["done"].has_prior and not by_name["paused"].has_prior


@pytest.mark.parametrize("file, text", [
    ("config.json", "{half"), ("config.json", '{"kind": "vqvae", "train": 7}'),
    ("status.json", "[1, 2]"), ("status.json", '{"state": "finished", "step": "x"}'),
    ("checkpoints/last.json", '{"dir": "../../elsewhere", "step": 1}'),
    ("checkpoints/last.json", "not json"),
])
def test_one_broken_run_hides_neither_the_demo_nor_the_good_runs(tmp_path, demo, file, text):
    root = tmp_path / "runs"
    fake_run(root, "good")
    broken = fake_run(root, "broken")
    (broken / file).write_text(text)
    names = [c.path.name for c in bundles.available_checkpoints(root)]
    assert names == ["demo", "good"]


def test_no_demo_and_no_runs_is_an_empty_list(tmp_path, monkeypatch):
    monkeypatch.setattr(bundles, "DEMO_CHECKPOINT", tmp_path / "no-demo")
    assert bundles.available_checkpoints(tmp_path / "runs") == []


def test_a_bundle_holds_a_whole_brain_prior_beside_the_slice_prior(tmp_path):
    from helpers_bundle import make_tiny_bundle
    from core.models.prior import previous_layer

    both = bundles.load_bundle(make_tiny_bundle(tmp_path / "both", with_volume_prior=True))
    assert both.prior is not None and previous_layer(both.prior) is None
    assert previous_layer(both.require_volume_prior()) is not None
    assert both.config["kind"] == "prior" and both.config["volume_prior"]["previous_slice"] is True
    only_volume = make_tiny_bundle(tmp_path / "volume", with_prior=False, with_volume_prior=True)
    loaded = bundles.load_bundle(only_volume)
    assert loaded.prior is None and loaded.volume_prior is not None and loaded.config["kind"] == "prior"
    assert bundles.can_sample(only_volume) and not bundles.can_sample(make_tiny_bundle(tmp_path / "vq", False))
    slices_only = bundles.load_bundle(make_tiny_bundle(tmp_path / "slices"))
    with pytest.raises(bundles.CheckpointError, match="python -m core.train prior --volume"):
        slices_only.require_volume_prior()


@pytest.mark.parametrize("part", ["prior.keras", "volume_prior.keras"])
def test_a_prior_not_made_for_the_bundles_vqvae_is_refused_naming_both(tmp_path, part):
    """A prior over other codes or another grid (copied in from another run) would index codes its
    VQ-VAE does not have: a GatherV2 error deep in decoding."""
    import shutil

    from helpers_bundle import TINY_PRIOR, TINY_VQVAE
    from core.models.prior import PriorConfig, build_prior
    from core.models.vqvae import VQVAEConfig, build_vqvae

    for name, change in (("codes", {"num_embeddings": 32}), ("grid", {"grid_height": 4, "grid_width": 4})):
        config = PriorConfig(**{**TINY_PRIOR, **change}, previous_slice=part.startswith("volume"))
        other = bundles.save_bundle(tmp_path / f"other-{name}", build_vqvae(VQVAEConfig(**TINY_VQVAE)),
                                    build_prior(config), prior_config=config)
        from helpers_bundle import make_tiny_bundle
        mixed = make_tiny_bundle(tmp_path / f"mixed-{name}", with_volume_prior=True)
        shutil.copy(other / "prior.keras", mixed / part)
        with pytest.raises(bundles.CheckpointError, match=f"{part}.*vqvae.keras"):
            bundles.load_bundle(mixed)
