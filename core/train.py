"""`python -m core.train {vqvae,prior}`: train into a run directory (new, or --resume an old one)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from core import atomic, cli, runs, settings
from core.training import loop, prior_task, vqvae_task
from core.training.loop import RESUMABLE, TrainConfig

log = logging.getLogger("brainvq.train")
TASKS = {"vqvae": vqvae_task, "prior": prior_task}
RESUME_OVERRIDES = (*RESUMABLE, "data")  # and --data: the folder may have moved


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="python -m core.train", description="Train a BrainVQ model into a run directory.")
    kinds = parser.add_subparsers(dest="kind", required=True)
    for kind, help_text in (("vqvae", "train a VQ-VAE on OASIS slices"),
                            ("prior", "train the PixelCNN prior over a VQ-VAE's codes")):
        command = kinds.add_parser(kind, help=help_text, formatter_class=parser.formatter_class)
        command.error = parser.error  # one `error:` line for a bad flag of a subcommand too
        TASKS[kind].add_flags(command)
        training = command.add_argument_group("training")
        training.add_argument("--run-dir", required=True, help="run directory (new, or one to --resume)")
        training.add_argument("--resume", action="store_true",
                              help="continue the run in --run-dir from its last checkpoint, with the "
                                   "settings it was started with; only --epochs, --device, "
                                   "--checkpoint-every-s, --log-every and --data may be given anew")
        settings.add_flags(training, TrainConfig, TASKS[kind].TRAIN_DEFAULTS)
    return parser


def _resumed(args, saved: dict) -> TrainConfig:
    """The run's own TrainConfig; a flag that may not change on resume is an error naming it."""
    task = TASKS[args.kind]
    flag_of = {"code_grid": "--code-grid"}
    for cls in (TrainConfig, task.MODEL_CONFIG, task.DATA_SETTINGS):
        flag_of.update(settings.flags(cls))
    typed = [name for name in flag_of if hasattr(args, name)]
    refused = [name for name in typed if name not in RESUME_OVERRIDES]
    if refused:
        allowed = ", ".join(flag_of[name] for name in RESUME_OVERRIDES)
        raise runs.RunError(f"{flag_of[refused[0]]} cannot change on --resume: a resumed run trains as it "
                            f"was started (only {allowed} may be given).")
    train = TrainConfig.from_dict(saved["train"])
    return train.replace(**{k: v for k, v in settings.given(TrainConfig, args).items() if k in RESUMABLE})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_dir, task_module = Path(args.run_dir), TASKS[args.kind]
    try:
        if args.resume:
            saved = runs.read_config(run_dir)
            if saved.get("kind") != args.kind:
                raise runs.RunError(f"{run_dir} is a {saved.get('kind')} run, not {args.kind}.")
            train = _resumed(args, saved)
            model, data_settings = task_module.resumed_settings(saved, args)
        else:
            saved = None
            runs.refuse_existing(run_dir)  # before any work touches the folder
            train = TrainConfig.from_dict({**task_module.TRAIN_DEFAULTS.to_dict(),
                                           **settings.given(TrainConfig, args)})
            model, data_settings = task_module.new_settings(args)
        strategy = loop.setup_devices(train)
        task, config = task_module.make_task(model, data_settings, train, strategy, run_dir)
        if saved is None:
            runs.create_run(run_dir, config)
        elif config != saved:
            atomic.write_json(run_dir / "config.json", config)  # more epochs, or the data moved
        file_log = logging.FileHandler(run_dir / "train.log")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(file_log)
        state = loop.fit(run_dir, task, train, resume=args.resume)
        print(json.dumps({"run_dir": str(run_dir), "state": state}))
        return 0
    except cli.user_error_types() as error:
        return cli.report(error)
    except Exception:
        log.exception("Training failed")  # the traceback goes to train.log too, for the dashboard
        return 1


if __name__ == "__main__":
    sys.exit(main())
