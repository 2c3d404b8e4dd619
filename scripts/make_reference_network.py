"""Train the reference feature network once on the proxy's train split and ship it to checkpoints/reference/.

    python scripts/make_reference_network.py --data ../shared/oasis_proxy

The network learns each slice's level (from its file name) at 64x64; its pooled features are what
core.sample_quality measures FD and KID on. Writes reference.keras and a README.md model card with
its level accuracy on the validate split. A few minutes of CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from core import atomic, data  # noqa: E402
from core.models.reference import ReferenceConfig, build_reference_network  # noqa: E402
from core.sample_quality import REFERENCE_CHECKPOINT, REFERENCE_FILE  # noqa: E402

CARD = """# Reference feature network

A small CNN (4 conv blocks, {params:,} parameters, `core/models/reference.py`) that judges samples
offline: `core.sample_quality` computes the Frechet distance (FD) and kernel distance (KID) on its
{feature_dim}-d pooled features. It is independent of the models it judges (never saw a VQ-VAE output).

- Trained on: the OASIS proxy's train split ({n_train} slices, {cases} cases; `{data}`), resized to
  {side}x{side}, to predict each slice's level (0-{top}, from the file name) with cross-entropy,
  {epochs} epochs of Adam (learning rate {lr}), batch {batch}, seed {seed}.
- Level accuracy on the validate split ({n_val} slices): exact {exact:.3f}, within one level
  {within1:.3f} (chance 1/{levels}).
- Rebuilt by `python scripts/make_reference_network.py --data {data}` ({seconds:.0f} s on a 2-core CPU).

Its distances are in units of this network's features: they are NOT comparable with ImageNet-FID,
Med3D or RadImageNet numbers, nor with distances from a retrained reference network. Compare a
model's FD with the real-vs-real FD computed with the same network (`fd_real`).
"""


def load_split(root: Path, split: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    paths = data.scan_split(root, split).paths
    levels = data.slice_levels(paths)
    if levels is None:
        raise SystemExit(f"error: the {split} split's file names carry no slice levels")
    return data.load_images(paths, side), levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/oasis_proxy", help="relative to the repository root")
    parser.add_argument("--out", default=str(REFERENCE_CHECKPOINT))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    config = ReferenceConfig()
    root = data.find_data_root(REPO / args.data)
    train_x, train_y = load_split(root, "train", config.input_size)
    val_x, val_y = load_split(root, "validate", config.input_size)
    model = build_reference_network(ReferenceConfig(num_levels=max(config.num_levels, int(train_y.max()) + 1)))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train_x, train_y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=2,
              validation_data=(val_x, val_y))
    predicted = np.argmax(model.predict(val_x, verbose=0), axis=1)
    exact, within1 = float(np.mean(predicted == val_y)), float(np.mean(np.abs(predicted - val_y) <= 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / REFERENCE_FILE)
    cases = len({p.name.split("_slice")[0] for p in data.scan_split(root, "train").paths})
    card = CARD.format(params=model.count_params(), feature_dim=model.config.feature_dim,
                       n_train=len(train_x), cases=cases, data=args.data, side=config.input_size,
                       top=model.config.num_levels - 1, epochs=args.epochs, lr=args.learning_rate,
                       batch=args.batch_size, seed=args.seed, n_val=len(val_x), exact=exact,
                       within1=within1, levels=model.config.num_levels,
                       seconds=time.perf_counter() - started)
    atomic.write_bytes(out / "README.md", card.encode())
    print(f"validate level accuracy {exact:.3f} (within one level {within1:.3f}); saved {out}")


if __name__ == "__main__":
    main()
