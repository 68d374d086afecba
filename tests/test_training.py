"""Training loop: checkpoints as safetensors, resume, early stop, DDP sharding (2 gloo processes)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from visionrt.runtime.manifest import ModelDir
from visionrt.train.config import TrainConfig
from visionrt.train.loop import fit

SMALL = {"widths": [8, 16, 16], "blocks": 1}


def history(model_dir):
    return next(h for h in ModelDir.open(model_dir).manifest.history if h["stage"] == "train")


@pytest.mark.slow
def test_checkpoints_are_safetensors_and_resume_continues(tiny_data, tmp_path, caplog):
    out = tmp_path / "run"
    fit(TrainConfig(epochs=2, model_kwargs=SMALL, patience=10), tiny_data, out)
    with safe_open(str(out / "weights.safetensors"), "pt") as f:
        assert any(k.endswith("weight") for k in f.keys())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="visionrt.train.loop"):
        fit(TrainConfig(epochs=3, model_kwargs=SMALL, patience=10, resume=True), tiny_data, out)
    assert caplog.messages[0].startswith("resumed after epoch 2")
    assert [e["epoch"] for e in history(out)["epochs"]] == [1, 2, 3]


@pytest.mark.slow
def test_same_seed_same_weights(tiny_data, tmp_path):
    for name in ("a", "b"):
        fit(TrainConfig(epochs=1, model_kwargs=SMALL), tiny_data, tmp_path / name)
    assert (tmp_path / "a" / "weights.safetensors").read_bytes() == (tmp_path / "b" / "weights.safetensors").read_bytes()


@pytest.mark.slow
def test_early_stop(tiny_data, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="visionrt.train.loop"):
        fit(TrainConfig(epochs=6, model_kwargs=SMALL, patience=1, lr=0.0), tiny_data, tmp_path / "r")
    assert any(line.startswith("early stop") for line in caplog.messages)
    epochs = [e["epoch"] for e in history(tmp_path / "r")["epochs"]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 6, epochs  # it did stop before epoch 6


@pytest.mark.slow
def test_ddp_two_gloo_processes_shard_the_data(tiny_data, tmp_path):
    """torchrun with 2 CPU processes: disjoint shards covering the epoch, and the accuracy of one process."""
    common = ["--data", str(tiny_data), "--epochs", "3", "--threads", "1", "--batch-size", "32"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", "train", "--out", str(single), *common],
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    ddp = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", "train", "--nproc", "2", "--out", str(ddp),
                             *common], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    processes = history(ddp)["processes"]
    assert [p["rank"] for p in processes] == [0, 1]
    assert processes[0]["samples_per_epoch"] == processes[1]["samples_per_epoch"] == 128
    for epoch in range(3):
        assert processes[0]["shard_sha1"][epoch] != processes[1]["shard_sha1"][epoch]
    top1 = {name: ModelDir.open(d).manifest.metrics["pytorch"]["test"]["top1"] for name, d in
            (("single", single), ("ddp", ddp))}
    assert abs(top1["single"] - top1["ddp"]) <= 0.1, top1


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(world):
    """What each of ``world`` processes trains on in an epoch: disjoint shards of equal size that
    together hold every sample but the tail that does not divide evenly."""
    from visionrt.train.distributed import Dist

    order = torch.randperm(103, generator=torch.Generator().manual_seed(0))
    shards = [set(Dist(rank, world).shard(order).tolist()) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == 103 - 103 % world
    assert set().union(*shards) == set(order[: 103 - 103 % world].tolist())


def test_schedules_follow_the_same_warm_up():
    from visionrt.train.loop import warmup_schedule

    for name in ("cosine", "step", "constant"):  # 100 steps: 15 of warm-up
        factor = warmup_schedule(100, name)
        assert factor(0) == pytest.approx(1 / 15) and factor(14) == 1.0 and factor(15) == 1.0
    step = warmup_schedule(100, "step")
    assert step(60) == pytest.approx(0.1) and step(90) == pytest.approx(0.01)
    assert warmup_schedule(100, "cosine")(99) < 0.01 and warmup_schedule(100, "constant")(99) == 1.0
