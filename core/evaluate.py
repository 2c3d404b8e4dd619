"""`python -m core.evaluate`: score a checkpoint on one split and print ONE JSON object on stdout."""
from __future__ import annotations

import json
import sys

from core import cli, data


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="python -m core.evaluate",
                        description="Score a VQ-VAE checkpoint on a data split.")
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory (its best checkpoint) or a bundle folder")
    parser.add_argument("--data", required=True, help="OASIS folder")
    parser.add_argument("--split", choices=data.SPLITS, default="test")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N slices")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core import scoring
    from core.bundles import load_bundle

    try:
        bundle = load_bundle(args.checkpoint)
        result = scoring.evaluate_split(bundle.vqvae, args.data, args.split, args.limit, args.batch_size)
    except cli.user_error_types() as error:
        return cli.report(error)
    print(json.dumps({**result, "checkpoint": str(bundle.path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
