"""Semantic segmentation networks from the course notes, sized for small images (e.g. 64×64).

All take ``[N, 3, H, W]`` float32 (normalised), H and W multiples of 16, and return
per-pixel logits ``[N, num_classes, H, W]``.

* :class:`FCN`: a VGG-like fully convolutional backbone; 1×1 score maps from every depth
  fused coarse to fine as in FCN-8s, each ×2 step a learnable transposed convolution
  initialised to bilinear interpolation. On 64-pixel images the depths are strides 16, 8,
  4 and 2 (FCN-8s's 32, 16 and 8 would leave a 2×2 coarsest map and blur digit strokes).
* :class:`UNet`: symmetric encoder/decoder; each decoder level upsamples with a 2×2
  transposed conv and concatenates the encoder map of the same size.
* :class:`DeepLab`: a VGG-like backbone (as DeepLab v1/v2) that stops downsampling at
  stride 8 and dilates its convs instead (atrous), an ASPP block whose branches (1×1,
  depthwise-separable atrous 3×3 at three rates, image pooling) each predict class scores,
  summed as in DeepLab v2; scores from the stride-2 map (separable convs) refine the
  boundaries, as DeepLabv3+'s decoder does; bilinear upsampling (ONNX Resize).
* :class:`DeconvNet`: mirrored encoder/decoder; each 2×2 max-pool keeps its argmax indices
  and the matching unpooling puts values back there (``visionrt.train.ops``, exported as
  ONNX MaxPool-with-Indices / MaxUnpool), followed by transposed ("deconvolution") layers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .. import ops
from .classify import conv_bn_relu


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two conv3×3-BN-ReLU at the same resolution."""
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Per-channel transposed conv that upsamples ×``factor``, initialised to bilinear interpolation
    (as in FCN) and learnable: ``[N, C, h, w] -> [N, C, factor*h, factor*w]``."""
    kernel = 2 * factor
    up = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=factor // 2,
                            groups=channels, bias=False)
    centre = (kernel - 1) / 2
    taps = 1 - (torch.arange(kernel, dtype=torch.float32) - centre).abs() / factor
    with torch.no_grad():
        up.weight.copy_((taps[:, None] * taps[None, :]).expand(channels, 1, kernel, kernel))
    return up


# ------------------------------------------------------------------------------------------ FCN
class FCN(nn.Module):
    """Backbone of ``len(widths)`` stages (two convs + 2×2 max-pool each: stride ``2**(i+1)``
    after stage ``i``); a 1×1 score map per stage, fused coarse to fine (×2 transposed conv,
    add the next finer score map), then ×2 to the input size."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        stages, cin = [], 3
        for width in widths:
            stages.append(nn.Sequential(double_conv(cin, width), nn.MaxPool2d(2)))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.context = conv_bn_relu(widths[-1], widths[-1])          # FCN's fc6/fc7, as a conv
        self.score = nn.ModuleList(nn.Conv2d(w, num_classes, 1) for w in widths)
        self.up = nn.ModuleList(bilinear_upsampler(num_classes, 2) for _ in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.context(features[-1])
        fused = self.score[-1](features[-1])
        for score, up, finer in zip(self.score[-2::-1], self.up, features[-2::-1]):
            fused = up(fused) + score(finer)
        return self.up[-1](fused)


# ----------------------------------------------------------------------------------------- U-Net
class UNet(nn.Module):
    """Encoder levels (double conv, then 2×2 max-pool) down to a bottleneck; decoder levels
    (2×2 transposed conv, concatenate the encoder map, double conv) back up; 1×1 to classes."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for width in widths[:-1]:
            self.down.append(double_conv(cin, width))
            cin = width
        self.bottleneck = double_conv(cin, widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for skip, deeper in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.ConvTranspose2d(deeper, skip, 2, stride=2))
            self.merge.append(double_conv(2 * skip, skip))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


# -------------------------------------------------------------------------------------- DeepLab
class SeparableConv(nn.Sequential):
    """Depthwise 3×3 (optionally atrous: ``dilation``) + BN-ReLU, then pointwise 1×1 + BN-ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def atrous_conv(cin: int, cout: int, dilation: int) -> nn.Sequential:
    """3×3 conv with holes (``dilation - 1`` pixels skipped between taps) + BN-ReLU: it sees
    ``2 * dilation + 1`` pixels across at the cost of a plain 3×3."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in DeepLab v2: parallel branches over the same map (a
    1×1 conv, a separable atrous 3×3 per rate, global image pooling), each predicting class
    scores; the branches' scores are summed."""

    def __init__(self, cin: int, hidden: int, num_classes: int, rates: tuple[int, ...] = (2, 4, 6)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(branch, nn.Conv2d(hidden, num_classes, 1))
            for branch in [conv_bn_relu(cin, hidden, 1)] + [SeparableConv(cin, hidden, dilation=r) for r in rates])
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.image_pool(x)                      # [N, K, 1, 1], broadcast over H, W
        for branch in self.branches:
            scores = scores + branch(x)
        return scores


class DeepLab(nn.Module):
    """Stem (two convs, 2×2 max-pool: stride 2); backbone stages to stride 8, then atrous convs
    (dilation 2, 4) where a classification net would downsample further; ASPP class scores at
    stride 8, upsampled (bilinear) and added to scores that separable convs compute from the
    stem's map (a DeepLabv3+-style refinement of boundaries); bilinear ×2 to the input size.

    Summing scores gives the deep, wide-context path a direct route to the output: with a
    decoder that concatenates features instead, the quick CPU run learned where the digits
    are but not which digit they are."""

    def __init__(self, num_classes: int, width: int = 16, rates: tuple[int, ...] = (2, 4, 6)):
        super().__init__()
        w = width
        self.stem = nn.Sequential(double_conv(3, w), nn.MaxPool2d(2))                           # /2
        self.backbone = nn.Sequential(
            double_conv(w, 2 * w), nn.MaxPool2d(2), double_conv(2 * w, 4 * w), nn.MaxPool2d(2),  # /8
            atrous_conv(4 * w, 8 * w, 2), atrous_conv(8 * w, 8 * w, 4))
        self.aspp = ASPP(8 * w, 4 * w, num_classes, rates)
        self.refine = nn.Sequential(SeparableConv(w, 2 * w), SeparableConv(2 * w, 2 * w), nn.Conv2d(2 * w, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.stem(x)
        coarse = F.interpolate(self.aspp(self.backbone(low)), size=low.shape[2:], mode="bilinear", align_corners=False)
        return F.interpolate(coarse + self.refine(low), size=x.shape[2:], mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------ DeconvNet
def deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """A "deconvolution" layer: 3×3 transposed conv (stride 1, size kept) + BN-ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DeconvNet(nn.Module):
    """Encoder: per level a double conv then a 2×2 max-pool that records its argmax indices.
    Decoder, mirrored: unpool with those indices (sparse map at the larger size), then two
    deconvolution layers that densify it; 1×1 to classes."""

    KERNEL, STRIDE, PADS = [2, 2], [2, 2], [0, 0, 0, 0]

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.encoder = nn.ModuleList()
        cin = 3
        for width in widths:
            self.encoder.append(double_conv(cin, width))
            cin = width
        self.context = double_conv(widths[-1], widths[-1])  # DeconvNet's fc6/fc7, as convs (FCN's context)
        self.decoder = nn.ModuleList()
        for width, shallower in zip(reversed(widths), list(reversed(widths))[1:] + [widths[0]]):
            self.decoder.append(nn.Sequential(deconv_bn_relu(width, width), deconv_bn_relu(width, shallower)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []  # (indices, size before pooling) per level
        for level in self.encoder:
            x = level(x)
            size = list(x.shape[2:])
            x, indices = ops.max_pool2d_with_indices(x, self.KERNEL, self.STRIDE, self.PADS)
            pooled.append((indices, size))
        x = self.context(x)
        for level, (indices, size) in zip(self.decoder, reversed(pooled)):
            x = level(ops.max_unpool2d(x, indices, self.KERNEL, self.STRIDE, self.PADS, size))
        return self.head(x)
