"""Classification networks from the course notes, sized for small images (e.g. 64×64).

All take ``[N, 3, H, W]`` float32 (normalised) and return logits ``[N, num_classes]``.

* :class:`ResNet`: residual basic blocks (two 3×3 convs + identity or 1×1 projection).
* :class:`InceptionNet`: Inception modules, parallel 1×1 / 3×3 / 5×5 / pool branches with
  1×1 reductions, concatenated.
* :class:`DenseNet`: dense blocks whose layers see the concatenation of all earlier maps,
  joined by 1×1 + avg-pool transitions.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """``relu(x + F(x))`` with F = conv3×3-BN-ReLU-conv3×3-BN; 1×1 projection when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(cin, cout, 3, stride),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ClassifierHead(nn.Sequential):
    """Global average pool + linear: ``[N, C, h, w] -> [N, num_classes]``."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


class ResNet(nn.Module):
    """Stem then stages of basic blocks; each later stage halves H, W. ``stem``: ``"small"`` (3×3
    conv, stride 2: total stride ``2 ** len(widths)``) for small inputs, or ``"imagenet"`` (7×7
    conv stride 2 + 3×3 max-pool stride 2, He et al. 2016): with widths 64-512 and 2 blocks, ResNet-18."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 2,
                 stem: str = "small"):
        super().__init__()
        if stem not in ("small", "imagenet"):
            raise ValueError(f"unknown ResNet stem '{stem}' (choose small or imagenet)")
        self.stem = (conv_bn_relu(3, widths[0], 3, stride=2) if stem == "small" else
                     nn.Sequential(conv_bn_relu(3, widths[0], 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1)))
        layers, cin = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, width, stride=2 if (i > 0 and j == 0) else 1))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels: 1×1 | 1×1→3×3 | 1×1→5×5 | pool→1×1."""

    def __init__(self, cin: int, c1: int, c3: int, c5: int, cpool: int):
        super().__init__()
        self.branch1 = conv_bn_relu(cin, c1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(cin, c3 // 2, 1), conv_bn_relu(c3 // 2, c3, 3))
        self.branch5 = nn.Sequential(conv_bn_relu(cin, c5 // 2, 1), conv_bn_relu(c5 // 2, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(cin, cpool, 1))
        self.out_channels = c1 + c3 + c5 + cpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class InceptionNet(nn.Module):
    """Stem, then Inception modules with max-pool downsampling between them."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        a = InceptionModule(2 * w, w, 2 * w, w // 2, w // 2)
        b = InceptionModule(a.out_channels, 2 * w, 4 * w, w, w)
        c = InceptionModule(b.out_channels, 4 * w, 6 * w, 2 * w, 2 * w)
        self.features = nn.Sequential(
            conv_bn_relu(3, 2 * w, 3, stride=2), a, nn.MaxPool2d(2), b, nn.MaxPool2d(2), c)
        self.head = ClassifierHead(c.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DenseBlock(nn.Module):
    """``layers`` BN-ReLU-conv3×3 layers, each seeing all earlier outputs; adds ``growth`` channels each."""

    def __init__(self, cin: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(inplace=False),
                          nn.Conv2d(cin + i * growth, growth, 3, 1, 1, bias=False))
            for i in range(layers))
        self.out_channels = cin + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """Stem, dense blocks joined by transitions (1×1 conv halving channels + 2×2 avg-pool)."""

    def __init__(self, num_classes: int, growth: int = 12, layers_per_block: int = 4, blocks: int = 3):
        super().__init__()
        channels = 2 * growth
        parts: list[nn.Module] = [conv_bn_relu(3, channels, 3, stride=2)]
        for i in range(blocks):
            block = DenseBlock(channels, growth, layers_per_block)
            parts.append(block)
            channels = block.out_channels
            if i < blocks - 1:
                parts += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                          nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2)]
                channels //= 2
        parts += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*parts)
        self.head = ClassifierHead(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
