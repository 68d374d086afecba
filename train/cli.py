"""The training stage's subcommands: ``visionrt data`` (and ``visionrt data check DIR``) and ``visionrt train``.

Registered by the root CLI (:data:`visionrt.runtime.cli.COMMANDS`); torch is imported only when a
command runs, so building the parser stays fast.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..runtime import atomic
from ..runtime.argtypes import (existing_dir, existing_file, fraction, non_negative_int, output_dir, positive_float,
                                positive_int)
from ..runtime.cli import Command, emit
from ..runtime.manifest import MANIFEST_NAME
from ..runtime.errors import InputError
from ..runtime.progress import progress
from ..runtime.preprocess import RESIZE_POLICIES
from ..runtime.tasks import TASKS
from .config import OPTIMIZERS, SCHEDULES
from .presets import preset_names
from .schedule import AUTO_FIELDS

log = logging.getLogger(__name__)


def build_data(task: str, out: str | os.PathLike, quick: bool = True, seed: int = 0) -> Path:
    """Generate ``task``'s built-in dataset under ``out`` (quick or full size), showing progress."""
    from . import tasks

    start = time.perf_counter()
    path = tasks.get(task).build_data(out, quick=quick, seed=seed, progress=progress("generating data", log))
    log.info("data: %s (%.0fs)", path, time.perf_counter() - start)
    return Path(path)


def train_distributed(nproc: int, argv: list[str]) -> int:
    """Re-run ``visionrt train ARGV`` under torchrun with ``nproc`` processes (DDP)."""
    argv = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")
            and not a.startswith("--nproc=")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "visionrt.runtime.cli", *argv]
    return subprocess.call(command)


def check_data(args: argparse.Namespace, data_dir: Path) -> None:
    """Print the dataset check's summary and problems; exit 2 when there are problems."""
    from .data.check import check_dataset

    report = check_dataset(data_dir, args.task)
    emit(args, dataclasses.asdict(report), report.text())
    if not report.ok:
        sys.exit(2)


def cmd_data(args: argparse.Namespace) -> None:
    if args.check:
        if args.check[0] != "check" or len(args.check) != 2:
            raise InputError(f"unknown `visionrt data` arguments {' '.join(args.check)!r}",
                             fix="use `visionrt data check DIR --task T` or `visionrt data --task T --out DIR`")
        return check_data(args, Path(args.check[1]))
    if args.out is None:
        raise InputError("`visionrt data` needs --out DIR (where to write the built-in dataset)",
                         fix="pass --out DIR, or `visionrt data check DIR --task T` to check a dataset")
    path = build_data(args.task, args.out, quick=not args.full, seed=args.seed)
    emit(args, {"data": str(path)}, f"dataset written to {path}")


#: ``visionrt train`` flags that override TrainConfig fields when given.
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "schedule", "image_size", "resize", "workers", "flip", "scale_jitter",
               "optimizer", "max_minutes")


