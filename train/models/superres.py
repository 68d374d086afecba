"""Super-resolution networks from the course notes: SRCNN, FSRCNN, VDSR.

All work on RGB in [0, 1] (3 channels in and out, see ``visionrt.train.tasks.superres``) and
are fully convolutional: any H×W goes in. ``input_kind`` says what the network takes:

* ``"bicubic"``: the low-resolution image already upscaled ×``scale`` with (PIL) bicubic
  interpolation, ``[N, 3, sH, sW] -> [N, 3, sH, sW]`` (SRCNN, VDSR);
* ``"lr"``: the low-resolution image itself, ``[N, 3, H, W] -> [N, 3, sH, sW]`` (FSRCNN).

Padding keeps every layer at its input's size (the papers trained on unpadded crops and
lost the border; here the network serves whole images).
"""
from __future__ import annotations

import torch
from torch import nn


class SRCNN(nn.Module):
    """Dong et al. 2014: patch extraction (f1×f1, n1), non-linear mapping (f2×f2, n2),
    reconstruction (f3×f3); ``f2=5`` is "9-5-5", ``f2=1`` the original "9-1-5"."""

    input_kind = "bicubic"

    def __init__(self, scale: int, f1: int = 9, f2: int = 5, f3: int = 5, n1: int = 64, n2: int = 32):
        super().__init__()
        self.scale = scale
        self.features = nn.Conv2d(3, n1, f1, padding=f1 // 2)
        self.mapping = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.reconstruct = nn.Conv2d(n2, 3, f3, padding=f3 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(torch.relu(self.mapping(torch.relu(self.features(x)))))


class FSRCNN(nn.Module):
    """Dong et al. 2016, FSRCNN(d, s, m): feature extraction (5×5, d), shrinking (1×1, s),
    ``m`` mapping layers (3×3, s), expanding (1×1, d), all with PReLU; then a 9×9
    deconvolution (``ConvTranspose2d``, stride ``scale``) to the high-resolution image."""

    input_kind = "lr"

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        # out = (H - 1) * scale - 2 * 4 + 9 + (scale - 1) = scale * H
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)
        nn.init.normal_(self.deconv.weight, std=1e-3)  # as the paper
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(x))


class VDSR(nn.Module):
    """Kim et al. 2016: ``depth`` 3×3 conv layers (``width`` channels, ReLU between) predict
    the residual to the bicubic image: ``output = input + net(input)``."""

    input_kind = "bicubic"

    def __init__(self, scale: int, depth: int = 20, width: int = 64):
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.residual = nn.Sequential(*layers)
        for conv in layers[::2]:  # He initialisation, as the paper: 20 layers would otherwise fade out
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.residual[-1].weight)  # starts as the bicubic image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


#: The upscaling factors the networks are built for.
SUPPORTED_SCALES = (2, 3, 4)


def supported_scale(scale: int) -> int:
    """``scale`` where the networks are built for it, else ``ValueError``."""
    if scale not in SUPPORTED_SCALES:
        raise ValueError(f"scale {scale} is not supported (2, 3 or 4)")
    return scale
