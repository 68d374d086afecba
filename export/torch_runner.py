"""PyTorch eager as a runner: the reference backend for parity checks and the benchmark baseline."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..runtime.backends.base import Runner, TensorSpec


class TorchRunner(Runner):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode`` on CPU (or ``device``).

    ``inputs``/``outputs`` name the module's positional inputs and its (tuple of) outputs.
    """

    name = "torch-eager"

    def __init__(self, model: nn.Module, inputs: list[TensorSpec], output_names: list[str],
                 device: str = "cpu"):
        super().__init__()
        self.model = model
        self._inputs = inputs
        self.output_names = output_names
        self.device = torch.device(device)

    def _activate(self) -> None:
        self.model.eval().to(self.device)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (), "float32") for name in self.output_names]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])).to(self.device) for spec in self._inputs]
        with torch.inference_mode():
            out = self.model(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {name: value.cpu().numpy() for name, value in zip(self.output_names, out)}
