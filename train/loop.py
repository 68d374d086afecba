"""The training loop: seeded, data-parallel under torchrun, early stop, resumable.

``fit`` trains one model and writes a model directory: ``weights.safetensors`` (the best
epoch on the validation split), ``checkpoints/`` (last epoch, for ``resume``) and
``manifest.json`` with the task's input spec, outputs, classes and the test metrics;
``load_trained`` reads the trained module back. Epochs are logged (``logging``) with a progress
bar per epoch's steps.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..runtime.errors import ArtifactError, InputError
from ..runtime.images import MIN_SIDE as MIN_IMAGE_SIZE
from ..runtime.manifest import MANIFEST_NAME, Manifest, ModelDir
from ..runtime.progress import progress
from . import checkpoint
from .config import SCHEDULES, TrainConfig
from .data.lazy import read_ahead
from .models.pixel_input import as_manifest_input
from .distributed import Dist
from .schedule import AUTO_FIELDS, describe, may_stop_early, size_to_data
from .tasks import load_task
from .tasks.architectures import build_model
from .verdict import judge

WEIGHTS_FILE = "weights.safetensors"
#: Below this many steps per epoch, BatchNorm's running statistics (momentum 0.1: an average over
#: the last ~10 steps) still hold earlier weights' statistics when validation runs: they are
#: re-estimated on the epoch's training batches first (:func:`settle_batchnorm`).
SETTLE_BELOW_STEPS = 30
log = logging.getLogger(__name__)


def warmup_schedule(total_steps: int, schedule: str = "cosine", warmup_fraction: float = 0.15) -> Callable[[int], float]:
    """LR multiplier per step: linear warm-up over ``warmup_fraction`` of ``total_steps``, then
    ``SCHEDULES[schedule]`` (:mod:`visionrt.train.config`)."""
    warmup, after = max(1, int(warmup_fraction * total_steps)), SCHEDULES[schedule]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return after(min(1.0, (step - warmup) / max(1, total_steps - warmup)))
    return factor


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``config.optimizer``: SGD with Nesterov momentum, or Adam; both with ``config.weight_decay``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}' (choose sgd or adam)")


@torch.no_grad()
def settle_batchnorm(model: torch.nn.Module, task, batches: list[torch.Tensor], seed: int) -> None:
    """Re-estimate every BatchNorm layer's running mean and variance as the plain average over
    ``batches`` (index tensors of training samples, augmented as in training) under the current
    weights, so that validation and the saved weights use statistics that match them."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: each batch weighs the same
    generator = torch.Generator().manual_seed(seed * 100_003 - 1)
    model.train()
    for indices in batches:
        task.train_loss(model, indices, generator)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def check_config(config: TrainConfig) -> None:
    """Refuse option values training cannot use (before anything is written): counts are integers
    >= 1, rates and times finite (times > 0), thread and worker counts >= 0."""
    def bad(name: str, must: str) -> InputError:
        return InputError(f"training option {name} must be {must}, got {getattr(config, name)!r}",
                          fix="see `visionrt train --help`")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for name in ("epochs", "batch_size", "patience"):
        if not (is_int(getattr(config, name)) and getattr(config, name) >= 1):
            raise bad(name, "an integer >= 1")
    for name in ("threads", "workers", "seed"):
        if not (is_int(getattr(config, name)) and getattr(config, name) >= 0):
            raise bad(name, "an integer >= 0")
    if not (is_number(config.lr) and config.lr >= 0):  # 0: weights stay put (a test of the loop itself)
        raise bad("lr", "a finite number >= 0")
    if not (is_number(config.momentum) and 0 <= config.momentum < 1):
        raise bad("momentum", "a number in [0, 1)")
    if not (is_number(config.weight_decay) and config.weight_decay >= 0):
        raise bad("weight_decay", "a finite number >= 0")
    if not (isinstance(config.auto, (list, tuple)) and set(config.auto) <= set(AUTO_FIELDS)):
        raise bad("auto", f"a list of {', '.join(AUTO_FIELDS)}")
    if config.schedule not in SCHEDULES:
        raise bad("schedule", f"one of {', '.join(SCHEDULES)}")
    if config.max_minutes is not None and not (is_number(config.max_minutes) and config.max_minutes > 0):
        raise bad("max_minutes", "a finite number > 0")
    if config.scale_jitter is not None and not (is_number(config.scale_jitter) and 0 <= config.scale_jitter < 1):
        raise bad("scale_jitter", "a number in [0, 1)")
    if config.image_size is not None and not (is_int(config.image_size) and config.image_size >= MIN_IMAGE_SIZE):
        raise bad("image_size", f"an integer >= {MIN_IMAGE_SIZE}")


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that is a file, or that already holds a trained model (a manifest)
    unless training resumes it or is told to overwrite it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, expected a directory", fix="pass a directory")
    if (out_dir / MANIFEST_NAME).exists() and not (resume or overwrite):
        raise InputError(f"{out_dir} already holds a trained model: training would replace it and its "
                         "exported files", fix="pass --resume to continue it, --overwrite to replace it, "
                                               "or another --out")


