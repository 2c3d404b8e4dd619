"""core.settings: each config field declared once; checks, strict dicts, CLI flags and form fields all derive from it."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from core import settings
from core.models.prior import PriorConfig
from core.models.vqvae import VQVAEConfig
from core.training.loop import TrainConfig
from core.training.prior_task import PriorData
from core.training.vqvae_task import VQVAEData

DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "demo" / "config.json"
CONFIGS = [VQVAEConfig(image_size=64, downsample_factor=8, num_embeddings=32, use_ema=False, ema_decay=0.9),
           TrainConfig(epochs=3, learning_rate=5e-4, steps_per_epoch=7, mixed_precision=True, device="cpu"),
           VQVAEData(data="/data/oasis", crop_size=128, val_limit=64),
           PriorData(vqvae="/runs/vq", levels="off")]


def parse(cls, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, cls)
    return parser.parse_args(argv)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_flags_rebuild_the_config_they_were_derived_from(config):
    namespace = parse(type(config), settings.to_argv(config))
    assert type(config).from_dict(settings.given(type(config), namespace)) == config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_dicts_round_trip_through_json(config):
    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_only_typed_flags_reach_the_namespace_so_defaults_live_in_the_dataclass():
    namespace = parse(TrainConfig, ["--epochs", "5"])
    assert settings.given(TrainConfig, namespace) == {"epochs": 5}
    assert TrainConfig.from_dict(settings.given(TrainConfig, namespace)) == TrainConfig(epochs=5)


@pytest.mark.parametrize("argv", [["--lr", "nan"], ["--lr", "inf"], ["--lr", "0"], ["--epochs", "0"],
                                  ["--epochs", "ten"], ["--batch-size", "-1"], ["--steps-per-epoch", "0"],
                                  ["--checkpoint-every-s", "-1"], ["--device", "tpu"]])
def test_bad_training_flags_are_refused_while_parsing(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        parse(TrainConfig, argv)
    assert exited.value.code == 2 and argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--commitment-cost", "nan"], ["--ema-decay", "1"], ["--codebook-size", "1"],
                                  ["--downsample-factor", "3"], ["--image-size", "0"]])
def test_bad_model_flags_are_refused_while_parsing(argv):
    with pytest.raises(SystemExit):
        parse(VQVAEConfig, argv)


def test_old_flag_spellings_still_work():
    namespace = parse(VQVAEConfig, ["--num-embeddings", "64", "--embedding-dim", "8", "--no-ema"])
    assert settings.given(VQVAEConfig, namespace) == {"num_embeddings": 64, "embedding_dim": 8, "use_ema": False}
    assert settings.given(TrainConfig, parse(TrainConfig, ["--learning-rate", "0.01"])) == {"learning_rate": 0.01}


@pytest.mark.parametrize("cls, values, named", [
    (TrainConfig, {"epochs": 3, "dropout": 0.5}, "dropout"),
    (TrainConfig, {"epochs": "ten"}, "epochs"),
    (TrainConfig, {"learning_rate": math.nan}, "learning_rate"),
    (TrainConfig, {"mixed_precision": "yes"}, "mixed_precision"),
    (VQVAEConfig, {"image_size": 64, "downsample_factor": 3}, "downsample_factor"),
    (VQVAEConfig, {"image_size": 60, "downsample_factor": 8}, "image_size"),
    (PriorConfig, {"num_embeddings": 8, "grid_height": 4}, "grid_width"),
    (PriorConfig, {"num_embeddings": 8, "grid_height": 4, "grid_width": 4, "kernel_size": 4}, "kernel_size"),
    (VQVAEData, {"crop_size": 4}, "crop_size"),
])
def test_every_config_names_what_is_wrong_in_a_dict(cls, values, named):
    with pytest.raises(ValueError, match=named):
        cls.from_dict(values)


@pytest.mark.parametrize("value", [None, [], "train"])
def test_a_config_that_is_not_an_object_is_refused(value):
    with pytest.raises(ValueError, match="JSON object"):
        TrainConfig.from_dict(value)


def test_the_shipped_demo_bundle_config_still_loads():
    saved = json.loads(DEMO.read_text())
    assert VQVAEConfig.from_dict(saved["vqvae"]).code_grid == 64
    assert PriorConfig.from_dict(saved["prior"]).num_levels == 32


def test_a_run_config_written_before_this_version_still_loads():
    # config.json as commit 3d38278 wrote it for a prior run: data_settings without "levels".
    saved = {"vqvae": "/runs/vq", "data": "/data"}
    assert PriorData.from_dict(saved) == PriorData(vqvae="/runs/vq", data="/data", levels="auto")


def test_numpy_integers_are_accepted_as_ints():
    import numpy as np

    config = PriorConfig(num_embeddings=np.int64(8), grid_height=4, grid_width=4)
    assert type(config.num_embeddings) is int


def test_form_fields_come_from_the_same_declaration():
    fields = {f.name: f for f in settings.form_fields(TrainConfig, ("epochs", "learning_rate", "steps_per_epoch",
                                                                    "device"))}
    assert fields["epochs"].default == 30 and fields["epochs"].minimum == 1 and fields["epochs"].label == "Epochs"
    assert "--epochs" in fields["epochs"].help
    assert fields["learning_rate"].minimum > 0
    assert fields["steps_per_epoch"].none_means == "one pass over the train split"
    assert fields["device"].choices == ("auto", "cpu", "gpu")