def read_run_config(path: Path) -> dict:
    """A ``--config`` file (YAML or JSON): TrainConfig fields, plus ``task``/``model`` (checked when training starts)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"cannot read the run config {path}: {err}", fix="pass a YAML file of TrainConfig fields") from err
    if not isinstance(data, dict):
        raise InputError(f"run config {path} is not a mapping of options", fix="write `option: value` lines")
    return data


def cmd_train(args: argparse.Namespace) -> None:
    if args.nproc > 1:
        sys.exit(train_distributed(args.nproc, sys.argv[1:]))
    from .config import TrainConfig
    from .loop import check_config, check_out_dir, fit
    from .tasks import configure

    options = read_run_config(args.config) if args.config else {}
    task, model = args.task or options.pop("task", None) or "classify", args.model or options.pop("model", None)
    preset = args.preset or options.pop("preset", None)
    options.pop("task", None), options.pop("model", None), options.pop("preset", None)
    options.update({k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None})
    options.update(resume=args.resume or options.get("resume", False))
    named = set(options) | ({"model"} if model or preset or "model_kwargs" in options else set())
    options.setdefault("auto", [name for name in AUTO_FIELDS if name not in named])  # sized to the data
    for name in ("seed", "threads"):
        if getattr(args, name) is not None or name not in options:
            options[name] = getattr(args, name) or 0
    try:
        TrainConfig.from_dict({**options, "task": task})
        config = configure(task, not args.full, model, preset, **options)
    except (TypeError, ValueError, KeyError) as err:
        raise InputError(f"invalid training options: {err}", fix="see `visionrt train --help`") from err
    check_config(config)
    check_out_dir(args.out, config.resume, args.overwrite)
    if not args.no_check:
        from .data.check import check_dataset

        report = check_dataset(args.data, task)
        if not report.ok:
            print(report.text(), file=sys.stderr)
            sys.exit(2)
        log.info("%s", report.text())
    # a trained model already there (--resume, --overwrite) is put back as it was if training fails
    # (in a single process: under torchrun the ranks would each journal the same directory)
    guarded = (args.out / MANIFEST_NAME).exists() and int(os.environ.get("WORLD_SIZE", "1")) == 1
    with atomic.transaction(args.out) if guarded else contextlib.nullcontext():
        model_dir = fit(config, args.data, args.out, overwrite=args.overwrite)
        if model_dir is not None:
            used = next(h for h in model_dir.manifest.history if h["stage"] == "train")["config"]
            atomic.write_text(model_dir.root / "config.json", json.dumps(used, indent=2) + "\n")
    if model_dir is not None:
        metrics = model_dir.manifest.metrics["pytorch"]["test"]
        emit(args, {"model_dir": str(model_dir.root), "test": metrics},
             f"model written to {model_dir.root} (test {metrics})")


def register(command: Command) -> None:
    p = command("data", cmd_data, "generate the built-in dataset (real digits on real photos, no downloads); "
                                  "`visionrt data check DIR --task T` checks a dataset of yours")
    p.add_argument("check", nargs="*", metavar="check DIR", help="check the dataset in DIR instead (exit 2 on problems)")
    p.add_argument("--task", choices=TASKS, default="classify")
    p.add_argument("--out", type=output_dir, help="where to write the built-in dataset")
    p.add_argument("--full", action="store_true", help="the larger dataset (default: quick)")
    p.add_argument("--seed", type=non_negative_int, default=0)

    p = command("train", cmd_train, "train a model; writes weights + manifest into --out")
    p.add_argument("--task", choices=TASKS, help="the task (default: the --config file's, else classify)")
    p.add_argument("--data", required=True, type=existing_dir)
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--model", help="architecture (default: the task's; `visionrt doctor` lists them)")
    p.add_argument("--full", action="store_true", help="the task's full configuration (default: the quick one)")
    p.add_argument("--preset", choices=preset_names(),
                   help="a standard-depth network at a realistic input size (classify: ResNet-18 at 224 px; "
                        "detect: YOLO at 512 px), for a GPU; see train/presets.py")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--schedule", choices=tuple(SCHEDULES),
                   help="learning rate after the warm-up (default cosine; step: x0.1 at 1/2 and 3/4 of training)")
    p.add_argument("--image-size", type=positive_int, help="model input side in px (default: the task's built-in size)")
    p.add_argument("--resize", choices=RESIZE_POLICIES,
                   help="how images fit the input (default: letterbox for boxes/joints, stretch otherwise)")
    p.add_argument("--workers", type=non_negative_int,
                   help="DataLoader processes reading the training batches from disk (default 0: in the training process)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror training images left-right at random, boxes, masks and joints with them "
                        "(default: yes, except on the built-in digits)")
    p.add_argument("--scale-jitter", type=fraction,
                   help="detect/instance: zoom each training image by a factor in 1 ± this, boxes kept whole "
                        "(default 0.25; 0 on the built-in digits)")
    p.add_argument("--config", type=existing_file, help="YAML file of training options (flags win); the resolved "
                                               "options are written to <out>/config.json")
    p.add_argument("--no-check", action="store_true", help="skip the dataset check before training")
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("--threads", type=non_negative_int, help="torch threads per process (0 = default)")
    p.add_argument("--max-minutes", type=positive_float)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace the trained model already in --out "
                                                            "(default: refuse; it is kept if training fails)")
    p.add_argument("--nproc", type=positive_int, default=1, help="data-parallel processes (torchrun, DDP)")