def fit(config: TrainConfig, data_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> ModelDir | None:
    """Train ``config`` on ``data_dir``; write and return the model directory (``None`` off rank 0).

    ``out_dir`` must not hold a trained model unless ``config.resume`` or ``overwrite``."""
    out_dir = Path(out_dir)
    check_config(config)
    check_out_dir(out_dir, config.resume, overwrite)
    ddp = Dist.from_env()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    task = load_task(config.task, data_dir, config)
    config = size_to_data(config, len(task), ddp.world)
    model = task.build_model(config)
    if ddp.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    per_rank = max(1, config.batch_size // ddp.world)
    steps_per_epoch = len(task) // ddp.world // per_rank
    if steps_per_epoch == 0:
        raise InputError(f"the training split has {len(task)} samples, fewer than one batch of {config.batch_size}",
                         fix=f"pass --batch-size {len(task) // ddp.world} or less, or add training images")
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_schedule(config.epochs * steps_per_epoch,
                                                                             config.schedule))
    ckpt_dir = out_dir / "checkpoints"
    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "seconds": 0.0, "history": []}
    if config.resume and (ckpt_dir / checkpoint.RESUME_FILE).is_file():
        state = checkpoint.load_resume(ckpt_dir, model, optimizer, scheduler)
        log.info("resumed after epoch %d (best val %s %.4f)", state["epoch"], task.metric, state["best"])
    log.info("schedule: %s", describe(config, len(task), ddp.world))

    shard_digests = []
    start = time.perf_counter() - state["seconds"]
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        model.train()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(len(task), generator=generator)   # same on every rank
        mine = ddp.shard(order)[: steps_per_epoch * per_rank]
        shard_digests.append(hashlib.sha1(mine.sort().values.numpy().tobytes()).hexdigest()[:12])
        total = 0.0
        report = (progress(f"epoch {epoch}/{config.epochs}", log, level=logging.DEBUG) if ddp.is_main
                  else lambda done, total: None)
        batches = [mine[step * per_rank:(step + 1) * per_rank] for step in range(steps_per_epoch)]
        for step, indices in enumerate(read_ahead(task.train_sources(), batches, config.workers)):
            loss = task.train_loss(model, indices, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
            report(step + 1, steps_per_epoch)
        if steps_per_epoch < SETTLE_BELOW_STEPS:
            settle_batchnorm(model, task, batches, config.seed)
        val = ddp.from_main(task.evaluate(checkpoint.unwrap(model), "val")[task.metric])
        elapsed = time.perf_counter() - start
        state["history"].append({"epoch": epoch, "loss": total / steps_per_epoch, f"val_{task.metric}": val,
                                 "seconds": round(elapsed, 1)})
        improved = val > state["best"]
        if improved:
            state.update(best=val, best_epoch=epoch)
        state.update(epoch=epoch, seconds=elapsed)
        if ddp.is_main:
            if improved:
                checkpoint.save_weights(model, out_dir / WEIGHTS_FILE)
            checkpoint.save_resume(ckpt_dir, model, optimizer, scheduler, state)
        log.info("epoch %d/%d  loss %.4f  val %s %.4f%s  %.0fs", epoch, config.epochs, total / steps_per_epoch,
                 task.metric, val, " *" if improved else "", elapsed)
        if (epoch < config.epochs and epoch - state["best_epoch"] >= config.patience
                and may_stop_early(config, epoch * steps_per_epoch)):
            log.info("early stop: no better val %s for %d epochs", task.metric, config.patience)
            break
        if config.max_minutes is not None and elapsed > 60 * config.max_minutes:
            log.info("time budget of %s min reached", config.max_minutes)
            break

    shards = ddp.gather({"rank": ddp.rank, "samples_per_epoch": int(steps_per_epoch * per_rank),
                         "shard_sha1": shard_digests})
    if not ddp.is_main:
        ddp.close()
        return None
    plain = checkpoint.unwrap(model)
    checkpoint.load_weights(plain, out_dir / WEIGHTS_FILE)
    metrics = {split: task.evaluate(plain, split) for split in ("val", "test")}
    ddp.close()
    log.info("test %s %.4f (best epoch %d, %.0fs)", task.metric, metrics["test"][task.metric], state["best_epoch"],
             state["seconds"])
    warning = judge(task, metrics["test"], config, state["epoch"] * steps_per_epoch, len(task))
    if warning:
        log.warning("%s", warning)
    return _write_model_dir(out_dir, Path(data_dir), task, config, metrics, state, shards, warning)


def _write_model_dir(out_dir: Path, data_dir: Path, task, config: TrainConfig, metrics: dict, state: dict,
                     shards: list, warning: str | None) -> ModelDir:
    manifest = Manifest(
        task=task.name,
        model={"arch": config.model, "kwargs": config.model_kwargs, "dataset": str(data_dir.resolve())},
        classes=task.classes,
        input=task.input_spec(),
        outputs=task.outputs(),
        primary_metric=task.metric,
        postprocess=task.postprocess_defaults(),
        build_profile=task.build_profile(),
        metrics={"pytorch": metrics},
        versions={"torch": torch.__version__, "python": platform.python_version()},
    )
    model_dir = ModelDir(out_dir, manifest)
    model_dir.add_file("weights", out_dir / WEIGHTS_FILE, role="PyTorch weights (safetensors), best val epoch")
    model_dir.record("train", config=dataclasses.asdict(config), best_epoch=state["best_epoch"],
                     seconds=round(state["seconds"], 1), epochs=state["history"], processes=shards,
                     **({"warning": warning} if warning else {}))
    model_dir.save()
    return model_dir


def load_trained(model_dir: ModelDir) -> torch.nn.Module:
    """The trained module of a model directory, weights checked against the manifest, in eval mode.

    Built with the manifest's ``postprocess``: tasks whose graph holds post-processing (NMS) take
    its thresholds from there, the one place they live; taking the manifest's ``input`` (uint8
    pixels where export was asked for them: :mod:`.models.pixel_input`)."""
    m = model_dir.manifest
    try:
        model = build_model(m.task, m.model, m.classes, m.postprocess)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:  # arch or kwargs the builder refuses
        raise ArtifactError(f"{model_dir.root}: manifest 'model' ({json.dumps(m.model)[:200]}) cannot be built: "
                            f"{type(err).__name__}: {' '.join(str(err).split())[:200]}",
                            fix="the manifest's model must be the one train wrote: re-run visionrt train") from err
    return as_manifest_input(checkpoint.load_weights(model, model_dir.path("weights")), m.input).eval()
