"""The manifest's model input in front of a trained network: pixels as the runtime sends them.

A trained network takes ``[N, 3, H, W]`` float32, RGB scaled to [0, 1] and normalised per
channel (``(x - mean) / std``). Exported with ``visionrt export --input-dtype uint8`` (and
``--input-layout NHWC``), the model takes the decoded pixels themselves, uint8 ``[N, 3, H, W]``
or ``[N, H, W, 3]``, and this module does the layout change, cast, scale and normalisation
inside the graph: one per-channel affine map (a BatchNormalization of mean 0, variance 1:
onnxruntime runs it in NCHW, where a Mul and an Add get moved into the NHWC layout of its int8
convolutions and cost ten times as much) instead of the runtime's NumPy passes.
"""
from __future__ import annotations

import torch

from ...runtime.manifest import InputSpec


class PixelInput(torch.nn.Module):
    """``network`` behind the input ``spec`` says: uint8 ``[N, C, H, W]`` (``layout`` NCHW) or
    ``[N, H, W, C]`` (NHWC) -> ``network((x / 255 - mean) / std)`` with x float32 NCHW."""

    def __init__(self, network: torch.nn.Module, spec: InputSpec):
        super().__init__()
        self.network = network
        self.nhwc = spec.layout == "NHWC"
        std = torch.tensor(spec.std, dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        self.register_buffer("gain", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("offset", -mean / std, persistent=False)
        self.register_buffer("zeros", torch.zeros(len(spec.mean)), persistent=False)
        self.register_buffer("ones", torch.ones(len(spec.mean)), persistent=False)

    def forward(self, pixels: torch.Tensor):
        x = pixels.permute(0, 3, 1, 2) if self.nhwc else pixels
        x = torch.nn.functional.batch_norm(x.to(torch.float32), self.zeros, self.ones, self.gain, self.offset,
                                           training=False, eps=0.0)  # x * gain + offset per channel
        return self.network(x)


def as_manifest_input(network: torch.nn.Module, spec: InputSpec) -> torch.nn.Module:
    """``network`` itself where ``spec`` is the training convention (float32 NCHW), else wrapped
    in :class:`PixelInput`."""
    if spec.dtype == "float32" and spec.layout == "NCHW":
        return network
    return PixelInput(network, spec)
