"""`python -m core.train {vqvae,prior}`: train into a run directory (new, or --resume an old one)."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from core import cli

cli.import_tensorflow()  # before the modules below import it: its start-up lines held back
from core import atomic, cluster, runs, settings  # noqa: E402
from core.training import loop, prior_task, vqvae_task  # noqa: E402
from core.training.loop import RESUMABLE, TrainConfig  # noqa: E402

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
        training.add_argument("--run-dir", required=True, type=settings.text("run_dir"), help="run directory (new, or one to --resume)")
        training.add_argument("--resume", action="store_true",
                              help="continue the run in --run-dir from its last checkpoint, with the "
                                   "settings it was started with; only --epochs, --device, "
                                   "--checkpoint-every-s, --log-every and --data may be given anew")
        settings.add_flags(training, TrainConfig, TASKS[kind].TRAIN_DEFAULTS)
        training.add_argument("--workers", type=settings.number(int, "workers", minimum=1, maximum=64), default=1,
                              help="start this many worker processes on this machine as one job "
                                   "(--strategy multiworker); for several machines set TF_CONFIG "
                                   "on each instead (README)")
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


def _settings(args, run_dir: Path, task_module):
    """The run's configs, from its config.json on --resume or from the flags; the saved config or None."""
    if args.resume:
        saved = runs.read_config(run_dir)
        if saved.get("kind") != args.kind:
            raise runs.RunError(f"{run_dir} is a {saved.get('kind')} run, not {args.kind}.")
        for part in ("model", "train", "data_settings"):  # what says how the run was started
            if not isinstance(saved.get(part), dict):
                raise runs.RunError(f"{run_dir}/config.json has no \"{part}\" object, so the run cannot "
                                    f"resume as it was started; nothing was changed.")
        train = _resumed(args, saved)
        model, data_settings = task_module.resumed_settings(saved, args)
        return train, model, data_settings, saved
    if cluster.is_chief():
        runs.refuse_existing(run_dir)  # before any work touches the folder
    chosen = settings.given(TrainConfig, args)
    if args.workers > 1:
        if chosen.setdefault("strategy", "multiworker") != "multiworker":
            raise ValueError(f"--workers runs one multi-worker job: give --strategy multiworker "
                             f"(or none), not {chosen['strategy']}.")
    train = TrainConfig.from_dict({**task_module.TRAIN_DEFAULTS.to_dict(), **chosen})
    model, data_settings = task_module.new_settings(args)
    return train, model, data_settings, None


def _check_cluster(args, train: TrainConfig) -> None:
    if (args.workers > 1 or cluster.worker_count() > 1) and train.strategy != "multiworker":
        raise runs.RunError(f"This run trains with --strategy {train.strategy}; several workers need a run "
                            f"started with --strategy multiworker.")


def _start_workers(argv: list[str], args, train: TrainConfig) -> int:
    """This machine as a job of --workers processes; each runs this command with its own TF_CONFIG."""
    worker_argv, skip = [], False
    for item in argv:
        if skip or item == "--workers":
            skip = not skip
            continue
        if not item.startswith("--workers="):
            worker_argv.append(item)
    if not args.resume and "--strategy" not in worker_argv:
        worker_argv += ["--strategy", train.strategy]
    log.info("Starting %d workers on this machine.", args.workers)
    code, failure = cluster.start_local(worker_argv, args.workers)
    if failure:
        print(f"error: {failure}; the job stopped. Its status is in {args.run_dir}/status.json; continue it "
              f"with: python -m core.train {args.kind} --run-dir {args.run_dir} --resume --workers {args.workers}",
              file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_dir, task_module = Path(args.run_dir), TASKS[args.kind]
    fresh = False  # a new run folder this process checked: what its task prepares there is its own
    train = None
    try:
        train, model, data_settings, saved = _settings(args, run_dir, task_module)
        fresh = saved is None and cluster.is_chief()
        _check_cluster(args, train)
        if args.workers > 1 and cluster.tf_config() is None:
            return _start_workers(argv, args, train)
        strategy = loop.setup_devices(train)
        task, config = task_module.make_task(model, data_settings, train, strategy, run_dir)
        if saved is not None:
            task.check_same_model(run_dir)  # before config.json is written again
        if cluster.is_chief():  # in a multi-worker job, the one process that writes the run
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
    except Exception as error:
        if fresh:
            runs.discard_prepared(run_dir)
        error = loop.out_of_memory(error, train and train.batch_size, None) or error  # loading, before fit
        if isinstance(error, cli.user_error_types()):
            return cli.report(error)
        log.exception("Training failed")  # the traceback goes to train.log too, for the dashboard
        return 1


if __name__ == "__main__":
    sys.exit(main())
