"""Super-resolution networks from the course notes: SRCNN, FSRCNN, VDSR.

All work on RGB in [0, 1] (3 channels in and out, see ``visionrt.train.tasks.superres``) and
are fully convolutional: any H×W goes in. ``input_kind`` says what the network takes:

* ``"bicubic"``: the low-resolution image already upscaled ×``scale`` with (PIL) bicubic
  interpolation, ``[N, 3, sH, sW] -> [N, 3, sH, sW]`` (SRCNN, VDSR);
* ``"lr"``: the low-resolution image itself, ``[N, 3, H, W] -> [N, 3, sH, sW]`` (FSRCNN).

Padding keeps every layer at its input's size (the papers trained on unpadded crops and
lost the border; here the network serves whole images).

SRCNN and FSRCNN start as interpolation (:func:`init_as_identity`, :func:`bicubic_upsampling_kernel`):
three channels of every layer carry the input through unchanged and the rest add to it from zero, as
VDSR's residual branch does. With the papers' Gaussian start (they trained ~10^8 back-propagations),
a few thousand steps end below bicubic (quick run: SRCNN -1.9 dB, FSRCNN -10.8 dB at ×2).
"""
from __future__ import annotations

import torch
from torch import nn


def init_as_identity(conv: nn.Conv2d | nn.ConvTranspose2d, kernel: torch.Tensor | None = None,
                     carried: int = 3, zero_rest: bool = False) -> None:
    """Make output channel ``c < carried`` of ``conv`` repeat input channel ``c``: a centred unit
    tap (or ``kernel``, ``[kH, kW]``) from channel ``c`` and zero from the others, bias 0.
    The other output channels keep their initialisation (``zero_rest``: zero, so the layer's
    output starts as the carried channels alone). A non-negative input (an image in [0, 1])
    passes (P)ReLU unchanged, so a stack of such layers starts as the identity."""
    with torch.no_grad():
        weight = conv.weight  # Conv2d: [out, in, kH, kW]; ConvTranspose2d: [in, out, kH, kW]
        if isinstance(conv, nn.ConvTranspose2d):
            weight = weight.transpose(0, 1)
        if zero_rest:
            weight.zero_()
        kh, kw = weight.shape[-2:]
        if kernel is None:
            kernel = torch.zeros(kh, kw)
            kernel[kh // 2, kw // 2] = 1.0
        weight[:carried, :].zero_()
        for c in range(carried):
            weight[c, c] = kernel
        conv.bias[:carried].zero_()


def bicubic_upsampling_kernel(size: int, scale: int) -> torch.Tensor:
    """``[size, size]`` kernel of a ``ConvTranspose2d(stride=scale, padding=size // 2,
    output_padding=scale - 1)`` that interpolates ×``scale`` with Keys' cubic (a = -0.5) on
    pixel centres; each output phase's taps are normalised to sum to 1 (the kernel may cut a tap)."""
    def cubic(d: float) -> float:
        d = abs(d)
        if d <= 1:
            return 1.5 * d ** 3 - 2.5 * d ** 2 + 1
        return -0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2 if d < 2 else 0.0

    # tap k of output o = i * scale - size // 2 + k lies (o + 0.5) / scale - 0.5 - i input pixels from i
    taps = torch.tensor([cubic((k - size // 2 + 0.5) / scale - 0.5) for k in range(size)])
    phase = (torch.arange(size) - size // 2) % scale
    for p in range(scale):
        taps[phase == p] /= taps[phase == p].sum()
    return torch.outer(taps, taps)


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
        init_as_identity(self.features)
        init_as_identity(self.mapping)
        init_as_identity(self.reconstruct, zero_rest=True)

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
        for conv in self.body[::2]:
            init_as_identity(conv)
        init_as_identity(self.deconv, bicubic_upsampling_kernel(9, scale), zero_rest=True)

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
