"""Slices per second of the training input pipeline (core.data.make_dataset): decode, fit, crop, batch; nothing else.

    python bench/data_pipeline.py --data ../shared/oasis_proxy [--crop-size 128] [--batches 60]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/oasis_proxy")
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    paths = data.list_slices(data.find_data_root(args.data), "train")
    dataset = data.make_dataset(paths, batch_size=args.batch_size, image_size=256, shuffle=True,
                                crop_size=args.crop_size, drop_remainder=True)
    batches = iter(dataset)
    for _ in range(5):  # warm-up: tracing and the first files
        next(batches)
    started = time.perf_counter()
    for _ in range(args.batches):
        next(batches)
    seconds = time.perf_counter() - started
    print(f"input pipeline, 256x256 PNG -> {args.crop_size} crops, batch {args.batch_size}: "
          f"{args.batches * args.batch_size / seconds:.0f} slices/s ({args.batches} batches in {seconds:.2f} s); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
