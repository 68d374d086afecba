"""Style transfer networks: the feed-forward transform network and the fixed loss network.

* :class:`TransformNet` (Johnson et al. 2016): a 9×9 convolution, two stride-2 convolutions
  down, residual blocks, two (nearest ×2 upsample + 3×3 convolution) up (Odena et al.: no
  checkerboard), a 9×9 convolution to RGB; instance normalisation and ReLU after every
  convolution but the last, reflection padding, a sigmoid to [0, 1]. RGB in [0, 1]
  ``[N, 3, H, W]`` -> ``[N, 3, H, W]``, any H×W (the upsampled map is cropped to the input's size).
* :class:`LossFeatures`: :class:`visionrt.runtime.tasks.style.LossNetwork` in PyTorch, the same
  fixed random weights; gives the features Gatys' losses compare.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.tasks.style import LossNetwork


def conv_norm_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, padding_mode="reflect"),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))``, 3×3 convolutions, same width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_norm_relu(channels, channels, 3),
                                  nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then conv-IN-ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv_norm_relu(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TransformNet(nn.Module):
    """Johnson-style image transform network; ``width`` channels at full resolution (×2, ×4
    after each down-sampling), ``blocks`` residual blocks at 1/4 resolution."""

    def __init__(self, width: int = 32, blocks: int = 5):
        super().__init__()
        self.down = nn.Sequential(conv_norm_relu(3, width, 9), conv_norm_relu(width, 2 * width, 3, stride=2),
                                  conv_norm_relu(2 * width, 4 * width, 3, stride=2))
        self.residual = nn.Sequential(*(ResidualBlock(4 * width) for _ in range(blocks)))
        self.up = nn.Sequential(Upsample(4 * width, 2 * width), Upsample(2 * width, width))
        self.out = nn.Conv2d(width, 3, 9, padding=4, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.up(self.residual(self.down(x)))[..., :h, :w]  # ceil(H / 4) * 4 >= H
        return torch.sigmoid(self.out(y))


class LossFeatures(nn.Module):
    """The fixed random feature network of ``spec``: RGB in [0, 1] ``[N, 3, H, W]`` -> each
    stage's output ``[N, C_k, H_k, W_k]``. No trainable parameters."""

    def __init__(self, spec: LossNetwork):
        super().__init__()
        self.spec = spec
        for k, stage in enumerate(spec.weights()):
            for i, kernel in enumerate(stage):
                self.register_buffer(f"w{k}_{i}", torch.from_numpy(kernel))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x * 2 - 1
        outputs = []
        for k in range(len(self.spec.widths)):
            if k:
                x = F.avg_pool2d(x, 2)
            for i in range(self.spec.convs):
                x = torch.relu(F.conv2d(x, getattr(self, f"w{k}_{i}"), padding=1))
            outputs.append(x)
        return outputs


def gram(features: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, C]``: channel correlations averaged over positions."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def style_loss(grams: list[torch.Tensor], style_grams: list[torch.Tensor]) -> torch.Tensor:
    """Per image ``[N]``: Σ_layers ‖G − G_s‖² / ‖G_s‖² (``style_grams`` are ``[C, C]``)."""
    return sum(((g - s) ** 2).sum(dim=(1, 2)) / (s ** 2).sum() for g, s in zip(grams, style_grams))


def content_loss(features: torch.Tensor, content_features: torch.Tensor) -> torch.Tensor:
    """Per image ``[N]``: ‖F − F_c‖² / ‖F_c‖²."""
    return ((features - content_features) ** 2).sum(dim=(1, 2, 3)) / (content_features ** 2).sum(dim=(1, 2, 3))


#: Default weights of the two relative losses in Gatys' objective.
STYLE_WEIGHT, CONTENT_WEIGHT = 1.0, 5.0


class GatysLoss(nn.Module):
    """Gatys' objective for one style image: ``style_weight · style + content_weight · content``.

    ``style``: RGB in [0, 1] ``[3, H, W]`` (its Gram matrices are computed once). ``forward(x,
    content)`` on ``[N, 3, H, W]`` batches returns per-image ``(total, style, content)`` ``[N]``.
    """

    def __init__(self, spec: LossNetwork, style: torch.Tensor, style_weight: float = STYLE_WEIGHT,
                 content_weight: float = CONTENT_WEIGHT):
        super().__init__()
        self.features = LossFeatures(spec)
        self.style_weight, self.content_weight = style_weight, content_weight
        with torch.no_grad():
            targets = self.features(style[None])
        for i in spec.style_layers:
            self.register_buffer(f"style_gram{i}", gram(targets[i])[0])

    def style_grams(self) -> list[torch.Tensor]:
        return [getattr(self, f"style_gram{i}") for i in self.features.spec.style_layers]

    def forward(self, x: torch.Tensor, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spec = self.features.spec
        out = self.features(x)
        with torch.no_grad():
            target = self.features(content)[spec.content_layer]
        style = style_loss([gram(out[i]) for i in spec.style_layers], self.style_grams())
        content_term = content_loss(out[spec.content_layer], target)
        return self.style_weight * style + self.content_weight * content_term, style, content_term
