"""PyTorch eager as a runner: the reference backend for parity checks and the benchmark baseline.

torch is imported when the runner is activated, so importing the runtime never imports it.
Building the ``nn.Module`` needs the training code, which the runtime may not import; the
runner therefore takes a builder callable (``load_model(model_dir) -> nn.Module``, e.g.
``visionrt.train.loop.load_trained``) from its caller, who sits higher in the import graph.
A callable, not a module path resolved by importlib, keeps the dependency visible to readers
and to the import-rule test instead of hiding an upward import in a string.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BackendUnavailable
from .base import Runner, TensorSpec

#: The PyTorch backend's name in reports, metrics and benchmarks.
NAME = "pytorch"


class TorchRunner(Runner):
    """Runs a module in eval mode under ``torch.inference_mode`` on CPU (or ``device``).

    ``build()`` returns the ``nn.Module`` (called once, on activation); ``inputs``/``output_names``
    name its positional inputs and its (tuple of) outputs; ``threads`` > 0 sets torch's intra-op threads.
    """

    name = NAME

    def __init__(self, build: Callable[[], Any], inputs: list[TensorSpec], output_names: list[str],
                 device: str = "cpu", threads: int = 0):
        super().__init__()
        self._build = build
        self._inputs = inputs
        self.output_names = output_names
        self.device_name = device
        self.threads = threads
        self.model = None

    def _activate(self) -> None:
        try:
            import torch
        except ImportError as err:
            raise BackendUnavailable("PyTorch is not installed", fix="pip install 'visionrt[train]'") from err
        if self.threads:
            torch.set_num_threads(self.threads)
        self.device = torch.device(self.device_name)
        self.model = self._build().eval().to(self.device)

    def _deactivate(self) -> None:
        self.model = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (), "float32") for name in self.output_names]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])).to(self.device) for spec in self._inputs]
        with torch.inference_mode():
            out = self.model(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {name: value.cpu().numpy() for name, value in zip(self.output_names, out)}
